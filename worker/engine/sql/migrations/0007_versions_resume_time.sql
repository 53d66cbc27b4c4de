-- Durable semantics across deploys and checkpoints (docs/run-states.md, "Versions").

-- A run's version came from its first lease (true) rather than from the `version` trigger
-- option (a pin, false). A lease-locked run whose version no live worker serves any more
-- (a deploy or a hot reload replaced the code) migrates to the newest version that has its
-- task; a pinned run never does.
ALTER TABLE runs ADD COLUMN lease_locked_version boolean NOT NULL DEFAULT false;
UPDATE runs SET lease_locked_version = true
WHERE version_id IS NOT NULL AND started_at IS NOT NULL;

-- Why a run waits in PENDING_VERSION (shown by the API as statusReason); NULL otherwise.
ALTER TABLE runs ADD COLUMN status_reason text;

-- Execution seconds the current attempt used before its last checkpoint (waits excluded):
-- the resumed lease carries them, so max_duration covers the whole attempt.
ALTER TABLE runs ADD COLUMN attempt_execution_ms bigint NOT NULL DEFAULT 0;

-- The metadata given at trigger time: a replay starts from it, not from the live metadata.
ALTER TABLE runs ADD COLUMN seed_metadata jsonb;
UPDATE runs SET seed_metadata = metadata WHERE seed_metadata IS NULL;

-- The distinct versions of queued locked runs, read by a loose index scan at dequeue and by
-- the version sweep (which of them does no live worker serve?), and the parked runs.
CREATE INDEX runs_locked_pending_idx ON runs (environment_id, version_id)
    WHERE status = 'PENDING' AND version_id IS NOT NULL;
CREATE INDEX runs_parked_version_idx ON runs (environment_id, version_id)
    WHERE status = 'PENDING_VERSION' AND version_id IS NOT NULL;
