-- Named queries of the engine. Each starts with "-- name: <name>"; parameters are psycopg
-- named placeholders with explicit casts. Loaded by worker/engine/queries.py.

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
SELECT task_id, definition FROM tasks
WHERE environment_id = %(environment_id)s::uuid AND task_id = ANY(%(task_ids)s::text[]);

-- name: claim_request_key
INSERT INTO request_keys (environment_id, request_key, response)
VALUES (%(environment_id)s::uuid, %(request_key)s::text, '{}'::jsonb)
ON CONFLICT DO NOTHING
RETURNING request_key;

-- name: find_request_key
SELECT response FROM request_keys
WHERE environment_id = %(environment_id)s::uuid AND request_key = %(request_key)s::text;

-- name: save_request_key
UPDATE request_keys SET response = %(response)s::jsonb
WHERE environment_id = %(environment_id)s::uuid AND request_key = %(request_key)s::text;

-- name: insert_batch
INSERT INTO batches (id, environment_id, run_count)
VALUES (%(id)s::text, %(environment_id)s::uuid, %(run_count)s::int);

-- name: insert_run
INSERT INTO runs (id, environment_id, task_id, status, payload, payload_type, queue, score,
                  run_at, max_attempts, max_duration, machine, idempotency_key,
                  idempotency_key_expires_at, tags, metadata, batch_id, parent_run_id,
                  root_run_id, is_test)
VALUES (%(id)s::text, %(environment_id)s::uuid, %(task_id)s::text, %(status)s::text,
        %(payload)s::text, %(payload_type)s::text, %(queue)s::text,
        (extract(epoch FROM now()) * 1000)::bigint - %(priority_ms)s::bigint,
        %(run_at)s::timestamptz, %(max_attempts)s::int, %(max_duration)s::float8,
        %(machine)s::text, %(idempotency_key)s::text, %(idempotency_key_expires_at)s::timestamptz,
        %(tags)s::text[], %(metadata)s::jsonb, %(batch_id)s::text, %(parent_run_id)s::text,
        %(root_run_id)s::text, %(is_test)s::boolean)
ON CONFLICT (environment_id, task_id, idempotency_key) WHERE idempotency_key IS NOT NULL
DO NOTHING
RETURNING id;

-- name: find_idempotent_run
SELECT id, status, idempotency_key_expires_at FROM runs
WHERE environment_id = %(environment_id)s::uuid AND task_id = %(task_id)s::text
  AND idempotency_key = %(idempotency_key)s::text
FOR UPDATE;

-- name: clear_idempotency_key
UPDATE runs SET idempotency_key = NULL, idempotency_key_expires_at = NULL
WHERE id = %(id)s::text;

-- name: notify_runs
SELECT pg_notify('trigger_runs', %(environment_id)s::text);

-- name: get_run
SELECT r.*, v.version AS version_name,
       (SELECT count(*) FROM run_attempts a WHERE a.run_id = r.id) AS attempt_count
FROM runs r LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.id = %(id)s::text AND r.environment_id = %(environment_id)s::uuid;

-- name: list_attempts
SELECT number, status, error, started_at, completed_at FROM run_attempts
WHERE run_id = %(id)s::text ORDER BY number;

-- name: list_runs
-- Cursor pagination on (created_at, id), newest first. Filters are optional (NULL = any).
SELECT r.*, v.version AS version_name, r.attempt_number AS attempt_count
FROM runs r LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.environment_id = %(environment_id)s::uuid
  AND (%(statuses)s::text[] IS NULL OR r.status = ANY(%(statuses)s::text[]))
  AND (%(task_ids)s::text[] IS NULL OR r.task_id = ANY(%(task_ids)s::text[]))
  AND (%(tag)s::text IS NULL OR %(tag)s::text = ANY(r.tags))
  AND (%(batch_id)s::text IS NULL OR r.batch_id = %(batch_id)s::text)
  AND (%(after_created)s::timestamptz IS NULL
       OR (r.created_at, r.id) < (%(after_created)s::timestamptz, %(after_id)s::text))
