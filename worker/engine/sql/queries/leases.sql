-- The worker side: dequeue, heartbeats, completions, rescue, scheduling, logs.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: dequeue
-- Leases the runs trigger_pick_runs_v1 picks (limits, pauses, round-robin) and starts their
-- attempt. A run is locked to the version of its first lease; unlocked runs go to the newest.
-- A lease-locked run whose version no live worker serves (orphaned: the code was replaced by
-- a deploy or a hot reload) migrates to the newest version, if that has its task: the pick
-- is offered the orphaned versions too (found by a loose scan of runs_locked_pending_idx).
WITH RECURSIVE locked_versions AS (
    (SELECT r.version_id FROM runs r
     WHERE r.environment_id = %(environment_id)s::uuid AND r.status = 'PENDING'
       AND r.version_id IS NOT NULL
     ORDER BY r.version_id LIMIT 1)
    UNION ALL
    SELECT (SELECT r.version_id FROM runs r
            WHERE r.environment_id = %(environment_id)s::uuid AND r.status = 'PENDING'
              AND r.version_id > l.version_id
            ORDER BY r.version_id LIMIT 1)
    FROM locked_versions l WHERE l.version_id IS NOT NULL
), orphaned AS (
    SELECT l.version_id FROM locked_versions l
    WHERE l.version_id IS NOT NULL AND NOT l.version_id = ANY(%(versions)s::uuid[])
      AND NOT EXISTS (
          SELECT 1 FROM workers w
          WHERE w.environment_id = %(environment_id)s::uuid AND w.version_id = l.version_id
            AND w.last_seen_at > now() - make_interval(secs => %(live_seconds)s::float8))
), moved AS (
    -- The worker registered a newer version while this long-poll waited (a hot reload): what
    -- it leases now runs on that version's code, so it is locked to that version and records
    -- it (pinned runs, and runs whose task the new version lacks, keep theirs).
    SELECT w.version_id FROM workers w
    WHERE w.instance_id = %(instance_id)s::uuid AND NOT w.version_id = ANY(%(versions)s::uuid[])
), candidates AS (
    SELECT r.id, r.task_id, r.resuming,
           CASE WHEN m.version_id IS NOT NULL
                     AND (r.version_id IS NULL OR r.lease_locked_version)
                     AND (SELECT true FROM version_tasks vt
                          WHERE vt.version_id = m.version_id AND vt.task_id = r.task_id LIMIT 1)
                THEN m.version_id
                WHEN r.version_id = ANY(%(versions)s::uuid[]) THEN r.version_id
                ELSE %(newest)s::uuid END AS version_id
    FROM trigger_pick_runs_v1(%(environment_id)s::uuid,
                              %(versions)s::uuid[] || ARRAY(SELECT version_id FROM orphaned),
                              %(newest_tasks)s::text[], %(limit)s::int) AS p
    -- each picked run by primary key, whatever the queue depth and the statistics: one id per
    -- lookup (LIMIT keeps the planner from joining them back into one scan; = ANY(ids) on a
    -- table without statistics was read through a bitmap of every pending run, or by a
    -- sequential scan once planned on a small table; migration 0022, test_hot_plans.py)
    CROSS JOIN LATERAL (
        SELECT r.id, r.task_id, r.resuming, r.version_id, r.lease_locked_version FROM runs r
        WHERE r.id = p.run_id AND r.status IS NOT DISTINCT FROM 'PENDING'
          -- a pinned run (trigger option `version`) never moves to another version
          AND (r.version_id IS NULL OR r.version_id = ANY(%(versions)s::uuid[])
               OR r.lease_locked_version)
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ) r
    LEFT JOIN moved m ON true
), leased AS (
    UPDATE runs r
    SET status = 'EXECUTING',
        -- a resume continues the attempt it checkpointed; anything else starts a new one
        attempt_number = r.attempt_number + CASE WHEN c.resuming THEN 0 ELSE 1 END,
        resuming = false,
        lease_owner = %(instance_id)s::uuid,
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s::float8),
        version_id = c.version_id,
        lease_locked_version = r.lease_locked_version OR r.version_id IS NULL
                               OR r.version_id <> c.version_id,
        status_reason = NULL,
        started_at = coalesce(r.started_at, now()),
        expires_at = NULL,
        -- later than the insert's now() even in the trigger's own transaction (a direct
        -- hand-off): realtime feeds order a run's changes by updated_at (run_feed.as_of)
        updated_at = clock_timestamp(),
        max_attempts = least(coalesce(r.max_attempts,
                                      (vt.definition -> 'retry' ->> 'max_attempts')::int, 1), 250),
        retry = coalesce(r.retry, vt.definition -> 'retry'),
        max_duration = coalesce(r.max_duration, (vt.definition ->> 'max_duration')::float8),
        machine = coalesce(r.machine, vt.definition ->> 'machine', 'small-1x')
    FROM candidates c
    -- by primary key too (a join was hashed over every version's tasks)
    CROSS JOIN LATERAL (SELECT v.definition FROM version_tasks v
                        WHERE v.version_id = c.version_id AND v.task_id = c.task_id LIMIT 1) vt
    WHERE r.id = c.id
    RETURNING r.*, vt.definition ->> 'file' AS task_file, c.resuming AS resumed
), attempts AS (
    INSERT INTO run_attempts (run_id, number, status, worker_instance, version_id)
    SELECT id, attempt_number, 'EXECUTING', %(instance_id)s::uuid, version_id FROM leased
    WHERE NOT resumed
)
-- (lookups per leased run, by primary key: joins were hashed over whole tables)
SELECT l.*, (SELECT v.version FROM worker_versions v WHERE v.id = l.version_id) AS version_name,
       coalesce(l.payload, (SELECT p.payload FROM run_packets p
                            WHERE p.run_id = l.id AND l.payload_offloaded)) AS run_payload,
       -- a resumed attempt, or one handed back and leased again, replays its journal
       coalesce((SELECT true FROM run_journal j
                 WHERE j.run_id = l.id AND j.attempt_number = l.attempt_number LIMIT 1),
                false) AS has_journal
