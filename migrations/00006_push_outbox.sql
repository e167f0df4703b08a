-- +goose Up
-- Pushes owed to devices. One row per enrollment at most: several reasons
-- to wake a device coalesce into one push. A worker claims rows by setting
-- lease_until, so replicas do not push the same row twice.
CREATE TABLE push_outbox (
    enrollment_id   TEXT PRIMARY KEY REFERENCES enrollments (id),
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     BIGINT,
    last_error      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX push_outbox_due ON push_outbox (next_attempt_at);

-- When APNs says a device's token is no longer valid.
ALTER TABLE enrollments ADD COLUMN push_invalid_at BIGINT;

-- +goose Down
ALTER TABLE enrollments DROP COLUMN push_invalid_at;
DROP TABLE push_outbox;
