-- +goose Up
-- A reservation is a device ID set aside for one user, made when they
-- download an enrollment profile. "expired" is not stored: an open
-- reservation past expires_at is expired.
CREATE TABLE reservations (
    id                TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL,
    user_id           TEXT NOT NULL REFERENCES users (id),
    state             TEXT NOT NULL DEFAULT 'open'
                      CHECK (state IN ('open', 'claimed', 'revoked')),
    -- Hex SHA-256 of the one-time SCEP challenge; the challenge itself is
    -- only ever in the profile.
    challenge_hash    TEXT NOT NULL UNIQUE,
    challenge_used_at BIGINT,
    -- Hex of the enrollment token's 128-bit nonce and the key version that
    -- MACed it; a new download replaces both.
    token_nonce       TEXT NOT NULL UNIQUE,
    token_key_version INTEGER NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    created_by        TEXT NOT NULL,
    created_ip        TEXT NOT NULL DEFAULT '',
    downloaded_at     BIGINT,
    downloaded_ip     TEXT NOT NULL DEFAULT '',
    claimed_at        BIGINT,
    claimed_udid      TEXT,
    -- Devices other than the claimant that presented this reservation's token.
    claim_attempts    INTEGER NOT NULL DEFAULT 0,
    revoked_at        BIGINT,
    revoked_by        TEXT
);
CREATE INDEX reservations_user ON reservations (user_id, created_at);
CREATE INDEX reservations_state ON reservations (state, expires_at);

-- Bearer tokens for the JSON API. Only the SHA-256 of the token is kept.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'approver', 'admin')),
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

-- +goose Down
DROP TABLE api_tokens;
DROP TABLE reservations;
