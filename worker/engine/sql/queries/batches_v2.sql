-- Two-phase batches (Trigger.dev SDK 4.x: POST /api/v3/batches, then NDJSON items).
-- Each query starts with "-- name: <name>"; psycopg named parameters with explicit casts.

-- name: insert_open_batch
INSERT INTO batches (id, environment_id, run_count, idempotency_key, sealed_at)
VALUES (%(id)s::text, %(environment_id)s::uuid, %(run_count)s::int,
        %(idempotency_key)s::text, NULL)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: find_batch_by_key
SELECT id, run_count FROM batches
WHERE environment_id = %(environment_id)s::uuid AND idempotency_key = %(idempotency_key)s::text;

-- name: lock_batch
SELECT id, run_count, sealed_at, processing_errors FROM batches
WHERE id = %(id)s::text AND environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
FOR UPDATE;

-- name: batch_indexes
SELECT batch_index FROM runs WHERE batch_id = %(id)s::text AND batch_index IS NOT NULL;

-- name: update_batch_progress
UPDATE batches
SET processing_errors = %(errors)s::jsonb, updated_at = now(),
    sealed_at = CASE WHEN %(sealed)s::boolean THEN coalesce(sealed_at, now()) END
WHERE id = %(id)s::text;

-- name: get_batch_v2
SELECT b.id, b.run_count, b.created_at, b.updated_at, b.idempotency_key, b.sealed_at,
       b.processing_errors,
       coalesce(array_agg(r.id ORDER BY r.batch_index, r.created_at, r.id)
                FILTER (WHERE r.id IS NOT NULL), '{}') AS run_ids,
       greatest(b.updated_at, max(r.updated_at)) AS last_change
FROM batches b LEFT JOIN runs r ON r.batch_id = b.id
WHERE b.id = %(id)s::text AND b.environment_id IS NOT DISTINCT FROM %(environment_id)s::uuid
GROUP BY b.id;
