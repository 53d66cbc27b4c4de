-- The web dashboard (docs/dashboard.md): accounts, browser sessions, one-time login links,
-- and the indexes that keep the runs list and its filters fast at a million runs.

CREATE TABLE dashboard_users (
    username       text PRIMARY KEY CHECK (length(username) BETWEEN 1 AND 200),
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 digest of a session or login token is stored.
CREATE TABLE dashboard_sessions (
    token_hash  bytea PRIMARY KEY,
    username    text NOT NULL,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expiry_idx ON dashboard_sessions (expires_at);

CREATE TABLE dashboard_login_tokens (
    token_hash  bytea PRIMARY KEY,
    username    text NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Runs list filters, newest first (runs_list_idx serves the unfiltered list).
CREATE INDEX runs_list_status_idx ON runs (environment_id, status, created_at DESC, id DESC);
CREATE INDEX runs_list_task_idx ON runs (environment_id, task_id, created_at DESC, id DESC);
-- Tag filters (`tags && ...`): a GIN index on the array.
CREATE INDEX runs_tags_idx ON runs USING gin (tags);
