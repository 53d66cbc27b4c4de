-- Waitpoints, the run journal, checkpoints and resumes.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: insert_waitpoint
INSERT INTO waitpoints (id, environment_id, type, complete_after, idempotency_key,
                        idempotency_key_expires_at, tags, run_id, batch_id)
VALUES (%(id)s::text, %(environment_id)s::uuid, %(type)s::text,
        %(complete_after)s::timestamptz, %(idempotency_key)s::text,
        %(idempotency_key_expires_at)s::timestamptz, %(tags)s::text[], %(run_id)s::text,
        %(batch_id)s::text)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: find_idempotent_waitpoint
SELECT * FROM waitpoints
WHERE environment_id = %(environment_id)s::uuid AND type = %(type)s::text
  AND idempotency_key = %(idempotency_key)s::text;

-- name: clear_waitpoint_key
UPDATE waitpoints SET idempotency_key = NULL WHERE id = %(id)s::text;

-- name: get_waitpoint
SELECT * FROM waitpoints
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;

-- name: complete_waitpoint
-- Completing twice is harmless: only a WAITING waitpoint changes.
UPDATE waitpoints
SET status = 'COMPLETED', output = %(output)s::text, output_type = %(output_type)s::text,
    output_is_error = false, completed_at = now()
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
  AND type = 'TOKEN' AND status = 'WAITING'
RETURNING id;

-- name: complete_due_waitpoints
-- Durations that are over complete; tokens past their timeout time out (an error output).
WITH due AS (
    SELECT id FROM waitpoints
    WHERE status = 'WAITING' AND complete_after <= now()
    ORDER BY complete_after
    LIMIT %(limit)s::int
    FOR UPDATE SKIP LOCKED
)
UPDATE waitpoints w
SET status = CASE WHEN w.type = 'TOKEN' THEN 'TIMED_OUT' ELSE 'COMPLETED' END,
    output_is_error = w.type = 'TOKEN',
    output = CASE WHEN w.type = 'TOKEN'
                  THEN jsonb_build_object('type', 'BUILT_IN_ERROR', 'name', 'WaitpointTimeoutError',
                                          'message', 'the waitpoint token timed out')::text
                  END,
    output_type = 'application/json',
    completed_at = now()
FROM due WHERE w.id = due.id
RETURNING w.id;

-- name: next_waitpoint_due
SELECT min(complete_after) AS next_due FROM waitpoints
WHERE status = 'WAITING' AND complete_after IS NOT NULL;

-- name: list_tokens
SELECT * FROM waitpoints
WHERE environment_id = %(environment_id)s::uuid AND type = 'TOKEN'
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(idempotency_key)s::text IS NULL OR idempotency_key = %(idempotency_key)s::text)
  AND (%(tags)s::text[] IS NULL OR tags @> %(tags)s::text[])
  AND (%(after_created)s::timestamptz IS NULL
       OR (created_at, id) < (%(after_created)s::timestamptz, %(after_id)s::text))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s::int;

-- name: lock_run_for_wait
-- Waits are recorded by the lease holder only (the run is EXECUTING and leased to it).
SELECT id, environment_id, status, lease_owner, attempt_number FROM runs
WHERE id = %(run_id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
FOR UPDATE;

-- name: get_journal_entry
SELECT * FROM run_journal
WHERE run_id = %(run_id)s::text AND attempt_number = %(attempt_number)s::int
  AND seq = %(seq)s::int;

-- name: insert_journal_entry
-- Each attempt has its own journal (migration 0006): a retry numbers its operations from 0.
INSERT INTO run_journal (run_id, attempt_number, seq, kind, key, waitpoint_id, outcome)
VALUES (%(run_id)s::text, %(attempt_number)s::int, %(seq)s::int, %(kind)s::text,
        %(key)s::text, %(waitpoint_id)s::text, %(outcome)s::jsonb)
ON CONFLICT (run_id, attempt_number, seq) DO NOTHING
RETURNING seq;

-- name: journals_of
-- The journals of the current attempts of leased runs, with the state of each waitpoint, for
-- replay: a resumed attempt (or one handed back and leased again) gets its own operations,
-- never an earlier attempt's.
SELECT j.run_id, j.seq, j.kind, j.key, j.waitpoint_id, j.outcome,
       w.status AS waitpoint_status, w.output AS waitpoint_output,
       w.output_type AS waitpoint_output_type, w.output_is_error AS waitpoint_output_is_error
FROM runs r
JOIN run_journal j ON j.run_id = r.id AND j.attempt_number = r.attempt_number
LEFT JOIN waitpoints w ON w.id = j.waitpoint_id
WHERE r.id = ANY(%(run_ids)s::text[])
ORDER BY j.run_id, j.seq;

-- name: blocking_waitpoints
-- Lock the waitpoints the run's current attempt waits on (FOR SHARE) so a completion racing
-- this checkpoint either commits first (and is seen) or waits for it (and then resumes the run).
SELECT w.id, w.status FROM run_journal j JOIN waitpoints w ON w.id = j.waitpoint_id
WHERE j.run_id = %(run_id)s::text AND j.attempt_number = %(attempt_number)s::int
FOR SHARE OF w;

-- name: suspend_run
-- attempt_execution_ms: what the attempt used so far; the resumed lease carries it.
UPDATE runs
SET status = 'WAITING_TO_RESUME', lease_owner = NULL, lease_expires_at = NULL,
    attempt_execution_ms = coalesce(%(execution_ms)s::bigint, attempt_execution_ms),
    updated_at = now()
WHERE id = %(run_id)s::text AND status = 'EXECUTING'
  AND lease_owner = %(instance_id)s::uuid AND attempt_number = %(attempt_number)s::int
RETURNING id;

-- name: resume_unblocked_runs
-- Safety net for the completion trigger: checkpointed runs that wait on nothing any more.
UPDATE runs r SET status = 'PENDING', resuming = true, updated_at = now()
WHERE r.status = 'WAITING_TO_RESUME' AND r.updated_at < now() - interval '2 seconds'
  AND NOT EXISTS (SELECT 1 FROM run_journal j JOIN waitpoints w ON w.id = j.waitpoint_id
                  WHERE j.run_id = r.id AND j.attempt_number = r.attempt_number
                    AND w.status = 'WAITING')
RETURNING r.environment_id;

-- name: run_waitpoint_of
SELECT * FROM waitpoints WHERE run_id = %(run_id)s::text AND type = 'RUN';

-- name: complete_finished_run_waitpoints
SELECT trigger_complete_run_waitpoints_v1(%(run_id)s::text);

-- name: complete_finished_batch_waitpoint
SELECT trigger_complete_run_waitpoints_v1(id) FROM runs
WHERE batch_id = %(batch_id)s::text LIMIT 1;
