package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/plisttest"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// TestHostilePlistBodies sends the security review's crafted plists, each
// correctly signed by the certificate of an unapproved device, to the
// check-in and the command endpoints. Before the plist guard the first of
// them ended the server process; now each is a 4xx and nothing changes.
func TestHostilePlistBodies(t *testing.T) {
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		d, r := e.enrolledDevice("alice@example.com", "SER-HOSTILE")
		code, err := d.Authenticate(e.ctx)
		e.expect("Authenticate", code, err, 200)
		before := e.enrollment(r.ID)

		for _, h := range plisttest.HostileDocuments() {
			t.Run(h.Name, func(t *testing.T) {
				code, err := d.SendSigned(e.ctx, d.Profile.CheckInURL, "application/x-apple-aspen-mdm-checkin", h.Body)
				if err != nil || code < 400 || code > 499 {
					t.Errorf("check-in: HTTP %d, %v; want 4xx", code, err)
				}
				code, err = d.SendSigned(e.ctx, d.Profile.ServerURL, "application/x-apple-aspen-mdm", h.Body)
				if err != nil || code < 400 || code > 499 {
					t.Errorf("connect: HTTP %d, %v; want 4xx", code, err)
				}
			})
		}

		resp, err := http.Get(e.url + "/healthz")
		if err != nil {
			t.Fatalf("server is gone: %v", err)
		}
		resp.Body.Close()
		after := e.enrollment(r.ID)
		if after.State != enrollment.StatePending || after.Facts != before.Facts {
			t.Fatalf("the enrollment changed: %+v, was %+v", after, before)
		}
		code, _, err = d.Connect(e.ctx, "Idle", "")
		e.expect("Connect after the attacks", code, err, 200)
	})
}

// TestAuditFlood sends 200 refused, unauthenticated check-ins with a 60 KB
// Content-Type from one address, as the review did (each wrote a 60 KB
// row): the audit log gets one bounded row for the window, and the count
// when the window is flushed.
func TestAuditFlood(t *testing.T) {
	e := newEnv(t, "sqlite")
	ct := "application/" + strings.Repeat("x", 60<<10)
	for range 200 {
		req, _ := http.NewRequest("PUT", e.url+"/mdm/checkin", strings.NewReader("<plist/>"))
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Fatalf("HTTP %d", resp.StatusCode)
		}
	}
	rows, err := e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Action: "device.checkin"})
	if err != nil || len(rows) != 1 {
		t.Fatalf("200 refusals wrote %d rows (%v), want 1 until the window ends", len(rows), err)
	}
	if len(rows[0].Detail) > 2000 {
		t.Fatalf("a refused request stored %d bytes of detail", len(rows[0].Detail))
	}
	if err := e.app.Refusals.Flush(e.ctx, true); err != nil {
		t.Fatal(err)
	}
	rows, _ = e.app.Store.ListAudit(e.ctx, enrollment.AuditFilter{Action: "device.checkin"})
	if len(rows) != 2 || !strings.Contains(rows[0].Detail+rows[1].Detail, "199 more refusals") {
		t.Fatalf("after the flush: %d rows %+v", len(rows), rows)
	}
}
