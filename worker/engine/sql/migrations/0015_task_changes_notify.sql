-- Every API process caches the environment's task definitions for the plain trigger's one
-- round trip (worker/engine/task_defs.py). A task row written or deleted (a registration, a
-- deployment's promotion, an environment deleted) is announced on channel trigger_tasks
-- (payload: the environment id), so each process drops that environment's definitions. The
-- trigger's insert also checks the row it cached is still the current one (its xmin), so a
-- notification not yet heard never lets a trigger use a replaced definition.
CREATE FUNCTION trigger_notify_task_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trigger_tasks',
                      CASE WHEN TG_OP = 'DELETE' THEN OLD.environment_id
                           ELSE NEW.environment_id END::text);
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_changed
    AFTER INSERT OR UPDATE OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION trigger_notify_task_change();
