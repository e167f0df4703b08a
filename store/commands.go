package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

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
	return s.inTx(ctx, func(tx txn) error {
		return enqueueAndWake(ctx, tx, enrollmentID, cmds, by, at, ev)
	})
}

// EnqueueFleet queues one command for each of many enrollments in one
// transaction: all of them or none. It writes each kind of row in a few
// statements, not one per device: one per device held the transaction
// (and SQLite's one writer) for over a second per 500 devices.
func (s *Store) EnqueueFleet(ctx context.Context, items []enrollment.FleetCommand, by string, at time.Time) error {
	// One order (bytewise by ID) for every such transaction: chunks in
	// that order, rows locked in it within a chunk, so two of them over
	// the same devices wait for each other instead of deadlocking on
	// PostgreSQL.
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, func(a, b enrollment.FleetCommand) int { return strings.Compare(a.EnrollmentID, b.EnrollmentID) })
	// An approval superseding rows in another order can still deadlock
	// with it; run again, the transaction finds the superseded row and
	// refuses the request.
	return retryDeadlocks(func() error {
		return s.inTxAlone(ctx, func(tx txn) error { return enqueueFleet(ctx, tx, s.dialect == "postgres", sorted, by, at) })
	})
}

// fleetChunk is the most rows one statement of a fleet command, or of a
// device's commands, names.
const fleetChunk = 64

// powerOfTwoChunks splits items into chunks whose sizes are powers of two,
// the largest first, at most fleetChunk: the statements' text depends on
// the chunk's size, and a handful of sizes keeps the prepared statements
// each connection caches from filling with one variant per size.
func powerOfTwoChunks[T any](items []T) [][]T {
	var out [][]T
	for len(items) > 0 {
		n := fleetChunk
		for n > len(items) {
			n /= 2
		}
		out = append(out, items[:n])
		items = items[n:]
	}
	return out
}

