-- +goose Up
-- Apple Business Manager inventory. Being in it is a fact shown to the
-- approver, never a reason to enroll.
CREATE TABLE dep_devices (
    serial         TEXT PRIMARY KEY,
    model          TEXT NOT NULL DEFAULT '',
    description    TEXT NOT NULL DEFAULT '',
    color          TEXT NOT NULL DEFAULT '',
    device_family  TEXT NOT NULL DEFAULT '',
    os             TEXT NOT NULL DEFAULT '',
    profile_status TEXT NOT NULL DEFAULT '',
    profile_uuid   TEXT NOT NULL DEFAULT '',
    op_type        TEXT NOT NULL DEFAULT '',
    op_date        BIGINT,
    last_seen_at   BIGINT NOT NULL
);

-- One row per DEP server token: the cursor of the last sync and the
-- OAuth tokens, sealed with AES-GCM under a key outside the database.
CREATE TABLE dep_servers (
    name           TEXT PRIMARY KEY,
    tokens_sealed  TEXT NOT NULL DEFAULT '',
    token_expiry   BIGINT,
    cursor         TEXT NOT NULL DEFAULT '',
    last_sync_at   BIGINT,
    last_error     TEXT NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE dep_servers;
DROP TABLE dep_devices;
