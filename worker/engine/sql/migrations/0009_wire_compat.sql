-- Wire compatibility with Trigger.dev's own SDK (docs/api.md, "Trigger.dev's SDK").

-- Two-phase batches: created with a run count, filled by NDJSON item streams, sealed once
-- every index arrived. Batches of the one-shot endpoints are sealed when created.
ALTER TABLE batches
    ADD COLUMN idempotency_key text,
    ADD COLUMN sealed_at timestamptz DEFAULT now(),
    ADD COLUMN processing_errors jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE UNIQUE INDEX batches_idempotency_idx ON batches (environment_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Secret keys, encrypted with the server's encryption key (TRIGGER_ENCRYPTION_KEY), so public
-- access tokens signed by a client with its key can be verified. Still looked up by hash.
ALTER TABLE api_keys ADD COLUMN key_ciphertext bytea;

-- Environment variables of an environment, values encrypted at rest like the keys; injected
-- into the environment of the executors that run the environment's tasks.
CREATE TABLE environment_variables (
    environment_id  uuid NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name            text NOT NULL,
    value_ciphertext bytea NOT NULL,
    is_secret       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, name)
);
