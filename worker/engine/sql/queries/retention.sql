-- Retention (worker/engine/services/retention.py): finished data older than the environment's
-- retention period is deleted in small batches, each its own short transaction.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: retention_environments
-- Each environment and the moment before which its finished data goes.
SELECT id, now() - make_interval(days => coalesce(retention_days, %(default_days)s::int))
       AS cutoff
FROM environments;

-- name: retention_pick_runs
-- Finished runs past the cutoff with no child run left (children go first: a parent follows
-- once its last child is gone; a live child keeps its parent). SKIP LOCKED: never waits on a
-- run another transaction holds.
SELECT r.id FROM runs r
WHERE r.environment_id = %(environment_id)s::uuid
  AND r.completed_at IS NOT NULL AND r.completed_at < %(cutoff)s::timestamptz
  AND r.status IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                   'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT')
  AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.parent_run_id = r.id)
  AND NOT EXISTS (SELECT 1 FROM runs c WHERE c.root_run_id = r.id)
ORDER BY r.completed_at
LIMIT %(limit)s::int
FOR UPDATE OF r SKIP LOCKED;

-- name: retention_delete_runs
-- Attempts, logs, packets, stream chunks, journal and the runs' own waitpoints go with them
-- (ON DELETE CASCADE); schedule ticks keep their row with run_id NULL.
DELETE FROM runs WHERE id = ANY(%(ids)s::text[]);

-- name: retention_delete_spans
-- Only run when the table exists (the observability spans).
DELETE FROM run_spans WHERE run_id = ANY(%(ids)s::text[]);

-- name: retention_delete_waitpoints
-- Standalone waitpoints (tokens, ...) completed before the cutoff that no kept run's journal
-- still refers to.
DELETE FROM waitpoints WHERE id IN (
    SELECT w.id FROM waitpoints w
    WHERE w.environment_id = %(environment_id)s::uuid AND w.status <> 'WAITING'
      AND w.run_id IS NULL AND w.completed_at < %(cutoff)s::timestamptz
      AND NOT EXISTS (SELECT 1 FROM run_journal j WHERE j.waitpoint_id = w.id)
    LIMIT %(limit)s::int
    FOR UPDATE OF w SKIP LOCKED);

-- name: retention_delete_batches
-- Batches older than the cutoff whose runs are all gone.
DELETE FROM batches WHERE id IN (
    SELECT b.id FROM batches b
    WHERE b.environment_id = %(environment_id)s::uuid AND b.created_at < %(cutoff)s::timestamptz
      AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.batch_id = b.id)
    LIMIT %(limit)s::int
    FOR UPDATE OF b SKIP LOCKED);

-- name: spans_table_has_run_id
SELECT EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_name = 'run_spans' AND column_name = 'run_id'
                 AND table_schema = current_schema()) AS present;
