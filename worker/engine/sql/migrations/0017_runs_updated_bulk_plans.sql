-- runs_updated (0016) without its quadratic bulk path (issue 16; docs/run-states.md).
--
-- PL/pgSQL caches the plans of its static statements per session. A session's first UPDATE of
-- runs touches one row (a lease, a completion) or none (a sweep), so the transition tables
-- new_rows and old_rows were planned at rows=1 and joined by a nested loop for good: a later
-- UPDATE of 3,000 runs in that session (a worker registering over 3,000 PENDING_VERSION runs, a
-- bulk cancel) compared 3,000 × 3,000 rows in each join, about a second, where a plan made with
-- the real sizes takes tens of milliseconds.
--
-- Now the function counts the statement's rows first (the same one scan of new_rows that the
-- old EXISTS test made): up to 32 rows it runs the static statements as before (cached plans,
-- the hot path unchanged: a nested loop over 32 × 32 rows costs less than a plan); above 32 the
-- same statements go through EXECUTE, planned for this statement's true sizes. An UPDATE of no
-- row returns at once. Semantics are 0016's: RUN waitpoints of runs that became final, BATCH
-- waitpoints once per batch (locked first, then looked at), then the realtime notification.

CREATE FUNCTION trigger_runs_updated_v3() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    finished bigint;
    chunk text;
    wp record;
    -- the bulk path's statements: 0016's, word for word
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
        ) lines GROUP BY grp$q$;
BEGIN
    SELECT count(*),
           count(*) FILTER (WHERE n.status IN ('COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS',
                                               'CRASHED', 'SYSTEM_FAILURE', 'CANCELED',
                                               'EXPIRED', 'TIMED_OUT'))
    INTO total, finished
    FROM new_rows n;
    IF total = 0 THEN
        RETURN NULL;
    END IF;

    IF total > 32 THEN
        -- planned for this statement's sizes (see the header)
        IF finished > 0 THEN
            EXECUTE run_waitpoints;
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
        FOR chunk IN EXECUTE notifications LOOP
            PERFORM pg_notify('trigger_run_changes', chunk);
        END LOOP;
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

DROP TRIGGER runs_updated ON runs;
CREATE TRIGGER runs_updated AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trigger_runs_updated_v3();
