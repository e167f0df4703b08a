package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/enrollment"
)

type enrollmentRow struct {
	ID            string         `db:"id"`
	UserID        string         `db:"user_id"`
	UserEmail     string         `db:"user_email"`
	State         string         `db:"state"`
	ReEnrollment  bool           `db:"re_enrollment"`
	PreviousID    sql.NullString `db:"previous_id"`
	ConflictID    sql.NullString `db:"conflict_id"`
	UDID          string         `db:"udid"`
	Serial        string         `db:"serial"`
	Model         string         `db:"model"`
	ModelName     string         `db:"model_name"`
	ProductName   string         `db:"product_name"`
	OSVersion     string         `db:"os_version"`
	BuildVersion  string         `db:"build_version"`
	IMEI          string         `db:"imei"`
	MEID          string         `db:"meid"`
	DeviceName    string         `db:"device_name"`
	CheckinIP     string         `db:"checkin_ip"`
	CreatedAt     int64          `db:"created_at"`
	UpdatedAt     int64          `db:"updated_at"`
	DecidedAt     sql.NullInt64  `db:"decided_at"`
	DecidedBy     sql.NullString `db:"decided_by"`
	DecisionNote  string         `db:"decision_note"`
	Suspicious    bool           `db:"suspicious"`
	OwnerDisabled bool           `db:"owner_disabled"`
	AttestNonce   string         `db:"attest_nonce"`
	AttestCommand string         `db:"attest_command"`
	AttestStatus  string         `db:"attest_status"`
	AttestReason  string         `db:"attest_reason"`
	AttestSerial  string         `db:"attest_serial"`
	AttestUDID    string         `db:"attest_udid"`
	AttestOS      string         `db:"attest_os"`
	AttestSEPOS   string         `db:"attest_sepos"`
	AttestIssued  sql.NullInt64  `db:"attest_issued_at"`
	AttestChecked sql.NullInt64  `db:"attest_checked_at"`
	// The identity key, as Apple attested it (ACME).
	IdentityHardware bool          `db:"identity_hardware"`
	IdentitySerial   string        `db:"identity_serial"`
	IdentityUDID     string        `db:"identity_udid"`
	PushToken        string        `db:"push_token"`
	PushMagic        string        `db:"push_magic"`
	PushTopic        string        `db:"push_topic"`
	TokenUpdatedAt   sql.NullInt64 `db:"token_updated_at"`
	PushInvalidAt    sql.NullInt64 `db:"push_invalid_at"`
	LastSeenAt       sql.NullInt64 `db:"last_seen_at"`
}

func (r enrollmentRow) enrollment() enrollment.Enrollment {
	return enrollment.Enrollment{ID: r.ID, UserID: r.UserID, UserEmail: r.UserEmail, State: enrollment.State(r.State),
		ReEnrollment: r.ReEnrollment, PreviousID: r.PreviousID.String, ConflictID: r.ConflictID.String,
		Facts: enrollment.DeviceFacts{UDID: r.UDID, Serial: r.Serial, Model: r.Model, ModelName: r.ModelName, ProductName: r.ProductName,
			OSVersion: r.OSVersion, BuildVersion: r.BuildVersion, IMEI: r.IMEI, MEID: r.MEID, DeviceName: r.DeviceName},
		CheckinIP: r.CheckinIP, CreatedAt: fromMS(r.CreatedAt), UpdatedAt: fromMS(r.UpdatedAt), DecidedAt: fromNullMS(r.DecidedAt),
		DecidedBy: r.DecidedBy.String, DecisionNote: r.DecisionNote, Suspicious: r.Suspicious, OwnerDisabled: r.OwnerDisabled, PushToken: r.PushToken,
		PushMagic: r.PushMagic, PushTopic: r.PushTopic, TokenUpdatedAt: fromNullMS(r.TokenUpdatedAt), PushInvalidAt: fromNullMS(r.PushInvalidAt), LastSeenAt: fromNullMS(r.LastSeenAt),
		AttestNonce: r.AttestNonce, AttestCommand: r.AttestCommand, Attestation: enrollment.Attestation{Status: enrollment.AttestationStatus(r.AttestStatus), Reason: r.AttestReason,
			Serial: r.AttestSerial, UDID: r.AttestUDID, OSVersion: r.AttestOS, SEPOSVersion: r.AttestSEPOS,
			IssuedAt: fromNullMS(r.AttestIssued), CheckedAt: fromNullMS(r.AttestChecked)},
		Identity: enrollment.IdentityAttestation{HardwareBound: r.IdentityHardware, Serial: r.IdentitySerial, UDID: r.IdentityUDID}}
}

