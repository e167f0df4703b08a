package e2e

import (
	"fmt"
	"net/http"
	"testing"

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
