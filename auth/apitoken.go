package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// apiTokenPrefix makes a leaked token recognisable to secret scanners.
const apiTokenPrefix = "vst_"

// ErrBadToken means a bearer token is unknown, revoked or malformed.
var ErrBadToken = errors.New("invalid API token")

// APIToken is a named bearer credential with a role.
type APIToken struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Role       enrollment.Role `json:"role"`
	Hash       string          `json:"-"`
	CreatedAt  time.Time       `json:"created_at"`
	CreatedBy  string          `json:"created_by"`
	LastUsedAt *time.Time      `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time      `json:"revoked_at,omitempty"`
}

// APITokenStore is what API tokens need from storage.
type APITokenStore interface {
	CreateAPIToken(ctx context.Context, t APIToken, ev enrollment.AuditEvent) error
	APITokenByHash(ctx context.Context, hash string) (APIToken, error)
	TouchAPIToken(ctx context.Context, id string, at time.Time) error
	ListAPITokens(ctx context.Context) ([]APIToken, error)
	RevokeAPIToken(ctx context.Context, name string, at time.Time, ev enrollment.AuditEvent) error
}

// APITokens creates and checks API bearer tokens.
type APITokens struct {
	store APITokenStore
	now   func() time.Time
}

// NewAPITokens returns the API token service.
func NewAPITokens(store APITokenStore, now func() time.Time) *APITokens {
	if now == nil {
		now = time.Now
	}
	return &APITokens{store: store, now: now}
}

func hashAPIToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Create makes a token and returns its secret, which is shown once and
// never stored.
func (s *APITokens) Create(ctx context.Context, actor enrollment.Actor, name string, role enrollment.Role) (APIToken, string, error) {
	name = strings.TrimSpace(name)
	if !validTokenName(name) {
		return APIToken{}, "", fmt.Errorf("create API token: %w: name must be 1 to 100 letters, digits, '.', '_', '-' or '@'", enrollment.ErrInvalid)
	}
	switch role {
	case enrollment.RoleViewer, enrollment.RoleApprover, enrollment.RoleAdmin, enrollment.RoleReceiver:
	default:
		return APIToken{}, "", fmt.Errorf("create API token: %w: role must be viewer, approver, admin or receiver", enrollment.ErrInvalid)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return APIToken{}, "", fmt.Errorf("create API token: %w", err)
	}
	secret := apiTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	now := s.now()
	t := APIToken{ID: enrollment.NewID(), Name: name, Role: role, Hash: hashAPIToken(secret), CreatedAt: now, CreatedBy: actor.Name}
	ev := enrollment.AuditEvent{At: now, Actor: actor.Name, Action: "api_token.create", TargetType: "api_token",
		TargetID: t.ID, RemoteIP: actor.RemoteIP, Outcome: enrollment.OutcomeOK, Detail: fmt.Sprintf("name=%s role=%s", name, role)}
	if err := s.store.CreateAPIToken(ctx, t, ev); err != nil {
		return APIToken{}, "", fmt.Errorf("create API token: %w", err)
	}
	return t, secret, nil
}

// Authenticate finds the live token a bearer secret belongs to.
func (s *APITokens) Authenticate(ctx context.Context, secret string) (APIToken, error) {
	if !strings.HasPrefix(secret, apiTokenPrefix) || len(secret) > 100 {
		return APIToken{}, ErrBadToken
	}
	t, err := s.store.APITokenByHash(ctx, hashAPIToken(secret))
	if errors.Is(err, enrollment.ErrNotFound) {
		return APIToken{}, ErrBadToken
	}
	if err != nil {
		return APIToken{}, fmt.Errorf("authenticate API token: %w", err)
	}
	if t.RevokedAt != nil {
		return APIToken{}, ErrBadToken
	}
	now := s.now()
	// Recording every use would make each API call a write; a minute's
	// precision is enough to tell a token still in use.
	if t.LastUsedAt == nil || now.Sub(*t.LastUsedAt) > time.Minute {
		if err := s.store.TouchAPIToken(ctx, t.ID, now); err != nil {
			return APIToken{}, fmt.Errorf("authenticate API token: %w", err)
		}
	}
	return t, nil
}

// List returns every token, revoked ones included.
func (s *APITokens) List(ctx context.Context) ([]APIToken, error) { return s.store.ListAPITokens(ctx) }

// Revoke disables a token by name.
func (s *APITokens) Revoke(ctx context.Context, actor enrollment.Actor, name string) error {
	now := s.now()
	ev := enrollment.AuditEvent{At: now, Actor: actor.Name, Action: "api_token.revoke", TargetType: "api_token",
		TargetID: name, RemoteIP: actor.RemoteIP, Outcome: enrollment.OutcomeOK}
	if err := s.store.RevokeAPIToken(ctx, name, now, ev); err != nil {
		return fmt.Errorf("revoke API token: %w", err)
	}
	return nil
}

func validTokenName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == '@') {
			return false
		}
	}
	return true
}
