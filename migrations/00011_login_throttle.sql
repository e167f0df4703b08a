-- +goose Up
-- Failed sign-ins, shared by every replica: one row per throttled key
-- (an account from one address, an address, an account from anywhere).
-- failures restarts at 1 after a quiet window; blocked_until is when the
-- key may try again (Unix ms, 0: not blocked).
CREATE TABLE login_throttle (
    key            TEXT PRIMARY KEY,
    failures       INTEGER NOT NULL,
    last_failure   BIGINT NOT NULL,
    blocked_until  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX login_throttle_last_failure ON login_throttle (last_failure);

-- +goose Down
DROP TABLE login_throttle;
