-- The dequeue pick's estimates grow with the queue (a million queued runs make its cost look
-- huge), which made Postgres JIT-compile it on every call: ~70 ms at 1 M queued runs for a
-- query that runs in under 1 ms. JIT never pays off for these short OLTP statements.
ALTER FUNCTION trigger_pick_runs_v1(uuid, uuid[], text[], integer) SET jit = off;
