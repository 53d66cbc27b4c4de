-- Queues: listing and runtime controls (pause, limit override).
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: list_queues
SELECT q.name, q.concurrency_limit, q.limit_override, q.paused,
       (SELECT count(*) FROM runs r WHERE r.environment_id = q.environment_id
          AND r.queue = q.name AND r.status = 'EXECUTING') AS running,
       (SELECT count(*) FROM runs r WHERE r.environment_id = q.environment_id
          AND r.queue = q.name AND r.status = 'PENDING') AS queued
FROM queues q
WHERE q.environment_id = %(environment_id)s::uuid
  AND (%(name)s::text IS NULL OR q.name = %(name)s::text)
ORDER BY q.name;

-- name: set_queue_paused
UPDATE queues SET paused = %(paused)s::boolean, updated_at = now()
WHERE environment_id = %(environment_id)s::uuid AND name = %(name)s::text
RETURNING name;

-- name: set_queue_override
UPDATE queues SET limit_override = %(limit)s::int, updated_at = now()
WHERE environment_id = %(environment_id)s::uuid AND name = %(name)s::text
RETURNING name;
