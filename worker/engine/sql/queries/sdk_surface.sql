-- Run tags added from inside a run, one-time public tokens (issue 20).

-- name: lock_run_tags
SELECT tags FROM runs
WHERE id = %(id)s::text AND environment_id = %(environment_id)s::uuid
FOR UPDATE;

-- name: set_run_tags
UPDATE runs SET tags = %(tags)s::text[]
WHERE id = %(id)s::text AND environment_id = %(environment_id)s::uuid;

-- name: spend_public_token
-- Returns a row only for the first use of the token id.
INSERT INTO spent_public_tokens (token_id, environment_id, expires_at)
VALUES (%(token_id)s::text, %(environment_id)s::uuid, %(expires_at)s::timestamptz)
ON CONFLICT (token_id) DO NOTHING
RETURNING token_id;

-- name: forget_spent_public_tokens
DELETE FROM spent_public_tokens WHERE expires_at < now();
