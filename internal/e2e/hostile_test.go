package e2e

import (
	"net/http"
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
