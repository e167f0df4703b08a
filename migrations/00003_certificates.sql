-- +goose Up
-- Device identity certificates issued over SCEP. An enrollment's ID is its
-- reservation's, so reservation_id also names the enrollment a certificate
-- belongs to.
CREATE TABLE certificates (
    serial         TEXT PRIMARY KEY,
    sha256         TEXT NOT NULL UNIQUE,
    subject        TEXT NOT NULL,
    not_before     BIGINT NOT NULL,
    not_after      BIGINT NOT NULL,
    reservation_id TEXT NOT NULL REFERENCES reservations (id),
    key_sha256     TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    -- The certificate itself (base64 DER), to answer a retried request
    -- with the same certificate.
    der            TEXT NOT NULL,
    issued_at      BIGINT NOT NULL,
    revoked_at     BIGINT,
    revoke_reason  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX certificates_transaction ON certificates (transaction_id, key_sha256);
CREATE INDEX certificates_reservation ON certificates (reservation_id);

-- +goose Down
DROP TABLE certificates;
