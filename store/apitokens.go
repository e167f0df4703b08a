package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

type apiTokenRow struct {
	ID         string        `db:"id"`
	Name       string        `db:"name"`
	Role       string        `db:"role"`
	TokenHash  string        `db:"token_hash"`
	CreatedAt  int64         `db:"created_at"`
	CreatedBy  string        `db:"created_by"`
	LastUsedAt sql.NullInt64 `db:"last_used_at"`
	RevokedAt  sql.NullInt64 `db:"revoked_at"`
}

func (r apiTokenRow) token() auth.APIToken {
	return auth.APIToken{ID: r.ID, Name: r.Name, Role: enrollment.Role(r.Role), Hash: r.TokenHash, CreatedAt: fromMS(r.CreatedAt),
		CreatedBy: r.CreatedBy, LastUsedAt: fromNullMS(r.LastUsedAt), RevokedAt: fromNullMS(r.RevokedAt)}
}

// CreateAPIToken stores a token's hash; a name in use is ErrConflict.
func (s *Store) CreateAPIToken(ctx context.Context, t auth.APIToken, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by)
			VALUES (?, ?, ?, ?, ?, ?)`), t.ID, t.Name, string(t.Role), t.Hash, ms(t.CreatedAt), t.CreatedBy)
		if err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("create API token: %w: the name %q is taken", enrollment.ErrConflict, t.Name)
			}
			return fmt.Errorf("create API token: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// APITokenByHash finds a token by the hash of its secret.
func (s *Store) APITokenByHash(ctx context.Context, hash string) (auth.APIToken, error) {
	var r apiTokenRow
	if err := s.db.GetContext(ctx, &r, s.db.Rebind(`SELECT * FROM api_tokens WHERE token_hash = ?`), hash); err != nil {
		return auth.APIToken{}, fmt.Errorf("API token: %w", notFound(err))
	}
	return r.token(), nil
}

// TouchAPIToken records a use.
func (s *Store) TouchAPIToken(ctx context.Context, id string, at time.Time) error {
	if _, err := s.exec(ctx, `UPDATE api_tokens SET last_used_at = ? WHERE id = ?`, ms(at), id); err != nil {
		return fmt.Errorf("touch API token: %w", err)
	}
	return nil
}

// ListAPITokens returns every token by name.
func (s *Store) ListAPITokens(ctx context.Context) ([]auth.APIToken, error) {
	var rows []apiTokenRow
	if err := s.db.SelectContext(ctx, &rows, `SELECT * FROM api_tokens ORDER BY name`); err != nil {
		return nil, fmt.Errorf("list API tokens: %w", err)
	}
	out := make([]auth.APIToken, len(rows))
	for i, r := range rows {
		out[i] = r.token()
	}
	return out, nil
}

// RevokeAPIToken revokes a live token by name.
func (s *Store) RevokeAPIToken(ctx context.Context, name string, at time.Time, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL`), ms(at), name)
		if err != nil {
			return fmt.Errorf("revoke API token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("revoke API token %q: %w (or already revoked)", name, enrollment.ErrNotFound)
		}
		ev.TargetID = name
		return appendAudit(ctx, tx, ev)
	})
}
