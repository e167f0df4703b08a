package store

import (
	"context"
	"fmt"
	"time"
)

// LoginAttempt counts a sign-in attempt under key at now, unless key is
// blocked: it then returns until when, and counts nothing. The count starts
// again at 1 after a quiet window; block says until when a key with that
// many attempts waits (zero: not blocked). One transaction with the row
// locked (FOR UPDATE on PostgreSQL; SQLite's transactions are immediate),
// so parallel attempts are counted one by one and a burst cannot slip
// through between a check and a count. Rows quiet for a day are removed.
func (s *Store) LoginAttempt(ctx context.Context, key string, now time.Time, window time.Duration,
	block func(attempts int) time.Time) (time.Time, error) {
	var blocked time.Time
	err := s.inTx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO login_throttle (key, failures, last_failure) VALUES (?, 0, ?)
			ON CONFLICT (key) DO NOTHING`), key, ms(now)); err != nil {
			return fmt.Errorf("login attempt: %w", err)
		}
		lock := ""
		if s.dialect == Postgres {
			lock = " FOR UPDATE"
		}
		var row struct {
			Failures     int   `db:"failures"`
			LastFailure  int64 `db:"last_failure"`
			BlockedUntil int64 `db:"blocked_until"`
		}
		if err := tx.GetContext(ctx, &row, tx.Rebind(`SELECT failures, last_failure, blocked_until FROM login_throttle WHERE key = ?`+lock), key); err != nil {
			return fmt.Errorf("login attempt: %w", err)
		}
		if row.BlockedUntil > ms(now) {
			blocked = fromMS(row.BlockedUntil)
			return nil
		}
		n := row.Failures + 1
		if row.LastFailure < ms(now.Add(-window)) {
			n = 1
		}
		var until int64
		if t := block(n); !t.IsZero() {
			until = ms(t)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE login_throttle SET failures = ?, last_failure = ?, blocked_until = ? WHERE key = ?`),
			n, ms(now), until, key); err != nil {
			return fmt.Errorf("login attempt: %w", err)
		}
		_, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM login_throttle WHERE last_failure < ? AND blocked_until < ?`),
			ms(now.Add(-24*time.Hour)), ms(now))
		return err
	})
	return blocked, err
}

// ForgiveLoginAttempt takes back one counted attempt of key (a sign-in
// that succeeded from a shared address is not a guess).
func (s *Store) ForgiveLoginAttempt(ctx context.Context, key string) error {
	_, err := s.exec(ctx, `UPDATE login_throttle SET failures = failures - 1 WHERE key = ? AND failures > 0`, key)
	if err != nil {
		return fmt.Errorf("forgive login attempt: %w", err)
	}
	return nil
}

// ClearLoginFailures forgets key's attempts and any block (after a success).
func (s *Store) ClearLoginFailures(ctx context.Context, key string) error {
	if _, err := s.exec(ctx, `DELETE FROM login_throttle WHERE key = ?`, key); err != nil {
		return fmt.Errorf("clear login failures: %w", err)
	}
	return nil
}
