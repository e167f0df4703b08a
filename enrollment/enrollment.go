package enrollment

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// State is where an enrollment is in the approval gate.
type State string

// Enrollment states. Only pending enrollments can be decided; approval is
// the only way to approved.
const (
	StatePending    State = "pending"
	StateApproved   State = "approved"
	StateDenied     State = "denied"
	StateSuperseded State = "superseded"
	StateUnenrolled State = "unenrolled"
)

// ParseState accepts a state name for filters.
func ParseState(s string) (State, error) {
	switch st := State(s); st {
	case StatePending, StateApproved, StateDenied, StateSuperseded, StateUnenrolled, "":
		return st, nil
	}
	return "", fmt.Errorf("%w: state %q is not one of pending, approved, denied, superseded, unenrolled", ErrInvalid, s)
}

// Refusals at Authenticate. The device only ever learns "401".
var (
	ErrCertNotForReservation = errors.New("certificate was issued for another reservation")
	ErrTokenClaimed          = errors.New("enrollment token already claimed by another device")
	ErrReservationNotOpen    = errors.New("reservation is not open")
	ErrTokenSuperseded       = errors.New("enrollment token replaced by a newer download")
)

// DeviceFacts are what a device says about itself. They are believed only
// after its certificate has been verified, and even then they are claims:
// the approver sees them, nothing is decided on them.
type DeviceFacts struct {
	UDID         string `json:"udid"`
	Serial       string `json:"serial"`
	Model        string `json:"model"`
	ModelName    string `json:"model_name"`
	ProductName  string `json:"product_name"`
	OSVersion    string `json:"os_version"`
	BuildVersion string `json:"build_version"`
	IMEI         string `json:"imei,omitempty"`
	MEID         string `json:"meid,omitempty"`
	DeviceName   string `json:"device_name,omitempty"`
}

// maxFactLen bounds what a device may make us store per field.
const maxFactLen = 256

func (f DeviceFacts) clean() (DeviceFacts, error) {
	fields := []*string{&f.UDID, &f.Serial, &f.Model, &f.ModelName, &f.ProductName, &f.OSVersion, &f.BuildVersion, &f.IMEI, &f.MEID, &f.DeviceName}
	for _, p := range fields {
		*p = strings.TrimSpace(*p)
		if len(*p) > maxFactLen {
			return f, fmt.Errorf("%w: a device fact is longer than %d bytes", ErrInvalid, maxFactLen)
		}
	}
	if f.UDID == "" {
		return f, fmt.Errorf("%w: UDID is required", ErrInvalid)
	}
	return f, nil
}

// Enrollment is one device's enrollment; its ID is the reserved device ID.
type Enrollment struct {
	ID           string      `json:"id"`
	UserID       string      `json:"user_id"`
	UserEmail    string      `json:"user"`
	State        State       `json:"state"`
	ReEnrollment bool        `json:"re_enrollment"`
	PreviousID   string      `json:"previous_id,omitempty"`
	ConflictID   string      `json:"conflict_with,omitempty"`
	Facts        DeviceFacts `json:"device"`
	CheckinIP    string      `json:"checkin_ip"`
	CreatedAt    time.Time   `json:"created_at"`
	UpdatedAt    time.Time   `json:"updated_at"`
	DecidedAt    *time.Time  `json:"decided_at,omitempty"`
	DecidedBy    string      `json:"decided_by,omitempty"`
	DecisionNote string      `json:"decision_note,omitempty"`
	Suspicious   bool        `json:"suspicious"`
	// OwnerDisabled: the user the device enrolled for is disabled. Their
	// pending enrollments were denied then; approved ones stay until an
	// admin revokes or retires them.
	OwnerDisabled  bool       `json:"owner_disabled"`
	PushToken      string     `json:"-"`
	PushMagic      string     `json:"-"`
	PushTopic      string     `json:"push_topic,omitempty"`
	TokenUpdatedAt *time.Time `json:"token_updated_at,omitempty"`
	PushInvalidAt  *time.Time `json:"push_invalid_at,omitempty"`
	LastSeenAt     *time.Time `json:"last_seen_at,omitempty"`
	// Attestation is what Apple's hardware attestation vouched for.
	Attestation Attestation `json:"attestation"`
	// Identity is what Apple attested for the identity key (ACME).
	Identity IdentityAttestation `json:"identity"`
	// AttestNonce is the hex nonce of the attestation question, and
	// AttestCommand its command's UUID: only the answer to it counts.
	AttestNonce   string `json:"-"`
	AttestCommand string `json:"-"`
}

