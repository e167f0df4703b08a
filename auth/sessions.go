package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// ErrNoSession means the request carries no live session.
var ErrNoSession = errors.New("not signed in")

// Session is a signed-in person.
type Session struct {
	IDHash     string
	UserID     string
	Method     string // "password", "oidc"
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time
	RemoteIP   string
	UserAgent  string
}

// SessionStore keeps sessions where every replica sees them.
type SessionStore interface {
	CreateSession(ctx context.Context, s Session, ev enrollment.AuditEvent) error
	SessionByHash(ctx context.Context, hash string) (Session, enrollment.User, error)
	TouchSession(ctx context.Context, hash string, at time.Time) error
	DeleteSession(ctx context.Context, hash string) error
	DeleteUserSessions(ctx context.Context, userID string) error
}

// Sessions issues and checks sign-in sessions with an idle and an
// absolute timeout.
type Sessions struct {
	store    SessionStore
	idle     time.Duration
	absolute time.Duration
	now      func() time.Time
}

// NewSessions returns the session layer.
func NewSessions(store SessionStore, idle, absolute time.Duration, now func() time.Time) *Sessions {
	if now == nil {
		now = time.Now
	}
	return &Sessions{store: store, idle: idle, absolute: absolute, now: now}
}

func hashSessionID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// Start creates a session for a user who just proved who they are, with a
// new random ID (never one the browser brought), and returns the cookie
// value. Any login method (password, OIDC) ends here.
func (s *Sessions) Start(ctx context.Context, u enrollment.User, method, ip, userAgent string) (string, error) {
	if !u.Enabled() {
		return "", fmt.Errorf("start session: %w: %s is disabled", enrollment.ErrForbidden, u.Email)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("start session: %w", err)
	}
	id := base64.RawURLEncoding.EncodeToString(b)
	now := s.now()
	if len(userAgent) > 300 {
		userAgent = userAgent[:300]
	}
	sess := Session{IDHash: hashSessionID(id), UserID: u.ID, Method: method, CreatedAt: now, LastSeenAt: now,
		ExpiresAt: now.Add(s.absolute), RemoteIP: ip, UserAgent: userAgent}
	ev := enrollment.AuditEvent{At: now, Actor: "user:" + u.Email, Action: "session.start", TargetType: "user", TargetID: u.ID,
		RemoteIP: ip, Outcome: enrollment.OutcomeOK, Detail: "method=" + method}
	if err := s.store.CreateSession(ctx, sess, ev); err != nil {
		return "", fmt.Errorf("start session: %w", err)
	}
	return id, nil
}

// Check returns the live session and its user for a cookie value. Idle,
// expired and disabled-user sessions end here.
func (s *Sessions) Check(ctx context.Context, id string) (Session, enrollment.User, error) {
	if id == "" || len(id) > 100 {
		return Session{}, enrollment.User{}, ErrNoSession
	}
	h := hashSessionID(id)
	sess, u, err := s.store.SessionByHash(ctx, h)
	if errors.Is(err, enrollment.ErrNotFound) {
		return Session{}, enrollment.User{}, ErrNoSession
	}
	if err != nil {
		return Session{}, enrollment.User{}, fmt.Errorf("check session: %w", err)
	}
	now := s.now()
	if !now.Before(sess.ExpiresAt) || now.Sub(sess.LastSeenAt) >= s.idle || !u.Enabled() {
		_ = s.store.DeleteSession(ctx, h)
		return Session{}, enrollment.User{}, ErrNoSession
	}
	// A minute's precision keeps most page views read-only.
	if now.Sub(sess.LastSeenAt) > time.Minute {
		if err := s.store.TouchSession(ctx, h, now); err != nil {
			return Session{}, enrollment.User{}, fmt.Errorf("check session: %w", err)
		}
	}
	return sess, u, nil
}

// End signs a session out.
func (s *Sessions) End(ctx context.Context, id string) error {
	if id == "" {
		return nil
	}
	return s.store.DeleteSession(ctx, hashSessionID(id))
}
