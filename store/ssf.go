package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/vestibule-mdm/vestibule/enrollment"
	"github.com/vestibule-mdm/vestibule/trust/ssf"
)

type streamRow struct {
	ID                  string        `db:"id"`
	TokenID             string        `db:"token_id"`
	Audience            string        `db:"audience"`
	Description         string        `db:"description"`
	EventsRequested     string        `db:"events_requested"`
	Method              string        `db:"delivery_method"`
	EndpointURL         string        `db:"endpoint_url"`
	AuthorizationHeader string        `db:"authorization_header"`
	DefaultSubjects     string        `db:"default_subjects"`
	Status              string        `db:"status"`
	StatusReason        string        `db:"status_reason"`
	CreatedAt           int64         `db:"created_at"`
	UpdatedAt           int64         `db:"updated_at"`
	LastDeliveredAt     sql.NullInt64 `db:"last_delivered_at"`
	LastError           string        `db:"last_error"`
	LastErrorAt         sql.NullInt64 `db:"last_error_at"`
	LeaseUntil          sql.NullInt64 `db:"lease_until"`
	HoldUntil           sql.NullInt64 `db:"hold_until"`
	PushAttempts        int           `db:"push_attempts"`
	LastVerificationAt  sql.NullInt64 `db:"last_verification_at"`
	Undelivered         int           `db:"undelivered"`
}

func (r streamRow) stream() ssf.Stream {
	var events []string
	_ = json.Unmarshal([]byte(r.EventsRequested), &events)
	return ssf.Stream{ID: r.ID, TokenID: r.TokenID, Audience: r.Audience, Description: r.Description, EventsRequested: events,
		Method: r.Method, EndpointURL: r.EndpointURL, AuthorizationHeader: r.AuthorizationHeader, DefaultSubjects: r.DefaultSubjects,
		Status: r.Status, StatusReason: r.StatusReason, CreatedAt: fromMS(r.CreatedAt), UpdatedAt: fromMS(r.UpdatedAt),
		LastDeliveredAt: fromNullMS(r.LastDeliveredAt), LastError: r.LastError, LastErrorAt: fromNullMS(r.LastErrorAt), Undelivered: r.Undelivered}
}

const selectStream = `SELECT s.*, (SELECT COUNT(*) FROM ssf_outbox o WHERE o.stream_id = s.id AND o.delivered_at IS NULL) AS undelivered
	FROM ssf_streams s`

