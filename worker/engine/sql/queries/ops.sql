-- The environment's tasks (GET /api/v1/tasks); the retention override.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: list_env_tasks
SELECT t.task_id, t.definition, v.version, t.updated_at
FROM tasks t JOIN worker_versions v ON v.id = t.version_id
WHERE t.environment_id = %(environment_id)s::uuid
ORDER BY t.task_id;

-- name: set_retention_days
UPDATE environments SET retention_days = %(days)s::int WHERE id = %(environment_id)s::uuid
RETURNING id;
