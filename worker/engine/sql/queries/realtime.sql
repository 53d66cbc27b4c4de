-- Realtime: the rows subscriptions read, and run streams.
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: realtime_run
SELECT r.*, v.version AS version_name, r.attempt_number AS attempt_count,
       (extract(epoch FROM r.updated_at) * 1000000)::bigint AS updated_us
FROM runs r LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.id = %(id)s::text AND r.environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;

-- name: realtime_runs_with_tag
SELECT r.*, v.version AS version_name, r.attempt_number AS attempt_count,
       (extract(epoch FROM r.updated_at) * 1000000)::bigint AS updated_us
FROM runs r LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.environment_id = %(environment_id)s::uuid AND %(tag)s::text = ANY(r.tags)
ORDER BY r.created_at DESC, r.id DESC
LIMIT %(limit)s::int;

-- name: realtime_batch_runs
SELECT r.*, v.version AS version_name, r.attempt_number AS attempt_count,
       (extract(epoch FROM r.updated_at) * 1000000)::bigint AS updated_us
FROM runs r LEFT JOIN worker_versions v ON v.id = r.version_id
WHERE r.environment_id = %(environment_id)s::uuid AND r.batch_id = %(batch_id)s::text
ORDER BY r.created_at, r.id;

-- name: realtime_batch_exists
SELECT id, run_count FROM batches
WHERE id = %(batch_id)s::text AND environment_id = %(environment_id)s::uuid;

-- name: lock_stream
SELECT pg_advisory_xact_lock(hashtextextended(%(run_id)s::text || '/' || %(stream)s::text, 0));

-- name: stream_state
SELECT coalesce(max(seq), 0) AS last_seq, coalesce(bool_or(done), false) AS done
FROM run_stream_chunks WHERE run_id = %(run_id)s::text AND stream = %(stream)s::text;

-- name: insert_stream_chunks
INSERT INTO run_stream_chunks (run_id, stream, seq, data, done)
SELECT %(run_id)s::text, %(stream)s::text, %(first_seq)s::int + c.ord - 1, c.data, c.done
FROM unnest(%(datas)s::text[], %(dones)s::boolean[]) WITH ORDINALITY AS c(data, done, ord);

-- name: notify_stream
SELECT pg_notify('trigger_stream_chunks',
                 %(environment_id)s::text || ' ' || %(run_id)s::text || ' ' || %(seq)s::text
                 || ' ' || %(stream)s::text);

-- name: read_stream_chunks
SELECT seq, data, done FROM run_stream_chunks
WHERE run_id = %(run_id)s::text AND stream = %(stream)s::text AND seq > %(after)s::int
ORDER BY seq LIMIT %(limit)s::int;

-- name: run_status_brief
SELECT id, status, task_id, tags, batch_id FROM runs
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid;
