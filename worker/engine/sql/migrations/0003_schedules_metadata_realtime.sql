-- Schedules (cron with IANA timezones), realtime change notifications, run streams and the
-- per-environment secret that signs public access tokens.

-- A schedule fires runs of one task on a cron pattern in a timezone. DECLARATIVE ones come from
-- `schedules.task(cron=...)` manifests (synced at worker registration), IMPERATIVE ones from
-- the REST API. The deduplication key is unique per environment.
CREATE TABLE schedules (
    id                 text PRIMARY KEY,
    environment_id     uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    type               text NOT NULL CHECK (type IN ('DECLARATIVE', 'IMPERATIVE')),
    task_id            text NOT NULL,
    cron               text NOT NULL,
    timezone           text NOT NULL DEFAULT 'UTC',
    deduplication_key  text NOT NULL,
    external_id        text,
    active             boolean NOT NULL DEFAULT true,
    -- the next nominal tick (an instant); NULL when inactive or the pattern never matches again
    next_run_at        timestamptz,
    -- the last tick a run was created for (the payload's lastTimestamp)
    last_run_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment_id, deduplication_key)
);
-- The cron service's scan for due schedules.
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE active AND next_run_at IS NOT NULL;
CREATE INDEX schedules_list_idx ON schedules (environment_id, created_at DESC, id DESC);

-- Exactly one run per (schedule, tick): whichever API replica inserts the row creates the run in
-- the same transaction; every other replica's insert conflicts and does nothing.
CREATE TABLE schedule_ticks (
    schedule_id  text NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    tick         timestamptz NOT NULL,
    run_id       text REFERENCES runs (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, tick)
);

-- Chunks of named streams written by runs (LLM tokens, progress, ...), kept for late readers.
-- seq starts at 1 per (run, stream); a row with done = true closes the stream.
CREATE TABLE run_stream_chunks (
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stream      text NOT NULL,
    seq         integer NOT NULL,
    data        text,
    done        boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, stream, seq)
);

-- The HS256 secret that signs an environment's public access tokens. Random, server-side only:
-- secret keys are stored hashed and so cannot sign anything.
CREATE TABLE environment_secrets (
    environment_id  uuid PRIMARY KEY REFERENCES environments (id) ON DELETE CASCADE,
    jwt_secret      bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Realtime: one NOTIFY per statement that changes runs' status, metadata or output, listing the
-- changed runs (chunked to stay under NOTIFY's 8000-byte payload limit). Statement-level with
-- transition tables, so a batched dequeue of 100 runs costs a few notifications, not 100, and
-- heartbeats (lease_expires_at only) cost nothing. Subscribers re-read the rows they care about.
CREATE FUNCTION trigger_notify_run_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    chunk text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR chunk IN
            SELECT string_agg(line, E'\n') FROM (
                SELECT n.environment_id || ' ' || n.id || ' ' || coalesce(n.batch_id, '-') || ' '
                       || n.status || ' ' || (extract(epoch FROM n.updated_at) * 1000000)::bigint
                       AS line,
                       (row_number() OVER ()) / 40 AS grp
                FROM new_rows n
            ) lines GROUP BY grp
        LOOP
            PERFORM pg_notify('trigger_run_changes', chunk);
        END LOOP;
    ELSE
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
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER runs_notify_insert AFTER INSERT ON runs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trigger_notify_run_changes();
CREATE TRIGGER runs_notify_update AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trigger_notify_run_changes();
