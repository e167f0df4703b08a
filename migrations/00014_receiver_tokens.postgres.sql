-- +goose Up
-- API tokens may belong to a relying party: the receiver role reads device
-- trust and manages its own Shared Signals streams, nothing else.
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check CHECK (role IN ('viewer', 'approver', 'admin', 'receiver'));

-- +goose Down
DELETE FROM api_tokens WHERE role = 'receiver';
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check CHECK (role IN ('viewer', 'approver', 'admin'));