// enrollmentColumns and enrollmentFrom make selectEnrollment; the reads
// that need more of the row (its trust, its last command) put their
// columns in front of the same ones.
const (
	enrollmentColumns = `e.id, e.user_id, u.email AS user_email, e.state, e.re_enrollment <> 0 AS re_enrollment, e.previous_id, e.conflict_id,
	e.udid, e.serial, e.model, e.model_name, e.product_name, e.os_version, e.build_version, e.imei, e.meid, e.device_name,
	e.checkin_ip, e.created_at, e.updated_at, e.decided_at, e.decided_by, e.decision_note, e.suspicious <> 0 AS suspicious,
	e.push_token, e.push_magic, e.push_topic, e.token_updated_at, e.push_invalid_at, e.last_seen_at,
	u.disabled_at IS NOT NULL AS owner_disabled, e.attest_nonce, e.attest_command, e.attest_status, e.attest_reason, e.attest_serial, e.attest_udid,
	e.attest_os, e.attest_sepos, e.attest_issued_at, e.attest_checked_at,
	e.identity_hardware <> 0 AS identity_hardware, e.identity_serial, e.identity_udid`
	enrollmentFrom   = ` FROM enrollments e JOIN users u ON u.id = e.user_id`
	selectEnrollment = `SELECT ` + enrollmentColumns + enrollmentFrom
)

func getEnrollment(ctx context.Context, q sqlx.QueryerContext, id string) (enrollment.Enrollment, error) {
	var r enrollmentRow
	if err := sqlx.GetContext(ctx, q, &r, rebind(q, selectEnrollment+` WHERE e.id = ?`), id); err != nil {
		return enrollment.Enrollment{}, fmt.Errorf("enrollment %s: %w", id, notFound(err))
	}
	return r.enrollment(), nil
}

func rebind(q sqlx.QueryerContext, query string) string {
	if r, ok := q.(interface{ Rebind(string) string }); ok {
		return r.Rebind(query)
	}
	return query
}

// claimMiss is why a conditional claim touched no row.
type claimMiss struct {
	State       string         `db:"state"`
	TokenNonce  string         `db:"token_nonce"`
	ClaimedUDID sql.NullString `db:"claimed_udid"`
	ExpiresAt   int64          `db:"expires_at"`
}

