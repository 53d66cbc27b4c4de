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
INSERT INTO api_keys (key_hash, environment_id, key_prefix)
VALUES (%(key_hash)s::bytea, %(environment_id)s::uuid, %(key_prefix)s::text)
ON CONFLICT (key_hash) DO NOTHING;
