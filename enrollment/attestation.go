package enrollment

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vestibule-mdm/vestibule/attest"
)

// AttestationStatus is what became of the attestation question.
type AttestationStatus string

// Attestation statuses. Only fresh is attested for this enrollment: a
// cached answer is Apple's word about the hardware, but it was not made for
// this enrollment's nonce, so it could be a chain captured elsewhere and
// replayed; it is shown as attested, not fresh, and counts as unattested
// for approval policy. A mismatch is attested hardware that is not the
// device that claims to be it.
const (
	AttestNotAsked    AttestationStatus = ""
	AttestAsked       AttestationStatus = "asked"
	AttestFresh       AttestationStatus = "fresh"
	AttestCached      AttestationStatus = "cached"
	AttestMismatch    AttestationStatus = "mismatch"
	AttestInvalid     AttestationStatus = "invalid"
	AttestStale       AttestationStatus = "stale"
	AttestRefused     AttestationStatus = "refused"
	AttestUnsupported AttestationStatus = "unsupported"
)

// Attestation is what the hardware vouched for, if anything.
type Attestation struct {
	Status       AttestationStatus `json:"status"`
	Reason       string            `json:"reason,omitempty"`
	Serial       string            `json:"serial,omitempty"`
	UDID         string            `json:"udid,omitempty"`
	OSVersion    string            `json:"os_version,omitempty"`
	SEPOSVersion string            `json:"sepos_version,omitempty"`
	IssuedAt     *time.Time        `json:"issued_at,omitempty"`
	CheckedAt    *time.Time        `json:"checked_at,omitempty"`
}

// Attested reports whether Apple's chain vouched for this very device, for
// this enrollment's nonce.
func (a Attestation) Attested() bool { return a.Status == AttestFresh }

// AttestedNotFresh reports an answer Apple signed for another nonce: the
// right hardware, perhaps, but not proven to have answered now.
func (a Attestation) AttestedNotFresh() bool { return a.Status == AttestCached }

// bounded cuts what the device's claims and Apple's extensions put into
// the result to what is stored, on UTF-8 boundaries (the reason quotes the
// device's claimed serial and UDID).
func (a Attestation) bounded() Attestation {
	a.Reason = cut(a.Reason, 500)
	a.Serial, a.UDID = cut(a.Serial, 64), cut(a.UDID, 64)
	a.OSVersion, a.SEPOSVersion = cut(a.OSVersion, 32), cut(a.SEPOSVersion, 32)
	return a
}

// Questioner builds the one question a pending device may receive.
type Questioner interface {
	AttestationQuestion(nonce []byte) (NewCommand, error)
}

// AttestationVerifier checks an attestation chain against a nonce.
type AttestationVerifier interface {
	Verify(chain [][]byte, nonce []byte) (attest.Result, error)
}

// AttestationAnswer is what a device said to the question: its report's
// status and, when it answered, the chain.
type AttestationAnswer struct {
	Status   string // the report's: Acknowledged or Error
	Answered bool
	Chain    [][]byte
	RemoteIP string
	// CommandUUID is the command the report answers: only the question's
	// counts.
	CommandUUID string
}

// SetAttestation makes the gate ask every new enrollment for Managed
// Device Attestation and verify the answers. With require, an enrollment
// that is not attested cannot be approved, except by an admin with a
// written reason.
func (s *Enrollments) SetAttestation(q Questioner, v AttestationVerifier, require bool) {
	s.questions, s.verifier, s.requireAttestation = q, v, require
}

// Question is the attestation question a new enrollment is asked: the
// store queues it in the transaction that creates the enrollment (or, for
// a retried claim whose question was never queued, in the retry's), and
// only while the enrollment has not been asked.
type Question struct {
	NonceHex string
	Command  NewCommand
	Event    AuditEvent
}

