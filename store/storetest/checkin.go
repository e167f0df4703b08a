package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/scep"
	"github.com/vestibule-mdm/vestibule/store"
)

// testCheckinRecord: the certificate record and its enrollment come in one
// read, and the read sees what changed since: the enrollment's decision.
func testCheckinRecord(t *testing.T, s *store.Store) {
	ctx := context.Background()
	r := reserve(t, s, "checkin@example.com")
	fp := "ab" + enrollment.NewID()
	cert := scep.Certificate{Serial: "5EA1", SHA256: fp, Subject: "CN=" + r.ID, NotBefore: testNow, NotAfter: testNow.Add(24 * time.Hour),
		ReservationID: r.ID, KeySHA256: "k", TransactionID: "tx", DER: []byte{0x30}, IssuedAt: testNow}
	if err := s.RecordIssued(ctx, cert, r.ChallengeHash, testNow, enrollment.AuditEvent{At: testNow, Actor: "scep", Action: "scep.issue"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckinRecord(ctx, "unknown"); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("unknown certificate: %v", err)
	}
	// Between SCEP and Authenticate: the record, no enrollment.
	got, err := s.CheckinRecord(ctx, fp)
	if err != nil || got.ReservationID != r.ID || got.Enrollment != nil || got.RevokedAt != nil || !got.NotAfter.Equal(cert.NotAfter) {
		t.Fatalf("before Authenticate: %+v %v", got, err)
	}
	if _, err := claim(s, r, device("UDID-C", "SER-C"), testNow.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err = s.CheckinRecord(ctx, fp)
	want, _ := s.Enrollment(ctx, r.ID)
	if err != nil || got.Enrollment == nil || got.Enrollment.ID != r.ID || got.Enrollment.State != enrollment.StatePending ||
		got.Enrollment.Facts.UDID != "UDID-C" || got.Enrollment.UserEmail != want.UserEmail {
		t.Fatalf("after Authenticate: %+v %v", got, err)
	}
	if _, err := s.Decide(ctx, r.ID, enrollment.StatePending, enrollment.StateApproved, "admin", "ok", testNow.Add(2*time.Minute),
		enrollment.DecisionEffects(enrollment.StateApproved, nil), enrollment.AuditEvent{At: testNow.Add(2 * time.Minute), Actor: "admin", Action: "enrollment.approve", TargetID: r.ID}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.CheckinRecord(ctx, fp); got.Enrollment == nil || got.Enrollment.State != enrollment.StateApproved {
		t.Fatalf("after approval: %+v", got.Enrollment)
	}
}
