-- +goose Up
-- Facts a running server records for the admin commands beside it, such as
-- the public URL it serves (so profiles issued from the command line point
-- at it).
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE settings;
