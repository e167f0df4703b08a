package enrollment

import (
	"errors"
	"fmt"
	"strings"
	"testing"

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

	res, err := c.gate.ApproveAll(c.ctx, alice, ids, "bulk approval")
	if err != nil {
		t.Fatal(err)
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
	if n := strings.Count(strings.Join(c.store.auditActions(), " "), "enrollment.approve"); n != len(bobs)+1 {
		t.Fatalf("%d approvals audited, want %d", n, len(bobs)+1)
	}

	for _, tc := range []struct {
		name string
		ids  []string
		note string
	}{
		{"error/too many", make([]string, MaxBulkApproval+1), ""},
		{"error/note too long", []string{own}, strings.Repeat("n", 2001)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(c.store.auditActions())
			if _, err := c.gate.ApproveAll(c.ctx, admin, tc.ids, tc.note); !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v, want invalid", err)
			}
			if len(c.store.auditActions()) != before {
				t.Fatal("a refused bulk approval was audited")
			}
		})
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
