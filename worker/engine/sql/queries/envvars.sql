-- Environment variables per environment (values encrypted, worker/engine/secret_box.py).
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: list_env_vars
SELECT name, value_ciphertext, is_secret FROM environment_variables
WHERE environment_id = %(environment_id)s::uuid ORDER BY name;

-- name: upsert_env_var
INSERT INTO environment_variables (environment_id, name, value_ciphertext, is_secret)
VALUES (%(environment_id)s::uuid, %(name)s::text, %(value)s::bytea, %(is_secret)s::boolean)
ON CONFLICT (environment_id, name) DO UPDATE
SET value_ciphertext = EXCLUDED.value_ciphertext, updated_at = now(),
    is_secret = environment_variables.is_secret OR EXCLUDED.is_secret
WHERE %(overwrite)s::boolean
RETURNING name;

-- name: update_env_var
UPDATE environment_variables SET value_ciphertext = %(value)s::bytea, updated_at = now()
WHERE environment_id = %(environment_id)s::uuid AND name = %(name)s::text
RETURNING name;

-- name: delete_env_var
DELETE FROM environment_variables
WHERE environment_id = %(environment_id)s::uuid AND name = %(name)s::text
RETURNING name;

-- name: notify_env_vars
-- In the writing transaction: every API process drops its cached copy once it commits.
SELECT pg_notify('trigger_env_vars', %(environment_id)s::text);
