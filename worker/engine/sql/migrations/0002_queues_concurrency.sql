-- Queues and concurrency limits, concurrency keys, TTL, debounce, version waits, large packets.

-- Declared queues (from task manifests) and their runtime controls. A queue's limit applies to
-- each of its concurrency-key sub-queues separately (a run without a key is in sub-queue '').
CREATE TABLE queues (
    environment_id     uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name               text NOT NULL,
    concurrency_limit  integer CHECK (concurrency_limit BETWEEN 0 AND 100000),
    limit_override     integer CHECK (limit_override BETWEEN 0 AND 100000),
    paused             boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, name)
);

ALTER TABLE runs
    ADD COLUMN concurrency_key text NOT NULL DEFAULT '',
    -- a run not started by this time expires (TTL); cleared at its first lease
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN debounce_key text,
    -- debounce: the latest the delayed run may be pushed to (maxDelay)
    ADD COLUMN debounce_deadline timestamptz,
    ADD COLUMN replayed_from text,
    -- the payload lives in run_packets (too big for the hot table)
    ADD COLUMN payload_offloaded boolean NOT NULL DEFAULT false;

-- Dequeue: the head of each (queue, concurrency key) sub-queue, read from the index alone.
DROP INDEX runs_dequeue_idx;
CREATE INDEX runs_dequeue_idx ON runs (environment_id, queue, concurrency_key, score, id)
    INCLUDE (task_id, version_id, expires_at) WHERE status = 'PENDING';
-- Running runs per environment / queue / concurrency key: what holds a slot.
CREATE INDEX runs_running_idx ON runs (environment_id, queue, concurrency_key)
    WHERE status = 'EXECUTING';
CREATE INDEX runs_expiry_idx ON runs (expires_at)
    WHERE status IN ('PENDING', 'DELAYED', 'PENDING_VERSION') AND expires_at IS NOT NULL;
CREATE INDEX runs_waiting_version_idx ON runs (environment_id, task_id)
    WHERE status = 'PENDING_VERSION';
-- At most one delayed run per debounce key and task.
CREATE UNIQUE INDEX runs_debounce_idx ON runs (environment_id, task_id, debounce_key)
    WHERE status = 'DELAYED' AND debounce_key IS NOT NULL;
CREATE INDEX workers_live_idx ON workers (environment_id, last_seen_at);

-- Payloads too big for the hot runs table.
CREATE TABLE run_packets (
    run_id  text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    payload text NOT NULL
);

-- Picks the runs the next dequeue of an environment may lease, honouring the environment's
-- limit, each sub-queue's limit (its queue's override or declared limit), paused queues and
-- TTLs. Sub-queues are served round-robin by the age of their heads, so one concurrency key
-- (tenant) with a deep backlog cannot starve the others. Callers must run it in the
-- transaction that leases the picked runs: the environment row lock it takes serialises
-- dequeues of one environment across all API replicas, which is what makes the limits hold.
CREATE FUNCTION trigger_pick_runs_v1(p_env uuid, p_versions uuid[], p_newest_tasks text[],
                                     p_max integer)
RETURNS TABLE (run_id text)
LANGUAGE plpgsql AS $$
DECLARE
    v_limit   integer;
    v_running integer;
    v_take    integer;
BEGIN
    SELECT concurrency_limit INTO v_limit FROM environments WHERE id = p_env FOR NO KEY UPDATE;
    SELECT count(*) INTO v_running FROM runs
    WHERE environment_id = p_env AND status = 'EXECUTING';
    v_take := least(p_max, v_limit - v_running);
    IF v_take IS NULL OR v_take <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH RECURSIVE subqueues AS (
        -- a loose index scan: each distinct (queue, key) with pending runs, one probe each
        (SELECT r.queue, r.concurrency_key FROM runs r
         WHERE r.environment_id = p_env AND r.status = 'PENDING'
         ORDER BY r.queue, r.concurrency_key LIMIT 1)
        UNION ALL
        SELECT nxt.queue, nxt.concurrency_key
        FROM subqueues s
        CROSS JOIN LATERAL (
            SELECT r.queue, r.concurrency_key FROM runs r
            WHERE r.environment_id = p_env AND r.status = 'PENDING'
              AND (r.queue, r.concurrency_key) > (s.queue, s.concurrency_key)
            ORDER BY r.queue, r.concurrency_key LIMIT 1
        ) nxt
    ), capacity AS (
        SELECT s.queue, s.concurrency_key,
               coalesce(q.limit_override, q.concurrency_limit, v_limit) - (
                   SELECT count(*) FROM runs x
                   WHERE x.environment_id = p_env AND x.status = 'EXECUTING'
                     AND x.queue = s.queue AND x.concurrency_key = s.concurrency_key
               ) AS free
        FROM subqueues s
        LEFT JOIN queues q ON q.environment_id = p_env AND q.name = s.queue
        WHERE NOT coalesce(q.paused, false)
    ), heads AS (
        SELECT h.id, h.score,
               row_number() OVER (PARTITION BY c.queue, c.concurrency_key
                                  ORDER BY h.score, h.id) AS pass
        FROM capacity c
        CROSS JOIN LATERAL (
            SELECT r.id, r.score FROM runs r
            WHERE r.environment_id = p_env AND r.status = 'PENDING'
              AND r.queue = c.queue AND r.concurrency_key = c.concurrency_key
              AND (r.version_id = ANY(p_versions)
                   OR (r.version_id IS NULL AND r.task_id = ANY(p_newest_tasks)))
              AND (r.expires_at IS NULL OR r.expires_at > now())
            ORDER BY r.score, r.id
            LIMIT least(c.free, v_take)
        ) h
        WHERE c.free > 0
    )
    SELECT heads.id FROM heads ORDER BY heads.pass, heads.score, heads.id LIMIT v_take;
END
$$;
