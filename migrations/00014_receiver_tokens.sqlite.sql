-- +goose Up
-- API tokens may belong to a relying party: the receiver role reads device
-- trust and manages its own Shared Signals streams, nothing else. SQLite
-- changes a CHECK only by rebuilding the table.
CREATE TABLE api_tokens_new (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'approver', 'admin', 'receiver')),
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
INSERT INTO api_tokens_new SELECT id, name, role, token_hash, created_at, created_by, last_used_at, revoked_at FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;

-- +goose Down
CREATE TABLE api_tokens_old (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'approver', 'admin')),
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
INSERT INTO api_tokens_old SELECT id, name, role, token_hash, created_at, created_by, last_used_at, revoked_at FROM api_tokens WHERE role <> 'receiver';
DROP TABLE api_tokens;
ALTER TABLE api_tokens_old RENAME TO api_tokens;
