package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/store"
)

// reserve stores an open reservation for a new user with a known nonce.
func reserve(t *testing.T, s *store.Store, email string) enrollment.Reservation {
	t.Helper()
	ctx := context.Background()
	u, err := s.UserByEmail(ctx, email)
	if errors.Is(err, enrollment.ErrNotFound) {
		u, err = enrollment.NewUsers(s, clock).Add(ctx, enrollment.Actor{Name: "test"}, enrollment.UserInput{Email: email})
	}
	if err != nil {
		t.Fatal(err)
	}
	r := enrollment.Reservation{ID: enrollment.NewID(), OrgID: "acme", UserID: u.ID, UserEmail: u.Email, State: enrollment.ReservationOpen,
		ChallengeHash: enrollment.HashChallenge(enrollment.NewID()), TokenNonce: "nonce-" + enrollment.NewID(), TokenKeyVersion: 1,
		CreatedAt: testNow, ExpiresAt: testNow.Add(time.Hour), CreatedBy: "test"}
	if err := s.CreateReservation(ctx, r, enrollment.AuditEvent{At: testNow, Actor: "test", Action: "reservation.create"}); err != nil {
		t.Fatal(err)
	}
	return r
}

func device(udid, serial string) enrollment.Enrollment {
	return enrollment.Enrollment{Facts: enrollment.DeviceFacts{UDID: udid, Serial: serial, Model: "Mac14,2"}, CheckinIP: "192.0.2.1"}
}

func claim(s *store.Store, r enrollment.Reservation, e enrollment.Enrollment, at time.Time) (enrollment.ClaimResult, error) {
	return claimAsked(s, r, e, at, nil)
}

// claimAsked is claim with the attestation question q (nil: none).
func claimAsked(s *store.Store, r enrollment.Reservation, e enrollment.Enrollment, at time.Time, q *enrollment.Question) (enrollment.ClaimResult, error) {
	ev := enrollment.AuditEvent{At: at, Actor: "device:" + e.Facts.UDID, Action: "enrollment.authenticate", TargetID: r.ID}
	return s.ClaimReservation(context.Background(), r.ID, r.TokenNonce, e, at, ev, q)
}

func testClaims(t *testing.T, s *store.Store) {
	ctx := context.Background()
	r := reserve(t, s, "dev@example.com")
	at := testNow.Add(time.Minute)

	for _, tc := range []struct {
		name string
		run  func() error
		want error
	}{
		{"error/wrong nonce", func() error {
			_, err := s.ClaimReservation(ctx, r.ID, "other", device("UDID-A", "SER-A"), at, enrollment.AuditEvent{At: at, Actor: "x", Action: "x"}, nil)
			return err
		}, enrollment.ErrTokenSuperseded},
		{"error/expired", func() error { _, err := claim(s, r, device("UDID-A", "SER-A"), testNow.Add(2*time.Hour)); return err }, enrollment.ErrReservationNotOpen},
		{"error/unknown reservation", func() error {
			_, err := s.ClaimReservation(ctx, enrollment.NewID(), "n", device("UDID-A", "SER-A"), at, enrollment.AuditEvent{At: at, Actor: "x", Action: "x"}, nil)
			return err
		}, enrollment.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	res, err := claim(s, r, device("UDID-A", "SER-A"), at)
	if err != nil || res.Retry || res.Enrollment.State != enrollment.StatePending || res.Enrollment.ReEnrollment || res.Enrollment.UserEmail != "dev@example.com" {
		t.Fatalf("first claim: %+v %v", res, err)
	}
	again, err := claim(s, r, device("UDID-A", "SER-A"), at.Add(time.Second))
	if err != nil || !again.Retry || again.Enrollment.ID != r.ID {
		t.Fatalf("retry by the same device: %+v %v", again, err)
	}
	if _, err := claim(s, r, device("UDID-B", "SER-B"), at); !errors.Is(err, enrollment.ErrTokenClaimed) {
		t.Fatalf("second device: %v", err)
	}
	got, _ := s.Reservation(ctx, r.ID)
	if got.State != enrollment.ReservationClaimed || got.ClaimedUDID != "UDID-A" || got.ClaimAttempts != 1 {
		t.Errorf("reservation after claims: %+v", got)
	}
	if _, err := s.EnrollmentByUDID(ctx, "UDID-B"); !errors.Is(err, enrollment.ErrNotFound) {
		t.Errorf("the refused device has an enrollment: %v", err)
	}
}

func testApprovalGate(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	first := reserve(t, s, "gate@example.com")
	if _, err := claim(s, first, device("UDID-G", "SER-G"), at); err != nil {
		t.Fatal(err)
	}
	cmds := []enrollment.NewCommand{{UUID: enrollment.NewID(), RequestType: "DeviceInformation", Body: []byte("<plist>1</plist>")},
		{UUID: enrollment.NewID(), RequestType: "InstallProfile", Body: []byte("<plist>2</plist>")}}
	ev := enrollment.AuditEvent{At: at, Actor: "admin", Action: "enrollment.approve"}

	// Two admins approve at once: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Decide(ctx, first.ID, enrollment.StatePending, enrollment.StateApproved, fmt.Sprintf("admin%d", i), "ok", at, enrollment.DecisionEffects(enrollment.StateApproved, cmds), ev)
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("concurrent approvals: %v / %v, want exactly one success", errs[0], errs[1])
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, enrollment.ErrConflict) {
			t.Fatalf("the loser should see a conflict: %v", err)
		}
	}
	if list, _ := s.ListCommands(ctx, first.ID); len(list) != 2 {
		t.Fatalf("approval queued %d commands, want 2", len(list))
	}

	// The same serial enrolls again with a fresh reservation: pending,
	// flagged, linked; approval supersedes the first.
	second := reserve(t, s, "gate@example.com")
	res, err := claim(s, second, device("UDID-G2", "SER-G"), at)
	if err != nil {
		t.Fatal(err)
	}
	if e := res.Enrollment; e.State != enrollment.StatePending || !e.ReEnrollment || e.PreviousID != first.ID {
		t.Fatalf("re-enrollment: %+v", e)
	}
	if _, err := s.Decide(ctx, second.ID, enrollment.StatePending, enrollment.StateApproved, "admin", "", at, enrollment.DecisionEffects(enrollment.StateApproved, nil), ev); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Enrollment(ctx, first.ID); e.State != enrollment.StateSuperseded {
		t.Errorf("earlier enrollment is %s, want superseded", e.State)
	}
	if _, err := s.Decide(ctx, second.ID, enrollment.StatePending, enrollment.StateDenied, "admin", "no", at, enrollment.DecisionEffects(enrollment.StateDenied, nil), ev); !errors.Is(err, enrollment.ErrConflict) {
		t.Errorf("deciding twice: %v", err)
	}
	pending, err := s.ListEnrollments(ctx, enrollment.EnrollmentFilter{State: enrollment.StatePending})
	if err != nil || len(pending) != 0 {
		t.Errorf("pending after decisions: %d %v", len(pending), err)
	}
}

