-- +goose Up
-- The pending queue counts each waiting owner's approved devices: with
-- (user_id, state) the count reads only the index, not every one of that
-- owner's enrollment rows. It also serves every lookup by user_id alone.
CREATE INDEX enrollments_user_state ON enrollments (user_id, state);
DROP INDEX enrollments_user;

-- +goose Down
CREATE INDEX enrollments_user ON enrollments (user_id);
DROP INDEX enrollments_user_state;
