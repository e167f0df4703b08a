package enrollment

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
)

// ReservationState is where a reservation is in its life.
type ReservationState string

// Reservation states. Expired is derived: an open reservation past its
// expiry is expired.
const (
	ReservationOpen    ReservationState = "open"
	ReservationClaimed ReservationState = "claimed"
	ReservationRevoked ReservationState = "revoked"
	ReservationExpired ReservationState = "expired"
)

// ParseReservationState accepts a state name for filters.
func ParseReservationState(s string) (ReservationState, error) {
	switch st := ReservationState(s); st {
	case ReservationOpen, ReservationClaimed, ReservationRevoked, ReservationExpired, "":
		return st, nil
	}
	return "", fmt.Errorf("%w: state %q is not one of open, claimed, expired, revoked", ErrInvalid, s)
}

// Reservation is a device ID set aside for one user; the device that
// installs its profile takes that ID.
type Reservation struct {
	ID              string           `json:"id"`
	OrgID           string           `json:"org_id"`
	UserID          string           `json:"user_id"`
	UserEmail       string           `json:"user"`
	State           ReservationState `json:"state"`
	ChallengeHash   string           `json:"-"`
	ChallengeUsedAt *time.Time       `json:"challenge_used_at,omitempty"`
	TokenNonce      string           `json:"-"`
	TokenKeyVersion uint32           `json:"token_key_version"`
	CreatedAt       time.Time        `json:"created_at"`
	ExpiresAt       time.Time        `json:"expires_at"`
	CreatedBy       string           `json:"created_by"`
	CreatedIP       string           `json:"created_ip"`
	// Identity is how the profile's device gets its identity: IdentitySCEP
	// or IdentityACME. The profile's one-time secret works for that
	// protocol only.
	Identity      string     `json:"identity"`
	DownloadedAt  *time.Time `json:"downloaded_at,omitempty"`
	DownloadedIP  string     `json:"downloaded_ip,omitempty"`
	ClaimedAt     *time.Time `json:"claimed_at,omitempty"`
	ClaimedUDID   string     `json:"claimed_udid,omitempty"`
	ClaimAttempts int        `json:"claim_attempts"`
	RevokedAt     *time.Time `json:"revoked_at,omitempty"`
	RevokedBy     string     `json:"revoked_by,omitempty"`
	// DEPSerial and DEPUDID are what Setup Assistant claimed when the
	// profile was made through the DEP path: claims, not credentials.
	DEPSerial string `json:"dep_serial,omitempty"`
	DEPUDID   string `json:"dep_udid,omitempty"`
}

// EffectiveState folds expiry into the stored state.
func (r Reservation) EffectiveState(now time.Time) ReservationState {
	if r.State == ReservationOpen && !now.Before(r.ExpiresAt) {
		return ReservationExpired
	}
	return r.State
}

// Secrets are what a profile carries for one reservation: the one-time SCEP
// challenge and the enrollment token. They exist in memory only long enough
// to build the profile; the store keeps a hash of the challenge and the
// token's nonce.
type Secrets struct {
	Challenge string
	Token     string
}

// HashChallenge is how a challenge is stored and looked up. Challenges are
// 128-bit random values, so a plain SHA-256 is as good as a slow hash.
func HashChallenge(challenge string) string {
	sum := sha256.Sum256([]byte(challenge))
	return hex.EncodeToString(sum[:])
}

