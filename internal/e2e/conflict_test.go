package e2e

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// TestTakeoverClaimIsAConflict: Bob's enrollment reports the UDID and
// serial of Alice's approved Mac. It is flagged as a claim on Alice's
// device; approving it leaves Alice's enrollment and certificate alone;
// retiring hers is a separate, audited action that tells her.
func TestTakeoverClaimIsAConflict(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		box, port := startMailbox(t)
		e := newEnv(t, dialect, func(c *config.Config) {
			c.SMTP = config.SMTP{Host: "127.0.0.1", Port: port, From: "vestibule@example.com"}
		})
		approver := e.token(enrollment.RoleApprover)

		alice, ra := e.enrolledDevice("alice@example.com", "C02ALICE0001")
		code, err := alice.Authenticate(e.ctx)
		e.expect("Alice's Authenticate", code, err, 200)
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, ra.ID, "Alice's laptop"); err != nil {
			t.Fatal(err)
		}
		bob, rb := e.enrolledDevice("bob@example.com", "C02ALICE0001")
		bob.UDID = alice.UDID
		code, err = bob.Authenticate(e.ctx)
		e.expect("Bob's Authenticate", code, err, 200)

		be := e.enrollment(rb.ID)
		if be.ConflictID != ra.ID || be.ReEnrollment {
			t.Fatalf("Bob's enrollment: conflict %q re-enrollment %v; want a conflict with %s and no re-enrollment", be.ConflictID, be.ReEnrollment, ra.ID)
		}
		if !strings.Contains(strings.Join(be.Flags(), ","), "claims_another_users_device") {
			t.Fatalf("flags: %v", be.Flags())
		}
		_, body := e.api(approver, "GET", "/api/v1/enrollments/"+rb.ID, "")
		var v struct {
			ConflictWith string   `json:"conflict_with"`
			Flags        []string `json:"flags"`
		}
		if err := json.Unmarshal([]byte(body), &v); err != nil || v.ConflictWith != ra.ID {
			t.Fatalf("API view: %s", body)
		}
		viewer := e.browser(enrollment.RoleViewer)
		code, page := do(t, viewer, "GET", e.url+"/console/pending", nil, nil)
		if code != 200 || !strings.Contains(page, "claims the device of alice@example.com") {
			t.Fatalf("the queue does not flag the claim on Alice's device: %d", code)
		}
		code, page = do(t, viewer, "GET", e.url+"/console/devices/"+rb.ID, nil, nil)
		if code != 200 || !strings.Contains(page, "claims the device of alice@example.com") {
			t.Fatalf("the device page does not show the conflict: %d", code)
		}

		// Approving Bob's enrollment does not touch Alice's.
		code, body = e.api(approver, "POST", "/api/v1/enrollments/"+rb.ID+"/approve", `{"note":"Bob's"}`)
		if code != 200 {
			t.Fatalf("approve Bob: %d %s", code, body)
		}
		if ae := e.enrollment(ra.ID); ae.State != enrollment.StateApproved {
			t.Fatalf("approving Bob's enrollment changed Alice's to %s", ae.State)
		}
		code, _, err = alice.Connect(e.ctx, "Idle", "")
		e.expect("Alice's Connect after Bob's approval", code, err, 200)

		// Retiring Alice's enrollment is its own decision.
		for _, tc := range []struct {
			name, path, body string
			want             int
		}{
			{"no reason", "/api/v1/enrollments/" + ra.ID + "/retire", `{"reason":" "}`, 400},
			{"unknown ID", "/api/v1/enrollments/" + enrollment.NewID() + "/retire", `{"reason":"x"}`, 404},
			{"malformed body", "/api/v1/enrollments/" + ra.ID + "/retire", `{"reason":`, 400},
		} {
			if code, body := e.api(approver, "POST", tc.path, tc.body); code != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
			}
		}
		if code, _ := e.api(e.token(enrollment.RoleViewer), "POST", "/api/v1/enrollments/"+ra.ID+"/retire", `{"reason":"x"}`); code != 403 {
			t.Errorf("a viewer retired an enrollment: %d", code)
		}
		code, body = e.api(approver, "POST", "/api/v1/enrollments/"+ra.ID+"/retire", `{"reason":"laptop handed over to Bob"}`)
		if code != 200 {
			t.Fatalf("retire: %d %s", code, body)
		}
		if ae := e.enrollment(ra.ID); ae.State != enrollment.StateSuperseded || ae.DecisionNote != "laptop handed over to Bob" {
			t.Fatalf("Alice's enrollment after retire: %s %q", ae.State, ae.DecisionNote)
		}
		code, _, err = alice.Connect(e.ctx, "Idle", "")
		e.expect("Alice's Connect after retire", code, err, 401)
		if code, _ := e.api(approver, "POST", "/api/v1/enrollments/"+ra.ID+"/retire", `{"reason":"again"}`); code != 409 {
			t.Errorf("retiring twice: %d, want 409", code)
		}
		events, err := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Action: "enrollment.retire", TargetID: ra.ID})
		if err != nil || len(events) != 1 || events[0].Detail != "laptop handed over to Bob" {
			t.Fatalf("audit of the retire: %v %+v", err, events)
		}
		e.app.Mailer.Wait()
		box.mu.Lock()
		defer box.mu.Unlock()
		var told bool
		for i, m := range box.msgs {
			if box.rcpt[i] == "alice@example.com" && strings.Contains(m, "retired") && strings.Contains(m, "laptop handed over to Bob") {
				told = true
			}
		}
		if !told {
			t.Fatalf("Alice was not told her device was retired: %v", box.rcpt)
		}
	})
}

