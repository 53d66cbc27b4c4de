-- Creating, reading, listing and canceling runs.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: claim_request_key
-- The response is written up front (the run id is chosen before the insert); it is updated
-- only when the run turns out to be another one (an idempotency or debounce hit).
INSERT INTO request_keys (environment_id, request_key, response)
VALUES (%(environment_id)s::uuid, %(request_key)s::text, %(response)s::jsonb)
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
-- A queued run wakes the long-polling dequeues of its environment in the same round trip.
WITH inserted AS (
INSERT INTO runs (id, environment_id, task_id, status, payload, payload_type, payload_offloaded,
                  queue, concurrency_key, score, run_at, expires_at, max_attempts, max_duration,
                  machine, version_id, idempotency_key, idempotency_key_expires_at, tags,
                  metadata, batch_id, parent_run_id, root_run_id, is_test, debounce_key,
                  debounce_deadline, replayed_from, batch_index, seed_metadata,
                  trace_id, span_id, parent_span_id)
VALUES (%(id)s::text, %(environment_id)s::uuid, %(task_id)s::text, %(status)s::text,
        %(payload)s::text, %(payload_type)s::text, %(payload_offloaded)s::boolean,
        %(queue)s::text, %(concurrency_key)s::text,
        (extract(epoch FROM now()) * 1000)::bigint - %(priority_ms)s::bigint,
        %(run_at)s::timestamptz, %(expires_at)s::timestamptz, %(max_attempts)s::int,
        %(max_duration)s::float8, %(machine)s::text, %(version_id)s::uuid,
        %(idempotency_key)s::text, %(idempotency_key_expires_at)s::timestamptz,
        %(tags)s::text[], %(metadata)s::jsonb, %(batch_id)s::text, %(parent_run_id)s::text,
        %(root_run_id)s::text, %(is_test)s::boolean, %(debounce_key)s::text,
        %(debounce_deadline)s::timestamptz, %(replayed_from)s::text, %(batch_index)s::int,
        %(metadata)s::jsonb, %(trace_id)s::text, %(span_id)s::text, %(parent_span_id)s::text)
ON CONFLICT DO NOTHING
RETURNING id, status, environment_id
)
SELECT id, CASE WHEN status = 'PENDING' THEN pg_notify('trigger_runs', environment_id::text)
           END AS notified
FROM inserted;

