-- The GIN index on runs' tags only for runs that have tags (issue 16: Postgres time per run;
-- docs/benchmarks.md, "Postgres time per run (session 25)").
--
-- An UPDATE that changes a run's status is never HOT (status is in several of runs' indexes), so
-- every lease and every completion wrote a new entry into every index without a predicate, the
-- GIN index on tags included — for a run without tags, GIN's placeholder for an empty array, into
-- its pending list (which some later insert then has to merge into the index, on the hot path).
-- The only query that searches tags through this index, list_runs (sql/queries/runs.sql: the
-- runs list of the API and of the dashboard), now says `r.tags <> '{}'` with its `&&`, so the
-- planner can prove the predicate; `tag = ANY(tags)` (realtime_runs_with_tag) never used it.
DROP INDEX runs_tags_idx;
CREATE INDEX runs_tags_idx ON runs USING gin (tags) WHERE tags <> '{}';
