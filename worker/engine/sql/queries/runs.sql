-- Creating, reading, listing and canceling runs.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

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