func newChallenge() (string, error) {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ReservationFilter narrows a listing; zero fields match everything.
type ReservationFilter struct {
	UserID string
	State  ReservationState
	Limit  int
}

// How a device gets its identity certificate.
const (
	// IdentitySCEP: over SCEP, an RSA key the device makes (any device).
	IdentitySCEP = "scep"
	// IdentityACME: over ACME with device-attest-01, a key made in the
	// Secure Enclave and attested by Apple (iOS 16, macOS 14 and later).
	IdentityACME = "acme"
)

// ParseIdentity accepts "scep" or "acme"; empty is SCEP, the default.
func ParseIdentity(s string) (string, error) {
	switch s = strings.ToLower(strings.TrimSpace(s)); s {
	case "", IdentitySCEP:
		return IdentitySCEP, nil
	case IdentityACME:
		return IdentityACME, nil
	}
	return "", fmt.Errorf("%w: identity must be scep or acme", ErrInvalid)
}

// Refresh is a new set of secrets for an open reservation.
type Refresh struct {
	Identity        string
	ChallengeHash   string
	TokenNonce      string
	TokenKeyVersion uint32
	At              time.Time
	ExpiresAt       time.Time
	IP              string
}

// ReservationStore is what reservations need from storage. Mutations write
// their audit event in the same transaction.
type ReservationStore interface {
	UserByEmail(ctx context.Context, email string) (User, error)
	CreateReservation(ctx context.Context, r Reservation, ev AuditEvent) error
	Reservation(ctx context.Context, id string) (Reservation, error)
	ListReservations(ctx context.Context, f ReservationFilter, now time.Time) ([]Reservation, error)
	// RefreshReservation replaces the secrets of a reservation that is open,
	// unexpired at f.At and whose challenge is unused; otherwise ErrConflict.
	RefreshReservation(ctx context.Context, id string, f Refresh, ev AuditEvent) error
	// RevokeReservation revokes an open reservation; otherwise ErrConflict.
	RevokeReservation(ctx context.Context, id, by string, at time.Time, ev AuditEvent) error
	CountReservationsSince(ctx context.Context, userID string, since time.Time) (int, error)
}

// ErrRateLimited means a user asked for too many profiles too fast.
var ErrRateLimited = errors.New("too many enrollment profiles in the last hour")

// ReserveForSelf is a person's own reservation from the portal: at most
// perHour an hour, so a stolen session cannot mint profiles in bulk.
func (s *Reservations) ReserveForSelf(ctx context.Context, actor Actor, u User, perHour int) (Reservation, Secrets, error) {
	return s.ReserveForSelfAs(ctx, actor, u, perHour, IdentitySCEP)
}

// ReserveForSelfAs is ReserveForSelf for a profile of the given identity.
func (s *Reservations) ReserveForSelfAs(ctx context.Context, actor Actor, u User, perHour int, identity string) (Reservation, Secrets, error) {
	return s.reserveLimited(ctx, actor, u, perHour, "", "", identity)
}

// ReserveForDEP is ReserveForSelf for a device in Setup Assistant, keeping
// the serial and UDID it claimed for the approver.
func (s *Reservations) ReserveForDEP(ctx context.Context, actor Actor, u User, perHour int, serial, udid string) (Reservation, Secrets, error) {
	return s.reserveLimited(ctx, actor, u, perHour, serial, udid, IdentitySCEP)
}

func (s *Reservations) reserveLimited(ctx context.Context, actor Actor, u User, perHour int, serial, udid, identity string) (Reservation, Secrets, error) {
	if len(serial) > 64 || len(udid) > 64 {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w: device claims too long", ErrInvalid)
	}
	n, err := s.store.CountReservationsSince(ctx, u.ID, s.now().Add(-time.Hour))
	if err != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w", err)
	}
	if n >= perHour {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w: %d of %d allowed; try again later or ask your administrator", ErrRateLimited, n, perHour)
	}
	return s.reserve(ctx, actor, u.Email, serial, udid, identity)
}

// RevokeOwn revokes a reservation of the given user only.
func (s *Reservations) RevokeOwn(ctx context.Context, actor Actor, userID, id string) error {
	r, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if r.UserID != userID {
		return fmt.Errorf("revoke: %w: reservation %s", ErrNotFound, id)
	}
	return s.Revoke(ctx, actor, id)
}

// Reservations reserves device IDs for known users and hands out the
// secrets their profiles carry.
type Reservations struct {
	store  ReservationStore
	tokens *Tokens
	orgID  string
	ttl    time.Duration
	now    func() time.Time
}

// NewReservations returns the reservation service. ttl is how long a
// downloaded profile stays usable before the device's first check-in.
func NewReservations(store ReservationStore, tokens *Tokens, orgID string, ttl time.Duration, now func() time.Time) *Reservations {
	if now == nil {
		now = time.Now
	}
	return &Reservations{store: store, tokens: tokens, orgID: orgID, ttl: ttl, now: now}
}

// Reserve sets a device ID aside for the user with this e-mail and returns
// the reservation with its first secrets. Unknown and disabled users are
// refused: only people known to Vestibule may enroll.
func (s *Reservations) Reserve(ctx context.Context, actor Actor, email string) (Reservation, Secrets, error) {
	return s.reserve(ctx, actor, email, "", "", IdentitySCEP)
}

// ReserveAs is Reserve for a profile of the given identity (scep or acme).
func (s *Reservations) ReserveAs(ctx context.Context, actor Actor, email, identity string) (Reservation, Secrets, error) {
	return s.reserve(ctx, actor, email, "", "", identity)
}

func (s *Reservations) reserve(ctx context.Context, actor Actor, email, depSerial, depUDID, identity string) (Reservation, Secrets, error) {
	identity, err := ParseIdentity(identity)
	if err != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w", err)
	}
	norm, err := NormalizeEmail(email)
	if err != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w", err)
	}
	u, err := s.store.UserByEmail(ctx, norm)
	if errors.Is(err, ErrNotFound) {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w: %s is not a known user: add them with `vestibule user add %s` or on the console's Users page",
			ErrForbidden, norm, norm)
	}
	if err != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w", err)
	}
	if !u.Enabled() {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w: %s is disabled", ErrForbidden, norm)
	}
	now := s.now()
	r := Reservation{ID: NewID(), OrgID: s.orgID, UserID: u.ID, UserEmail: u.Email, State: ReservationOpen, Identity: identity,
		CreatedAt: now, ExpiresAt: now.Add(s.ttl), CreatedBy: actor.Name, CreatedIP: actor.RemoteIP, DEPSerial: depSerial, DEPUDID: depUDID}
	sec, err := s.secrets(ctx, &r)
	if err != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w", err)
	}
	detail := "user=" + u.Email + " identity=" + identity
	if depSerial != "" {
		detail += " dep_serial=" + depSerial
	}
	ev := actor.event(now, "reservation.create", "reservation", r.ID, detail)
	if err := s.store.CreateReservation(ctx, r, ev); err != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("reserve: %w", err)
	}
	return r, sec, nil
}

