package enrollment

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// memStore is an in-memory EnrollmentStore for the rule tests: each method
// does under one mutex what the SQL store does in one transaction, and
// calls the same rule functions (JudgeClaimMiss, ClassifyClaim,
// Superseded), so these tests exercise the rules, not a copy of them. The
// storage conformance suite (store/storetest) holds the SQL store to the
// same behaviour on SQLite and PostgreSQL.
type memStore struct {
	mu           sync.Mutex
	reservations map[string]*memReservation
	enrollments  map[string]*Enrollment
	emails       map[string]string // user ID → e-mail
	revoked      map[string]string // enrollment ID → why its certificates were revoked
	commands     map[string][]NewCommand
	pushes       map[string]int
	audit        []AuditEvent
	touched      int
	questions    []NewCommand
	// batches counts DecideMany's transactions; refused, those it refused
	// whole, as the real store refuses a batch holding two enrollments
	// of one device and owner.
	batches, refused int
}

type memReservation struct {
	userID      string
	state       ReservationState
	nonce       string
	claimedUDID string
	expires     time.Time
	attempts    int
}

func newMemStore() *memStore {
	return &memStore{reservations: map[string]*memReservation{}, enrollments: map[string]*Enrollment{}, emails: map[string]string{},
		revoked: map[string]string{}, commands: map[string][]NewCommand{}, pushes: map[string]int{}}
}

func (m *memStore) ClaimReservation(_ context.Context, resID, nonce string, e Enrollment, now time.Time, ev AuditEvent, q *Question) (ClaimResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.reservations[resID]
	if !ok {
		return ClaimResult{}, fmt.Errorf("reservation %s: %w", resID, ErrNotFound)
	}
	if r.state == ReservationOpen && r.nonce == nonce && now.Before(r.expires) {
		r.state, r.claimedUDID = ReservationClaimed, e.Facts.UDID
		lin := ClassifyClaim(r.userID, m.earlier(e.Facts.UDID, e.Facts.Serial))
		e.UserID, e.UserEmail, e.State = r.userID, m.emails[r.userID], StatePending
		e.PreviousID, e.ReEnrollment, e.ConflictID = lin.PreviousID, lin.ReEnrollment(), lin.ConflictID
		m.enrollments[resID] = &e
		m.audit = append(m.audit, ev)
		m.ask(resID, q)
		return ClaimResult{Enrollment: *m.enrollments[resID]}, nil
	}
	miss := JudgeClaimMiss(ClaimSnapshot{State: r.state, TokenNonce: r.nonce, ClaimedUDID: r.claimedUDID, ExpiresAt: r.expires}, nonce, e.Facts.UDID)
	switch miss {
	case MissRetry:
		m.ask(resID, q)
		return ClaimResult{Enrollment: *m.enrollments[resID], Retry: true}, nil
	case MissClaimedByAnother:
		r.attempts++
	}
	return ClaimResult{}, fmt.Errorf("claim %s: %w", resID, miss.Err())
}

// ask stores and queues q unless the enrollment was asked already; m.mu
// is held.
func (m *memStore) ask(id string, q *Question) {
	e := m.enrollments[id]
	if q == nil || e.Attestation.Status != AttestNotAsked {
		return
	}
	e.AttestNonce, e.AttestCommand, e.Attestation = q.NonceHex, q.Command.UUID, Attestation{Status: AttestAsked}
	m.questions = append(m.questions, q.Command)
	m.audit = append(m.audit, q.Event)
}

func (m *memStore) earlier(udid, serial string) []Earlier {
	var out []Earlier
	for _, x := range m.enrollments {
		if x.Facts.UDID == udid || serial != "" && x.Facts.Serial == serial {
			out = append(out, Earlier{ID: x.ID, UserID: x.UserID, State: x.State, CreatedAt: x.CreatedAt})
		}
	}
	return out
}

func (m *memStore) Enrollment(_ context.Context, id string) (Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enrollments[id]
	if !ok {
		return Enrollment{}, fmt.Errorf("enrollment %s: %w", id, ErrNotFound)
	}
	return *e, nil
}

func (m *memStore) EnrollmentsByID(_ context.Context, ids []string) (map[string]Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Enrollment{}
	for _, id := range ids {
		if e, ok := m.enrollments[id]; ok {
			out[id] = *e
		}
	}
	return out, nil
}

func (m *memStore) EnrollmentByUDID(_ context.Context, udid string) (Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var newest *Enrollment
	for _, e := range m.enrollments {
		if e.Facts.UDID == udid && (newest == nil || e.CreatedAt.After(newest.CreatedAt)) {
			newest = e
		}
	}
	if newest == nil {
		return Enrollment{}, ErrNotFound
	}
	return *newest, nil
}

func (m *memStore) ListEnrollments(_ context.Context, f EnrollmentFilter) ([]Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Enrollment
	for _, e := range m.enrollments {
		if f.State == "" || e.State == f.State {
			out = append(out, *e)
		}
	}
	return out, nil
}

