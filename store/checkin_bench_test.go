package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/proccpu"
	"github.com/vestibule-mdm/vestibule/scep"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// BenchmarkCheckinRecord is the one read of an idle check-in: the
// certificate's record and its enrollment, under a request's context.
func BenchmarkCheckinRecord(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			s := storetest.Open(b, dialect)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			now := time.Now()
			users := enrollment.NewUsers(s, func() time.Time { return now })
			u, err := users.Add(ctx, enrollment.Actor{Name: "bench"}, enrollment.UserInput{Email: "reads@example.com"})
			if err != nil {
				b.Fatal(err)
			}
			r := enrollment.Reservation{ID: enrollment.NewID(), OrgID: "acme", UserID: u.ID, UserEmail: u.Email, State: enrollment.ReservationOpen,
				ChallengeHash: enrollment.HashChallenge(enrollment.NewID()), TokenNonce: "nonce-" + enrollment.NewID(), TokenKeyVersion: 1,
				CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "bench"}
			ev := enrollment.AuditEvent{At: now, Actor: "bench", Action: "bench"}
			if err := s.CreateReservation(ctx, r, ev); err != nil {
				b.Fatal(err)
			}
			fp := "bench" + enrollment.NewID()
			cert := scep.Certificate{Serial: "BE4C", SHA256: fp, Subject: "CN=" + r.ID, NotBefore: now, NotAfter: now.Add(time.Hour),
				ReservationID: r.ID, KeySHA256: "k", TransactionID: "tx", DER: []byte{0x30}, IssuedAt: now}
			if err := s.RecordIssued(ctx, cert, r.ChallengeHash, now, ev); err != nil {
				b.Fatal(err)
			}
			e := enrollment.Enrollment{Facts: enrollment.DeviceFacts{UDID: "UDID-READ", Serial: "SERREAD", Model: "Mac14,2"}, CheckinIP: "192.0.2.1"}
			if _, err := s.ClaimReservation(ctx, r.ID, r.TokenNonce, e, now, ev, nil); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			cpu := proccpu.Used()
			for b.Loop() {
				if rec, err := s.CheckinRecord(ctx, fp); err != nil || rec.Enrollment == nil {
					b.Fatalf("CheckinRecord: %+v %v", rec, err)
				}
			}
			b.ReportMetric(float64((proccpu.Used()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}
