-- Schedules: imperative CRUD, declarative sync, and the cron service's sweep.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: upsert_schedule
-- Same deduplication key in the same environment updates the schedule instead of creating one.
INSERT INTO schedules (id, environment_id, type, task_id, cron, timezone, deduplication_key,
                       external_id, active, next_run_at)
VALUES (%(id)s::text, %(environment_id)s::uuid, %(type)s::text, %(task_id)s::text,
        %(cron)s::text, %(timezone)s::text, %(deduplication_key)s::text, %(external_id)s::text,
        %(active)s::boolean, %(next_run_at)s::timestamptz)
ON CONFLICT (environment_id, deduplication_key) DO UPDATE
SET task_id = excluded.task_id, cron = excluded.cron, timezone = excluded.timezone,
    external_id = excluded.external_id, type = excluded.type,
    -- keep the next tick when the timing did not change (a re-registration is not a reset)
    next_run_at = CASE WHEN NOT schedules.active THEN NULL
                       WHEN schedules.cron = excluded.cron
                            AND schedules.timezone = excluded.timezone
                            AND schedules.next_run_at IS NOT NULL
                       THEN schedules.next_run_at ELSE excluded.next_run_at END,
    updated_at = now()
RETURNING *, (xmax = 0) AS inserted;

-- name: get_schedule
SELECT * FROM schedules
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;

-- name: update_schedule
UPDATE schedules
SET task_id = %(task_id)s::text, cron = %(cron)s::text, timezone = %(timezone)s::text,
    external_id = %(external_id)s::text, next_run_at = %(next_run_at)s::timestamptz,
    updated_at = now()
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
RETURNING *;

-- name: set_schedule_active
UPDATE schedules
SET active = %(active)s::boolean, next_run_at = %(next_run_at)s::timestamptz, updated_at = now()
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
RETURNING *;

-- name: delete_schedule
DELETE FROM schedules
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
RETURNING *;

-- name: list_schedules
SELECT * FROM schedules
WHERE environment_id = %(environment_id)s::uuid
  AND (%(task_id)s::text IS NULL OR task_id = %(task_id)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s::int OFFSET %(offset)s::int;

-- name: count_schedules
SELECT count(*) AS total FROM schedules WHERE environment_id = %(environment_id)s::uuid
  AND (%(task_id)s::text IS NULL OR task_id = %(task_id)s::text);

-- name: newest_version
SELECT id FROM worker_versions WHERE environment_id = %(environment_id)s::uuid
ORDER BY created_at DESC, version DESC LIMIT 1;

-- name: delete_stale_declarative
-- Declarative schedules whose task no longer declares one (the task went away, or lost cron).
DELETE FROM schedules
WHERE environment_id = %(environment_id)s::uuid AND type = 'DECLARATIVE'
  AND NOT (deduplication_key = ANY(%(keep)s::text[]))
RETURNING id;

-- name: due_schedules
-- The cron service's sweep: schedules whose next tick has come, locked so that replicas
-- sweeping at the same moment share the work instead of waiting on each other.
SELECT * FROM schedules
WHERE active AND next_run_at IS NOT NULL AND next_run_at <= %(now)s::timestamptz
  AND (%(environment_id)s::uuid IS NULL OR environment_id = %(environment_id)s::uuid)
ORDER BY next_run_at
LIMIT %(limit)s::int
FOR UPDATE SKIP LOCKED;

-- name: claim_tick
-- The exactly-once guard: a second insert for the same (schedule, tick) does nothing.
INSERT INTO schedule_ticks (schedule_id, tick)
VALUES (%(schedule_id)s::text, %(tick)s::timestamptz)
ON CONFLICT DO NOTHING
RETURNING tick;

-- name: set_tick_run
UPDATE schedule_ticks SET run_id = %(run_id)s::text
WHERE schedule_id = %(schedule_id)s::text AND tick = %(tick)s::timestamptz;

-- name: advance_schedule
UPDATE schedules
SET next_run_at = %(next_run_at)s::timestamptz,
    last_run_at = coalesce(%(last_run_at)s::timestamptz, last_run_at), updated_at = now()
WHERE id = %(id)s::text;

-- name: next_schedule_due
SELECT min(next_run_at) AS next_due FROM schedules WHERE active AND next_run_at IS NOT NULL;

-- name: schedule_environment
SELECT e.id AS environment_id, e.slug, e.type, e.concurrency_limit,
       p.id AS project_id, p.ref AS project_ref
FROM environments e JOIN projects p ON p.id = e.project_id
WHERE e.id = %(environment_id)s::uuid;