// Flags lists what an approver should look at twice.
func (e Enrollment) Flags() []string {
	var f []string
	if e.ReEnrollment {
		f = append(f, "re_enrollment")
	}
	if e.ConflictID != "" {
		f = append(f, "claims_another_users_device")
	}
	if e.Suspicious {
		f = append(f, "suspicious")
	}
	if e.OwnerDisabled {
		f = append(f, "owner_disabled")
	}
	if e.Attestation.Status == AttestMismatch {
		f = append(f, "attestation_mismatch")
	}
	return f
}

// Claim is what the check-in service has established when a device sends
// Authenticate: the token from its check-in URL, the reservation its
// verified certificate was issued for, and its claimed facts.
type Claim struct {
	Token             string
	CertReservationID string
	// Identity is what Apple attested for the certificate's key, when it
	// was issued over ACME.
	Identity IdentityAttestation
	Facts    DeviceFacts
	RemoteIP string
}

// CheckinView is the part of an enrollment a device's check-in decides
// on: whose it is, whether it is let in, when it last checked in, and
// whether its attestation question is open. The store reads it with the
// certificate's record, in one statement, for every check-in; paths that
// need more read the whole enrollment.
type CheckinView struct {
	ID            string
	State         State
	UDID          string
	LastSeenAt    *time.Time
	AttestStatus  AttestationStatus
	AttestCommand string
}

// CheckinView is e as a check-in sees it.
func (e Enrollment) CheckinView() CheckinView {
	return CheckinView{ID: e.ID, State: e.State, UDID: e.Facts.UDID, LastSeenAt: e.LastSeenAt,
		AttestStatus: e.Attestation.Status, AttestCommand: e.AttestCommand}
}

// IdentityAttestation is what Apple vouched for a device's identity key:
// made in the Secure Enclave (HardwareBound), of the device with this
// serial number and UDID.
type IdentityAttestation struct {
	HardwareBound bool   `json:"hardware_bound"`
	Serial        string `json:"serial,omitempty"`
	UDID          string `json:"udid,omitempty"`
}

// ErrIdentityMismatch: the device claims another serial number than the
// one Apple attested for its identity key.
var ErrIdentityMismatch = errors.New("the device claims another serial number than Apple attested for its identity key")

// ClaimResult tells the store what to record.
type ClaimResult struct {
	Enrollment Enrollment
	// Retry is true when this same device had already claimed the token.
	Retry bool
}

// EnrollmentFilter narrows a listing; zero fields match everything.
type EnrollmentFilter struct {
	State  State
	UserID string
	UDID   string
	Serial string
	Limit  int
}