// ClaimReservation is the single place a token turns into an enrollment.
// The conditional UPDATE is the claim: on PostgreSQL two devices racing for
// one token serialize on the row and the loser sees state 'claimed'.
func (s *Store) ClaimReservation(ctx context.Context, resID, nonce string, e enrollment.Enrollment, now time.Time,
	ev enrollment.AuditEvent, q *enrollment.Question) (enrollment.ClaimResult, error) {
	var out enrollment.ClaimResult
	var refused error
	err := s.inTx(ctx, func(tx txn) error {
		var userID string
		err := tx.GetContext(ctx, &userID, tx.Rebind(`UPDATE reservations SET state = 'claimed', claimed_at = ?, claimed_udid = ?
			WHERE id = ? AND token_nonce = ? AND state = 'open' AND expires_at > ? RETURNING user_id`), ms(now), e.Facts.UDID, resID, nonce, ms(now))
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("claim reservation: %w", err)
		}
		if errors.Is(err, sql.ErrNoRows) {
			var m claimMiss
			err := tx.GetContext(ctx, &m, tx.Rebind(`SELECT state, token_nonce, claimed_udid, expires_at FROM reservations WHERE id = ?`), resID)
			if err != nil {
				return fmt.Errorf("claim reservation %s: %w", resID, notFound(err))
			}
			miss := enrollment.JudgeClaimMiss(enrollment.ClaimSnapshot{State: enrollment.ReservationState(m.State), TokenNonce: m.TokenNonce,
				ClaimedUDID: m.ClaimedUDID.String, ExpiresAt: fromMS(m.ExpiresAt)}, nonce, e.Facts.UDID)
			switch miss {
			case enrollment.MissRetry:
				out.Retry = true
				if err := ask(ctx, tx, resID, q, now); err != nil {
					return err
				}
				out.Enrollment, err = getEnrollment(ctx, tx, resID)
				return err
			case enrollment.MissClaimedByAnother:
				// Commit the attempt: admins see it on the reservation.
				refused = miss.Err()
				_, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE reservations SET claim_attempts = claim_attempts + 1 WHERE id = ?`), resID)
				return err
			}
			refused = miss.Err()
			return nil
		}
		earlier, err := earlierEnrollments(ctx, tx, []enrollment.Enrollment{e})
		if err != nil {
			return fmt.Errorf("claim reservation: %w", err)
		}
		lin := enrollment.ClassifyClaim(userID, earliers(earlier))
		f := e.Facts
		// A new enrollment is asked its question as it is made: the row
		// carries the question, and the command is its first (ask does
		// the same for an enrollment that exists, in three more steps).
		var askNonce, askCommand, askStatus string
		if q != nil {
			askNonce, askCommand, askStatus = q.NonceHex, q.Command.UUID, "asked"
		}
		_, err = tx.ExecContext(ctx, tx.Rebind(`INSERT INTO enrollments (id, user_id, state, re_enrollment, previous_id, conflict_id, udid, serial,
			model, model_name, product_name, os_version, build_version, imei, meid, device_name, checkin_ip, created_at, updated_at, last_seen_at,
			identity_hardware, identity_serial, identity_udid, attest_nonce, attest_command, attest_status)
			VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			resID, userID, boolInt(lin.ReEnrollment()), nullString(lin.PreviousID), nullString(lin.ConflictID), f.UDID, f.Serial, f.Model,
			f.ModelName, f.ProductName, f.OSVersion, f.BuildVersion, f.IMEI, f.MEID, f.DeviceName, e.CheckinIP, ms(now), ms(now), ms(now),
			boolInt(e.Identity.HardwareBound), e.Identity.Serial, e.Identity.UDID, askNonce, askCommand, askStatus)
		if err != nil {
			return fmt.Errorf("claim reservation: create enrollment: %w", err)
		}
		if lin.ReEnrollment() {
			ev.Detail += " re_enrollment previous=" + lin.PreviousID
		}
		if s.webhook {
			if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO webhook_outbox (id, enrollment_id, event, created_at, next_attempt_at)
				VALUES (?, ?, 'enrollment.pending', ?, ?)`), enrollment.NewID(), resID, ms(now), ms(now)); err != nil {
				return fmt.Errorf("claim reservation: queue webhook: %w", err)
			}
		}
		if lin.ConflictID != "" {
			ev.Detail += " conflict_with=" + lin.ConflictID
		}
		events := []enrollment.AuditEvent{ev}
		if q != nil {
			if err := insertCommands(ctx, tx, []queuedCommand{{enrollmentID: resID, seq: 1, cmd: q.Command, preApproval: true}}, "vestibule", now); err != nil {
				return err
			}
			events = append(events, q.Event)
		}
		// One statement for both events: the claim is on every new
		// device's path.
		if err := appendAudits(ctx, tx, events); err != nil {
			return err
		}
		out.Enrollment, err = getEnrollment(ctx, tx, resID)
		return err
	})
	if err != nil {
		return enrollment.ClaimResult{}, err
	}
	if refused != nil {
		return enrollment.ClaimResult{}, fmt.Errorf("claim reservation %s: %w", resID, refused)
	}
	return out, nil
}

// missedUpdate explains a conditional UPDATE of enrollment id that touched
// no row: it is unknown (ErrNotFound), or no longer in the state the
// decision started from (ErrConflict, naming the state it is in).
func missedUpdate(ctx context.Context, tx txn, res sql.Result, op, id string) error {
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	return alreadyIn(ctx, tx, op, id)
}

// alreadyIn is why enrollment id was not moved: it is unknown, or in
// another state.
func alreadyIn(ctx context.Context, tx txn, op, id string) error {
	e, err := getEnrollment(ctx, tx, id)
	if err != nil {
		return err
	}
	return fmt.Errorf("%s: %w: enrollment %s is already %s", op, enrollment.ErrConflict, id, e.State)
}

// earlierRow is an enrollment that shares a UDID or a serial with one
// being approved.
type earlierRow struct {
	enrollment.Earlier
	udid, serial string
}

// earlierEnrollments finds the enrollments that share a UDID or a serial
// with any of es, with indexed lookups rather than one OR (which the
// planners answer by scanning the table).
func earlierEnrollments(ctx context.Context, tx txn, es []enrollment.Enrollment) ([]earlierRow, error) {
	var out []earlierRow
	seen := map[string]bool{}
	for _, chunk := range powerOfTwoChunks(es) {
		udids, serials := make([]any, len(chunk)), make([]any, len(chunk))
		for i, e := range chunk {
			udids[i], serials[i] = e.Facts.UDID, e.Facts.Serial
		}
		var rows []struct {
			ID        string `db:"id"`
			UserID    string `db:"user_id"`
			State     string `db:"state"`
			CreatedAt int64  `db:"created_at"`
			UDID      string `db:"udid"`
			Serial    string `db:"serial"`
		}
		in := inList(len(chunk))
		err := tx.SelectContext(ctx, &rows, tx.Rebind(`SELECT id, user_id, state, created_at, udid, serial FROM enrollments WHERE udid IN `+in+`
			UNION SELECT id, user_id, state, created_at, udid, serial FROM enrollments WHERE serial IN `+in+` AND serial <> ''`),
			append(udids, serials...)...)
		if err != nil {
			return nil, fmt.Errorf("earlier enrollments: %w", err)
		}
		for _, r := range rows {
			// UNION removes a row found twice within a chunk; one shared
			// by enrollments of two chunks is read twice.
			if seen[r.ID] {
				continue
			}
			seen[r.ID] = true
			out = append(out, earlierRow{Earlier: enrollment.Earlier{ID: r.ID, UserID: r.UserID, State: enrollment.State(r.State),
				CreatedAt: fromMS(r.CreatedAt)}, udid: r.UDID, serial: r.Serial})
		}
	}
	return out, nil
}

func earliers(rows []earlierRow) []enrollment.Earlier {
	out := make([]enrollment.Earlier, len(rows))
	for i, r := range rows {
		out[i] = r.Earlier
	}
	return out
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Enrollment returns one enrollment.
func (s *Store) Enrollment(ctx context.Context, id string) (enrollment.Enrollment, error) {
	var r enrollmentRow
	if err := s.getPrepared(ctx, &r, selectEnrollment+` WHERE e.id = ?`, id); err != nil {
		return enrollment.Enrollment{}, fmt.Errorf("enrollment %s: %w", id, notFound(err))
	}
	return r.enrollment(), nil
}

// EnrollmentByUDID returns the newest enrollment of a device.
func (s *Store) EnrollmentByUDID(ctx context.Context, udid string) (enrollment.Enrollment, error) {
	var r enrollmentRow
	err := s.db.GetContext(ctx, &r, s.db.Rebind(selectEnrollment+` WHERE e.udid = ? ORDER BY e.created_at DESC, e.id LIMIT 1`), udid)
	if err != nil {
		return enrollment.Enrollment{}, fmt.Errorf("enrollment of device %s: %w", udid, notFound(err))
	}
	return r.enrollment(), nil
}

// ListEnrollments returns enrollments newest first.
func (s *Store) ListEnrollments(ctx context.Context, f enrollment.EnrollmentFilter) ([]enrollment.Enrollment, error) {
	var where []string
	var args []any
	for _, c := range []struct {
		col, v string
	}{{"e.state", string(f.State)}, {"e.user_id", f.UserID}, {"e.udid", f.UDID}, {"e.serial", f.Serial}} {
		if c.v != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	q := selectEnrollment
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 || limit > 10_000 {
		limit = 1000
	}
	q += fmt.Sprintf(" ORDER BY e.created_at DESC, e.id LIMIT %d", limit)
	var rows []enrollmentRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("list enrollments: %w", err)
	}
	out := make([]enrollment.Enrollment, len(rows))
	for i, r := range rows {
		out[i] = r.enrollment()
	}
	return out, nil
}

// Decide moves a pending enrollment to approved or denied. The conditional
// UPDATE makes two admins deciding at once safe: exactly one wins.
func (s *Store) Decide(ctx context.Context, id string, from, to enrollment.State, by, note string, at time.Time,
	eff enrollment.Effects, ev enrollment.AuditEvent) (enrollment.Enrollment, error) {
	res, err := s.DecideMany(ctx, from, to, by, note, at, []enrollment.Decision{{ID: id, Effects: eff, Event: ev}})
	if err != nil {
		return enrollment.Enrollment{}, err
	}
	return res[0].Enrollment, res[0].Err
}

// DecideMany is Decide for many enrollments in one transaction: a bulk
// approval costs about as many statements per batch as one approval, where
// PostgreSQL's round trips are the cost.
func (s *Store) DecideMany(ctx context.Context, from, to enrollment.State, by, note string, at time.Time,
	ds []enrollment.Decision) ([]enrollment.DecisionResult, error) {
	// Two approvals of one device's enrollments at once (a bulk approval
	// of a profile installed twice) each supersede the other's row: on
	// PostgreSQL one is rolled back as a deadlock. Run again, it finds the
	// other decided and answers as any late decision does.
	seen := make(map[string]bool, len(ds))
	for _, d := range ds {
		if seen[d.ID] {
			return nil, fmt.Errorf("decide: %w: enrollment %s twice in one batch", enrollment.ErrInvalid, d.ID)
		}
		seen[d.ID] = true
	}
	var out []enrollment.DecisionResult
	err := retryDeadlocks(func() (err error) {
		out, err = s.decideMany(ctx, from, to, by, note, at, ds)
		return err
	})
	return out, err
}

func (s *Store) decideMany(ctx context.Context, from, to enrollment.State, by, note string, at time.Time,
	ds []enrollment.Decision) ([]enrollment.DecisionResult, error) {
	out := make([]enrollment.DecisionResult, len(ds))
	err := s.inTx(ctx, func(tx txn) error {
		ids := make([]string, len(ds))
		for i, d := range ds {
			ids[i] = d.ID
		}
		moved, err := moveStates(ctx, tx, s.dialect == Postgres, ids, from, to, by, note, at)
		if err != nil {
			return err
		}
		// Read once, with their trust and their last command's seq, after
		// the UPDATE that locks the rows: nothing below changes them, and
		// every other writer of them (a TokenUpdate, an enqueuer, APNs's
		// refusal of the token) waits for the lock. Owners' rows are not
		// locked. Each read saved is a round trip on PostgreSQL, on every
		// approval. Not folded into the UPDATE's RETURNING: PostgreSQL runs
		// RETURNING's subqueries in the snapshot taken before the UPDATE
		// waited for the lock, so the last seq would miss commands an
		// enqueuer committed meanwhile ("an approval among other writers"
		// fails so).
		rows, err := readDecisions(ctx, tx, moved)
		if err != nil {
			return err
		}
		var decided []enrollment.Decision
		var superseding []enrollment.Enrollment
		for i, d := range ds {
			r, ok := rows[d.ID]
			if !ok {
				out[i].Err = alreadyIn(ctx, tx, "decide", d.ID)
				if !errors.Is(out[i].Err, enrollment.ErrConflict) && !errors.Is(out[i].Err, enrollment.ErrNotFound) {
					return out[i].Err
				}
				continue
			}
			out[i].Enrollment = r.enrollmentRow.enrollment()
			decided = append(decided, d)
			if d.Effects.Supersede {
				superseding = append(superseding, out[i].Enrollment)
			}
		}
		if err := supersedeFor(ctx, tx, superseding, rows, at); err != nil {
			return err
		}
		var cmds []queuedCommand
		var pushes []string
		revoke := map[string][]string{}
		trust := make([]trustRow, 0, len(decided))
		events := make([]enrollment.AuditEvent, 0, len(decided))
		for _, d := range decided {
			r := rows[d.ID]
			for i, c := range d.Effects.Commands {
				cmds = append(cmds, queuedCommand{enrollmentID: d.ID, seq: r.LastSeq + int64(i) + 1, cmd: c})
			}
			if d.Effects.Push && r.PushToken != "" && !r.PushInvalidAt.Valid {
				pushes = append(pushes, d.ID)
			}
			if why := d.Effects.RevokeCertificates; why != "" {
				revoke[why] = append(revoke[why], d.ID)
			}
			trust = append(trust, r.trustRow)
			events = append(events, d.Event)
		}
		// Chunks keep a long list within the databases' limits on
		// arguments, and the statements' texts few.
		for _, chunk := range powerOfTwoChunks(cmds) {
			if err := insertCommands(ctx, tx, chunk, by, at); err != nil {
				return err
			}
		}
		// In ID order, as the outbox's other writers take its rows.
		slices.Sort(pushes)
		for _, chunk := range powerOfTwoChunks(pushes) {
			if err := insertPushes(ctx, tx, chunk, at); err != nil {
				return err
			}
		}
		for why, ids := range revoke {
			if err := revokeEnrollmentCerts(ctx, tx, ids, why, at); err != nil {
				return err
			}
		}
		cause := trustCause{reason: string(to) + " by " + by, initiator: "admin", crlCode: crlPrivilegeWithdrawn}
		if note != "" {
			cause.reason += ": " + note
		}
		if err := syncTrustRows(ctx, tx, trust, cause, at); err != nil {
			return err
		}
		for _, chunk := range powerOfTwoChunks(events) {
			if err := appendAudits(ctx, tx, chunk); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// moveStates moves the enrollments of ids still in state from to state
// to, locking their rows, and returns those it moved. On PostgreSQL the
// rows are locked first, in ID order, as every writer of several
// enrollments locks them (a fleet command, disabling their owner): an
// UPDATE with IN locks in the order its plan reads, and two orders
// deadlock. SQLite's immediate transaction holds the whole database.
func moveStates(ctx context.Context, tx txn, postgres bool, ids []string, from, to enrollment.State, by, note string, at time.Time) ([]string, error) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	var moved []string
	for _, chunk := range powerOfTwoChunks(ids) {
		set := []any{string(to), ms(at), by, note, ms(at)}
		var q string
		var args []any
		if postgres {
			q = `WITH locked AS (SELECT id FROM enrollments WHERE id IN ` + inList(len(chunk)) + ` ORDER BY id COLLATE "C" FOR NO KEY UPDATE)
				UPDATE enrollments e SET state = ?, decided_at = ?, decided_by = ?, decision_note = ?, updated_at = ?
				FROM locked WHERE e.id = locked.id AND e.state = ? RETURNING e.id`
			args = append(append(anys(chunk), set...), string(from))
		} else {
			q = `UPDATE enrollments SET state = ?, decided_at = ?, decided_by = ?, decision_note = ?, updated_at = ?
				WHERE id IN ` + inList(len(chunk)) + ` AND state = ? RETURNING id`
			args = append(append(set, anys(chunk)...), string(from))
		}
		var got []string
		if err := tx.SelectContext(ctx, &got, tx.Rebind(q), args...); err != nil {
			return nil, fmt.Errorf("decide: %w", err)
		}
		moved = append(moved, got...)
	}
	return moved, nil
}

// decisionRow is what a decision reads of its enrollment: the enrollment,
// the trust last announced for it and its last command's seq.
type decisionRow struct {
	trustRow
	LastSeq int64 `db:"last_seq"`
}

const selectDecisions = `SELECT (SELECT COALESCE(MAX(c.seq), 0) FROM commands c WHERE c.enrollment_id = e.id) AS last_seq,
	e.trust_compliant <> 0 AS was_trusted, ` + enrollmentColumns + enrollmentFrom + ` WHERE e.id IN `

// readDecisions reads the decision rows of ids, by ID.
func readDecisions(ctx context.Context, tx txn, ids []string) (map[string]decisionRow, error) {
	out := make(map[string]decisionRow, len(ids))
	for _, chunk := range powerOfTwoChunks(ids) {
		var rows []decisionRow
		if err := tx.SelectContext(ctx, &rows, tx.Rebind(selectDecisions+inList(len(chunk))), anys(chunk)...); err != nil {
			return nil, fmt.Errorf("decide: %w", err)
		}
		for _, r := range rows {
			out[r.ID] = r
		}
	}
	return out, nil
}

// supersedeFor retires the earlier enrollments that approving each of es
// replaces (enrollment.Superseded decides which: the same user's only),
// and revokes their certificates: one identity per device and owner.
// Their earlier enrollments are found in one read; one that is itself in
// the batch (decided) refuses it.
func supersedeFor(ctx context.Context, tx txn, es []enrollment.Enrollment, decided map[string]decisionRow, at time.Time) error {
	earlier, err := earlierEnrollments(ctx, tx, es)
	if err != nil {
		return fmt.Errorf("supersede: %w", err)
	}
	for _, e := range es {
		var mine []enrollment.Earlier
		for _, r := range earlier {
			if r.udid == e.Facts.UDID || (e.Facts.Serial != "" && r.serial == e.Facts.Serial) {
				mine = append(mine, r.Earlier)
			}
		}
		ids := enrollment.Superseded(e.UserID, e.ID, mine)
		if len(ids) == 0 {
			continue
		}
		for _, id := range ids {
			if _, ok := decided[id]; ok {
				return fmt.Errorf("supersede: %w: enrollments %s and %s are of one device and owner; decide them one at a time",
					enrollment.ErrConflict, e.ID, id)
			}
		}
		if err := supersede(ctx, tx, e.ID, ids, at); err != nil {
			return err
		}
	}
	return nil
}

// supersede retires ids, replaced by enrollment by.
func supersede(ctx context.Context, tx txn, by string, ids []string, at time.Time) error {
	q, args, err := sqlx.In(`UPDATE enrollments SET state = 'superseded', updated_at = ? WHERE id IN (?) AND state IN ('pending', 'approved')`, ms(at), ids)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(q), args...); err != nil {
		return fmt.Errorf("supersede: %w", err)
	}
	if err := syncTrust(ctx, tx, ids, trustCause{reason: "superseded by " + by, initiator: "admin", crlCode: crlSuperseded}, at); err != nil {
		return err
	}
	return revokeEnrollmentCerts(ctx, tx, ids, "superseded by "+by, at)
}

// Retire ends an enrollment by an approver's explicit decision (the device
// changed hands): superseded, its certificates revoked, with the audit
// event, only from pending or approved.
func (s *Store) Retire(ctx context.Context, id, by, note string, at time.Time, ev enrollment.AuditEvent) (enrollment.Enrollment, error) {
	var out enrollment.Enrollment
	err := s.inTx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET state = 'superseded', decided_at = ?, decided_by = ?, decision_note = ?,
			updated_at = ? WHERE id = ? AND state IN ('pending', 'approved')`), ms(at), by, note, ms(at), id)
		if err != nil {
			return fmt.Errorf("retire: %w", err)
		}
		if err := missedUpdate(ctx, tx, res, "retire", id); err != nil {
			return err
		}
		if err := revokeEnrollmentCerts(ctx, tx, []string{id}, "retired: "+note, at); err != nil {
			return err
		}
		if err := syncTrust(ctx, tx, []string{id}, trustCause{reason: "retired by " + by + ": " + note, initiator: "admin",
			crlCode: crlAffiliationChanged}, at); err != nil {
			return err
		}
		if err := appendAudit(ctx, tx, ev); err != nil {
			return err
		}
		out, err = getEnrollment(ctx, tx, id)
		return err
	})
	return out, err
}

