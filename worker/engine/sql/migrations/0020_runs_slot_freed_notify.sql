-- A run that leaves EXECUTING frees a concurrency slot: wake the environment's waiting
-- long-polls when runs are queued there (docs/architecture.md, "Direct hand-off").
--
-- Before, only triggers, retries, resumes, queue changes and registrations notified
-- `trigger_runs`: a worker's long-poll waiting on a queue held at its limit heard nothing when
-- a run of that queue finished (a plain completion notifies only the realtime channel) and
-- looked again only at its poll fallback, a second later: 12 runs of a queue limited to 3 took
-- 3 s instead of milliseconds. Now the end of an execution (a result, a failure, a wait, a
-- cancel, a release or a rescue) notifies when a run is queued in the environment; a
-- completion with nothing queued (the common idle case) sends nothing.
--
-- Row-level with a WHEN: the condition is checked in C for every updated row, and the
-- function runs only for runs that were executing (a lease or a heartbeat never calls it).
-- Postgres folds equal notifications of one transaction into one.

CREATE FUNCTION trigger_runs_slot_freed_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM runs r
               WHERE r.environment_id = NEW.environment_id AND r.status = 'PENDING') THEN
        PERFORM pg_notify('trigger_runs', NEW.environment_id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER runs_slot_freed AFTER UPDATE OF status ON runs
    FOR EACH ROW WHEN (OLD.status = 'EXECUTING' AND NEW.status <> 'EXECUTING')
    EXECUTE FUNCTION trigger_runs_slot_freed_v1();