// EnrollmentStore is what the approval gate needs from storage.
type EnrollmentStore interface {
	// EnrollmentIDsWithPrefix returns up to limit enrollment IDs starting
	// with prefix.
	EnrollmentIDsWithPrefix(ctx context.Context, prefix string, limit int) ([]string, error)
	// ClaimReservation atomically claims reservation resID for facts.UDID if
	// its current token nonce is nonce and it is open and unexpired at now,
	// or returns the existing enrollment when that UDID already claimed it.
	// It creates the pending enrollment, flagged when the UDID or serial
	// enrolled before. A claim by another device increments the
	// reservation's claim attempts and returns ErrTokenClaimed. q, when
	// set, is asked in the same transaction if the enrollment has not
	// been asked yet: its nonce and command stored (status asked) and the
	// command queued as the one a pending device may receive, with q's
	// event.
	ClaimReservation(ctx context.Context, resID, nonce string, e Enrollment, now time.Time, ev AuditEvent, q *Question) (ClaimResult, error)
	Enrollment(ctx context.Context, id string) (Enrollment, error)
	// EnrollmentsByID returns those of ids that exist, by ID.
	EnrollmentsByID(ctx context.Context, ids []string) (map[string]Enrollment, error)
	EnrollmentByUDID(ctx context.Context, udid string) (Enrollment, error)
	ListEnrollments(ctx context.Context, f EnrollmentFilter) ([]Enrollment, error)
	// Decide moves an enrollment that is still in state from to state to,
	// and carries out eff (see Effects), all in one transaction with ev. An
	// enrollment no longer in from is ErrConflict.
	Decide(ctx context.Context, id string, from, to State, by, note string, at time.Time, eff Effects, ev AuditEvent) (Enrollment, error)
	// DecideMany is Decide for many enrollments in one transaction, each
	// with its effects and event. The result for each decision is the
	// enrollment or, for one no longer in from, ErrConflict; the error is
	// for the transaction, none of whose decisions then happened. No two
	// of ds may supersede each other (one device and owner).
	DecideMany(ctx context.Context, from, to State, by, note string, at time.Time, ds []Decision) ([]DecisionResult, error)
	UpdatePushInfo(ctx context.Context, id string, p PushInfo, at time.Time) error
	MarkUnenrolled(ctx context.Context, id string, at time.Time, ev AuditEvent) error
	Touch(ctx context.Context, id string, at time.Time) error
	AppendAudit(ctx context.Context, ev AuditEvent) error
	MarkSuspicious(ctx context.Context, id string, at time.Time, ev AuditEvent) (Enrollment, error)
	// Retire supersedes a pending or approved enrollment on an approver's
	// explicit decision and revokes its certificates, with ev, in one
	// transaction; any other current state is ErrConflict.
	Retire(ctx context.Context, id, by, note string, at time.Time, ev AuditEvent) (Enrollment, error)
	// RecordAttestation stores the result of the question asked with
	// nonceHex, with ev; ErrConflict when it was judged already.
	RecordAttestation(ctx context.Context, id, nonceHex string, a Attestation, ev AuditEvent) error
}

// A Decision is one enrollment of a DecideMany: what its decision
// carries out, and its audit event.
type Decision struct {
	ID      string
	Effects Effects
	Event   AuditEvent
}

// DecisionResult is what became of one Decision: the enrollment as
// decided, or why it was not.
type DecisionResult struct {
	Enrollment Enrollment
	Err        error
}

// NotMe is the owner's "this wasn't me": the enrollment is marked
// suspicious for admins and denied if still pending. Only the user the
// device enrolled for may say so.
func (s *Enrollments) NotMe(ctx context.Context, actor Actor, userID, id string) (Enrollment, error) {
	e, err := s.Get(ctx, id)
	if err != nil {
		return Enrollment{}, err
	}
	if e.UserID != userID {
		return Enrollment{}, fmt.Errorf("not me: %w: enrollment %s", ErrNotFound, id)
	}
	now := s.now()
	ev := actor.event(now, "enrollment.not_me", "enrollment", id, fmt.Sprintf("state was %s serial=%s", e.State, e.Facts.Serial))
	return s.store.MarkSuspicious(ctx, id, now, ev)
}

// PushInfo is what TokenUpdate delivers for APNs.
type PushInfo struct {
	Token string
	Magic string
	Topic string
}

// PostApproval builds the commands queued when an enrollment is approved.
type PostApproval interface {
	Commands(e Enrollment) ([]NewCommand, error)
}

// Notifier tells approvers that a device is waiting. It must not block:
// the device's check-in waits for it.
type Notifier interface {
	Pending(e Enrollment)
}

// RetireNotifier tells an owner that their device was retired. It must not
// block.
type RetireNotifier interface {
	Retired(e Enrollment, reason string)
}

