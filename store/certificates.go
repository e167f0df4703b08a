package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/scep"
)

type certRow struct {
	Serial        string        `db:"serial"`
	SHA256        string        `db:"sha256"`
	Subject       string        `db:"subject"`
	NotBefore     int64         `db:"not_before"`
	NotAfter      int64         `db:"not_after"`
	ReservationID string        `db:"reservation_id"`
	KeySHA256     string        `db:"key_sha256"`
	TransactionID string        `db:"transaction_id"`
	DER           string        `db:"der"`
	IssuedAt      int64         `db:"issued_at"`
	RevokedAt     sql.NullInt64 `db:"revoked_at"`
	RevokeReason  string        `db:"revoke_reason"`
	// RevokeCode exists only in trust_certificates.
	RevokeCode int `db:"revoke_code"`
	// Only in certificates: what Apple attested for an ACME identity key.
	HardwareBound  bool   `db:"hardware_bound"`
	AttestedSerial string `db:"attested_serial"`
	AttestedUDID   string `db:"attested_udid"`
}

func (r certRow) cert() (scep.Certificate, error) {
	der, err := base64.StdEncoding.DecodeString(r.DER)
	if err != nil {
		return scep.Certificate{}, fmt.Errorf("certificate %s: stored DER: %w", r.Serial, err)
	}
	return scep.Certificate{Serial: r.Serial, SHA256: r.SHA256, Subject: r.Subject, NotBefore: fromMS(r.NotBefore), NotAfter: fromMS(r.NotAfter),
		ReservationID: r.ReservationID, KeySHA256: r.KeySHA256, TransactionID: r.TransactionID, DER: der, IssuedAt: fromMS(r.IssuedAt),
		RevokedAt: fromNullMS(r.RevokedAt), RevokeReason: r.RevokeReason, HardwareBound: r.HardwareBound, AttestedSerial: r.AttestedSerial,
		AttestedUDID: r.AttestedUDID}, nil
}

// OpenReservationForChallenge finds the reservation a challenge belongs to,
// if it may still be used.
func (s *Store) OpenReservationForChallenge(ctx context.Context, challengeHash string, now time.Time) (string, error) {
	var id string
	err := s.getPrepared(ctx, &id, `SELECT id FROM reservations WHERE challenge_hash = ? AND challenge_used_at IS NULL
		AND state = 'open' AND expires_at > ? AND identity = 'scep'`, challengeHash, ms(now))
	if err != nil {
		return "", fmt.Errorf("reservation for challenge: %w", notFound(err))
	}
	return id, nil
}

// IssuedByTransaction finds the certificate of a retried request.
func (s *Store) IssuedByTransaction(ctx context.Context, transactionID, keySHA256 string) (scep.Certificate, error) {
	var r certRow
	err := s.getPrepared(ctx, &r, `SELECT * FROM certificates WHERE transaction_id = ? AND key_sha256 = ?
		ORDER BY issued_at DESC LIMIT 1`, transactionID, keySHA256)
	if err != nil {
		return scep.Certificate{}, fmt.Errorf("certificate of transaction: %w", notFound(err))
	}
	return r.cert()
}

// RecordIssued stores a certificate and consumes its challenge in one
// transaction. The consuming UPDATE is the gate: of concurrent requests
// with one challenge, exactly one sees a row to update.
func (s *Store) RecordIssued(ctx context.Context, c scep.Certificate, challengeHash string, now time.Time, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		if challengeHash != "" {
			if err := consumeChallenge(ctx, tx, c.ReservationID, challengeHash, "scep", "challenge", now); err != nil {
				return err
			}
		}
		if err := insertCert(ctx, tx, "certificates", c); err != nil {
			return err
		}
		return appendAudit(ctx, tx, ev)
	})
}

