package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

type userRow struct {
	ID           string         `db:"id"`
	Email        string         `db:"email"`
	Name         string         `db:"name"`
	Role         string         `db:"role"`
	PasswordHash sql.NullString `db:"password_hash"`
	CreatedAt    int64          `db:"created_at"`
	UpdatedAt    int64          `db:"updated_at"`
	DisabledAt   sql.NullInt64  `db:"disabled_at"`
}

func (r userRow) user() enrollment.User {
	return enrollment.User{ID: r.ID, Email: r.Email, Name: r.Name, Role: enrollment.Role(r.Role),
		PasswordHash: r.PasswordHash.String, CreatedAt: fromMS(r.CreatedAt), UpdatedAt: fromMS(r.UpdatedAt),
		DisabledAt: fromNullMS(r.DisabledAt)}
}

func newUserRow(u enrollment.User) userRow {
	return userRow{ID: u.ID, Email: u.Email, Name: u.Name, Role: string(u.Role),
		PasswordHash: sql.NullString{String: u.PasswordHash, Valid: u.PasswordHash != ""},
		CreatedAt:    ms(u.CreatedAt), UpdatedAt: ms(u.UpdatedAt), DisabledAt: nullMS(u.DisabledAt)}
}

const insertUser = `INSERT INTO users (id, email, name, role, password_hash, created_at, updated_at, disabled_at)
	VALUES (:id, :email, :name, :role, :password_hash, :created_at, :updated_at, :disabled_at)`

