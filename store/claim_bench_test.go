package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/proccpu"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// BenchmarkClaimReservation is Authenticate's transaction: the claim of an
// open reservation by a new device, with the attestation question asked
// in it, as the gate runs it. Reservations are made before the clock.
func BenchmarkClaimReservation(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			s := storetest.Open(b, dialect)
			// A request's context, which can end, as the check-in handler
			// passes it: the driver treats it apart from one that cannot.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			now := time.Now()
			users := enrollment.NewUsers(s, func() time.Time { return now })
			u, err := users.Add(ctx, enrollment.Actor{Name: "bench"}, enrollment.UserInput{Email: "claims@example.com"})
			if err != nil {
				b.Fatal(err)
			}
			res := make([]enrollment.Reservation, b.N)
			for i := range res {
				res[i] = enrollment.Reservation{ID: enrollment.NewID(), OrgID: "acme", UserID: u.ID, UserEmail: u.Email, State: enrollment.ReservationOpen,
					ChallengeHash: enrollment.HashChallenge(enrollment.NewID()), TokenNonce: "nonce-" + enrollment.NewID(), TokenKeyVersion: 1,
					CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "bench"}
				if err := s.CreateReservation(ctx, res[i], enrollment.AuditEvent{At: now, Actor: "bench", Action: "reservation.create"}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			cpu := proccpu.Used()
			for i, r := range res {
				udid := fmt.Sprintf("UDID-CLAIM-%08d", i)
				e := enrollment.Enrollment{Facts: enrollment.DeviceFacts{UDID: udid, Serial: fmt.Sprintf("SER%08d", i), Model: "Mac14,2"}, CheckinIP: "192.0.2.1"}
				q := &enrollment.Question{NonceHex: "00", Command: enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "DeviceInformation", Body: []byte("<plist/>")},
					Event: enrollment.AuditEvent{At: now, Actor: "vestibule", Action: "attestation.ask", TargetID: r.ID}}
				ev := enrollment.AuditEvent{At: now, Actor: "device:" + udid, Action: "enrollment.authenticate", TargetID: r.ID}
				if _, err := s.ClaimReservation(ctx, r.ID, r.TokenNonce, e, now, ev, q); err != nil {
					b.Fatal(err)
				}
			}
			// Every thread's CPU, not only wall time: the goroutines
			// database/sql and the driver wake run on the other core.
			b.ReportMetric(float64((proccpu.Used()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}
