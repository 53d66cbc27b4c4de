-- The hot path's triggers on runs, cheaper (issue 16: Postgres time per run; docs/run-states.md).
--
-- Measured on a statement-level trigger that runs for every lease and completion: of a
-- one-run completion's ~235 µs in Postgres, ~90 µs were runs_updated (0017), statement by
-- statement (count, RUN waitpoints, BATCH lookup, the notification query, then a PERFORM per
-- notification). Now:
-- - the BATCH lookup runs only when a run of a batch finished (counted with the rest, in the
--   one scan of new_rows the function already made);
-- - the realtime notification is one statement: pg_notify is called from the query that builds
--   the chunks (still one notification per 40 changed runs, the same lines as 0003);
-- - the same for inserts: runs_inserted replaces runs_notify_insert (0003), whose PL/pgSQL
--   looped over the chunks and branched on TG_OP.
-- Statements of more than 32 runs still go through EXECUTE, planned for their size (0017).

CREATE FUNCTION trigger_runs_updated_v4() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    finished bigint;
    batched bigint;
    wp record;
    -- the bulk path's statements: those below, run through EXECUTE
    run_waitpoints CONSTANT text := $q$
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
                               'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT')$q$;
    batch_waitpoints CONSTANT text := $q$
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
        FOR UPDATE OF w$q$;
    notifications CONSTANT text := $q$
        SELECT count(pg_notify('trigger_run_changes', chunk)) FROM (
            SELECT string_agg(line, E'\n') AS chunk FROM (
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
        ) chunks$q$;
BEGIN
    SELECT count(*),
           count(*) FILTER (WHERE n.status IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS',
                                               'CRASHED', 'SYSTEM_FAILURE', 'CANCELED',
                                               'EXPIRED', 'TIMED_OUT')),
           count(*) FILTER (WHERE n.batch_id IS NOT NULL
                              AND n.status IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS',
                                               'CRASHED', 'SYSTEM_FAILURE', 'CANCELED',
                                               'EXPIRED', 'TIMED_OUT'))
    INTO total, finished, batched
    FROM new_rows n;
    IF total = 0 THEN
        RETURN NULL;
    END IF;

    IF total > 32 THEN
        -- planned for this statement's sizes (see the header)
        IF finished > 0 THEN
            EXECUTE run_waitpoints;
        END IF;
        IF batched > 0 THEN
            FOR wp IN EXECUTE batch_waitpoints LOOP
                IF NOT EXISTS (
                    SELECT 1 FROM runs WHERE batch_id = wp.batch_id
                      AND status NOT IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS',
                                         'CRASHED', 'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED',
                                         'TIMED_OUT'))
                THEN
                    UPDATE waitpoints
                    SET status = 'COMPLETED', completed_at = now(),
                        output_type = 'application/json',
                        output = (
                            SELECT jsonb_agg(jsonb_build_object(
                                'id', r.id, 'taskIdentifier', r.task_id,
                                'ok', r.status = 'COMPLETED_SUCCESSFULLY',
                                'output', r.output, 'outputType', r.output_type,
                                'error', r.error)
                                ORDER BY r.batch_index, r.id)::text
                            FROM runs r WHERE r.batch_id = wp.batch_id)
                    WHERE id = wp.id;
                END IF;
            END LOOP;
        END IF;
        EXECUTE notifications;
        RETURN NULL;
    END IF;

    IF finished > 0 THEN
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
    END IF;

    IF batched > 0 THEN
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

    -- realtime (0003): one notification per 40 changed runs, in one statement
    PERFORM pg_notify('trigger_run_changes', chunk) FROM (
        SELECT string_agg(line, E'\n') AS chunk FROM (
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
    ) chunks;
    RETURN NULL;
END $$;

CREATE FUNCTION trigger_runs_inserted_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- realtime (0003): one notification per 40 new runs
    PERFORM pg_notify('trigger_run_changes', chunk) FROM (
        SELECT string_agg(line, E'\n') AS chunk FROM (
            SELECT n.environment_id || ' ' || n.id || ' ' || coalesce(n.batch_id, '-') || ' '
                   || n.status || ' ' || (extract(epoch FROM n.updated_at) * 1000000)::bigint
                   AS line,
                   (row_number() OVER ()) / 40 AS grp
            FROM new_rows n
        ) lines GROUP BY grp
    ) chunks;
    RETURN NULL;
END $$;

DROP TRIGGER runs_updated ON runs;
CREATE TRIGGER runs_updated AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trigger_runs_updated_v4();

DROP TRIGGER runs_notify_insert ON runs;
CREATE TRIGGER runs_inserted AFTER INSERT ON runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trigger_runs_inserted_v1();