// TestSameUserReEnrollmentSupersedes keeps the old rule for one owner:
// approving a re-enrollment retires the same user's earlier enrollment.
func TestSameUserReEnrollmentSupersedes(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		first, r1 := e.enrolledDevice("alice@example.com", "C02SAMEUSER1")
		code, err := first.Authenticate(e.ctx)
		e.expect("first Authenticate", code, err, 200)
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, r1.ID, ""); err != nil {
			t.Fatal(err)
		}
		again, r2 := e.enrolledDevice("alice@example.com", "C02SAMEUSER1")
		again.UDID = first.UDID
		code, err = again.Authenticate(e.ctx)
		e.expect("re-enrollment Authenticate", code, err, 200)
		if en := e.enrollment(r2.ID); !en.ReEnrollment || en.PreviousID != r1.ID || en.ConflictID != "" {
			t.Fatalf("re-enrollment: %+v", en)
		}
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, r2.ID, ""); err != nil {
			t.Fatal(err)
		}
		if en := e.enrollment(r1.ID); en.State != enrollment.StateSuperseded {
			t.Fatalf("the earlier enrollment is %s, want superseded", en.State)
		}
	})
}

// TestDisabledOwner: disabling a user denies their pending enrollments,
// refuses their renewals, and flags their approved devices for an admin.
func TestDisabledOwner(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		approved, ra := e.enrolledDevice("bob@example.com", "C02BOBAPPR01")
		code, err := approved.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, ra.ID, ""); err != nil {
			t.Fatal(err)
		}
		pending, rp := e.enrolledDevice("bob@example.com", "C02BOBPEND01")
		code, err = pending.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)

		bob, err := e.app.Store.UserByEmail(e.ctx, "bob@example.com")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.app.Users.SetDisabled(e.ctx, admin, bob.ID, true); err != nil {
			t.Fatal(err)
		}
		if en := e.enrollment(rp.ID); en.State != enrollment.StateDenied || en.DecisionNote != "owner disabled" {
			t.Fatalf("pending enrollment of a disabled owner: %s %q", en.State, en.DecisionNote)
		}
		if certs, _ := e.app.Store.ListCertificates(e.ctx, rp.ID); len(certs) != 1 || certs[0].RevokedAt == nil {
			t.Fatalf("the denied enrollment's certificate is not revoked: %+v", certs)
		}
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, rp.ID, ""); !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("approving the denied enrollment: %v", err)
		}
		var scepErr *devicesim.SCEPError
		if err := approved.Renew(e.ctx); !errors.As(err, &scepErr) {
			t.Fatalf("renewal of a disabled owner's device: %v", err)
		}
		en := e.enrollment(ra.ID)
		if !en.OwnerDisabled || !strings.Contains(strings.Join(en.Flags(), ","), "owner_disabled") {
			t.Fatalf("the approved device is not flagged: %+v", en.Flags())
		}
		_, body := e.api(e.token(enrollment.RoleViewer), "GET", "/api/v1/enrollments/"+ra.ID, "")
		if !strings.Contains(body, `"owner_disabled":true`) {
			t.Fatalf("API: %s", body)
		}
		_, page := do(t, e.browser(enrollment.RoleViewer), "GET", e.url+"/console/devices", nil, nil)
		if !strings.Contains(page, "owner_disabled") {
			t.Fatal("the devices page does not flag the disabled owner's device")
		}
	})
}