// Enrollments is the approval gate.
type Enrollments struct {
	store     EnrollmentStore
	tokens    *Tokens
	post      PostApproval
	now       func() time.Time
	notifier  Notifier
	questions Questioner
	verifier  AttestationVerifier
	// requireAttestation refuses approval of an unattested enrollment,
	// but for an admin's written override.
	requireAttestation bool
}

// SetNotifier makes the gate announce new pending enrollments.
func (s *Enrollments) SetNotifier(n Notifier) { s.notifier = n }

// NewEnrollments returns the approval gate. tokens may be nil for a gate
// that only decides (the command line's): it then admits no device.
func NewEnrollments(store EnrollmentStore, tokens *Tokens, post PostApproval, now func() time.Time) *Enrollments {
	if now == nil {
		now = time.Now
	}
	return &Enrollments{store: store, tokens: tokens, post: post, now: now}
}

// Authenticate admits a device into the pending queue, or refuses it. The
// certificate must have been issued for the token's reservation, and the
// token must verify and be unclaimed, or claimed by this very device (a
// retry). Every refusal is audited with its reason.
func (s *Enrollments) Authenticate(ctx context.Context, c Claim) (Enrollment, error) {
	if s.tokens == nil {
		return Enrollment{}, errors.New("authenticate: this gate has no token key and admits no device")
	}
	now := s.now()
	facts, err := c.Facts.clean()
	if err != nil {
		return Enrollment{}, s.refuse(ctx, c, "", now, err)
	}
	tok, err := s.tokens.Verify(ctx, c.Token)
	if err != nil {
		if errors.Is(err, ErrSignerUnavailable) {
			return Enrollment{}, fmt.Errorf("authenticate: %w", err)
		}
		return Enrollment{}, s.refuse(ctx, c, "", now, err)
	}
	if tok.ReservationID != c.CertReservationID {
		return Enrollment{}, s.refuse(ctx, c, tok.ReservationID, now, ErrCertNotForReservation)
	}
	// The serial is compared, not the UDID: on a Mac the attested UDID is
	// the provisioning UDID, which the MDM UDID need not equal.
	if c.Identity.HardwareBound && !strings.EqualFold(strings.TrimSpace(c.Identity.Serial), facts.Serial) {
		return Enrollment{}, s.refuse(ctx, c, tok.ReservationID, now,
			fmt.Errorf("%w (attested %q, claimed %q)", ErrIdentityMismatch, c.Identity.Serial, facts.Serial))
	}
	e := Enrollment{ID: tok.ReservationID, UserID: tok.UserID, State: StatePending, Facts: facts, CheckinIP: c.RemoteIP,
		Identity: c.Identity, CreatedAt: now, UpdatedAt: now}
	ev := AuditEvent{At: now, Actor: "device:" + facts.UDID, Action: "enrollment.authenticate", TargetType: "enrollment",
		TargetID: e.ID, RemoteIP: c.RemoteIP, Outcome: OutcomeOK, Detail: fmt.Sprintf("serial=%s model=%s", facts.Serial, facts.Model)}
	// A new enrollment (or a retry whose question was never queued) is
	// asked for attestation, in the claim's transaction; earlier results
	// never carry over.
	q, err := s.question(tok.ReservationID, now)
	if err != nil {
		return Enrollment{}, fmt.Errorf("authenticate: %w", err)
	}
	res, err := s.store.ClaimReservation(ctx, tok.ReservationID, tok.NonceHex(), e, now, ev, q)
	if err == nil && !res.Retry && s.notifier != nil {
		s.notifier.Pending(res.Enrollment)
	}
	if err != nil {
		if errors.Is(err, ErrTokenClaimed) || errors.Is(err, ErrReservationNotOpen) || errors.Is(err, ErrTokenSuperseded) || errors.Is(err, ErrNotFound) {
			return Enrollment{}, s.refuse(ctx, c, tok.ReservationID, now, err)
		}
		return Enrollment{}, fmt.Errorf("authenticate: %w", err)
	}
	return res.Enrollment, nil
}

