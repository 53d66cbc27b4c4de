-- Managing API keys and worker tokens (worker/engine/keys.py), and the signing secret.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: resolve_key
-- A live key (not revoked, not past its rotation grace) and its environment; marks it used
-- (at most once a minute, so a cache miss storm does not turn into a write storm).
WITH hit AS (
    SELECT k.key_hash, k.kind, k.expires_at, k.last_used_at,
           e.id AS environment_id, e.slug, e.type, e.concurrency_limit,
           p.id AS project_id, p.ref AS project_ref
    FROM api_keys k
    JOIN environments e ON e.id = k.environment_id
    JOIN projects p ON p.id = e.project_id
    WHERE k.key_hash = %(key_hash)s::bytea AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
), touched AS (
    UPDATE api_keys SET last_used_at = now()
    WHERE key_hash IN (SELECT key_hash FROM hit
                       WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
)
SELECT kind, expires_at, environment_id, slug, type, concurrency_limit, project_id, project_ref
FROM hit;

-- name: env_by_ref
SELECT e.id FROM environments e JOIN projects p ON p.id = e.project_id
WHERE p.ref = %(project_ref)s::text AND e.slug = %(slug)s::text;

-- name: create_api_key
INSERT INTO api_keys (key_hash, environment_id, key_prefix, key_ciphertext, name, kind,
                      expires_at)
VALUES (%(key_hash)s::bytea, %(environment_id)s::uuid, %(key_prefix)s::text,
        %(key_ciphertext)s::bytea, %(name)s::text, %(kind)s::text, %(expires_at)s::timestamptz)
ON CONFLICT (key_hash) DO UPDATE
SET key_ciphertext = coalesce(api_keys.key_ciphertext, EXCLUDED.key_ciphertext)
WHERE api_keys.environment_id = EXCLUDED.environment_id AND api_keys.kind = EXCLUDED.kind
RETURNING id, name, kind, key_prefix, created_at, last_used_at, expires_at, revoked_at;

-- name: list_api_keys
SELECT id, name, kind, key_prefix, created_at, last_used_at, expires_at, revoked_at
FROM api_keys
WHERE environment_id = %(environment_id)s::uuid
  AND (%(include_revoked)s::boolean
       OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())))
ORDER BY created_at, id;

-- name: get_api_key
SELECT id, name, kind, key_prefix, created_at, last_used_at, expires_at, revoked_at
FROM api_keys
WHERE environment_id = %(environment_id)s::uuid AND id = %(id)s::uuid
FOR UPDATE;

-- name: other_live_secret_keys
-- Live secret keys of the environment other than this one (the last one cannot be revoked).
SELECT count(*) AS n FROM api_keys
WHERE environment_id = %(environment_id)s::uuid AND id <> %(id)s::uuid AND kind = 'secret'
  AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now());

-- name: revoke_api_key
UPDATE api_keys SET revoked_at = now()
WHERE environment_id = %(environment_id)s::uuid AND id = %(id)s::uuid AND revoked_at IS NULL
RETURNING id, name, kind, key_prefix, created_at, last_used_at, expires_at, revoked_at;

-- name: expire_api_key
-- Rotation: the old key keeps working until the end of its grace period (never extended).
UPDATE api_keys
SET expires_at = least(coalesce(expires_at, 'infinity'), %(expires_at)s::timestamptz)
WHERE environment_id = %(environment_id)s::uuid AND id = %(id)s::uuid AND revoked_at IS NULL
RETURNING id, name, kind, key_prefix, created_at, last_used_at, expires_at, revoked_at;

-- name: rotate_env_secret
-- The current signing secret becomes the previous one, valid for tokens until they expire.
UPDATE environment_secrets
SET previous_secret = jwt_secret, jwt_secret = %(jwt_secret)s::bytea,
    previous_valid_until = now() + make_interval(secs => %(grace_seconds)s::float8),
    rotated_at = now()
WHERE environment_id = %(environment_id)s::uuid
RETURNING rotated_at, previous_valid_until;

-- name: previous_env_secret
SELECT previous_secret FROM environment_secrets
WHERE environment_id = %(environment_id)s::uuid AND previous_secret IS NOT NULL
  AND previous_valid_until > now();

-- name: environment_slug
SELECT slug FROM environments WHERE id = %(environment_id)s::uuid;
