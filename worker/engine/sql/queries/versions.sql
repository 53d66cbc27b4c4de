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
-- (a run of a task nobody serves waits in PENDING_VERSION). stamp: the row's version, for the
-- definitions cached per API process (engine/task_defs.py, runs.sql insert_cached_run).
SELECT t.task_id, t.definition, t.xmin::text AS stamp,
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
-- (Runs locked to a version are released by the version sweep: unpark_servable_runs.)
UPDATE runs r SET status = 'PENDING', updated_at = now()
WHERE r.environment_id = %(environment_id)s::uuid AND r.status = 'PENDING_VERSION'
  AND r.task_id = ANY(%(task_ids)s::text[]) AND r.version_id IS NULL
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

-- name: park_unservable_runs
-- The version sweep (docs/run-states.md, "Versions"): a queued run locked to a version that no
-- live worker serves, and that cannot migrate (pinned by the trigger option `version`, or no
-- live worker has its task), waits in PENDING_VERSION with the reason, instead of forever in
-- the queue. Distinct (environment, version) pairs come from a loose index scan.
WITH RECURSIVE pairs AS (
    (SELECT r.environment_id, r.version_id FROM runs r
     WHERE r.status = 'PENDING' AND r.version_id IS NOT NULL
     ORDER BY r.environment_id, r.version_id LIMIT 1)
    UNION ALL
    SELECT n.environment_id, n.version_id FROM pairs p CROSS JOIN LATERAL (
        SELECT r.environment_id, r.version_id FROM runs r
        WHERE r.status = 'PENDING' AND r.version_id IS NOT NULL
          AND (r.environment_id, r.version_id) > (p.environment_id, p.version_id)
        ORDER BY r.environment_id, r.version_id LIMIT 1) n
), live AS (
    SELECT w.environment_id, w.version_id FROM workers w
    WHERE w.last_seen_at > now() - make_interval(secs => %(live_seconds)s::float8)
), stuck AS (
    SELECT r.id FROM pairs p
    JOIN runs r ON r.environment_id = p.environment_id AND r.version_id = p.version_id
               AND r.status = 'PENDING'
    WHERE NOT EXISTS (SELECT 1 FROM live WHERE live.version_id = p.version_id)
      AND (NOT r.lease_locked_version OR NOT EXISTS (
               SELECT 1 FROM live JOIN version_tasks vt ON vt.version_id = live.version_id
               WHERE live.environment_id = r.environment_id AND vt.task_id = r.task_id))
    LIMIT %(limit)s::int
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE runs r
SET status = 'PENDING_VERSION', updated_at = now(),
    status_reason = CASE
        WHEN r.lease_locked_version THEN format(
            'locked to version %%s, which no connected worker serves any more, and no '
            'connected worker has task %%s to resume it on', v.version, r.task_id)
        ELSE format('pinned to version %%s, which no connected worker serves', v.version) END
FROM stuck s, worker_versions v
WHERE r.id = s.id AND v.id = r.version_id
RETURNING r.id;

-- name: unpark_servable_runs
-- Parked runs that a live worker can take again (their version is back, or a worker with
-- their task came): back into the queue.
WITH live AS (
    SELECT w.environment_id, w.version_id FROM workers w
    WHERE w.last_seen_at > now() - make_interval(secs => %(live_seconds)s::float8)
), ready AS (
    SELECT r.id FROM runs r
    WHERE r.status = 'PENDING_VERSION' AND r.version_id IS NOT NULL
      AND (EXISTS (SELECT 1 FROM live WHERE live.version_id = r.version_id)
           OR (r.lease_locked_version AND EXISTS (
                   SELECT 1 FROM live JOIN version_tasks vt ON vt.version_id = live.version_id
                   WHERE live.environment_id = r.environment_id AND vt.task_id = r.task_id)))
    LIMIT %(limit)s::int
    FOR UPDATE OF r SKIP LOCKED
)
UPDATE runs r SET status = 'PENDING', status_reason = NULL, updated_at = now()
FROM ready WHERE r.id = ready.id
RETURNING r.environment_id;

-- name: version_environments
-- The environment of each version a dequeue names (a dev key may not name a prod version).
SELECT id, environment_id FROM worker_versions WHERE id = ANY(%(version_ids)s::uuid[]);
