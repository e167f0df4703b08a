package enrollment

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"
)

// AuditEvent is one line of the audit log: who did what to which record,
// from where, and how it ended. Detail never carries a secret, token or
// challenge.
type AuditEvent struct {
	ID         string    `json:"id"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
	Action     string    `json:"action"`
	TargetType string    `json:"target_type"`
	TargetID   string    `json:"target_id"`
	RemoteIP   string    `json:"remote_ip"`
	Outcome    string    `json:"outcome"`
	Detail     string    `json:"detail"`
}

// Audit outcomes.
const (
	OutcomeOK      = "ok"
	OutcomeRefused = "refused"
)

// Actor is who asks for a change: "user:EMAIL", "cli:NAME", "api:TOKEN-NAME",
// "device:UDID", and the address the request came from.
type Actor struct {
	Name     string
	RemoteIP string
	// Email is the person behind the action, when known: the console's
	// signed-in user, the user who created an API token, or the e-mail the
	// command line was told with --as. Nobody approves an enrollment made
	// in their own name.
	Email string
	// SelfApproval lets Email approve an enrollment of their own. Only the
	// command line sets it, from an explicit flag; the approval is audited
	// as enrollment.self_approve.
	SelfApproval bool
	// Admin: the person behind the action has the admin role, which may
	// override a stricter approval policy with a written reason.
	Admin bool
}

func (a Actor) event(at time.Time, action, targetType, targetID, detail string) AuditEvent {
	return AuditEvent{At: at, Actor: a.Name, Action: action, TargetType: targetType, TargetID: targetID, RemoteIP: a.RemoteIP, Outcome: OutcomeOK, Detail: detail}
}

// AuditFilter narrows an audit listing; zero fields match everything.
type AuditFilter struct {
	Actor      string
	Action     string
	TargetType string
	TargetID   string
	Since      time.Time
	Until      time.Time
	Limit      int
}

// AuditLog records events that are not part of another change, such as a
// refused request.
type AuditLog interface {
	AppendAudit(ctx context.Context, ev AuditEvent) error
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)
}

// Bounds of what one audit row stores, whatever the request carried.
const (
	maxAuditShort  = 256
	maxAuditDetail = 2000
)

// Bounded returns ev with every field cut to what the audit log stores: a
// request cannot make a row large (the review saw 60 KB Content-Types).
func (ev AuditEvent) Bounded() AuditEvent {
	ev.Actor = cut(ev.Actor, maxAuditShort)
	ev.Action = cut(ev.Action, maxAuditShort)
	ev.TargetType = cut(ev.TargetType, maxAuditShort)
	ev.TargetID = cut(ev.TargetID, maxAuditShort)
	ev.RemoteIP = cut(ev.RemoteIP, 64)
	ev.Outcome = cut(ev.Outcome, 32)
	ev.Detail = cut(ev.Detail, maxAuditDetail)
	return ev
}

// cut shortens s to at most n bytes of valid UTF-8, on a character
// boundary, marking the cut.
func cut(s string, n int) string {
	// Invalid bytes go first: PostgreSQL refuses them in text columns.
	s = strings.ToValidUTF8(s, "\ufffd")
	if len(s) <= n {
		return s
	}
	i := n - len("…")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
