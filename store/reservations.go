package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

type reservationRow struct {
	ID              string         `db:"id"`
	OrgID           string         `db:"org_id"`
	UserID          string         `db:"user_id"`
	UserEmail       string         `db:"user_email"`
	State           string         `db:"state"`
	ChallengeHash   string         `db:"challenge_hash"`
	ChallengeUsedAt sql.NullInt64  `db:"challenge_used_at"`
	TokenNonce      string         `db:"token_nonce"`
	TokenKeyVersion int64          `db:"token_key_version"`
	CreatedAt       int64          `db:"created_at"`
	ExpiresAt       int64          `db:"expires_at"`
	CreatedBy       string         `db:"created_by"`
	CreatedIP       string         `db:"created_ip"`
	DownloadedAt    sql.NullInt64  `db:"downloaded_at"`
	DownloadedIP    string         `db:"downloaded_ip"`
	ClaimedAt       sql.NullInt64  `db:"claimed_at"`
	ClaimedUDID     sql.NullString `db:"claimed_udid"`
	ClaimAttempts   int            `db:"claim_attempts"`
	RevokedAt       sql.NullInt64  `db:"revoked_at"`
	RevokedBy       sql.NullString `db:"revoked_by"`
	DEPSerial       string         `db:"dep_serial"`
	DEPUDID         string         `db:"dep_udid"`
	Identity        string         `db:"identity"`
}

func (r reservationRow) reservation() enrollment.Reservation {
	return enrollment.Reservation{ID: r.ID, OrgID: r.OrgID, UserID: r.UserID, UserEmail: r.UserEmail,
		State: enrollment.ReservationState(r.State), ChallengeHash: r.ChallengeHash, ChallengeUsedAt: fromNullMS(r.ChallengeUsedAt),
		TokenNonce: r.TokenNonce, TokenKeyVersion: uint32(r.TokenKeyVersion), CreatedAt: fromMS(r.CreatedAt), ExpiresAt: fromMS(r.ExpiresAt),
		CreatedBy: r.CreatedBy, CreatedIP: r.CreatedIP, DownloadedAt: fromNullMS(r.DownloadedAt), DownloadedIP: r.DownloadedIP,
		ClaimedAt: fromNullMS(r.ClaimedAt), ClaimedUDID: r.ClaimedUDID.String, ClaimAttempts: r.ClaimAttempts,
		RevokedAt: fromNullMS(r.RevokedAt), RevokedBy: r.RevokedBy.String, DEPSerial: r.DEPSerial, DEPUDID: r.DEPUDID, Identity: r.Identity}
}

const selectReservation = `SELECT r.id, r.org_id, r.user_id, u.email AS user_email, r.state, r.challenge_hash,
	r.challenge_used_at, r.token_nonce, r.token_key_version, r.created_at, r.expires_at, r.created_by, r.created_ip,
	r.downloaded_at, r.downloaded_ip, r.claimed_at, r.claimed_udid, r.claim_attempts, r.revoked_at, r.revoked_by, r.dep_serial, r.dep_udid, r.identity
	FROM reservations r JOIN users u ON u.id = r.user_id`

