package enrollment

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/attest"
)

// TestApproveAll: a bulk approval judges each enrollment by Approve's
// rules and answers for each, in the order given, an ID given twice once;
// two enrollments of one device and owner are approved as if one after
// the other; a request too large or with too long a note does nothing.
func TestApproveAll(t *testing.T) {
	c := newCeremony(t)
	alice := Actor{Name: "user:alice@example.com", Email: "alice@example.com"}
	var bobs []string
	for i := range 2*bulkBatch + 5 {
		bobs = append(bobs, c.enrolled(bobID, fmt.Sprintf("UDID-B%d", i), fmt.Sprintf("SER-B%d", i)).ID)
	}
	own := c.enrolled(aliceID, "UDID-A", "SER-A").ID
	denied := c.enrolled(bobID, "UDID-D", "SER-D").ID
	if _, err := c.gate.Deny(c.ctx, admin, denied, "no"); err != nil {
		t.Fatal(err)
	}
	first, second := c.enrolled(bobID, "UDID-TWICE", "SER-TWICE").ID, c.enrolled(bobID, "UDID-TWICE", "SER-TWICE").ID
	unknown := NewID()
	given := append([]string{first, own, "x;DROP", denied, second, unknown}, bobs...)
	ids := append(append([]string{}, given[:7]...), given[6:]...) // bobs[0] twice

	res, err := c.gate.ApproveAll(c.ctx, alice, ids, "")
	if err != nil {
		t.Fatal(err)
	}
	// 70 approvable (the device's second after them): three batches,
	// none refused.
	for _, r := range res {
		if r.BatchErr != nil {
			t.Fatalf("%s: its batch failed: %v", r.ID, r.BatchErr)
		}
	}
	if c.store.batches != 3 || c.store.refused != 0 {
		t.Fatalf("%d batches, %d refused; want 3, none refused", c.store.batches, c.store.refused)
	}
	want := map[string]error{own: ErrForbidden, "x;DROP": ErrNotFound, denied: ErrConflict, second: ErrConflict, unknown: ErrNotFound}
	if len(res) != len(given) {
		t.Fatalf("%d results for %d IDs, one given twice", len(res), len(ids))
	}
	for i, r := range res {
		if r.ID != given[i] {
			t.Fatalf("result %d is for %s, want %s", i, r.ID, given[i])
		}
		if w := want[r.ID]; !errors.Is(r.Err, w) || (w == nil) != (r.Err == nil) {
			t.Fatalf("%s: %v, want %v", r.ID, r.Err, w)
		}
		if r.Err == nil && (r.Enrollment.State != StateApproved || c.store.pushes[r.ID] != 1 || len(c.store.commands[r.ID]) != 2) {
			t.Fatalf("%s: %s, %d pushes, %d commands", r.ID, r.Enrollment.State, c.store.pushes[r.ID], len(c.store.commands[r.ID]))
		}
	}
	if s := c.store.enrollments[second].State; s != StateSuperseded {
		t.Fatalf("the device's second enrollment is %s, want superseded by the first", s)
	}
	var approvals int
	for _, ev := range c.store.audit {
		if ev.Action == "enrollment.approve" {
			approvals++
			if ev.Detail != "bulk approval" || ev.Actor != alice.Name {
				t.Fatalf("approval audited as %q by %q", ev.Detail, ev.Actor)
			}
		}
	}
	if approvals != len(bobs)+1 {
		t.Fatalf("%d approvals audited, want %d", approvals, len(bobs)+1)
	}

	many := make([]string, MaxBulkApproval+1)
	for i := range many {
		many[i] = fmt.Sprintf("x%d", i)
	}
	for _, tc := range []struct {
		name string
		ids  []string
		note string
		want error
	}{
		{"error/too many", many, "", ErrInvalid},
		{"ok/as many as allowed", many[:MaxBulkApproval], "", nil},
		{"error/note too long", []string{own}, strings.Repeat("n", 1986), ErrInvalid},
		{"ok/the longest note", []string{own}, strings.Repeat("n", 1984) + "!", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(c.store.auditActions())
			res, err := c.gate.ApproveAll(c.ctx, admin, tc.ids, tc.note)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			if tc.want == nil && len(res) != len(tc.ids) {
				t.Fatalf("%d results for %d IDs", len(res), len(tc.ids))
			}
			if len(c.store.auditActions()) != before+map[bool]int{true: 1, false: 0}[tc.want == nil && len(tc.ids) == 1] {
				t.Fatalf("audit events %d → %d", before, len(c.store.auditActions()))
			}
			// The note is recorded whole, within what an event's detail keeps.
			if last := c.store.audit[len(c.store.audit)-1]; tc.want == nil && len(tc.ids) == 1 &&
				(last.Detail != "bulk approval: "+tc.note || last.Bounded().Detail != last.Detail) {
				t.Fatalf("recorded %d characters ending %q", len(last.Detail), last.Detail[len(last.Detail)-5:])
			}
		})
	}
}