FROM leased l
ORDER BY l.score, l.id;

-- name: async_commit
-- Leases and heartbeats only: this transaction commits without waiting for its WAL flush
-- (docs/benchmarks.md, "Durability").
SET LOCAL synchronous_commit = off;

-- name: heartbeat
UPDATE runs
SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s::float8)
WHERE id = ANY(%(run_ids)s::text[]) AND environment_id = %(environment_id)s::uuid
  AND status = 'EXECUTING' AND lease_owner = %(instance_id)s::uuid
RETURNING id, lease_expires_at;

-- name: touch_worker
-- Liveness for PENDING_VERSION decisions. Returns the worker's version and whether it had
-- been silent long enough to count as gone (its task's runs may be waiting for it).
WITH before AS (
    SELECT instance_id, last_seen_at FROM workers
    WHERE instance_id = %(instance_id)s::uuid FOR UPDATE
)
UPDATE workers w SET last_seen_at = now()
FROM before b
WHERE w.instance_id = b.instance_id
RETURNING w.version_id,
          b.last_seen_at < now() - make_interval(secs => %(live_seconds)s::float8) AS was_gone;

-- name: worker_stopped
-- A worker that shut down no longer counts as live: the versions only it served are orphaned
-- at once (their runs migrate or wait in PENDING_VERSION), not a liveness window later.
UPDATE workers SET last_seen_at = '-infinity'
WHERE instance_id = %(instance_id)s::uuid;

-- name: lock_leased_run
-- The fence: a completion counts only from the lease holder, for the attempt it holds.
SELECT id, environment_id, attempt_number, max_attempts, retry, machine, parent_run_id
FROM runs
WHERE id = %(run_id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
  -- (not "= 'EXECUTING'": the planner walked the partial index of executing runs instead of
  -- the primary key; tests/engine/test_hot_plans.py)
  AND status IS NOT DISTINCT FROM 'EXECUTING' AND lease_owner = %(instance_id)s::uuid
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
    error = %(error)s::jsonb, updated_at = now(), lease_owner = NULL, lease_expires_at = NULL,
    machine = coalesce(%(machine)s::text, machine)
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
-- Delays and retry backoffs that are over: back into the queue — or, for a delayed run whose
-- task no connected worker has any more, into PENDING_VERSION (as at trigger time). Locked
-- runs whose version nobody serves are left to the version sweep (park_unservable_runs).
WITH due AS (
    SELECT id FROM runs
    WHERE status IN ('DELAYED', 'RETRYING_AFTER_FAILURE') AND run_at <= now()
    ORDER BY run_at
    LIMIT %(limit)s::int
    FOR UPDATE SKIP LOCKED
)
UPDATE runs r
SET status = CASE WHEN r.version_id IS NULL AND NOT EXISTS (
                      SELECT 1 FROM workers w
                      JOIN version_tasks vt ON vt.version_id = w.version_id
                                           AND vt.task_id = r.task_id
                      WHERE w.environment_id = r.environment_id
                        AND w.last_seen_at > now() - make_interval(
                                                 secs => %(live_seconds)s::float8))
                  THEN 'PENDING_VERSION' ELSE 'PENDING' END,
    run_at = NULL, updated_at = now()
FROM due WHERE r.id = due.id
RETURNING r.environment_id;

-- name: next_due_at
SELECT min(run_at) AS next_due FROM runs
WHERE status IN ('DELAYED', 'RETRYING_AFTER_FAILURE');

-- name: insert_logs
INSERT INTO run_logs (run_id, attempt_number, level, message, attributes, logged_at, span_id)
SELECT l.run_id, l.attempt_number, l.level, l.message, l.attributes, l.logged_at, l.span_id
FROM jsonb_to_recordset(%(logs)s::jsonb)
     AS l(run_id text, attempt_number int, level text, message text, attributes jsonb,
          logged_at timestamptz, span_id text)
JOIN runs r ON r.id = l.run_id AND r.environment_id = %(environment_id)s::uuid
WHERE r.id = ANY(%(run_ids)s::text[]);  -- primary-key lookups (see complete_successes)

-- name: complete_successes
-- The common case in one statement: plain successes of a batch, fenced like lock_leased_run.
WITH done AS (
    SELECT * FROM jsonb_to_recordset(%(items)s::jsonb)
        AS d(run_id text, attempt_number int, output text, output_type text)
), finished AS (
    UPDATE runs r
    SET status = 'COMPLETED_SUCCESSFULLY', output = d.output,
        output_type = coalesce(d.output_type, 'application/json'), error = NULL,
        completed_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
    FROM done d
    -- the id array lets the planner look rows up by primary key: joined to the record set
    -- alone (estimated at 100 rows) it may hash-join a scan of the whole runs table
    WHERE r.id = ANY(%(run_ids)s::text[]) AND r.id = d.run_id
      AND r.environment_id = %(environment_id)s::uuid
      AND r.status = 'EXECUTING' AND r.lease_owner = %(instance_id)s::uuid
      AND r.attempt_number = d.attempt_number
    RETURNING r.id, r.attempt_number
), attempts AS (
    UPDATE run_attempts a SET status = 'COMPLETED', completed_at = now()
    FROM finished f WHERE a.run_id = f.id AND a.number = f.attempt_number
)
SELECT id FROM finished;

-- name: complete_success
-- complete_successes for one run (a completion on the latency path): no record set to parse
-- and join, and the run is found by its primary key alone. The environment, status and lease
-- are checked, not searched: compared with IS NOT DISTINCT FROM (the same test here: none of
-- the three parameters is NULL), no other index of runs can serve the lookup. With `=` the
-- planner took an index on the environment (every running — or, with no statistics yet, every
-- — run of the environment scanned per completion; docs/benchmarks.md, "Postgres time per
-- run (session 25)").
WITH finished AS (
    UPDATE runs r
    SET status = 'COMPLETED_SUCCESSFULLY', output = %(output)s::text,
        output_type = coalesce(%(output_type)s::text, 'application/json'), error = NULL,
        completed_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
    WHERE r.id = %(run_id)s::text AND r.attempt_number = %(attempt_number)s::int
      AND (r.environment_id, r.status, r.lease_owner)
          IS NOT DISTINCT FROM (%(environment_id)s::uuid, 'EXECUTING', %(instance_id)s::uuid)
    RETURNING r.id, r.attempt_number
), attempts AS (
    UPDATE run_attempts a SET status = 'COMPLETED', completed_at = now()
    FROM finished f WHERE a.run_id = f.id AND a.number = f.attempt_number
)
SELECT id FROM finished;

-- name: complete_success_read
-- complete_success for a run a waiting retrieve of this API process wants (runs.wait_final):
-- the statement also returns the run as retrieve_run (runs.sql) reads it, as it is after this
-- completion, so the completion is one statement where it and the read were two. Its own
-- changes are not visible to the rest of the statement: the run is its updated row, and its
-- attempts are the others as stored with this attempt as updated. tests/engine/
-- test_final_handoff.py holds it to retrieve_run's answer.
WITH finished AS (
    UPDATE runs r
    SET status = 'COMPLETED_SUCCESSFULLY', output = %(output)s::text,
        output_type = coalesce(%(output_type)s::text, 'application/json'), error = NULL,
        completed_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
    WHERE r.id = %(run_id)s::text AND r.attempt_number = %(attempt_number)s::int
      AND (r.environment_id, r.status, r.lease_owner)
          IS NOT DISTINCT FROM (%(environment_id)s::uuid, 'EXECUTING', %(instance_id)s::uuid)
    RETURNING r.*
), attempt AS (
    UPDATE run_attempts a SET status = 'COMPLETED', completed_at = now()
    FROM finished f WHERE a.run_id = f.id AND a.number = f.attempt_number
    RETURNING a.number, a.status, a.error, a.started_at, a.completed_at
)
SELECT f.*, v.version AS version_name,
       EXISTS (SELECT 1 FROM runs c WHERE c.parent_run_id = f.id) AS run_has_children,
       coalesce(f.payload, (SELECT p.payload FROM run_packets p WHERE p.run_id = f.id))
           AS run_payload,
       (SELECT json_agg(json_build_object('number', x.number, 'status', x.status,
                                          'error', x.error, 'started_at', x.started_at,
                                          'completed_at', x.completed_at) ORDER BY x.number)
        FROM (SELECT a.number, a.status, a.error, a.started_at, a.completed_at
              FROM run_attempts a WHERE a.run_id = f.id AND a.number <> f.attempt_number
              UNION ALL SELECT * FROM attempt) x) AS run_attempts,
       CASE WHEN f.parent_run_id IS NULL THEN 0 ELSE (
           WITH RECURSIVE chain(id, parent, depth) AS (
               SELECT f.id, f.parent_run_id, 0
               UNION ALL
               SELECT u.id, u.parent_run_id, c.depth + 1 FROM runs u JOIN chain c ON u.id = c.parent
               WHERE c.depth < 100
           )
           SELECT max(depth) FROM chain) END AS run_depth
FROM finished f LEFT JOIN worker_versions v ON v.id = f.version_id;

-- name: canceled_among
SELECT id FROM runs
WHERE id = ANY(%(run_ids)s::text[]) AND environment_id = %(environment_id)s::uuid
  AND status = 'CANCELED';

-- name: retry_in_place
-- A short retry on the same worker: the run keeps its lease (and its concurrency slot) and
-- attempt n+1 starts now; the worker runs it after the delay.
WITH next AS (
    UPDATE runs r
    SET attempt_number = r.attempt_number + 1, error = %(error)s::jsonb, updated_at = now(),
        lease_expires_at = now() + make_interval(secs => %(lease_seconds)s::float8)
                           + make_interval(secs => %(delay_ms)s::int / 1000.0)
    WHERE r.id = %(run_id)s::text AND r.status = 'EXECUTING'
    RETURNING r.*
), attempts AS (
    -- it starts when the worker's backoff delay is over
    INSERT INTO run_attempts (run_id, number, status, worker_instance, version_id, started_at)
    SELECT id, attempt_number, 'EXECUTING', lease_owner, version_id,
           now() + make_interval(secs => %(delay_ms)s::int / 1000.0)
    FROM next
)
SELECT n.*, vt.definition ->> 'file' AS task_file, false AS resumed,
       v.version AS version_name, coalesce(n.payload, p.payload) AS run_payload
FROM next n
JOIN worker_versions v ON v.id = n.version_id
JOIN version_tasks vt ON vt.version_id = n.version_id AND vt.task_id = n.task_id
LEFT JOIN run_packets p ON p.run_id = n.id AND n.payload_offloaded;
