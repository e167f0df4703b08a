package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"slices"
	"time"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/scep"
	"github.com/vestibule-mdm/vestibule/trust"
)

// RFC 5280 CRLReason codes a trust revocation records.
const (
	crlKeyCompromise        = 1
	crlAffiliationChanged   = 3
	crlSuperseded           = 4
	crlCessationOfOperation = 5
	crlPrivilegeWithdrawn   = 9
)

// trustCause is why the trust of some enrollments may have changed.
type trustCause struct {
	// reason is for administrators; empty uses the enrollment's own.
	reason    string
	initiator string
	crlCode   int
}

// trustRow is an enrollment with the trust last announced for it.
type trustRow struct {
	enrollmentRow
	WasTrusted bool `db:"was_trusted"`
}

// selectTrustRows reads enrollments with the trust last announced for
// them; an IN list of their IDs follows.
const selectTrustRows = `SELECT e.trust_compliant <> 0 AS was_trusted, ` + enrollmentColumns + enrollmentFrom + ` WHERE e.id IN `

// syncTrust brings the announced trust of these enrollments in line with
// their state, in the transaction that changed it: a change records a
// compliance event, and a loss of trust revokes the device-trust
// certificates and voids unused trust challenges. Calling it when nothing
// changed does nothing, so every state change may call it.
func syncTrust(ctx context.Context, tx txn, ids []string, cause trustCause, at time.Time) error {
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	var rows []trustRow
	for _, chunk := range powerOfTwoChunks(ids) {
		var got []trustRow
		if err := tx.SelectContext(ctx, &got, tx.Rebind(selectTrustRows+inList(len(chunk))), anys(chunk)...); err != nil {
			return fmt.Errorf("trust: %w", err)
		}
		rows = append(rows, got...)
	}
	if len(rows) != len(ids) {
		return fmt.Errorf("trust: %w: %d of %d enrollments", enrollment.ErrNotFound, len(ids)-len(rows), len(ids))
	}
	return syncTrustRows(ctx, tx, rows, cause, at)
}

// trustChange is an enrollment whose trust changes, and why.
type trustChange struct {
	id, email string
	now       bool
	reason    string
}

// syncTrustRows is syncTrust for enrollments read in this transaction
// after their last change, in a few statements however many there are.
func syncTrustRows(ctx context.Context, tx txn, rows []trustRow, cause trustCause, at time.Time) error {
	var gained, lost []trustChange
	for _, r := range rows {
		e := r.enrollmentRow.enrollment()
		now, why := e.Trusted()
		if now == r.WasTrusted {
			continue
		}
		reason := why
		if cause.reason != "" {
			reason = cause.reason + " (" + why + ")"
		}
		c := trustChange{id: e.ID, email: e.UserEmail, now: now, reason: enrollment.TrustReason(reason)}
		if now {
			gained = append(gained, c)
		} else {
			lost = append(lost, c)
		}
	}
	for _, group := range [][]trustChange{gained, lost} {
		for _, chunk := range powerOfTwoChunks(group) {
			if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET trust_compliant = ?, trust_requested_at = NULL WHERE id IN `+inList(len(chunk))),
				append([]any{boolInt(chunk[0].now)}, changeIDs(chunk)...)...); err != nil {
				return fmt.Errorf("trust: %w", err)
			}
		}
	}
	// A loss is rare and one at a time (a denial, a disabled owner), and
	// each revocation records its own reason.
	for _, c := range lost {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE trust_certificates SET revoked_at = ?, revoke_reason = ?, revoke_code = ?
			WHERE reservation_id = ? AND revoked_at IS NULL`), ms(at), c.reason, cause.crlCode, c.id); err != nil {
			return fmt.Errorf("trust: revoke: %w", err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE trust_challenges SET used_at = ? WHERE enrollment_id = ? AND used_at IS NULL`),
			ms(at), c.id); err != nil {
			return fmt.Errorf("trust: void challenges: %w", err)
		}
	}
	for _, chunk := range powerOfTwoChunks(append(gained, lost...)) {
		args := make([]any, 0, 7*len(chunk))
		for _, c := range chunk {
			args = append(args, enrollment.NewID(), c.id, c.email, boolInt(c.now), c.reason, cause.initiator, ms(at))
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO trust_events (id, enrollment_id, user_email, compliant, reason, initiator, occurred_at)
			VALUES `+repeatRows("(?, ?, ?, ?, ?, ?, ?)", len(chunk))), args...); err != nil {
			return fmt.Errorf("trust: event: %w", err)
		}
	}
	return nil
}

