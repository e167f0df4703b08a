package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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

// ThrottleStore keeps sign-in attempts where every replica sees them.
type ThrottleStore interface {
	// LoginAttempt counts an attempt under key unless it is blocked, and
	// then returns until when; block gives the block for a count.
	LoginAttempt(ctx context.Context, key string, now time.Time, window time.Duration, block func(attempts int) time.Time) (time.Time, error)
	ForgiveLoginAttempt(ctx context.Context, key string) error
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
// accounts. Per account, from anywhere, it never refuses: an attempt waits
// out the account's delay (at most AnySource.Max) and goes on, so the
// right password from a new source is never kept out for longer than that.
// An IPv6 source is its /64: one host holds a whole /64.
type ThrottlePolicy struct {
	AccountFromSource Rule
	Source            Rule
	AnySource         Rule
	// Wait waits d or until ctx ends; nil is the real clock (tests that
	// move a clock of their own pass theirs).
	Wait func(ctx context.Context, d time.Duration) error
	// Concurrent bounds the password checks running at once: each costs
	// 64 MiB, so a flood of sign-ins cannot exhaust memory. Each check
	// already runs on two threads, so two at once keep two cores busy:
	// a flood costs at most 128 MiB.
	Concurrent int
}

// DefaultThrottlePolicy: 5 free tries for an account from one address,
// then 1 s doubling to 15 min; 30 for an address across accounts; 10 for
// an account from anywhere, then at most a 30 s delay.
func DefaultThrottlePolicy() ThrottlePolicy {
	return ThrottlePolicy{
		AccountFromSource: Rule{Free: 5, First: time.Second, Max: 15 * time.Minute, Window: 15 * time.Minute},
		Source:            Rule{Free: 30, First: time.Second, Max: 15 * time.Minute, Window: 15 * time.Minute},
		AnySource:         Rule{Free: 10, First: time.Second, Max: 30 * time.Second, Window: 15 * time.Minute},
		Concurrent:        2,
	}
}

func realWait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
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
	// checks admits at most policy.Concurrent password checks at once.
	checks chan struct{}

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
	if policy.Wait == nil {
		policy.Wait = realWait
	}
	if policy.Concurrent < 1 {
		policy.Concurrent = 1
	}
	return &PasswordLogin{users: users, audit: audit, throttle: throttle, policy: policy, now: now, verify: VerifyPassword,
		checks: make(chan struct{}, policy.Concurrent)}
}

func (p *PasswordLogin) dummyHash() (string, error) {
	p.dummyOnce.Do(func() { p.dummy, p.dummyErr = unmatchableHash() })
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
	source := sourceKey(ip)
	accountFromSource := throttleKey{"acct-src:" + norm + "|" + source, p.policy.AccountFromSource}
	fromSource := throttleKey{"src:" + source, p.policy.Source}
	account := throttleKey{"acct:" + norm, p.policy.AnySource}
	for _, k := range []throttleKey{accountFromSource, fromSource} {
		blocked, err := p.attempt(ctx, k)
		if err != nil {
			return enrollment.User{}, fmt.Errorf("login: %w", err)
		}
		if !blocked.IsZero() {
			p.record(ctx, norm, ip, enrollment.OutcomeRefused, "throttled until "+blocked.UTC().Format(time.RFC3339))
			return enrollment.User{}, ErrThrottled
		}
	}
	// The account from anywhere only delays: wait out its block once.
	blocked, err := p.attempt(ctx, account)
	if err != nil {
		return enrollment.User{}, fmt.Errorf("login: %w", err)
	}
	if !blocked.IsZero() {
		if err := p.policy.Wait(ctx, min(blocked.Sub(p.now()), account.rule.Max)); err != nil {
			return enrollment.User{}, fmt.Errorf("login: %w", err)
		}
	}
	u, err := p.users.UserByEmail(ctx, norm)
	if err != nil && !errors.Is(err, enrollment.ErrNotFound) {
		return enrollment.User{}, fmt.Errorf("login: %w", err)
	}
	found := err == nil
	hash := u.PasswordHash
	if !found || hash == "" {
		// Unknown accounts take as long as known ones: one argon2id
		// verification against a hash no password matches, made without
		// argon2 work so that the first such attempt is not slower.
		if hash, err = p.dummyHash(); err != nil {
			return enrollment.User{}, fmt.Errorf("login: %w", err)
		}
	}
	select {
	case p.checks <- struct{}{}:
	case <-ctx.Done():
		return enrollment.User{}, fmt.Errorf("login: %w", ctx.Err())
	}
	verified := p.verify(hash, password) == nil
	<-p.checks
	if !found || u.PasswordHash == "" || !verified || !u.Enabled() {
		p.record(ctx, norm, ip, enrollment.OutcomeRefused, "bad credentials")
		return enrollment.User{}, ErrBadCredentials
	}
	// A success is not a guess: the account's counts go, and the shared
	// source gets its attempt back.
	for _, k := range []string{accountFromSource.key, account.key} {
		if err := p.throttle.ClearLoginFailures(ctx, k); err != nil {
			return enrollment.User{}, fmt.Errorf("login: %w", err)
		}
	}
	if err := p.throttle.ForgiveLoginAttempt(ctx, fromSource.key); err != nil {
		return enrollment.User{}, fmt.Errorf("login: %w", err)
	}
	return u, nil
}

// attempt counts an attempt under k, or says until when k is blocked.
func (p *PasswordLogin) attempt(ctx context.Context, k throttleKey) (time.Time, error) {
	now := p.now()
	return p.throttle.LoginAttempt(ctx, k.key, now, k.rule.Window, func(n int) time.Time { return k.rule.blockAfter(now, n) })
}

// sourceKey is the throttling source of an address: the address, or its
// /64 for IPv6, since one host or customer holds a whole /64.
func sourceKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			return p.String()
		}
	}
	return a.String()
}

func (p *PasswordLogin) record(ctx context.Context, email, ip, outcome, detail string) {
	_ = p.audit.AppendAudit(ctx, enrollment.AuditEvent{At: p.now(), Actor: "user:" + email, Action: "session.login",
		TargetType: "user", RemoteIP: ip, Outcome: outcome, Detail: detail})
}