// UpdatePushInfo stores what TokenUpdate delivered.
func (s *Store) UpdatePushInfo(ctx context.Context, id string, p enrollment.PushInfo, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE enrollments SET push_token = ?, push_magic = ?, push_topic = ?,
		token_updated_at = ?, last_seen_at = ?, updated_at = ?, push_invalid_at = NULL WHERE id = ?`, p.Token, p.Magic, p.Topic, ms(at), ms(at), ms(at), id)
	if err != nil {
		return fmt.Errorf("update push info: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update push info: enrollment %s: %w", id, enrollment.ErrNotFound)
	}
	return nil
}

// MarkUnenrolled records a CheckOut.
func (s *Store) MarkUnenrolled(ctx context.Context, id string, at time.Time, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET state = 'unenrolled', updated_at = ? WHERE id = ?`), ms(at), id); err != nil {
			return fmt.Errorf("unenroll: %w", err)
		}
		if err := revokeEnrollmentCerts(ctx, tx, []string{id}, "checked out", at); err != nil {
			return err
		}
		if err := syncTrust(ctx, tx, []string{id}, trustCause{reason: "the device removed its enrollment", initiator: "user",
			crlCode: crlCessationOfOperation}, at); err != nil {
			return err
		}
		return appendAudit(ctx, tx, ev)
	})
}