func changeIDs(cs []trustChange) []any {
	out := make([]any, len(cs))
	for i, c := range cs {
		out[i] = c.id
	}
	return out
}

// TrustIssuance is the store as the trust CA's SCEP service sees it: the
// same contract as the identity CA's, over the trust tables, where a
// challenge belongs to an approved enrollment instead of a reservation.
type TrustIssuance struct{ s *Store }

// TrustIssuance returns the trust CA's issuance store.
func (s *Store) TrustIssuance() TrustIssuance { return TrustIssuance{s} }

// OpenReservationForChallenge returns the enrollment whose unused trust
// challenge this is, while the enrollment is trusted.
func (t TrustIssuance) OpenReservationForChallenge(ctx context.Context, challengeHash string, now time.Time) (string, error) {
	var id string
	err := t.s.getPrepared(ctx, &id, `SELECT c.enrollment_id FROM trust_challenges c JOIN enrollments e ON e.id = c.enrollment_id
		WHERE c.hash = ? AND c.used_at IS NULL AND c.expires_at > ? AND e.trust_compliant <> 0`, challengeHash, ms(now))
	if err != nil {
		return "", fmt.Errorf("trust challenge: %w", notFound(err))
	}
	return id, nil
}

// IssuedByTransaction finds the trust certificate of a retried request.
func (t TrustIssuance) IssuedByTransaction(ctx context.Context, transactionID, keySHA256 string) (scep.Certificate, error) {
	return t.s.certBy(ctx, "trust_certificates", `transaction_id = ? AND key_sha256 = ? ORDER BY issued_at DESC LIMIT 1`, transactionID, keySHA256)
}

// CertificateBySHA256 finds a trust certificate by fingerprint.
func (t TrustIssuance) CertificateBySHA256(ctx context.Context, fingerprint string) (scep.Certificate, error) {
	return t.s.certBy(ctx, "trust_certificates", `sha256 = ?`, fingerprint)
}

// EnrollmentApproved reports whether the enrollment is trusted: only then
// may its trust certificate renew.
func (t TrustIssuance) EnrollmentApproved(ctx context.Context, id string) (bool, error) {
	var ok bool
	err := t.s.getPrepared(ctx, &ok, `SELECT trust_compliant <> 0 FROM enrollments WHERE id = ?`, id)
	if err == sql.ErrNoRows {
		return false, nil
	}
	return ok, err
}

// AppendAudit records an event.
func (t TrustIssuance) AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error {
	return t.s.AppendAudit(ctx, ev)
}