func enqueueFleet(ctx context.Context, tx txn, postgres bool, items []enrollment.FleetCommand, by string, at time.Time) error {
	for _, chunk := range powerOfTwoChunks(items) {
		ids := make([]any, len(chunk))
		for i, it := range chunk {
			ids[i] = it.EnrollmentID
		}
		in := repeatRows("?", len(ids))
		// The rows are locked first, in ID order (an UPDATE with IN locks
		// in the order it scans), and their state read under the lock: the
		// caller checked it earlier, and a device denied or superseded
		// since refuses the request. SQLite's immediate transaction holds
		// the whole database already.
		lock := `SELECT id, state FROM enrollments WHERE id IN (` + in + `)`
		if postgres {
			lock += ` ORDER BY id COLLATE "C" FOR NO KEY UPDATE`
		}
		var locked []struct {
			ID    string `db:"id"`
			State string `db:"state"`
		}
		if err := tx.SelectContext(ctx, &locked, tx.Rebind(lock), ids...); err != nil {
			return fmt.Errorf("enqueue fleet: %w", err)
		}
		state := make(map[string]string, len(locked))
		for _, r := range locked {
			state[r.ID] = r.State
		}
		for _, it := range chunk {
			switch st, ok := state[it.EnrollmentID]; {
			case !ok:
				return fmt.Errorf("enqueue fleet: enrollment %s: %w", it.EnrollmentID, enrollment.ErrNotFound)
			case st != string(enrollment.StatePending) && st != string(enrollment.StateApproved):
				return fmt.Errorf("enqueue fleet: %w: enrollment %s is %s", enrollment.ErrConflict, it.EnrollmentID, st)
			}
		}
		// Touching the rows serializes enqueuers, as enqueue does.
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET updated_at = ? WHERE id IN (`+in+`)`), append([]any{ms(at)}, ids...)...); err != nil {
			return fmt.Errorf("enqueue fleet: %w", err)
		}
		var seqs []struct {
			ID  string `db:"enrollment_id"`
			Seq int64  `db:"seq"`
		}
		if err := tx.SelectContext(ctx, &seqs, tx.Rebind(`SELECT enrollment_id, MAX(seq) AS seq FROM commands
			WHERE enrollment_id IN (`+in+`) GROUP BY enrollment_id`), ids...); err != nil {
			return fmt.Errorf("enqueue fleet: %w", err)
		}
		last := make(map[string]int64, len(seqs))
		for _, r := range seqs {
			last[r.ID] = r.Seq
		}
		rows := make([]queuedCommand, len(chunk))
		for i, it := range chunk {
			rows[i] = queuedCommand{enrollmentID: it.EnrollmentID, seq: last[it.EnrollmentID] + 1, cmd: it.Command}
		}
		if err := insertCommands(ctx, tx, rows, by, at); err != nil {
			return err
		}
		// A pending device would get nothing from waking up; one without a
		// valid push token is left to its next poll.
		var wake []string
		if err := tx.SelectContext(ctx, &wake, tx.Rebind(`SELECT id FROM enrollments WHERE id IN (`+in+`)
			AND state = 'approved' AND push_token <> '' AND push_invalid_at IS NULL`), ids...); err != nil {
			return fmt.Errorf("enqueue fleet: %w", err)
		}
		if err := insertPushes(ctx, tx, wake, at); err != nil {
			return err
		}
		events := make([]enrollment.AuditEvent, len(chunk))
		for i, it := range chunk {
			events[i] = it.Event
		}
		if err := appendAudits(ctx, tx, events); err != nil {
			return err
		}
	}
	return nil
}

// enqueueAndWake queues commands, asks for a push when the device is
// approved and records the audit event.
func enqueueAndWake(ctx context.Context, tx txn, enrollmentID string, cmds []enrollment.NewCommand, by string, at time.Time,
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

func enqueue(ctx context.Context, tx txn, enrollmentID string, cmds []enrollment.NewCommand, by string, at time.Time) error {
	return enqueueAs(ctx, tx, enrollmentID, cmds, by, at, false)
}

// enqueueAs appends commands; preApproval marks the attestation question.
func enqueueAs(ctx context.Context, tx txn, enrollmentID string, cmds []enrollment.NewCommand, by string, at time.Time, preApproval bool) error {
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
	var last int64
	if err := tx.GetContext(ctx, &last, tx.Rebind(`SELECT COALESCE(MAX(seq), 0) FROM commands WHERE enrollment_id = ?`), enrollmentID); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	return enqueueAfter(ctx, tx, enrollmentID, last, cmds, by, at, preApproval)
}

// enqueueAfter inserts commands numbered from last+1, last being the
// enrollment's last seq read under its row's lock.
func enqueueAfter(ctx context.Context, tx txn, enrollmentID string, last int64, cmds []enrollment.NewCommand, by string, at time.Time,
	preApproval bool) error {
	rows := make([]queuedCommand, len(cmds))
	for i, c := range cmds {
		rows[i] = queuedCommand{enrollmentID: enrollmentID, seq: last + int64(i) + 1, cmd: c, preApproval: preApproval}
	}
	// One statement for the few commands an approval queues; chunks keep
	// a long list within the databases' limits on arguments.
	for _, chunk := range powerOfTwoChunks(rows) {
		if err := insertCommands(ctx, tx, chunk, by, at); err != nil {
			return err
		}
	}
	return nil
}

// queuedCommand is a command row to insert: cmd as the enrollment's
// command number seq.
type queuedCommand struct {
	enrollmentID string
	seq          int64
	cmd          enrollment.NewCommand
	preApproval  bool
}

// insertCommands queues rows, in one statement.
func insertCommands(ctx context.Context, tx txn, rows []queuedCommand, by string, at time.Time) error {
	args := make([]any, 0, 8*len(rows))
	for _, r := range rows {
		args = append(args, r.cmd.UUID, r.enrollmentID, r.seq, r.cmd.RequestType, string(r.cmd.Body), ms(at), by, boolInt(r.preApproval))
	}
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO commands (id, enrollment_id, seq, request_type, body, status, created_at, created_by, pre_approval)
		VALUES `+repeatRows("(?, ?, ?, ?, ?, 'queued', ?, ?, ?)", len(rows))), args...)
	switch {
	case err == nil:
		return nil
	case isUniqueViolation(err) && len(rows) == 1:
		return fmt.Errorf("enqueue: %w: command %s exists", enrollment.ErrConflict, rows[0].cmd.UUID)
	case isUniqueViolation(err):
		return fmt.Errorf("enqueue: %w: a command with one of these UUIDs exists", enrollment.ErrConflict)
	}
	return fmt.Errorf("enqueue: %w", err)
}

// repeatRows is n copies of a VALUES row, comma-separated.
func repeatRows(row string, n int) string {
	return strings.Repeat(row+", ", n-1) + row
}

// inList is the parenthesised list of n placeholders that follows IN.
func inList(n int) string {
	return "(" + repeatRows("?", n) + ")"
}

// anys is strings as a statement's arguments.
func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// RecordResult stores the device's answer to a command it was sent; a
// result for a command not in flight changes nothing.
func (s *Store) RecordResult(ctx context.Context, enrollmentID, uuid string, status enrollment.CommandStatus, result []byte, at time.Time) error {
	notNow := 0
	if status == enrollment.CommandNotNow {
		notNow = 1
	}
	res, err := s.exec(ctx, `UPDATE commands SET status = ?, result = ?, result_at = ?, not_now_count = not_now_count + ?
		WHERE enrollment_id = ? AND id = ? AND status = 'sent'`, string(status), string(result), ms(at), notNow, enrollmentID, uuid)
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
	err := s.inTx(ctx, func(tx txn) error {
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
