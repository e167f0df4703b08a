package store_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/internal/proccpu"
	"github.com/vestibule-mdm/vestibule/scep"
	"github.com/vestibule-mdm/vestibule/store"
	"github.com/vestibule-mdm/vestibule/store/storetest"
)

// benchStore opens a store of dialect with n open reservations of one
// user, made before the clock, and a request's context: one that can end,
// as the handlers pass it, which the driver treats apart from one that
// cannot.
func benchStore(b *testing.B, dialect string, n int, now time.Time) (*store.Store, context.Context, []enrollment.Reservation) {
	s := storetest.Open(b, dialect)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	users := enrollment.NewUsers(s, func() time.Time { return now })
	u, err := users.Add(ctx, enrollment.Actor{Name: "bench"}, enrollment.UserInput{Email: "bench@example.com"})
	if err != nil {
		b.Fatal(err)
	}
	res := make([]enrollment.Reservation, n)
	for i := range res {
		res[i] = enrollment.Reservation{ID: enrollment.NewID(), OrgID: "acme", UserID: u.ID, UserEmail: u.Email, State: enrollment.ReservationOpen,
			ChallengeHash: enrollment.HashChallenge(enrollment.NewID()), TokenNonce: "nonce-" + enrollment.NewID(), TokenKeyVersion: 1,
			CreatedAt: now, ExpiresAt: now.Add(time.Hour), CreatedBy: "bench"}
		if err := s.CreateReservation(ctx, res[i], enrollment.AuditEvent{At: now, Actor: "bench", Action: "reservation.create"}); err != nil {
			b.Fatal(err)
		}
	}
	return s, ctx, res
}

func benchDevice(i int) enrollment.Enrollment {
	udid := fmt.Sprintf("UDID-BENCH-%08d", i)
	return enrollment.Enrollment{Facts: enrollment.DeviceFacts{UDID: udid, Serial: fmt.Sprintf("SER%08d", i), Model: "Mac14,2"}, CheckinIP: "192.0.2.1"}
}

// benchClaim is Authenticate's claim of r by the i-th device, with the
// attestation question asked in it, as the gate runs it.
func benchClaim(ctx context.Context, s *store.Store, r enrollment.Reservation, i int, now time.Time) error {
	e := benchDevice(i)
	q := &enrollment.Question{NonceHex: "00", Command: enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "DeviceInformation", Body: []byte("<plist/>")},
		Event: enrollment.AuditEvent{At: now, Actor: "vestibule", Action: "attestation.ask", TargetID: r.ID}}
	ev := enrollment.AuditEvent{At: now, Actor: "device:" + e.Facts.UDID, Action: "enrollment.authenticate", TargetID: r.ID}
	_, err := s.ClaimReservation(ctx, r.ID, r.TokenNonce, e, now, ev, q)
	return err
}

// BenchmarkClaimReservation is Authenticate's transaction: the claim of an
// open reservation by a new device, with the attestation question asked
// in it, as the gate runs it. Reservations are made before the clock.
func BenchmarkClaimReservation(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			now := time.Now()
			s, ctx, res := benchStore(b, dialect, b.N, now)
			b.ResetTimer()
			cpu := proccpu.Used()
			for i, r := range res {
				if err := benchClaim(ctx, s, r, i, now); err != nil {
					b.Fatal(err)
				}
			}
			proccpu.ReportPerOp(b, cpu)
		})
	}
}

// BenchmarkClaimReservationConcurrent is the claim as devices
// authenticating at once make it: eight at a time, as bench/load's
// default concurrency. On SQLite they queue for the one writer and are
// committed in groups (sqlitegroup.go).
func BenchmarkClaimReservationConcurrent(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			now := time.Now()
			s, ctx, res := benchStore(b, dialect, b.N, now)
			var next atomic.Int64
			b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
			groups := s.WriteGroups()
			b.ResetTimer()
			cpu := proccpu.Used()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1) - 1)
					if err := benchClaim(ctx, s, res[i], i, now); err != nil {
						b.Error(err)
						return
					}
				}
			})
			proccpu.ReportPerOp(b, cpu)
			if after := s.WriteGroups(); after.Commits > groups.Commits {
				b.ReportMetric(float64(after.Transactions-groups.Transactions)/float64(after.Commits-groups.Commits), "tx/commit")
			}
		})
	}
}

// BenchmarkCheckinRecord is the one read of an idle check-in: the
// certificate's record and its enrollment, under a request's context.
func BenchmarkCheckinRecord(b *testing.B) {
	for _, dialect := range storetest.Dialects {
		b.Run(dialect, func(b *testing.B) {
			now := time.Now()
			s, ctx, res := benchStore(b, dialect, 1, now)
			r, ev := res[0], enrollment.AuditEvent{At: now, Actor: "bench", Action: "bench"}
			fp := "bench" + enrollment.NewID()
			cert := scep.Certificate{Serial: "BE4C", SHA256: fp, Subject: "CN=" + r.ID, NotBefore: now, NotAfter: now.Add(time.Hour),
				ReservationID: r.ID, KeySHA256: "k", TransactionID: "tx", DER: []byte{0x30}, IssuedAt: now}
			if err := s.RecordIssued(ctx, cert, r.ChallengeHash, now, ev); err != nil {
				b.Fatal(err)
			}
			if _, err := s.ClaimReservation(ctx, r.ID, r.TokenNonce, benchDevice(0), now, ev, nil); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			cpu := proccpu.Used()
			for b.Loop() {
				if rec, err := s.CheckinRecord(ctx, fp); err != nil || rec.Enrollment == nil {
					b.Fatalf("CheckinRecord: %+v %v", rec, err)
				}
			}
			proccpu.ReportPerOp(b, cpu)
		})
	}
}