// refuse audits a refused Authenticate and returns the error the check-in
// handler maps to 401.
func (s *Enrollments) refuse(ctx context.Context, c Claim, resID string, now time.Time, cause error) error {
	ev := AuditEvent{At: now, Actor: "device:" + c.Facts.UDID, Action: "enrollment.authenticate", TargetType: "reservation",
		TargetID: resID, RemoteIP: c.RemoteIP, Outcome: OutcomeRefused,
		Detail: fmt.Sprintf("%v; cert reservation=%s serial=%s", cause, c.CertReservationID, c.Facts.Serial)}
	if err := s.store.AppendAudit(ctx, ev); err != nil {
		return fmt.Errorf("authenticate refused (%v), and the audit failed: %w", cause, err)
	}
	return fmt.Errorf("authenticate: %w: %w", ErrForbidden, cause)
}

// Approve lets a pending device in: its post-approval commands are queued
// and the device's earlier enrollments are superseded. Only from pending.
func (s *Enrollments) Approve(ctx context.Context, actor Actor, id, note string) (Enrollment, error) {
	return s.decide(ctx, actor, id, StateApproved, note)
}

// Deny refuses a pending device for good, or revokes an approved one: its
// certificates are revoked and it is refused from then on. A reason is
// required.
func (s *Enrollments) Deny(ctx context.Context, actor Actor, id, reason string) (Enrollment, error) {
	if strings.TrimSpace(reason) == "" {
		return Enrollment{}, fmt.Errorf("deny: %w: a reason is required", ErrInvalid)
	}
	return s.decide(ctx, actor, id, StateDenied, reason)
}

func (s *Enrollments) decide(ctx context.Context, actor Actor, id string, to State, note string) (Enrollment, error) {
	op := map[State]string{StateApproved: "approve", StateDenied: "deny"}[to]
	if !ValidID(id) {
		return Enrollment{}, fmt.Errorf("%s: %w: enrollment %q", op, ErrNotFound, id)
	}
	if len(note) > 2000 {
		return Enrollment{}, fmt.Errorf("%s: %w: note longer than 2000 characters", op, ErrInvalid)
	}
	e, err := s.store.Enrollment(ctx, id)
	if err != nil {
		return Enrollment{}, fmt.Errorf("%s: %w", op, err)
	}
	now := s.now()
	d, err := s.decision(actor, e, to, note, note, now)
	if err != nil {
		return Enrollment{}, err
	}
	return s.carryOut(ctx, actor, to, note, now, d)
}

// carryOut moves d's enrollment to state to in a transaction of its own,
// recording note: the store's conditional move from d.from judges whether
// it was decided since the rules read it.
func (s *Enrollments) carryOut(ctx context.Context, actor Actor, to State, note string, at time.Time, d ruledDecision) (Enrollment, error) {
	e, err := s.store.Decide(ctx, d.ID, d.from, to, actor.Name, note, at, d.Effects, d.Event)
	if err != nil {
		return Enrollment{}, fmt.Errorf("%s: %w", d.op, err)
	}
	return e, nil
}

// ruledDecision is a Decision the rules allowed, with the state it moves
// from and the name it is audited under.
type ruledDecision struct {
	Decision
	from State
	op   string
}

