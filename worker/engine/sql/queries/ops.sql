-- Read endpoints operators and the MCP server use: the environment's tasks, a run's logs;
-- the retention override.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: list_env_tasks
SELECT t.task_id, t.definition, v.version, t.updated_at
FROM tasks t JOIN worker_versions v ON v.id = t.version_id
WHERE t.environment_id = %(environment_id)s::uuid
ORDER BY t.task_id;

-- name: run_logs_page
-- The run's log lines in order, after line id ``after`` (0: from the start).
SELECT l.id, l.attempt_number, l.level, l.message, l.attributes, l.logged_at
FROM run_logs l JOIN runs r ON r.id = l.run_id
WHERE l.run_id = %(run_id)s::text AND r.environment_id = %(environment_id)s::uuid
  AND l.id > %(after)s::bigint
ORDER BY l.id
LIMIT %(limit)s::int;

-- name: run_in_env
SELECT 1 FROM runs WHERE id = %(run_id)s::text AND environment_id = %(environment_id)s::uuid;

-- name: set_retention_days
UPDATE environments SET retention_days = %(days)s::int WHERE id = %(environment_id)s::uuid
RETURNING id;
