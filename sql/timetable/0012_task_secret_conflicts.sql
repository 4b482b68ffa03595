-- timetable: an INSERT that does not insert leaves other tasks' secrets alone.
--
-- BEFORE INSERT row triggers fire also for a row that INSERT ... ON CONFLICT then skips
-- (DO NOTHING) or turns into an UPDATE of the existing row (DO UPDATE).  The secret trigger
-- of 0008 wrote timetable_secret.task_connection for NEW.task_id at once, so an insert naming
-- an existing task's id replaced (or, without a password, deleted) that task's secret while
-- its row kept showing the old masked string: the engine then connected wherever the
-- skipped row said.  Now an INSERT whose task_id already exists does not touch the secrets
-- and leaves the row as given: it is not inserted (unique violation, DO NOTHING), or DO UPDATE
-- hands the value to the UPDATE, whose trigger moves the secret.  The existing row is locked
-- (FOR KEY SHARE) so it is still there when the insert meets it.  A new task's secret is
-- inserted without ON CONFLICT: another transaction's secret for the same id makes it fail.

CREATE OR REPLACE FUNCTION timetable_secret.task_connection_moved() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shown text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM 1 FROM timetable.task WHERE task_id = NEW.task_id FOR KEY SHARE;
        IF FOUND THEN
            RETURN NEW;  -- not inserted, or an UPDATE of that task (its own trigger run)
        END IF;
    END IF;
    IF NEW.database_connection IS NULL OR NEW.database_connection = '' THEN
        DELETE FROM timetable_secret.task_connection WHERE task_id = NEW.task_id;
        RETURN NEW;
    END IF;
    shown := timetable_secret.redact(NEW.database_connection);
    IF shown <> NEW.database_connection THEN
        -- a password in clear: keep it here, show the task without it
        IF TG_OP = 'INSERT' THEN
            INSERT INTO timetable_secret.task_connection (task_id, database_connection)
            VALUES (NEW.task_id, NEW.database_connection);
        ELSE
            INSERT INTO timetable_secret.task_connection (task_id, database_connection)
            VALUES (NEW.task_id, NEW.database_connection)
            ON CONFLICT (task_id) DO UPDATE SET database_connection = EXCLUDED.database_connection;
        END IF;
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
