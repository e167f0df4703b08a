package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

type commandRow struct {
	ID           string        `db:"id"`
	EnrollmentID string        `db:"enrollment_id"`
	Seq          int64         `db:"seq"`
	RequestType  string        `db:"request_type"`
	Body         string        `db:"body"`
	Status       string        `db:"status"`
	CreatedAt    int64         `db:"created_at"`
	CreatedBy    string        `db:"created_by"`
	SentAt       sql.NullInt64 `db:"sent_at"`
	ResultAt     sql.NullInt64 `db:"result_at"`
	Result       string        `db:"result"`
	NotNowCount  int           `db:"not_now_count"`
	PreApproval  bool          `db:"pre_approval"`
}

func (r commandRow) command() enrollment.Command {
	return enrollment.Command{UUID: r.ID, EnrollmentID: r.EnrollmentID, Seq: r.Seq, RequestType: r.RequestType, Body: []byte(r.Body),
		Status: enrollment.CommandStatus(r.Status), CreatedAt: fromMS(r.CreatedAt), CreatedBy: r.CreatedBy, SentAt: fromNullMS(r.SentAt),
		ResultAt: fromNullMS(r.ResultAt), Result: r.Result, NotNowCount: r.NotNowCount}
}

// EnqueueCommands appends commands to an enrollment's queue.
func (s *Store) EnqueueCommands(ctx context.Context, enrollmentID string, cmds []enrollment.NewCommand, by string, at time.Time,
	ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx *sqlx.Tx) error {
		return enqueueAndWake(ctx, tx, enrollmentID, cmds, by, at, ev)
	})
}

// EnqueueFleet queues one command for each of many enrollments in one
// transaction: all of them or none.
func (s *Store) EnqueueFleet(ctx context.Context, items []enrollment.FleetCommand, by string, at time.Time) error {
	// One order for every such transaction, so two of them over the same
	// devices wait for each other instead of deadlocking on PostgreSQL.
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, func(a, b enrollment.FleetCommand) int { return strings.Compare(a.EnrollmentID, b.EnrollmentID) })
	// An approval superseding rows in another order can still deadlock
	// with it; run again, the transaction sees the approval's outcome.
	for attempt := 1; ; attempt++ {
		err := s.inTx(ctx, func(tx *sqlx.Tx) error {
			for _, it := range sorted {
				if err := enqueueAndWake(ctx, tx, it.EnrollmentID, []enrollment.NewCommand{it.Command}, by, at, it.Event); err != nil {
					return err
				}
			}
			return nil
		})
		if !isDeadlock(err) || attempt == 3 {
			return err
		}
	}
}

// enqueueAndWake queues commands, asks for a push when the device is
// approved and records the audit event.
func enqueueAndWake(ctx context.Context, tx *sqlx.Tx, enrollmentID string, cmds []enrollment.NewCommand, by string, at time.Time,
	ev enrollment.AuditEvent) error {
	if err := enqueue(ctx, tx, enrollmentID, cmds, by, at); err != nil {
		return err
	}
	var state string
	if err := tx.GetContext(ctx, &state, tx.Rebind(`SELECT state FROM enrollments WHERE id = ?`), enrollmentID); err != nil {
		return err
	}
	// A pending device would get nothing from waking up.
	if state == string(enrollment.StateApproved) {
		if err := enqueuePush(ctx, tx, enrollmentID, at); err != nil {
			return err
		}
	}
	return appendAudit(ctx, tx, ev)
}

func enqueue(ctx context.Context, tx *sqlx.Tx, enrollmentID string, cmds []enrollment.NewCommand, by string, at time.Time) error {
	return enqueueAs(ctx, tx, enrollmentID, cmds, by, at, false)
}

