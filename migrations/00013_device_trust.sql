-- +goose Up
-- Device trust: what relying parties (IdPs, access proxies) learn about an
-- approval. trust_compliant is the compliance last announced for an
-- enrollment; a change of it, in the transaction that changed the
-- enrollment, revokes its trust certificates and records an event.
ALTER TABLE enrollments ADD COLUMN trust_compliant INTEGER NOT NULL DEFAULT 0;
-- When a trust profile was last queued for the device (NULL: none owed yet).
ALTER TABLE enrollments ADD COLUMN trust_requested_at BIGINT;
CREATE INDEX enrollments_trust_due ON enrollments (trust_compliant, trust_requested_at);

-- One-time SCEP challenges of the trust CA, bound to an approved enrollment.
CREATE TABLE trust_challenges (
    hash          TEXT PRIMARY KEY,
    enrollment_id TEXT NOT NULL REFERENCES enrollments (id),
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX trust_challenges_enrollment ON trust_challenges (enrollment_id);

-- Device-trust certificates, issued by the trust CA (never the SCEP CA).
-- reservation_id names the enrollment, as in certificates.
CREATE TABLE trust_certificates (
    serial         TEXT PRIMARY KEY,
    sha256         TEXT NOT NULL UNIQUE,
    subject        TEXT NOT NULL,
    not_before     BIGINT NOT NULL,
    not_after      BIGINT NOT NULL,
    reservation_id TEXT NOT NULL REFERENCES enrollments (id),
    key_sha256     TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    der            TEXT NOT NULL,
    issued_at      BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoke_reason  TEXT NOT NULL DEFAULT '',
    -- RFC 5280 CRLReason of a revocation.
    revoke_code    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX trust_certificates_transaction ON trust_certificates (transaction_id, key_sha256);
CREATE INDEX trust_certificates_reservation ON trust_certificates (reservation_id);
CREATE INDEX trust_certificates_revoked ON trust_certificates (revoked_at);

-- The CRL every replica serves: re-signed when revocations change or it
-- ages, its number only ever growing.
CREATE TABLE trust_crl (
    id          INTEGER PRIMARY KEY,
    number      BIGINT NOT NULL,
    generation  TEXT NOT NULL,
    this_update BIGINT NOT NULL,
    der         TEXT NOT NULL
);

-- Compliance changes, written with the change itself so none is lost.
-- fanned_out_at is set once the event is queued for every stream.
CREATE TABLE trust_events (
    id            TEXT PRIMARY KEY,
    enrollment_id TEXT NOT NULL REFERENCES enrollments (id),
    user_email    TEXT NOT NULL,
    compliant     INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    initiator     TEXT NOT NULL,
    occurred_at   BIGINT NOT NULL,
    fanned_out_at BIGINT
);
CREATE INDEX trust_events_pending ON trust_events (fanned_out_at, occurred_at);
CREATE INDEX trust_events_enrollment ON trust_events (enrollment_id);

-- Shared Signals streams, each owned by one receiver API token.
CREATE TABLE ssf_streams (
    id                   TEXT PRIMARY KEY,
    token_id             TEXT NOT NULL,
    audience             TEXT NOT NULL,
    description          TEXT NOT NULL DEFAULT '',
    events_requested     TEXT NOT NULL,
    delivery_method      TEXT NOT NULL,
    endpoint_url         TEXT NOT NULL DEFAULT '',
    authorization_header TEXT NOT NULL DEFAULT '',
    default_subjects     TEXT NOT NULL DEFAULT 'ALL',
    status               TEXT NOT NULL DEFAULT 'enabled',
    status_reason        TEXT NOT NULL DEFAULT '',
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    last_delivered_at    BIGINT,
    last_error           TEXT NOT NULL DEFAULT '',
    last_error_at        BIGINT,
    -- A push worker leases a whole stream, so its SETs leave in order;
    -- after a failure the whole stream is held until hold_until.
    lease_until          BIGINT,
    hold_until           BIGINT,
    push_attempts        INTEGER NOT NULL DEFAULT 0,
    -- Verification requests are rate-limited (min_verification_interval).
    last_verification_at BIGINT
);
CREATE INDEX ssf_streams_token ON ssf_streams (token_id);

CREATE TABLE ssf_subjects (
    stream_id   TEXT NOT NULL REFERENCES ssf_streams (id) ON DELETE CASCADE,
    subject_key TEXT NOT NULL,
    subject     TEXT NOT NULL,
    PRIMARY KEY (stream_id, subject_key)
);

-- SETs owed to a stream, as claims: signed when sent, so they verify with
-- the keys published then. Pushed in order by a worker holding the
-- stream's lease, or waiting for the receiver's poll. One row per event
-- and stream.
CREATE TABLE ssf_outbox (
    jti             TEXT PRIMARY KEY,
    stream_id       TEXT NOT NULL REFERENCES ssf_streams (id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    enrollment_id   TEXT NOT NULL DEFAULT '',
    event_type      TEXT NOT NULL,
    claims          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at    BIGINT,
    last_error      TEXT NOT NULL DEFAULT '',
    UNIQUE (stream_id, event_id)
);
CREATE INDEX ssf_outbox_stream ON ssf_outbox (stream_id, delivered_at, created_at);
CREATE INDEX ssf_outbox_delivered ON ssf_outbox (delivered_at);
CREATE INDEX ssf_outbox_enrollment ON ssf_outbox (enrollment_id);
CREATE INDEX ssf_outbox_event ON ssf_outbox (event_id);

-- +goose Down
DROP TABLE ssf_outbox;
DROP TABLE ssf_subjects;
DROP TABLE ssf_streams;
DROP TABLE trust_events;
DROP TABLE trust_crl;
DROP TABLE trust_certificates;
DROP TABLE trust_challenges;
DROP INDEX enrollments_trust_due;
ALTER TABLE enrollments DROP COLUMN trust_requested_at;
ALTER TABLE enrollments DROP COLUMN trust_compliant;
