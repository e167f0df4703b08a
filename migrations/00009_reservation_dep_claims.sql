-- +goose Up
-- What Setup Assistant said about a DEP device when its profile was made
-- (claims from the x-apple-aspen-deviceinfo header), shown to approvers.
ALTER TABLE reservations ADD COLUMN dep_serial TEXT NOT NULL DEFAULT '';
ALTER TABLE reservations ADD COLUMN dep_udid TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE reservations DROP COLUMN dep_udid;
ALTER TABLE reservations DROP COLUMN dep_serial;
