-- The direct hand-off's insert (queries/runs.sql insert_cached_run_leased) takes the pick's
-- lock itself: one statement per trigger handed to a waiting worker, where the lock took a
-- statement of its own before it (docs/architecture.md, "Direct hand-off").
--
-- The lock had to come first so that the insert's snapshot saw every lease committed before
-- it: a statement's snapshot is taken when it starts, before any lock it waits for. A
-- function's statements take snapshots of their own (READ COMMITTED, a VOLATILE function), as
-- trigger_pick_runs_v1 does for the dequeue: here the lock is taken, then the counts are read
-- after it, so they are exact whatever the insert's own snapshot missed.
--
-- True when the run about to be inserted may be leased at once by the pick's rules: nothing
-- else queued in the environment (the one-run case: otherwise the long-poll picks in order),
-- a free slot in the environment (within p_limit, the long-poll's free slots) and in the
-- queue's concurrency key, and the queue not paused. The environment's row stays locked
-- (FOR NO KEY UPDATE) until the transaction ends, as the pick's does.

CREATE FUNCTION trigger_handoff_room_v1(p_env uuid, p_queue text, p_concurrency_key text,
                                        p_limit integer)
RETURNS boolean
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    v_limit       integer;
    v_paused      boolean;
    v_queue_limit integer;
    v_take        integer;
BEGIN
    SELECT concurrency_limit INTO v_limit FROM environments WHERE id = p_env FOR NO KEY UPDATE;
    IF EXISTS (SELECT 1 FROM runs r WHERE r.environment_id = p_env AND r.status = 'PENDING') THEN
        RETURN false;
    END IF;
    v_take := least(p_limit, v_limit - (SELECT count(*) FROM runs x
                                         WHERE x.environment_id = p_env
                                           AND x.status = 'EXECUTING'));
    IF v_take IS NULL OR v_take <= 0 THEN
        RETURN false;
    END IF;
    SELECT q.paused, coalesce(q.limit_override, q.concurrency_limit)
    INTO v_paused, v_queue_limit
    FROM queues q WHERE q.environment_id = p_env AND q.name = p_queue;
    IF coalesce(v_paused, false) THEN
        RETURN false;
    END IF;
    RETURN coalesce(v_queue_limit, v_limit) - (
        SELECT count(*) FROM runs x
        WHERE x.environment_id = p_env AND x.status = 'EXECUTING'
          AND x.queue = p_queue AND x.concurrency_key = p_concurrency_key) > 0;
END $$;
