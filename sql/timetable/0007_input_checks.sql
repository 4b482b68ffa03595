-- timetable: input that makes no sense is refused where it enters, also through plain SQL
-- on the pg_timetable tables (INSERT / UPDATE, timetable.add_job, timetable.add_task).
-- engine/timetable/validate.py makes the same checks with the same messages before the
-- API, the CLI and the console write anything.
--
-- Every message is "field: problem".  On UPDATE only the columns that change are checked,
-- so rows written before these checks existed can still be paused, renamed or deleted.
--
-- * chain.run_at: an @every / @after interval below the floor is refused.  The floor is
--   1 second unless the setting pgtt.timetable_min_interval lowers (or raises) it, e.g.
--   ALTER DATABASE mydb SET pgtt.timetable_min_interval = '100 ms' (new sessions; 0: no
--   floor).  The timetable.cron domain itself still accepts what engine/schedules.py
--   accepts (tests/test_timetable_cron_parity.py).
-- * chain.max_instances >= 1 (NULL: the engine default); chain.timeout and task.timeout
--   >= 0 (0: the --chain-timeout / --task-timeout default).
-- * chain.chain_name not empty; chain.client_name NULL (any engine) or not empty;
--   chain_name, client_name and task.task_name without control characters (C0, DEL, C1,
--   the line and paragraph separators U+2028/U+2029 and the bidirectional overrides
--   U+202A-U+202E, U+2066-U+2069).
-- * task.command not empty; a BUILTIN task's command one of the ten builtins
--   (engine/timetable/builtins.py BUILTINS).
-- * parameter.value of the task's kind: SQL a JSON array (values for $1..$n), PROGRAM a
--   JSON array of strings (argv), BUILTIN Sleep a whole number of seconds >= 0,
--   SendMail / Download / Copy* a JSON object; NULL rows are ignored at run time.
-- * task.run_as naming a role that does not exist: a WARNING (the task fails when it runs;
--   the API, the CLI and the console refuse it).