// Touch records a check-in time.
func (s *Store) Touch(ctx context.Context, id string, at time.Time) error {
	_, err := s.exec(ctx, `UPDATE enrollments SET last_seen_at = ? WHERE id = ?`, ms(at), id)
	if err != nil {
		return fmt.Errorf("touch enrollment: %w", err)
	}
	return nil
}

// revokeEnrollmentCerts revokes every live certificate issued for the
// enrollments' reservations (an enrollment's ID is its reservation's).
func revokeEnrollmentCerts(ctx context.Context, tx txn, ids []string, reason string, at time.Time) error {
	q, args, err := sqlx.In(`UPDATE certificates SET revoked_at = ?, revoke_reason = ? WHERE reservation_id IN (?) AND revoked_at IS NULL`,
		ms(at), reason, ids)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(q), args...); err != nil {
		return fmt.Errorf("revoke certificates: %w", err)
	}
	return nil
}

// MarkSuspicious records that the enrollment's owner says it was not them,
// and denies it if it is still pending (revoking its certificates).
func (s *Store) MarkSuspicious(ctx context.Context, id string, at time.Time, ev enrollment.AuditEvent) (enrollment.Enrollment, error) {
	var out enrollment.Enrollment
	err := s.inTx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET suspicious = 1, updated_at = ? WHERE id = ?`), ms(at), id); err != nil {
			return fmt.Errorf("mark suspicious: %w", err)
		}
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET state = 'denied', decided_at = ?, decided_by = ?,
			decision_note = 'the owner says this was not them' WHERE id = ? AND state = 'pending'`), ms(at), ev.Actor, id)
		if err != nil {
			return fmt.Errorf("mark suspicious: %w", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			if err := revokeEnrollmentCerts(ctx, tx, []string{id}, "owner reported it", at); err != nil {
				return err
			}
		}
		if err := syncTrust(ctx, tx, []string{id}, trustCause{reason: "reported by " + ev.Actor, initiator: "user",
			crlCode: crlKeyCompromise}, at); err != nil {
			return err
		}
		if err := appendAudit(ctx, tx, ev); err != nil {
			return err
		}
		out, err = getEnrollment(ctx, tx, id)
		return err
	})
	return out, err
}

