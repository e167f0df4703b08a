package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

// ErrThrottled means too many failed sign-ins; try again later.
var ErrThrottled = errors.New("too many failed sign-ins; wait a few minutes")

// ErrBadCredentials is the one answer to a wrong e-mail, a wrong password
// or a disabled account: it tells an attacker nothing.
var ErrBadCredentials = errors.New("wrong e-mail or password")

// UserFinder finds local accounts.
type UserFinder interface {
	UserByEmail(ctx context.Context, email string) (enrollment.User, error)
}

// Auditor records sign-in attempts.
type Auditor interface {
	AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error
}

// PasswordLogin checks local account passwords, with throttling per
// account and per address. The counters live in this process: behind
// several replicas each one throttles on its own, which multiplies the
// allowance by the replica count but keeps the limit.
type PasswordLogin struct {
	users UserFinder
	audit Auditor
	limit int
	win   time.Duration
	now   func() time.Time

	mu       sync.Mutex
	failures map[string][]time.Time
}

// NewPasswordLogin allows limit failures per account and per address in
// window.
func NewPasswordLogin(users UserFinder, audit Auditor, limit int, window time.Duration, now func() time.Time) *PasswordLogin {
	if now == nil {
		now = time.Now
	}
	return &PasswordLogin{users: users, audit: audit, limit: limit, win: window, now: now, failures: map[string][]time.Time{}}
}

// Login returns the user whose e-mail and password these are.
func (p *PasswordLogin) Login(ctx context.Context, email, password, ip string) (enrollment.User, error) {
	norm, err := enrollment.NormalizeEmail(email)
	if err != nil {
		norm = "invalid"
	}
	keys := []string{"user:" + norm, "ip:" + ip}
	if p.throttled(keys) {
		p.record(ctx, norm, ip, enrollment.OutcomeRefused, "throttled")
		return enrollment.User{}, ErrThrottled
	}
	u, err := p.users.UserByEmail(ctx, norm)
	if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
		return enrollment.User{}, fmt.Errorf("login: %w", err)
	}
	ok := err == nil && u.PasswordHash != "" && VerifyPassword(u.PasswordHash, password) == nil && u.Enabled()
	if err != nil {
		// Spend the same time as a real check, so timing does not tell
		// which e-mail addresses have accounts.
		_ = VerifyPassword(dummyHash, password)
	}
	if !ok {
		p.fail(keys)
		p.record(ctx, norm, ip, enrollment.OutcomeRefused, "bad credentials")
		return enrollment.User{}, ErrBadCredentials
	}
	p.clear(keys[0])
	return u, nil
}

// dummyHash is a valid hash of a random password.
const dummyHash = "$argon2id$v=19$m=65536,t=3,p=2$c29tZXNhbHRzb21lc2FsdA$5l8lZrP1o2v9r2mD4Nw6iV0yq6u9m1a3h7JkB6iS2bU"

func (p *PasswordLogin) record(ctx context.Context, email, ip, outcome, detail string) {
	_ = p.audit.AppendAudit(ctx, enrollment.AuditEvent{At: p.now(), Actor: "user:" + email, Action: "session.login",
		TargetType: "user", RemoteIP: ip, Outcome: outcome, Detail: detail})
}

func (p *PasswordLogin) prune(k string) []time.Time {
	cut := p.now().Add(-p.win)
	kept := p.failures[k][:0]
	for _, t := range p.failures[k] {
		if t.After(cut) {
			kept = append(kept, t)
		}
	}
	if len(kept) == 0 {
		delete(p.failures, k)
		return nil
	}
	p.failures[k] = kept
	return kept
}

func (p *PasswordLogin) throttled(keys []string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range keys {
		if len(p.prune(k)) >= p.limit {
			return true
		}
	}
	return false
}

func (p *PasswordLogin) fail(keys []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, k := range keys {
		p.failures[k] = append(p.prune(k), p.now())
	}
}

func (p *PasswordLogin) clear(k string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.failures, k)
}
