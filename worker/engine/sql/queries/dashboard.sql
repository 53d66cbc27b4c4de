-- Queries of the web dashboard (worker/api/dashboard/).
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: dash_upsert_user
INSERT INTO dashboard_users (username, password_hash)
VALUES (%(username)s::text, %(password_hash)s::text)
ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash
RETURNING username;

-- name: dash_get_user
SELECT username, password_hash FROM dashboard_users WHERE username = %(username)s::text;

-- name: dash_insert_session
INSERT INTO dashboard_sessions (token_hash, username, csrf_token, expires_at)
VALUES (%(token_hash)s::bytea, %(username)s::text, %(csrf_token)s::text,
        now() + make_interval(secs => %(seconds)s::float8));

-- name: dash_get_session
SELECT username, csrf_token FROM dashboard_sessions
WHERE token_hash = %(token_hash)s::bytea AND expires_at > now();

-- name: dash_delete_session
DELETE FROM dashboard_sessions
WHERE token_hash = %(token_hash)s::bytea OR expires_at < now();

-- name: dash_insert_login_token
INSERT INTO dashboard_login_tokens (token_hash, username, expires_at)
VALUES (%(token_hash)s::bytea, %(username)s::text,
        now() + make_interval(secs => %(seconds)s::float8));

-- name: dash_spend_login_token
-- One use: the row is deleted as it is read.
DELETE FROM dashboard_login_tokens
WHERE token_hash = %(token_hash)s::bytea
RETURNING username, expires_at > now() AS valid;

-- name: dash_environment
SELECT e.id AS environment_id, e.slug, e.type, e.concurrency_limit, p.id AS project_id, p.ref AS project_ref
FROM environments e JOIN projects p ON p.id = e.project_id
WHERE p.ref = %(project)s::text AND e.slug = %(slug)s::text;

-- name: dash_projects
-- Newest first: the landing page opens the project made last (the one `trigger dev` just made).
SELECT p.ref, array_agg(e.slug ORDER BY e.slug) AS slugs
FROM projects p JOIN environments e ON e.project_id = p.id
GROUP BY p.ref, p.created_at ORDER BY p.created_at DESC, p.ref;

-- name: dash_tasks
SELECT task_id, definition FROM tasks
WHERE environment_id = %(environment_id)s::uuid ORDER BY task_id;

-- name: dash_run_children
SELECT id, task_id, status, created_at FROM runs
WHERE parent_run_id = %(id)s::text AND environment_id = %(environment_id)s::uuid
ORDER BY created_at, id LIMIT 100;

-- name: dash_run_waits
-- What a run waits on: the waitpoints of its journal that are not completed yet.
SELECT w.id, w.type, w.status, w.complete_after, w.run_id, w.batch_id, j.kind, j.created_at
FROM run_journal j JOIN waitpoints w ON w.id = j.waitpoint_id
WHERE j.run_id = %(id)s::text
ORDER BY j.seq;

-- name: dash_run_logs
SELECT attempt_number, level, message, attributes, logged_at FROM run_logs
WHERE run_id = %(id)s::text
  AND (%(level)s::text IS NULL OR level = %(level)s::text)
  AND (%(search)s::text IS NULL OR message ILIKE '%%' || %(search)s::text || '%%')
ORDER BY id LIMIT 1000;

-- name: dash_workers
SELECT w.instance_id, w.metadata, w.first_seen_at, w.last_seen_at, v.version,
       (SELECT count(*) FROM runs r
        WHERE r.environment_id = w.environment_id AND r.status = 'EXECUTING'
          AND r.lease_owner = w.instance_id) AS executing
FROM workers w LEFT JOIN worker_versions v ON v.id = w.version_id
WHERE w.environment_id = %(environment_id)s::uuid
  AND w.last_seen_at > now() - interval '1 hour'
ORDER BY w.last_seen_at DESC LIMIT 200;

-- name: dash_versions
SELECT v.id, v.version, v.created_at,
       array(SELECT vt.task_id FROM version_tasks vt WHERE vt.version_id = v.id
             ORDER BY vt.task_id) AS tasks,
       v.id IN (SELECT t.version_id FROM tasks t
                WHERE t.environment_id = %(environment_id)s::uuid) AS current
FROM worker_versions v
WHERE v.environment_id = %(environment_id)s::uuid
ORDER BY v.created_at DESC LIMIT 50;
