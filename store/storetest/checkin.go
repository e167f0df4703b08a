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
		got.Enrollment.UDID != "UDID-C" || got.Enrollment.AttestStatus != want.Attestation.Status ||
		got.Enrollment.AttestCommand != want.AttestCommand || !sameTime(got.Enrollment.LastSeenAt, want.LastSeenAt) || !got.NoCommands {
		t.Fatalf("after Authenticate: %+v %+v %v", got, got.Enrollment, err)
	}
	// The last check-in's time, and a command waiting for the device,
	// are seen in the same read.
	if err := s.Touch(ctx, r.ID, testNow.Add(90*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.CheckinRecord(ctx, fp); got.Enrollment == nil || !sameTime(got.Enrollment.LastSeenAt, ptr(testNow.Add(90*time.Second))) {
		t.Fatalf("after a check-in was seen: %+v", got.Enrollment)
	}
	cmd := enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "DeviceInformation", Body: []byte("b")}
	if err := s.EnqueueCommands(ctx, r.ID, []enrollment.NewCommand{cmd}, "admin", testNow, enrollment.AuditEvent{At: testNow, Actor: "admin", Action: "command.enqueue"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.CheckinRecord(ctx, fp); got.NoCommands {
		t.Fatal("a queued command was not seen")
	}
	if _, err := s.Decide(ctx, r.ID, enrollment.StatePending, enrollment.StateApproved, "admin", "ok", testNow.Add(2*time.Minute),
		enrollment.DecisionEffects(enrollment.StateApproved, nil), enrollment.AuditEvent{At: testNow.Add(2 * time.Minute), Actor: "admin", Action: "enrollment.approve", TargetID: r.ID}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.CheckinRecord(ctx, fp); got.Enrollment == nil || got.Enrollment.State != enrollment.StateApproved {
		t.Fatalf("after approval: %+v", got.Enrollment)
	}
}

func sameTime(a, b *time.Time) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Equal(*b))
}

func ptr[T any](v T) *T { return &v }
