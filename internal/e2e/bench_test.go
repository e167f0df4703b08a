package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/attest/attesttest"
	"github.com/vestibule-mdm/vestibule/config"
	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/apnstest"
	"github.com/vestibule-mdm/vestibule/internal/devicesim"
	"github.com/vestibule-mdm/vestibule/internal/proccpu"
	"github.com/vestibule-mdm/vestibule/internal/seed"
	"github.com/vestibule-mdm/vestibule/push"
	"github.com/vestibule-mdm/vestibule/server"
	"github.com/vestibule-mdm/vestibule/store"
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
			for _, d := range devices {
				if err := d.SignCheckinsAhead(); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			cpu := proccpu.Used()
			for _, d := range devices {
				if code, err := d.Authenticate(e.ctx); err != nil || code != http.StatusOK {
					b.Fatalf("Authenticate: %d %v", code, err)
				}
				if code, err := d.TokenUpdate(e.ctx); err != nil || code != http.StatusOK {
					b.Fatalf("TokenUpdate: %d %v", code, err)
				}
			}
			proccpu.ReportPerOp(b, cpu)
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
			cpu := proccpu.Used()
			for b.Loop() {
				if code, cmd, err := d.Connect(e.ctx, "Idle", ""); err != nil || code != 200 || cmd != nil {
					b.Fatalf("Connect: %d %v %v", code, cmd, err)
				}
			}
			proccpu.ReportPerOp(b, cpu)
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

// seedEnrollments seeds n devices with the seeding tool's package, the
// first pending of them pending, the rest approved.
func seedEnrollments(b *testing.B, e *env, n, pending int) []seed.Device {
	b.Helper()
	keys, err := seed.Keys(2)
	if err != nil {
		b.Fatal(err)
	}
	devices, err := seed.Run(e.ctx, e.app.Store, seed.Options{Devices: n, Pending: pending, Users: 20, Keys: keys,
		CA: e.app.CA.Certificate(), CAKey: e.app.CA.Signer(), Prefix: enrollment.NewID()[:6]})
	if err != nil {
		b.Fatal(err)
	}
	return devices
}

// analyze gives PostgreSQL statistics of the tables seeding just filled,
// as autovacuum does within a minute of a bulk load; CI's PostgreSQL runs
// without autovacuum. Without them, the plans it keeps for prepared
// statements are those made while the tables were nearly empty: the
// pusher's claim scanned every enrollment.
func analyze(b *testing.B, e *env) {
	if e.app.Store.Dialect() != store.Postgres {
		return
	}
	if _, err := e.app.Store.DB().ExecContext(e.ctx, "ANALYZE"); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBulkApproval approves VESTIBULE_BENCH_DEVICES pending devices
// (200 by default; bench/README.md reports 10,000) in the console's bulk
// action, 500 a request as an approver can, while the server's Pusher
// (push.rate VESTIBULE_BENCH_PUSH_RATE, the default 200 otherwise) drains
// the outbox to an in-process APNs, which answers each push after
// VESTIBULE_BENCH_APNS_DELAY (0 by default; APNs over the Internet takes
// tens of milliseconds). It reports the seconds from the first approval to
// the last device's push reaching APNs, and the approvals' share of that.
func BenchmarkBulkApproval(b *testing.B) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("VESTIBULE_BENCH_DEVICES")); err == nil && v > 0 {
		n = v
	}
	pushRate := float64(config.Defaults().Push.Rate)
	if v, err := strconv.Atoi(os.Getenv("VESTIBULE_BENCH_PUSH_RATE")); err == nil && v > 0 {
		pushRate = float64(v)
	}
	for _, dialect := range storetest.Dialects {
		b.Run(fmt.Sprintf("%s/%d", dialect, n), func(b *testing.B) {
			e := newEnv(b, dialect)
			delay, _ := time.ParseDuration(os.Getenv("VESTIBULE_BENCH_APNS_DELAY"))
			apns := apnstest.Start(func(string) { time.Sleep(delay) })
			defer apns.Close()
			cert, _, _, err := apnstest.PushCertificate(config.DevTopic)
			if err != nil {
				b.Fatal(err)
			}
			pusher, err := push.New(push.Options{Certificate: cert, Host: apns.URL, RootCAs: apns.Roots(), Store: e.app.Store, Rate: pushRate,
				Poll: 100 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(e.ctx)
			defer cancel()
			pusher.Start(ctx)
			approver := e.browser(enrollment.RoleApprover)
			var approving, total time.Duration
			for b.Loop() {
				b.StopTimer()
				before := apns.Tokens()
				devices := seedEnrollments(b, e, n, n)
				analyze(b, e)
				b.StartTimer()
				start := time.Now()
				for i := 0; i < n; i += 500 {
					form := url.Values{}
					for _, d := range devices[i:min(i+500, n)] {
						form.Add("id", d.ID)
					}
					if code, body := do(b, approver, "POST", e.url+"/console/enrollments/bulk-approve", form, nil); code != http.StatusSeeOther {
						b.Fatalf("bulk approval: %d %.200s", code, body)
					}
				}
				approving += time.Since(start)
				for apns.Tokens() < before+n {
					if time.Since(start) > 10*time.Minute {
						b.Fatalf("%d of %d pushes after 10 minutes", apns.Tokens()-before, n)
					}
					time.Sleep(5 * time.Millisecond)
				}
				total += time.Since(start)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s-to-last-push")
			b.ReportMetric(approving.Seconds()/float64(b.N), "s-approving")
		})
	}
}

// BenchmarkACMEIssuance is one Secure Enclave identity through the ACME
// endpoints in process: account, order, device-attest-01 with Apple's
// attestation (a test CA stands in for Apple's root), finalize and the
// certificate, the CA signing it with one RSA-2048 private operation. The
// simulated device's own work (its P-384 key, JWS signatures and the
// attestation chain a Secure Enclave would make) is in the figure: each
// iteration is client and server together.
func BenchmarkACMEIssuance(b *testing.B) {
	now := time.Now()
	ca, err := attesttest.NewCA("Bench", now)
	if err != nil {
		b.Fatal(err)
	}
	e := newEnvWith(b, "sqlite", []server.Option{server.WithAttestationRoots(ca.Pool())})
	devices := make([]*devicesim.Device, b.N)
	for i := range devices {
		devices[i], _ = e.acmeDevice("alice@example.com", fmt.Sprintf("C02ACMEB%04d", i))
	}
	runtime.GC()
	b.ResetTimer()
	for _, d := range devices {
		if err := d.EnrollACME(e.ctx, devicesim.ACMEOptions{Attest: honest(ca, d, now)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFleetCommand is one fleet-wide request through the API: a
// DeviceInformation command for 500 approved devices, each its own
// command, push and audit event. It reports the time per device too.
func BenchmarkFleetCommand(b *testing.B) {
	const n = enrollment.MaxFleetCommand
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			e := newEnv(b, dialect)
			token := e.token(enrollment.RoleApprover)
			devices := seedEnrollments(b, e, n, 0)
			ids := make([]string, n)
			for i, d := range devices {
				ids[i] = d.ID
			}
			body, _ := json.Marshal(map[string]any{"request_type": "DeviceInformation", "devices": ids})
			for b.Loop() {
				if code, out := e.api(token, "POST", "/api/v1/commands", string(body)); code != http.StatusAccepted {
					b.Fatalf("fleet command: %d %.200s", code, out)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/device")
		})
	}
}
