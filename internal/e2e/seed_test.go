package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/seed"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// TestSeededDevicesCheckIn keeps the seeding tool honest: the devices it
// writes straight through the store must be ones the real server admits,
// approved ones idle with nothing queued, pending ones waiting, and none
// owed a trust profile it would queue at start.
func TestSeededDevicesCheckIn(t *testing.T) {
	keys, err := seed.Keys(2)
	if err != nil {
		t.Fatal(err)
	}
	storetest.ForEachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		devices, err := seed.Run(e.ctx, e.app.Store, seed.Options{Devices: 9, Pending: 3, Users: 2, Keys: keys,
			CA: e.app.CA.Certificate(), CAKey: e.app.CA.Signer(), Prefix: "T", Workers: 3})
		if err != nil {
			t.Fatal(err)
		}
		due, err := e.app.Store.TrustProfilesDue(e.ctx, time.Now(), 10*24*time.Hour, time.Hour, true, 100)
		if err != nil || len(due) != 0 {
			t.Fatalf("seeded devices owed a trust profile: %d (%v)", len(due), err)
		}
		seen := map[string]bool{}
		for _, d := range devices {
			if seen[string(d.Cert)] {
				t.Fatalf("device %s shares a certificate", d.ID)
			}
			seen[string(d.Cert)] = true
			sim, err := d.Simulator(http.DefaultClient, keys, e.url)
			if err != nil {
				t.Fatal(err)
			}
			code, cmd, err := sim.Connect(e.ctx, "Idle", "")
			e.expect("seeded device's Connect", code, err, 200)
			want := enrollment.StateApproved
			if d.Pending {
				want = enrollment.StatePending
			}
			if got := e.enrollment(d.ID); got.State != want || got.Facts.UDID != d.UDID {
				t.Fatalf("seeded device %s: %s %s, want %s %s", d.ID, got.State, got.Facts.UDID, want, d.UDID)
			}
			if cmd != nil && (!d.Pending || cmd.RequestType != "DeviceInformation") {
				t.Fatalf("seeded %s device got a %s command", want, cmd.RequestType)
			}
		}
		// Approving a seeded pending device queues its commands and a push,
		// as for any other device.
		if _, err := e.app.Enrollments.Approve(e.ctx, admin, devices[0].ID, ""); err != nil {
			t.Fatal(err)
		}
		if n, err := e.app.Store.OutboxLen(e.ctx); err != nil || n != 1 {
			t.Fatalf("push outbox after one approval: %d (%v)", n, err)
		}
	})
}
