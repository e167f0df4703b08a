-- +goose Up
-- Managed Device Attestation: the nonce of the one question a pending
-- device is asked, and what the Apple-issued answer vouched for. Status:
-- '' not asked, asked, fresh, cached, mismatch, invalid, stale, refused,
-- unsupported. Results never carry over to another enrollment.
ALTER TABLE enrollments ADD COLUMN attest_nonce TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollments ADD COLUMN attest_command TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollments ADD COLUMN attest_status TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollments ADD COLUMN attest_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollments ADD COLUMN attest_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollments ADD COLUMN attest_udid TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollments ADD COLUMN attest_os TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollments ADD COLUMN attest_sepos TEXT NOT NULL DEFAULT '';
ALTER TABLE enrollments ADD COLUMN attest_issued_at BIGINT;
ALTER TABLE enrollments ADD COLUMN attest_checked_at BIGINT;
-- The question a pending device may receive; nothing else reaches it.
ALTER TABLE commands ADD COLUMN pre_approval INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE commands DROP COLUMN pre_approval;
ALTER TABLE enrollments DROP COLUMN attest_checked_at;
ALTER TABLE enrollments DROP COLUMN attest_issued_at;
ALTER TABLE enrollments DROP COLUMN attest_sepos;
ALTER TABLE enrollments DROP COLUMN attest_os;
ALTER TABLE enrollments DROP COLUMN attest_udid;
ALTER TABLE enrollments DROP COLUMN attest_serial;
ALTER TABLE enrollments DROP COLUMN attest_reason;
ALTER TABLE enrollments DROP COLUMN attest_status;
ALTER TABLE enrollments DROP COLUMN attest_command;
ALTER TABLE enrollments DROP COLUMN attest_nonce;
