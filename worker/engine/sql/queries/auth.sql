-- Projects, environments and secret keys.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: find_key
SELECT e.id AS environment_id, e.slug, e.type, e.concurrency_limit,
       p.id AS project_id, p.ref AS project_ref
FROM api_keys k
JOIN environments e ON e.id = k.environment_id
JOIN projects p ON p.id = e.project_id
WHERE k.key_hash = %(key_hash)s::bytea AND k.revoked_at IS NULL;

-- name: upsert_project
INSERT INTO projects (ref, name) VALUES (%(ref)s::text, %(name)s::text)
ON CONFLICT (ref) DO UPDATE SET name = projects.name
RETURNING id;

-- name: upsert_environment
INSERT INTO environments (project_id, slug, type)
VALUES (%(project_id)s::uuid, %(slug)s::text, %(type)s::text)
ON CONFLICT (project_id, slug) DO UPDATE SET type = environments.type
RETURNING id;

-- name: insert_key
-- Registering a known key again stores its ciphertext if it had none (older rows).
INSERT INTO api_keys (key_hash, environment_id, key_prefix, key_ciphertext)
VALUES (%(key_hash)s::bytea, %(environment_id)s::uuid, %(key_prefix)s::text,
        %(key_ciphertext)s::bytea)
ON CONFLICT (key_hash) DO UPDATE
SET key_ciphertext = coalesce(api_keys.key_ciphertext, EXCLUDED.key_ciphertext);

-- name: env_key_ciphertexts
-- The environment's live secret keys, encrypted, to verify tokens signed with one of them.
SELECT key_hash, key_ciphertext FROM api_keys
WHERE environment_id = %(environment_id)s::uuid AND revoked_at IS NULL
  AND key_ciphertext IS NOT NULL;
