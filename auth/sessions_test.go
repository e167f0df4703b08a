package auth_test

import (
	"context"
	"errors"
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
	ctx := context.Background()
	st := storetest.Open(t, "sqlite")
	c := &clock{time.Now()}
	users := enrollment.NewUsers(st, c.now)
	u, _ := users.Add(ctx, enrollment.Actor{Name: "t"}, enrollment.UserInput{Email: "a@example.com", Role: enrollment.RoleAdmin})
	hash, _ := auth.HashPassword("correct horse battery")
	st.SetUserPassword(ctx, u.ID, hash, enrollment.AuditEvent{At: c.t, Actor: "t", Action: "x"})
	l := auth.NewPasswordLogin(st, st, 3, 15*time.Minute, c.now)

	if got, err := l.Login(ctx, "A@example.com", "correct horse battery", "192.0.2.1"); err != nil || got.ID != u.ID {
		t.Fatalf("login: %v", err)
	}
	for _, tc := range []struct{ email, pw string }{{"a@example.com", "wrong"}, {"nobody@example.com", "x"}, {"not an email", "x"}} {
		if _, err := l.Login(ctx, tc.email, tc.pw, "192.0.2.9"); !errors.Is(err, auth.ErrBadCredentials) {
			t.Errorf("%s: %v", tc.email, err)
		}
	}
	// Three failures from one address: even the right password waits.
	if _, err := l.Login(ctx, "a@example.com", "correct horse battery", "192.0.2.9"); !errors.Is(err, auth.ErrThrottled) {
		t.Fatalf("after 3 failures: %v", err)
	}
	c.t = c.t.Add(16 * time.Minute)
	if _, err := l.Login(ctx, "a@example.com", "correct horse battery", "192.0.2.9"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	if ev, _ := st.ListAudit(ctx, enrollment.AuditFilter{Action: "session.login"}); len(ev) < 4 {
		t.Errorf("failed sign-ins audited: %d", len(ev))
	}
	if err := auth.VerifyPassword("$argon2id$v=19$m=65536,t=3,p=2$c29tZXNhbHRzb21lc2FsdA$5l8lZrP1o2v9r2mD4Nw6iV0yq6u9m1a3h7JkB6iS2bU", "x"); !errors.Is(err, auth.ErrWrongPassword) {
		t.Errorf("the dummy hash used for unknown users does not parse: %v", err)
	}
}