func testCommandQueue(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	r := reserve(t, s, "queue@example.com")
	if _, err := claim(s, r, device("UDID-Q", "SER-Q"), at); err != nil {
		t.Fatal(err)
	}
	ids := []string{enrollment.NewID(), enrollment.NewID(), enrollment.NewID()}
	var cmds []enrollment.NewCommand
	for i, id := range ids {
		cmds = append(cmds, enrollment.NewCommand{UUID: id, RequestType: fmt.Sprintf("T%d", i), Body: []byte("b")})
	}
	if err := s.EnqueueCommands(ctx, r.ID, cmds, "admin", at, enrollment.AuditEvent{At: at, Actor: "admin", Action: "command.enqueue"}); err != nil {
		t.Fatal(err)
	}
	next := func(includeNotNow bool) string {
		c, err := s.NextCommand(ctx, r.ID, includeNotNow, at)
		if errors.Is(err, enrollment.ErrNotFound) {
			return "none"
		}
		if err != nil {
			t.Fatal(err)
		}
		return c.UUID
	}
	result := func(id string, st enrollment.CommandStatus) error {
		return s.RecordResult(ctx, r.ID, id, st, []byte("<plist/>"), at)
	}
	if got := next(true); got != ids[0] {
		t.Fatalf("first: %s", got)
	}
	if got := next(true); got != ids[0] {
		t.Fatalf("an unanswered command is owed again: %s", got)
	}
	if err := result(ids[0], enrollment.CommandAcknowledged); err != nil {
		t.Fatal(err)
	}
	if err := result(ids[0], enrollment.CommandAcknowledged); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("acknowledging twice: %v", err)
	}
	if got := next(false); got != ids[1] {
		t.Fatalf("second: %s", got)
	}
	if err := result(ids[1], enrollment.CommandNotNow); err != nil {
		t.Fatal(err)
	}
	if got := next(false); got != ids[2] {
		t.Fatalf("after NotNow the queue moves on: %s", got)
	}
	if err := result(ids[2], enrollment.CommandError); err != nil {
		t.Fatal(err)
	}
	if got := next(false); got != "none" {
		t.Fatalf("deferred commands wait for the next session: %s", got)
	}
	if got := next(true); got != ids[1] {
		t.Fatalf("Idle brings the deferred command back: %s", got)
	}
	if err := result(ids[1], enrollment.CommandAcknowledged); err != nil {
		t.Fatal(err)
	}
	if err := result(enrollment.NewID(), enrollment.CommandAcknowledged); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("result for an unknown command: %v", err)
	}
	list, _ := s.ListCommands(ctx, r.ID)
	want := []enrollment.CommandStatus{enrollment.CommandAcknowledged, enrollment.CommandAcknowledged, enrollment.CommandError}
	for i, c := range list {
		if c.Status != want[i] {
			t.Errorf("command %d is %s, want %s", i, c.Status, want[i])
		}
	}
	if list[1].NotNowCount != 1 {
		t.Errorf("not-now count %d", list[1].NotNowCount)
	}
}