-- name: insert_cached_run
-- The plain trigger in one round trip (engine/triggering.py), with the task's definition the
-- API process cached (engine/task_defs.py): inserted only if that definition is still the
-- current one (the tasks row's xmin is the stamp read with it); no row: it changed, the caller
-- reads it again. status: DELAYED, or PENDING when a worker seen within live_seconds serves
-- the task and its queue is declared, PENDING_VERSION otherwise (the rule of find_tasks and
-- queue_exists, read here in the insert's own statement). With a request key, see claimed.
WITH claimed AS (
-- the request key (x-trigger-request-idempotency-key), claimed with this run's answer only if
-- the definition is still current; taken by an earlier try: no run (the caller reads its answer)
  INSERT INTO request_keys (environment_id, request_key, response)
  SELECT t.environment_id, %(request_key)s::text, %(answer)s::jsonb FROM tasks t
  WHERE %(request_key)s::text IS NOT NULL AND t.environment_id = %(environment_id)s::uuid
    AND t.task_id = %(task_id)s::text AND t.xmin = %(stamp)s::text::xid
  ON CONFLICT DO NOTHING RETURNING 1
), inserted AS (
INSERT INTO runs (id, environment_id, task_id, status, payload, payload_type, payload_offloaded,
                  queue, concurrency_key, score, run_at, expires_at, max_attempts, max_duration,
                  machine, version_id, idempotency_key, idempotency_key_expires_at, tags,
                  metadata, batch_id, parent_run_id, root_run_id, is_test, debounce_key,
                  debounce_deadline, replayed_from, batch_index, seed_metadata,
                  trace_id, span_id, parent_span_id)
SELECT %(id)s::text, t.environment_id, t.task_id,
       CASE WHEN %(status)s::text <> 'PENDING' THEN %(status)s::text
            WHEN EXISTS (
                     SELECT 1 FROM workers w
                     JOIN version_tasks vt ON vt.version_id = w.version_id
                                          AND vt.task_id = t.task_id
                     WHERE w.environment_id = t.environment_id
                       AND w.last_seen_at > now() - make_interval(secs => %(live_seconds)s::float8))
                 AND EXISTS (SELECT 1 FROM queues q WHERE q.environment_id = t.environment_id
                                                      AND q.name = %(queue)s::text)
            THEN 'PENDING' ELSE 'PENDING_VERSION' END,
       %(payload)s::text, %(payload_type)s::text, %(payload_offloaded)s::boolean,
       %(queue)s::text, %(concurrency_key)s::text,
       (extract(epoch FROM now()) * 1000)::bigint - %(priority_ms)s::bigint,
       %(run_at)s::timestamptz, %(expires_at)s::timestamptz, %(max_attempts)s::int,
       %(max_duration)s::float8, %(machine)s::text, %(version_id)s::uuid,
       %(idempotency_key)s::text, %(idempotency_key_expires_at)s::timestamptz,
       %(tags)s::text[], %(metadata)s::jsonb, %(batch_id)s::text, %(parent_run_id)s::text,
       %(root_run_id)s::text, %(is_test)s::boolean, %(debounce_key)s::text,
       %(debounce_deadline)s::timestamptz, %(replayed_from)s::text, %(batch_index)s::int,
       %(metadata)s::jsonb, %(trace_id)s::text, %(span_id)s::text, %(parent_span_id)s::text
FROM tasks t
WHERE t.environment_id = %(environment_id)s::uuid AND t.task_id = %(task_id)s::text
  AND t.xmin = %(stamp)s::text::xid
  AND (%(request_key)s::text IS NULL OR EXISTS (SELECT 1 FROM claimed))
ON CONFLICT DO NOTHING
RETURNING id, status, environment_id
)
SELECT id, status,
       CASE WHEN status = 'PENDING' THEN pg_notify('trigger_runs', environment_id::text)
       END AS notified
FROM inserted;

-- name: insert_cached_run_leased
-- insert_cached_run for a trigger that claimed a waiting long-poll (the direct hand-off,
-- engine/handoff.py), with its lease parameters. In the one-run case (the environment has no
-- other queued run) the pick of trigger_pick_runs_v1 (leases.sql dequeue) would be this run
-- or nothing, by its rules: the environment's limit, the queue's limit and pause, the task in
-- the newest version, the TTL. Then the run is inserted already leased, as dequeue would
-- lease it (version, attempt, retry settings from the version's task): one row written
-- instead of a row and its update. Otherwise it is inserted as insert_cached_run does, and the
-- long-poll looks by itself. The counts are trigger_handoff_room_v1's (migration 0024): it
-- takes the pick's lock on the environment's row, then counts with a snapshot taken after it,
-- so they are exact.
-- Only for plain triggers (run_creator.is_plain, no parent, no version pin): no idempotency
-- or debounce key, batch, parent or offloaded payload to write. (Under 4 KiB without its
-- comments: psycopg caches the conversion of shorter statements only.)
WITH task AS (
  SELECT t.environment_id AS env, t.task_id,
    CASE WHEN %(status)s::text <> 'PENDING' THEN %(status)s::text
      WHEN EXISTS (SELECT 1 FROM workers w
      JOIN version_tasks vt ON vt.version_id = w.version_id AND vt.task_id = t.task_id
      WHERE w.environment_id = t.environment_id
        AND w.last_seen_at > now() - make_interval(secs => %(live_seconds)s::float8))
      AND EXISTS (SELECT 1 FROM queues q
        WHERE q.environment_id = t.environment_id AND q.name = %(queue)s::text)
      THEN 'PENDING' ELSE 'PENDING_VERSION' END AS status
  FROM tasks t
  WHERE t.environment_id = %(environment_id)s::uuid AND t.task_id = %(task_id)s::text
    AND t.xmin = %(stamp)s::text::xid
), claimed AS (
-- the request key (x-trigger-request-idempotency-key), claimed with this run's answer; taken
-- by an earlier try: no run (the caller reads that try's answer)
  INSERT INTO request_keys (environment_id, request_key, response)
  SELECT env, %(request_key)s::text, %(answer)s::jsonb FROM task
  WHERE %(request_key)s::text IS NOT NULL
  ON CONFLICT DO NOTHING RETURNING 1
), l AS (
-- leased: the version the long-poll's worker moved to meanwhile if it has the task (as
-- dequeue's "moved"), else the newest
  SELECT 'EXECUTING' AS s, vt.definition AS d, vt.version_id, v.version
  FROM task k
  JOIN version_tasks vt ON vt.task_id = k.task_id AND vt.version_id = coalesce(
      (SELECT w.version_id FROM workers w
       JOIN version_tasks m ON m.version_id = w.version_id AND m.task_id = k.task_id
       WHERE w.instance_id = %(instance_id)s::uuid
         AND NOT w.version_id = ANY(%(versions)s::uuid[])), %(newest)s::uuid)
  JOIN worker_versions v ON v.id = vt.version_id
  WHERE k.status = 'PENDING'
    AND k.task_id = ANY(%(newest_tasks)s::text[])
    AND coalesce(%(expires_at)s::timestamptz > now(), true)
    AND trigger_handoff_room_v1(k.env, %(queue)s::text, %(concurrency_key)s::text,
                                %(limit)s::int)
), inserted AS (
INSERT INTO runs (id, environment_id, task_id, status, payload, payload_type, queue,
        concurrency_key, score, run_at, expires_at, max_attempts, max_duration,
        machine, tags, metadata, is_test, replayed_from, seed_metadata, trace_id,
        span_id, attempt_number, lease_owner, lease_expires_at,
        lease_locked_version, started_at, retry, version_id)
SELECT %(id)s::text, k.env, k.task_id, coalesce(l.s, k.status),
  %(payload)s::text, %(payload_type)s::text, %(queue)s::text, %(concurrency_key)s::text,
  (extract(epoch FROM now()) * 1000)::bigint - %(priority_ms)s::bigint, %(run_at)s::timestamptz,
  CASE WHEN l.s IS NULL THEN %(expires_at)s::timestamptz END,
  CASE WHEN l.s IS NULL THEN %(max_attempts)s::int
    ELSE least(coalesce(%(max_attempts)s::int, (d -> 'retry' ->> 'max_attempts')::int, 1), 250)
  END,
  coalesce(%(max_duration)s::float8, (d ->> 'max_duration')::float8),
  coalesce(%(machine)s::text, d ->> 'machine', CASE WHEN l.s IS NOT NULL THEN 'small-1x' END),
  %(tags)s::text[], %(metadata)s::jsonb, %(is_test)s::boolean, %(replayed_from)s::text,
  %(metadata)s::jsonb, %(trace_id)s::text, %(span_id)s::text,
  CASE WHEN l.s IS NULL THEN 0 ELSE 1 END,
  CASE WHEN l.s IS NOT NULL THEN %(instance_id)s::uuid END,
  CASE WHEN l.s IS NOT NULL THEN now() + make_interval(secs => %(lease_seconds)s::float8) END,
  l.s IS NOT NULL, CASE WHEN l.s IS NOT NULL THEN now() END, d -> 'retry', l.version_id
FROM task k LEFT JOIN l ON true
WHERE %(request_key)s::text IS NULL OR EXISTS (SELECT 1 FROM claimed)
ON CONFLICT DO NOTHING
RETURNING *
), attempts AS (
  INSERT INTO run_attempts (run_id, number, status, worker_instance, version_id)
  SELECT id, 1, 'EXECUTING', lease_owner, version_id FROM inserted WHERE status = 'EXECUTING'
)
SELECT i.*,
  CASE WHEN i.status = 'PENDING' THEN pg_notify('trigger_runs', i.environment_id::text)
  END AS notified,
  l.d ->> 'file' AS task_file, false AS resumed, l.version AS version_name,
  i.payload AS run_payload, false AS has_journal
FROM inserted i LEFT JOIN l ON i.status = 'EXECUTING';

-- name: insert_packet
INSERT INTO run_packets (run_id, payload) VALUES (%(run_id)s::text, %(payload)s::text);

-- name: find_debounced_run
SELECT id, run_at, debounce_deadline FROM runs
WHERE environment_id = %(environment_id)s::uuid AND task_id = %(task_id)s::text
  AND debounce_key = %(debounce_key)s::text AND status = 'DELAYED'
FOR UPDATE;

-- name: push_debounced_run
-- Another trigger with the key: start later (never past the deadline); in trailing mode the
-- newest trigger's payload and options replace the old ones.
UPDATE runs
SET run_at = least(%(run_at)s::timestamptz, coalesce(debounce_deadline, 'infinity')),
    payload = CASE WHEN %(trailing)s::boolean THEN %(payload)s::text ELSE payload END,
    payload_type = CASE WHEN %(trailing)s::boolean THEN %(payload_type)s::text
                        ELSE payload_type END,
    metadata = CASE WHEN %(trailing)s::boolean THEN %(metadata)s::jsonb ELSE metadata END,
    seed_metadata = CASE WHEN %(trailing)s::boolean THEN %(metadata)s::jsonb
                         ELSE seed_metadata END,
    tags = CASE WHEN %(trailing)s::boolean THEN %(tags)s::text[] ELSE tags END,
    max_attempts = CASE WHEN %(trailing)s::boolean THEN %(max_attempts)s::int
                        ELSE max_attempts END,
    max_duration = CASE WHEN %(trailing)s::boolean THEN %(max_duration)s::float8
                        ELSE max_duration END,
    machine = CASE WHEN %(trailing)s::boolean THEN %(machine)s::text ELSE machine END,
    updated_at = now()
WHERE id = %(id)s::text;

-- name: find_parent
SELECT id, coalesce(root_run_id, id) AS root_id, trace_id, span_id FROM runs
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;

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
       coalesce(r.payload, (SELECT p.payload FROM run_packets p WHERE p.run_id = r.id))
           AS run_payload,
       -- its attempts in the same statement (run_reads.assemble turns their times back into
       -- timestamps): one statement less per retrieve and per completion a retrieve waits for
       (SELECT json_agg(json_build_object('number', a.number, 'status', a.status,
                                          'error', a.error, 'started_at', a.started_at,
                                          'completed_at', a.completed_at) ORDER BY a.number)
        FROM run_attempts a WHERE a.run_id = r.id) AS run_attempts,
       (SELECT count(*) FROM run_attempts a WHERE a.run_id = r.id) AS attempt_count
FROM runs r LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.id = %(id)s::text AND r.environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;

-- name: retrieve_run
-- What GET /api/v3/runs/{id} reads (run_reads.py): get_run's row with its attempts, but its
-- attempt count (the caller counts the attempts it reads anyway), with the run's depth
-- (run_depth's walk up the parents, only for a child run), and whether it triggered runs: only
-- then are its children read (run_children, for relatedRuns), in a round trip of their own.
SELECT r.*, v.version AS version_name,
       EXISTS (SELECT 1 FROM runs c WHERE c.parent_run_id = r.id) AS run_has_children,
       coalesce(r.payload, (SELECT p.payload FROM run_packets p WHERE p.run_id = r.id))
           AS run_payload,
       -- its attempts in the same statement (run_reads.assemble turns their times back into
       -- timestamps): one statement less per retrieve and per completion a retrieve waits for
       (SELECT json_agg(json_build_object('number', a.number, 'status', a.status,
                                          'error', a.error, 'started_at', a.started_at,
                                          'completed_at', a.completed_at) ORDER BY a.number)
        FROM run_attempts a WHERE a.run_id = r.id) AS run_attempts,
       CASE WHEN r.parent_run_id IS NULL THEN 0 ELSE (
           WITH RECURSIVE chain(id, parent, depth) AS (
               SELECT r.id, r.parent_run_id, 0
               UNION ALL
               SELECT u.id, u.parent_run_id, c.depth + 1 FROM runs u JOIN chain c ON u.id = c.parent
               WHERE c.depth < 100
           )
           SELECT max(depth) FROM chain) END AS run_depth
FROM runs r LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.id = %(id)s::text AND r.environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;

-- name: list_runs
-- Cursor pagination on (created_at, id), newest first. Filters are optional (NULL = any);
-- a list means any of its values (tags: a run with any of them).
SELECT r.*, v.version AS version_name, r.attempt_number AS attempt_count
FROM runs r LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.environment_id = %(environment_id)s::uuid
  AND (%(statuses)s::text[] IS NULL OR r.status = ANY(%(statuses)s::text[]))
  AND (%(task_ids)s::text[] IS NULL OR r.task_id = ANY(%(task_ids)s::text[]))
  -- `<> '{}'`: the GIN index on tags only holds runs with tags (migration 0019)
  AND (%(tags)s::text[] IS NULL OR (r.tags && %(tags)s::text[] AND r.tags <> '{}'))
  AND (%(batch_id)s::text IS NULL OR r.batch_id = %(batch_id)s::text)
  AND (%(queues)s::text[] IS NULL OR r.queue = ANY(%(queues)s::text[]))
  AND (%(versions)s::text[] IS NULL OR v.version = ANY(%(versions)s::text[]))
  AND (%(is_test)s::boolean IS NULL OR r.is_test = %(is_test)s::boolean)
  AND (%(created_from)s::timestamptz IS NULL OR r.created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR r.created_at <= %(created_to)s::timestamptz)
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
    WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
      AND status NOT IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                         'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT')
    RETURNING id, attempt_number, environment_id
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
       coalesce(array_agg(r.id ORDER BY r.batch_index, r.created_at, r.id)
                FILTER (WHERE r.id IS NOT NULL), '{}') AS run_ids,
       count(r.id) FILTER (WHERE r.status NOT IN (
           'COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED', 'SYSTEM_FAILURE',
           'CANCELED', 'EXPIRED', 'TIMED_OUT')) AS unfinished
FROM batches b LEFT JOIN runs r ON r.batch_id = b.id
WHERE b.id = %(id)s::text AND b.environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
GROUP BY b.id;

-- name: reschedule_run
UPDATE runs
SET run_at = %(run_at)s::timestamptz, updated_at = now(),
    expires_at = CASE WHEN expires_at IS NULL THEN NULL
                      ELSE %(run_at)s::timestamptz + (expires_at - run_at) END
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid AND status = 'DELAYED'
RETURNING id;

-- name: reset_idempotency_key
UPDATE runs SET idempotency_key = NULL, idempotency_key_expires_at = NULL
WHERE environment_id = %(environment_id)s::uuid AND task_id = %(task_id)s::text
  AND idempotency_key = %(idempotency_key)s::text
RETURNING id;

-- name: expire_runs
-- TTL: runs that did not start in time.
WITH due AS (
    SELECT id FROM runs
    WHERE status IN ('PENDING', 'DELAYED', 'PENDING_VERSION') AND expires_at <= now()
    ORDER BY expires_at
    LIMIT %(limit)s::int
    FOR UPDATE SKIP LOCKED
)
UPDATE runs r
SET status = 'EXPIRED', completed_at = now(), updated_at = now(), run_at = NULL,
    error = jsonb_build_object('type', 'INTERNAL_ERROR', 'code', 'TASK_RUN_EXPIRED',
                               'message', 'the run was not started before its TTL')
FROM due WHERE r.id = due.id
RETURNING r.id;

-- name: run_task_id
-- The task of a run a request key answered with (a key reused for another task is refused).
SELECT task_id FROM runs WHERE id = %(id)s::text;
-- name: run_depth
-- How many parents a run has (0 for a root run).
WITH RECURSIVE chain(id, parent, depth) AS (
    SELECT id, parent_run_id, 0 FROM runs WHERE id = %(id)s::text
    UNION ALL
    SELECT r.id, r.parent_run_id, c.depth + 1 FROM runs r JOIN chain c ON r.id = c.parent
    WHERE c.depth < 100
)
SELECT max(depth) AS depth FROM chain;

-- name: run_children
-- The runs a run triggered (for relatedRuns.children), oldest first. Found through the parent
-- index only: the environment is checked with IS NOT DISTINCT FROM (the same test, the parameter
-- is never NULL), else, with no statistics yet, the planner walked the environment's whole
-- runs list in created_at order at every retrieve (docs/benchmarks.md, "Postgres time per run
-- (session 25)").
SELECT r.*, v.version AS version_name, r.attempt_number AS attempt_count
FROM runs r LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.parent_run_id = %(id)s::text
  AND r.environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
ORDER BY r.created_at, r.id
LIMIT 100;
