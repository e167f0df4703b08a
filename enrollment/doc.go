// Package enrollment owns the enrollment domain: reservations, enrollment
// tokens, the enrollment state machine, approvals and the audit trail.
//
// It declares the small interfaces it needs (Signer, stores) and is
// implemented against them; it never imports a transport, a store or a key
// backend.
package enrollment