// RecordIssued stores a trust certificate and consumes its challenge in one
// transaction, while the enrollment is still trusted. The device holds one
// trust certificate: the ones it replaces are revoked as superseded.
func (t TrustIssuance) RecordIssued(ctx context.Context, c scep.Certificate, challengeHash string, now time.Time, ev enrollment.AuditEvent) error {
	return t.s.inTx(ctx, func(tx txn) error {
		// The enrollment's row is locked first: a concurrent loss of trust
		// (which updates that row, then revokes) either commits before this
		// check, or waits and then revokes this certificate too. A plain
		// read would let a PostgreSQL denial miss a certificate inserted
		// while it ran.
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET trust_compliant = trust_compliant WHERE id = ? AND trust_compliant <> 0`),
			c.ReservationID)
		if err != nil {
			return fmt.Errorf("record trust certificate: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("record trust certificate: %w: enrollment %s is not trusted", enrollment.ErrConflict, c.ReservationID)
		}
		if challengeHash != "" {
			res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE trust_challenges SET used_at = ? WHERE hash = ? AND enrollment_id = ?
				AND used_at IS NULL AND expires_at > ?`), ms(now), challengeHash, c.ReservationID, ms(now))
			if err != nil {
				return fmt.Errorf("consume trust challenge: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return fmt.Errorf("consume trust challenge of %s: %w: already used or expired", c.ReservationID, enrollment.ErrConflict)
			}
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE trust_certificates SET revoked_at = ?, revoke_reason = ?, revoke_code = ?
			WHERE reservation_id = ? AND revoked_at IS NULL`), ms(now), "superseded by "+c.Serial, crlSuperseded, c.ReservationID); err != nil {
			return fmt.Errorf("supersede trust certificates: %w", err)
		}
		if err := insertCert(ctx, tx, "trust_certificates", c); err != nil {
			return err
		}
		return appendAudit(ctx, tx, ev)
	})
}

// certBy reads one certificate of table (certificates or
// trust_certificates) matching where.
func (s *Store) certBy(ctx context.Context, table, where string, args ...any) (scep.Certificate, error) {
	r, err := s.certRowBy(ctx, table, where, args...)
	if err != nil {
		return scep.Certificate{}, err
	}
	return r.cert()
}

// certRowBy reads the row certBy decodes.
func (s *Store) certRowBy(ctx context.Context, table, where string, args ...any) (certRow, error) {
	var r certRow
	if err := s.getPrepared(ctx, &r, `SELECT * FROM `+table+` WHERE `+where, args...); err != nil {
		return certRow{}, fmt.Errorf("certificate: %w", notFound(err))
	}
	return r, nil
}

func insertCert(ctx context.Context, tx txn, table string, c scep.Certificate) error {
	_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO `+table+` (serial, sha256, subject, not_before, not_after, reservation_id,
		key_sha256, transaction_id, der, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		c.Serial, c.SHA256, c.Subject, ms(c.NotBefore), ms(c.NotAfter), c.ReservationID, c.KeySHA256, c.TransactionID,
		base64.StdEncoding.EncodeToString(c.DER), ms(c.IssuedAt))
	if err != nil {
		return fmt.Errorf("record certificate: %w", err)
	}
	return nil
}

// TrustProfilesDue lists trusted enrollments owed a trust profile: none
// queued since retryAfter, and no live trust certificate that outlasts
// renewBefore. onlyNew looks only at enrollments never sent one since they
// became trusted: an indexed read cheap enough to repeat every second or
// two, where the full scan (renewals, unused challenges) runs rarely.
func (s *Store) TrustProfilesDue(ctx context.Context, now time.Time, renewBefore, retryAfter time.Duration, onlyNew bool, limit int) ([]enrollment.Enrollment, error) {
	var ids []string
	query, args := trustDueQuery(now, renewBefore, retryAfter, onlyNew, limit)
	if err := s.db.SelectContext(ctx, &ids, s.db.Rebind(query), args...); err != nil {
		return nil, fmt.Errorf("trust profiles due: %w", err)
	}
	byID, err := s.EnrollmentsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]enrollment.Enrollment, 0, len(ids))
	for _, id := range ids {
		if e, ok := byID[id]; ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// trustDueQuery is TrustProfilesDue's read. trust_compliant is 0 or 1 and
// is compared with =: with <> neither database can seek the
// (trust_compliant, trust_requested_at) index, and SQLite walked every
// enrollment in ID order instead, every two seconds (at 100,000 devices,
// a sixth of the server's CPU under load, by pprof).
func trustDueQuery(now time.Time, renewBefore, retryAfter time.Duration, onlyNew bool, limit int) (string, []any) {
	requested, args := `(e.trust_requested_at IS NULL OR e.trust_requested_at < ?)`, []any{ms(now.Add(-retryAfter))}
	if onlyNew {
		requested, args = `e.trust_requested_at IS NULL`, nil
	}
	return `SELECT e.id FROM enrollments e WHERE e.trust_compliant = 1 AND ` + requested + `
		AND NOT EXISTS (SELECT 1 FROM trust_certificates c WHERE c.reservation_id = e.id AND c.revoked_at IS NULL AND c.not_after > ?)
		ORDER BY e.id LIMIT ` + fmt.Sprint(limit), append(args, ms(now.Add(renewBefore)))
}

// QueueTrustProfile queues the command installing a trust profile, with
// its one-time challenge and a push, while the enrollment is trusted and
// owed one: of replicas racing for the same device, one wins and the
// others get ErrConflict. Unused challenges of earlier profiles are void.
func (s *Store) QueueTrustProfile(ctx context.Context, id, challengeHash string, expires time.Time, cmd enrollment.NewCommand,
	retryAfter time.Duration, at time.Time, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET trust_requested_at = ? WHERE id = ? AND trust_compliant <> 0
			AND (trust_requested_at IS NULL OR trust_requested_at < ?)`), ms(at), id, ms(at.Add(-retryAfter)))
		if err != nil {
			return fmt.Errorf("queue trust profile: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("queue trust profile for %s: %w: not trusted, or queued already", id, enrollment.ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE trust_challenges SET used_at = ? WHERE enrollment_id = ? AND used_at IS NULL`), ms(at), id); err != nil {
			return fmt.Errorf("queue trust profile: %w", err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO trust_challenges (hash, enrollment_id, created_at, expires_at) VALUES (?, ?, ?, ?)`),
			challengeHash, id, ms(at), ms(expires)); err != nil {
			return fmt.Errorf("queue trust profile: %w", err)
		}
		if err := enqueue(ctx, tx, id, []enrollment.NewCommand{cmd}, "vestibule", at); err != nil {
			return err
		}
		if err := enqueuePush(ctx, tx, id, at); err != nil {
			return err
		}
		return appendAudit(ctx, tx, ev)
	})
}

// TrustCertificateBySerial finds a trust certificate by its serial (upper
// case hex), for OCSP.
func (s *Store) TrustCertificateBySerial(ctx context.Context, serial string) (scep.Certificate, error) {
	return s.certBy(ctx, "trust_certificates", `serial = ?`, serial)
}

// TrustCertificateBySHA256 finds a trust certificate by fingerprint.
func (s *Store) TrustCertificateBySHA256(ctx context.Context, fingerprint string) (scep.Certificate, error) {
	return s.certBy(ctx, "trust_certificates", `sha256 = ?`, fingerprint)
}

// TrustCertificates lists an enrollment's trust certificates, newest first.
func (s *Store) TrustCertificates(ctx context.Context, enrollmentID string) ([]scep.Certificate, error) {
	return s.certsOf(ctx, "trust_certificates", enrollmentID, 20)
}

// certsOf lists a reservation's certificates of table, newest first, at
// most limit.
func (s *Store) certsOf(ctx context.Context, table, reservationID string, limit int) ([]scep.Certificate, error) {
	var rows []certRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT * FROM `+table+` WHERE reservation_id = ? ORDER BY issued_at DESC LIMIT `+
		fmt.Sprint(limit)), reservationID); err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	out := make([]scep.Certificate, 0, len(rows))
	for _, r := range rows {
		c, err := r.cert()
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// RevocationGeneration changes whenever a trust certificate is revoked:
// revocations are only ever added, so their count and latest time do.
func (s *Store) RevocationGeneration(ctx context.Context) (string, error) {
	var row struct {
		N    int64         `db:"n"`
		Last sql.NullInt64 `db:"last"`
	}
	// Not getPrepared: the count grows with the revocations, and a
	// request that ends should interrupt it.
	if err := s.db.GetContext(ctx, &row, `SELECT COUNT(*) AS n, MAX(revoked_at) AS last FROM trust_certificates WHERE revoked_at IS NOT NULL`); err != nil {
		return "", fmt.Errorf("revocation generation: %w", err)
	}
	return fmt.Sprintf("%d:%d", row.N, row.Last.Int64), nil
}

// RevokedTrust lists revoked trust certificates that have not expired.
func (s *Store) RevokedTrust(ctx context.Context, now time.Time) ([]trust.Revoked, error) {
	var rows []struct {
		Serial    string `db:"serial"`
		RevokedAt int64  `db:"revoked_at"`
		Code      int    `db:"revoke_code"`
		NotAfter  int64  `db:"not_after"`
	}
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT serial, revoked_at, revoke_code, not_after FROM trust_certificates
		WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY revoked_at`), ms(now)); err != nil {
		return nil, fmt.Errorf("revoked trust certificates: %w", err)
	}
	out := make([]trust.Revoked, len(rows))
	for i, r := range rows {
		out[i] = trust.Revoked{Serial: r.Serial, RevokedAt: fromMS(r.RevokedAt), Code: r.Code, NotAfter: fromMS(r.NotAfter)}
	}
	return out, nil
}

// LatestCRL returns the CRL every replica serves.
func (s *Store) LatestCRL(ctx context.Context) (trust.CRL, error) {
	var row struct {
		Number     int64  `db:"number"`
		Generation string `db:"generation"`
		ThisUpdate int64  `db:"this_update"`
		DER        string `db:"der"`
	}
	if err := s.db.GetContext(ctx, &row, `SELECT number, generation, this_update, der FROM trust_crl WHERE id = 1`); err != nil {
		return trust.CRL{}, fmt.Errorf("latest CRL: %w", notFound(err))
	}
	der, err := base64.StdEncoding.DecodeString(row.DER)
	if err != nil {
		return trust.CRL{}, fmt.Errorf("latest CRL: %w", err)
	}
	return trust.CRL{Number: row.Number, Generation: row.Generation, ThisUpdate: fromMS(row.ThisUpdate), DER: der}, nil
}

// SaveCRL replaces the CRL numbered prev with crl; a replica that signed
// in between wins, and this one gets ErrConflict.
func (s *Store) SaveCRL(ctx context.Context, prev int64, crl trust.CRL) error {
	der := base64.StdEncoding.EncodeToString(crl.DER)
	if prev == 0 {
		_, err := s.exec(ctx, `INSERT INTO trust_crl (id, number, generation, this_update, der) VALUES (1, ?, ?, ?, ?)`,
			crl.Number, crl.Generation, ms(crl.ThisUpdate), der)
		if err != nil && isUniqueViolation(err) {
			return fmt.Errorf("save CRL: %w", enrollment.ErrConflict)
		}
		return err
	}
	res, err := s.exec(ctx, `UPDATE trust_crl SET number = ?, generation = ?, this_update = ?, der = ? WHERE id = 1 AND number = ?`,
		crl.Number, crl.Generation, ms(crl.ThisUpdate), der, prev)
	if err != nil {
		return fmt.Errorf("save CRL: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("save CRL: %w", enrollment.ErrConflict)
	}
	return nil
}

// TrustStatus finds a trust certificate's revocation state by serial.
func (s *Store) TrustStatus(ctx context.Context, serial string) (trust.Status, error) {
	// One read: the row carries the revocation code beside the rest.
	r, err := s.certRowBy(ctx, "trust_certificates", `serial = ?`, serial)
	if err != nil {
		return trust.Status{}, err
	}
	st := trust.Status{Serial: r.Serial, NotAfter: fromMS(r.NotAfter), RevokedAt: fromNullMS(r.RevokedAt)}
	if st.RevokedAt != nil {
		st.Code = r.RevokeCode
	}
	return st, nil
}

// OwnerEmail is the e-mail of an enrollment's user.
func (s *Store) OwnerEmail(ctx context.Context, enrollmentID string) (string, error) {
	var email string
	err := s.db.GetContext(ctx, &email, s.db.Rebind(`SELECT u.email FROM enrollments e JOIN users u ON u.id = e.user_id WHERE e.id = ?`), enrollmentID)
	if err != nil {
		return "", fmt.Errorf("owner of %s: %w", enrollmentID, notFound(err))
	}
	return email, nil
}