ORDER BY r.created_at DESC, r.id DESC
LIMIT %(limit)s::int;

-- name: cancel_run
-- Cancels a run that is not final yet; a leased run loses its lease at once (fencing its
-- worker's completion), and the worker learns of it at its next heartbeat.
WITH canceled AS (
    UPDATE runs
    SET status = 'CANCELED', completed_at = now(), updated_at = now(),
        lease_owner = NULL, lease_expires_at = NULL, run_at = NULL,
        error = jsonb_build_object('type', 'INTERNAL_ERROR', 'code', 'TASK_RUN_CANCELLED',
                                   'message', 'Run was canceled')
    WHERE id = %(id)s::text AND environment_id = %(environment_id)s::uuid
      AND status NOT IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                         'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT')
    RETURNING id, attempt_number
), attempt AS (
    UPDATE run_attempts a SET status = 'CANCELED', completed_at = now()
    FROM canceled c WHERE a.run_id = c.id AND a.number = c.attempt_number
      AND a.status = 'EXECUTING'
)
SELECT id FROM canceled;

-- name: children_to_cancel
SELECT id FROM runs
WHERE root_run_id = %(id)s::text OR parent_run_id = %(id)s::text;

-- name: dequeue
-- Leases up to `limit` runs in queue order for the given versions and starts their attempt.
-- A run is locked to the version of its first lease; unlocked runs go to the newest version.
WITH candidates AS (
    SELECT r.id, r.task_id, coalesce(r.version_id, %(newest)s::uuid) AS version_id
    FROM runs r
    WHERE r.environment_id = %(environment_id)s::uuid
      AND r.status = 'PENDING'
      AND (r.version_id = ANY(%(versions)s::uuid[])
           OR (r.version_id IS NULL AND r.task_id = ANY(%(newest_tasks)s::text[])))
    ORDER BY r.score, r.id
    LIMIT %(limit)s::int
    FOR UPDATE OF r SKIP LOCKED
), leased AS (
    UPDATE runs r
    SET status = 'EXECUTING',
        attempt_number = r.attempt_number + 1,
        lease_owner = %(instance_id)s::uuid,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s::float8),
        version_id = c.version_id,
        started_at = coalesce(r.started_at, now()),
        updated_at = now(),
        max_attempts = least(coalesce(r.max_attempts,
                                      (vt.definition -> 'retry' ->> 'max_attempts')::int, 1), 250),
        retry = coalesce(r.retry, vt.definition -> 'retry'),
        max_duration = coalesce(r.max_duration, (vt.definition ->> 'max_duration')::float8),
        machine = coalesce(r.machine, vt.definition ->> 'machine', 'small-1x')
    FROM candidates c
    JOIN version_tasks vt ON vt.version_id = c.version_id AND vt.task_id = c.task_id
    WHERE r.id = c.id
    RETURNING r.*, vt.definition ->> 'file' AS task_file
), attempts AS (
    INSERT INTO run_attempts (run_id, number, status, worker_instance, version_id)
    SELECT id, attempt_number, 'EXECUTING', %(instance_id)s::uuid, version_id FROM leased
)
SELECT l.*, v.version AS version_name
FROM leased l JOIN worker_versions v ON v.id = l.version_id
ORDER BY l.score, l.id;

-- name: heartbeat
UPDATE runs
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s::float8)
WHERE id = ANY(%(run_ids)s::text[]) AND environment_id = %(environment_id)s::uuid
  AND status = 'EXECUTING' AND lease_owner = %(instance_id)s::uuid
RETURNING id, lease_expires_at;

-- name: touch_worker
UPDATE workers SET last_seen_at = now() WHERE instance_id = %(instance_id)s::uuid;

-- name: lock_leased_run
-- The fence: a completion counts only from the lease holder, for the attempt it holds.
SELECT id, environment_id, attempt_number, max_attempts, retry, parent_run_id
FROM runs
WHERE id = %(run_id)s::text AND environment_id = %(environment_id)s::uuid
  AND status = 'EXECUTING' AND lease_owner = %(instance_id)s::uuid
  AND attempt_number = %(attempt_number)s::int