// consumeChallenge uses a reservation's one-time secret (the SCEP
// challenge, or the ACME ClientIdentifier, by identity): the gate of
// issuance, since of concurrent requests with one secret exactly one sees
// a row to update. what names the secret in errors.
func consumeChallenge(ctx context.Context, tx txn, reservationID, hash, identity, what string, now time.Time) error {
	res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE reservations SET challenge_used_at = ? WHERE id = ? AND challenge_hash = ?
		AND challenge_used_at IS NULL AND state = 'open' AND expires_at > ? AND identity = ?`), ms(now), reservationID, hash, ms(now), identity)
	if err != nil {
		return fmt.Errorf("consume %s: %w", what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("consume %s of %s: %w: already used or no longer open", what, reservationID, enrollment.ErrConflict)
	}
	return nil
}

// CertificateBySHA256 finds a certificate by fingerprint.
func (s *Store) CertificateBySHA256(ctx context.Context, fingerprint string) (scep.Certificate, error) {
	var r certRow
	if err := s.getPrepared(ctx, &r, `SELECT * FROM certificates WHERE sha256 = ?`, fingerprint); err != nil {
		return scep.Certificate{}, fmt.Errorf("certificate %s: %w", fingerprint, notFound(err))
	}
	return r.cert()
}

// ListCertificates returns a reservation's certificates, newest first.
func (s *Store) ListCertificates(ctx context.Context, reservationID string) ([]scep.Certificate, error) {
	return s.certsOf(ctx, "certificates", reservationID, 1000)
}

// EnrollmentApproved reports whether a reservation's enrollment is approved.
func (s *Store) EnrollmentApproved(ctx context.Context, reservationID string) (bool, error) {
	var row struct {
		State         string `db:"state"`
		OwnerDisabled bool   `db:"owner_disabled"`
	}
	err := s.getPrepared(ctx, &row, `SELECT e.state, u.disabled_at IS NOT NULL AS owner_disabled
		FROM enrollments e JOIN users u ON u.id = e.user_id WHERE e.id = ?`, reservationID)
	if err == sql.ErrNoRows {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("enrollment state: %w", err)
	}
	// A disabled owner's devices do not renew: their certificates run out.
	return row.State == string(enrollment.StateApproved) && !row.OwnerDisabled, nil
}

// CheckinRecord is what a check-in reads about the certificate it was
// signed with, and the enrollment of that certificate's reservation.
type CheckinRecord struct {
	ReservationID  string
	NotAfter       time.Time
	RevokedAt      *time.Time
	HardwareBound  bool
	AttestedSerial string
	AttestedUDID   string
	// Enrollment is nil when the reservation has none yet (a device
	// between SCEP and Authenticate).
	Enrollment *enrollment.CheckinView
	// NoCommands: the same read found none of the enrollment's commands
	// queued, sent or deferred, so an idle device has nothing to get.
	NoCommands bool
}

// selectCheckin reads a certificate's record and what a check-in needs of
// its enrollment in one statement: one read, one snapshot, per check-in.
// The enrollment's columns are NULL when there is none yet. The rest of
// the enrollment is not read: with its owner's row, it was most of the
// cost of an idle check-in.
const selectCheckin = `SELECT c.reservation_id, c.not_after, c.revoked_at, c.hardware_bound <> 0, c.attested_serial, c.attested_udid,
	e.id, e.state, e.udid, e.last_seen_at, e.attest_status, e.attest_command,
	NOT EXISTS (SELECT 1 FROM commands q WHERE q.enrollment_id = c.reservation_id AND q.status IN ('queued', 'sent', 'not_now'))
	FROM certificates c LEFT JOIN enrollments e ON e.id = c.reservation_id WHERE c.sha256 = ?`

// CheckinRecord returns the record of the certificate with this
// fingerprint and, in the same read, what a check-in decides on of its
// reservation's enrollment. It scans by position: sqlx's mapping by name
// cost as much as the columns.
func (s *Store) CheckinRecord(ctx context.Context, fingerprint string) (CheckinRecord, error) {
	var (
		r                                      CheckinRecord
		notAfter                               int64
		revokedAt, lastSeen                    sql.NullInt64
		id, state, udid, attStatus, attCommand sql.NullString
	)
	scan := func(row *sql.Row) error {
		return row.Scan(&r.ReservationID, &notAfter, &revokedAt, &r.HardwareBound, &r.AttestedSerial, &r.AttestedUDID,
			&id, &state, &udid, &lastSeen, &attStatus, &attCommand, &r.NoCommands)
	}
	var err error
	if s.write != nil {
		err = s.withSQLiteReader(ctx, func(ctx context.Context, c *sqlx.Conn) error {
			return scan(c.QueryRowContext(ctx, selectCheckin, fingerprint))
		})
	} else {
		var st *sqlx.Stmt
		if st, err = s.prepared(ctx, selectCheckin); err == nil {
			err = scan(st.QueryRowContext(ctx, fingerprint))
		}
	}
	if err != nil {
		return CheckinRecord{}, fmt.Errorf("certificate %s: %w", fingerprint, notFound(err))
	}
	r.NotAfter, r.RevokedAt = fromMS(notAfter), fromNullMS(revokedAt)
	if id.Valid {
		r.Enrollment = &enrollment.CheckinView{ID: id.String, State: enrollment.State(state.String), UDID: udid.String, LastSeenAt: fromNullMS(lastSeen),
			AttestStatus: enrollment.AttestationStatus(attStatus.String), AttestCommand: attCommand.String}
	}
	return r, nil
}