// CreateStream stores a new stream unless its token has max streams
// already (ErrConflict). The count and the insert are one transaction,
// serialized per token, so concurrent creations cannot pass the limit.
func (s *Store) CreateStream(ctx context.Context, st ssf.Stream, max int, ev enrollment.AuditEvent) error {
	events, _ := json.Marshal(st.EventsRequested)
	return s.inTx(ctx, func(tx txn) error {
		if s.dialect == Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT id FROM api_tokens WHERE id = $1 FOR UPDATE`, st.TokenID); err != nil {
				return fmt.Errorf("create stream: %w", err)
			}
		}
		var n int
		if err := tx.GetContext(ctx, &n, tx.Rebind(`SELECT COUNT(*) FROM ssf_streams WHERE token_id = ?`), st.TokenID); err != nil {
			return fmt.Errorf("create stream: %w", err)
		}
		if n >= max {
			return fmt.Errorf("create stream: %w: this receiver has %d streams already", enrollment.ErrConflict, n)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO ssf_streams (id, token_id, audience, description, events_requested,
			delivery_method, endpoint_url, authorization_header, default_subjects, status, status_reason, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`), st.ID, st.TokenID, st.Audience, st.Description, string(events), st.Method,
			st.EndpointURL, st.AuthorizationHeader, st.DefaultSubjects, st.Status, st.StatusReason, ms(st.CreatedAt), ms(st.UpdatedAt)); err != nil {
			return fmt.Errorf("create stream: %w", err)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// Stream reads one stream.
func (s *Store) Stream(ctx context.Context, id string) (ssf.Stream, error) {
	var r streamRow
	if err := s.db.GetContext(ctx, &r, s.db.Rebind(selectStream+` WHERE s.id = ?`), id); err != nil {
		return ssf.Stream{}, fmt.Errorf("stream %s: %w", id, notFound(err))
	}
	return r.stream(), nil
}

// Streams lists a receiver token's streams, or every stream when tokenID
// is empty.
func (s *Store) Streams(ctx context.Context, tokenID string) ([]ssf.Stream, error) {
	var rows []streamRow
	q, args := selectStream+` ORDER BY s.created_at`, []any{}
	if tokenID != "" {
		q, args = selectStream+` WHERE s.token_id = ? ORDER BY s.created_at`, []any{tokenID}
	}
	if err := s.db.SelectContext(ctx, &rows, s.db.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	out := make([]ssf.Stream, len(rows))
	for i, r := range rows {
		out[i] = r.stream()
	}
	return out, nil
}

// UpdateStream stores a stream's receiver-set fields and status.
func (s *Store) UpdateStream(ctx context.Context, st ssf.Stream, ev enrollment.AuditEvent) error {
	events, _ := json.Marshal(st.EventsRequested)
	return s.inTx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE ssf_streams SET description = ?, events_requested = ?, delivery_method = ?,
			endpoint_url = ?, authorization_header = ?, status = ?, status_reason = ?, updated_at = ? WHERE id = ?`),
			st.Description, string(events), st.Method, st.EndpointURL, st.AuthorizationHeader, st.Status, st.StatusReason, ms(st.UpdatedAt), st.ID)
		if err != nil {
			return fmt.Errorf("update stream: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("update stream %s: %w", st.ID, enrollment.ErrNotFound)
		}
		return appendAudit(ctx, tx, ev)
	})
}

// DeleteStream removes a stream with its subjects and undelivered SETs.
func (s *Store) DeleteStream(ctx context.Context, id string, ev enrollment.AuditEvent) error {
	return s.inTxAlone(ctx, func(tx txn) error {
		for _, q := range []string{`DELETE FROM ssf_outbox WHERE stream_id = ?`, `DELETE FROM ssf_subjects WHERE stream_id = ?`,
			`DELETE FROM ssf_streams WHERE id = ?`} {
			if _, err := tx.ExecContext(ctx, tx.Rebind(q), id); err != nil {
				return fmt.Errorf("delete stream: %w", err)
			}
		}
		return appendAudit(ctx, tx, ev)
	})
}

// AddSubject adds a subject to a stream (idempotent), unless the stream
// has max subjects already (ErrConflict).
func (s *Store) AddSubject(ctx context.Context, streamID, key, subject string, max int) error {
	return s.inTx(ctx, func(tx txn) error {
		if s.dialect == Postgres {
			// Serializes additions to one stream, so the count holds.
			if _, err := tx.ExecContext(ctx, `SELECT id FROM ssf_streams WHERE id = $1 FOR UPDATE`, streamID); err != nil {
				return fmt.Errorf("add subject: %w", err)
			}
		}
		var have int
		if err := tx.GetContext(ctx, &have, tx.Rebind(`SELECT COUNT(*) FROM ssf_subjects WHERE stream_id = ? AND subject_key = ?`), streamID, key); err != nil {
			return fmt.Errorf("add subject: %w", err)
		}
		if have > 0 {
			return nil // adding is idempotent, even at the limit
		}
		var n int
		if err := tx.GetContext(ctx, &n, tx.Rebind(`SELECT COUNT(*) FROM ssf_subjects WHERE stream_id = ?`), streamID); err != nil {
			return fmt.Errorf("add subject: %w", err)
		}
		if n >= max {
			return fmt.Errorf("add subject: %w: the stream has %d subjects", enrollment.ErrConflict, n)
		}
		_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO ssf_subjects (stream_id, subject_key, subject) VALUES (?, ?, ?)
			ON CONFLICT (stream_id, subject_key) DO NOTHING`), streamID, key, subject)
		if err != nil {
			return fmt.Errorf("add subject: %w", err)
		}
		return nil
	})
}

// RemoveSubject removes a subject from a stream.
func (s *Store) RemoveSubject(ctx context.Context, streamID, key string) error {
	if _, err := s.exec(ctx, `DELETE FROM ssf_subjects WHERE stream_id = ? AND subject_key = ?`, streamID, key); err != nil {
		return fmt.Errorf("remove subject: %w", err)
	}
	return nil
}

type trustEventRow struct {
	ID           string `db:"id"`
	EnrollmentID string `db:"enrollment_id"`
	UserEmail    string `db:"user_email"`
	Compliant    bool   `db:"compliant"`
	Reason       string `db:"reason"`
	Initiator    string `db:"initiator"`
	OccurredAt   int64  `db:"occurred_at"`
}

