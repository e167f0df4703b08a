package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store"
)

// Run is the conformance suite: every backend must pass it unchanged.
func Run(t *testing.T, open func(t *testing.T) *store.Store) {
	t.Run("users", func(t *testing.T) { testUsers(t, open(t)) })
	t.Run("user import is all or nothing", func(t *testing.T) { testImportAtomic(t, open(t)) })
	t.Run("audit", func(t *testing.T) { testAudit(t, open(t)) })
	t.Run("token claims", func(t *testing.T) { testClaims(t, open(t)) })
	t.Run("attestation question in the claim", func(t *testing.T) { testQuestionInClaim(t, open(t)) })
	t.Run("claim races", func(t *testing.T) { testClaimRaces(t, open(t)) })
	t.Run("a failing claim update is an error", func(t *testing.T) { testClaimUpdateError(t, open(t)) })
	t.Run("concurrent approvals of one device", func(t *testing.T) { testConcurrentApprovalsOfOneDevice(t, open(t)) })
	t.Run("approval gate", func(t *testing.T) { testApprovalGate(t, open(t)) })
	t.Run("what an approval does", func(t *testing.T) { testApprovalEffects(t, open(t)) })
	t.Run("an approval among other writers", func(t *testing.T) { testApprovalAmongWriters(t, open(t)) })
	t.Run("many decisions in one transaction", func(t *testing.T) { testDecideMany(t, open(t)) })
	t.Run("command queue", func(t *testing.T) { testCommandQueue(t, open(t)) })
	t.Run("fleet command is all or nothing", func(t *testing.T) { testFleetCommandAtomic(t, open(t)) })
	t.Run("check-in record", func(t *testing.T) { testCheckinRecord(t, open(t)) })
}

var testNow = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

func clock() time.Time { return testNow }

func testUsers(t *testing.T, s *store.Store) {
	ctx := context.Background()
	users := enrollment.NewUsers(s, clock)
	actor := enrollment.Actor{Name: "cli:test", RemoteIP: "127.0.0.1"}

	u, err := users.Add(ctx, actor, enrollment.UserInput{Email: "Alice@Example.com", Name: "Alice", Role: enrollment.RoleAdmin})
	if err != nil {
		t.Fatalf("add: %v", err)
	}
	if u.Email != "alice@example.com" {
		t.Errorf("email not normalized: %q", u.Email)
	}
	if _, err := users.Add(ctx, actor, enrollment.UserInput{Email: "alice@example.com"}); !errors.Is(err, enrollment.ErrConflict) {
		t.Errorf("duplicate add: got %v, want ErrConflict", err)
	}
	got, err := s.UserByEmail(ctx, "alice@example.com")
	if err != nil {
		t.Fatalf("by email: %v", err)
	}
	if got.ID != u.ID || got.Name != "Alice" || got.Role != enrollment.RoleAdmin || !got.CreatedAt.Equal(testNow) || !got.Enabled() {
		t.Errorf("round trip: got %+v", got)
	}
	if _, err := s.UserByEmail(ctx, "nobody@example.com"); !errors.Is(err, enrollment.ErrNotFound) {
		t.Errorf("unknown user: got %v, want ErrNotFound", err)
	}
	if _, err := s.UserByID(ctx, enrollment.NewID()); !errors.Is(err, enrollment.ErrNotFound) {
		t.Errorf("unknown id: got %v, want ErrNotFound", err)
	}
	ev := enrollment.AuditEvent{At: testNow, Actor: "cli:test", Action: "user.password"}
	if err := s.SetUserPassword(ctx, u.ID, "hash", ev); err != nil {
		t.Fatalf("set password: %v", err)
	}
	if got, _ := s.UserByID(ctx, u.ID); got.PasswordHash != "hash" {
		t.Errorf("password hash not stored")
	}
	if err := s.SetUserPassword(ctx, enrollment.NewID(), "hash", ev); !errors.Is(err, enrollment.ErrNotFound) {
		t.Errorf("password of unknown user: got %v", err)
	}

	created, updated, err := users.Import(ctx, actor, strings.NewReader("email,name,role\nbob@example.com,Bob,\nalice@example.com,Alice B,approver\n"))
	if err != nil || created != 1 || updated != 1 {
		t.Fatalf("import: created=%d updated=%d err=%v", created, updated, err)
	}
	list, err := s.ListUsers(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %d users, %v", len(list), err)
	}
	if list[0].Email != "alice@example.com" || list[0].Role != enrollment.RoleApprover || list[1].Role != enrollment.RoleUser {
		t.Errorf("after import: %+v", list)
	}
	audit, err := s.ListAudit(ctx, enrollment.AuditFilter{Actor: "cli:test"})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, a := range audit {
		actions = append(actions, a.Action)
	}
	if strings.Join(actions, ",") != "user.import,user.password,user.add" {
		t.Errorf("audit actions newest first: %v", actions)
	}
}

