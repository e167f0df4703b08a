-- +goose Up
-- An enrollment is one device's stay in Vestibule: it starts when a device
-- presents a reservation's token at Authenticate and takes the reservation's
-- ID as its device ID, so device and enrollment share that ID. A physical
-- device that enrolls again gets a new enrollment (flagged re_enrollment,
-- linked to the previous one) and waits for approval again.
CREATE TABLE enrollments (
    id                TEXT PRIMARY KEY REFERENCES reservations (id),
    user_id           TEXT NOT NULL REFERENCES users (id),
    state             TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ('pending', 'approved', 'denied', 'superseded', 'unenrolled')),
    re_enrollment     INTEGER NOT NULL DEFAULT 0,
    previous_id       TEXT,
    udid              TEXT NOT NULL,
    serial            TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL DEFAULT '',
    model_name        TEXT NOT NULL DEFAULT '',
    product_name      TEXT NOT NULL DEFAULT '',
    os_version        TEXT NOT NULL DEFAULT '',
    build_version     TEXT NOT NULL DEFAULT '',
    imei              TEXT NOT NULL DEFAULT '',
    meid              TEXT NOT NULL DEFAULT '',
    device_name       TEXT NOT NULL DEFAULT '',
    checkin_ip        TEXT NOT NULL DEFAULT '',
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    decided_at        BIGINT,
    decided_by        TEXT,
    decision_note     TEXT NOT NULL DEFAULT '',
    suspicious        INTEGER NOT NULL DEFAULT 0,
    -- APNs: the push token (hex), PushMagic and topic from TokenUpdate. The
    -- UnlockToken is not stored: Vestibule sends no ClearPasscode command.
    push_token        TEXT NOT NULL DEFAULT '',
    push_magic        TEXT NOT NULL DEFAULT '',
    push_topic        TEXT NOT NULL DEFAULT '',
    token_updated_at  BIGINT,
    last_seen_at      BIGINT
);
CREATE INDEX enrollments_udid ON enrollments (udid, created_at);
CREATE INDEX enrollments_serial ON enrollments (serial, created_at);
CREATE INDEX enrollments_state ON enrollments (state, created_at);
CREATE INDEX enrollments_user ON enrollments (user_id);

-- The command queue. seq orders a device's commands; the body is the whole
-- command plist as the device receives it.
CREATE TABLE commands (
    id             TEXT PRIMARY KEY,
    enrollment_id  TEXT NOT NULL REFERENCES enrollments (id),
    seq            BIGINT NOT NULL,
    request_type   TEXT NOT NULL,
    body           TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'sent', 'acknowledged', 'error', 'command_format_error', 'not_now')),
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    sent_at        BIGINT,
    result_at      BIGINT,
    result         TEXT NOT NULL DEFAULT '',
    not_now_count  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (enrollment_id, seq)
);
CREATE INDEX commands_pending ON commands (enrollment_id, status, seq);

-- +goose Down
DROP TABLE commands;
DROP TABLE enrollments;
