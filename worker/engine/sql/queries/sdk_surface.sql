-- Run tags added from inside a run, one-time public tokens (issue 20).

-- name: lock_run_tags
SELECT tags FROM runs
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
FOR UPDATE;

-- name: set_run_tags
UPDATE runs SET tags = %(tags)s::text[]
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;

-- name: spend_public_token
-- Returns a row only for the first use of the token id.
INSERT INTO spent_public_tokens (token_id, environment_id, expires_at)
VALUES (%(token_id)s::text, %(environment_id)s::uuid, %(expires_at)s::timestamptz)
ON CONFLICT (token_id) DO NOTHING
RETURNING token_id;

-- name: forget_spent_public_tokens
DELETE FROM spent_public_tokens
WHERE environment_id = %(environment_id)s::uuid AND expires_at < now();

-- name: insert_deployment
INSERT INTO deployments (id, environment_id, version_id, status, image)
VALUES (%(id)s::text, %(environment_id)s::uuid, %(version_id)s::uuid, 'REGISTERED',
        %(image)s::text)
RETURNING id, status, image, created_at, promoted_at;

-- name: get_deployment
SELECT d.id, d.status, d.image, d.created_at, d.promoted_at, d.version_id, v.version
FROM deployments d JOIN worker_versions v ON v.id = d.version_id
WHERE d.id = %(id)s::text AND d.environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;

-- name: lock_deployment
SELECT d.id, d.status, d.version_id, v.version
FROM deployments d JOIN worker_versions v ON v.id = d.version_id
WHERE d.id = %(id)s::text AND d.environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
FOR UPDATE OF d;

-- name: list_version_tasks
SELECT task_id, definition FROM version_tasks WHERE version_id = %(version_id)s::uuid;

-- name: mark_deployment_deployed
UPDATE deployments SET status = 'DEPLOYED', promoted_at = now()
WHERE id = %(id)s::text
RETURNING id, status, image, created_at, promoted_at;

-- name: current_deployment
SELECT d.id, d.status, d.image, d.created_at, d.promoted_at, d.version_id, v.version
FROM deployments d JOIN worker_versions v ON v.id = d.version_id
WHERE d.environment_id = %(environment_id)s::uuid AND d.status = 'DEPLOYED'
ORDER BY d.promoted_at DESC LIMIT 1;
