package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// WebhookItem is an announcement owed to the webhook.
type WebhookItem struct {
	ID           string `db:"id"`
	EnrollmentID string `db:"enrollment_id"`
	Event        string `db:"event"`
	Attempts     int    `db:"attempts"`
}

// ClaimWebhooks leases due announcements: FOR UPDATE SKIP LOCKED on
// PostgreSQL, the transaction's write lock on SQLite.
func (s *Store) ClaimWebhooks(ctx context.Context, limit int, now, leaseUntil time.Time) ([]WebhookItem, error) {
	var rows []WebhookItem
	err := s.inTx(ctx, func(tx txn) error {
		lock := ""
		if s.dialect == Postgres {
			lock = " FOR UPDATE SKIP LOCKED"
		}
		err := tx.SelectContext(ctx, &rows, tx.Rebind(`SELECT id, enrollment_id, event, attempts FROM webhook_outbox
			WHERE delivered_at IS NULL AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)
			ORDER BY next_attempt_at LIMIT `+fmt.Sprint(limit)+lock), ms(now), ms(now))
		if err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]string, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
		}
		q, args, err := sqlx.In(`UPDATE webhook_outbox SET lease_until = ? WHERE id IN (?)`, ms(leaseUntil), ids)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, tx.Rebind(q), args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim webhooks: %w", err)
	}
	return rows, nil
}

// WebhookDelivered marks an announcement delivered.
func (s *Store) WebhookDelivered(ctx context.Context, id string, at time.Time) error {
	_, err := s.exec(ctx, `UPDATE webhook_outbox SET delivered_at = ?, lease_until = NULL WHERE id = ?`, ms(at), id)
	return err
}

// RetryWebhook schedules an announcement again.
func (s *Store) RetryWebhook(ctx context.Context, id string, next time.Time, lastErr string) error {
	_, err := s.exec(ctx, `UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, lease_until = NULL,
		last_error = ? WHERE id = ?`, ms(next), lastErr, id)
	return err
}

// PruneWebhooks deletes announcements delivered before.
func (s *Store) PruneWebhooks(ctx context.Context, before time.Time) error {
	_, err := s.execAlone(ctx, `DELETE FROM webhook_outbox WHERE delivered_at < ?`, ms(before))
	return err
}
