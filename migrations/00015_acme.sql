-- +goose Up
-- ACME with device-attest-01: the identity key made in the Secure Enclave.
-- A reservation's profile is of one kind: its one-time secret is the SCEP
-- challenge of a SCEP profile, or the ACME ClientIdentifier of an ACME one,
-- and the other protocol refuses it.
ALTER TABLE reservations ADD COLUMN identity TEXT NOT NULL DEFAULT 'scep';
-- What Apple attested for an identity key issued over ACME.
ALTER TABLE certificates ADD COLUMN hardware_bound INTEGER NOT NULL DEFAULT 0;
ALTER TABLE certificates ADD COLUMN attested_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE certificates ADD COLUMN attested_udid TEXT NOT NULL DEFAULT '';
-- The same facts on the enrollment, for the approver.
ALTER TABLE enrollments ADD COLUMN identity_hardware INTEGER NOT NULL DEFAULT 0;
ALTER TABLE enrollments ADD COLUMN identity_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollments ADD COLUMN identity_udid TEXT NOT NULL DEFAULT '';

-- Anti-replay nonces (RFC 8555 §7.2), shared by replicas, each used once.
CREATE TABLE acme_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX acme_nonces_expiry ON acme_nonces (expires_at);

CREATE TABLE acme_accounts (
    id         TEXT PRIMARY KEY,
    thumbprint TEXT NOT NULL UNIQUE,
    jwk        TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- An order has one identifier, so one authorization and one challenge,
-- all named by the order's ID. attested_key is the DER public key Apple
-- attested; finalize accepts only a CSR for it.
CREATE TABLE acme_orders (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES acme_accounts (id),
    reservation_id   TEXT NOT NULL REFERENCES reservations (id),
    client_hash      TEXT NOT NULL,
    -- A renewal: the ClientIdentifier was used, and its enrollment is
    -- approved; the new attestation must be of the same device.
    renewal          INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    expires_at       BIGINT NOT NULL,
    token            TEXT NOT NULL,
    challenge_status TEXT NOT NULL,
    error            TEXT NOT NULL DEFAULT '',
    attested_serial  TEXT NOT NULL DEFAULT '',
    attested_udid    TEXT NOT NULL DEFAULT '',
    attested_key     TEXT NOT NULL DEFAULT '',
    validated_at     BIGINT,
    cert_serial      TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL
);
CREATE INDEX acme_orders_account ON acme_orders (account_id);

-- +goose Down
DROP TABLE acme_orders;
DROP TABLE acme_accounts;
DROP TABLE acme_nonces;
ALTER TABLE enrollments DROP COLUMN identity_udid;
ALTER TABLE enrollments DROP COLUMN identity_serial;
ALTER TABLE enrollments DROP COLUMN identity_hardware;
ALTER TABLE certificates DROP COLUMN attested_udid;
ALTER TABLE certificates DROP COLUMN attested_serial;
ALTER TABLE certificates DROP COLUMN hardware_bound;
ALTER TABLE reservations DROP COLUMN identity;
