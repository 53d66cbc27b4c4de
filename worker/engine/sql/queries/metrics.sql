-- /metrics (docs/api.md, "Metrics"): each query reads an index, never the whole runs table
-- (a million queued runs is one index-only pass over runs_dequeue_idx).

-- name: metrics_queued
-- Queued (PENDING) runs per environment, queue and task, with the oldest one's score (its
-- queue time in epoch ms, minus its priority): runs_dequeue_idx holds all three (INCLUDE).
SELECT q.environment_id, p.ref AS project, e.slug, q.queue, q.task_id, q.n, q.oldest_score
FROM (SELECT environment_id, queue, task_id, count(*) AS n, min(score) AS oldest_score
      FROM runs WHERE status = 'PENDING'
      GROUP BY environment_id, queue, task_id) q
JOIN environments e ON e.id = q.environment_id
JOIN projects p ON p.id = e.project_id;

-- name: metrics_live
-- Runs in the other live statuses (their partial indexes: runs_running_idx, runs_due_idx,
-- runs_waiting_idx, runs_waiting_version_idx), per environment, status, queue and task.
SELECT l.environment_id, p.ref AS project, e.slug, l.status, l.queue, l.task_id, l.n
FROM (SELECT environment_id, status, queue, task_id, count(*) AS n FROM runs
      WHERE status IN ('EXECUTING', 'DELAYED', 'RETRYING_AFTER_FAILURE', 'WAITING_TO_RESUME',
                       'PENDING_VERSION')
      GROUP BY environment_id, status, queue, task_id) l
JOIN environments e ON e.id = l.environment_id
JOIN projects p ON p.id = e.project_id;

-- name: metrics_limits
-- Concurrency limits of every queue and environment.
SELECT e.id AS environment_id, p.ref AS project, e.slug, e.concurrency_limit AS env_limit,
       q.name AS queue, coalesce(q.limit_override, q.concurrency_limit) AS queue_limit,
       coalesce(q.paused, false) AS paused
FROM environments e
JOIN projects p ON p.id = e.project_id
LEFT JOIN queues q ON q.environment_id = e.id;

-- name: metrics_workers
-- Connected worker replicas (seen within the liveness window), their slots and busy ones.
SELECT w.instance_id, p.ref AS project, e.slug,
       coalesce((w.metadata ->> 'concurrency')::int, 0) AS slots,
       (SELECT count(*) FROM runs r
        WHERE r.status = 'EXECUTING' AND r.lease_owner = w.instance_id) AS busy
FROM workers w
JOIN environments e ON e.id = w.environment_id
JOIN projects p ON p.id = e.project_id
WHERE w.last_seen_at > now() - make_interval(secs => %(live_seconds)s::float8);