// FanOut queues trust changes for the streams, each change once: on
// PostgreSQL, FOR UPDATE SKIP LOCKED gives replicas disjoint changes; on
// SQLite the transaction's write lock serializes them.
func (s *Store) FanOut(ctx context.Context, limit int,
	build func(c enrollment.TrustChange, at time.Time, streams []ssf.Stream) ([]ssf.Outgoing, error)) (int, error) {
	n := 0
	err := s.inTx(ctx, func(tx txn) error {
		lock := ""
		if s.dialect == Postgres {
			lock = " FOR UPDATE SKIP LOCKED"
		}
		var rows []trustEventRow
		if err := tx.SelectContext(ctx, &rows, tx.Rebind(`SELECT id, enrollment_id, user_email, compliant <> 0 AS compliant, reason, initiator, occurred_at
			FROM trust_events WHERE fanned_out_at IS NULL ORDER BY occurred_at, id LIMIT `+fmt.Sprint(limit)+lock)); err != nil {
			return fmt.Errorf("fan out: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		var streams []streamRow
		// A revoked receiver token's streams hear nothing more.
		if err := tx.SelectContext(ctx, &streams, `SELECT s.*, 0 AS undelivered FROM ssf_streams s
			JOIN api_tokens t ON t.id = s.token_id AND t.revoked_at IS NULL WHERE s.status <> 'disabled'`); err != nil {
			return fmt.Errorf("fan out: %w", err)
		}
		targets := make([]ssf.Stream, len(streams))
		for i, r := range streams {
			targets[i] = r.stream()
			if targets[i].DefaultSubjects == "NONE" {
				var keys []string
				if err := tx.SelectContext(ctx, &keys, tx.Rebind(`SELECT subject_key FROM ssf_subjects WHERE stream_id = ?`), r.ID); err != nil {
					return err
				}
				targets[i].Subjects = map[string]bool{}
				for _, k := range keys {
					targets[i].Subjects[k] = true
				}
			}
		}
		now := time.Now()
		for _, r := range rows {
			out, err := build(enrollment.TrustChange{ID: r.ID, EnrollmentID: r.EnrollmentID, UserEmail: r.UserEmail, Compliant: r.Compliant,
				Reason: r.Reason, Initiator: r.Initiator}, fromMS(r.OccurredAt), targets)
			if err != nil {
				return err
			}
			for _, o := range out {
				if err := insertOutgoing(ctx, tx, o); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE trust_events SET fanned_out_at = ? WHERE id = ?`), ms(now), r.ID); err != nil {
				return fmt.Errorf("fan out: %w", err)
			}
			n++
		}
		return nil
	})
	return n, err
}

func insertOutgoing(ctx context.Context, ext execer, o ssf.Outgoing) error {
	_, err := ext.ExecContext(ctx, ext.Rebind(`INSERT INTO ssf_outbox (jti, stream_id, event_id, enrollment_id, event_type, claims, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stream_id, event_id) DO NOTHING`),
		o.JTI, o.StreamID, o.EventID, o.EnrollmentID, o.EventType, o.Claims, ms(o.CreatedAt))
	if err != nil {
		return fmt.Errorf("queue SET: %w", err)
	}
	return nil
}

// Enqueue queues one SET (a verification).
func (s *Store) Enqueue(ctx context.Context, o ssf.Outgoing) error {
	return s.withWriter(ctx, func(w writer) error { return insertOutgoing(ctx, w, o) })
}

// AllowVerification records a verification request for a stream, unless
// one was made since (ErrConflict): atomic, so replicas share the limit.
func (s *Store) AllowVerification(ctx context.Context, streamID string, since, at time.Time) error {
	res, err := s.exec(ctx, `UPDATE ssf_streams SET last_verification_at = ? WHERE id = ?
		AND (last_verification_at IS NULL OR last_verification_at < ?)`, ms(at), streamID, ms(since))
	if err != nil {
		return fmt.Errorf("verification: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("verification: %w: asked too recently", enrollment.ErrConflict)
	}
	return nil
}

type outgoingRow struct {
	JTI          string `db:"jti"`
	StreamID     string `db:"stream_id"`
	EventID      string `db:"event_id"`
	EnrollmentID string `db:"enrollment_id"`
	EventType    string `db:"event_type"`
	Claims       string `db:"claims"`
	CreatedAt    int64  `db:"created_at"`
	Attempts     int    `db:"attempts"`
}

func (r outgoingRow) outgoing() ssf.Outgoing {
	return ssf.Outgoing{JTI: r.JTI, StreamID: r.StreamID, EventID: r.EventID, EnrollmentID: r.EnrollmentID, EventType: r.EventType,
		Claims: r.Claims, CreatedAt: fromMS(r.CreatedAt), Attempts: r.Attempts}
}

// undelivered reads a stream's undelivered SETs in the order they were
// made, at most max.
func undelivered(ctx context.Context, q sqlx.QueryerContext, streamID string, max int) ([]ssf.Outgoing, error) {
	var rows []outgoingRow
	if err := sqlx.SelectContext(ctx, q, &rows, rebind(q, `SELECT jti, stream_id, event_id, enrollment_id, event_type, claims, created_at, attempts
		FROM ssf_outbox WHERE stream_id = ? AND delivered_at IS NULL ORDER BY created_at, jti LIMIT `+fmt.Sprint(max)), streamID); err != nil {
		return nil, fmt.Errorf("undelivered SETs: %w", err)
	}
	out := make([]ssf.Outgoing, len(rows))
	for i, r := range rows {
		out[i] = r.outgoing()
	}
	return out, nil
}

// ClaimStreams leases up to limit push streams with SETs waiting and no
// hold, the stream waiting longest first, and returns each with its
// undelivered SETs in order (at most perStream). A stream is one worker's
// at a time, so its SETs leave in order. The lease is the time it ends,
// which ReleaseStream must name: a worker whose lease lapsed cannot end
// another's. On PostgreSQL, SKIP LOCKED gives replicas disjoint streams;
// on SQLite the transaction's write lock serializes them.
func (s *Store) ClaimStreams(ctx context.Context, limit, perStream int, now, leaseUntil time.Time) ([]ssf.Batch, error) {
	var out []ssf.Batch
	err := s.inTx(ctx, func(tx txn) error {
		lock := ""
		if s.dialect == Postgres {
			lock = " FOR UPDATE OF s SKIP LOCKED"
		}
		var streams []streamRow
		err := tx.SelectContext(ctx, &streams, tx.Rebind(`SELECT s.*, 0 AS undelivered FROM ssf_streams s
			JOIN api_tokens t ON t.id = s.token_id AND t.revoked_at IS NULL
			WHERE s.delivery_method = ? AND s.status = 'enabled' AND (s.lease_until IS NULL OR s.lease_until < ?)
			AND (s.hold_until IS NULL OR s.hold_until <= ?)
			AND EXISTS (SELECT 1 FROM ssf_outbox o WHERE o.stream_id = s.id AND o.delivered_at IS NULL)
			ORDER BY (SELECT MIN(o.created_at) FROM ssf_outbox o WHERE o.stream_id = s.id AND o.delivered_at IS NULL), s.id
			LIMIT `+fmt.Sprint(limit)+lock), ssf.DeliveryPush, ms(now), ms(now))
		if err != nil || len(streams) == 0 {
			return err
		}
		for _, r := range streams {
			if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE ssf_streams SET lease_until = ? WHERE id = ?`), ms(leaseUntil), r.ID); err != nil {
				return err
			}
			sets, err := undelivered(ctx, tx, r.ID, perStream)
			if err != nil {
				return err
			}
			st := r.stream()
			st.PushAttempts = r.PushAttempts
			out = append(out, ssf.Batch{Stream: st, SETs: sets, LeaseUntil: leaseUntil})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim streams: %w", err)
	}
	return out, nil
}

// ReleaseStream ends a push worker's lease of a stream, if it is still
// that worker's.
func (s *Store) ReleaseStream(ctx context.Context, streamID string, leaseUntil time.Time) error {
	_, err := s.exec(ctx, `UPDATE ssf_streams SET lease_until = NULL WHERE id = ? AND lease_until = ?`,
		streamID, ms(leaseUntil))
	return err
}

// Delivered marks SETs of a stream done. Unknown JTIs, or another
// stream's, change nothing.
func (s *Store) Delivered(ctx context.Context, streamID string, jtis []string, refusal string, at time.Time) error {
	if len(jtis) == 0 {
		return nil
	}
	return s.inTx(ctx, func(tx txn) error {
		q, args, err := sqlx.In(`UPDATE ssf_outbox SET delivered_at = ?, last_error = ?
			WHERE stream_id = ? AND delivered_at IS NULL AND jti IN (?)`, ms(at), refusal, streamID, jtis)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, tx.Rebind(q), args...)
		if err != nil {
			return fmt.Errorf("SET delivered: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		if refusal != "" {
			_, err = tx.ExecContext(ctx, tx.Rebind(`UPDATE ssf_streams SET last_error = ?, last_error_at = ?, hold_until = NULL, push_attempts = 0
				WHERE id = ?`), refusal, ms(at), streamID)
		} else {
			_, err = tx.ExecContext(ctx, tx.Rebind(`UPDATE ssf_streams SET last_delivered_at = ?, hold_until = NULL, push_attempts = 0 WHERE id = ?`),
				ms(at), streamID)
		}
		return err
	})
}

// RetryStream records a failed push of jti and holds the whole stream
// until next: new SETs wait behind the failed one, in order, and do not
// cut the backoff short.
func (s *Store) RetryStream(ctx context.Context, streamID, jti string, next time.Time, lastErr string, at time.Time) error {
	lastErr = enrollment.TrustReason(lastErr)
	return s.inTx(ctx, func(tx txn) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE ssf_outbox SET attempts = attempts + 1, last_error = ? WHERE jti = ? AND stream_id = ?`),
			lastErr, jti, streamID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE ssf_streams SET hold_until = ?, push_attempts = push_attempts + 1, last_error = ?,
			last_error_at = ? WHERE id = ?`), ms(next), lastErr, ms(at), streamID)
		return err
	})
}

