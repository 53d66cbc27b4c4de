-- Operations (issue 17): manageable API keys and worker tokens, signing-secret rotation,
-- retention overrides.

-- Keys get an id (to list, revoke and rotate them without ever handling the key), a name, a
-- kind ('secret': the environment's full API; 'worker': the worker protocol only), when they
-- were last used, and an expiry (set on the old key when it is rotated: its grace period).
ALTER TABLE api_keys
    ADD COLUMN id            uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN name          text NOT NULL DEFAULT 'default',
    ADD COLUMN kind          text NOT NULL DEFAULT 'secret' CHECK (kind IN ('secret', 'worker')),
    ADD COLUMN last_used_at  timestamptz,
    ADD COLUMN expires_at    timestamptz;
CREATE UNIQUE INDEX api_keys_id ON api_keys (id);
CREATE INDEX api_keys_environment ON api_keys (environment_id, created_at);

-- Every API process caches resolved keys; a revoked, expiring or deleted key is announced on
-- channel trigger_keys (payload: key:<hash, hex>:<environment id>) so each process drops it.
CREATE FUNCTION trigger_notify_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trigger_keys',
                      'key:' || encode(OLD.key_hash, 'hex') || ':' || OLD.environment_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER api_keys_changed
    AFTER UPDATE OF revoked_at, expires_at, kind OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION trigger_notify_key_change();

-- The public-token signing secret can be rotated: the previous one keeps verifying tokens
-- until previous_valid_until (the longest a token can live), each token until its own expiry.
ALTER TABLE environment_secrets
    ADD COLUMN previous_secret       bytea,
    ADD COLUMN previous_valid_until  timestamptz,
    ADD COLUMN rotated_at            timestamptz;

CREATE FUNCTION trigger_notify_secret_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trigger_keys', 'env:' || NEW.environment_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER environment_secrets_changed
    AFTER UPDATE ON environment_secrets
    FOR EACH ROW EXECUTE FUNCTION trigger_notify_secret_change();

-- Retention (worker/engine/services/retention.py): finished runs older than this many days are
-- deleted; NULL = the server's TRIGGER_RETENTION_DAYS.
ALTER TABLE environments ADD COLUMN retention_days integer CHECK (retention_days > 0);