// decision applies the rules of moving e to state to at now, with the
// person's note, recorded as recorded: the transition, the duty of a
// second person, the attestation an approval may require, and the
// commands an approval queues.
func (s *Enrollments) decision(actor Actor, e Enrollment, to State, note, recorded string, now time.Time) (ruledDecision, error) {
	from, op, err := Transition(e.State, to)
	if err != nil {
		return ruledDecision{}, fmt.Errorf("%s %s: %w", op, e.ID, err)
	}
	if to == StateApproved && ownEnrollment(actor, e) {
		if !actor.SelfApproval {
			return ruledDecision{}, fmt.Errorf("%s: %w: nobody approves an enrollment made in their own name (%s); ask another approver",
				op, ErrForbidden, e.UserEmail)
		}
		op = "self_approve"
	}
	if to == StateApproved && s.requireAttestation && !e.Attestation.Attested() {
		if !actor.Admin || strings.TrimSpace(note) == "" {
			return ruledDecision{}, fmt.Errorf("%s: %w: this server requires hardware attestation and enrollment %s is not attested (%s); "+
				"only an admin may approve it, with a written reason", op, ErrForbidden, e.ID, attestationWord(e.Attestation))
		}
		op = "approve_unattested"
	}
	var cmds []NewCommand
	if to == StateApproved && s.post != nil {
		if cmds, err = s.post.Commands(e); err != nil {
			return ruledDecision{}, fmt.Errorf("%s: post-approval commands: %w", op, err)
		}
	}
	return ruledDecision{Decision: Decision{ID: e.ID, Effects: DecisionEffects(to, cmds), Event: actor.event(now, "enrollment."+op, "enrollment", e.ID, recorded)},
		from: from, op: op}, nil
}

// MaxBulkApproval is the most enrollments one bulk approval takes.
const MaxBulkApproval = 500

// bulkNotePrefix starts the note a bulk approval records.
const bulkNotePrefix = "bulk approval: "

const (
	// bulkBatch is how many approvals share a transaction: on PostgreSQL
	// a batch costs about the round trips of one approval.
	bulkBatch = 32
	// bulkWorkers is how many batches of one bulk approval run at once.
	bulkWorkers = 4
)

// BulkResult is what became of one enrollment of a bulk approval.
type BulkResult struct {
	ID         string
	Enrollment Enrollment
	Err        error
	// BatchErr is why the transaction of its batch failed whole, when it
	// did: the enrollment was then decided alone. A batch should not
	// fail; this is for the operator's log.
	BatchErr error
}

// ApproveAll approves each of ids as Approve would, under the same rules
// and with the same audit events, a batch of them in each transaction.
// note is the person's own, which the rules read (an unattested device
// needs a written reason); the note recorded says it was a bulk approval.
// A result's Err is why that enrollment was not approved; the error is
// for the request as a whole. The results follow ids, an ID given twice
// once.
func (s *Enrollments) ApproveAll(ctx context.Context, actor Actor, ids []string, note string) ([]BulkResult, error) {
	if len(ids) > MaxBulkApproval {
		return nil, fmt.Errorf("approve: %w: %d enrollments, at most %d at once", ErrInvalid, len(ids), MaxBulkApproval)
	}
	// The note is recorded after the prefix, within the 2,000 characters
	// an audit event's detail keeps.
	if longest := 2000 - len(bulkNotePrefix); len(note) > longest {
		return nil, fmt.Errorf("approve: %w: note longer than %d characters", ErrInvalid, longest)
	}
	var out []BulkResult
	index := map[string]int{}
	var valid []string
	for _, id := range ids {
		if _, seen := index[id]; seen {
			continue
		}
		index[id] = len(out)
		out = append(out, BulkResult{ID: id})
		if !ValidID(id) {
			out[len(out)-1].Err = fmt.Errorf("approve: %w: enrollment %q", ErrNotFound, id)
			continue
		}
		valid = append(valid, id)
	}
	found, err := s.store.EnrollmentsByID(ctx, valid)
	if err != nil {
		return nil, fmt.Errorf("approve: %w", err)
	}
	recorded := strings.TrimSuffix(bulkNotePrefix, ": ")
	if strings.TrimSpace(note) != "" {
		recorded = bulkNotePrefix + note
	}
	now := s.now()
	// Two enrollments of one device and owner supersede each other: the
	// first is approved in its batch, the others one at a time after it,
	// as if approved in turn.
	var batch, later []ruledDecision
	device := map[string]bool{}
	for _, id := range valid {
		e, ok := found[id]
		if !ok {
			out[index[id]].Err = fmt.Errorf("approve: %w: enrollment %s", ErrNotFound, id)
			continue
		}
		d, err := s.decision(actor, e, StateApproved, note, recorded, now)
		if err != nil {
			out[index[id]].Err = err
			continue
		}
		keys := []string{e.UserID + " udid " + e.Facts.UDID}
		if e.Facts.Serial != "" {
			keys = append(keys, e.UserID+" serial "+e.Facts.Serial)
		}
		if device[keys[0]] || (len(keys) > 1 && device[keys[1]]) {
			later = append(later, d)
			continue
		}
		for _, k := range keys {
			device[k] = true
		}
		batch = append(batch, d)
	}
	var wg sync.WaitGroup
	work := make(chan []ruledDecision)
	for range min(bulkWorkers, (len(batch)+bulkBatch-1)/bulkBatch) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ds := range work {
				s.approveBatch(ctx, actor, recorded, now, ds, out, index)
			}
		}()
	}
	for len(batch) > 0 {
		n := min(bulkBatch, len(batch))
		work <- batch[:n]
		batch = batch[n:]
	}
	close(work)
	wg.Wait()
	for _, d := range later {
		r := &out[index[d.ID]]
		r.Enrollment, r.Err = s.carryOut(ctx, actor, StateApproved, recorded, now, d)
	}
	return out, nil
}

