-- Code versions, their task definitions, and connected workers.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: find_version
SELECT id, version FROM worker_versions
WHERE environment_id = %(environment_id)s::uuid AND content_hash = %(content_hash)s::text;

-- name: insert_version
-- Version strings are <UTC date>.<n>, n counting the versions of that day in the environment.
INSERT INTO worker_versions (environment_id, version, content_hash)
SELECT %(environment_id)s::uuid,
       to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD') || '.' || (count(*) + 1)::text,
       %(content_hash)s::text
FROM worker_versions
WHERE environment_id = %(environment_id)s::uuid
  AND version LIKE to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD') || '.%%'
ON CONFLICT (environment_id, content_hash) DO NOTHING
RETURNING id, version;

-- name: insert_version_task
INSERT INTO version_tasks (version_id, task_id, definition)
VALUES (%(version_id)s::uuid, %(task_id)s::text, %(definition)s::jsonb)
ON CONFLICT (version_id, task_id) DO NOTHING;

-- name: upsert_task
INSERT INTO tasks (environment_id, task_id, version_id, definition)
VALUES (%(environment_id)s::uuid, %(task_id)s::text, %(version_id)s::uuid, %(definition)s::jsonb)
ON CONFLICT (environment_id, task_id) DO UPDATE
SET version_id = excluded.version_id, definition = excluded.definition, updated_at = now();

-- name: upsert_worker
INSERT INTO workers (instance_id, environment_id, version_id, metadata)
VALUES (%(instance_id)s::uuid, %(environment_id)s::uuid, %(version_id)s::uuid, %(metadata)s::jsonb)
ON CONFLICT (instance_id) DO UPDATE
SET version_id = excluded.version_id, last_seen_at = now();

-- name: find_task
SELECT task_id, version_id, definition FROM tasks
WHERE environment_id = %(environment_id)s::uuid AND task_id = %(task_id)s::text;

-- name: find_tasks
-- The tasks' newest definitions, and whether a worker that serves each was seen recently
-- (a run of a task nobody serves waits in PENDING_VERSION).
SELECT t.task_id, t.definition,
       EXISTS (
           SELECT 1 FROM workers w
           JOIN version_tasks vt ON vt.version_id = w.version_id AND vt.task_id = t.task_id
           WHERE w.environment_id = t.environment_id
             AND w.last_seen_at > now() - make_interval(secs => %(live_seconds)s::float8)
       ) AS live
FROM tasks t
WHERE t.environment_id = %(environment_id)s::uuid AND t.task_id = ANY(%(task_ids)s::text[]);

-- name: upsert_queue
-- The newest registration's declared limit wins; pauses and overrides are kept.
INSERT INTO queues (environment_id, name, concurrency_limit)
VALUES (%(environment_id)s::uuid, %(name)s::text, %(concurrency_limit)s::int)
ON CONFLICT (environment_id, name) DO UPDATE
SET concurrency_limit = excluded.concurrency_limit, updated_at = now();

-- name: release_version_waits
-- Runs that waited for a worker with their task (and a declared queue) can now be queued.
UPDATE runs r SET status = 'PENDING', updated_at = now()
WHERE r.environment_id = %(environment_id)s::uuid AND r.status = 'PENDING_VERSION'
  AND r.task_id = ANY(%(task_ids)s::text[])
  AND EXISTS (SELECT 1 FROM queues q WHERE q.environment_id = r.environment_id
                                       AND q.name = r.queue)
RETURNING r.id;

-- name: queue_exists
SELECT EXISTS (SELECT 1 FROM queues WHERE environment_id = %(environment_id)s::uuid
                                      AND name = %(name)s::text) AS exists;

-- name: find_version_by_name
SELECT id FROM worker_versions
WHERE environment_id = %(environment_id)s::uuid AND version = %(version)s::text;

-- name: version_task_ids
SELECT task_id FROM version_tasks WHERE version_id = %(version_id)s::uuid;

-- name: version_environments
-- The environment of each version a dequeue names (a dev key may not name a prod version).
SELECT id, environment_id FROM worker_versions WHERE id = ANY(%(version_ids)s::uuid[]);
