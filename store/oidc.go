package store

import (
	"context"
	"fmt"

	"github.com/vestibule-mdm/vestibule/auth"
)

// CreateOIDCLogin records a sign-in in progress and prunes stale ones.
func (s *Store) CreateOIDCLogin(ctx context.Context, l auth.LoginRecord) error {
	return s.inTx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM oidc_logins WHERE expires_at < ?`), ms(l.CreatedAt)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO oidc_logins (state_hash, nonce, verifier, next, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?)`), l.StateHash, l.Nonce, l.Verifier, l.Next, ms(l.CreatedAt), ms(l.ExpiresAt))
		return err
	})
}

// TakeOIDCLogin returns a sign-in in progress and deletes it, in one
// statement, so a replayed callback finds nothing.
func (s *Store) TakeOIDCLogin(ctx context.Context, stateHash string) (auth.LoginRecord, error) {
	var r struct {
		StateHash string `db:"state_hash"`
		Nonce     string `db:"nonce"`
		Verifier  string `db:"verifier"`
		Next      string `db:"next"`
		CreatedAt int64  `db:"created_at"`
		ExpiresAt int64  `db:"expires_at"`
	}
	err := s.getWritten(ctx, &r, `DELETE FROM oidc_logins WHERE state_hash = ?
		RETURNING state_hash, nonce, verifier, next, created_at, expires_at`, stateHash)
	if err != nil {
		return auth.LoginRecord{}, fmt.Errorf("sign-in in progress: %w", notFound(err))
	}
	return auth.LoginRecord{StateHash: r.StateHash, Nonce: r.Nonce, Verifier: r.Verifier, Next: r.Next, CreatedAt: fromMS(r.CreatedAt),
		ExpiresAt: fromMS(r.ExpiresAt)}, nil
}
