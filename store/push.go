package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/push"
)

// enqueuePush owes a device a push, coalescing with one already owed. A
// device without a valid push token is left to its next poll.
func enqueuePush(ctx context.Context, tx txn, enrollmentID string, at time.Time) error {
	var n int
	err := tx.GetContext(ctx, &n, tx.Rebind(`SELECT COUNT(*) FROM enrollments WHERE id = ? AND push_token <> '' AND push_invalid_at IS NULL`), enrollmentID)
	if err != nil || n == 0 {
		return err
	}
	return insertPushes(ctx, tx, []string{enrollmentID}, at)
}

// insertPushes owes each enrollment a push, in one statement, coalescing
// with one already owed (it is due now again, its attempts start over).
func insertPushes(ctx context.Context, tx txn, enrollmentIDs []string, at time.Time) error {
	if len(enrollmentIDs) == 0 {
		return nil
	}
	args := make([]any, 0, 3*len(enrollmentIDs))
	for _, id := range enrollmentIDs {
		args = append(args, id, ms(at), ms(at))
	}
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO push_outbox (enrollment_id, created_at, next_attempt_at) VALUES `+repeatRows("(?, ?, ?)", len(enrollmentIDs))+`
		ON CONFLICT (enrollment_id) DO UPDATE SET next_attempt_at = excluded.next_attempt_at, attempts = 0, lease_until = NULL`), args...)
	if err != nil {
		return fmt.Errorf("enqueue push: %w", err)
	}
	return nil
}

// EnqueuePush owes a device a push now.
func (s *Store) EnqueuePush(ctx context.Context, enrollmentID string, at time.Time) error {
	return s.inTx(ctx, func(tx txn) error {
		var state, token string
		err := tx.QueryRowxContext(ctx, tx.Rebind(`SELECT state, push_token FROM enrollments WHERE id = ?`), enrollmentID).Scan(&state, &token)
		if err != nil {
			return fmt.Errorf("push %s: %w", enrollmentID, notFound(err))
		}
		if token == "" {
			return fmt.Errorf("push %s: %w: the device has sent no push token", enrollmentID, enrollment.ErrConflict)
		}
		return enqueuePush(ctx, tx, enrollmentID, at)
	})
}

type outboxRow struct {
	EnrollmentID string `db:"enrollment_id"`
	Token        string `db:"push_token"`
	Magic        string `db:"push_magic"`
	Topic        string `db:"push_topic"`
	Attempts     int    `db:"attempts"`
}

// ClaimOutbox leases due items. On PostgreSQL, FOR UPDATE SKIP LOCKED lets
// workers on several replicas claim disjoint batches without waiting; on
// SQLite the write lock of the transaction serializes them.
func (s *Store) ClaimOutbox(ctx context.Context, limit int, now, leaseUntil time.Time) ([]push.Item, error) {
	var rows []outboxRow
	err := s.inTx(ctx, func(tx txn) error {
		lock := ""
		if s.dialect == Postgres {
			lock = " FOR UPDATE OF o SKIP LOCKED"
		}
		err := tx.SelectContext(ctx, &rows, tx.Rebind(`SELECT o.enrollment_id, e.push_token, e.push_magic, e.push_topic, o.attempts
			FROM push_outbox o JOIN enrollments e ON e.id = o.enrollment_id
			WHERE o.next_attempt_at <= ? AND (o.lease_until IS NULL OR o.lease_until < ?)
			ORDER BY o.next_attempt_at LIMIT `+fmt.Sprint(limit)+lock), ms(now), ms(now))
		if err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]string, len(rows))
		for i, r := range rows {
			ids[i] = r.EnrollmentID
		}
		q, args, err := sqlx.In(`UPDATE push_outbox SET lease_until = ? WHERE enrollment_id IN (?)`, ms(leaseUntil), ids)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, tx.Rebind(q), args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim outbox: %w", err)
	}
	out := make([]push.Item, len(rows))
	for i, r := range rows {
		out[i] = push.Item{EnrollmentID: r.EnrollmentID, Token: r.Token, Magic: r.Magic, Topic: r.Topic, Attempts: r.Attempts,
			LeaseUntil: fromMS(ms(leaseUntil))}
	}
	return out, nil
}

// CompleteOutbox removes delivered pushes, unless one was queued again (a
// new command) or claimed by another worker since: then it stays, and is
// pushed again. Items claimed together share their lease, so one
// statement removes them.
func (s *Store) CompleteOutbox(ctx context.Context, items []push.Item) error {
	byLease := map[int64][]string{}
	for _, it := range items {
		byLease[ms(it.LeaseUntil)] = append(byLease[ms(it.LeaseUntil)], it.EnrollmentID)
	}
	for lease, ids := range byLease {
		for len(ids) > 0 {
			chunk := ids[:min(len(ids), 500)]
			ids = ids[len(chunk):]
			q, args, err := sqlx.In(`DELETE FROM push_outbox WHERE lease_until = ? AND enrollment_id IN (?)`, lease, chunk)
			if err != nil {
				return err
			}
			if _, err := s.exec(ctx, q, args...); err != nil {
				return fmt.Errorf("complete pushes: %w", err)
			}
		}
	}
	return nil
}

// RetryOutbox schedules a push again, while the claim still holds it.
func (s *Store) RetryOutbox(ctx context.Context, it push.Item, next time.Time, lastErr string) error {
	_, err := s.exec(ctx, `UPDATE push_outbox SET attempts = attempts + 1, next_attempt_at = ?, lease_until = NULL,
		last_error = ? WHERE enrollment_id = ? AND lease_until = ?`, ms(next), lastErr, it.EnrollmentID, ms(it.LeaseUntil))
	return err
}

// DropOutbox gives up on a push; invalidToken marks the device's token.
func (s *Store) DropOutbox(ctx context.Context, enrollmentID string, invalidToken bool, at time.Time, reason string) error {
	return s.inTx(ctx, func(tx txn) error {
		// The token is marked first: that takes the enrollment's row lock,
		// which an approval or an enqueuer holds while it owes a push, so
		// the DELETE then sees the push owed meanwhile, and a later one
		// sees the mark. The order of locks is theirs: enrollment, then
		// outbox.
		if invalidToken {
			if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET push_invalid_at = ? WHERE id = ?`), ms(at), enrollmentID); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM push_outbox WHERE enrollment_id = ?`), enrollmentID); err != nil {
			return err
		}
		return appendAudit(ctx, tx, enrollment.AuditEvent{At: at, Actor: "push", Action: "push.drop", TargetType: "enrollment",
			TargetID: enrollmentID, Outcome: enrollment.OutcomeRefused, Detail: reason})
	})
}

// OutboxLen counts owed pushes.
func (s *Store) OutboxLen(ctx context.Context) (int, error) {
	var n int
	err := s.db.GetContext(ctx, &n, `SELECT COUNT(*) FROM push_outbox`)
	return n, err
}
