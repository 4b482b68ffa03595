-- Remote-task passwords leave timetable.task (issue 14).
--
-- timetable.task.database_connection is read by everyone who may read the timetable
-- tables (the console's read grant is SELECT ON ALL TABLES IN SCHEMA timetable). A
-- connection string with a password is therefore kept whole in
-- timetable_secret.task_connection, a schema without grants (only its owner, the role
-- that installed the module, and superusers read it; grant it to an engine that runs as
-- another role), and the task row keeps the same string with the password masked
-- (password=***, postgresql://user:***@host), exactly as engine.db.redact shows it.
--
-- SQL written for pg_timetable keeps working: an INSERT or UPDATE of
-- timetable.task.database_connection goes through the trigger below, which moves the
-- secret. Writing back the masked string that is stored keeps the secret; any other string
-- that still holds the mask is refused (the password cannot be guessed back).

CREATE SCHEMA timetable_secret;
REVOKE ALL ON SCHEMA timetable_secret FROM PUBLIC;
COMMENT ON SCHEMA timetable_secret IS
    'pgtt-tui: connection secrets of timetable tasks; no grants (the engine''s role reads them)';

CREATE TABLE timetable_secret.task_connection (
    task_id             bigint PRIMARY KEY
                        REFERENCES timetable.task (task_id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    database_connection text   NOT NULL
);
COMMENT ON TABLE timetable_secret.task_connection IS
    'the whole database_connection of a task whose string holds a password (timetable.task keeps it masked)';

-- the same two patterns as engine.db.redact (tests/test_task_secrets.py checks they agree)
CREATE FUNCTION timetable_secret.redact(conn text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT regexp_replace(
               regexp_replace(conn, '(password\s*=\s*)(''(?:[^''\\]|\\.)*''|\S+)', '\1***', 'gi'),
               '(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)', '\1***\3', 'g')
$$;

CREATE FUNCTION timetable_secret.task_connection_moved() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shown text;
BEGIN
    IF NEW.database_connection IS NULL OR NEW.database_connection = '' THEN
        DELETE FROM timetable_secret.task_connection WHERE task_id = NEW.task_id;
        RETURN NEW;
    END IF;
    shown := timetable_secret.redact(NEW.database_connection);
    IF shown <> NEW.database_connection THEN
        -- a password in clear: keep it here, show the task without it
        INSERT INTO timetable_secret.task_connection (task_id, database_connection)
        VALUES (NEW.task_id, NEW.database_connection)
        ON CONFLICT (task_id) DO UPDATE SET database_connection = EXCLUDED.database_connection;
        NEW.database_connection := shown;
        RETURN NEW;
    END IF;
    IF shown ~* 'password\s*=\s*\*\*\*(\s|$)' OR shown ~ 'postgres(ql)?://[^:/@\s]*:\*\*\*@' THEN
        -- the masked form: only as the unchanged value of a task that has its secret
        IF TG_OP = 'UPDATE' AND NEW.task_id = OLD.task_id AND NEW.database_connection = OLD.database_connection
           AND EXISTS (SELECT 1 FROM timetable_secret.task_connection WHERE task_id = NEW.task_id) THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'database_connection: the password is masked (***); give the real password'
            USING ERRCODE = 'check_violation', HINT = 'task ' || NEW.task_id;
    END IF;
    DELETE FROM timetable_secret.task_connection WHERE task_id = NEW.task_id;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION timetable_secret.task_connection_moved() FROM PUBLIC;

CREATE TRIGGER task_connection_secret BEFORE INSERT OR UPDATE OF database_connection ON timetable.task
    FOR EACH ROW EXECUTE FUNCTION timetable_secret.task_connection_moved();

-- passwords already stored move now (the UPDATE goes through the trigger)
UPDATE timetable.task SET database_connection = database_connection
WHERE database_connection IS NOT NULL
  AND timetable_secret.redact(database_connection) <> database_connection;
