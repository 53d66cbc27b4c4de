-- trigger-worker engine schema, version 1. See docs/run-states.md for the run state machine.

CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    ref         text NOT NULL UNIQUE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE environments (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id         uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    slug               text NOT NULL CHECK (slug IN ('dev', 'staging', 'prod')),
    type               text NOT NULL CHECK (type IN ('DEVELOPMENT', 'STAGING', 'PRODUCTION')),
    concurrency_limit  integer NOT NULL DEFAULT 100 CHECK (concurrency_limit > 0),
    UNIQUE (project_id, slug)
);

-- Secret keys are stored as SHA-256 digests only; key_prefix is kept for display.
CREATE TABLE api_keys (
    key_hash        bytea PRIMARY KEY,
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    key_prefix      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- One row per distinct code version a worker registered (deduplicated by content hash).
CREATE TABLE worker_versions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    version         text NOT NULL,
    content_hash    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment_id, content_hash),
    UNIQUE (environment_id, version)
);

-- The task definitions (manifest entries) of each version.
CREATE TABLE version_tasks (
    version_id  uuid NOT NULL REFERENCES worker_versions (id) ON DELETE CASCADE,
    task_id     text NOT NULL,
    definition  jsonb NOT NULL,
    PRIMARY KEY (version_id, task_id)
);

-- The newest definition of each task known in an environment (trigger-time checks).
CREATE TABLE tasks (
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    task_id         text NOT NULL,
    version_id      uuid NOT NULL REFERENCES worker_versions (id) ON DELETE CASCADE,
    definition      jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, task_id)
);

CREATE TABLE workers (
    instance_id     uuid PRIMARY KEY,
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    version_id      uuid REFERENCES worker_versions (id) ON DELETE SET NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE batches (
    id              text PRIMARY KEY,
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    run_count       integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id                  text PRIMARY KEY,
    environment_id      uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    task_id             text NOT NULL,
    status              text NOT NULL CHECK (status IN (
                            'DELAYED', 'PENDING_VERSION', 'PENDING', 'EXECUTING',
                            'RETRYING_AFTER_FAILURE', 'WAITING_TO_RESUME',
                            'COMPLETED_SUCCESSFULLY', 'COMPLETED_WITH_ERRORS', 'CRASHED',
                            'SYSTEM_FAILURE', 'CANCELED', 'EXPIRED', 'TIMED_OUT')),
    payload             text,
    payload_type        text NOT NULL DEFAULT 'application/json',
    output              text,
    output_type         text,
    error               jsonb,
    queue               text NOT NULL,
    -- dequeue order: milliseconds since epoch of the queue time, minus the priority offset
    score               bigint NOT NULL,
    -- when a DELAYED or RETRYING_AFTER_FAILURE run becomes PENDING
    run_at              timestamptz,
    attempt_number      integer NOT NULL DEFAULT 0,
    -- the trigger option until first lease, then the locked value
    max_attempts        integer,
    retry               jsonb,
    max_duration        double precision,
    machine             text,
    version_id          uuid REFERENCES worker_versions (id),
    lease_owner         uuid,
    lease_expires_at    timestamptz,
    idempotency_key     text,
    idempotency_key_expires_at timestamptz,
    tags                text[] NOT NULL DEFAULT '{}',
    metadata            jsonb,
    batch_id            text REFERENCES batches (id),
    parent_run_id       text REFERENCES runs (id),
    root_run_id         text REFERENCES runs (id),
    is_test             boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    CHECK ((status = 'EXECUTING') = (lease_owner IS NOT NULL))
);

-- The dequeue scan: only runs ready to lease, in order.
CREATE INDEX runs_dequeue_idx ON runs (environment_id, score, id) WHERE status = 'PENDING';
-- The scheduler's scan for runs whose delay or retry backoff is over.
CREATE INDEX runs_due_idx ON runs (run_at) WHERE status IN ('DELAYED', 'RETRYING_AFTER_FAILURE');
-- The rescuer's scan for expired leases.
CREATE INDEX runs_lease_idx ON runs (lease_expires_at) WHERE status = 'EXECUTING';
CREATE INDEX runs_list_idx ON runs (environment_id, created_at DESC, id DESC);
CREATE INDEX runs_parent_idx ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE INDEX runs_batch_idx ON runs (batch_id) WHERE batch_id IS NOT NULL;
CREATE UNIQUE INDEX runs_idempotency_idx ON runs (environment_id, task_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE run_attempts (
    run_id           text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    number           integer NOT NULL,
    status           text NOT NULL CHECK (status IN ('EXECUTING', 'COMPLETED', 'FAILED', 'CANCELED', 'RELEASED')),
    worker_instance  uuid NOT NULL,
    version_id       uuid,
    error            jsonb,
    started_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    PRIMARY KEY (run_id, number)
);

CREATE TABLE run_logs (
    id              bigserial PRIMARY KEY,
    run_id          text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt_number  integer NOT NULL,
    level           text NOT NULL,
    message         text NOT NULL,
    attributes      jsonb,
    logged_at       timestamptz NOT NULL
);
CREATE INDEX run_logs_run_idx ON run_logs (run_id, id);

-- HTTP retries of one trigger request (same x-trigger-request-idempotency-key) create one run.
CREATE TABLE request_keys (
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    request_key     text NOT NULL,
    response        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, request_key)
);
