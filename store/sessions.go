package store

import (
	"context"
	"fmt"
	"time"

	"github.com/vestibule-mdm/vestibule/auth"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

type sessionRow struct {
	IDHash     string  `db:"id_hash"`
	UserID     string  `db:"user_id"`
	Method     string  `db:"method"`
	CreatedAt  int64   `db:"created_at"`
	LastSeenAt int64   `db:"last_seen_at"`
	ExpiresAt  int64   `db:"expires_at"`
	RemoteIP   string  `db:"remote_ip"`
	UserAgent  string  `db:"user_agent"`
	User       userRow `db:"u"`
}

// CreateSession stores a session.
func (s *Store) CreateSession(ctx context.Context, sess auth.Session, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO sessions (id_hash, user_id, method, created_at, last_seen_at, expires_at, remote_ip, user_agent)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), sess.IDHash, sess.UserID, sess.Method, ms(sess.CreatedAt), ms(sess.LastSeenAt), ms(sess.ExpiresAt),
			sess.RemoteIP, sess.UserAgent)
		if err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		// Expired sessions go as new ones come, so the table stays small.
		if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM sessions WHERE expires_at < ?`), ms(sess.CreatedAt)); err != nil {
			return fmt.Errorf("prune sessions: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// SessionByHash returns a session and its user.
func (s *Store) SessionByHash(ctx context.Context, hash string) (auth.Session, enrollment.User, error) {
	var r sessionRow
	err := s.db.GetContext(ctx, &r, s.db.Rebind(`SELECT s.id_hash, s.user_id, s.method, s.created_at, s.last_seen_at, s.expires_at,
		s.remote_ip, s.user_agent, u.id AS "u.id", u.email AS "u.email", u.name AS "u.name", u.role AS "u.role",
		u.password_hash AS "u.password_hash", u.created_at AS "u.created_at", u.updated_at AS "u.updated_at", u.disabled_at AS "u.disabled_at"
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?`), hash)
	if err != nil {
		return auth.Session{}, enrollment.User{}, fmt.Errorf("session: %w", notFound(err))
	}
	return auth.Session{IDHash: r.IDHash, UserID: r.UserID, Method: r.Method, CreatedAt: fromMS(r.CreatedAt), LastSeenAt: fromMS(r.LastSeenAt),
		ExpiresAt: fromMS(r.ExpiresAt), RemoteIP: r.RemoteIP, UserAgent: r.UserAgent}, r.User.user(), nil
}

// TouchSession records activity.
func (s *Store) TouchSession(ctx context.Context, hash string, at time.Time) error {
	_, err := s.exec(ctx, `UPDATE sessions SET last_seen_at = ? WHERE id_hash = ?`, ms(at), hash)
	return err
}

// DeleteSession ends a session.
func (s *Store) DeleteSession(ctx context.Context, hash string) error {
	_, err := s.exec(ctx, `DELETE FROM sessions WHERE id_hash = ?`, hash)
	return err
}

// DeleteUserSessions ends every session of a user.
func (s *Store) DeleteUserSessions(ctx context.Context, userID string) error {
	_, err := s.exec(ctx, `DELETE FROM sessions WHERE user_id = ?`, userID)
	return err
}