// failingBatches is the in-memory store whose batches all fail whole.
type failingBatches struct{ *memStore }

func (failingBatches) DecideMany(context.Context, State, State, string, string, time.Time, []Decision) ([]DecisionResult, error) {
	return nil, errors.New("the batch failed")
}

// TestApproveAllDecidesAFailedBatchOneByOne: a batch that fails whole is
// decided again one enrollment at a time, each judged on its own.
func TestApproveAllDecidesAFailedBatchOneByOne(t *testing.T) {
	c := newCeremony(t)
	gate := NewEnrollments(failingBatches{c.store}, c.tokens, fixedPost{}, c.clock.Now)
	var ids []string
	for i := range bulkBatch + 8 {
		ids = append(ids, c.enrolled(bobID, fmt.Sprintf("UDID-F%d", i), fmt.Sprintf("SER-F%d", i)).ID)
	}
	denied := ids[5]
	if _, err := c.gate.Deny(c.ctx, admin, denied, "no"); err != nil {
		t.Fatal(err)
	}
	res, err := gate.ApproveAll(c.ctx, admin, ids, "checked")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.ID == denied {
			if !errors.Is(r.Err, ErrConflict) {
				t.Fatalf("the denied enrollment: %v, want a conflict", r.Err)
			}
			continue
		}
		if r.Err != nil || c.store.enrollments[r.ID].State != StateApproved || r.BatchErr == nil {
			t.Fatalf("%s: %v, %s, batch error %v", r.ID, r.Err, c.store.enrollments[r.ID].State, r.BatchErr)
		}
	}
	if !c.store.hasAudit("enrollment.approve", OutcomeOK) || c.store.audit[len(c.store.audit)-1].Detail != "bulk approval: checked" {
		t.Fatalf("last event %+v", c.store.audit[len(c.store.audit)-1])
	}
}

// TestApproveAllRequiresAttestation: the attestation policy holds in bulk
// as for one approval.
func TestApproveAllRequiresAttestation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		actor  Actor
		note   string
		want   error
		action string
	}{
		{"error/approver", Actor{Name: "user:ann@example.com", Email: "ann@example.com"}, "looks fine", ErrForbidden, ""},
		// The note a bulk approval records is not the admin's reason.
		{"error/admin without a reason", Actor{Name: "user:root@example.com", Email: "root@example.com", Admin: true}, " ", ErrForbidden, ""},
		{"ok/admin with a reason", Actor{Name: "user:root@example.com", Email: "root@example.com", Admin: true}, "checked in person", nil,
			"enrollment.approve_unattested"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCeremony(t)
			c.gate.SetAttestation(questions{}, fakeVerifier{r: attest.Result{Serial: "SER-1", UDID: "UDID-1", Fresh: true}}, true)
			e := c.enrolled(aliceID, "UDID-1", "SER-1")
			res, err := c.gate.ApproveAll(c.ctx, tc.actor, []string{e.ID}, tc.note)
			if err != nil {
				t.Fatal(err)
			}
			if !errors.Is(res[0].Err, tc.want) || (tc.want == nil) != (res[0].Err == nil) {
				t.Fatalf("%v, want %v", res[0].Err, tc.want)
			}
			if tc.action != "" && !c.store.hasAudit(tc.action, OutcomeOK) {
				t.Fatalf("audit %v lacks %s", c.store.auditActions(), tc.action)
			}
		})
	}
}