// secrets makes a new challenge and token for r and records their hash and
// nonce on it.
func (s *Reservations) secrets(ctx context.Context, r *Reservation) (Secrets, error) {
	challenge, err := newChallenge()
	if err != nil {
		return Secrets{}, err
	}
	token, t, err := s.tokens.Issue(ctx, r.ID, r.UserID, r.ExpiresAt)
	if err != nil {
		return Secrets{}, err
	}
	r.ChallengeHash = HashChallenge(challenge)
	r.TokenNonce = t.NonceHex()
	r.TokenKeyVersion = t.KeyVersion
	return Secrets{Challenge: challenge, Token: token}, nil
}

// Download hands out fresh secrets for an open reservation, so that a
// profile is usable once: any profile downloaded before stops working, and
// the validity window starts again. A reservation whose challenge a device
// already used cannot be downloaded again.
func (s *Reservations) Download(ctx context.Context, actor Actor, id string) (Reservation, Secrets, error) {
	return s.DownloadAs(ctx, actor, id, "")
}

// DownloadAs is Download for a profile of the given identity; empty keeps
// the reservation's.
func (s *Reservations) DownloadAs(ctx context.Context, actor Actor, id, identity string) (Reservation, Secrets, error) {
	if !ValidID(id) {
		return Reservation{}, Secrets{}, fmt.Errorf("download: %w: reservation %q", ErrNotFound, id)
	}
	r, err := s.store.Reservation(ctx, id)
	if err != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("download: %w", err)
	}
	now := s.now()
	if st := r.EffectiveState(now); st != ReservationOpen || r.ChallengeUsedAt != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("download: %w: reservation %s is %s", ErrConflict, id, describeUse(r, st))
	}
	if identity != "" {
		if r.Identity, err = ParseIdentity(identity); err != nil {
			return Reservation{}, Secrets{}, fmt.Errorf("download: %w", err)
		}
	}
	r.ExpiresAt = now.Add(s.ttl)
	sec, err := s.secrets(ctx, &r)
	if err != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("download: %w", err)
	}
	ev := actor.event(now, "reservation.download", "reservation", id, "user="+r.UserEmail+" identity="+r.Identity)
	if err := s.store.RefreshReservation(ctx, id, Refresh{Identity: r.Identity, ChallengeHash: r.ChallengeHash, TokenNonce: r.TokenNonce,
		TokenKeyVersion: r.TokenKeyVersion, At: now, ExpiresAt: r.ExpiresAt, IP: actor.RemoteIP}, ev); err != nil {
		return Reservation{}, Secrets{}, fmt.Errorf("download: %w", err)
	}
	r.DownloadedAt, r.DownloadedIP = &now, actor.RemoteIP
	return r, sec, nil
}

func describeUse(r Reservation, st ReservationState) string {
	if st == ReservationOpen {
		return "already used by a device"
	}
	return string(st)
}

// Revoke ends an open reservation: its profile stops working.
func (s *Reservations) Revoke(ctx context.Context, actor Actor, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("revoke: %w: reservation %q", ErrNotFound, id)
	}
	now := s.now()
	ev := actor.event(now, "reservation.revoke", "reservation", id, "")
	if err := s.store.RevokeReservation(ctx, id, actor.Name, now, ev); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	return nil
}

// Get returns one reservation.
func (s *Reservations) Get(ctx context.Context, id string) (Reservation, error) {
	if !ValidID(id) {
		return Reservation{}, fmt.Errorf("reservation: %w: %q", ErrNotFound, id)
	}
	r, err := s.store.Reservation(ctx, id)
	if err != nil {
		return Reservation{}, err
	}
	r.State = r.EffectiveState(s.now())
	return r, nil
}

// List returns reservations newest first, with expiry folded into State.
func (s *Reservations) List(ctx context.Context, f ReservationFilter) ([]Reservation, error) {
	now := s.now()
	rs, err := s.store.ListReservations(ctx, f, now)
	if err != nil {
		return nil, err
	}
	for i := range rs {
		rs[i].State = rs[i].EffectiveState(now)
	}
	return rs, nil
}

// Users looks a user up by e-mail, for filters that name one.
func (s *Reservations) UserByEmail(ctx context.Context, email string) (User, error) {
	norm, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	return s.store.UserByEmail(ctx, norm)
}