// testQuestionInClaim: the attestation question is asked in the claim's
// transaction, once: a retry whose enrollment was asked keeps the first
// question, and a retry of a claim made without one asks it then.
func testQuestionInClaim(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	question := func(id string) *enrollment.Question {
		uuid := enrollment.NewID()
		return &enrollment.Question{NonceHex: "nonce-" + uuid, Event: enrollment.AuditEvent{At: at, Actor: "vestibule", Action: "enrollment.attest_ask", TargetID: id},
			Command: enrollment.NewCommand{UUID: uuid, RequestType: "DeviceInformation", Body: []byte("<plist>question</plist>")}}
	}
	claimWith := func(r enrollment.Reservation, udid string, q *enrollment.Question) enrollment.Enrollment {
		t.Helper()
		res, err := s.ClaimReservation(ctx, r.ID, r.TokenNonce, device(udid, "SER-"+udid), at, enrollment.AuditEvent{At: at, Actor: "x", Action: "x"}, q)
		if err != nil {
			t.Fatal(err)
		}
		return res.Enrollment
	}
	questions := func(id string) []enrollment.Command {
		t.Helper()
		cmds, err := s.ListCommands(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return cmds
	}

	r := reserve(t, s, "q@example.com")
	first := question(r.ID)
	e := claimWith(r, "UDID-Q1", first)
	if e.Attestation.Status != enrollment.AttestAsked || e.AttestNonce != first.NonceHex || e.AttestCommand != first.Command.UUID {
		t.Fatalf("a new claim was not asked: %+v", e)
	}
	if cmds := questions(r.ID); len(cmds) != 1 || cmds[0].UUID != first.Command.UUID {
		t.Fatalf("queued after the claim: %+v", cmds)
	}
	e = claimWith(r, "UDID-Q1", question(r.ID))
	if e.AttestNonce != first.NonceHex || len(questions(r.ID)) != 1 {
		t.Fatalf("a retry asked again: %+v, %d commands", e, len(questions(r.ID)))
	}

	r2 := reserve(t, s, "q@example.com")
	if e := claimWith(r2, "UDID-Q2", nil); e.Attestation.Status != enrollment.AttestNotAsked || len(questions(r2.ID)) != 0 {
		t.Fatalf("a claim without a question was asked: %+v", e)
	}
	second := question(r2.ID)
	if e := claimWith(r2, "UDID-Q2", second); e.AttestNonce != second.NonceHex || len(questions(r2.ID)) != 1 {
		t.Fatalf("a retry of a claim never asked was not asked: %+v", e)
	}
}

// testApprovalEffects: an approval queues its commands after those the
// enrollment has (its attestation question), owes a push only to a device
// whose push token is known and valid, and makes the enrollment trusted.
func testApprovalEffects(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	enrolled := func(udid string, q bool) string {
		t.Helper()
		r := reserve(t, s, "effects@example.com")
		var question *enrollment.Question
		if q {
			question = attestQuestion(r.ID, at)
		}
		if _, err := claimAsked(s, r, device(udid, "SER-"+udid), at, question); err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	withToken := func(id string) {
		t.Helper()
		if err := s.UpdatePushInfo(ctx, id, enrollment.PushInfo{Token: "746f6b656e", Magic: "magic", Topic: "com.apple.mgmt.test"}, at); err != nil {
			t.Fatal(err)
		}
	}
	approve := func(id string, cmds []enrollment.NewCommand) {
		t.Helper()
		ev := enrollment.AuditEvent{At: at, Actor: "admin", Action: "enrollment.approve", TargetType: "enrollment", TargetID: id}
		if _, err := s.Decide(ctx, id, enrollment.StatePending, enrollment.StateApproved, "admin", "", at,
			enrollment.DecisionEffects(enrollment.StateApproved, cmds), ev); err != nil {
			t.Fatal(err)
		}
	}
	owed := func() int {
		t.Helper()
		n, err := s.OutboxLen(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	asked := enrolled("UDID-E1", true)
	withToken(asked)
	cmds := []enrollment.NewCommand{{UUID: enrollment.NewID(), RequestType: "InstallProfile", Body: []byte("<plist>1</plist>")},
		{UUID: enrollment.NewID(), RequestType: "InstallApplication", Body: []byte("<plist>2</plist>")}}
	approve(asked, cmds)
	queued, err := s.ListCommands(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 3 || queued[0].RequestType != "DeviceInformation" || queued[1].UUID != cmds[0].UUID || queued[2].UUID != cmds[1].UUID {
		t.Fatalf("commands after the approval: %+v, want the question then the two approved", queued)
	}
	if n := owed(); n != 1 {
		t.Fatalf("pushes owed after approving a device with a push token: %d, want 1", n)
	}
	if ok, err := s.TrustIssuance().EnrollmentApproved(ctx, asked); err != nil || !ok {
		t.Fatalf("trusted after approval: %v %v", ok, err)
	}

	// More commands than one statement takes, numbered on.
	var many []enrollment.NewCommand
	for i := range 150 {
		many = append(many, enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: fmt.Sprintf("T%d", i), Body: []byte("b")})
	}
	if err := s.EnqueueCommands(ctx, asked, many, "admin", at, enrollment.AuditEvent{At: at, Actor: "admin", Action: "command.enqueue"}); err != nil {
		t.Fatal(err)
	}
	if queued, err = s.ListCommands(ctx, asked); err != nil || len(queued) != 153 {
		t.Fatalf("after 150 more: %d commands, %v", len(queued), err)
	}
	for i, c := range queued[3:] {
		if c.UUID != many[i].UUID || c.Seq != int64(i+4) {
			t.Fatalf("command %d: %s seq %d, want %s seq %d", i, c.UUID, c.Seq, many[i].UUID, i+4)
		}
	}

	approve(enrolled("UDID-E2", false), cmds[:0])
	if n := owed(); n != 1 {
		t.Fatalf("pushes owed after approving a device with no push token: %d, want still 1", n)
	}

	invalid := enrolled("UDID-E3", false)
	withToken(invalid)
	if err := s.DropOutbox(ctx, invalid, true, at, "APNs: BadDeviceToken"); err != nil {
		t.Fatal(err)
	}
	approve(invalid, nil)
	if n := owed(); n != 1 {
		t.Fatalf("pushes owed after approving a device whose token APNs refused: %d, want still 1", n)
	}
}

// testApprovalAmongWriters: an approval reads its enrollment once, after
// the UPDATE that locks the row, and numbers its commands from that read.
// Enqueuers, a fleet command, a TokenUpdate and APNs's refusal of the token
// run at the same moment on the same enrollment: the approval never fails,
// the commands stay numbered 1, 2, 3..., and no push is owed to a refused
// token.
func testApprovalAmongWriters(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	cmd := func(requestType string) enrollment.NewCommand {
		return enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: requestType, Body: []byte("b")}
	}
	token := enrollment.PushInfo{Token: "746f6b656e", Magic: "magic", Topic: "com.apple.mgmt.test"}
	ev := enrollment.AuditEvent{At: at, Actor: "admin", Action: "command.enqueue"}
	for round := range 12 {
		r := reserve(t, s, fmt.Sprintf("writers%d@example.com", round))
		udid := fmt.Sprintf("UDID-W%d", round)
		if _, err := claimAsked(s, r, device(udid, "SER-"+udid), at, attestQuestion(r.ID, at)); err != nil {
			t.Fatal(err)
		}
		refuse := round%2 == 0
		if refuse {
			if err := s.UpdatePushInfo(ctx, r.ID, token, at); err != nil {
				t.Fatal(err)
			}
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		var approval error
		run := func(f func() error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				// The others may fail (a deadlock on PostgreSQL); the
				// approval may not.
				_ = f()
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, approval = s.Decide(ctx, r.ID, enrollment.StatePending, enrollment.StateApproved, "admin", "", at,
				enrollment.DecisionEffects(enrollment.StateApproved, []enrollment.NewCommand{cmd("A1"), cmd("A2"), cmd("A3")}),
				enrollment.AuditEvent{At: at, Actor: "admin", Action: "enrollment.approve"})
		}()
		for range 2 {
			run(func() error {
				return s.EnqueueCommands(ctx, r.ID, []enrollment.NewCommand{cmd("E"), cmd("E")}, "admin", at, ev)
			})
		}
		run(func() error {
			return s.EnqueueFleet(ctx, []enrollment.FleetCommand{{EnrollmentID: r.ID, Command: cmd("F"), Event: ev}}, "admin", at)
		})
		if refuse {
			run(func() error { return s.DropOutbox(ctx, r.ID, true, at, "APNs: BadDeviceToken") })
		} else {
			run(func() error { return s.UpdatePushInfo(ctx, r.ID, token, at) })
		}
		close(start)
		wg.Wait()
		if approval != nil {
			t.Fatalf("round %d: the approval failed: %v", round, approval)
		}
		cmds, err := s.ListCommands(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		approved := 0
		for i, c := range cmds {
			if c.Seq != int64(i+1) {
				t.Fatalf("round %d: command %d (%s) has seq %d", round, i, c.RequestType, c.Seq)
			}
			if strings.HasPrefix(c.RequestType, "A") {
				approved++
			}
		}
		if approved != 3 {
			t.Fatalf("round %d: %d of the approval's commands queued", round, approved)
		}
		var owedToRefused int
		if err := s.DB().Get(&owedToRefused, s.DB().Rebind(`SELECT COUNT(*) FROM push_outbox o JOIN enrollments e ON e.id = o.enrollment_id
			WHERE e.id = ? AND (e.push_invalid_at IS NOT NULL OR e.push_token = '')`), r.ID); err != nil {
			t.Fatal(err)
		}
		if owedToRefused != 0 {
			t.Fatalf("round %d: a push is owed to a refused or missing token", round)
		}
		if ok, err := s.TrustIssuance().EnrollmentApproved(ctx, r.ID); err != nil || !ok {
			t.Fatalf("round %d: approved but not trusted: %v", round, err)
		}
	}
}

// testConcurrentApprovalsOfOneDevice: a profile installed twice on one
// device gives two pending enrollments of one owner, and approving both at
// once (a bulk approval) makes each supersede the other's row. Exactly one
// stays approved, and the other approval fails as a late decision does,
// not with PostgreSQL's deadlock error.
func testConcurrentApprovalsOfOneDevice(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	ev := enrollment.AuditEvent{At: at, Actor: "t", Action: "enrollment.approve"}
	for round := range 3 {
		udid := fmt.Sprintf("UDID-TWICE-%d", round)
		var ids []string
		for range 2 {
			r := reserve(t, s, "twice@example.com")
			if _, err := claim(s, r, device(udid, "SER-"+udid), at); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, r.ID)
		}
		var wg sync.WaitGroup
		errs := make([]error, len(ids))
		for i, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.Decide(ctx, id, enrollment.StatePending, enrollment.StateApproved, "t", "", at,
					enrollment.DecisionEffects(enrollment.StateApproved, nil), ev)
			}()
		}
		wg.Wait()
		approved := 0
		for i, id := range ids {
			if errs[i] != nil && !errors.Is(errs[i], enrollment.ErrConflict) {
				t.Fatalf("round %d: an approval failed with %v, not a conflict", round, errs[i])
			}
			e, err := s.Enrollment(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if e.State == enrollment.StateApproved {
				approved++
			}
		}
		if approved != 1 {
			t.Fatalf("round %d: %d enrollments of one device approved", round, approved)
		}
	}
}

// testFleetCommandAtomic: a fleet-wide command that fails on its last
// device (a command UUID already taken, in the last of its statements'
// chunks) leaves nothing for the others; one naming an enrollment that is
// gone is refused; a good one queues each device its command and its
// audit event.
func testFleetCommandAtomic(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	var ids []string
	for i := range 101 {
		r := reserve(t, s, fmt.Sprintf("fleet%d@example.com", i))
		if _, err := claim(s, r, device(fmt.Sprintf("UDID-F%d", i), fmt.Sprintf("SER-F%d", i)), at); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	item := func(id string) enrollment.FleetCommand {
		return enrollment.FleetCommand{EnrollmentID: id, Command: enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "DeviceInformation", Body: []byte("b")},
			Event: enrollment.AuditEvent{At: at, Actor: "fleet-admin", Action: "command.enqueue", TargetID: id}}
	}
	count := func() (commands, audits int) {
		db := s.DB()
		if err := db.Get(&commands, `SELECT COUNT(*) FROM commands WHERE request_type = 'DeviceInformation' AND pre_approval = 0`); err != nil {
			t.Fatal(err)
		}
		if err := db.Get(&audits, `SELECT COUNT(*) FROM audit_log WHERE actor = 'fleet-admin'`); err != nil {
			t.Fatal(err)
		}
		return commands, audits
	}
	taken := item(ids[0])
	if err := s.EnqueueFleet(ctx, []enrollment.FleetCommand{taken}, "admin", at); err != nil {
		t.Fatal(err)
	}
	beforeCommands, beforeAudits := count()
	all := func() []enrollment.FleetCommand {
		out := make([]enrollment.FleetCommand, len(ids))
		for i, id := range ids {
			out[i] = item(id)
		}
		return out
	}
	failing := all()
	failing[len(failing)-1].Command.UUID = taken.Command.UUID
	if err := s.EnqueueFleet(ctx, failing, "admin", at); !errors.Is(err, enrollment.ErrConflict) {
		t.Fatalf("a taken command UUID: %v", err)
	}
	gone := append(all()[:50], item("zzzz-gone"))
	if err := s.EnqueueFleet(ctx, gone, "admin", at); !errors.Is(err, enrollment.ErrNotFound) {
		t.Fatalf("an unknown enrollment: %v", err)
	}
	if c, a := count(); c != beforeCommands || a != beforeAudits {
		t.Fatalf("refused fleet commands left %d commands and %d audit events", c-beforeCommands, a-beforeAudits)
	}
	if err := s.EnqueueFleet(ctx, all(), "admin", at); err != nil {
		t.Fatal(err)
	}
	if c, a := count(); c != beforeCommands+len(ids) || a != beforeAudits+len(ids) {
		t.Fatalf("%d commands and %d audit events, want %d each", c-beforeCommands, a-beforeAudits, len(ids))
	}
	// Every device's queue numbers its commands 1, 2, ... without a gap.
	checkSeqs := func() {
		t.Helper()
		var gaps int
		if err := s.DB().Get(&gaps, `SELECT COUNT(*) FROM (SELECT enrollment_id FROM commands GROUP BY enrollment_id
			HAVING MAX(seq) <> COUNT(*) OR MIN(seq) <> 1) g`); err != nil {
			t.Fatal(err)
		}
		if gaps != 0 {
			t.Fatalf("%d queues with gaps or duplicates in seq", gaps)
		}
	}
	checkSeqs()

	// Fleet commands over overlapping devices, beside single enqueues,
	// all at once: none fails (no deadlock on PostgreSQL), none is lost.
	before, _ := count()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	ranges := [][2]int{{0, 80}, {20, 101}, {40, 101}, {5, 95}}
	for round := range 3 {
		for _, rg := range ranges {
			wg.Add(1)
			go func() {
				defer wg.Done()
				items := make([]enrollment.FleetCommand, 0, rg[1]-rg[0])
				for _, id := range ids[rg[0]:rg[1]] {
					items = append(items, item(id))
				}
				// Not all in ID order: the store sorts them.
				slices.Reverse(items)
				errs <- s.EnqueueFleet(ctx, items, "admin", at)
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			it := item(ids[60+round])
			errs <- s.EnqueueCommands(ctx, it.EnrollmentID, []enrollment.NewCommand{it.Command}, "admin", at, it.Event)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent fleet commands: %v", err)
		}
	}
	want := 3
	for _, rg := range ranges {
		want += 3 * (rg[1] - rg[0])
	}
	if c, _ := count(); c != before+want {
		t.Fatalf("%d commands after the concurrent requests, want %d", c-before, want)
	}
	checkSeqs()

	// A device denied after the caller looked it up refuses the request
	// inside the transaction.
	ev := enrollment.AuditEvent{At: at, Actor: "admin", Action: "enrollment.deny"}
	if _, err := s.Decide(ctx, ids[100], enrollment.StatePending, enrollment.StateDenied, "admin", "lost", at,
		enrollment.DecisionEffects(enrollment.StateDenied, nil), ev); err != nil {
		t.Fatal(err)
	}
	before, _ = count()
	if err := s.EnqueueFleet(ctx, all(), "admin", at); !errors.Is(err, enrollment.ErrConflict) {
		t.Fatalf("a denied device: %v", err)
	}
	if c, _ := count(); c != before {
		t.Fatalf("a fleet command naming a denied device left %d commands", c-before)
	}
}

// attestQuestion is the attestation question for enrollment id, as the
// gate makes it.
func attestQuestion(id string, at time.Time) *enrollment.Question {
	uuid := enrollment.NewID()
	return &enrollment.Question{NonceHex: "nonce-" + uuid, Event: enrollment.AuditEvent{At: at, Actor: "vestibule", Action: "enrollment.attest_ask", TargetID: id},
		Command: enrollment.NewCommand{UUID: uuid, RequestType: "DeviceInformation", Body: []byte("<plist>question</plist>")}}
}

// testClaimRaces: eight devices racing for one token give one enrollment
// and seven refusals; one device racing with itself (a retried
// Authenticate) gives one enrollment, seven retries and one question.
func testClaimRaces(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	const n = 8
	for round := range 6 {
		sameDevice := round%2 == 1
		r := reserve(t, s, "race@example.com")
		results := make([]enrollment.ClaimResult, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				udid := fmt.Sprintf("RACE-%d-%d", round, i)
				if sameDevice {
					udid = fmt.Sprintf("RACE-%d", round)
				}
				<-start
				results[i], errs[i] = s.ClaimReservation(ctx, r.ID, r.TokenNonce, device(udid, "SER-"+udid), at,
					enrollment.AuditEvent{At: at, Actor: "device:" + udid, Action: "enrollment.authenticate", TargetID: r.ID}, attestQuestion(r.ID, at))
			}()
		}
		close(start)
		wg.Wait()
		winners, retries, refused := 0, 0, 0
		for i := range n {
			switch {
			case errs[i] == nil && !results[i].Retry:
				winners++
			case errs[i] == nil:
				retries++
			case errors.Is(errs[i], enrollment.ErrTokenClaimed):
				refused++
			default:
				t.Fatalf("round %d: %v", round, errs[i])
			}
		}
		cmds, err := s.ListCommands(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		e, err := s.Enrollment(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if winners != 1 || len(cmds) != 1 || e.AttestCommand != cmds[0].UUID || cmds[0].Seq != 1 || cmds[0].CreatedBy != "vestibule" ||
			sameDevice && retries != n-1 || !sameDevice && refused != n-1 {
			t.Fatalf("round %d (same device %v): %d won, %d retried, %d refused, commands %+v", round, sameDevice, winners, retries, refused, cmds)
		}
		// The question is audited once, as the gate made it.
		asked, err := s.ListAudit(ctx, enrollment.AuditFilter{Action: "enrollment.attest_ask", TargetID: r.ID})
		if err != nil || len(asked) != 1 || asked[0].Actor != "vestibule" {
			t.Fatalf("round %d: question audited as %+v %v", round, asked, err)
		}
	}
}

// testClaimUpdateError: when the claim's UPDATE itself fails, the claim
// fails with that error and the reservation stays open; it is not read
// as a lost race.
func testClaimUpdateError(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	trigger := `CREATE TRIGGER refuse_claim BEFORE UPDATE ON reservations WHEN NEW.claimed_udid = 'BROKEN'
		BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END`
	if s.Dialect() == store.Postgres {
		trigger = `CREATE FUNCTION refuse_claim() RETURNS trigger AS $$ BEGIN IF NEW.claimed_udid = 'BROKEN' THEN RAISE EXCEPTION 'refused by trigger'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
			CREATE TRIGGER refuse_claim BEFORE UPDATE ON reservations FOR EACH ROW EXECUTE FUNCTION refuse_claim()`
	}
	if _, err := s.DB().Exec(trigger); err != nil {
		t.Fatal(err)
	}
	r := reserve(t, s, "broken@example.com")
	ev := enrollment.AuditEvent{At: at, Actor: "device:BROKEN", Action: "enrollment.authenticate", TargetID: r.ID}
	_, err := s.ClaimReservation(ctx, r.ID, r.TokenNonce, device("BROKEN", "SER-BROKEN"), at, ev, attestQuestion(r.ID, at))
	if err == nil || !strings.Contains(err.Error(), "refused by trigger") || errors.Is(err, enrollment.ErrTokenClaimed) {
		t.Fatalf("a failing claim UPDATE: %v", err)
	}
	if got, err := s.Reservation(ctx, r.ID); err != nil || got.State != enrollment.ReservationOpen {
		t.Fatalf("reservation after a failed claim: %+v %v", got, err)
	}
	if res, err := s.ClaimReservation(ctx, r.ID, r.TokenNonce, device("FINE", "SER-FINE"), at, ev, attestQuestion(r.ID, at)); err != nil || res.Retry {
		t.Fatalf("a good claim after it: %+v %v", res, err)
	}
}

// testDecideMany: a batch of decisions in one transaction does for each
// enrollment what its own decision would (commands numbered after its
// own, a push only to a valid token, trust, its audit event, its earlier
// enrollment superseded), and answers for each: a decided enrollment is a
// conflict, an unknown one not found, neither stops the others. A batch
// holding two enrollments of one device and owner is refused whole. Two
// batches racing for one device approve exactly one of its enrollments.
func testDecideMany(t *testing.T, s *store.Store) {
	ctx := context.Background()
	at := testNow.Add(time.Minute)
	const email = "many@example.com"
	enroll := func(udid string) string {
		t.Helper()
		r := reserve(t, s, email)
		if _, err := claimAsked(s, r, device(udid, "SER-"+udid), at, attestQuestion(r.ID, at)); err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	decision := func(id string, cmds ...enrollment.NewCommand) enrollment.Decision {
		return enrollment.Decision{ID: id, Effects: enrollment.DecisionEffects(enrollment.StateApproved, cmds),
			Event: enrollment.AuditEvent{At: at, Actor: "admin", Action: "enrollment.approve_many", TargetType: "enrollment", TargetID: id}}
	}
	approveMany := func(ds []enrollment.Decision) ([]enrollment.DecisionResult, error) {
		return s.DecideMany(ctx, enrollment.StatePending, enrollment.StateApproved, "admin", "bulk", at, ds)
	}
	events := func() int {
		t.Helper()
		evs, err := s.ListAudit(ctx, enrollment.AuditFilter{Action: "enrollment.approve_many", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	token := enrollment.PushInfo{Token: "746f6b656e", Magic: "magic", Topic: "com.apple.mgmt.test"}

	// The device of the last pending enrollment (in the last chunk of
	// every read) was approved before for the same owner: approving the
	// new one supersedes it.
	earlier := enroll("UDID-M69")
	if _, err := approveMany([]enrollment.Decision{decision(earlier)}); err != nil {
		t.Fatal(err)
	}
	decidedBefore := enroll("UDID-DONE")
	if _, err := approveMany([]enrollment.Decision{decision(decidedBefore)}); err != nil {
		t.Fatal(err)
	}
	before := events()
	// More than one chunk of every statement (64).
	var ds []enrollment.Decision
	withToken := 0
	for i := range 70 {
		id := enroll(fmt.Sprintf("UDID-M%d", i))
		switch {
		case i%3 == 0:
			if err := s.UpdatePushInfo(ctx, id, token, at); err != nil {
				t.Fatal(err)
			}
			withToken++
		case i == 1:
			if err := s.UpdatePushInfo(ctx, id, token, at); err != nil {
				t.Fatal(err)
			}
			if err := s.DropOutbox(ctx, id, true, at, "APNs: BadDeviceToken"); err != nil {
				t.Fatal(err)
			}
		}
		ds = append(ds, decision(id,
			enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "InstallProfile", Body: []byte("<plist>1</plist>")},
			enrollment.NewCommand{UUID: enrollment.NewID(), RequestType: "InstallApplication", Body: []byte("<plist>2</plist>")}))
	}
	unknown := enrollment.NewID()
	ds = slices.Insert(ds, 10, decision(decidedBefore), decision(unknown))
	owedBefore, err := s.OutboxLen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := approveMany(ds)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(ds) {
		t.Fatalf("%d results for %d decisions", len(res), len(ds))
	}
	for i, d := range ds {
		r := res[i]
		switch d.ID {
		case decidedBefore:
			if !errors.Is(r.Err, enrollment.ErrConflict) || !strings.Contains(r.Err.Error(), "already approved") {
				t.Fatalf("an enrollment approved before: %v, want a conflict naming its state", r.Err)
			}
			continue
		case unknown:
			if !errors.Is(r.Err, enrollment.ErrNotFound) {
				t.Fatalf("an unknown enrollment: %v, want not found", r.Err)
			}
			continue
		}
		if r.Err != nil || r.Enrollment.ID != d.ID || r.Enrollment.State != enrollment.StateApproved {
			t.Fatalf("decision %d (%s): %+v %v", i, d.ID, r.Enrollment.State, r.Err)
		}
		queued, err := s.ListCommands(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(queued) != 3 || queued[0].RequestType != "DeviceInformation" || queued[1].UUID != d.Effects.Commands[0].UUID ||
			queued[2].UUID != d.Effects.Commands[1].UUID || queued[2].Seq != 3 {
			t.Fatalf("commands of %s: %+v, want the question then the two approved", d.ID, queued)
		}
		if ok, err := s.TrustIssuance().EnrollmentApproved(ctx, d.ID); err != nil || !ok {
			t.Fatalf("%s trusted after approval: %v %v", d.ID, ok, err)
		}
	}
	if owed, err := s.OutboxLen(ctx); err != nil || owed != owedBefore+withToken {
		t.Fatalf("pushes owed: %d, want %d (%v)", owed, owedBefore+withToken, err)
	}
	if n := events() - before; n != 70 {
		t.Fatalf("%d audit events for 70 approvals", n)
	}
	if e, err := s.Enrollment(ctx, earlier); err != nil || e.State != enrollment.StateSuperseded {
		t.Fatalf("the device's earlier enrollment: %s %v, want superseded", e.State, err)
	}
	if ok, err := s.TrustIssuance().EnrollmentApproved(ctx, earlier); err != nil || ok {
		t.Fatalf("the superseded enrollment is still trusted: %v %v", ok, err)
	}
	revoked := ds[0].ID
	if _, err := s.DecideMany(ctx, enrollment.StateApproved, enrollment.StateDenied, "admin", "lost", at, []enrollment.Decision{{ID: revoked,
		Effects: enrollment.DecisionEffects(enrollment.StateDenied, nil), Event: enrollment.AuditEvent{At: at, Actor: "admin", Action: "enrollment.revoke"}}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.TrustIssuance().EnrollmentApproved(ctx, revoked); err != nil || ok {
		t.Fatalf("a revoked enrollment is still trusted: %v %v", ok, err)
	}

	// One ID twice: refused before anything is written.
	twice := enroll("UDID-TWICE")
	before = events()
	if _, err := approveMany([]enrollment.Decision{decision(twice), decision(twice)}); !errors.Is(err, enrollment.ErrInvalid) {
		t.Fatalf("one enrollment twice in a batch: %v, want invalid", err)
	}
	if e, err := s.Enrollment(ctx, twice); err != nil || e.State != enrollment.StatePending || events() != before {
		t.Fatalf("after the refused batch: %s %v, %d events", e.State, err, events()-before)
	}

	// Two owners' new enrollments of one device, read in different chunks
	// (three decisions: chunks of two and one), share its earlier
	// enrollment: it is superseded once, by its owner's.
	shared := enroll("UDID-SHARED")
	if _, err := approveMany([]enrollment.Decision{decision(shared)}); err != nil {
		t.Fatal(err)
	}
	r := reserve(t, s, "other-owner@example.com")
	if _, err := claim(s, r, device("UDID-SHARED", "SER-UDID-SHARED"), at); err != nil {
		t.Fatal(err)
	}
	res, err = approveMany([]enrollment.Decision{decision(enroll("UDID-SHARED")), decision(enroll("UDID-FILLER")), decision(r.ID)})
	if err != nil {
		t.Fatalf("a batch whose chunks share an earlier enrollment: %v", err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("decision %d: %v", i, r.Err)
		}
	}
	if e, err := s.Enrollment(ctx, shared); err != nil || e.State != enrollment.StateSuperseded {
		t.Fatalf("the shared earlier enrollment: %s %v, want superseded", e.State, err)
	}

	// Two enrollments of one device and owner in one batch: refused whole.
	a, b, other := enroll("UDID-PAIR"), enroll("UDID-PAIR"), enroll("UDID-ALONE")
	before = events()
	if _, err := approveMany([]enrollment.Decision{decision(other), decision(a), decision(b)}); !errors.Is(err, enrollment.ErrConflict) {
		t.Fatalf("a batch superseding its own decision: %v, want a conflict", err)
	}
	for _, id := range []string{a, b, other} {
		if e, err := s.Enrollment(ctx, id); err != nil || e.State != enrollment.StatePending {
			t.Fatalf("after the refused batch %s is %s (%v), want pending", id, e.State, err)
		}
	}
	if n := events() - before; n != 0 {
		t.Fatalf("the refused batch left %d audit events", n)
	}

	// The same pair in two batches at once, each with another device: the
	// one approved second finds its sibling's supersession (on PostgreSQL
	// after a deadlock, retried) and is a conflict; the others approve.
	for round := range 3 {
		udid := fmt.Sprintf("UDID-RACE-%d", round)
		pair := []string{enroll(udid), enroll(udid)}
		var wg sync.WaitGroup
		results := make([][]enrollment.DecisionResult, 2)
		errs := make([]error, 2)
		for i := range pair {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = approveMany([]enrollment.Decision{decision(enroll(fmt.Sprintf("%s-%d", udid, i))), decision(pair[i])})
			}()
		}
		wg.Wait()
		approved := 0
		for i := range pair {
			if errs[i] != nil {
				t.Fatalf("round %d: batch %d failed: %v", round, i, errs[i])
			}
			if results[i][0].Err != nil {
				t.Fatalf("round %d: the other device of batch %d: %v", round, i, results[i][0].Err)
			}
			switch err := results[i][1].Err; {
			case err == nil:
				approved++
			case !errors.Is(err, enrollment.ErrConflict):
				t.Fatalf("round %d: %v, want a conflict", round, err)
			}
		}
		if approved != 1 {
			t.Fatalf("round %d: %d enrollments of one device approved", round, approved)
		}
	}
}
