-- The hot inserts check no foreign key (docs/architecture.md, "Referential integrity").
--
-- A trigger inserts a run, its request key and (handed to a waiting worker) its first attempt;
-- a lease inserts an attempt. Each foreign key of those rows was checked at every insert by a
-- query that locks the parent row (FOR KEY SHARE, one WAL record each): the environment's row
-- (twice), the version's and the run's own row, just inserted. The engine never inserts one of
-- those rows without its parent (it writes the environment of the caller's key, a version it
-- read in the same statement, the run of the same statement), and it deletes no environment
-- and no version. So the checks are dropped, and what they did when a parent goes is done
-- on the parent's side, by triggers that fire only when one is deleted:
--   * an environment deleted takes its runs and request keys with it (it did: ON DELETE
--     CASCADE); they go first, before the cascades of its other tables;
--   * a version that runs still name cannot be deleted (it could not: NO ACTION);
--   * a run deleted (retention) takes its attempts with it (it did: ON DELETE CASCADE).

ALTER TABLE runs DROP CONSTRAINT runs_environment_id_fkey,
                 DROP CONSTRAINT runs_version_id_fkey;
ALTER TABLE run_attempts DROP CONSTRAINT run_attempts_run_id_fkey;
ALTER TABLE request_keys DROP CONSTRAINT request_keys_environment_id_fkey;

CREATE FUNCTION trigger_environment_deleted_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM request_keys WHERE environment_id = OLD.id;
    DELETE FROM runs WHERE environment_id = OLD.id;
    RETURN OLD;
END $$;

CREATE TRIGGER environment_deleted BEFORE DELETE ON environments
    FOR EACH ROW EXECUTE FUNCTION trigger_environment_deleted_v1();

CREATE FUNCTION trigger_version_deleted_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM runs WHERE version_id = OLD.id) THEN
        RAISE EXCEPTION 'version % is still named by runs', OLD.id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'delete the runs of that version first';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER version_deleted BEFORE DELETE ON worker_versions
    FOR EACH ROW EXECUTE FUNCTION trigger_version_deleted_v1();

CREATE FUNCTION trigger_runs_deleted_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM run_attempts a USING old_rows o WHERE a.run_id = o.id;
    RETURN NULL;
END $$;

CREATE TRIGGER runs_deleted AFTER DELETE ON runs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION trigger_runs_deleted_v1();
