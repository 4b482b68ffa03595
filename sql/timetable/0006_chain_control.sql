-- timetable: ad-hoc START / STOP only from roles allowed to control chains (issue #14).
--
-- Until now the engine acted on any notification on its channel.  pg_notify() needs no
-- privilege and the channel (the engine's client name) is visible in pg_stat_activity, so
-- any role that could connect could start a chain (which runs as the engine's role) or
-- stop a running one.  Now:
--
-- * Every START and every STOP is a row of timetable.pending_start (command), recorded with
--   the role that asked (requested_by) and its backend (requested_pid).  Both are set by a
--   trigger that runs as the inserting role, so they are the caller's own: current_user
--   inside a SECURITY DEFINER function is that function's owner, and session_user is the
--   engine's login role inside a schedule job's sandbox, so neither could name the caller.
--   Nobody but the owner may write those two columns, update or delete rows.
-- * notify_chain_start / notify_chain_stop keep pg_timetable's signatures and payloads
--   (plus "PendingID"); they insert the row and notify.  Their EXECUTE is no longer granted
--   to PUBLIC: it is granted to timetable_operator (a cluster-wide role, created here when
--   missing).
-- * The notification only wakes the engine.  It acts on the rows for it, and only on those
--   whose role may control chains (timetable.may_control): a member of timetable_operator
--   or a role with EXECUTE on the function of that command.  Other rows are deleted and
--   logged; a notification that names no request changes nothing and is logged.
-- * start_delay must be a finite interval of at most 30 days (a negative one still means
--   now, as in pg_timetable); the table checks it too, so the engine never sees another.

-- Roles are cluster-wide: create the role only where missing; two databases of one cluster
-- may install this module at the same time.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'timetable_operator') THEN
        BEGIN
            CREATE ROLE timetable_operator NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by another installation
        END;
    END IF;
END
$roles$;

ALTER TABLE timetable.pending_start
    ADD COLUMN command TEXT NOT NULL DEFAULT 'START',
    ADD COLUMN requested_by NAME,
    ADD COLUMN requested_pid INTEGER;
-- requests made before this migration have no known role: the engine refuses and logs them
UPDATE timetable.pending_start SET start_delay = interval '30 days' WHERE start_delay > interval '30 days';
ALTER TABLE timetable.pending_start
    ADD CONSTRAINT pending_start_command_check CHECK (command IN ('START', 'STOP')),
    ADD CONSTRAINT pending_start_delay_check CHECK (isfinite(start_delay) AND start_delay >= interval '0'
                                                    AND start_delay <= interval '30 days');
COMMENT ON TABLE timetable.pending_start IS
    'pgtt-tui: START and STOP requests (notify_chain_start / notify_chain_stop) not yet taken by the engine they '
    'name, with the role that asked';

CREATE FUNCTION timetable._pending_start_requester() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- SECURITY INVOKER on purpose: current_user is the role that inserts the request
    NEW.requested_by := current_user;
    NEW.requested_pid := pg_backend_pid();
    RETURN NEW;
END $$;
CREATE TRIGGER pending_start_requester BEFORE INSERT ON timetable.pending_start
    FOR EACH ROW EXECUTE FUNCTION timetable._pending_start_requester();

-- Whether a role may START (or STOP) chains.
CREATE FUNCTION timetable.may_control(p_role name, p_command text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((
        SELECT coalesce(pg_has_role(r.oid, (SELECT o.oid FROM pg_roles o WHERE o.rolname = 'timetable_operator'),
                                    'MEMBER'), false)
            OR has_function_privilege(r.oid, CASE WHEN p_command = 'STOP'
                                                  THEN 'timetable.notify_chain_stop(bigint,text)'::regprocedure
                                                  ELSE 'timetable.notify_chain_start(bigint,text,interval)'::regprocedure
                                             END, 'EXECUTE')
        FROM pg_roles r WHERE r.rolname = p_role), false)
$$;

CREATE OR REPLACE FUNCTION timetable.notify_chain_start(chain_id BIGINT, worker_name TEXT, start_delay INTERVAL DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    IF notify_chain_start.chain_id IS NULL OR notify_chain_start.chain_id <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('chain_id: must be a positive chain id, got %s', coalesce(notify_chain_start.chain_id::text, 'NULL'));
    END IF;
    IF notify_chain_start.worker_name IS NULL OR notify_chain_start.worker_name = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'worker_name: must name the engine (its client name)';
    END IF;
    IF notify_chain_start.start_delay IS NOT NULL AND (NOT isfinite(notify_chain_start.start_delay)
                                                     OR notify_chain_start.start_delay > interval '30 days') THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('start_delay: must be a finite interval of at most 30 days, got %s',
                             notify_chain_start.start_delay);
    END IF;
    INSERT INTO timetable.pending_start (command, chain_id, worker_name, start_delay)
    VALUES ('START', notify_chain_start.chain_id, notify_chain_start.worker_name,
            greatest(coalesce(notify_chain_start.start_delay, interval '0'), interval '0'));
    v_id := currval('timetable.pending_start_id_seq');  -- RETURNING would need SELECT on the table
    PERFORM pg_notify(notify_chain_start.worker_name,
        format('{"ConfigID": %s, "Command": "START", "Ts": %s, "Delay": %s, "PendingID": %s}',
               notify_chain_start.chain_id, EXTRACT(epoch FROM clock_timestamp())::bigint,
               greatest(coalesce(EXTRACT(epoch FROM notify_chain_start.start_delay)::bigint, 0), 0), v_id));
END $$;

CREATE OR REPLACE FUNCTION timetable.notify_chain_stop(chain_id BIGINT, worker_name TEXT)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    IF notify_chain_stop.chain_id IS NULL OR notify_chain_stop.chain_id <= 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('chain_id: must be a positive chain id, got %s', coalesce(notify_chain_stop.chain_id::text, 'NULL'));
    END IF;
    IF notify_chain_stop.worker_name IS NULL OR notify_chain_stop.worker_name = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'worker_name: must name the engine (its client name)';
    END IF;
    INSERT INTO timetable.pending_start (command, chain_id, worker_name)
    VALUES ('STOP', notify_chain_stop.chain_id, notify_chain_stop.worker_name);
    v_id := currval('timetable.pending_start_id_seq');
    PERFORM pg_notify(notify_chain_stop.worker_name,
        format('{"ConfigID": %s, "Command": "STOP", "Ts": %s, "PendingID": %s}',
               notify_chain_stop.chain_id, EXTRACT(epoch FROM clock_timestamp())::bigint, v_id));
END $$;

-- Who may call the functions decides who may ask; the row itself needs only INSERT of the
-- request's columns (granted to PUBLIC: the engine still refuses a role that may not
-- control chains, and logs it).  Reaching timetable at all needs USAGE on the schema.
REVOKE EXECUTE ON FUNCTION timetable.notify_chain_start(bigint, text, interval),
                           timetable.notify_chain_stop(bigint, text) FROM PUBLIC;
GRANT USAGE ON SCHEMA timetable TO timetable_operator;
GRANT EXECUTE ON FUNCTION timetable.notify_chain_start(bigint, text, interval),
                          timetable.notify_chain_stop(bigint, text) TO timetable_operator;
REVOKE ALL ON TABLE timetable.pending_start FROM PUBLIC;
GRANT INSERT (command, chain_id, worker_name, start_delay) ON TABLE timetable.pending_start TO PUBLIC;
GRANT USAGE ON SEQUENCE timetable.pending_start_id_seq TO PUBLIC;