FOR UPDATE;

-- name: finish_run
UPDATE runs
SET status = %(status)s::text, output = %(output)s::text, output_type = %(output_type)s::text,
    error = %(error)s::jsonb, completed_at = now(), updated_at = now(),
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(run_id)s::text;

-- name: retry_run
-- Back to the queue after a failed attempt. The original score is kept, so a retry does not
-- queue behind runs triggered after it.
UPDATE runs
SET status = CASE WHEN %(delay_ms)s::int <= 0 THEN 'PENDING' ELSE 'RETRYING_AFTER_FAILURE' END,
    run_at = CASE WHEN %(delay_ms)s::int <= 0 THEN NULL
                  ELSE now() + make_interval(secs => %(delay_ms)s::int / 1000.0) END,
    error = %(error)s::jsonb, updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(run_id)s::text;

-- name: release_run
-- Hand a leased run back untouched (graceful shutdown): its attempt does not count.
WITH released AS (
    UPDATE runs
    SET status = 'PENDING', attempt_number = attempt_number - 1, updated_at = now(),
        lease_owner = NULL, lease_expires_at = NULL
    WHERE id = ANY(%(run_ids)s::text[]) AND environment_id = %(environment_id)s::uuid
      AND status = 'EXECUTING' AND lease_owner = %(instance_id)s::uuid
    RETURNING id, attempt_number + 1 AS released_attempt, environment_id
), gone AS (
    DELETE FROM run_attempts a USING released r
    WHERE a.run_id = r.id AND a.number = r.released_attempt
)
SELECT id, environment_id FROM released;

-- name: end_attempt
UPDATE run_attempts
SET status = %(status)s::text, error = %(error)s::jsonb, completed_at = now()
WHERE run_id = %(run_id)s::text AND number = %(attempt_number)s::int;

-- name: expired_leases
SELECT id, environment_id, lease_owner, attempt_number FROM runs
WHERE status = 'EXECUTING' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT %(limit)s::int
FOR UPDATE SKIP LOCKED;

-- name: promote_due_runs
-- Delays and retry backoffs that are over: back into the queue.
WITH due AS (
    SELECT id FROM runs
    WHERE status IN ('DELAYED', 'RETRYING_AFTER_FAILURE') AND run_at <= now()
    ORDER BY run_at
    LIMIT %(limit)s::int
    FOR UPDATE SKIP LOCKED
)
UPDATE runs r SET status = 'PENDING', run_at = NULL, updated_at = now()
FROM due WHERE r.id = due.id
RETURNING r.environment_id;

-- name: next_due_at
SELECT min(run_at) AS next_due FROM runs
WHERE status IN ('DELAYED', 'RETRYING_AFTER_FAILURE');

-- name: insert_logs
INSERT INTO run_logs (run_id, attempt_number, level, message, attributes, logged_at)
SELECT l.run_id, l.attempt_number, l.level, l.message, l.attributes, l.logged_at
FROM jsonb_to_recordset(%(logs)s::jsonb)
     AS l(run_id text, attempt_number int, level text, message text, attributes jsonb,
          logged_at timestamptz)
JOIN runs r ON r.id = l.run_id AND r.environment_id = %(environment_id)s::uuid;

-- name: list_logs
SELECT attempt_number, level, message, attributes, logged_at FROM run_logs
WHERE run_id = %(run_id)s::text ORDER BY id LIMIT %(limit)s::int;

-- name: get_batch
SELECT b.id, b.run_count, b.created_at,
       coalesce(array_agg(r.id ORDER BY r.created_at, r.id)
                FILTER (WHERE r.id IS NOT NULL), '{}') AS run_ids,
       count(r.id) FILTER (WHERE r.status NOT IN (
           'COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED', 'SYSTEM_FAILURE',
           'CANCELED', 'EXPIRED', 'TIMED_OUT')) AS unfinished
FROM batches b LEFT JOIN runs r ON r.batch_id = b.id
WHERE b.id = %(id)s::text AND b.environment_id = %(environment_id)s::uuid
GROUP BY b.id;
