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

// ThrottleStore keeps failed sign-ins where every replica sees them.
type ThrottleStore interface {
	LoginBlockedUntil(ctx context.Context, keys []string) (time.Time, error)
	RecordLoginFailure(ctx context.Context, key string, now time.Time, window time.Duration, block func(failures int) time.Time) error
	ClearLoginFailures(ctx context.Context, key string) error
}

// Rule throttles one kind of key: Free failures within Window cost
// nothing; each one after that blocks the key for First, doubling, up to
// Max.
type Rule struct {
	Free   int
	First  time.Duration
	Max    time.Duration
	Window time.Duration
}

// blockAfter is when a key with n failures may try again (zero: now).
func (r Rule) blockAfter(now time.Time, n int) time.Time {
	if n <= r.Free {
		return time.Time{}
	}
	d := r.First
	for i := r.Free + 1; i < n && d < r.Max; i++ {
		d *= 2
	}
	return now.Add(min(d, r.Max))
}

// ThrottlePolicy is how PasswordLogin slows down guessing. Throttling is
// by account and source together, so an attacker guessing one person's
// password from one address is slowed hard without locking that person out
// from their own machine. Per source it stops password spraying across
// accounts; per account, from anywhere, it only adds a short delay, so the
// right password from a new source is never kept out for long.
type ThrottlePolicy struct {
	AccountFromSource Rule
	Source            Rule
	AnySource         Rule
}

// DefaultThrottlePolicy: 5 free tries for an account from one address,
// then 1 s doubling to 15 min; 30 for an address across accounts; 10 for
// an account from anywhere, then at most a 30 s delay.
func DefaultThrottlePolicy() ThrottlePolicy {
	return ThrottlePolicy{
		AccountFromSource: Rule{Free: 5, First: time.Second, Max: 15 * time.Minute, Window: 15 * time.Minute},
		Source:            Rule{Free: 30, First: time.Second, Max: 15 * time.Minute, Window: 15 * time.Minute},
		AnySource:         Rule{Free: 10, First: time.Second, Max: 30 * time.Second, Window: 15 * time.Minute},
	}
}

// PasswordLogin checks local account passwords, with throttling kept in
// the database so that replicas share it.
type PasswordLogin struct {
	users    UserFinder
	audit    Auditor
	throttle ThrottleStore
	policy   ThrottlePolicy
	now      func() time.Time
	// verify checks a password against a hash: VerifyPassword, counted by
	// the test that every path verifies exactly one hash.
	verify func(hash, password string) error

	// dummy is a real hash of a random password, made at the first
	// sign-in (not at start: argon2id takes 64 MiB): every sign-in verifies
	// one hash, found or not, so timing does not tell which accounts exist
	// or have a local password.
	dummyOnce sync.Once
	dummy     string
	dummyErr  error
}

// NewPasswordLogin returns the local sign-in with its throttling policy.
func NewPasswordLogin(users UserFinder, audit Auditor, throttle ThrottleStore, policy ThrottlePolicy, now func() time.Time) *PasswordLogin {
	if now == nil {
		now = time.Now
	}
	return &PasswordLogin{users: users, audit: audit, throttle: throttle, policy: policy, now: now, verify: VerifyPassword}
}

func (p *PasswordLogin) dummyHash() (string, error) {
	p.dummyOnce.Do(func() { p.dummy, p.dummyErr = HashPassword(RandomPassword()) })
	return p.dummy, p.dummyErr
}

type throttleKey struct {
	key  string
	rule Rule
}

// Login returns the user whose e-mail and password these are. ip is the
// client's address as the server established it (trusted proxies
// included).
func (p *PasswordLogin) Login(ctx context.Context, email, password, ip string) (enrollment.User, error) {
	norm, err := enrollment.NormalizeEmail(email)
	if err != nil {
		norm = "invalid"
	}
	keys := []throttleKey{
		{"acct-src:" + norm + "|" + ip, p.policy.AccountFromSource},
		{"src:" + ip, p.policy.Source},
		{"acct:" + norm, p.policy.AnySource},
	}
	names := []string{keys[0].key, keys[1].key, keys[2].key}
	now := p.now()
	until, err := p.throttle.LoginBlockedUntil(ctx, names)
	if err != nil {
		return enrollment.User{}, fmt.Errorf("login: %w", err)
	}
	if until.After(now) {
		p.record(ctx, norm, ip, enrollment.OutcomeRefused, "throttled until "+until.UTC().Format(time.RFC3339))
		return enrollment.User{}, ErrThrottled
	}
	u, err := p.users.UserByEmail(ctx, norm)
	if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
		return enrollment.User{}, fmt.Errorf("login: %w", err)
	}
	found := err == nil
	hash, err := p.dummyHash()
	if err != nil {
		return enrollment.User{}, fmt.Errorf("login: %w", err)
	}
	if found && u.PasswordHash != "" {
		hash = u.PasswordHash
	}
	verified := p.verify(hash, password) == nil
	if !found || u.PasswordHash == "" || !verified || !u.Enabled() {
		for _, k := range keys {
			if err := p.throttle.RecordLoginFailure(ctx, k.key, now, k.rule.Window, func(n int) time.Time { return k.rule.blockAfter(now, n) }); err != nil {
				return enrollment.User{}, fmt.Errorf("login: %w", err)
			}
		}
		p.record(ctx, norm, ip, enrollment.OutcomeRefused, "bad credentials")
		return enrollment.User{}, ErrBadCredentials
	}
	if err := p.throttle.ClearLoginFailures(ctx, keys[0].key); err != nil {
		return enrollment.User{}, fmt.Errorf("login: %w", err)
	}
	return u, nil
}

func (p *PasswordLogin) record(ctx context.Context, email, ip, outcome, detail string) {
	_ = p.audit.AppendAudit(ctx, enrollment.AuditEvent{At: p.now(), Actor: "user:" + email, Action: "session.login",
		TargetType: "user", RemoteIP: ip, Outcome: outcome, Detail: detail})
}
