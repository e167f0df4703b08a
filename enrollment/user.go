package enrollment

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"
)

// Role is what a person may do in Vestibule.
type Role string

// Roles, from least to most powerful. A plain user may only enroll devices
// of their own; the others reach the admin console.
const (
	RoleUser     Role = "user"
	RoleViewer   Role = "viewer"
	RoleApprover Role = "approver"
	RoleAdmin    Role = "admin"
)

// RoleReceiver is for API tokens only: a relying party (an identity
// provider's Shared Signals receiver, an access proxy) that reads device
// trust and manages its own event streams, and nothing else.
const RoleReceiver Role = "receiver"

// ParseTokenRole accepts the roles an API token may have: a person's
// console roles above user, or receiver.
func ParseTokenRole(s string) (Role, error) {
	if r := Role(strings.ToLower(strings.TrimSpace(s))); r == RoleReceiver {
		return r, nil
	}
	r, err := ParseRole(s)
	if err == nil && r == RoleUser {
		return "", fmt.Errorf("%w: an API token's role must be viewer, approver, admin or receiver", ErrInvalid)
	}
	return r, err
}

// ParseRole accepts one of the role names.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case RoleUser, RoleViewer, RoleApprover, RoleAdmin:
		return r, nil
	case "":
		return RoleUser, nil
	default:
		return "", fmt.Errorf("%w: role %q is not one of user, viewer, approver, admin", ErrInvalid, s)
	}
}

// User is a person known to Vestibule. Only known, enabled users may reserve
// a device.
type User struct {
	ID           string     `db:"id" json:"id"`
	Email        string     `db:"email" json:"email"`
	Name         string     `db:"name" json:"name"`
	Role         Role       `db:"role" json:"role"`
	PasswordHash string     `db:"password_hash" json:"-"`
	CreatedAt    time.Time  `db:"-" json:"created_at"`
	UpdatedAt    time.Time  `db:"-" json:"updated_at"`
	DisabledAt   *time.Time `db:"-" json:"disabled_at,omitempty"`
}

// Enabled reports whether the user may act.
func (u User) Enabled() bool { return u.DisabledAt == nil }

// NormalizeEmail validates an e-mail address and returns its canonical
// lower-case form, the key users are found by.
func NormalizeEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return "", fmt.Errorf("%w: %q is not an e-mail address", ErrInvalid, s)
	}
	return strings.ToLower(a.Address), nil
}

// UserInput is a user as an admin describes it.
type UserInput struct {
	Email string
	Name  string
	Role  Role
}

func (in UserInput) user(now time.Time) (User, error) {
	email, err := NormalizeEmail(in.Email)
	if err != nil {
		return User{}, err
	}
	role, err := ParseRole(string(in.Role))
	if err != nil {
		return User{}, err
	}
	name := strings.TrimSpace(in.Name)
	if len(name) > 200 {
		return User{}, fmt.Errorf("%w: name is longer than 200 characters", ErrInvalid)
	}
	return User{ID: NewID(), Email: email, Name: name, Role: role, CreatedAt: now, UpdatedAt: now}, nil
}

// UserStore is what user management needs from storage. Each mutation
// writes its audit event in the same transaction.
type UserStore interface {
	CreateUser(ctx context.Context, u User, ev AuditEvent) error
	// UpsertUsers creates or updates (name, role) users by e-mail, all or
	// nothing.
	UpsertUsers(ctx context.Context, users []User, ev AuditEvent) (created, updated int, err error)
	UserByEmail(ctx context.Context, email string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)
	SetUserPassword(ctx context.Context, userID, hash string, ev AuditEvent) error
	UserByID(ctx context.Context, id string) (User, error)
	// SetUserDisabled disables (revoking the user's open reservations and
	// sessions) or enables a user; ErrConflict when already so.
	SetUserDisabled(ctx context.Context, userID string, disabled bool, at time.Time, ev AuditEvent) error
	SetUserName(ctx context.Context, userID, name string, ev AuditEvent) error
	SetUserRole(ctx context.Context, userID string, role Role, ev AuditEvent) error
}

// Users manages the people Vestibule knows.
type Users struct {
	store UserStore
	now   func() time.Time
}

// NewUsers returns the user service over a store.
func NewUsers(store UserStore, now func() time.Time) *Users {
	if now == nil {
		now = time.Now
	}
	return &Users{store: store, now: now}
}

// Add creates one user.
func (s *Users) Add(ctx context.Context, actor Actor, in UserInput) (User, error) {
	u, err := in.user(s.now())
	if err != nil {
		return User{}, fmt.Errorf("add user: %w", err)
	}
	ev := actor.event(s.now(), "user.add", "user", u.ID, fmt.Sprintf("email=%s role=%s", u.Email, u.Role))
	if err := s.store.CreateUser(ctx, u, ev); err != nil {
		return User{}, fmt.Errorf("add user %s: %w", u.Email, err)
	}
	return u, nil
}

