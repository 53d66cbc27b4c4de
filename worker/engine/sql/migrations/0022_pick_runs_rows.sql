-- The dequeue's pick returns the few runs one lease takes (up to its max_runs): say so to the
-- planner (docs/benchmarks.md, "Latest results": the dequeue without statistics).
--
-- A set-returning function is estimated at 1000 rows. The dequeue (queries/leases.sql) reads
-- each picked run by primary key and updates it; planned for 1000 picked runs, and more so for
-- a table that has no statistics yet (autovacuum off or not run), the update was joined to the
-- runs by a sequential scan of the whole table, and a prepared statement keeps that plan.
-- Estimated at one row, each run is one primary-key lookup, whatever the table's size.

ALTER FUNCTION trigger_pick_runs_v1(uuid, uuid[], text[], integer) ROWS 1;
