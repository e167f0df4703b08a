package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

type users map[string]enrollment.User

func (u users) UserByEmail(_ context.Context, email string) (enrollment.User, error) {
	if x, ok := u[email]; ok {
		return x, nil
	}
	return enrollment.User{}, enrollment.ErrNotFound
}

type nopAudit struct{}

func (nopAudit) AppendAudit(context.Context, enrollment.AuditEvent) error { return nil }

type nopThrottle struct{}

func (nopThrottle) LoginAttempt(context.Context, string, time.Time, time.Duration, func(int) time.Time) (time.Time, error) {
	return time.Time{}, nil
}
func (nopThrottle) ForgiveLoginAttempt(context.Context, string) error { return nil }
func (nopThrottle) ClearLoginFailures(context.Context, string) error  { return nil }

// TestEverySignInVerifiesOneHash: an unknown e-mail, an account without a
// local password, a disabled account and a wrong password each cost one
// argon2id verification, like the right password, so the answer's timing
// does not tell them apart (the review measured 2-12 ms for an account
// without a password against 170-370 ms for an unknown e-mail).
func TestEverySignInVerifiesOneHash(t *testing.T) {
	hash, err := HashPassword("right password!")
	if err != nil {
		t.Fatal(err)
	}
	disabled := time.Now()
	l := NewPasswordLogin(users{
		"pw@example.com":       {ID: "1", Email: "pw@example.com", PasswordHash: hash},
		"idp@example.com":      {ID: "2", Email: "idp@example.com"},
		"disabled@example.com": {ID: "3", Email: "disabled@example.com", PasswordHash: hash, DisabledAt: &disabled},
	}, nopAudit{}, nopThrottle{}, DefaultThrottlePolicy(), nil)
	var verified []string
	l.verify = func(h, pw string) error {
		verified = append(verified, h)
		return VerifyPassword(h, pw)
	}
	for _, tc := range []struct{ name, email, pw string }{
		{"right password", "pw@example.com", "right password!"},
		{"wrong password", "pw@example.com", "wrong"},
		{"no local password", "idp@example.com", "x"},
		{"unknown e-mail", "nobody@example.com", "x"},
		{"disabled account", "disabled@example.com", "right password!"},
		{"not an e-mail", "not an e-mail", "x"},
	} {
		verified = nil
		_, _ = l.Login(context.Background(), tc.email, tc.pw, "192.0.2.1")
		if len(verified) != 1 {
			t.Errorf("%s: %d verifications, want 1", tc.name, len(verified))
			continue
		}
		if h := verified[0]; len(h) < 40 || h[:9] != "$argon2id" || h[len(h)-43:] == "" {
			t.Errorf("%s: verified %q, not a real argon2id hash", tc.name, h)
		}
		if err := VerifyPassword(verified[0], "y"); err != ErrWrongPassword {
			t.Errorf("%s: the hash verified does not parse as a real one: %v", tc.name, err)
		}
	}
}

// TestSignInFloodIsBounded: however many sign-ins arrive at once, at most
// policy.Concurrent password checks (64 MiB each) run together, and a
// sign-in whose client gives up stops waiting for its turn.
func TestSignInFloodIsBounded(t *testing.T) {
	policy := DefaultThrottlePolicy()
	l := NewPasswordLogin(users{}, nopAudit{}, nopThrottle{}, policy, nil)
	var mu sync.Mutex
	running, most, checks := 0, 0, 0
	release := make(chan struct{})
	l.verify = func(string, string) error {
		mu.Lock()
		running++
		checks++
		most = max(most, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		return ErrWrongPassword
	}
	l.dummyOnce.Do(func() { l.dummy = "$argon2id$test" })
	const flood = 50
	var wg sync.WaitGroup
	for i := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = l.Login(context.Background(), fmt.Sprintf("u%d@example.com", i), "guess", "192.0.2.1")
		}()
	}
	for full := false; !full; time.Sleep(time.Millisecond) {
		mu.Lock()
		full = running == policy.Concurrent
		mu.Unlock()
	}
	// A sign-in whose client went away does not wait for a turn.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.Login(ctx, "late@example.com", "guess", "192.0.2.2"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a sign-in given up while waiting: %v", err)
	}
	close(release)
	wg.Wait()
	if most > policy.Concurrent || most < 1 {
		t.Errorf("%d password checks ran at once, the bound is %d", most, policy.Concurrent)
	}
	if checks != flood {
		t.Errorf("%d checks for %d sign-ins", checks, flood)
	}
}

// TestKnownSignInMakesNoDummyHash: the development admin's one-time
// password needs no memory-hard hash, and signing in with it must not
// make the unknown-account dummy either (one argon2id hash, 64 MiB of
// peak memory at the first sign-in).
func TestKnownSignInMakesNoDummyHash(t *testing.T) {
	pw, hash, err := NewRandomPassword()
	if err != nil {
		t.Fatal(err)
	}
	l := NewPasswordLogin(users{"admin@localhost": {ID: "1", Email: "admin@localhost", PasswordHash: hash}},
		nopAudit{}, nopThrottle{}, DefaultThrottlePolicy(), nil)
	if _, err := l.Login(context.Background(), "admin@localhost", pw, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if l.dummy != "" {
		t.Fatal("a known account's sign-in made the dummy hash")
	}
	if _, err := l.Login(context.Background(), "nobody@localhost", pw, "192.0.2.1"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("unknown account: %v", err)
	}
	if l.dummy == "" {
		t.Fatal("an unknown account's sign-in verified no dummy hash")
	}
}