// EnrollmentsByID returns the enrollments with these IDs, by ID.
func (s *Store) EnrollmentsByID(ctx context.Context, ids []string) (map[string]enrollment.Enrollment, error) {
	out := map[string]enrollment.Enrollment{}
	if len(ids) == 0 {
		return out, nil
	}
	q, args, err := sqlx.In(selectEnrollment+` WHERE e.id IN (?)`, ids)
	if err != nil {
		return nil, err
	}
	var rows []enrollmentRow
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("enrollments by ID: %w", err)
	}
	for _, r := range rows {
		out[r.ID] = r.enrollment()
	}
	return out, nil
}

// ApprovedCounts counts each user's approved enrollments, up to atMost:
// an owner of thousands of devices costs no more than one of atMost, so
// the pending queue does not slow down as the fleet grows.
func (s *Store) ApprovedCounts(ctx context.Context, userIDs []string, atMost int) (map[string]int, error) {
	out := map[string]int{}
	if len(userIDs) == 0 {
		return out, nil
	}
	q, args, err := sqlx.In(`SELECT u.id AS user_id, (SELECT COUNT(*) FROM (SELECT 1 FROM enrollments e
		WHERE e.user_id = u.id AND e.state = 'approved' LIMIT ?) capped) AS n FROM users u WHERE u.id IN (?)`, atMost, userIDs)
	if err != nil {
		return nil, err
	}
	var rows []struct {
		UserID string `db:"user_id"`
		N      int    `db:"n"`
	}
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("approved counts: %w", err)
	}
	for _, r := range rows {
		if r.N > 0 {
			out[r.UserID] = r.N
		}
	}
	return out, nil
}