// Pending returns a stream's undelivered SETs, oldest first, and whether
// more wait.
func (s *Store) Pending(ctx context.Context, streamID string, max int) ([]ssf.Outgoing, bool, error) {
	out, err := undelivered(ctx, s.db, streamID, max+1)
	if err != nil {
		return nil, false, err
	}
	if len(out) > max {
		return out[:max], true, nil
	}
	return out, false, nil
}

// PruneTrust deletes SETs delivered before, and trust changes queued
// before: what relying parties have had is history the audit log keeps.
func (s *Store) PruneTrust(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for _, q := range []string{`DELETE FROM ssf_outbox WHERE delivered_at < ?`,
		// A change stays while any stream still owes its SET.
		`DELETE FROM trust_events WHERE fanned_out_at < ? AND NOT EXISTS
			(SELECT 1 FROM ssf_outbox o WHERE o.event_id = trust_events.id AND o.delivered_at IS NULL)`} {
		res, err := s.execAlone(ctx, q, ms(before))
		if err != nil {
			return total, fmt.Errorf("prune: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}

// LastEvents returns, per stream, the latest compliance SET about a device.
func (s *Store) LastEvents(ctx context.Context, enrollmentID string) ([]ssf.LastEvent, error) {
	var rows []struct {
		StreamID    string        `db:"stream_id"`
		Description string        `db:"description"`
		EventType   string        `db:"event_type"`
		Compliant   bool          `db:"compliant"`
		CreatedAt   int64         `db:"created_at"`
		DeliveredAt sql.NullInt64 `db:"delivered_at"`
		LastError   string        `db:"last_error"`
	}
	err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT o.stream_id, s.description, o.event_type, e.compliant <> 0 AS compliant,
		o.created_at, o.delivered_at, o.last_error
		FROM ssf_outbox o JOIN ssf_streams s ON s.id = o.stream_id JOIN trust_events e ON e.id = o.event_id
		WHERE o.enrollment_id = ? AND o.created_at = (SELECT MAX(o2.created_at) FROM ssf_outbox o2
			WHERE o2.stream_id = o.stream_id AND o2.enrollment_id = o.enrollment_id)
		ORDER BY s.created_at`), enrollmentID)
	if err != nil {
		return nil, fmt.Errorf("last events: %w", err)
	}
	out := make([]ssf.LastEvent, len(rows))
	for i, r := range rows {
		out[i] = ssf.LastEvent{StreamID: r.StreamID, Description: r.Description, EventType: r.EventType, Compliant: r.Compliant,
			CreatedAt: fromMS(r.CreatedAt), DeliveredAt: fromNullMS(r.DeliveredAt), LastError: r.LastError}
	}
	return out, nil
}
