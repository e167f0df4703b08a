package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// enrolled returns n devices that installed their profile and hold their
// SCEP certificate, made before any clock starts.
func (e *env) enrolled(n int) []*devicesim.Device {
	devices := make([]*devicesim.Device, n)
	for i := range devices {
		devices[i], _ = e.enrolledDevice("alice@example.com", fmt.Sprintf("BENCH%06d", i))
	}
	return devices
}

// BenchmarkAuthenticate is Authenticate+TokenUpdate through the real
// handlers: signature, certificate chain and record, token MAC (local
// signer), the claim, the pending enrollment, the push token.
func BenchmarkAuthenticate(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			e := newEnv(b, dialect)
			devices := e.enrolled(b.N)
			b.ResetTimer()
			for _, d := range devices {
				if code, err := d.Authenticate(e.ctx); err != nil || code != http.StatusOK {
					b.Fatalf("Authenticate: %d %v", code, err)
				}
				if code, err := d.TokenUpdate(e.ctx); err != nil || code != http.StatusOK {
					b.Fatalf("TokenUpdate: %d %v", code, err)
				}
			}
		})
	}
}

// BenchmarkConnect is the command connection of an approved device: with
// an empty queue (idle), and with a queued command to hand out.
func BenchmarkConnect(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect+"/idle", func(b *testing.B) {
			e := newEnv(b, dialect)
			d := e.enrolled(1)[0]
			d.Authenticate(e.ctx)
			e.app.Enrollments.Approve(e.ctx, admin, d.Profile.CN, "")
			d.DrainCommands(e.ctx, 10)
			d.CacheSignatures = true
			b.ResetTimer()
			for b.Loop() {
				if code, cmd, err := d.Connect(e.ctx, "Idle", ""); err != nil || code != 200 || cmd != nil {
					b.Fatalf("Connect: %d %v %v", code, cmd, err)
				}
			}
		})
		b.Run(dialect+"/queued", func(b *testing.B) {
			e := newEnv(b, dialect)
			d := e.enrolled(1)[0]
			d.Authenticate(e.ctx)
			en, _ := e.app.Enrollments.Approve(e.ctx, admin, d.Profile.CN, "")
			d.DrainCommands(e.ctx, 10)
			for range b.N {
				if err := e.app.Commands.Enqueue(e.ctx, admin, en, mustProfileList(b)[0]); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			status, uuid := "Idle", ""
			for range b.N {
				code, cmd, err := d.Connect(e.ctx, status, uuid)
				if err != nil || code != 200 || cmd == nil {
					b.Fatalf("Connect: %d %v %v", code, cmd, err)
				}
				status, uuid = "Acknowledged", cmd.UUID
			}
		})
	}
}

// BenchmarkPendingQueuePage is the console's default page with many
// devices in the database (VESTIBULE_BENCH_DEVICES, 200 by default; the
// figures in bench/README.md use 10,000), 50 of them pending. It reports
// the p95 of one page view as well as the mean.
func BenchmarkPendingQueuePage(b *testing.B) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("VESTIBULE_BENCH_DEVICES")); err == nil && v > 0 {
		n = v
	}
	for _, dialect := range storetest.Dialects {
		b.Run(fmt.Sprintf("%s/%d", dialect, n), func(b *testing.B) {
			e := newEnv(b, dialect)
			seedEnrollments(b, e, n, 50)
			c := e.browser(enrollment.RoleApprover)
			var lat []time.Duration
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				resp, err := c.Get(e.url + "/console/pending")
				if err != nil || resp.StatusCode != 200 {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(start))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)*95/100].Microseconds())/1000, "p95-ms")
		})
	}
}

// seedEnrollments writes n enrollments straight through the store (no
// SCEP, no signatures): pending of them stay pending, the rest approved.
func seedEnrollments(b *testing.B, e *env, n, pending int) {
	b.Helper()
	st := e.app.Store
	now := time.Now()
	ev := enrollment.AuditEvent{At: now, Actor: "bench", Action: "seed"}
	users := make([]enrollment.User, 20)
	for i := range users {
		u, err := e.app.Users.Add(e.ctx, admin, enrollment.UserInput{Email: fmt.Sprintf("seed%02d@example.com", i)})
		if err != nil {
			b.Fatal(err)
		}
		users[i] = u
	}
	for i := range n {
		u := users[i%len(users)]
		r := enrollment.Reservation{ID: enrollment.NewID(), OrgID: "dev", UserID: u.ID, ChallengeHash: enrollment.NewID(), TokenNonce: enrollment.NewID(),
			TokenKeyVersion: 1, CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "bench"}
		if err := st.CreateReservation(e.ctx, r, ev); err != nil {
			b.Fatal(err)
		}
		dev := enrollment.Enrollment{Facts: enrollment.DeviceFacts{UDID: fmt.Sprintf("UDID-%06d", i), Serial: fmt.Sprintf("SEED%06d", i), Model: "Mac14,9"}}
		if _, err := st.ClaimReservation(e.ctx, r.ID, r.TokenNonce, dev, now, ev); err != nil {
			b.Fatal(err)
		}
		if i >= pending {
			if _, err := st.Decide(e.ctx, r.ID, enrollment.StatePending, enrollment.StateApproved, "bench", "", now, enrollment.DecisionEffects(enrollment.StateApproved, nil), ev); err != nil {
				b.Fatal(err)
			}
		}
	}
}
