-- +goose Up
-- IdP sign-ins in progress: the state (hashed), the nonce and the PKCE
-- verifier of each, used once at the callback, on whichever replica.
CREATE TABLE oidc_logins (
    state_hash TEXT PRIMARY KEY,
    nonce      TEXT NOT NULL,
    verifier   TEXT NOT NULL,
    next       TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oidc_logins_expires ON oidc_logins (expires_at);

-- +goose Down
DROP TABLE oidc_logins;