// enqueueAs appends commands; preApproval marks the attestation question.
func enqueueAs(ctx context.Context, tx *sqlx.Tx, enrollmentID string, cmds []enrollment.NewCommand, by string, at time.Time, preApproval bool) error {
	if len(cmds) == 0 {
		return nil
	}
	// Touching the enrollment row first serializes enqueuers on PostgreSQL,
	// so two of them cannot pick the same next seq.
	res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET updated_at = ? WHERE id = ?`), ms(at), enrollmentID)
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("enqueue: enrollment %s: %w", enrollmentID, enrollment.ErrNotFound)
	}
	var seq int64
	if err := tx.GetContext(ctx, &seq, tx.Rebind(`SELECT COALESCE(MAX(seq), 0) FROM commands WHERE enrollment_id = ?`), enrollmentID); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	for _, c := range cmds {
		seq++
		_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO commands (id, enrollment_id, seq, request_type, body, status, created_at, created_by, pre_approval)
			VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)`), c.UUID, enrollmentID, seq, c.RequestType, string(c.Body), ms(at), by, boolInt(preApproval))
		if err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("enqueue: %w: command %s exists", enrollment.ErrConflict, c.UUID)
			}
			return fmt.Errorf("enqueue: %w", err)
		}
	}
	return nil
}

// RecordResult stores the device's answer to a command it was sent; a
// result for a command not in flight changes nothing.
func (s *Store) RecordResult(ctx context.Context, enrollmentID, uuid string, status enrollment.CommandStatus, result []byte, at time.Time) error {
	notNow := 0
	if status == enrollment.CommandNotNow {
		notNow = 1
	}
	res, err := s.db.ExecContext(ctx, s.db.Rebind(`UPDATE commands SET status = ?, result = ?, result_at = ?, not_now_count = not_now_count + ?
		WHERE enrollment_id = ? AND id = ? AND status = 'sent'`), string(status), string(result), ms(at), notNow, enrollmentID, uuid)
	if err != nil {
		return fmt.Errorf("record result: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("record result: command %s is not in flight for %s: %w", uuid, enrollmentID, enrollment.ErrNotFound)
	}
	return nil
}

// NextCommand picks the first command still owed to the device, in queue
// order, and marks it sent. A command sent but never answered (a lost
// reply) is owed again.
func (s *Store) NextCommand(ctx context.Context, enrollmentID string, includeNotNow bool, at time.Time) (enrollment.Command, error) {
	statuses := `('queued', 'sent')`
	if includeNotNow {
		statuses = `('queued', 'sent', 'not_now')`
	}
	return s.next(ctx, enrollmentID, `SELECT * FROM commands WHERE enrollment_id = ? AND status IN `+statuses+` ORDER BY seq LIMIT 1`, at)
}

// NextQuestion is NextCommand restricted to the pre-approval question:
// the only command a pending device may receive. A question the device
// deferred (NotNow) is asked again only in a new session (after Idle).
func (s *Store) NextQuestion(ctx context.Context, enrollmentID string, includeNotNow bool, at time.Time) (enrollment.Command, error) {
	statuses := `('queued', 'sent')`
	if includeNotNow {
		statuses = `('queued', 'sent', 'not_now')`
	}
	return s.next(ctx, enrollmentID, `SELECT * FROM commands WHERE enrollment_id = ? AND pre_approval <> 0
		AND status IN `+statuses+` ORDER BY seq LIMIT 1`, at)
}

// next marks the command query finds as sent and returns it.
func (s *Store) next(ctx context.Context, enrollmentID, query string, at time.Time) (enrollment.Command, error) {
	var out enrollment.Command
	// Most check-ins find nothing to do: answer those with a read, without
	// the write lock a transaction takes on SQLite.
	var probe commandRow
	if err := s.getPrepared(ctx, &probe, query, enrollmentID); err != nil {
		return enrollment.Command{}, fmt.Errorf("next command: %w", notFound(err))
	}
	err := s.inTx(ctx, func(tx *sqlx.Tx) error {
		var r commandRow
		if err := tx.GetContext(ctx, &r, tx.Rebind(query), enrollmentID); err != nil {
			return fmt.Errorf("next command: %w", notFound(err))
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE commands SET status = 'sent', sent_at = ? WHERE id = ?`), ms(at), r.ID); err != nil {
			return fmt.Errorf("next command: %w", err)
		}
		r.Status, r.SentAt = string(enrollment.CommandSent), sql.NullInt64{Int64: ms(at), Valid: true}
		out = r.command()
		return nil
	})
	return out, err
}

// ListCommands returns an enrollment's commands in queue order.
func (s *Store) ListCommands(ctx context.Context, enrollmentID string) ([]enrollment.Command, error) {
	var rows []commandRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT * FROM commands WHERE enrollment_id = ? ORDER BY seq`), enrollmentID); err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	out := make([]enrollment.Command, len(rows))
	for i, r := range rows {
		out[i] = r.command()
	}
	return out, nil
}
