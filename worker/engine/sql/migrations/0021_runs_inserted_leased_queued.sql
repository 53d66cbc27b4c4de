-- A run inserted already leased still shows QUEUED before EXECUTING to realtime subscribers
-- (docs/run-states.md: every run goes PENDING -> EXECUTING).
--
-- The plain trigger that finds a worker's long-poll waiting inserts its run as EXECUTING in one
-- row write (runs.sql insert_cached_run_leased; docs/architecture.md, "Direct hand-off"), where
-- a run inserted PENDING and then leased is written twice and notified twice. The realtime
-- change log (realtime.py, the Electric shapes, SSE) saw such a run start at EXECUTING: a
-- subscriber missed the QUEUED state it sees for every other run. The insert's notification now
-- carries a PENDING line, a microsecond before its EXECUTING one, for a run inserted EXECUTING.

CREATE FUNCTION trigger_runs_inserted_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- realtime (0003): one notification per 20 new runs (up to 40 lines)
    PERFORM pg_notify('trigger_run_changes', chunk) FROM (
        SELECT string_agg(line, E'\n' ORDER BY id, step) AS chunk FROM (
            SELECT c.environment_id || ' ' || c.id || ' ' || coalesce(c.batch_id, '-') || ' '
                   || c.status || ' ' || c.us AS line, c.id, c.step,
                   (dense_rank() OVER (ORDER BY c.id)) / 20 AS grp  -- a run's lines together
            FROM (
                SELECT n.environment_id, n.id, n.batch_id, n.status, 1 AS step,
                       (extract(epoch FROM n.updated_at) * 1000000)::bigint AS us
                FROM new_rows n
                UNION ALL
                SELECT n.environment_id, n.id, n.batch_id, 'PENDING', 0,
                       (extract(epoch FROM n.updated_at) * 1000000)::bigint - 1
                FROM new_rows n WHERE n.status = 'EXECUTING'
            ) c
        ) lines GROUP BY grp
    ) chunks;
    RETURN NULL;
END $$;

DROP TRIGGER runs_inserted ON runs;
CREATE TRIGGER runs_inserted AFTER INSERT ON runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trigger_runs_inserted_v2();

DROP FUNCTION trigger_runs_inserted_v1();
