-- One statement-level trigger for every UPDATE of runs (issue 16: Postgres CPU per run).
--
-- Before: a row-level trigger (runs_finished) called trigger_complete_run_waitpoints_v1 once per
-- run reaching a final status — a PL/pgSQL call that read the run again, looked for its RUN
-- waitpoint, locked-and-looked for its batch's BATCH waitpoint and replanned a batch test each
-- time (about half the cost of a completion statement under drain) — and a second,
-- statement-level trigger (runs_notify_update) sent the realtime notification.
--
-- Now one statement-level function does both from the statement's transition tables: RUN
-- waitpoints of every run that became final in one UPDATE, BATCH waitpoints once per batch
-- (locked first, then looked at, as before: of two transactions finishing the last runs of a
-- batch, the second sees the first), then the notification exactly as before. Statements that
-- finish no run (leases, heartbeats, metadata) pay one scan of their new rows for it.
-- trigger_complete_run_waitpoints_v1 stays: a parent that starts waiting on a child that has
-- already finished still calls it directly.

CREATE FUNCTION trigger_runs_updated_v2() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    chunk text;
    wp record;
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n
               WHERE n.status IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                                  'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT')) THEN
        UPDATE waitpoints w
        SET status = 'COMPLETED', completed_at = now(),
            output_is_error = f.status <> 'COMPLETED_SUCCESSFULLY',
            output = CASE WHEN f.status = 'COMPLETED_SUCCESSFULLY' THEN f.output
                          ELSE coalesce(f.error, jsonb_build_object('type', 'STRING_ERROR',
                                                                    'raw', f.status))::text END,
            output_type = CASE WHEN f.status = 'COMPLETED_SUCCESSFULLY' THEN f.output_type
                               ELSE 'application/json' END
        FROM new_rows f JOIN old_rows o ON o.id = f.id
        WHERE w.run_id = f.id AND w.type = 'RUN' AND w.status = 'WAITING'
          AND f.status IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                           'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT')
          AND o.status NOT IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                               'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT');

        -- lock first, then look: of two runs finishing at once, the second sees the first
        FOR wp IN
            SELECT w.id, w.batch_id FROM waitpoints w
            WHERE w.type = 'BATCH' AND w.status = 'WAITING' AND w.batch_id IN (
                SELECT f.batch_id FROM new_rows f JOIN old_rows o ON o.id = f.id
                WHERE f.batch_id IS NOT NULL
                  AND f.status IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                                   'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT')
                  AND o.status NOT IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS',
                                       'CRASHED', 'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED',
                                       'TIMED_OUT'))
            ORDER BY w.id
            FOR UPDATE OF w
        LOOP
            IF NOT EXISTS (
                SELECT 1 FROM runs WHERE batch_id = wp.batch_id
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
                        FROM runs r WHERE r.batch_id = wp.batch_id)
                WHERE id = wp.id;
            END IF;
        END LOOP;
    END IF;

    -- realtime (0003): one notification per 40 changed runs
    FOR chunk IN
        SELECT string_agg(line, E'\n') FROM (
            SELECT n.environment_id || ' ' || n.id || ' ' || coalesce(n.batch_id, '-') || ' '
                   || n.status || ' ' || (extract(epoch FROM n.updated_at) * 1000000)::bigint
                   AS line,
                   (row_number() OVER ()) / 40 AS grp
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE n.status IS DISTINCT FROM o.status
               OR n.metadata IS DISTINCT FROM o.metadata
               OR n.output IS DISTINCT FROM o.output
               OR n.tags IS DISTINCT FROM o.tags
        ) lines GROUP BY grp
    LOOP
        PERFORM pg_notify('trigger_run_changes', chunk);
    END LOOP;
    RETURN NULL;
END $$;

DROP TRIGGER runs_finished ON runs;
DROP TRIGGER runs_notify_update ON runs;
CREATE TRIGGER runs_updated AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trigger_runs_updated_v2();
