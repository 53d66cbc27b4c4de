-- Public access tokens: the per-environment signing secret.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: ensure_env_secret
-- Created on first use; concurrent replicas agree on the first row written.
INSERT INTO environment_secrets (environment_id, jwt_secret)
VALUES (%(environment_id)s::uuid, %(jwt_secret)s::bytea)
ON CONFLICT (environment_id) DO NOTHING;

-- name: get_env_secret
SELECT s.jwt_secret, e.id AS environment_id, e.slug, e.type, e.concurrency_limit,
       p.id AS project_id, p.ref AS project_ref
FROM environment_secrets s
JOIN environments e ON e.id = s.environment_id
JOIN projects p ON p.id = e.project_id
WHERE s.environment_id = %(environment_id)s::uuid;
