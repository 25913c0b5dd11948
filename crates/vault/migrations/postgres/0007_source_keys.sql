-- Items are keyed by (org, source, id): a Webex Calling recording id and a WxCC capture id live in
-- different namespaces, so neither may shadow the other. Keep in step with ../sqlite.
--
-- Every name here resolves in wxvault's schema ([database] schema, default wxvault; public for
-- deployments from before it existed): the vault migrates with search_path set to that schema
-- only, so a table or index of the same name in another schema is never touched. The primary
-- keys are looked up on the tables themselves rather than assumed to be called <table>_pkey
-- (PostgreSQL picks another name when that one is taken in the schema).
DO $$
DECLARE
    pk TEXT;
BEGIN
    SELECT conname INTO STRICT pk FROM pg_constraint
    WHERE conrelid = 'tasks'::regclass AND contype = 'p';
    EXECUTE format('ALTER TABLE tasks DROP CONSTRAINT %I', pk);
    SELECT conname INTO STRICT pk FROM pg_constraint
    WHERE conrelid = 'recordings'::regclass AND contype = 'p';
    EXECUTE format('ALTER TABLE recordings DROP CONSTRAINT %I', pk);
END
$$;

ALTER TABLE tasks ADD PRIMARY KEY (org, source, task_id);
DROP INDEX tasks_org_state;
CREATE INDEX tasks_org_state ON tasks (org, source, state);

ALTER TABLE recordings ADD PRIMARY KEY (org, source, recording_id);
DROP INDEX recordings_org_state;
DROP INDEX recordings_org_task;
CREATE INDEX recordings_org_state ON recordings (org, source, state);
CREATE INDEX recordings_org_task ON recordings (org, source, task_id);
