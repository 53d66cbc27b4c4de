-- Observability (docs/api.md, "Traces"): spans and logs of runs, and /metrics.

-- name: insert_spans
-- A batch of spans in one statement; only spans of runs of the environment are kept, a span
-- already stored (an exporter retrying) is skipped. The runs are found by primary key only
-- (MATERIALIZED: the planner may not turn the environment test into a scan of every run of
-- the environment, which it did, by runs_list_task_idx), then their environment is checked.
WITH known AS MATERIALIZED (
    SELECT id, environment_id FROM runs WHERE id = ANY(%(run_ids)s::text[])
)
INSERT INTO run_spans (trace_id, span_id, parent_span_id, run_id, environment_id, name, kind,
                       start_time, end_time, status_code, status_message, attributes, events,
                       scope)
SELECT s.trace_id, s.span_id, s.parent_span_id, s.run_id, %(environment_id)s::uuid, s.name,
       s.kind, s.start_time, s.end_time, s.status_code, s.status_message,
       coalesce(s.attributes, '{}'), coalesce(s.events, '[]'), s.scope
FROM jsonb_to_recordset(%(spans)s::jsonb)
     AS s(trace_id text, span_id text, parent_span_id text, run_id text, name text,
          kind smallint, start_time timestamptz, end_time timestamptz, status_code smallint,
          status_message text, attributes jsonb, events jsonb, scope text)
WHERE s.run_id = ANY(ARRAY(SELECT id FROM known
                           WHERE environment_id = %(environment_id)s::uuid))
ON CONFLICT (trace_id, span_id) DO NOTHING;

-- name: trace_run
-- The run whose trace is read, with what its own (synthesised) span shows.
SELECT r.id, r.task_id, r.status, r.queue, r.machine, r.trace_id, r.span_id, r.parent_span_id,
       r.created_at, r.started_at, r.completed_at, r.updated_at, r.attempt_number, r.error,
       r.root_run_id, r.parent_run_id, v.version AS version_name, e.type AS environment_type
FROM runs r
JOIN environments e ON e.id = r.environment_id
LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.id = %(run_id)s::text AND r.environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;

-- name: spans_of_runs
-- The spans stored for a run and the runs below it in the same trace (children, grandchildren;
-- runs_parent_idx), by start time. Bounded: a trace view is not an export.
WITH RECURSIVE tree AS (
    SELECT %(run_id)s::text AS id, 0 AS depth
    UNION ALL
    SELECT c.id, t.depth + 1 FROM runs c JOIN tree t ON c.parent_run_id = t.id
    WHERE t.depth < 8
)
SELECT s.trace_id, s.span_id, s.parent_span_id, s.run_id, s.name, s.kind, s.start_time,
       s.end_time, s.status_code, s.status_message, s.attributes, s.events
FROM run_spans s
WHERE s.run_id IN (SELECT id FROM tree) AND s.environment_id = %(environment_id)s::uuid
ORDER BY s.start_time, s.span_id
LIMIT %(limit)s::int;

-- name: child_runs_in_trace
-- Runs below a run (their own spans are synthesised like the run's).
WITH RECURSIVE tree AS (
    SELECT id, 0 AS depth FROM runs WHERE id = %(run_id)s::text
    UNION ALL
    SELECT c.id, t.depth + 1 FROM runs c JOIN tree t ON c.parent_run_id = t.id
    WHERE t.depth < 8
)
SELECT r.id, r.task_id, r.status, r.queue, r.machine, r.trace_id, r.span_id, r.parent_span_id,
       r.created_at, r.started_at, r.completed_at, r.updated_at, r.attempt_number, r.error,
       r.root_run_id, r.parent_run_id, NULL::text AS version_name, NULL::text AS environment_type
FROM runs r
WHERE r.id IN (SELECT id FROM tree WHERE depth > 0)
  AND r.environment_id = %(environment_id)s::uuid
LIMIT 1000;

-- name: span_of_run
SELECT trace_id, span_id, parent_span_id, run_id, name, kind, start_time, end_time,
       status_code, status_message, attributes, events
FROM run_spans
WHERE run_id = %(run_id)s::text AND span_id = %(span_id)s::text
  AND environment_id = %(environment_id)s::uuid;

-- name: run_log_page
-- A page of a run's logs (run_logs_run_idx), optionally at or above a level.
SELECT id, run_id, attempt_number, level, message, attributes, logged_at, span_id FROM run_logs
WHERE run_id = %(run_id)s::text AND id > %(after)s::bigint
  AND (%(levels)s::text[] IS NULL OR level = ANY(%(levels)s::text[]))
ORDER BY id
LIMIT %(limit)s::int;

-- name: run_logs_by_span
SELECT id, run_id, attempt_number, level, message, attributes, logged_at, span_id FROM run_logs
WHERE run_id = ANY(%(run_ids)s::text[])
ORDER BY id
LIMIT %(limit)s::int;

-- name: delete_expired_spans
-- Retention (TRIGGER_SPAN_RETENTION_DAYS): a bounded batch per statement (found through the
-- BRIN index run_spans_received_idx), so a sweep never holds a long lock.
DELETE FROM run_spans
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM run_spans
    WHERE received_at < now() - make_interval(days => %(days)s::int)
    LIMIT %(batch)s::int));

-- name: insert_rescued_attempt_span
-- A worker that died with its executors (host lost, SIGKILL of the whole replica) never closes
-- its attempt's span: the rescuer records it, from the attempt's start to now, as an error.
INSERT INTO run_spans (trace_id, span_id, parent_span_id, run_id, environment_id, name,
                       start_time, end_time, status_code, status_message, attributes, events)
SELECT r.trace_id, substr(md5(random()::text || r.id), 1, 16), r.span_id, r.id,
       r.environment_id, 'Attempt ' || %(attempt_number)s::int,
       coalesce(a.started_at, r.started_at, now()), now(), 2, %(message)s::text,
       jsonb_build_object('ctx.run.id', r.id, 'ctx.attempt.number', %(attempt_number)s::int,
                          'ctx.task.id', r.task_id, 'trigger.span.kind', 'attempt',
                          'trigger.error.type', 'TASK_RUN_STALLED_EXECUTING',
                          'trigger.recorded_by', 'engine'),
       jsonb_build_array(jsonb_build_object(
           'name', 'exception', 'time', now(),
           'attributes', jsonb_build_object('exception.type', 'TASK_RUN_STALLED_EXECUTING',
                                            'exception.message', %(message)s::text)))
FROM runs r
LEFT JOIN run_attempts a ON a.run_id = r.id AND a.number = %(attempt_number)s::int
WHERE r.id = %(run_id)s::text AND r.trace_id IS NOT NULL
ON CONFLICT DO NOTHING;