CREATE FUNCTION timetable._refuse(p_field text, p_problem text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value', MESSAGE = p_field || ': ' || p_problem;
END $$;

-- The ten builtins, in the order engine/timetable/builtins.py lists them.
CREATE FUNCTION timetable.builtin_names() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['NoOp', 'Sleep', 'Log', 'SendMail', 'Download', 'CopyFromFile', 'CopyToFile',
                 'CopyToProgram', 'CopyFromProgram', 'Shutdown']
$$;

-- What is wrong with a name (NULL: nothing).  p_empty_ok: '' is allowed (an optional label).
CREATE FUNCTION timetable.name_problem(p_value text, p_empty_ok boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    c text;
BEGIN
    IF p_value IS NULL THEN
        RETURN NULL;
    END IF;
    c := substring(p_value FROM '[\x01-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]');
    IF c IS NOT NULL THEN
        RETURN format('must not contain control characters (U+%s at position %s)',
                      upper(lpad(to_hex(ascii(c)), 4, '0')), strpos(p_value, c));
    END IF;
    IF NOT p_empty_ok AND btrim(p_value) = '' THEN
        RETURN 'must not be empty';
    END IF;
    RETURN NULL;
END $$;

-- The floor of @every / @after intervals: pgtt.timetable_min_interval, else 1 second.
CREATE FUNCTION timetable.min_interval() RETURNS interval
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v text := btrim(coalesce(current_setting('pgtt.timetable_min_interval', true), ''));
BEGIN
    IF v = '' THEN
        RETURN interval '1 second';
    END IF;
    IF v ~ '^0+(\.0*)?$' THEN
        RETURN interval '0';
    END IF;
    BEGIN
        RETURN make_interval(secs => timetable.interval_us(v) / 1000000.0);
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('pgtt.timetable_min_interval: %s is not an interval (e.g. ''1 second'', ''200 ms'', 0 for no floor)',
                             quote_literal(v));
    END;
END $$;

-- An interval as the messages show it: "1 second", "250 ms", "1.5 seconds", "10 microseconds".
CREATE FUNCTION timetable._interval_words(p_value interval) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN us % 1000000 = 0 THEN format('%s second%s', us / 1000000, CASE WHEN us = 1000000 THEN '' ELSE 's' END)
        WHEN us >= 1000000 THEN format('%s seconds', trim_scale(us / 1000000.0))
        WHEN us % 1000 = 0 THEN format('%s ms', us / 1000)
        ELSE format('%s microsecond%s', us, CASE WHEN us = 1 THEN '' ELSE 's' END) END
      FROM (SELECT round(extract(epoch FROM p_value) * 1000000)::bigint AS us) x
$$;

-- What is wrong with an @every / @after schedule for the current floor (NULL: nothing).
CREATE FUNCTION timetable.run_at_problem(p_run_at text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    iv interval := timetable.schedule_interval(p_run_at);
    lowest interval;
BEGIN
    IF iv IS NULL THEN
        RETURN NULL;
    END IF;
    lowest := timetable.min_interval();
    IF iv < lowest THEN
        RETURN format('the interval of %s is below the minimum of %s (the setting pgtt.timetable_min_interval lowers it)',
                      btrim(p_run_at), timetable._interval_words(lowest));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION timetable._json_kind(p_value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(p_value) WHEN 'object' THEN 'an object' WHEN 'array' THEN 'an array'
                WHEN 'string' THEN 'a string' WHEN 'boolean' THEN 'a boolean' WHEN 'number' THEN 'a number'
                ELSE 'null' END
$$;

-- What is wrong with one parameter row of a task of this kind (NULL: nothing).
CREATE FUNCTION timetable.parameter_problem(p_kind text, p_command text, p_value jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    bad int;
BEGIN
    IF p_value IS NULL OR jsonb_typeof(p_value) = 'null' THEN
        RETURN NULL;
    END IF;
    IF p_kind = 'SQL' THEN
        IF jsonb_typeof(p_value) <> 'array' THEN
            RETURN format('an SQL task''s parameter row must be a JSON array of values for $1..$n, not %s%s',
                          timetable._json_kind(p_value),
                          CASE WHEN jsonb_typeof(p_value) IN ('string', 'number', 'boolean')
                               THEN format(' (write [%s] for one argument)', p_value::text) ELSE '' END);
        END IF;
    ELSIF p_kind = 'PROGRAM' THEN
        IF jsonb_typeof(p_value) <> 'array' THEN
            RETURN format('a PROGRAM task''s parameter row must be a JSON array of strings (the arguments), not %s',
                          timetable._json_kind(p_value));
        END IF;
        SELECT min(i) - 1 INTO bad FROM jsonb_array_elements(p_value) WITH ORDINALITY e(v, i)
         WHERE jsonb_typeof(e.v) <> 'string';
        IF bad IS NOT NULL THEN
            RETURN format('a PROGRAM task''s parameter row must be a JSON array of strings (the arguments): element %s is %s',
                          bad, timetable._json_kind(p_value -> bad));
        END IF;
    ELSIF p_kind = 'BUILTIN' THEN
        IF p_command = 'Sleep' THEN
            IF NOT ((jsonb_typeof(p_value) = 'number' AND p_value::text ~ '^[0-9]+$')
                    OR (jsonb_typeof(p_value) = 'string' AND (p_value #>> '{}') ~ '^\s*\+?[0-9]+\s*$')) THEN
                RETURN format('Sleep needs a whole number of seconds >= 0, not %s', p_value::text);
            END IF;
        ELSIF p_command IN ('SendMail', 'Download', 'CopyFromFile', 'CopyToFile', 'CopyToProgram', 'CopyFromProgram')
              AND jsonb_typeof(p_value) <> 'object' THEN
            RETURN format('%s needs a JSON object, not %s', p_command, timetable._json_kind(p_value));
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION timetable._chain_input_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ins boolean := TG_OP = 'INSERT';
    problem text;
BEGIN
    IF ins OR NEW.chain_name IS DISTINCT FROM OLD.chain_name THEN
        problem := timetable.name_problem(NEW.chain_name);
        IF problem IS NOT NULL THEN PERFORM timetable._refuse('chain_name', problem); END IF;
    END IF;
    IF ins OR NEW.client_name IS DISTINCT FROM OLD.client_name THEN
        problem := timetable.name_problem(NEW.client_name);
        IF problem = 'must not be empty' THEN
            problem := 'must not be empty (NULL: any engine may run the chain)';
        END IF;
        IF problem IS NOT NULL THEN PERFORM timetable._refuse('client_name', problem); END IF;
    END IF;
    IF ins OR NEW.run_at IS DISTINCT FROM OLD.run_at THEN
        problem := timetable.run_at_problem(NEW.run_at);
        IF problem IS NOT NULL THEN PERFORM timetable._refuse('run_at', problem); END IF;
    END IF;
    IF (ins OR NEW.max_instances IS DISTINCT FROM OLD.max_instances) AND NEW.max_instances < 1 THEN
        PERFORM timetable._refuse('max_instances', format('%s: must be 1 or more (NULL: the engine default, 16)',
                                                          NEW.max_instances));
    END IF;
    IF (ins OR NEW.timeout IS DISTINCT FROM OLD.timeout) AND NEW.timeout < 0 THEN
        PERFORM timetable._refuse('timeout', format('%s: must be 0 (the --chain-timeout default) or a positive number of milliseconds',
                                                    NEW.timeout));
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER chain_input_check BEFORE INSERT OR UPDATE ON timetable.chain
    FOR EACH ROW EXECUTE FUNCTION timetable._chain_input_check();

CREATE FUNCTION timetable._task_input_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ins boolean := TG_OP = 'INSERT';
    problem text;
BEGIN
    IF ins OR NEW.command IS DISTINCT FROM OLD.command OR NEW.kind IS DISTINCT FROM OLD.kind THEN
        IF NEW.command ~ '^\s*$' THEN
            PERFORM timetable._refuse('command', 'must not be empty');
        END IF;
        IF NEW.kind = 'BUILTIN' AND NOT NEW.command = ANY(timetable.builtin_names()) THEN
            PERFORM timetable._refuse('command', format('unknown builtin %s (choose from %s)', quote_literal(NEW.command),
                                                        array_to_string(timetable.builtin_names(), ', ')));
        END IF;
    END IF;
    IF ins OR NEW.task_name IS DISTINCT FROM OLD.task_name THEN
        problem := timetable.name_problem(NEW.task_name, true);
        IF problem IS NOT NULL THEN PERFORM timetable._refuse('task_name', problem); END IF;
    END IF;
    IF (ins OR NEW.timeout IS DISTINCT FROM OLD.timeout) AND NEW.timeout < 0 THEN
        PERFORM timetable._refuse('timeout', format('%s: must be 0 (the --task-timeout default) or a positive number of milliseconds',
                                                    NEW.timeout));
    END IF;
    IF (ins OR NEW.run_as IS DISTINCT FROM OLD.run_as) AND NEW.run_as <> ''
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.run_as) THEN
        RAISE WARNING '%', format('run_as: role "%s" does not exist: the task will fail when it runs', NEW.run_as);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER task_input_check BEFORE INSERT OR UPDATE ON timetable.task
    FOR EACH ROW EXECUTE FUNCTION timetable._task_input_check();

CREATE FUNCTION timetable._parameter_input_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    problem text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.value IS NOT DISTINCT FROM OLD.value AND NEW.task_id = OLD.task_id THEN
        RETURN NEW;
    END IF;
    SELECT kind::text AS kind, command INTO t FROM timetable.task WHERE task_id = NEW.task_id;
    IF FOUND THEN
        problem := timetable.parameter_problem(t.kind, t.command, NEW.value);
        IF problem IS NOT NULL THEN
            PERFORM timetable._refuse(format('value (task %s, order_id %s)', NEW.task_id, NEW.order_id), problem);
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER parameter_input_check BEFORE INSERT OR UPDATE ON timetable.parameter
    FOR EACH ROW EXECUTE FUNCTION timetable._parameter_input_check();
