-- +goose Up
-- A new enrollment whose device reports the UDID or serial of another
-- user's pending or approved enrollment names that enrollment here: a
-- conflict shown to approvers. Approving the new enrollment never touches
-- the other one; an approver retires it as a separate action.
ALTER TABLE enrollments ADD COLUMN conflict_id TEXT;

-- +goose Down
ALTER TABLE enrollments DROP COLUMN conflict_id;
