package enrollment

import (
	"fmt"
	"time"
)

// This file holds the ceremony's decisions as pure functions. The store
// runs them inside its transactions, next to the conditional UPDATEs that
// make claims and decisions race-free; the in-memory store of this
// package's tests runs the same functions.

// ClaimSnapshot is what the claim rule reads of a reservation whose
// conditional claim touched no row.
type ClaimSnapshot struct {
	State       ReservationState
	TokenNonce  string
	ClaimedUDID string
	ExpiresAt   time.Time
}

// ClaimMiss is why a token could not claim its reservation outright.
type ClaimMiss int

// Claim misses.
const (
	// MissRetry: the same device claimed it before (a retried
	// Authenticate); it gets its enrollment back.
	MissRetry ClaimMiss = iota + 1
	// MissClaimedByAnother: another device holds the token; the attempt is
	// counted on the reservation for admins to see.
	MissClaimedByAnother
	// MissSuperseded: a newer download replaced the token.
	MissSuperseded
	// MissNotOpen: revoked, expired, or not claimable for another reason.
	MissNotOpen
)

// JudgeClaimMiss says why a claim of the reservation snapshot describes,
// by the token with nonce from device udid, did not go through.
func JudgeClaimMiss(r ClaimSnapshot, nonce, udid string) ClaimMiss {
	switch {
	case r.TokenNonce != nonce:
		return MissSuperseded
	case r.State == ReservationClaimed && r.ClaimedUDID == udid:
		return MissRetry
	case r.State == ReservationClaimed:
		return MissClaimedByAnother
	default:
		return MissNotOpen
	}
}

// Err is the refusal a miss becomes (nil for a retry).
func (m ClaimMiss) Err() error {
	switch m {
	case MissRetry:
		return nil
	case MissClaimedByAnother:
		return ErrTokenClaimed
	case MissSuperseded:
		return ErrTokenSuperseded
	}
	return ErrReservationNotOpen
}

// Effects are what a decision does besides changing the enrollment's
// state, all in the decision's transaction.
type Effects struct {
	// Supersede retires the enrollments enrollment.Superseded names: the
	// same user's earlier pending or approved enrollments of the device.
	Supersede bool
	// Commands are queued for the device, in order.
	Commands []NewCommand
	// Push wakes the device through the push outbox.
	Push bool
	// RevokeCertificates revokes the enrollment's certificates with this
	// reason; empty: none.
	RevokeCertificates string
}

// Transition checks a decision against the enrollment's current state and
// returns the state it must still be in when the decision is written (the
// store's conditional UPDATE) and the operation's name for the audit log.
// Approval and denial take a pending enrollment; denying an approved one
// is a revocation.
func Transition(current, to State) (from State, op string, err error) {
	switch {
	case to == StateApproved && current == StatePending:
		return StatePending, "approve", nil
	case to == StateDenied && current == StatePending:
		return StatePending, "deny", nil
	case to == StateDenied && current == StateApproved:
		return StateApproved, "revoke", nil
	case to == StateApproved:
		return "", "approve", fmt.Errorf("%w: enrollment is %s, not pending", ErrConflict, current)
	case to == StateDenied:
		return "", "deny", fmt.Errorf("%w: enrollment is %s, not pending", ErrConflict, current)
	}
	return "", "decide", fmt.Errorf("%w: no decision leads to %s", ErrInvalid, to)
}

// DecisionEffects are the effects of moving an enrollment to state to:
// approval supersedes, queues the post-approval commands and pushes;
// denial and revocation revoke the certificates.
func DecisionEffects(to State, cmds []NewCommand) Effects {
	switch to {
	case StateApproved:
		return Effects{Supersede: true, Commands: cmds, Push: true}
	case StateDenied:
		return Effects{RevokeCertificates: "enrollment denied"}
	}
	return Effects{}
}