// CreateReservation stores a new open reservation.
func (s *Store) CreateReservation(ctx context.Context, r enrollment.Reservation, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO reservations
			(id, org_id, user_id, state, challenge_hash, token_nonce, token_key_version, created_at, expires_at, created_by, created_ip, dep_serial, dep_udid,
			identity)
			VALUES (?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			r.ID, r.OrgID, r.UserID, r.ChallengeHash, r.TokenNonce, int64(r.TokenKeyVersion), ms(r.CreatedAt), ms(r.ExpiresAt), r.CreatedBy, r.CreatedIP,
			r.DEPSerial, r.DEPUDID, identityOr(r.Identity))
		if err != nil {
			return fmt.Errorf("create reservation: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// Reservation returns one reservation with its stored state.
func (s *Store) Reservation(ctx context.Context, id string) (enrollment.Reservation, error) {
	var r reservationRow
	if err := s.db.GetContext(ctx, &r, s.db.Rebind(selectReservation+` WHERE r.id = ?`), id); err != nil {
		return enrollment.Reservation{}, fmt.Errorf("reservation %s: %w", id, notFound(err))
	}
	return r.reservation(), nil
}

// ListReservations returns reservations newest first.
func (s *Store) ListReservations(ctx context.Context, f enrollment.ReservationFilter, now time.Time) ([]enrollment.Reservation, error) {
	q := selectReservation + ` WHERE 1=1`
	var args []any
	if f.UserID != "" {
		q += ` AND r.user_id = ?`
		args = append(args, f.UserID)
	}
	switch f.State {
	case "":
	case enrollment.ReservationOpen:
		q += ` AND r.state = 'open' AND r.expires_at > ?`
		args = append(args, ms(now))
	case enrollment.ReservationExpired:
		q += ` AND r.state = 'open' AND r.expires_at <= ?`
		args = append(args, ms(now))
	default:
		q += ` AND r.state = ?`
		args = append(args, string(f.State))
	}
	limit := f.Limit
	if limit <= 0 || limit > 10_000 {
		limit = 1000
	}
	q += fmt.Sprintf(` ORDER BY r.created_at DESC, r.id LIMIT %d`, limit)
	var rows []reservationRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("list reservations: %w", err)
	}
	out := make([]enrollment.Reservation, len(rows))
	for i, r := range rows {
		out[i] = r.reservation()
	}
	return out, nil
}

// RefreshReservation swaps in new secrets in one conditional statement, so
// a download racing a device's SCEP request or a revocation cannot both win.
func (s *Store) RefreshReservation(ctx context.Context, id string, f enrollment.Refresh, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE reservations
			SET challenge_hash = ?, token_nonce = ?, token_key_version = ?, expires_at = ?, downloaded_at = ?, downloaded_ip = ?, identity = ?
			WHERE id = ? AND state = 'open' AND expires_at > ? AND challenge_used_at IS NULL`),
			f.ChallengeHash, f.TokenNonce, int64(f.TokenKeyVersion), ms(f.ExpiresAt), ms(f.At), f.IP, identityOr(f.Identity), id, ms(f.At))
		if err != nil {
			return fmt.Errorf("refresh reservation: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return s.explainMiss(ctx, tx, id, "refresh reservation")
		}
		return appendAudit(ctx, tx, ev)
	})
}

// RevokeReservation revokes an open (or expired) reservation.
func (s *Store) RevokeReservation(ctx context.Context, id, by string, at time.Time, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE reservations SET state = 'revoked', revoked_at = ?, revoked_by = ?
			WHERE id = ? AND state = 'open'`), ms(at), by, id)
		if err != nil {
			return fmt.Errorf("revoke reservation: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return s.explainMiss(ctx, tx, id, "revoke reservation")
		}
		return appendAudit(ctx, tx, ev)
	})
}

// explainMiss tells "no such reservation" from "not in a state that allows
// this" after a conditional update touched no row.
func (s *Store) explainMiss(ctx context.Context, tx txn, id, op string) error {
	var state string
	err := tx.GetContext(ctx, &state, tx.Rebind(`SELECT state FROM reservations WHERE id = ?`), id)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, id, notFound(err))
	}
	return fmt.Errorf("%s %s: %w: it is %s or no longer usable", op, id, enrollment.ErrConflict, state)
}

// CountReservationsSince counts a user's reservations made at or after
// since, for the portal's rate limit.
func (s *Store) CountReservationsSince(ctx context.Context, userID string, since time.Time) (int, error) {
	var n int
	err := s.db.GetContext(ctx, &n, s.db.Rebind(`SELECT COUNT(*) FROM reservations WHERE user_id = ? AND created_at >= ?`), userID, ms(since))
	return n, err
}

// ReservationsByID returns the reservations with these IDs, by ID.
func (s *Store) ReservationsByID(ctx context.Context, ids []string) (map[string]enrollment.Reservation, error) {
	out := map[string]enrollment.Reservation{}
	if len(ids) == 0 {
		return out, nil
	}
	q, args, err := sqlx.In(selectReservation+` WHERE r.id IN (?)`, ids)
	if err != nil {
		return nil, err
	}
	var rows []reservationRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("reservations by ID: %w", err)
	}
	for _, r := range rows {
		out[r.ID] = r.reservation()
	}
	return out, nil
}

// identityOr defaults a reservation's identity to SCEP.
func identityOr(identity string) string {
	if identity == "" {
		return enrollment.IdentitySCEP
	}
	return identity
}