// approveBatch approves ds in one transaction, and writes each one's
// result at its index in out. A transaction that fails as a whole is
// tried again one approval at a time, so that each is judged on its own.
func (s *Enrollments) approveBatch(ctx context.Context, actor Actor, recorded string, at time.Time, ds []ruledDecision, out []BulkResult,
	index map[string]int) {
	plain := make([]Decision, len(ds))
	for i, d := range ds {
		plain[i] = d.Decision
	}
	res, err := s.store.DecideMany(ctx, StatePending, StateApproved, actor.Name, recorded, at, plain)
	for i, d := range ds {
		r := &out[index[d.ID]]
		switch {
		case err != nil:
			r.BatchErr = err
			r.Enrollment, r.Err = s.carryOut(ctx, actor, StateApproved, recorded, at, d)
		case res[i].Err != nil:
			r.Err = fmt.Errorf("%s: %w", d.op, res[i].Err)
		default:
			r.Enrollment = res[i].Enrollment
		}
	}
}

// Retire ends another enrollment of a device on an approver's explicit
// decision, typically because a conflicting enrollment shows that the
// device changed hands. It is never a side effect of approving the new
// one. A reason is required; the enrollment is superseded, its
// certificates revoked, the action audited and the owner notified.
func (s *Enrollments) Retire(ctx context.Context, actor Actor, id, reason string) (Enrollment, error) {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return Enrollment{}, fmt.Errorf("retire: %w: a reason is required", ErrInvalid)
	}
	if len(reason) > 2000 {
		return Enrollment{}, fmt.Errorf("retire: %w: reason longer than 2000 characters", ErrInvalid)
	}
	if !ValidID(id) {
		return Enrollment{}, fmt.Errorf("retire: %w: enrollment %q", ErrNotFound, id)
	}
	now := s.now()
	ev := actor.event(now, "enrollment.retire", "enrollment", id, reason)
	e, err := s.store.Retire(ctx, id, actor.Name, reason, now, ev)
	if err != nil {
		return Enrollment{}, fmt.Errorf("retire: %w", err)
	}
	if n, ok := s.notifier.(RetireNotifier); ok {
		n.Retired(e, reason)
	}
	return e, nil
}

func attestationWord(a Attestation) string {
	if a.Status == AttestNotAsked {
		return "not asked"
	}
	return string(a.Status)
}

// ownEnrollment reports whether the person behind actor is the user the
// enrollment was made for.
func ownEnrollment(actor Actor, e Enrollment) bool {
	return actor.Email != "" && strings.EqualFold(strings.TrimSpace(actor.Email), e.UserEmail)
}