// question makes the attestation question for enrollment id with a fresh
// 32-byte nonce; nil when this gate asks none.
func (s *Enrollments) question(id string, now time.Time) (*Question, error) {
	if s.questions == nil {
		return nil, nil
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	cmd, err := s.questions.AttestationQuestion(nonce)
	if err != nil {
		return nil, fmt.Errorf("attestation question: %w", err)
	}
	ev := AuditEvent{At: now, Actor: "vestibule", Action: "enrollment.attest_ask", TargetType: "enrollment", TargetID: id, Outcome: OutcomeOK,
		Detail: "DeviceInformation with DevicePropertiesAttestation, command " + cmd.UUID}
	return &Question{NonceHex: hex.EncodeToString(nonce), Command: cmd, Event: ev}, nil
}

// Attest judges a device's answer to the attestation question: the chain
// must verify to Apple's root and the attested serial and UDID must be the
// ones the device claimed. Every result is stored and audited; none makes
// a device approved.
func (s *Enrollments) Attest(ctx context.Context, e Enrollment, a AttestationAnswer) (Enrollment, error) {
	// Only the answer to this enrollment's open question counts, once.
	if s.verifier == nil || e.Attestation.Status != AttestAsked || a.CommandUUID == "" || a.CommandUUID != e.AttestCommand {
		return e, nil
	}
	nonce, err := hex.DecodeString(e.AttestNonce)
	if err != nil {
		return e, fmt.Errorf("attest: stored nonce: %w", err)
	}
	now := s.now()
	att := JudgeAttestation(s.verifier, a, nonce, e.Facts).bounded()
	att.CheckedAt = &now
	outcome := OutcomeOK
	if !att.Attested() {
		outcome = OutcomeRefused
	}
	detail := string(att.Status)
	if att.Reason != "" {
		detail += ": " + att.Reason
	}
	if att.Serial != "" {
		detail += fmt.Sprintf(" attested serial=%s udid=%s os=%s", att.Serial, att.UDID, att.OSVersion)
	}
	ev := AuditEvent{At: now, Actor: "device:" + e.Facts.UDID, Action: "enrollment.attest", TargetType: "enrollment", TargetID: e.ID,
		RemoteIP: a.RemoteIP, Outcome: outcome, Detail: detail}
	if err := s.store.RecordAttestation(ctx, e.ID, e.AttestNonce, att, ev); err != nil {
		if errors.Is(err, ErrConflict) {
			// Another answer was judged first; the verdict stands.
			return s.store.Enrollment(ctx, e.ID)
		}
		return e, fmt.Errorf("attest: %w", err)
	}
	e.Attestation = att
	return e, nil
}

// JudgeAttestation turns an answer into an attestation result: refused,
// unsupported, invalid, stale, a mismatch with the claimed facts, or
// attested (fresh or cached).
func JudgeAttestation(v AttestationVerifier, a AttestationAnswer, nonce []byte, claimed DeviceFacts) Attestation {
	switch {
	case a.Status != "Acknowledged":
		return Attestation{Status: AttestRefused, Reason: "the device answered " + a.Status}
	case !a.Answered:
		return Attestation{Status: AttestUnsupported, Reason: "no attestation in the answer: OS too old (iOS 16, macOS 14 on Apple silicon or T2 needed) or not supported"}
	}
	r, err := v.Verify(a.Chain, nonce)
	switch {
	case errors.Is(err, attest.ErrStale):
		return Attestation{Status: AttestStale, Reason: err.Error()}
	case err != nil:
		return Attestation{Status: AttestInvalid, Reason: err.Error()}
	}
	att := Attestation{Status: AttestFresh, Serial: r.Serial, UDID: r.UDID, OSVersion: r.OSVersion, SEPOSVersion: r.SEPOSVersion,
		IssuedAt: &r.IssuedAt}
	if !r.Fresh {
		att.Status, att.Reason = AttestCached, "attested, not fresh: made for another nonce (cached by the device, or replayed)"
	}
	var diffs []string
	if !strings.EqualFold(r.Serial, claimed.Serial) {
		diffs = append(diffs, fmt.Sprintf("serial: claimed %q, attested %q", claimed.Serial, r.Serial))
	}
	if !strings.EqualFold(r.UDID, claimed.UDID) {
		diffs = append(diffs, fmt.Sprintf("UDID: claimed %q, attested %q", claimed.UDID, r.UDID))
	}
	if len(diffs) > 0 {
		att.Status, att.Reason = AttestMismatch, strings.Join(diffs, "; ")
	}
	return att
}