// Import reads a CSV file with a header naming at least an "email" column,
// optionally "name" and "role", and creates or updates every user in it in
// one transaction: a bad line imports nothing.
func (s *Users) Import(ctx context.Context, actor Actor, r io.Reader) (created, updated int, err error) {
	inputs, err := ParseUserCSV(r)
	if err != nil {
		return 0, 0, fmt.Errorf("import users: %w", err)
	}
	now := s.now()
	users := make([]User, 0, len(inputs))
	seen := map[string]int{}
	for i, in := range inputs {
		u, err := in.user(now)
		if err != nil {
			return 0, 0, fmt.Errorf("import users: line %d: %w", i+2, err)
		}
		if first, dup := seen[u.Email]; dup {
			return 0, 0, fmt.Errorf("import users: line %d: %w: %s already on line %d", i+2, ErrInvalid, u.Email, first)
		}
		seen[u.Email] = i + 2
		users = append(users, u)
	}
	ev := actor.event(now, "user.import", "user", "", fmt.Sprintf("rows=%d", len(users)))
	created, updated, err = s.store.UpsertUsers(ctx, users, ev)
	if err != nil {
		return 0, 0, fmt.Errorf("import users: %w", err)
	}
	return created, updated, nil
}

// maxImportRows bounds one import so a wrong file cannot exhaust memory.
const maxImportRows = 100_000

// ParseUserCSV parses the user import format.
func ParseUserCSV(r io.Reader) ([]UserInput, error) {
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: the file is empty; the first line must be a header such as email,name,role", ErrInvalid)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrInvalid, err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		switch h {
		case "email", "name", "role":
			col[h] = i
		default:
			return nil, fmt.Errorf("%w: header: unknown column %q (use email, name, role)", ErrInvalid, h)
		}
	}
	if _, ok := col["email"]; !ok {
		return nil, fmt.Errorf("%w: header: no email column", ErrInvalid)
	}
	field := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	var out []UserInput
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrInvalid, line, err)
		}
		if len(out) == maxImportRows {
			return nil, fmt.Errorf("%w: more than %d users in one file", ErrInvalid, maxImportRows)
		}
		out = append(out, UserInput{Email: field(rec, "email"), Name: field(rec, "name"), Role: Role(field(rec, "role"))})
	}
}

// SetDisabled disables or enables a user. A disabled user cannot sign in,
// reserve a device or use an open reservation.
func (s *Users) SetDisabled(ctx context.Context, actor Actor, id string, disabled bool) (User, error) {
	if !ValidID(id) {
		return User{}, fmt.Errorf("user: %w: %q", ErrNotFound, id)
	}
	u, err := s.store.UserByID(ctx, id)
	if err != nil {
		return User{}, err
	}
	action := map[bool]string{true: "user.disable", false: "user.enable"}[disabled]
	now := s.now()
	if err := s.store.SetUserDisabled(ctx, id, disabled, now, actor.event(now, action, "user", id, "email="+u.Email)); err != nil {
		return User{}, fmt.Errorf("%s: %w", action, err)
	}
	return s.store.UserByID(ctx, id)
}

// List returns every user.
func (s *Users) List(ctx context.Context) ([]User, error) { return s.store.ListUsers(ctx) }

// Get returns one user.
func (s *Users) Get(ctx context.Context, id string) (User, error) {
	if !ValidID(id) {
		return User{}, fmt.Errorf("user: %w: %q", ErrNotFound, id)
	}
	return s.store.UserByID(ctx, id)
}

// Rename changes a user's display name.
func (s *Users) Rename(ctx context.Context, actor Actor, id, name string) (User, error) {
	name = strings.TrimSpace(name)
	if len(name) > 200 {
		return User{}, fmt.Errorf("rename: %w: name is longer than 200 characters", ErrInvalid)
	}
	u, err := s.Get(ctx, id)
	if err != nil {
		return User{}, err
	}
	if err := s.store.SetUserName(ctx, id, name, actor.event(s.now(), "user.rename", "user", id, "email="+u.Email)); err != nil {
		return User{}, fmt.Errorf("rename: %w", err)
	}
	return s.store.UserByID(ctx, id)
}

// SetRole changes a user's role (console access).
func (s *Users) SetRole(ctx context.Context, actor Actor, id string, role Role) (User, error) {
	r, err := ParseRole(string(role))
	if err != nil {
		return User{}, err
	}
	u, err := s.Get(ctx, id)
	if err != nil {
		return User{}, err
	}
	ev := actor.event(s.now(), "user.role", "user", id, fmt.Sprintf("email=%s %s->%s", u.Email, u.Role, r))
	if err := s.store.SetUserRole(ctx, id, r, ev); err != nil {
		return User{}, fmt.Errorf("set role: %w", err)
	}
	return s.store.UserByID(ctx, id)
}
