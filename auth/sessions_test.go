package auth_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestSessions(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		st := storetest.Open(t, dialect)
		c := &clock{time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
		u, err := enrollment.NewUsers(st, c.now).Add(ctx, enrollment.Actor{Name: "t"}, enrollment.UserInput{Email: "a@example.com", Role: enrollment.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		s := auth.NewSessions(st, 30*time.Minute, 2*time.Hour, c.now)
		id, err := s.Start(ctx, u, "password", "192.0.2.1", "test")
		if err != nil {
			t.Fatal(err)
		}
		id2, _ := s.Start(ctx, u, "password", "192.0.2.1", "test")
		if id == id2 {
			t.Fatal("two sessions share an ID")
		}
		check := func(when time.Duration, sid string, want error) {
			t.Helper()
			c.t = c.t.Add(when)
			_, got, err := s.Check(ctx, sid)
			if !errors.Is(err, want) || (want == nil && (err != nil || got.ID != u.ID)) {
				t.Fatalf("after %v: %v, want %v", when, err, want)
			}
		}
		check(0, id, nil)
		check(25*time.Minute, id, nil)   // active: the idle clock restarts
		check(25*time.Minute, id, nil)   // still within 30 minutes of the last use
		check(0, id2, auth.ErrNoSession) // id2 sat idle for 50 minutes
		check(29*time.Minute, id, nil)
		check(29*time.Minute, id, nil)
		check(29*time.Minute, id, auth.ErrNoSession) // absolute timeout: 2 h after sign-in
		check(0, "forged", auth.ErrNoSession)
		check(0, "", auth.ErrNoSession)

		id3, _ := s.Start(ctx, u, "password", "", "")
		if err := s.End(ctx, id3); err != nil {
			t.Fatal(err)
		}
		check(0, id3, auth.ErrNoSession)

		id4, _ := s.Start(ctx, u, "password", "", "")
		disabled, err := enrollment.NewUsers(st, c.now).SetDisabled(ctx, enrollment.Actor{Name: "t"}, u.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		check(0, id4, auth.ErrNoSession)
		if _, err := s.Start(ctx, disabled, "password", "", ""); err == nil {
			t.Fatal("a session started for a disabled user")
		}
	})
}

func TestPasswordLogin(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		st := storetest.Open(t, dialect)
		c := &clock{time.Now()}
		users := enrollment.NewUsers(st, c.now)
		const right = "correct horse battery"
		hash, _ := auth.HashPassword(right)
		for _, email := range []string{"a@example.com", "b@example.com", "c@example.com"} {
			u, _ := users.Add(ctx, enrollment.Actor{Name: "t"}, enrollment.UserInput{Email: email, Role: enrollment.RoleAdmin})
			st.SetUserPassword(ctx, u.ID, hash, enrollment.AuditEvent{At: c.t, Actor: "t", Action: "x"})
		}
		// Waiting moves the test's clock; the longest wait is kept.
		var waited time.Duration
		policy := auth.DefaultThrottlePolicy()
		policy.Wait = func(_ context.Context, d time.Duration) error {
			waited = max(waited, d)
			c.t = c.t.Add(d)
			return nil
		}
		l := auth.NewPasswordLogin(st, st, st, policy, c.now)
		// A second replica on the same database.
		other := auth.NewPasswordLogin(st, st, st, policy, c.now)
		login := func(l *auth.PasswordLogin, email, pw, ip string) error {
			_, err := l.Login(ctx, email, pw, ip)
			return err
		}

		if err := login(l, "A@example.com", right, "192.0.2.1"); err != nil {
			t.Fatalf("login: %v", err)
		}
		for _, tc := range []struct{ email, pw string }{{"a@example.com", "wrong"}, {"nobody@example.com", "x"}, {"not an email", "x"}} {
			if err := login(l, tc.email, tc.pw, "192.0.2.9"); !errors.Is(err, auth.ErrBadCredentials) {
				t.Errorf("%s: %v", tc.email, err)
			}
		}

		// Five wrong guesses at one account from one address are free.
		for range 5 {
			_ = login(l, "b@example.com", "wrong", "198.51.100.7")
		}
		if err := login(other, "b@example.com", right, "198.51.100.7"); err != nil {
			t.Fatalf("five failures are free: %v", err)
		}

		// Six: that address waits for that account, on every replica, with
		// a doubling delay; the owner elsewhere is not locked out.
		for range 6 {
			_ = login(l, "c@example.com", "wrong", "198.51.100.8")
		}
		if err := login(other, "c@example.com", right, "198.51.100.8"); !errors.Is(err, auth.ErrThrottled) {
			t.Fatalf("after 6 failures, on another replica: %v", err)
		}
		if err := login(l, "c@example.com", right, "192.0.2.1"); err != nil {
			t.Fatalf("the right password from another address: %v", err)
		}
		c.t = c.t.Add(16 * time.Minute)

		// Twelve guesses at once from one address: counted one by one, so
		// at most the free five and the one that arms the block are checked.
		results := make(chan error, 12)
		for range 12 {
			go func() { results <- login(l, "c@example.com", "wrong", "203.0.113.50") }()
		}
		var checked int
		for range 12 {
			if errors.Is(<-results, auth.ErrBadCredentials) {
				checked++
			}
		}
		if checked > 6 {
			t.Fatalf("a burst of 12 had %d passwords checked, want at most 6", checked)
		}
		c.t = c.t.Add(16 * time.Minute)

		// An IPv6 /64 is one source.
		for i := range 6 {
			_ = login(l, "c@example.com", "wrong", fmt.Sprintf("2001:db8:1:2::%x", i+1))
		}
		if err := login(l, "c@example.com", right, "2001:db8:1:2::ff"); !errors.Is(err, auth.ErrThrottled) {
			t.Fatalf("another address of the same /64: %v", err)
		}
		c.t = c.t.Add(16 * time.Minute)

		// Guessing from many addresses: the right password from a new
		// address only waits, and at most 30 s, however long it goes on.
		for round := range 3 {
			waited = 0
			for i := range 14 {
				_ = login(l, "c@example.com", "wrong", fmt.Sprintf("203.0.113.%d", 20*round+i))
			}
			if waited == 0 {
				t.Fatalf("round %d: guessing from 14 addresses did not slow the account", round)
			}
			waited = 0
			if err := login(l, "c@example.com", right, fmt.Sprintf("192.0.2.%d", 200+round)); err != nil {
				t.Fatalf("round %d: the owner from a new address: %v", round, err)
			}
			if waited > 30*time.Second {
				t.Fatalf("round %d: the owner waited %s", round, waited)
			}
		}

		// Spraying from one address across accounts (a policy with a
		// smaller allowance than the default 30, to keep the test short).
		c.t = c.t.Add(time.Hour)
		sprayPolicy := policy
		sprayPolicy.Source.Free = 4
		spray := auth.NewPasswordLogin(st, st, st, sprayPolicy, c.now)
		for i := range 5 {
			_ = login(spray, fmt.Sprintf("user%d@example.com", i), "wrong", "198.51.100.99")
		}
		if err := login(spray, "a@example.com", right, "198.51.100.99"); !errors.Is(err, auth.ErrThrottled) {
			t.Fatalf("an address that sprayed 5 accounts: %v", err)
		}
		if ev, _ := st.ListAudit(ctx, enrollment.AuditFilter{Action: "session.login"}); len(ev) < 4 {
			t.Errorf("failed sign-ins audited: %d", len(ev))
		}
	})
}
