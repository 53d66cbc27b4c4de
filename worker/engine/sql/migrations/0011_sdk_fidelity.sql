-- SDK twins of Trigger.dev v4 surface (issue 20): one-time public trigger tokens, alerts,
-- deployments.

-- A one-time-use public token (auth.create_trigger_public_token, the default) is spent by
-- recording its id; a second use finds the row and is refused. Rows are useless once the token
-- expired, so each spend deletes the environment's expired ones.
CREATE TABLE spent_public_tokens (
    token_id        text PRIMARY KEY,
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    expires_at      timestamptz NOT NULL,
    spent_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spent_public_tokens_expiry ON spent_public_tokens (environment_id, expires_at);

-- Alert channels of an environment: where a failed run (or a deploy) is reported.
CREATE TABLE alert_channels (
    id              text PRIMARY KEY,
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name            text NOT NULL,
    type            text NOT NULL CHECK (type IN ('EMAIL', 'SLACK', 'WEBHOOK')),
    -- EMAIL: {"to": [...]} ; SLACK / WEBHOOK: {"url": ...} (WEBHOOK may add a signing "secret")
    properties      jsonb NOT NULL,
    -- subset of TASK_RUN_FAILED, DEPLOYMENT_SUCCESS
    alert_types     text[] NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_channels_env ON alert_channels (environment_id) WHERE enabled;

-- Alerts waiting to be (or already) sent, one row per channel and event. The alerter service
-- sends unsent rows and marks them; a failure is retried a few times, then given up.
CREATE TABLE alert_deliveries (
    id              bigserial PRIMARY KEY,
    channel_id      text NOT NULL REFERENCES alert_channels (id) ON DELETE CASCADE,
    alert_type      text NOT NULL,
    subject_id      text NOT NULL,  -- the run id or the version id
    body            jsonb NOT NULL,
    attempts        int NOT NULL DEFAULT 0,
    -- a sender claims a row by moving this ahead, so two API processes never send it together
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel_id, alert_type, subject_id)
);
CREATE INDEX alert_deliveries_unsent ON alert_deliveries (next_attempt_at) WHERE sent_at IS NULL;

-- The alerter's scan position over finished runs (one row per service, key 'runs').
CREATE TABLE alert_cursors (
    name            text PRIMARY KEY,
    position        timestamptz NOT NULL
);

-- The alerter's scan for runs that failed since its cursor.
CREATE INDEX runs_failed_idx ON runs (completed_at)
    WHERE status IN ('COMPLETED_WITH_ERRORS', 'CRASHED', 'SYSTEM_FAILURE', 'TIMED_OUT');

-- `trigger deploy`: a version registered from the CLI, then promoted (made current) when healthy.
CREATE TABLE deployments (
    id              text PRIMARY KEY,
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    version_id      uuid NOT NULL REFERENCES worker_versions (id) ON DELETE CASCADE,
    status          text NOT NULL CHECK (status IN ('REGISTERED', 'DEPLOYED', 'FAILED')),
    image           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    promoted_at     timestamptz
);
CREATE INDEX deployments_env ON deployments (environment_id, created_at DESC);
