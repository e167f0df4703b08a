// Package enrollment owns the enrollment domain: reservations, enrollment
// tokens, the enrollment state machine, approvals and the audit trail. It
// decides; the store persists each decision atomically.
//
// The ceremony, top to bottom:
//
//	reserve ─▶ Reservation (open; one-time SCEP challenge, token nonce)
//	   │          a new download replaces the token: the old one is superseded
//	claim  ─▶ Authenticate: the certificate's reservation, the token's MAC,
//	   │          JudgeClaimMiss (retry by the same device / claimed by another /
//	   │          superseded / not open), ClassifyClaim (re-enrollment of the
//	   │          same user, or a conflict with another user's active device)
//	   ▼
//	pending ──approve──▶ approved ──deny──▶ denied (a revocation)
//	   │  │                 │  └──retire──▶ superseded (the device changed hands)
//	   │  │                 └──a same-user re-enrollment is approved──▶ superseded
//	   │  └──deny / "this wasn't me" / owner disabled──▶ denied
//	   └──retire──▶ superseded
//	approved, pending ──CheckOut──▶ unenrolled
//	renew: SCEP renewal only while approved and the owner is enabled
//
// Transition and DecisionEffects say what a decision may start from and
// what it does besides the state change (supersede the same user's earlier
// enrollments, queue the post-approval commands, push, revoke
// certificates); Superseded says which enrollments approval retires, never
// another user's. Nobody approves an enrollment made in their own name
// unless the command line says so explicitly (Actor.SelfApproval).
//
// The package declares the small interfaces it needs (Signer, stores,
// notifiers) and is tested against an in-memory store that runs the same
// rule functions; it never imports a transport, a store or a key backend.
package enrollment