// CreateUser adds a user; an e-mail already known is ErrConflict.
func (s *Store) CreateUser(ctx context.Context, u enrollment.User, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		if _, err := execNamed(ctx, tx, insertUser, newUserRow(u)); err != nil {
			if isUniqueViolation(err) {
				return fmt.Errorf("create user: %w: %s already exists", enrollment.ErrConflict, u.Email)
			}
			return fmt.Errorf("create user: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// UpsertUsers creates or updates users by e-mail in one transaction.
func (s *Store) UpsertUsers(ctx context.Context, users []enrollment.User, ev enrollment.AuditEvent) (created, updated int, err error) {
	err = s.inTxAlone(ctx, func(tx txn) error {
		created, updated = 0, 0
		for _, u := range users {
			var id string
			err := tx.GetContext(ctx, &id, tx.Rebind(`SELECT id FROM users WHERE email = ?`), u.Email)
			switch {
			case err == sql.ErrNoRows:
				if _, err := execNamed(ctx, tx, insertUser, newUserRow(u)); err != nil {
					return fmt.Errorf("upsert user %s: %w", u.Email, err)
				}
				created++
			case err != nil:
				return fmt.Errorf("upsert user %s: %w", u.Email, err)
			default:
				if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE users SET name = ?, role = ?, updated_at = ? WHERE id = ?`),
					u.Name, string(u.Role), ms(u.UpdatedAt), id); err != nil {
					return fmt.Errorf("upsert user %s: %w", u.Email, err)
				}
				updated++
			}
		}
		ev.Detail = fmt.Sprintf("%s created=%d updated=%d", ev.Detail, created, updated)
		return appendAudit(ctx, tx, ev)
	})
	return created, updated, err
}

// UserByEmail finds a user by normalized e-mail.
func (s *Store) UserByEmail(ctx context.Context, email string) (enrollment.User, error) {
	var r userRow
	if err := s.db.GetContext(ctx, &r, s.db.Rebind(`SELECT * FROM users WHERE email = ?`), email); err != nil {
		return enrollment.User{}, fmt.Errorf("user %s: %w", email, notFound(err))
	}
	return r.user(), nil
}

// UserByID finds a user by ID.
func (s *Store) UserByID(ctx context.Context, id string) (enrollment.User, error) {
	return getUser(ctx, s.db, id)
}

// ListUsers returns every user by e-mail.
func (s *Store) ListUsers(ctx context.Context) ([]enrollment.User, error) {
	var rows []userRow
	if err := s.db.SelectContext(ctx, &rows, `SELECT * FROM users ORDER BY email`); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	out := make([]enrollment.User, len(rows))
	for i, r := range rows {
		out[i] = r.user()
	}
	return out, nil
}

// SetUserPassword replaces a local account's password hash.
func (s *Store) SetUserPassword(ctx context.Context, userID, hash string, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?`),
			hash, ms(ev.At), userID)
		if err != nil {
			return fmt.Errorf("set password: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("set password: user %s: %w", userID, enrollment.ErrNotFound)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// SetUserDisabled disables or enables a user. Disabling also revokes the
// user's open reservations, ends their sessions and denies their pending
// enrollments (revoking those certificates), in one transaction.
func (s *Store) SetUserDisabled(ctx context.Context, userID string, disabled bool, at time.Time, ev enrollment.AuditEvent) error {
	// Its enrollments are locked in ID order, as a bulk approval and a
	// fleet command lock theirs; a deadlock with another order (a
	// supersession) is retried, with the event as given.
	return retryDeadlocks(func() error { return s.setUserDisabled(ctx, userID, disabled, at, ev) })
}

func (s *Store) setUserDisabled(ctx context.Context, userID string, disabled bool, at time.Time, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		var res sql.Result
		var err error
		if disabled {
			res, err = tx.ExecContext(ctx, tx.Rebind(`UPDATE users SET disabled_at = ?, updated_at = ? WHERE id = ? AND disabled_at IS NULL`), ms(at), ms(at), userID)
		} else {
			res, err = tx.ExecContext(ctx, tx.Rebind(`UPDATE users SET disabled_at = NULL, updated_at = ? WHERE id = ? AND disabled_at IS NOT NULL`), ms(at), userID)
		}
		if err != nil {
			return fmt.Errorf("set user disabled: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			if _, err := getUser(ctx, tx, userID); err != nil {
				return err
			}
			return fmt.Errorf("user %s: %w: already %s", userID, enrollment.ErrConflict, map[bool]string{true: "disabled", false: "enabled"}[disabled])
		}
		if disabled {
			r, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE reservations SET state = 'revoked', revoked_at = ?, revoked_by = ? WHERE user_id = ? AND state = 'open'`),
				ms(at), ev.Actor+" (user disabled)", userID)
			if err != nil {
				return fmt.Errorf("revoke reservations of a disabled user: %w", err)
			}
			n, _ := r.RowsAffected()
			ev.Detail += fmt.Sprintf(" revoked_reservations=%d", n)
			if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM sessions WHERE user_id = ?`), userID); err != nil {
				return fmt.Errorf("end sessions of a disabled user: %w", err)
			}
		}
		// Approved devices stay enrolled, but their trust follows the owner.
		// The rows are locked as they are read, after the reservations are
		// revoked (a claim waits for its reservation's row, then finds it
		// revoked: no enrollment appears after this read): an approval in
		// flight, which read the owner before this change, is waited for
		// and its enrollment's trust synced here, not missed because it was
		// still pending. A row waited for is read as that approval left it.
		lock := `SELECT id, state FROM enrollments WHERE user_id = ? AND state IN ('pending', 'approved')`
		if s.dialect == Postgres {
			lock += ` ORDER BY id COLLATE "C" FOR NO KEY UPDATE`
		}
		var rows []struct {
			ID    string `db:"id"`
			State string `db:"state"`
		}
		if err := tx.SelectContext(ctx, &rows, tx.Rebind(lock), userID); err != nil {
			return fmt.Errorf("enrollments of a user: %w", err)
		}
		if disabled {
			// Nobody approves a device for someone who has left: their
			// waiting enrollments are denied and their certificates revoked.
			// Only those this UPDATE denied: one approved meanwhile (its
			// approval held the row) stays approved, its certificates
			// valid, and loses its trust below.
			var denied []string
			if err := tx.SelectContext(ctx, &denied, tx.Rebind(`UPDATE enrollments SET state = 'denied', decided_at = ?, decided_by = ?,
				decision_note = 'owner disabled', updated_at = ? WHERE user_id = ? AND state = 'pending' RETURNING id`),
				ms(at), ev.Actor, ms(at), userID); err != nil {
				return fmt.Errorf("deny pending enrollments of a disabled user: %w", err)
			}
			if len(denied) > 0 {
				if err := revokeEnrollmentCerts(ctx, tx, denied, "owner disabled", at); err != nil {
					return err
				}
			}
			ev.Detail += fmt.Sprintf(" denied_pending=%d", len(denied))
		}
		var approved []string
		for _, r := range rows {
			if r.State == string(enrollment.StateApproved) {
				approved = append(approved, r.ID)
			}
		}
		cause := trustCause{reason: map[bool]string{true: "owner disabled", false: "owner enabled"}[disabled] + " by " + ev.Actor,
			initiator: "admin", crlCode: crlPrivilegeWithdrawn}
		if err := syncTrust(ctx, tx, approved, cause, at); err != nil {
			return err
		}
		return appendAudit(ctx, tx, ev)
	})
}

func getUser(ctx context.Context, q sqlx.QueryerContext, id string) (enrollment.User, error) {
	var r userRow
	if err := sqlx.GetContext(ctx, q, &r, rebind(q, `SELECT * FROM users WHERE id = ?`), id); err != nil {
		return enrollment.User{}, fmt.Errorf("user %s: %w", id, notFound(err))
	}
	return r.user(), nil
}

// SetUserName changes a user's display name.
func (s *Store) SetUserName(ctx context.Context, userID, name string, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE users SET name = ?, updated_at = ? WHERE id = ?`), name, ms(ev.At), userID); err != nil {
			return fmt.Errorf("rename user: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// SetUserRole changes a user's role.
func (s *Store) SetUserRole(ctx context.Context, userID string, role enrollment.Role, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE users SET role = ?, updated_at = ? WHERE id = ?`), string(role), ms(ev.At), userID); err != nil {
			return fmt.Errorf("set role: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// UserNames returns the display names of these users, by ID (users
// without a name are left out).
func (s *Store) UserNames(ctx context.Context, ids []string) (map[string]string, error) {
	out := map[string]string{}
	if len(ids) == 0 {
		return out, nil
	}
	q, args, err := sqlx.In(`SELECT id, name FROM users WHERE id IN (?) AND name <> ''`, ids)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		ID   string `db:"id"`
		Name string `db:"name"`
	}
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("user names: %w", err)
	}
	for _, r := range rows {
		out[r.ID] = r.Name
	}
	return out, nil
}
