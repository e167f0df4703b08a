package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/vestibule-mdm/vestibule/acme"
	"github.com/vestibule-mdm/vestibule/enrollment"
)

// ACME is the store as the ACME server sees it.
type ACME struct{ s *Store }

// ACME returns the ACME server's store.
func (s *Store) ACME() ACME { return ACME{s} }

// AddNonce stores a nonce, pruning expired ones now and then.
func (a ACME) AddNonce(ctx context.Context, nonce string, expires time.Time) error {
	if _, err := a.s.exec(ctx, `INSERT INTO acme_nonces (nonce, expires_at) VALUES (?, ?)`, nonce, ms(expires)); err != nil {
		return fmt.Errorf("ACME nonce: %w", err)
	}
	if nonce[0] < '0' { // "-" starts one nonce in 64: prune then
		_, _ = a.s.exec(ctx, `DELETE FROM acme_nonces WHERE expires_at < ?`, ms(time.Now()))
	}
	return nil
}

// UseNonce consumes a nonce: the DELETE is the gate, so of two requests
// with one nonce exactly one succeeds, on any replica.
func (a ACME) UseNonce(ctx context.Context, nonce string, now time.Time) (bool, error) {
	if nonce == "" || len(nonce) > 64 {
		return false, nil
	}
	res, err := a.s.exec(ctx, `DELETE FROM acme_nonces WHERE nonce = ? AND expires_at > ?`, nonce, ms(now))
	if err != nil {
		return false, fmt.Errorf("ACME nonce: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

type acmeAccountRow struct {
	ID         string `db:"id"`
	Thumbprint string `db:"thumbprint"`
	JWK        string `db:"jwk"`
	Status     string `db:"status"`
	CreatedAt  int64  `db:"created_at"`
}

func (r acmeAccountRow) account() acme.Account {
	return acme.Account{ID: r.ID, Thumbprint: r.Thumbprint, JWK: r.JWK, Status: r.Status, CreatedAt: fromMS(r.CreatedAt)}
}

// CreateAccount stores an account, or returns the one with the same key.
func (a ACME) CreateAccount(ctx context.Context, acct acme.Account) (acme.Account, bool, error) {
	_, err := a.s.exec(ctx, `INSERT INTO acme_accounts (id, thumbprint, jwk, status, created_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (thumbprint) DO NOTHING`, acct.ID, acct.Thumbprint, acct.JWK, acct.Status, ms(acct.CreatedAt))
	if err != nil {
		return acme.Account{}, false, fmt.Errorf("ACME account: %w", err)
	}
	got, err := a.AccountByThumbprint(ctx, acct.Thumbprint)
	return got, err == nil && got.ID == acct.ID, err
}

// AccountByThumbprint finds an account by its key.
func (a ACME) AccountByThumbprint(ctx context.Context, thumbprint string) (acme.Account, error) {
	var r acmeAccountRow
	if err := a.s.getPrepared(ctx, &r, `SELECT * FROM acme_accounts WHERE thumbprint = ?`, thumbprint); err != nil {
		return acme.Account{}, fmt.Errorf("ACME account: %w", notFound(err))
	}
	return r.account(), nil
}

// Account finds an account by ID.
func (a ACME) Account(ctx context.Context, id string) (acme.Account, error) {
	var r acmeAccountRow
	if err := a.s.getPrepared(ctx, &r, `SELECT * FROM acme_accounts WHERE id = ?`, id); err != nil {
		return acme.Account{}, fmt.Errorf("ACME account: %w", notFound(err))
	}
	return r.account(), nil
}

// ACMEReservation finds the reservation of an ACME profile by the hash of
// its ClientIdentifier: unused and open (a first enrollment), or used by an
// enrollment that is approved with its owner enabled (a renewal).
func (a ACME) ACMEReservation(ctx context.Context, clientHash string, now time.Time) (string, bool, error) {
	var row struct {
		ID       string        `db:"id"`
		State    string        `db:"state"`
		Used     sql.NullInt64 `db:"challenge_used_at"`
		Expires  int64         `db:"expires_at"`
		Approved bool          `db:"approved"`
	}
	err := a.s.getPrepared(ctx, &row, `SELECT r.id, r.state, r.challenge_used_at, r.expires_at,
		COALESCE((SELECT e.state = 'approved' AND u.disabled_at IS NULL FROM enrollments e JOIN users u ON u.id = e.user_id WHERE e.id = r.id), false)
			AS approved
		FROM reservations r WHERE r.challenge_hash = ? AND r.identity = 'acme'`, clientHash)
	if err != nil {
		return "", false, fmt.Errorf("reservation for ClientIdentifier: %w", notFound(err))
	}
	switch {
	case !row.Used.Valid && row.State == "open" && row.Expires > ms(now):
		return row.ID, false, nil
	case row.Used.Valid && row.Approved:
		return row.ID, true, nil
	}
	return "", false, fmt.Errorf("reservation for ClientIdentifier: %w", enrollment.ErrNotFound)
}

type acmeOrderRow struct {
	ID              string        `db:"id"`
	AccountID       string        `db:"account_id"`
	ReservationID   string        `db:"reservation_id"`
	ClientHash      string        `db:"client_hash"`
	Renewal         bool          `db:"renewal"`
	Status          string        `db:"status"`
	ExpiresAt       int64         `db:"expires_at"`
	Token           string        `db:"token"`
	ChallengeStatus string        `db:"challenge_status"`
	Error           string        `db:"error"`
	AttestedSerial  string        `db:"attested_serial"`
	AttestedUDID    string        `db:"attested_udid"`
	AttestedKey     string        `db:"attested_key"`
	ValidatedAt     sql.NullInt64 `db:"validated_at"`
	CertSerial      string        `db:"cert_serial"`
	CreatedAt       int64         `db:"created_at"`
}

// CreateOrder stores a new order.
func (a ACME) CreateOrder(ctx context.Context, o acme.Order, ev enrollment.AuditEvent) error {
	return a.s.inTx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO acme_orders (id, account_id, reservation_id, client_hash, renewal, status, expires_at,
			token, challenge_status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`), o.ID, o.AccountID, o.ReservationID, o.ClientHash,
			boolInt(o.Renewal), o.Status, ms(o.ExpiresAt), o.Token, o.ChallengeStatus, ms(o.CreatedAt)); err != nil {
			return fmt.Errorf("ACME order: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// Order reads an order.
func (a ACME) Order(ctx context.Context, id string) (acme.Order, error) {
	var r acmeOrderRow
	if err := a.s.getPrepared(ctx, &r, `SELECT * FROM acme_orders WHERE id = ?`, id); err != nil {
		return acme.Order{}, fmt.Errorf("ACME order: %w", notFound(err))
	}
	key, err := base64.StdEncoding.DecodeString(r.AttestedKey)
	if err != nil {
		return acme.Order{}, fmt.Errorf("ACME order %s: attested key: %w", id, err)
	}
	return acme.Order{ID: r.ID, AccountID: r.AccountID, ReservationID: r.ReservationID, ClientHash: r.ClientHash, Renewal: r.Renewal, Status: r.Status,
		ExpiresAt: fromMS(r.ExpiresAt), Token: r.Token, ChallengeStatus: r.ChallengeStatus, Error: r.Error, AttestedSerial: r.AttestedSerial,
		AttestedUDID: r.AttestedUDID, AttestedKey: key, ValidatedAt: fromNullMS(r.ValidatedAt), CertSerial: r.CertSerial,
		CreatedAt: fromMS(r.CreatedAt)}, nil
}

// ValidateChallenge records the challenge's outcome, once.
func (a ACME) ValidateChallenge(ctx context.Context, o acme.Order, ev enrollment.AuditEvent) error {
	return a.s.inTx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE acme_orders SET status = ?, challenge_status = ?, error = ?, attested_serial = ?,
			attested_udid = ?, attested_key = ?, validated_at = ? WHERE id = ? AND challenge_status = 'pending' AND status = 'pending'`),
			o.Status, o.ChallengeStatus, enrollment.TrustReason(o.Error), o.AttestedSerial, o.AttestedUDID,
			base64.StdEncoding.EncodeToString(o.AttestedKey), nullMS(o.ValidatedAt), o.ID)
		if err != nil {
			return fmt.Errorf("ACME challenge: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("ACME challenge of %s: %w: answered already", o.ID, enrollment.ErrConflict)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// FailOrder makes a pending or ready order invalid.
func (a ACME) FailOrder(ctx context.Context, id, reason string, ev enrollment.AuditEvent) error {
	return a.s.inTx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE acme_orders SET status = 'invalid', error = ? WHERE id = ? AND status IN ('pending', 'ready')`),
			enrollment.TrustReason(reason), id); err != nil {
			return fmt.Errorf("ACME order: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// RecordACMEIssued stores an ACME identity certificate, consumes the
// ClientIdentifier of its reservation and makes the order valid, in one
// transaction: the consuming UPDATE is the gate, as for SCEP challenges.
func (a ACME) RecordACMEIssued(ctx context.Context, orderID string, c acme.Certificate, clientHash string, now time.Time, ev enrollment.AuditEvent) error {
	return a.s.inTx(ctx, func(tx txn) error {
		if err := consumeChallenge(ctx, tx, c.ReservationID, clientHash, "acme", "ClientIdentifier", now); err != nil {
			return err
		}
		return recordACMECert(ctx, tx, orderID, c, ev)
	})
}

// RecordACMERenewal stores a renewed identity certificate of an approved
// enrollment, attested for the serial its identity was first attested
// with. The enrollment's row is locked first, so a revocation committing
// meanwhile either comes before (and refuses) or after (and revokes this
// certificate too).
func (a ACME) RecordACMERenewal(ctx context.Context, orderID string, c acme.Certificate, now time.Time, ev enrollment.AuditEvent) error {
	return a.s.inTx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET updated_at = updated_at WHERE id = ? AND state = 'approved'
			AND identity_hardware <> 0 AND identity_serial = ?
			AND user_id IN (SELECT id FROM users WHERE disabled_at IS NULL)`), c.ReservationID, c.AttestedSerial)
		if err != nil {
			return fmt.Errorf("ACME renewal: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("ACME renewal of %s: %w: not approved, owner disabled, or another device attested", c.ReservationID, enrollment.ErrConflict)
		}
		// One identity per device: the certificates it renews are revoked
		// (a device that lost the reply renews again).
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE certificates SET revoked_at = ?, revoke_reason = ? WHERE reservation_id = ?
			AND revoked_at IS NULL`), ms(now), "superseded by renewal "+c.Serial, c.ReservationID); err != nil {
			return fmt.Errorf("ACME renewal: %w", err)
		}
		return recordACMECert(ctx, tx, orderID, c, ev)
	})
}

func recordACMECert(ctx context.Context, tx txn, orderID string, c acme.Certificate, ev enrollment.AuditEvent) error {
	res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE acme_orders SET status = 'valid', cert_serial = ? WHERE id = ? AND status = 'ready'`),
		c.Serial, orderID)
	if err != nil {
		return fmt.Errorf("ACME order: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("ACME order %s: %w: not ready", orderID, enrollment.ErrConflict)
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO certificates (serial, sha256, subject, not_before, not_after, reservation_id,
		key_sha256, transaction_id, der, issued_at, hardware_bound, attested_serial, attested_udid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`),
		c.Serial, c.SHA256, c.Subject, ms(c.NotBefore), ms(c.NotAfter), c.ReservationID, c.KeySHA256, "acme:"+orderID,
		base64.StdEncoding.EncodeToString(c.DER), ms(c.IssuedAt), c.AttestedSerial, c.AttestedUDID); err != nil {
		return fmt.Errorf("record certificate: %w", err)
	}
	return appendAudit(ctx, tx, ev)
}

// CertificateDER returns an issued certificate.
func (a ACME) CertificateDER(ctx context.Context, serial string) ([]byte, error) {
	c, err := a.s.certBy(ctx, "certificates", `serial = ?`, serial)
	if err != nil {
		return nil, err
	}
	return c.DER, nil
}

// AppendAudit records an event.
func (a ACME) AppendAudit(ctx context.Context, ev enrollment.AuditEvent) error {
	return a.s.AppendAudit(ctx, ev)
}
