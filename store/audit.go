package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

type auditRow struct {
	ID         string `db:"id"`
	At         int64  `db:"at"`
	Actor      string `db:"actor"`
	Action     string `db:"action"`
	TargetType string `db:"target_type"`
	TargetID   string `db:"target_id"`
	RemoteIP   string `db:"remote_ip"`
	Outcome    string `db:"outcome"`
	Detail     string `db:"detail"`
}

func appendAudit(ctx context.Context, ext execer, ev enrollment.AuditEvent) error {
	if err := insertAudits(ctx, ext, []enrollment.AuditEvent{ev}); err != nil {
		return fmt.Errorf("append audit %s: %w", ev.Action, err)
	}
	return nil
}

// appendAudits records many events in one statement.
func appendAudits(ctx context.Context, tx txn, evs []enrollment.AuditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	if err := insertAudits(ctx, tx, evs); err != nil {
		return fmt.Errorf("append %d audit events: %w", len(evs), err)
	}
	return nil
}

// insertAudits writes events positionally, not through sqlx's named
// queries, which would parse the query and map the struct by reflection
// on every audited action.
func insertAudits(ctx context.Context, ext execer, evs []enrollment.AuditEvent) error {
	args := make([]any, 0, 9*len(evs))
	for _, ev := range evs {
		r, err := newAuditRow(ev)
		if err != nil {
			return err
		}
		args = append(args, r.ID, r.At, r.Actor, r.Action, r.TargetType, r.TargetID, r.RemoteIP, r.Outcome, r.Detail)
	}
	_, err := ext.ExecContext(ctx, ext.Rebind(`INSERT INTO audit_log (id, at, actor, action, target_type, target_id, remote_ip, outcome, detail)
		VALUES `+repeatRows("(?, ?, ?, ?, ?, ?, ?, ?, ?)", len(evs))), args...)
	return err
}

// newAuditRow gives an event its ID and bounds its fields.
func newAuditRow(ev enrollment.AuditEvent) (auditRow, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return auditRow{}, fmt.Errorf("audit id: %w", err)
	}
	if ev.Outcome == "" {
		ev.Outcome = enrollment.OutcomeOK
	}
	ev = ev.Bounded()
	return auditRow{ID: id.String(), At: ms(ev.At), Actor: ev.Actor, Action: ev.Action, TargetType: ev.TargetType,
		TargetID: ev.TargetID, RemoteIP: ev.RemoteIP, Outcome: ev.Outcome, Detail: ev.Detail}, nil
}

// AppendAudit records one event on its own.
func (s *Store) AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error {
	if ev.At.IsZero() {
		ev.At = s.now()
	}
	return s.withWriter(ctx, func(w writer) error { return appendAudit(ctx, w, ev) })
}

// auditListQuery selects the events f asks for, newest first; a filter by
// actor or by target has an index ending in id (migration 00019).
func auditListQuery(f enrollment.AuditFilter) (string, []any) {
	var where []string
	var args []any
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if f.Actor != "" {
		add("actor = ?", f.Actor)
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if f.TargetType != "" {
		add("target_type = ?", f.TargetType)
	}
	if f.TargetID != "" {
		add("target_id = ?", f.TargetID)
	}
	if !f.Since.IsZero() {
		add("at >= ?", ms(f.Since))
	}
	if !f.Until.IsZero() {
		add("at < ?", ms(f.Until))
	}
	limit := f.Limit
	if limit <= 0 || limit > 10_000 {
		limit = 1000
	}
	q := "SELECT * FROM audit_log"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return q + fmt.Sprintf(" ORDER BY id DESC LIMIT %d", limit), args
}

// ListAudit returns events newest first.
func (s *Store) ListAudit(ctx context.Context, f enrollment.AuditFilter) ([]enrollment.AuditEvent, error) {
	q, args := auditListQuery(f)
	var rows []auditRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	out := make([]enrollment.AuditEvent, len(rows))
	for i, r := range rows {
		out[i] = enrollment.AuditEvent{ID: r.ID, At: fromMS(r.At), Actor: r.Actor, Action: r.Action, TargetType: r.TargetType,
			TargetID: r.TargetID, RemoteIP: r.RemoteIP, Outcome: r.Outcome, Detail: r.Detail}
	}
	return out, nil
}