func testImportAtomic(t *testing.T, s *store.Store) {
	ctx := context.Background()
	users := enrollment.NewUsers(s, clock)
	actor := enrollment.Actor{Name: "cli:test"}
	for _, tc := range []struct{ name, csv, want string }{
		{"error/bad email on line 3", "email\nok@example.com\nnot-an-email\n", "line 3"},
		{"error/bad role", "email,role\nok@example.com,root\n", "role"},
		{"error/duplicate", "email\nok@example.com\nOK@example.com\n", "already on line 2"},
		{"error/unknown column", "email,password\nok@example.com,x\n", "unknown column"},
		{"error/empty", "", "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := users.Import(ctx, actor, strings.NewReader(tc.csv))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, enrollment.ErrInvalid) {
				t.Fatalf("got %v, want an ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
	if list, _ := s.ListUsers(ctx); len(list) != 0 {
		t.Errorf("a failed import left %d users", len(list))
	}
}

func testAudit(t *testing.T, s *store.Store) {
	ctx := context.Background()
	for i, action := range []string{"a.one", "a.two", "a.three"} {
		ev := enrollment.AuditEvent{At: testNow.Add(time.Duration(i) * time.Second), Actor: "device:X", Action: action,
			TargetType: "reservation", TargetID: "r1", RemoteIP: fmt.Sprintf("192.0.2.%d", i+1), Outcome: enrollment.OutcomeRefused,
			Detail: "why " + action}
		if err := s.AppendAudit(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.ListAudit(ctx, enrollment.AuditFilter{TargetType: "reservation", TargetID: "r1"})
	if err != nil || len(all) != 3 || all[0].Action != "a.three" || all[2].Outcome != enrollment.OutcomeRefused {
		t.Fatalf("list: %+v %v", all, err)
	}
	// Every field comes back as written, each from its own column.
	want := enrollment.AuditEvent{At: testNow.Add(2 * time.Second), Actor: "device:X", Action: "a.three", TargetType: "reservation",
		TargetID: "r1", RemoteIP: "192.0.2.3", Outcome: enrollment.OutcomeRefused, Detail: "why a.three"}
	got := all[0]
	got.ID = ""
	if !got.At.Equal(want.At) {
		t.Errorf("at: %v, want %v", got.At, want.At)
	}
	got.At = want.At
	if got != want {
		t.Errorf("read back:\n got %+v\nwant %+v", got, want)
	}
	some, err := s.ListAudit(ctx, enrollment.AuditFilter{Since: testNow.Add(time.Second), Until: testNow.Add(2 * time.Second)})
	if err != nil || len(some) != 1 || some[0].Action != "a.two" {
		t.Fatalf("time window: %+v %v", some, err)
	}
	if one, _ := s.ListAudit(ctx, enrollment.AuditFilter{Limit: 1}); len(one) != 1 {
		t.Errorf("limit: %d", len(one))
	}
}