// Get returns one enrollment.
func (s *Enrollments) Get(ctx context.Context, id string) (Enrollment, error) {
	if !ValidID(id) {
		return Enrollment{}, fmt.Errorf("enrollment: %w: %q", ErrNotFound, id)
	}
	return s.store.Enrollment(ctx, id)
}

// Resolve finds the current enrollment of a device named by its reserved
// ID or by its UDID.
func (s *Enrollments) Resolve(ctx context.Context, device string) (Enrollment, error) {
	if ValidID(device) {
		e, err := s.store.Enrollment(ctx, device)
		if err == nil || !errors.Is(err, ErrNotFound) {
			return e, err
		}
	}
	// The console shows the first 8 characters of an ID: any unique
	// prefix that long names the enrollment.
	if len(device) >= 8 && len(device) < 36 && isIDPrefix(device) {
		ids, err := s.store.EnrollmentIDsWithPrefix(ctx, strings.ToLower(device), 2)
		if err != nil {
			return Enrollment{}, err
		}
		switch len(ids) {
		case 1:
			return s.store.Enrollment(ctx, ids[0])
		case 2:
			return Enrollment{}, fmt.Errorf("%w: %q is the start of more than one enrollment ID; give more of it", ErrConflict, device)
		}
	}
	e, err := s.store.EnrollmentByUDID(ctx, device)
	if errors.Is(err, ErrNotFound) {
		return Enrollment{}, fmt.Errorf("%w: no enrollment has the ID or UDID %q (see `enrollments list`)", ErrNotFound, device)
	}
	return e, err
}

// ResolveEach is Resolve for many devices, in their order. Enrollment IDs,
// what a fleet-wide request mostly names, are read in one query; anything
// else is resolved one by one.
func (s *Enrollments) ResolveEach(ctx context.Context, devices []string) ([]Enrollment, error) {
	var ids []string
	for _, d := range devices {
		if ValidID(d) {
			ids = append(ids, d)
		}
	}
	byID, err := s.store.EnrollmentsByID(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("resolve devices: %w", err)
	}
	out := make([]Enrollment, len(devices))
	for i, d := range devices {
		if e, ok := byID[d]; ok {
			out[i] = e
			continue
		}
		if out[i], err = s.Resolve(ctx, d); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// isIDPrefix reports whether s could start a UUID.
func isIDPrefix(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '-') {
			return false
		}
	}
	return true
}

// List returns enrollments newest first.
func (s *Enrollments) List(ctx context.Context, f EnrollmentFilter) ([]Enrollment, error) {
	return s.store.ListEnrollments(ctx, f)
}

// TokenUpdate records how to wake the device. Pending devices too, so that
// approval can push to them at once.
func (s *Enrollments) TokenUpdate(ctx context.Context, id string, p PushInfo) error {
	if p.Token == "" || p.Magic == "" || p.Topic == "" {
		return fmt.Errorf("token update: %w: token, push magic and topic are required", ErrInvalid)
	}
	return s.store.UpdatePushInfo(ctx, id, p, s.now())
}

// CheckOut records that the device removed its MDM profile.
func (s *Enrollments) CheckOut(ctx context.Context, e Enrollment, remoteIP string) error {
	now := s.now()
	ev := AuditEvent{At: now, Actor: "device:" + e.Facts.UDID, Action: "enrollment.checkout", TargetType: "enrollment",
		TargetID: e.ID, RemoteIP: remoteIP, Outcome: OutcomeOK}
	return s.store.MarkUnenrolled(ctx, e.ID, now, ev)
}

// seenPrecision is how stale last_seen_at may be: recording every check-in
// would make each idle check-in a database write.
const seenPrecision = time.Minute

// Seen records that the device of enrollment id checked in, at most once
// a minute; lastSeen is when it was last recorded.
func (s *Enrollments) Seen(ctx context.Context, id string, lastSeen *time.Time) error {
	now := s.now()
	if lastSeen != nil && now.Sub(*lastSeen) < seenPrecision {
		return nil
	}
	return s.store.Touch(ctx, id, now)
}
