-- Alert channels and deliveries (worker/engine/alerts.py, worker/engine/services/alerter.py).

-- name: insert_alert_channel
INSERT INTO alert_channels (id, environment_id, name, type, properties, alert_types)
VALUES (%(id)s::text, %(environment_id)s::uuid, %(name)s::text, %(type)s::text,
        %(properties)s::jsonb, %(alert_types)s::text[])
RETURNING id, name, type, properties, alert_types, enabled, created_at;

-- name: list_alert_channels
SELECT id, name, type, properties, alert_types, enabled, created_at FROM alert_channels
WHERE environment_id = %(environment_id)s::uuid ORDER BY created_at, id;

-- name: delete_alert_channel
DELETE FROM alert_channels
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
RETURNING id;

-- name: init_alert_cursor
-- First start: alert on failures from now on, not on the history.
INSERT INTO alert_cursors (name, position) VALUES (%(name)s::text, now())
ON CONFLICT (name) DO NOTHING;

-- name: lock_alert_cursor
SELECT position, now() - make_interval(secs => %(lag_seconds)s::float8) AS until
FROM alert_cursors WHERE name = %(name)s::text FOR UPDATE;

-- name: queue_run_failure_alerts
-- One delivery per (channel, failed run) for runs that failed in (since, until].
INSERT INTO alert_deliveries (channel_id, alert_type, subject_id, body)
SELECT c.id, 'TASK_RUN_FAILED', r.id,
       jsonb_build_object('runId', r.id, 'taskIdentifier', r.task_id, 'status', r.status,
                          'error', r.error, 'attempts', r.attempt_number,
                          'completedAt', r.completed_at, 'environment', e.slug,
                          'project', p.ref, 'tags', r.tags)
FROM runs r
JOIN alert_channels c ON c.environment_id = r.environment_id AND c.enabled
     AND 'TASK_RUN_FAILED' = ANY (c.alert_types)
JOIN environments e ON e.id = r.environment_id
JOIN projects p ON p.id = e.project_id
WHERE r.status IN ('COMPLETED_WITH_ERRORS', 'CRASHED', 'SYSTEM_FAILURE', 'TIMED_OUT')
  AND r.completed_at > %(since)s::timestamptz AND r.completed_at <= %(until)s::timestamptz
ON CONFLICT (channel_id, alert_type, subject_id) DO NOTHING;

-- name: move_alert_cursor
UPDATE alert_cursors SET position = %(until)s::timestamptz WHERE name = %(name)s::text;

-- name: queue_deploy_alerts
INSERT INTO alert_deliveries (channel_id, alert_type, subject_id, body)
SELECT c.id, 'DEPLOYMENT_SUCCESS', %(deployment_id)s::text, %(body)s::jsonb
FROM alert_channels c
WHERE c.environment_id = %(environment_id)s::uuid AND c.enabled
  AND 'DEPLOYMENT_SUCCESS' = ANY (c.alert_types)
ON CONFLICT (channel_id, alert_type, subject_id) DO NOTHING;

-- name: claim_alert_deliveries
-- Claim due deliveries: push their next attempt a minute ahead and count the attempt, so no
-- other sender takes them meanwhile; a delivery that keeps failing stops after 5 attempts.
UPDATE alert_deliveries d
SET attempts = d.attempts + 1, next_attempt_at = now() + interval '60 seconds'
FROM alert_channels c
WHERE c.id = d.channel_id
  AND d.id IN (SELECT id FROM alert_deliveries
               WHERE sent_at IS NULL AND attempts < 5 AND next_attempt_at <= now()
               ORDER BY next_attempt_at, id LIMIT %(limit)s::int
               FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.alert_type, d.body, d.attempts, c.name, c.type, c.properties;

-- name: mark_alert_sent
UPDATE alert_deliveries SET sent_at = now(), last_error = NULL WHERE id = %(id)s::bigint;

-- name: mark_alert_failed
UPDATE alert_deliveries
SET last_error = %(error)s::text,
    next_attempt_at = now() + make_interval(secs => %(retry_seconds)s::float8)
WHERE id = %(id)s::bigint;
