-- Waitpoints (durable waits) and the run journal that checkpoints replay (docs/architecture.md, "Waits and checkpoints").

-- A waitpoint is something runs can wait for: a moment (DURATION), an external signal (TOKEN),
-- a child run (RUN) or a whole batch (BATCH). It completes once, with an output.
CREATE TABLE waitpoints (
    id                          text PRIMARY KEY,
    environment_id              uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    type                        text NOT NULL CHECK (type IN ('DURATION', 'TOKEN', 'RUN', 'BATCH')),
    status                      text NOT NULL DEFAULT 'WAITING'
                                CHECK (status IN ('WAITING', 'COMPLETED', 'TIMED_OUT')),
    -- DURATION: the moment it completes; TOKEN: the moment it times out
    complete_after              timestamptz,
    idempotency_key             text,
    idempotency_key_expires_at  timestamptz,
    tags                        text[] NOT NULL DEFAULT '{}',
    output                      text,
    output_type                 text,
    output_is_error             boolean NOT NULL DEFAULT false,
    run_id                      text REFERENCES runs (id) ON DELETE CASCADE,
    batch_id                    text REFERENCES batches (id) ON DELETE CASCADE,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    completed_at                timestamptz
);
CREATE UNIQUE INDEX waitpoints_idempotency_idx ON waitpoints (environment_id, type, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX waitpoints_due_idx ON waitpoints (complete_after)
    WHERE status = 'WAITING' AND complete_after IS NOT NULL;
CREATE INDEX waitpoints_run_idx ON waitpoints (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX waitpoints_batch_idx ON waitpoints (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX waitpoints_list_idx ON waitpoints (environment_id, type, created_at DESC, id DESC);

-- Each durable operation of a run, by sequence number: waits (blocked on a waitpoint until it
-- completes), child triggers, token creation, memoised steps. A resumed run replays it.
CREATE TABLE run_journal (
    run_id        text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq           integer NOT NULL CHECK (seq >= 0),
    kind          text NOT NULL,
    -- what names the operation beyond its kind: a child's task id, a step's name
    key           text,
    waitpoint_id  text REFERENCES waitpoints (id) ON DELETE SET NULL,
    outcome       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX run_journal_waitpoint_idx ON run_journal (waitpoint_id) WHERE waitpoint_id IS NOT NULL;

ALTER TABLE runs
    -- the next lease continues the current attempt (a resume), instead of starting a new one
    ADD COLUMN resuming boolean NOT NULL DEFAULT false,
    -- position in its batch, for results in item order
    ADD COLUMN batch_index integer;
CREATE INDEX runs_waiting_idx ON runs (updated_at) WHERE status = 'WAITING_TO_RESUME';

-- Queue the checkpointed runs that waited on p_waitpoint and wait on nothing else now; wake the
-- executors that wait for it in place.
CREATE FUNCTION trigger_resume_blocked_v1(p_waitpoint text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    env uuid;
BEGIN
    FOR env IN
        UPDATE runs r SET status = 'PENDING', resuming = true, updated_at = now()
        WHERE r.status = 'WAITING_TO_RESUME'
          AND r.id IN (SELECT j.run_id FROM run_journal j WHERE j.waitpoint_id = p_waitpoint)
          AND NOT EXISTS (
              SELECT 1 FROM run_journal j JOIN waitpoints w ON w.id = j.waitpoint_id
              WHERE j.run_id = r.id AND w.status = 'WAITING')
        RETURNING r.environment_id
    LOOP
        PERFORM pg_notify('trigger_runs', env::text);
    END LOOP;
    PERFORM pg_notify('trigger_waitpoints', p_waitpoint);
END $$;

CREATE FUNCTION trigger_waitpoint_completed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM trigger_resume_blocked_v1(NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER waitpoints_completed AFTER UPDATE OF status ON waitpoints
    FOR EACH ROW WHEN (OLD.status = 'WAITING' AND NEW.status <> 'WAITING')
    EXECUTE FUNCTION trigger_waitpoint_completed();

-- A run that reaches a final status completes its RUN waitpoint, and its BATCH waitpoint once
-- every run of the batch is final. Every path to a final status (completion, cancel, expiry,
-- rescue) goes through the trigger below, so a parent can never be left waiting. Also called
-- directly when a parent starts waiting on a child that has already finished.
CREATE FUNCTION trigger_complete_run_waitpoints_v1(p_run text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    run record;
    batch_wp text;
BEGIN
    SELECT id, status, output, output_type, error, batch_id INTO run FROM runs WHERE id = p_run;
    IF run.status NOT IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                          'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT') THEN
        RETURN;
    END IF;
    UPDATE waitpoints
    SET status = 'COMPLETED', completed_at = now(),
        output_is_error = run.status <> 'COMPLETED_SUCCESSFULLY',
        output = CASE WHEN run.status = 'COMPLETED_SUCCESSFULLY' THEN run.output
                      ELSE coalesce(run.error, jsonb_build_object('type', 'STRING_ERROR',
                                                                  'raw', run.status))::text END,
        output_type = CASE WHEN run.status = 'COMPLETED_SUCCESSFULLY' THEN run.output_type
                           ELSE 'application/json' END
    WHERE run_id = run.id AND type = 'RUN' AND status = 'WAITING';

    IF run.batch_id IS NOT NULL THEN
        -- lock first, then look: of two runs finishing at once, the second sees the first
        SELECT id INTO batch_wp FROM waitpoints
        WHERE batch_id = run.batch_id AND type = 'BATCH' AND status = 'WAITING' FOR UPDATE;
        IF batch_wp IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM runs WHERE batch_id = run.batch_id
              AND status NOT IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                                 'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT'))
        THEN
            UPDATE waitpoints
            SET status = 'COMPLETED', completed_at = now(), output_type = 'application/json',
                output = (
                    SELECT jsonb_agg(jsonb_build_object(
                        'id', r.id, 'taskIdentifier', r.task_id,
                        'ok', r.status = 'COMPLETED_SUCCESSFULLY',
                        'output', r.output, 'outputType', r.output_type, 'error', r.error)
                        ORDER BY r.batch_index, r.id)::text
                    FROM runs r WHERE r.batch_id = run.batch_id)
            WHERE id = batch_wp;
        END IF;
    END IF;
END $$;

CREATE FUNCTION trigger_run_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM trigger_complete_run_waitpoints_v1(NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER runs_finished AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (OLD.status NOT IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                             'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT')
          AND NEW.status IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                             'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT'))
    EXECUTE FUNCTION trigger_run_finished();