func (m *memStore) Decide(_ context.Context, id string, from, to State, by, note string, at time.Time, eff Effects, ev AuditEvent) (Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enrollments[id]
	if !ok {
		return Enrollment{}, ErrNotFound
	}
	if e.State != from {
		return Enrollment{}, fmt.Errorf("decide: %w: enrollment %s is already %s", ErrConflict, id, e.State)
	}
	e.State, e.DecidedAt, e.DecidedBy, e.DecisionNote = to, &at, by, note
	if eff.Supersede {
		for _, old := range Superseded(e.UserID, e.ID, m.earlier(e.Facts.UDID, e.Facts.Serial)) {
			m.enrollments[old].State = StateSuperseded
			m.revoked[old] = "superseded by " + id
		}
	}
	m.commands[id] = append(m.commands[id], eff.Commands...)
	if eff.Push {
		m.pushes[id]++
	}
	if eff.RevokeCertificates != "" {
		m.revoked[id] = eff.RevokeCertificates
	}
	m.audit = append(m.audit, ev)
	return *e, nil
}

func (m *memStore) DecideMany(ctx context.Context, from, to State, by, note string, at time.Time, ds []Decision) ([]DecisionResult, error) {
	m.mu.Lock()
	m.batches++
	for _, d := range ds {
		e, ok := m.enrollments[d.ID]
		if !ok || !d.Effects.Supersede {
			continue
		}
		for _, other := range Superseded(e.UserID, e.ID, m.earlier(e.Facts.UDID, e.Facts.Serial)) {
			if slices.ContainsFunc(ds, func(o Decision) bool { return o.ID == other }) {
				m.refused++
				m.mu.Unlock()
				return nil, fmt.Errorf("decide: %w: enrollments %s and %s are of one device and owner", ErrConflict, e.ID, other)
			}
		}
	}
	m.mu.Unlock()
	out := make([]DecisionResult, len(ds))
	for i, d := range ds {
		out[i].Enrollment, out[i].Err = m.Decide(ctx, d.ID, from, to, by, note, at, d.Effects, d.Event)
	}
	return out, nil
}

func (m *memStore) UpdatePushInfo(_ context.Context, id string, p PushInfo, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enrollments[id]
	if !ok {
		return ErrNotFound
	}
	e.PushToken, e.PushMagic, e.PushTopic = p.Token, p.Magic, p.Topic
	return nil
}

func (m *memStore) MarkUnenrolled(_ context.Context, id string, at time.Time, ev AuditEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.enrollments[id].State = StateUnenrolled
	m.revoked[id] = "checked out"
	m.audit = append(m.audit, ev)
	return nil
}

func (m *memStore) Touch(_ context.Context, id string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.touched++
	m.enrollments[id].LastSeenAt = &at
	return nil
}

func (m *memStore) AppendAudit(_ context.Context, ev AuditEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.audit = append(m.audit, ev)
	return nil
}

func (m *memStore) MarkSuspicious(_ context.Context, id string, at time.Time, ev AuditEvent) (Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.enrollments[id]
	e.Suspicious = true
	if e.State == StatePending {
		e.State, e.DecidedAt, e.DecidedBy, e.DecisionNote = StateDenied, &at, ev.Actor, "the owner says this was not them"
		m.revoked[id] = "owner reported it"
	}
	m.audit = append(m.audit, ev)
	return *e, nil
}

func (m *memStore) Retire(_ context.Context, id, by, note string, at time.Time, ev AuditEvent) (Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enrollments[id]
	if !ok {
		return Enrollment{}, ErrNotFound
	}
	if !active(e.State) {
		return Enrollment{}, fmt.Errorf("retire: %w: enrollment %s is %s", ErrConflict, id, e.State)
	}
	e.State, e.DecidedAt, e.DecidedBy, e.DecisionNote = StateSuperseded, &at, by, note
	m.revoked[id] = "retired: " + note
	m.audit = append(m.audit, ev)
	return *e, nil
}

// auditActions lists the actions of the audit rows, in order.
func (m *memStore) auditActions() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, ev := range m.audit {
		out = append(out, ev.Action+":"+ev.Outcome)
	}
	return out
}

func (m *memStore) hasAudit(action, outcome string) bool {
	return slices.Contains(m.auditActions(), action+":"+outcome)
}

func (m *memStore) RecordAttestation(_ context.Context, id, nonceHex string, a Attestation, ev AuditEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.enrollments[id]
	if e.Attestation.Status != AttestAsked || e.AttestNonce != nonceHex {
		return ErrConflict
	}
	e.Attestation = a
	m.audit = append(m.audit, ev)
	return nil
}

func (m *memStore) snapshot(id string) Enrollment {
	m.mu.Lock()
	defer m.mu.Unlock()
	return *m.enrollments[id]
}

func (m *memStore) EnrollmentIDsWithPrefix(_ context.Context, prefix string, limit int) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ids []string
	for id := range m.enrollments {
		if strings.HasPrefix(id, prefix) && len(ids) < limit {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
