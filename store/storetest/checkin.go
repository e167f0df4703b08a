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

// testCheckinRecord: the certificate record and what a check-in decides
// on of its enrollment come in one read, every column in its place, and
// the read sees what changed since: the question answered, the last
// check-in, a queued command, the decision, the revocation.
func testCheckinRecord(t *testing.T, s *store.Store) {
	ctx := context.Background()
	r := reserve(t, s, "checkin@example.com")
	fp := "ab" + enrollment.NewID()
	cert := scep.Certificate{Serial: "5EA1", SHA256: fp, Subject: "CN=" + r.ID, NotBefore: testNow, NotAfter: testNow.Add(24 * time.Hour),
		ReservationID: r.ID, KeySHA256: "k", TransactionID: "tx", DER: []byte{0x30}, IssuedAt: testNow}
	if err := s.RecordIssued(ctx, cert, r.ChallengeHash, testNow, enrollment.AuditEvent{At: testNow, Actor: "scep", Action: "scep.issue"}); err != nil {
		t.Fatal(err)
	}
	// As the ACME path records a key Apple attested (SCEP records none), so
	// that every column of the read is told apart from its neighbours.
	db := s.DB()
	if _, err := db.ExecContext(ctx, db.Rebind(`UPDATE certificates SET hardware_bound = 1, attested_serial = 'ATT-SER', attested_udid = 'ATT-UDID'
		WHERE sha256 = ?`), fp); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckinRecord(ctx, "unknown"); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("unknown certificate: %v", err)
	}
	// Between SCEP and Authenticate: the record, no enrollment.
	got, err := s.CheckinRecord(ctx, fp)
	if err != nil || got.ReservationID != r.ID || got.Enrollment != nil || got.RevokedAt != nil || !got.NotAfter.Equal(cert.NotAfter) ||
		!got.HardwareBound || got.AttestedSerial != "ATT-SER" || got.AttestedUDID != "ATT-UDID" {
		t.Fatalf("before Authenticate: %+v %v", got, err)
	}
	// Authenticate asks the attestation question: open, and waiting.
	at := testNow.Add(time.Minute)
	q := &enrollment.Question{NonceHex: "nonce", Event: enrollment.AuditEvent{At: at, Actor: "vestibule", Action: "enrollment.attest_ask", TargetID: r.ID},
		Command: enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "DeviceInformation", Body: []byte("<plist>question</plist>")}}
	if _, err := s.ClaimReservation(ctx, r.ID, r.TokenNonce, device("UDID-C", "SER-C"), at,
		enrollment.AuditEvent{At: at, Actor: "device:UDID-C", Action: "enrollment.authenticate", TargetID: r.ID}, q); err != nil {
		t.Fatal(err)
	}
	got, err = s.CheckinRecord(ctx, fp)
	want, _ := s.Enrollment(ctx, r.ID)
	if err != nil || got.Enrollment == nil || got.Enrollment.ID != r.ID || got.Enrollment.State != enrollment.StatePending ||
		got.Enrollment.UDID != "UDID-C" || got.Enrollment.AttestStatus != enrollment.AttestAsked || got.Enrollment.AttestStatus != want.Attestation.Status ||
		got.Enrollment.AttestCommand != q.Command.UUID || !sameTime(got.Enrollment.LastSeenAt, want.LastSeenAt) || got.NoCommands ||
		!got.HardwareBound || got.AttestedSerial != "ATT-SER" || got.AttestedUDID != "ATT-UDID" {
		t.Fatalf("after Authenticate: %+v %+v %v", got, got.Enrollment, err)
	}
	// Sent and answered, nothing waits.
	if c, err := s.NextQuestion(ctx, r.ID, true, at); err != nil || c.UUID != q.Command.UUID {
		t.Fatalf("the question: %+v %v", c, err)
	}
	if err := s.RecordResult(ctx, r.ID, q.Command.UUID, enrollment.CommandAcknowledged, []byte("<plist/>"), at); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.CheckinRecord(ctx, fp); !got.NoCommands {
		t.Fatal("an answered question still waits")
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
	decide := func(from, to enrollment.State, at time.Time) {
		t.Helper()
		if _, err := s.Decide(ctx, r.ID, from, to, "admin", "because", at, enrollment.DecisionEffects(to, nil),
			enrollment.AuditEvent{At: at, Actor: "admin", Action: "enrollment.decide", TargetID: r.ID}); err != nil {
			t.Fatal(err)
		}
	}
	decide(enrollment.StatePending, enrollment.StateApproved, testNow.Add(2*time.Minute))
	if got, _ := s.CheckinRecord(ctx, fp); got.Enrollment == nil || got.Enrollment.State != enrollment.StateApproved || got.RevokedAt != nil {
		t.Fatalf("after approval: %+v %+v", got, got.Enrollment)
	}
	// Denied after approval: the enrollment refused, its certificate revoked.
	decide(enrollment.StateApproved, enrollment.StateDenied, testNow.Add(3*time.Minute))
	if got, _ := s.CheckinRecord(ctx, fp); got.Enrollment == nil || got.Enrollment.State != enrollment.StateDenied ||
		got.RevokedAt == nil || !got.RevokedAt.Equal(testNow.Add(3*time.Minute)) {
		t.Fatalf("after denial: %+v %+v", got, got.Enrollment)
	}
}

func sameTime(a, b *time.Time) bool {
	return (a == nil) == (b == nil) && (a == nil || a.Equal(*b))
}

func ptr[T any](v T) *T { return &v }
