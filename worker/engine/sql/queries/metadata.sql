-- Run metadata: read, lock and write a run's metadata object.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: lock_run_metadata
SELECT id, metadata, parent_run_id, root_run_id, status FROM runs
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
FOR UPDATE;

-- name: run_parent
SELECT parent_run_id, root_run_id FROM runs WHERE id = %(id)s::text;

-- name: write_run_metadata
UPDATE runs SET metadata = %(metadata)s::jsonb, updated_at = now()
WHERE id = %(id)s::text;

-- name: get_run_metadata
SELECT id, metadata, task_id, tags, batch_id FROM runs
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;
