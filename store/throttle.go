package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// LoginBlockedUntil returns the latest time until which any of keys is
// blocked (zero when none is).
func (s *Store) LoginBlockedUntil(ctx context.Context, keys []string) (time.Time, error) {
	if len(keys) == 0 {
		return time.Time{}, nil
	}
	q, args, err := sqlx.In(`SELECT COALESCE(MAX(blocked_until), 0) FROM login_throttle WHERE key IN (?)`, keys)
	if err != nil {
		return time.Time{}, err
	}
	var until int64
	if err := s.db.GetContext(ctx, &until, s.db.Rebind(q), args...); err != nil {
		return time.Time{}, fmt.Errorf("login throttle: %w", err)
	}
	if until == 0 {
		return time.Time{}, nil
	}
	return fromMS(until), nil
}

// RecordLoginFailure counts a failure of key at now, starting again at 1
// when the previous failure is older than window, and blocks the key until
// the time block returns for that count (zero: not blocked). Rows quiet for
// a day are removed on the way.
func (s *Store) RecordLoginFailure(ctx context.Context, key string, now time.Time, window time.Duration,
	block func(failures int) time.Time) error {
	return s.inTx(ctx, func(tx *sqlx.Tx) error {
		var failures int
		err := tx.GetContext(ctx, &failures, tx.Rebind(`INSERT INTO login_throttle (key, failures, last_failure) VALUES (?, 1, ?)
			ON CONFLICT (key) DO UPDATE SET
				failures = CASE WHEN login_throttle.last_failure < ? THEN 1 ELSE login_throttle.failures + 1 END,
				last_failure = excluded.last_failure
			RETURNING failures`), key, ms(now), ms(now.Add(-window)))
		if err != nil {
			return fmt.Errorf("record login failure: %w", err)
		}
		var until int64
		if t := block(failures); !t.IsZero() {
			until = ms(t)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE login_throttle SET blocked_until = ? WHERE key = ?`), until, key); err != nil {
			return fmt.Errorf("record login failure: %w", err)
		}
		_, err = tx.ExecContext(ctx, tx.Rebind(`DELETE FROM login_throttle WHERE last_failure < ? AND blocked_until < ?`),
			ms(now.Add(-24*time.Hour)), ms(now))
		return err
	})
}

// ClearLoginFailures forgets key's failures (after a success).
func (s *Store) ClearLoginFailures(ctx context.Context, key string) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(`DELETE FROM login_throttle WHERE key = ?`), key); err != nil {
		return fmt.Errorf("clear login failures: %w", err)
	}
	return nil
}
