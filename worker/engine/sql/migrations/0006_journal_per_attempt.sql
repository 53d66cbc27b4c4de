-- Each attempt of a run has its own journal (docs/run-states.md, "Retries and the journal").
-- A retry runs the task from the top: its waits, tokens, child triggers and steps are new
-- operations, numbered from 0 again. Before this, a retry found the earlier attempt's entries
-- at the same positions and failed with a false NON_DETERMINISTIC, or (worse) replayed them.

ALTER TABLE run_journal ADD COLUMN attempt_number integer;

-- Existing entries: the attempt that had started when the entry was written.
UPDATE run_journal j
SET attempt_number = coalesce(
    (SELECT max(a.number) FROM run_attempts a
     WHERE a.run_id = j.run_id AND a.started_at <= j.created_at),
    (SELECT r.attempt_number FROM runs r WHERE r.id = j.run_id));

ALTER TABLE run_journal
    ALTER COLUMN attempt_number SET NOT NULL,
    DROP CONSTRAINT run_journal_pkey,
    ADD PRIMARY KEY (run_id, attempt_number, seq);

-- Queue the checkpointed runs whose current attempt waited on p_waitpoint and waits on nothing
-- else now; wake the executors that wait for it in place. Waitpoints of earlier attempts (a
-- token nobody completes, a child still running) never hold a later attempt back.
CREATE FUNCTION trigger_resume_blocked_v2(p_waitpoint text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    env uuid;
BEGIN
    FOR env IN
        UPDATE runs r SET status = 'PENDING', resuming = true, updated_at = now()
        WHERE r.status = 'WAITING_TO_RESUME'
          AND (r.id, r.attempt_number) IN (
              SELECT j.run_id, j.attempt_number FROM run_journal j
              WHERE j.waitpoint_id = p_waitpoint)
          AND NOT EXISTS (
              SELECT 1 FROM run_journal j JOIN waitpoints w ON w.id = j.waitpoint_id
              WHERE j.run_id = r.id AND j.attempt_number = r.attempt_number
                AND w.status = 'WAITING')
        RETURNING r.environment_id
    LOOP
        PERFORM pg_notify('trigger_runs', env::text);
    END LOOP;
    PERFORM pg_notify('trigger_waitpoints', p_waitpoint);
END $$;

CREATE OR REPLACE FUNCTION trigger_waitpoint_completed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM trigger_resume_blocked_v2(NEW.id);
    RETURN NULL;
END $$;

DROP FUNCTION trigger_resume_blocked_v1(text);
