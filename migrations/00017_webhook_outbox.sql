-- +goose Up
-- Pending-enrollment announcements owed to the webhook, written in the
-- transaction that made the enrollment pending: a server stopping
-- mid-retry loses none. A worker on any replica takes a row by its lease.
CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY,
    enrollment_id   TEXT NOT NULL REFERENCES enrollments (id),
    event           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     BIGINT,
    delivered_at    BIGINT,
    last_error      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (delivered_at, next_attempt_at);

-- +goose Down
DROP TABLE webhook_outbox;
