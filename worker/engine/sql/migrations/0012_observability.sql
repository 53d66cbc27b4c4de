-- Observability (issue 14): every run is an OpenTelemetry trace. See docs/api.md ("Traces").

-- The trace context given to a run at trigger time: its trace (shared by a run tree), the id
-- of the run's own span (the parent of its attempts' spans) and the span it was triggered
-- from (a parent run's span, or an external caller's `traceparent`). NULL for runs created
-- before this migration (the executor derives ids from the run id then).
ALTER TABLE runs
    ADD COLUMN trace_id text,
    ADD COLUMN span_id text,
    ADD COLUMN parent_span_id text;

-- A log record names the span that was current when it was written.
ALTER TABLE run_logs ADD COLUMN span_id text;

-- Spans received over OTLP/HTTP (/otel/v1/traces) from executors (and recorded by the
-- supervisor for an executor that died mid-run). Trigger.dev's limits are applied on the way
-- in (256 attributes, 131,072-char values, 10 events). The retention service deletes rows
-- older than TRIGGER_SPAN_RETENTION_DAYS (default 30) by `received_at`.
CREATE TABLE run_spans (
    trace_id        text NOT NULL,
    span_id         text NOT NULL,
    parent_span_id  text,
    run_id          text NOT NULL,
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name            text NOT NULL,
    kind            smallint NOT NULL DEFAULT 0,
    start_time      timestamptz NOT NULL,
    end_time        timestamptz NOT NULL,
    -- 0 unset, 1 ok, 2 error (OTLP Status.code)
    status_code     smallint NOT NULL DEFAULT 0,
    status_message  text,
    attributes      jsonb NOT NULL DEFAULT '{}',
    events          jsonb NOT NULL DEFAULT '[]',
    scope           text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- an exporter retrying a batch must not duplicate its spans
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX run_spans_run_idx ON run_spans (run_id, start_time);
-- retention deletes by age: rows arrive in received_at order, a BRIN index is tiny and cheap
CREATE INDEX run_spans_received_idx ON run_spans USING brin (received_at);