// ask stores the attestation question q on enrollment id and queues it as
// the one pre-approval command, unless id was asked already (a concurrent
// retry's question stands). Nothing when q is nil.
func ask(ctx context.Context, tx txn, id string, q *enrollment.Question, at time.Time) error {
	if q == nil {
		return nil
	}
	res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET attest_nonce = ?, attest_command = ?, attest_status = 'asked'
		WHERE id = ? AND attest_status = ''`), q.NonceHex, q.Command.UUID, id)
	if err != nil {
		return fmt.Errorf("ask attestation: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return nil
	}
	if err := enqueueAs(ctx, tx, id, []enrollment.NewCommand{q.Command}, "vestibule", at, true); err != nil {
		return err
	}
	return appendAudit(ctx, tx, q.Event)
}

// RecordAttestation stores the result of the attestation question.
func (s *Store) RecordAttestation(ctx context.Context, id, nonceHex string, a enrollment.Attestation, ev enrollment.AuditEvent) error {
	return s.inTx(ctx, func(tx txn) error {
		var issued, checked sql.NullInt64
		if a.IssuedAt != nil {
			issued = sql.NullInt64{Int64: ms(*a.IssuedAt), Valid: true}
		}
		if a.CheckedAt != nil {
			checked = sql.NullInt64{Int64: ms(*a.CheckedAt), Valid: true}
		}
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE enrollments SET attest_status = ?, attest_reason = ?, attest_serial = ?, attest_udid = ?,
			attest_os = ?, attest_sepos = ?, attest_issued_at = ?, attest_checked_at = ?
			WHERE id = ? AND attest_status = 'asked' AND attest_nonce = ?`),
			string(a.Status), a.Reason, a.Serial, a.UDID, a.OSVersion, a.SEPOSVersion, issued, checked,
			id, nonceHex)
		if err != nil {
			return fmt.Errorf("record attestation: %w", err)
		}
		// Judged once: a second answer, even a concurrent one, changes nothing.
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("record attestation: %w: enrollment %s is not waiting for this answer", enrollment.ErrConflict, id)
		}
		if err := syncTrust(ctx, tx, []string{id}, trustCause{initiator: "policy", crlCode: crlPrivilegeWithdrawn}, ev.At); err != nil {
			return err
		}
		return appendAudit(ctx, tx, ev)
	})
}

// EnrollmentIDsWithPrefix returns up to limit enrollment IDs that start
// with prefix (lower-case hex and dashes).
func (s *Store) EnrollmentIDsWithPrefix(ctx context.Context, prefix string, limit int) ([]string, error) {
	var ids []string
	for _, c := range prefix {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '-') {
			return nil, fmt.Errorf("enrollments by ID prefix: %w: %q", enrollment.ErrInvalid, prefix)
		}
	}
	// Hex digits and dashes hold no LIKE wildcard.
	err := s.db.SelectContext(ctx, &ids, s.db.Rebind(`SELECT id FROM enrollments WHERE id LIKE ? ORDER BY id LIMIT `+fmt.Sprint(limit)), prefix+"%")
	if err != nil {
		return nil, fmt.Errorf("enrollments by ID prefix: %w", err)
	}
	return ids, nil
}
