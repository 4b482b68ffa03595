-- schedule: the pgpro_scheduler-compatible API (plain SQL + PL/pgSQL, no C, no preload).
--
-- The engine (pgtt-tui worker, service "schedule", engine/schedule/manager.py) plans and
-- runs the jobs; everything it needs is in these tables, so any number of engines may
-- serve one database and a restart loses nothing.
--
-- Security model (fixes pgpro_scheduler 2.1, which let anyone run jobs as any role):
--  * every API function is SECURITY DEFINER with a pinned search_path; the tables are not
--    granted to PUBLIC;
--  * the caller is the *effective* role of the calling session: the SET ROLE value if one
--    is set, else session_user (schedule._caller()).  So a job that runs as "robot" and
--    calls submit_job() acts as robot, not as the engine's login role;
--  * a non-superuser sees and changes only jobs they own; run_as needs membership in that
--    role (pg_has_role ... 'MEMBER') or superuser;
--  * functions the documentation reserves for superusers raise SQLSTATE 42501 with a
--    message naming the function.

CREATE SCHEMA schedule;
COMMENT ON SCHEMA schedule IS 'pgtt-tui: pgpro_scheduler-compatible jobs (cron/rule/dates, one-time jobs)';
REVOKE ALL ON SCHEMA schedule FROM PUBLIC;
GRANT USAGE ON SCHEMA schedule TO PUBLIC;

-- ---------------------------------------------------------------------------------------
-- Types
-- ---------------------------------------------------------------------------------------
CREATE TYPE schedule.job_status_t AS ENUM ('working', 'done', 'error');
CREATE TYPE schedule.job_at_status_t AS ENUM ('submitted', 'processing', 'done');
CREATE TYPE schedule.timetable_job_type_t AS ENUM ('periodical', 'onetime');
CREATE TYPE schedule.timetable_job_status_t AS ENUM ('inprogress', 'done', 'error', 'submitted');

CREATE TYPE schedule.cron_rec AS (
    id integer,
    node text,
    name text,
    comments text,
    rule jsonb,
    commands text[],
    run_as text,
    owner text,
    start_date timestamptz,
    end_date timestamptz,
    use_same_transaction boolean,
    last_start_available interval,
    max_run_time interval,
    onrollback text,
    max_instances int,
    next_time_statement text,
    active boolean,
    broken boolean
);

-- last_start_available is the absolute deadline of the run (timestamptz; the manual
-- prints "timestamp", pgpro_scheduler 2.1 uses timestamptz).
CREATE TYPE schedule.cron_job AS (
    cron integer,
    node text,
    scheduled_at timestamptz,
    name text,
    comments text,
    commands text[],
    run_as text,
    owner text,
    use_same_transaction boolean,
    started timestamptz,
    last_start_available timestamptz,
    finished timestamptz,
    max_run_time interval,
    onrollback text,
    next_time_statement text,
    max_instances int,
    status schedule.job_status_t,
    message text
);

-- ---------------------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------------------

-- Scheduled ("cron") jobs.  rule holds the schedule as pgpro does: the rule keys
-- (seconds ... wdays, onstart, onlastday), "crontab" (the cron string) and "dates"
-- (absolute timestamps with their UTC offset, so a client/server TimeZone mismatch
-- cannot shift them).
CREATE TABLE schedule.cron (
    id                   serial PRIMARY KEY,
    node                 text        NOT NULL,
    name                 text,
    comments             text,
    rule                 jsonb       NOT NULL,
    commands             text[]      NOT NULL CHECK (cardinality(commands) > 0),
    same_transaction     boolean     NOT NULL DEFAULT false,
    onrollback           text,
    next_time_statement  text,
    active               boolean     NOT NULL DEFAULT true,
    broken               boolean     NOT NULL DEFAULT false,
    reason               text,
    executor             text        NOT NULL,
    owner                text        NOT NULL,
    postpone             interval,            -- last_start_available
    max_run_time         interval,
    max_instances        integer     NOT NULL DEFAULT 1 CHECK (max_instances >= 1),
    start_date           timestamptz,
    end_date             timestamptz,
    tz                   text        NOT NULL DEFAULT 'UTC',   -- IANA zone the rule/cron is read in
    missed               text        NOT NULL DEFAULT 'once' CHECK (missed IN ('once', 'skip')),
    created_at           timestamptz NOT NULL DEFAULT now(),
    changed_at           timestamptz NOT NULL DEFAULT now(),
    def_version          integer     NOT NULL DEFAULT 1,       -- bumped on every definition change
    -- engine bookkeeping (never part of the definition / history)
    next_run             timestamptz,          -- next planned firing (NULL: to be computed)
    planned_version      integer     NOT NULL DEFAULT 0,       -- def_version next_run was computed for
    chain_next           timestamptz,          -- value returned by next_time_statement
    chain_state          text        NOT NULL DEFAULT 'schedule'
                         CHECK (chain_state IN ('schedule', 'chain', 'wait', 'recompute')),
    onstart_epoch        bigint      NOT NULL DEFAULT 0
);
CREATE INDEX cron_owner_idx ON schedule.cron (owner);
CREATE INDEX cron_executor_idx ON schedule.cron (executor);
COMMENT ON TABLE schedule.cron IS 'pgtt-tui schedule: scheduled jobs (use the schedule.* functions, not this table)';

-- Runs of scheduled jobs: planned, working and finished (pgpro's "at" + "log" in one table).
-- (cron, scheduled_at) is unique: two engines can never both plan or run one firing.
CREATE TABLE schedule.cron_run (
    run_id        bigserial PRIMARY KEY,
    cron          integer     NOT NULL,
    node          text        NOT NULL,
    scheduled_at  timestamptz NOT NULL,
    deadline      timestamptz,              -- scheduled_at + last_start_available
    state         text        NOT NULL DEFAULT 'planned'
                  CHECK (state IN ('planned', 'working', 'done', 'error')),
    started       timestamptz,
    finished      timestamptz,
    message       text,
    catch_up      boolean     NOT NULL DEFAULT false,
    pid           integer,
    backend_start timestamptz,
    engine        text,
    stop_requested text,
    UNIQUE (cron, scheduled_at)
);
CREATE INDEX cron_run_open_idx ON schedule.cron_run (state, scheduled_at) WHERE state IN ('planned', 'working');
CREATE INDEX cron_run_finished_idx ON schedule.cron_run (finished) WHERE state IN ('done', 'error');

-- One-time jobs (pgpro's at_jobs_submitted / _process / _done in one table; the id stays).
CREATE TABLE schedule.at_job (
    id                bigserial PRIMARY KEY,
    node              text        NOT NULL,
    name              text,
    comments          text,
    run_after         timestamptz,
    query             text        NOT NULL,
    params            text[],
    depends_on        bigint[],
    executor          text        NOT NULL,
    owner             text        NOT NULL,
    attempt           bigint      NOT NULL DEFAULT 0,
    resubmit_limit    bigint      NOT NULL DEFAULT 100,
    max_wait_interval interval,
    max_duration      interval,
    submit_time       timestamptz NOT NULL DEFAULT now(),
    canceled          boolean     NOT NULL DEFAULT false,
    start_time        timestamptz,
    is_success        boolean,
    error             text,
    done_time         timestamptz,
    status            schedule.job_at_status_t NOT NULL DEFAULT 'submitted',
    pid               integer,
    backend_start     timestamptz,
    engine            text,
    stop_requested    text
);
CREATE INDEX at_job_open_idx ON schedule.at_job (status, run_after) WHERE status <> 'done';
CREATE INDEX at_job_owner_idx ON schedule.at_job (owner);

-- Audit (filled while schedule.enable_history is on; never cleaned).
CREATE TABLE schedule.cron__history (
    id integer, node text, name text, comments text, rule jsonb, commands text[], run_as text, owner text,
    start_date timestamptz, end_date timestamptz, use_same_transaction boolean, last_start_available interval,
    max_run_time interval, onrollback text, max_instances int, next_time_statement text, active boolean,
    broken boolean,
    submitter   text        NOT NULL,
    version_id  bigserial   PRIMARY KEY,
    submit_time timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE schedule.cron__deleted (
    cron        integer     NOT NULL,
    submitter   text        NOT NULL,
    submit_time timestamptz NOT NULL DEFAULT now()
);

-- Per-database scheduler switches (enable/disable, start/stop) and the onstart epoch.
CREATE TABLE schedule.manager_state (
    singleton     boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    enabled       boolean     NOT NULL DEFAULT false,
    started       boolean     NOT NULL DEFAULT true,
    start_epoch   bigint      NOT NULL DEFAULT 0,   -- bumped by enable()/start(): onstart jobs fire again
    changed_at    timestamptz NOT NULL DEFAULT now(),
    changed_by    text        NOT NULL DEFAULT current_user
);
INSERT INTO schedule.manager_state DEFAULT VALUES;

-- Upcoming firings computed by the engine's evaluator (engine/schedules.py), so that
-- schedule.timetable() can show the future without a second evaluator in SQL.
CREATE TABLE schedule.cron_forecast (
    cron         integer     NOT NULL,
    fire_at      timestamptz NOT NULL,
    PRIMARY KEY (cron, fire_at)
);
CREATE TABLE schedule.cron_forecast_state (
    cron         integer     PRIMARY KEY,
    def_version  integer     NOT NULL,
    horizon      timestamptz NOT NULL
);

REVOKE ALL ON ALL TABLES IN SCHEMA schedule FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA schedule FROM PUBLIC;

-- ---------------------------------------------------------------------------------------
-- Internal helpers
-- ---------------------------------------------------------------------------------------

-- The effective role of the calling session (SET ROLE if set, else the login role).
-- Inside SECURITY DEFINER functions current_user is the definer, so we read the GUC.
CREATE FUNCTION schedule._caller() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT CASE WHEN coalesce(current_setting('role', true), 'none') IN ('none', '')
                THEN session_user::text ELSE current_setting('role') END
$$;

CREATE FUNCTION schedule._is_superuser(p_role text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = p_role), false)
$$;

CREATE FUNCTION schedule._only_superuser(p_function text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN
    IF NOT schedule._is_superuser(schedule._caller()) THEN
        RAISE EXCEPTION 'schedule.%: only a superuser may call this function (you are "%")',
            p_function, schedule._caller() USING ERRCODE = '42501';
    END IF;
END $$;

-- A user may see/change another user's data only as superuser.
CREATE FUNCTION schedule._check_user_arg(p_function text, p_user text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    me text := schedule._caller();
BEGIN
    IF p_user IS NULL OR p_user = me THEN
        RETURN me;
    END IF;
    IF NOT schedule._is_superuser(me) THEN
        RAISE EXCEPTION 'schedule.%: only a superuser may look at the jobs of another user ("%")',
            p_function, p_user USING ERRCODE = '42501';
    END IF;
    RETURN p_user;
END $$;

CREATE FUNCTION schedule.nodename() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT coalesce(nullif(current_setting('schedule.nodename', true), ''), 'primary')
$$;

CREATE FUNCTION schedule._setting_bool(p_name text, p_default boolean) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    v text := nullif(current_setting(p_name, true), '');
BEGIN
    IF v IS NULL THEN RETURN p_default; END IF;
    RETURN v::boolean;
EXCEPTION WHEN invalid_text_representation THEN
    RAISE EXCEPTION '%: % is not a boolean (use on/off)', p_name, quote_literal(v) USING ERRCODE = '22023';
END $$;

-- Cron syntax check: accepts exactly what engine/schedules.py CronExpr.parse accepts
-- (tests/test_schedule_parity.py compares the two on a corpus).  Returns NULL when
-- the text is valid, else "field: problem".
CREATE FUNCTION schedule._cron_problem(p_text text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    src text := btrim(coalesce(p_text, ''), E' \t\n\r\f\v');
    parts text[];
    names text[] := ARRAY['minute', 'hour', 'day of month', 'month', 'day of week'];
    lows int[] := ARRAY[0, 0, 1, 1, 0];
    highs int[] := ARRAY[59, 23, 31, 12, 7];
    ordinals text[] := ARRAY['1st', '2nd', '3rd', '4th', '5th', '6th'];
    months text[] := ARRAY['JAN','FEB','MAR','APR','MAY','JUN','JUL','AUG','SEP','OCT','NOV','DEC'];
    wdays text[] := ARRAY['SUN','MON','TUE','WED','THU','FRI','SAT'];
    maxdays int[] := ARRAY[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    n int; i int; f int; fname text; where_ text;
    item text; base text; step_text text; a text; b text;
    lo int; hi int; st int; v int;
    vals int[]; dom_vals int[]; month_vals int[]; dom_last boolean; ok boolean;
BEGIN
    IF src = '' THEN
        RETURN 'cron: empty expression; expected 5 fields (minute hour day-of-month month day-of-week), '
               '6 with leading seconds, or a macro such as @daily';
    END IF;
    IF left(src, 1) = '@' THEN
        IF lower(src) IN ('@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly',
                          '@every_minute', '@every_second', '@reboot') THEN
            RETURN NULL;
        END IF;
        RETURN format('cron: unknown keyword %L; known: @yearly, @annually, @monthly, @weekly, @daily, '
                      '@midnight, @hourly, @every_minute, @every_second, @reboot', src);
    END IF;
    parts := regexp_split_to_array(src, E'[ \t\n\r\f\v]+');
    n := cardinality(parts);
    IF n NOT IN (5, 6) THEN
        RETURN format('cron: expected 5 fields (minute hour day-of-month month day-of-week) or 6 '
                      '(with leading seconds), got %s in %L', n, src);
    END IF;
    IF n = 6 THEN
        names := ARRAY['second'] || names; lows := ARRAY[0] || lows; highs := ARRAY[59] || highs;
    END IF;
    FOR i IN 1..n LOOP
        fname := names[i];
        where_ := format('%s (cron field "%s", %s)', fname, fname, ordinals[i]);
        vals := '{}';
        dom_last := false;
        FOREACH item IN ARRAY string_to_array(parts[i], ',') LOOP
            IF item = '' THEN
                RETURN format('%s: empty item in list %L', where_, parts[i]);
            END IF;
            IF upper(item) = 'L' THEN
                IF fname <> 'day of month' THEN
                    RETURN where_ || ': L (last day of month) is only allowed in the day-of-month field';
                END IF;
                dom_last := true;
                CONTINUE;
            END IF;
            IF strpos(item, '/') > 0 THEN
                base := split_part(item, '/', 1);
                step_text := substr(item, strpos(item, '/') + 1);
                IF step_text !~ '^[0-9]+$' THEN
                    RETURN format('%s: step %L is not a positive whole number', where_, step_text);
                END IF;
                IF step_text::numeric = 0 THEN
                    RETURN where_ || ': step 0 is not allowed (use a step of 1 or more)';
                END IF;
                st := least(step_text::numeric, 1000)::int;
            ELSE
                base := item; step_text := NULL; st := 1;
            END IF;
            IF base = '*' THEN
                lo := lows[i]; hi := highs[i];
            ELSIF strpos(base, '-') > 0 THEN
                a := split_part(base, '-', 1);
                b := substr(base, strpos(base, '-') + 1);
                FOREACH base IN ARRAY ARRAY[a, b] LOOP
                    -- value check (shared with the single-value branch below)
                    IF base ~ '^[0-9]+$' THEN
                        IF base::numeric < lows[i] OR base::numeric > highs[i] THEN
                            RETURN format('%s: %s is out of range %s-%s', where_, base::numeric, lows[i], highs[i]);
                        END IF;
                    ELSIF (fname = 'month' AND upper(base) = ANY (months))
                       OR (fname = 'day of week' AND upper(base) = ANY (wdays)) THEN
                        NULL;
                    ELSIF upper(base) = 'L' THEN
                        IF fname = 'day of month' THEN
                            RETURN where_ || ': L (last day of month) cannot be part of a range or step';
                        END IF;
                        RETURN where_ || ': L (last day of month) is only allowed in the day-of-month field';
                    ELSIF base = '' THEN
                        RETURN where_ || ': missing number';
                    ELSE
                        RETURN format('%s: %L is not %s', where_, base, CASE fname
                            WHEN 'month' THEN 'a month name or number 1-12'
                            WHEN 'day of week' THEN 'a day name or number 0-7'
                            ELSE format('a number %s-%s', lows[i], highs[i]) END);
                    END IF;
                END LOOP;
                lo := CASE WHEN a ~ '^[0-9]+$' THEN a::int
                           WHEN fname = 'month' THEN array_position(months, upper(a))
                           ELSE array_position(wdays, upper(a)) - 1 END;
                hi := CASE WHEN b ~ '^[0-9]+$' THEN b::int
                           WHEN fname = 'month' THEN array_position(months, upper(b))
                           ELSE array_position(wdays, upper(b)) - 1 END;
                IF lo > hi THEN
                    RETURN format('%s: range %s-%s is reversed (start is after end)', where_, a, b);
                END IF;
            ELSE
                IF base ~ '^[0-9]+$' THEN
                    IF base::numeric < lows[i] OR base::numeric > highs[i] THEN
                        RETURN format('%s: %s is out of range %s-%s', where_, base::numeric, lows[i], highs[i]);
                    END IF;
                    lo := base::int;
                ELSIF fname = 'month' AND upper(base) = ANY (months) THEN
                    lo := array_position(months, upper(base));
                ELSIF fname = 'day of week' AND upper(base) = ANY (wdays) THEN
                    lo := array_position(wdays, upper(base)) - 1;
                ELSIF upper(base) = 'L' THEN
                    IF fname = 'day of month' THEN
                        RETURN where_ || ': L (last day of month) cannot be part of a range or step';
                    END IF;
                    RETURN where_ || ': L (last day of month) is only allowed in the day-of-month field';
                ELSIF base = '' THEN
                    RETURN where_ || ': missing number';
                ELSE
                    RETURN format('%s: %L is not %s', where_, base, CASE fname
                        WHEN 'month' THEN 'a month name or number 1-12'
                        WHEN 'day of week' THEN 'a day name or number 0-7'
                        ELSE format('a number %s-%s', lows[i], highs[i]) END);
                END IF;
                hi := CASE WHEN step_text IS NOT NULL THEN highs[i] ELSE lo END;
            END IF;
            SELECT vals || array_agg(g) INTO vals FROM generate_series(lo, hi, st) g;
        END LOOP;
        IF fname = 'day of month' THEN
            dom_vals := vals;
            ok := dom_last;
        ELSIF fname = 'month' THEN
            month_vals := vals;
        END IF;
    END LOOP;
    -- a day-of-month set that occurs in none of the months (weekday "*", no L) never fires
    IF parts[n] = '*' AND NOT ok AND cardinality(dom_vals) > 0 THEN
        IF NOT EXISTS (SELECT 1 FROM unnest(dom_vals) d, unnest(month_vals) m WHERE d <= maxdays[m]) THEN
            RETURN format('day of month (cron field "day of month", %s): %s %s in month%s %s',
                ordinals[n - 2],
                (SELECT string_agg(d::text, ',' ORDER BY d) FROM (SELECT DISTINCT d FROM unnest(dom_vals) d) s),
                CASE WHEN (SELECT count(DISTINCT d) FROM unnest(dom_vals) d) = 1 THEN 'never occurs' ELSE 'never occur' END,
                CASE WHEN (SELECT count(DISTINCT m) FROM unnest(month_vals) m) > 1 THEN 's' ELSE '' END,
                (SELECT string_agg(m::text, ',' ORDER BY m) FROM (SELECT DISTINCT m FROM unnest(month_vals) m) s));
        END IF;
    END IF;
    RETURN NULL;
END $$;

-- Validate a rule object; returns the object (numeric strings turned into numbers).
CREATE FUNCTION schedule._check_rule(p_rule jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    k text; v jsonb; el jsonb; n numeric; lo int; hi int; out_ jsonb := '{}'; arr jsonb; has_time boolean := false;
    problem text;
BEGIN
    IF jsonb_typeof(p_rule) <> 'object' THEN
        RAISE EXCEPTION 'rule: expected a JSON object, got %', jsonb_typeof(p_rule) USING ERRCODE = '22023';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(p_rule) LOOP
        IF k IN ('seconds', 'minutes', 'hours', 'days', 'months', 'wdays') THEN
            lo := CASE k WHEN 'days' THEN 1 WHEN 'months' THEN 1 ELSE 0 END;
            hi := CASE k WHEN 'seconds' THEN 59 WHEN 'minutes' THEN 59 WHEN 'hours' THEN 23
                         WHEN 'days' THEN 31 WHEN 'months' THEN 12 ELSE 6 END;
            IF jsonb_typeof(v) <> 'array' THEN
                RAISE EXCEPTION 'rule.%: expected a list of integers %-%, got %', k, lo, hi, jsonb_typeof(v)
                    USING ERRCODE = '22023';
            END IF;
            IF jsonb_array_length(v) = 0 THEN
                RAISE EXCEPTION 'rule.%: empty list never fires; omit the key to mean every value', k
                    USING ERRCODE = '22023';
            END IF;
            arr := '[]';
            FOR el IN SELECT * FROM jsonb_array_elements(v) LOOP
                IF jsonb_typeof(el) = 'string' AND btrim(el #>> '{}') ~ '^[0-9]+$' THEN
                    n := btrim(el #>> '{}')::numeric;
                ELSIF jsonb_typeof(el) = 'number' AND (el #>> '{}')::numeric = trunc((el #>> '{}')::numeric)
                      AND (el #>> '{}') !~ '[.eE]' THEN
                    n := (el #>> '{}')::numeric;
                ELSE
                    RAISE EXCEPTION 'rule.%: item % is not an integer', k, el USING ERRCODE = '22023';
                END IF;
                IF n < lo OR n > hi THEN
                    RAISE EXCEPTION 'rule.%: % is out of range %-%', k, n, lo, hi USING ERRCODE = '22023';
                END IF;
                arr := arr || to_jsonb(n::int);
            END LOOP;
            out_ := out_ || jsonb_build_object(k, arr);
            has_time := true;
        ELSIF k IN ('onstart', 'onlastday') THEN
            IF NOT (jsonb_typeof(v) = 'boolean' OR v IN ('0'::jsonb, '1'::jsonb)) THEN
                RAISE EXCEPTION 'rule.%: expected true/false or 0/1, got %', k, v USING ERRCODE = '22023';
            END IF;
            out_ := out_ || jsonb_build_object(k, v);
            IF k = 'onlastday' AND v IN ('true'::jsonb, '1'::jsonb) THEN has_time := true; END IF;
        ELSIF k = 'crontab' THEN
            IF jsonb_typeof(v) <> 'string' THEN
                RAISE EXCEPTION 'rule.crontab: expected a cron string, got %', jsonb_typeof(v) USING ERRCODE = '22023';
            END IF;
            problem := schedule._cron_problem(v #>> '{}');
            IF problem IS NOT NULL THEN
                RAISE EXCEPTION 'rule.crontab: %', problem USING ERRCODE = '22023';
            END IF;
            out_ := out_ || jsonb_build_object(k, v);
        ELSE
            RAISE EXCEPTION 'rule.%: unknown key; expected one of seconds, minutes, hours, days, months, wdays, '
                            'onlastday, onstart, crontab', k USING ERRCODE = '22023';
        END IF;
    END LOOP;
    IF NOT has_time AND NOT (out_ ? 'crontab') AND coalesce(out_ -> 'onstart', '0') NOT IN ('1', 'true') THEN
        RAISE EXCEPTION 'rule: no schedule in rule; give at least one of seconds, minutes, hours, days, months, '
                        'wdays, onlastday, crontab or onstart: 1' USING ERRCODE = '22023';
    END IF;
    IF has_time AND out_ ? 'days' AND coalesce(out_ -> 'onlastday', 'false') NOT IN ('1', 'true') THEN
        IF NOT EXISTS (
            SELECT 1 FROM jsonb_array_elements_text(out_ -> 'days') d,
                 jsonb_array_elements_text(coalesce(out_ -> 'months', '[1,2,3,4,5,6,7,8,9,10,11,12]')) m
            WHERE d::int <= (ARRAY[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[m::int]) THEN
            RAISE EXCEPTION 'rule.days: these days never occur in the given months' USING ERRCODE = '22023';
        END IF;
    END IF;
    RETURN out_;
END $$;

CREATE FUNCTION schedule._interval_attr(p_attrs jsonb, p_key text) RETURNS interval
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    v interval;
BEGIN
    IF NOT p_attrs ? p_key OR jsonb_typeof(p_attrs -> p_key) = 'null' OR (p_attrs ->> p_key) = '' THEN
        RETURN NULL;
    END IF;
    v := (p_attrs ->> p_key)::interval;
    IF v < interval '0' THEN
        RAISE EXCEPTION '%: % is negative', p_key, p_attrs ->> p_key USING ERRCODE = '22023';
    END IF;
    RETURN v;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow
          OR invalid_text_representation THEN
    RAISE EXCEPTION '%: % is not an interval (e.g. ''30 seconds'')', p_key, p_attrs ->> p_key USING ERRCODE = '22023';
END $$;

CREATE FUNCTION schedule._ts_attr(p_value jsonb, p_key text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN
    IF p_value IS NULL OR jsonb_typeof(p_value) = 'null' OR (p_value #>> '{}') = '' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_value) <> 'string' THEN
        RAISE EXCEPTION '%: expected a timestamp, got %', p_key, jsonb_typeof(p_value) USING ERRCODE = '22023';
    END IF;
    RETURN (p_value #>> '{}')::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation THEN
    RAISE EXCEPTION '%: % is not a timestamp (e.g. ''2026-12-31 19:00'' or ''2026-12-31 19:00:00+03'')',
        p_key, p_value #>> '{}' USING ERRCODE = '22023';
END $$;

-- run_as: the role must exist and the caller must be allowed to become it.
CREATE FUNCTION schedule._check_run_as(p_role text, p_field text DEFAULT 'run_as') RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    me text := schedule._caller();
BEGIN
    IF p_role IS NULL OR p_role = '' OR p_role = me THEN
        RETURN me;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_role) THEN
        RAISE EXCEPTION '%: role "%" does not exist', p_field, p_role USING ERRCODE = '42704';
    END IF;
    IF NOT schedule._is_superuser(me) AND NOT pg_has_role(me::name, p_role::name, 'MEMBER') THEN
        RAISE EXCEPTION '%: you ("%") may not run jobs as "%": only a superuser or a member of that role may',
            p_field, me, p_role USING ERRCODE = '42501';
    END IF;
    RETURN p_role;
END $$;

CREATE FUNCTION schedule._default_tz() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT coalesce(nullif(current_setting('schedule.timezone', true), ''), current_setting('TimeZone'))
$$;

CREATE FUNCTION schedule._check_tz(p_tz text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = p_tz) THEN
        RAISE EXCEPTION 'tz: unknown time zone "%" (use an IANA name such as Europe/Berlin)', p_tz
            USING ERRCODE = '22023';
    END IF;
    RETURN p_tz;
END $$;

CREATE FUNCTION schedule._possible_args() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['cron', 'dates', 'date', 'rule', 'commands', 'command', 'name', 'node', 'comments', 'run_as',
                 'start_date', 'end_date', 'use_same_transaction', 'last_start_available', 'max_instances',
                 'max_run_time', 'onrollback', 'next_time_statement', 'tz', 'missed']
$$;

-- Build the row for create_job / set_job_attributes: p_old is NULL when creating.
CREATE FUNCTION schedule._apply_attrs(p_old schedule.cron, p_attrs jsonb) RETURNS schedule.cron
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    r schedule.cron;
    k text;
    v jsonb;
    new_rule jsonb;
    dates jsonb;
    problem text;
    cmds text[];
    d timestamptz;
    i int := 0;
BEGIN
    IF p_attrs IS NULL OR jsonb_typeof(p_attrs) <> 'object' THEN
        RAISE EXCEPTION 'options: expected a JSON object with the job''s keys' USING ERRCODE = '22023';
    END IF;
    FOR k IN SELECT jsonb_object_keys(p_attrs) LOOP
        IF NOT k = ANY (schedule._possible_args()) THEN
            RAISE EXCEPTION '%: unknown key; expected one of %', k, array_to_string(schedule._possible_args(), ', ')
                USING ERRCODE = '22023';
        END IF;
    END LOOP;
    IF p_old IS NULL THEN
        r.node := schedule.nodename();
        r.rule := '{}';
        r.same_transaction := false;
        r.active := true;
        r.broken := false;
        r.max_instances := 1;
        r.owner := schedule._caller();
        r.executor := r.owner;
        r.tz := schedule._default_tz();
        r.missed := 'once';
    ELSE
        r := p_old;
    END IF;

    -- schedule: each of cron / rule / dates replaces its own part; the others stay
    new_rule := r.rule;
    IF p_attrs ? 'rule' THEN
        new_rule := new_rule - ARRAY['seconds', 'minutes', 'hours', 'days', 'months', 'wdays', 'onstart', 'onlastday'];
        IF jsonb_typeof(p_attrs -> 'rule') NOT IN ('null') THEN
            v := p_attrs -> 'rule';
            IF jsonb_typeof(v) = 'object' AND v ? 'dates' THEN
                p_attrs := jsonb_set(p_attrs, '{dates}',
                    coalesce(p_attrs -> 'dates', '[]') || CASE WHEN jsonb_typeof(v -> 'dates') = 'array'
                                                               THEN v -> 'dates' ELSE jsonb_build_array(v -> 'dates') END);
                v := v - 'dates';
            END IF;
            IF v ? 'crontab' THEN
                new_rule := new_rule || jsonb_build_object('crontab', v -> 'crontab');
            END IF;
            new_rule := new_rule || (schedule._check_rule(v) - 'crontab');
        END IF;
    END IF;
    IF p_attrs ? 'cron' THEN
        IF jsonb_typeof(p_attrs -> 'cron') = 'null' OR (p_attrs ->> 'cron') = '' THEN
            new_rule := new_rule - 'crontab';
        ELSIF jsonb_typeof(p_attrs -> 'cron') <> 'string' THEN
            RAISE EXCEPTION 'cron: expected a cron string, got %', jsonb_typeof(p_attrs -> 'cron') USING ERRCODE = '22023';
        ELSE
            problem := schedule._cron_problem(p_attrs ->> 'cron');
            IF problem IS NOT NULL THEN
                RAISE EXCEPTION '%', problem USING ERRCODE = '22023';
            END IF;
            new_rule := new_rule || jsonb_build_object('crontab', btrim(p_attrs ->> 'cron', E' \t\n\r\f\v'));
        END IF;
    END IF;
    IF p_attrs ? 'dates' OR p_attrs ? 'date' THEN
        v := coalesce(p_attrs -> 'dates', 'null'::jsonb);
        IF p_attrs ? 'date' AND jsonb_typeof(p_attrs -> 'date') <> 'null' THEN
            v := CASE WHEN jsonb_typeof(v) = 'array' THEN v WHEN jsonb_typeof(v) = 'null' THEN '[]'
                      ELSE jsonb_build_array(v) END || jsonb_build_array(p_attrs -> 'date');
        END IF;
        IF jsonb_typeof(v) = 'null' THEN
            new_rule := new_rule - 'dates';
        ELSE
            IF jsonb_typeof(v) <> 'array' THEN v := jsonb_build_array(v); END IF;
            IF jsonb_array_length(v) = 0 THEN
                RAISE EXCEPTION 'dates: empty list; give at least one timestamp' USING ERRCODE = '22023';
            END IF;
            dates := '[]';
            FOR v IN SELECT * FROM jsonb_array_elements(v) LOOP
                d := schedule._ts_attr(v, format('dates[%s]', i));
                IF d IS NULL THEN
                    RAISE EXCEPTION 'dates[%]: is empty', i USING ERRCODE = '22023';
                END IF;
                dates := dates || to_jsonb(d);
                i := i + 1;
            END LOOP;
            SELECT jsonb_agg(x ORDER BY (x #>> '{}')::timestamptz) INTO dates
            FROM (SELECT DISTINCT x FROM jsonb_array_elements(dates) x) s;
            new_rule := new_rule || jsonb_build_object('dates', dates);
        END IF;
    END IF;
    IF NOT (new_rule ? 'crontab' OR new_rule ? 'dates' OR new_rule ?| ARRAY['seconds', 'minutes', 'hours', 'days',
            'months', 'wdays', 'onstart', 'onlastday']) THEN
        RAISE EXCEPTION 'cron: there is no information about the job''s schedule; give cron, rule or dates'
            USING ERRCODE = '22023';
    END IF;
    r.rule := new_rule;

    -- commands
    IF p_attrs ? 'commands' OR p_attrs ? 'command' THEN
        cmds := '{}';
        FOREACH k IN ARRAY ARRAY['command', 'commands'] LOOP
            v := p_attrs -> k;
            IF v IS NULL OR jsonb_typeof(v) = 'null' THEN CONTINUE; END IF;
            IF jsonb_typeof(v) = 'string' THEN
                cmds := cmds || (v #>> '{}');
            ELSIF jsonb_typeof(v) = 'array' THEN
                IF EXISTS (SELECT 1 FROM jsonb_array_elements(v) e WHERE jsonb_typeof(e) <> 'string') THEN
                    RAISE EXCEPTION '%: every item must be an SQL string', k USING ERRCODE = '22023';
                END IF;
                cmds := cmds || ARRAY(SELECT jsonb_array_elements_text(v));
            ELSE
                RAISE EXCEPTION '%: expected SQL text or an array of SQL texts', k USING ERRCODE = '22023';
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM unnest(cmds) c WHERE btrim(c, E' \t\n\r;') = '') THEN
            RAISE EXCEPTION 'commands: an empty SQL command' USING ERRCODE = '22023';
        END IF;
        r.commands := cmds;
    END IF;
    IF r.commands IS NULL OR cardinality(r.commands) = 0 THEN
        RAISE EXCEPTION 'commands: the job has no SQL commands' USING ERRCODE = '22023';
    END IF;

    IF p_attrs ? 'name' THEN r.name := nullif(p_attrs ->> 'name', ''); END IF;
    IF p_attrs ? 'comments' THEN r.comments := nullif(p_attrs ->> 'comments', ''); END IF;
    IF p_attrs ? 'node' THEN r.node := coalesce(nullif(p_attrs ->> 'node', ''), schedule.nodename()); END IF;
    IF p_attrs ? 'run_as' THEN r.executor := schedule._check_run_as(nullif(p_attrs ->> 'run_as', '')); END IF;
    IF p_attrs ? 'start_date' THEN r.start_date := schedule._ts_attr(p_attrs -> 'start_date', 'start_date'); END IF;
    IF p_attrs ? 'end_date' THEN r.end_date := schedule._ts_attr(p_attrs -> 'end_date', 'end_date'); END IF;
    IF r.start_date IS NOT NULL AND r.end_date IS NOT NULL AND r.end_date < r.start_date THEN
        RAISE EXCEPTION 'end_date: % is before start_date %', r.end_date, r.start_date USING ERRCODE = '22023';
    END IF;
    IF p_attrs ? 'use_same_transaction' THEN
        v := p_attrs -> 'use_same_transaction';
        IF jsonb_typeof(v) = 'boolean' THEN
            r.same_transaction := v::text::boolean;
        ELSIF jsonb_typeof(v) = 'string' AND lower(v #>> '{}') IN ('true', 'false', 't', 'f', 'on', 'off', '1', '0', 'yes', 'no') THEN
            r.same_transaction := (v #>> '{}')::boolean;
        ELSIF jsonb_typeof(v) = 'null' THEN
            r.same_transaction := false;
        ELSE
            RAISE EXCEPTION 'use_same_transaction: expected true or false, got %', v USING ERRCODE = '22023';
        END IF;
    END IF;
    IF p_attrs ? 'last_start_available' THEN r.postpone := schedule._interval_attr(p_attrs, 'last_start_available'); END IF;
    IF p_attrs ? 'max_run_time' THEN r.max_run_time := schedule._interval_attr(p_attrs, 'max_run_time'); END IF;
    IF p_attrs ? 'max_instances' THEN
        v := p_attrs -> 'max_instances';
        IF jsonb_typeof(v) = 'null' THEN
            r.max_instances := 1;
        ELSIF (v #>> '{}') ~ '^\s*[0-9]+\s*$' AND (v #>> '{}')::numeric BETWEEN 1 AND 1000000 THEN
            r.max_instances := (v #>> '{}')::int;
        ELSE
            RAISE EXCEPTION 'max_instances: expected a whole number of at least 1, got %', v USING ERRCODE = '22023';
        END IF;
    END IF;
    IF p_attrs ? 'onrollback' THEN r.onrollback := nullif(p_attrs ->> 'onrollback', ''); END IF;
    IF p_attrs ? 'next_time_statement' THEN r.next_time_statement := nullif(p_attrs ->> 'next_time_statement', ''); END IF;
    IF p_attrs ? 'tz' THEN r.tz := schedule._check_tz(coalesce(nullif(p_attrs ->> 'tz', ''), schedule._default_tz())); END IF;
    IF p_attrs ? 'missed' THEN
        IF (p_attrs ->> 'missed') NOT IN ('once', 'skip') THEN
            RAISE EXCEPTION 'missed: expected ''once'' (run one catch-up run after downtime) or ''skip'', got %',
                p_attrs -> 'missed' USING ERRCODE = '22023';
        END IF;
        r.missed := p_attrs ->> 'missed';
    END IF;
    RETURN r;
END $$;

CREATE FUNCTION schedule._make_cron_rec(c schedule.cron) RETURNS schedule.cron_rec
LANGUAGE sql STABLE AS $$
    SELECT ROW(c.id, c.node, c.name, c.comments, c.rule, c.commands, c.executor, c.owner, c.start_date,
               c.end_date, c.same_transaction, c.postpone, c.max_run_time, c.onrollback, c.max_instances,
               c.next_time_statement, c.active, c.broken)::schedule.cron_rec
$$;

-- A job the caller may change: exists and is theirs (or they are superuser).
CREATE FUNCTION schedule._editable_job(p_id integer, p_function text) RETURNS schedule.cron
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    r schedule.cron;
    me text := schedule._caller();
BEGIN
    SELECT * INTO r FROM schedule.cron WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR (r.owner <> me AND NOT schedule._is_superuser(me)) THEN
        RAISE EXCEPTION 'schedule.%: job % does not exist or is not yours', p_function, p_id
            USING ERRCODE = 'P0002';
    END IF;
    RETURN r;
END $$;

CREATE FUNCTION schedule._notify(p_what text) RETURNS void
LANGUAGE sql AS $$ SELECT pg_notify('pgtt_schedule', p_what) $$;

-- History triggers (schedule.enable_history).
CREATE FUNCTION schedule._history_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    IF NOT schedule._setting_bool('schedule.enable_history', false) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO schedule.cron__deleted (cron, submitter) VALUES (OLD.id, schedule._caller());
    ELSE
        INSERT INTO schedule.cron__history (id, node, name, comments, rule, commands, run_as, owner, start_date,
            end_date, use_same_transaction, last_start_available, max_run_time, onrollback, max_instances,
            next_time_statement, active, broken, submitter)
        SELECT (schedule._make_cron_rec(NEW)).*, schedule._caller();
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER cron_history_ins AFTER INSERT ON schedule.cron
    FOR EACH ROW EXECUTE FUNCTION schedule._history_trigger();
CREATE TRIGGER cron_history_upd AFTER UPDATE ON schedule.cron
    FOR EACH ROW WHEN (OLD.def_version IS DISTINCT FROM NEW.def_version)
    EXECUTE FUNCTION schedule._history_trigger();
CREATE TRIGGER cron_history_del AFTER DELETE ON schedule.cron
    FOR EACH ROW EXECUTE FUNCTION schedule._history_trigger();

-- ---------------------------------------------------------------------------------------
-- Scheduled jobs: create / change / drop / inspect
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION schedule.create_job(options jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r schedule.cron;
BEGIN
    r := schedule._apply_attrs(NULL, options);
    INSERT INTO schedule.cron (node, name, comments, rule, commands, same_transaction, onrollback,
        next_time_statement, active, broken, executor, owner, postpone, max_run_time, max_instances,
        start_date, end_date, tz, missed, onstart_epoch)
    VALUES (r.node, r.name, r.comments, r.rule, r.commands, r.same_transaction, r.onrollback,
        r.next_time_statement, true, false, r.executor, r.owner, r.postpone, r.max_run_time, r.max_instances,
        r.start_date, r.end_date, r.tz, r.missed, (SELECT start_epoch FROM schedule.manager_state))
    RETURNING id INTO r.id;
    PERFORM schedule._notify('cron');
    RETURN r.id;
END $$;

CREATE FUNCTION schedule.create_job(cron text, command text, node text DEFAULT NULL) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT schedule.create_job(jsonb_strip_nulls(jsonb_build_object('cron', cron, 'commands', command, 'node', node)))
$$;
CREATE FUNCTION schedule.create_job(cron text, commands text[], node text DEFAULT NULL) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT schedule.create_job(jsonb_strip_nulls(jsonb_build_object('cron', cron, 'commands', to_jsonb(commands), 'node', node)))
$$;
CREATE FUNCTION schedule.create_job(dt timestamptz, command text, node text DEFAULT NULL) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT schedule.create_job(jsonb_strip_nulls(jsonb_build_object('dates', jsonb_build_array(dt), 'commands', command, 'node', node)))
$$;
CREATE FUNCTION schedule.create_job(dt timestamptz, commands text[], node text DEFAULT NULL) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT schedule.create_job(jsonb_strip_nulls(jsonb_build_object('dates', jsonb_build_array(dt), 'commands', to_jsonb(commands), 'node', node)))
$$;
CREATE FUNCTION schedule.create_job(dts timestamptz[], command text, node text DEFAULT NULL) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT schedule.create_job(jsonb_strip_nulls(jsonb_build_object('dates', to_jsonb(dts), 'commands', command, 'node', node)))
$$;
CREATE FUNCTION schedule.create_job(dts timestamptz[], commands text[], node text DEFAULT NULL) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT schedule.create_job(jsonb_strip_nulls(jsonb_build_object('dates', to_jsonb(dts), 'commands', to_jsonb(commands), 'node', node)))
$$;

CREATE FUNCTION schedule.set_job_attributes(job_id integer, data jsonb) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_ schedule.cron;
    r schedule.cron;
BEGIN
    old_ := schedule._editable_job(job_id, 'set_job_attributes');
    IF data IS NULL OR data = '{}'::jsonb THEN
        RETURN false;
    END IF;
    r := schedule._apply_attrs(old_, data);
    IF (schedule._make_cron_rec(r), r.tz, r.missed) IS NOT DISTINCT FROM (schedule._make_cron_rec(old_), old_.tz, old_.missed) THEN
        RETURN false;
    END IF;
    UPDATE schedule.cron SET node = r.node, name = r.name, comments = r.comments, rule = r.rule,
        commands = r.commands, same_transaction = r.same_transaction, onrollback = r.onrollback,
        next_time_statement = r.next_time_statement, executor = r.executor, postpone = r.postpone,
        max_run_time = r.max_run_time, max_instances = r.max_instances, start_date = r.start_date,
        end_date = r.end_date, tz = r.tz, missed = r.missed,
        changed_at = now(), def_version = def_version + 1,
        chain_state = CASE WHEN r.rule IS DISTINCT FROM old_.rule OR r.start_date IS DISTINCT FROM old_.start_date
                                OR r.tz IS DISTINCT FROM old_.tz
                                OR r.next_time_statement IS DISTINCT FROM old_.next_time_statement
                           THEN 'schedule' ELSE chain_state END
    WHERE id = job_id;
    -- planned (not yet started) runs follow the new definition
    DELETE FROM schedule.cron_run WHERE cron = job_id AND state = 'planned';
    UPDATE schedule.cron SET next_run = NULL WHERE id = job_id AND chain_state = 'schedule';
    PERFORM schedule._notify('cron');
    RETURN true;
END $$;

CREATE FUNCTION schedule._attr_to_jsonb(p_name text, p_value text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN
    IF p_value IS NULL THEN
        RETURN 'null';
    END IF;
    IF p_name = 'rule' THEN
        RETURN p_value::jsonb;
    ELSIF p_name IN ('use_same_transaction') THEN
        RETURN to_jsonb(p_value);
    ELSIF p_name = 'max_instances' THEN
        RETURN to_jsonb(p_value);
    ELSIF p_name IN ('dates', 'commands') AND left(btrim(p_value), 1) = '{' THEN
        -- an array literal passed as text
        RETURN CASE p_name WHEN 'dates' THEN to_jsonb(p_value::timestamptz[]) ELSE to_jsonb(p_value::text[]) END;
    END IF;
    RETURN to_jsonb(p_value);
EXCEPTION WHEN invalid_text_representation OR invalid_datetime_format THEN
    RAISE EXCEPTION '%: % is not a valid value', p_name, quote_literal(p_value) USING ERRCODE = '22023';
END $$;

CREATE FUNCTION schedule.set_job_attribute(job_id integer, name text, value text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL OR NOT name = ANY (schedule._possible_args()) THEN
        RAISE EXCEPTION 'name: unknown attribute %; expected one of %', quote_nullable(name),
            array_to_string(schedule._possible_args(), ', ') USING ERRCODE = '22023';
    END IF;
    RETURN schedule.set_job_attributes(job_id, jsonb_build_object(name, schedule._attr_to_jsonb(name, value)));
END $$;

CREATE FUNCTION schedule.set_job_attribute(job_id integer, name text, value anyarray) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name NOT IN ('dates', 'commands') THEN
        RAISE EXCEPTION 'name: only dates and commands take an array value (got %)', quote_nullable(name)
            USING ERRCODE = '22023';
    END IF;
    RETURN schedule.set_job_attributes(job_id, jsonb_build_object(name, to_jsonb(value)));
END $$;

CREATE FUNCTION schedule.set_job_attribute(job_id integer, name text, value jsonb) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF name IS NULL OR NOT name = ANY (schedule._possible_args()) THEN
        RAISE EXCEPTION 'name: unknown attribute %', quote_nullable(name) USING ERRCODE = '22023';
    END IF;
    RETURN schedule.set_job_attributes(job_id, jsonb_build_object(name, value));
END $$;

CREATE FUNCTION schedule.activate_job(job_id integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r schedule.cron := schedule._editable_job(job_id, 'activate_job');
BEGIN
    IF r.active AND NOT r.broken THEN
        RETURN true;
    END IF;
    UPDATE schedule.cron SET active = true, broken = false, reason = NULL, next_run = NULL,
        chain_state = 'schedule', changed_at = now(), def_version = def_version + 1 WHERE id = job_id;
    PERFORM schedule._notify('cron');
    RETURN true;
END $$;

CREATE FUNCTION schedule.deactivate_job(job_id integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r schedule.cron := schedule._editable_job(job_id, 'deactivate_job');
BEGIN
    IF r.active THEN
        UPDATE schedule.cron SET active = false, next_run = NULL, changed_at = now(), def_version = def_version + 1
        WHERE id = job_id;
    END IF;
    DELETE FROM schedule.cron_run WHERE cron = job_id AND state = 'planned';
    RETURN true;
END $$;

CREATE FUNCTION schedule.drop_job(job_id integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._editable_job(job_id, 'drop_job');
    DELETE FROM schedule.cron_run WHERE cron = job_id AND state = 'planned';
    DELETE FROM schedule.cron_forecast WHERE cron = job_id;
    DELETE FROM schedule.cron_forecast_state WHERE cron = job_id;
    DELETE FROM schedule.cron WHERE id = job_id;
    RETURN true;
END $$;

CREATE FUNCTION schedule.get_job(job_id integer) RETURNS schedule.cron_rec
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r schedule.cron;
    me text := schedule._caller();
BEGIN
    SELECT * INTO r FROM schedule.cron WHERE id = job_id;
    IF NOT FOUND OR (r.owner <> me AND NOT schedule._is_superuser(me)) THEN
        RAISE EXCEPTION 'schedule.get_job: job % does not exist or is not yours', job_id USING ERRCODE = 'P0002';
    END IF;
    RETURN schedule._make_cron_rec(r);
END $$;

CREATE FUNCTION schedule.get_owned_cron(username text DEFAULT NULL) RETURNS SETOF schedule.cron_rec
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who text := schedule._check_user_arg('get_owned_cron', username);
BEGIN
    RETURN QUERY SELECT (schedule._make_cron_rec(c)).* FROM schedule.cron c WHERE c.owner = who ORDER BY c.id;
END $$;

-- All jobs (superuser only), as in pgpro_scheduler 2.1.
CREATE FUNCTION schedule.get_cron() RETURNS SETOF schedule.cron_rec
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._only_superuser('get_cron');
    RETURN QUERY SELECT (schedule._make_cron_rec(c)).* FROM schedule.cron c ORDER BY c.id;
END $$;

-- Jobs that run as the given user (default: the caller).
CREATE FUNCTION schedule.get_user_cron(username text DEFAULT NULL) RETURNS SETOF schedule.cron_rec
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who text := schedule._check_user_arg('get_user_cron', username);
BEGIN
    RETURN QUERY SELECT (schedule._make_cron_rec(c)).* FROM schedule.cron c WHERE c.executor = who ORDER BY c.id;
END $$;

CREATE FUNCTION schedule._make_cron_job(r schedule.cron_run, c schedule.cron) RETURNS schedule.cron_job
LANGUAGE sql STABLE AS $$
    SELECT ROW(r.cron, r.node, r.scheduled_at, CASE WHEN c.id IS NULL THEN '--DELETED--' ELSE c.name END,
               c.comments, c.commands, c.executor, c.owner, c.same_transaction, r.started, r.deadline, r.finished,
               c.max_run_time, c.onrollback, c.next_time_statement, c.max_instances,
               CASE r.state WHEN 'working' THEN 'working' WHEN 'done' THEN 'done' ELSE 'error' END::schedule.job_status_t,
               r.message)::schedule.cron_job
$$;

-- Runs in progress, of jobs that run as the given user (other users: superuser only).
CREATE FUNCTION schedule.get_active_jobs(username text) RETURNS SETOF schedule.cron_job
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who text := schedule._check_user_arg('get_active_jobs', coalesce(username, schedule._caller()));
BEGIN
    RETURN QUERY SELECT (schedule._make_cron_job(r, c)).*
        FROM schedule.cron_run r JOIN schedule.cron c ON c.id = r.cron
        WHERE r.state = 'working' AND c.executor = who ORDER BY r.started, r.run_id;
END $$;

-- All runs in progress (superuser only).
CREATE FUNCTION schedule.get_active_jobs() RETURNS SETOF schedule.cron_job
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._only_superuser('get_active_jobs');
    RETURN QUERY SELECT (schedule._make_cron_job(r, c)).*
        FROM schedule.cron_run r LEFT JOIN schedule.cron c ON c.id = r.cron
        WHERE r.state = 'working' ORDER BY r.started, r.run_id;
END $$;

-- All finished runs (superuser only).
CREATE FUNCTION schedule.get_log() RETURNS SETOF schedule.cron_job
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._only_superuser('get_log');
    RETURN QUERY SELECT (schedule._make_cron_job(r, c)).*
        FROM schedule.cron_run r LEFT JOIN schedule.cron c ON c.id = r.cron
        WHERE r.state IN ('done', 'error') ORDER BY r.finished, r.run_id;
END $$;

-- Finished runs of jobs owned by the given user (superuser only; pgpro 2.1's get_log(user)).
CREATE FUNCTION schedule.get_log(username text) RETURNS SETOF schedule.cron_job
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._only_superuser('get_log');
    RETURN QUERY SELECT (schedule._make_cron_job(r, c)).*
        FROM schedule.cron_run r JOIN schedule.cron c ON c.id = r.cron
        WHERE r.state IN ('done', 'error') AND c.owner = username ORDER BY r.finished, r.run_id;
END $$;

-- Finished runs of jobs that ran as the given user (default the caller; others: superuser).
CREATE FUNCTION schedule.get_user_log(username text DEFAULT NULL) RETURNS SETOF schedule.cron_job
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who text := schedule._check_user_arg('get_user_log', username);
BEGIN
    RETURN QUERY SELECT (schedule._make_cron_job(r, c)).*
        FROM schedule.cron_run r JOIN schedule.cron c ON c.id = r.cron
        WHERE r.state IN ('done', 'error') AND c.executor = who ORDER BY r.finished, r.run_id;
END $$;

-- Delete every finished run record (superuser only); returns how many.
CREATE FUNCTION schedule.clean_log() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    PERFORM schedule._only_superuser('clean_log');
    DELETE FROM schedule.cron_run WHERE state IN ('done', 'error');
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Everything about one job as jsonb (the console and CLI `job show`).
CREATE FUNCTION schedule.job_info(job_id integer) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r schedule.cron;
    me text := schedule._caller();
BEGIN
    SELECT * INTO r FROM schedule.cron WHERE id = job_id;
    IF NOT FOUND OR (r.owner <> me AND NOT schedule._is_superuser(me)) THEN
        RAISE EXCEPTION 'schedule.job_info: job % does not exist or is not yours', job_id USING ERRCODE = 'P0002';
    END IF;
    RETURN to_jsonb(schedule._make_cron_rec(r)) || jsonb_build_object(
        'tz', r.tz, 'missed', r.missed, 'reason', r.reason, 'next_run', r.next_run,
        'created_at', r.created_at, 'changed_at', r.changed_at,
        'running', (SELECT count(*) FROM schedule.cron_run WHERE cron = job_id AND state = 'working'),
        'last_runs', (SELECT coalesce(jsonb_agg(jsonb_build_object('scheduled_at', x.scheduled_at, 'state', x.state,
                          'started', x.started, 'finished', x.finished, 'message', x.message) ORDER BY x.scheduled_at DESC), '[]')
                      FROM (SELECT * FROM schedule.cron_run WHERE cron = job_id ORDER BY scheduled_at DESC LIMIT 10) x));
END $$;

-- Jobs the caller may see (own; all for a superuser), for listings.
CREATE FUNCTION schedule.list_jobs() RETURNS TABLE (id integer, name text, owner text, run_as text, schedule jsonb,
    tz text, active boolean, broken boolean, next_run timestamptz, running bigint, last_state text,
    last_finished timestamptz)
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    me text := schedule._caller();
    su boolean := schedule._is_superuser(schedule._caller());
BEGIN
    RETURN QUERY
    SELECT c.id, c.name, c.owner, c.executor, c.rule, c.tz, c.active, c.broken, c.next_run,
           (SELECT count(*) FROM schedule.cron_run w WHERE w.cron = c.id AND w.state = 'working'),
           l.state, l.finished
    FROM schedule.cron c
    LEFT JOIN LATERAL (SELECT x.state, x.finished FROM schedule.cron_run x
                       WHERE x.cron = c.id AND x.state IN ('done', 'error')
                       ORDER BY x.finished DESC NULLS LAST LIMIT 1) l ON true
    WHERE su OR c.owner = me
    ORDER BY c.id;
END $$;

-- ---------------------------------------------------------------------------------------
-- One-time jobs
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION schedule.submit_job(
    query text,
    params text[] DEFAULT NULL,
    run_after timestamptz DEFAULT NULL,
    node text DEFAULT NULL,
    max_duration interval DEFAULT NULL,
    max_wait_interval interval DEFAULT NULL,
    run_as text DEFAULT NULL,
    depends_on bigint[] DEFAULT NULL,
    name text DEFAULT NULL,
    comments text DEFAULT NULL,
    resubmit_limit bigint DEFAULT 100
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
    v_executor text;
    missing bigint[];
BEGIN
    IF query IS NULL OR btrim(query, E' \t\n\r;') = '' THEN
        RAISE EXCEPTION 'query: the SQL to run is empty' USING ERRCODE = '22023';
    END IF;
    IF run_after IS NOT NULL AND depends_on IS NOT NULL THEN
        RAISE EXCEPTION 'depends_on: conflict in start time: give either run_after or depends_on, not both'
            USING ERRCODE = '22023';
    END IF;
    IF depends_on IS NOT NULL AND cardinality(depends_on) = 0 THEN
        RAISE EXCEPTION 'depends_on: empty list of job ids' USING ERRCODE = '22023';
    END IF;
    IF max_duration IS NOT NULL AND max_duration <= interval '0' THEN
        RAISE EXCEPTION 'max_duration: must be positive, got %', max_duration USING ERRCODE = '22023';
    END IF;
    IF max_wait_interval IS NOT NULL AND max_wait_interval < interval '0' THEN
        RAISE EXCEPTION 'max_wait_interval: must not be negative, got %', max_wait_interval USING ERRCODE = '22023';
    END IF;
    IF resubmit_limit IS NULL OR resubmit_limit < 1 THEN
        RAISE EXCEPTION 'resubmit_limit: must be at least 1, got %', quote_nullable(resubmit_limit) USING ERRCODE = '22023';
    END IF;
    IF depends_on IS NOT NULL THEN
        SELECT array_agg(d) INTO missing FROM unnest(depends_on) d
        WHERE NOT EXISTS (SELECT 1 FROM schedule.at_job j WHERE j.id = d
                          AND (j.owner = schedule._caller() OR schedule._is_superuser(schedule._caller())));
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'depends_on: no such job(s) of yours: %', array_to_string(missing, ', ')
                USING ERRCODE = '22023';
        END IF;
    END IF;
    v_executor := schedule._check_run_as(run_as);
    INSERT INTO schedule.at_job (node, name, comments, run_after, query, params, depends_on, executor, owner,
        resubmit_limit, max_wait_interval, max_duration)
    VALUES (coalesce(nullif(node, ''), schedule.nodename()), name, comments,
        CASE WHEN depends_on IS NULL THEN coalesce(run_after, now()) END,
        query, params, depends_on, v_executor, schedule._caller(), resubmit_limit, max_wait_interval, max_duration)
    RETURNING id INTO v_id;
    PERFORM schedule._notify('at');
    RETURN v_id;
END $$;

-- Inside a running job: its id (one-time job id, or the scheduled job's id).
CREATE FUNCTION schedule.get_self_id() RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    v text := nullif(current_setting('schedule.job_id', true), '');
BEGIN
    IF v IS NULL THEN
        RAISE EXCEPTION 'schedule.get_self_id: not called from a running schedule job' USING ERRCODE = '55000';
    END IF;
    RETURN v::bigint;
END $$;

-- Inside a running one-time job: run it again after run_after (default 1 second).
CREATE FUNCTION schedule.resubmit(run_after interval DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    secs numeric;
BEGIN
    IF coalesce(current_setting('schedule.job_kind', true), '') <> 'at' THEN
        RAISE EXCEPTION 'schedule.resubmit: may only be called from a one-time job submitted with schedule.submit_job'
            USING ERRCODE = '55000';
    END IF;
    IF run_after IS NULL THEN
        secs := 1;
    ELSE
        secs := extract(epoch FROM run_after);
        IF secs < 0 THEN
            RAISE EXCEPTION 'run_after: must not be negative, got %', run_after USING ERRCODE = '22023';
        ELSIF secs > 0 AND secs < 1 THEN
            secs := 1;
        ELSE
            secs := round(secs);
        END IF;
    END IF;
    PERFORM set_config('schedule.resubmit_after', secs::bigint::text, false);
    RETURN secs::bigint;
END $$;

-- Cancel every further start of a one-time job; a running instance is NOT interrupted
-- (use schedule.stop_job for that), it just will not be resubmitted.
CREATE FUNCTION schedule.cancel_job(job_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j schedule.at_job;
    me text := schedule._caller();
BEGIN
    SELECT * INTO j FROM schedule.at_job WHERE id = job_id FOR UPDATE;
    IF NOT FOUND OR (j.owner <> me AND NOT schedule._is_superuser(me)) THEN
        RAISE EXCEPTION 'schedule.cancel_job: job % does not exist or is not yours', job_id USING ERRCODE = 'P0002';
    END IF;
    IF j.status = 'done' OR j.canceled THEN
        RETURN false;
    END IF;
    IF j.status = 'submitted' THEN
        UPDATE schedule.at_job SET status = 'done', canceled = true, is_success = false,
            error = 'job was canceled', done_time = now() WHERE id = job_id;
    ELSE
        UPDATE schedule.at_job SET canceled = true WHERE id = job_id;
    END IF;
    PERFORM schedule._notify('at');
    RETURN true;
END $$;

-- Our own: interrupt a running one-time job now (cancels its statement; no resubmit).
CREATE FUNCTION schedule.stop_job(job_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j schedule.at_job;
    me text := schedule._caller();
BEGIN
    SELECT * INTO j FROM schedule.at_job WHERE id = job_id;
    IF NOT FOUND OR (j.owner <> me AND NOT schedule._is_superuser(me)) THEN
        RAISE EXCEPTION 'schedule.stop_job: job % does not exist or is not yours', job_id USING ERRCODE = 'P0002';
    END IF;
    IF j.status <> 'processing' OR j.pid IS NULL THEN
        RETURN false;
    END IF;
    UPDATE schedule.at_job SET stop_requested = format('stopped by %s with schedule.stop_job', me), canceled = true
    WHERE id = job_id;
    RETURN pg_cancel_backend(j.pid);
END $$;

-- Our own: interrupt the running instances of a scheduled job now.  Returns how many.
CREATE FUNCTION schedule.stop_cron_job(job_id integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := 0;
    r record;
BEGIN
    PERFORM schedule._editable_job(job_id, 'stop_cron_job');
    FOR r IN SELECT run_id, pid FROM schedule.cron_run WHERE cron = job_id AND state = 'working' AND pid IS NOT NULL LOOP
        UPDATE schedule.cron_run SET stop_requested = format('stopped by %s with schedule.stop_cron_job', schedule._caller())
        WHERE run_id = r.run_id;
        IF pg_cancel_backend(r.pid) THEN n := n + 1; END IF;
    END LOOP;
    RETURN n;
END $$;

CREATE FUNCTION schedule._all_job_status() RETURNS TABLE (id bigint, node text, name text, comments text,
    run_after timestamptz, query text, params text[], depends_on bigint[], run_as text, owner text, attempt bigint,
    resubmit_limit bigint, max_wait_interval interval, max_duration interval, submit_time timestamptz,
    canceled boolean, start_time timestamptz, is_success boolean, error text, done_time timestamptz,
    status schedule.job_at_status_t)
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    me text := schedule._caller();
    su boolean := schedule._is_superuser(schedule._caller());
BEGIN
    RETURN QUERY SELECT j.id, j.node, j.name, j.comments, j.run_after, j.query, j.params, j.depends_on, j.executor,
        j.owner, j.attempt, j.resubmit_limit, j.max_wait_interval, j.max_duration, j.submit_time, j.canceled,
        j.start_time, j.is_success, j.error, j.done_time, j.status
    FROM schedule.at_job j WHERE su OR j.owner = me ORDER BY j.id;
END $$;

CREATE FUNCTION schedule._all_job_status_su() RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._only_superuser('all_job_status');
    RETURN QUERY SELECT * FROM schedule._all_job_status();
END $$;

CREATE VIEW schedule.job_status WITH (security_barrier) AS
SELECT id, node, name, comments, run_after, query, params, depends_on, run_as, attempt, resubmit_limit,
       max_wait_interval, max_duration, submit_time, canceled, start_time, is_success, error, done_time, status
FROM schedule._all_job_status() WHERE owner = schedule._caller();

CREATE VIEW schedule.all_job_status WITH (security_barrier) AS
SELECT * FROM schedule._all_job_status_su() AS t(id bigint, node text, name text, comments text,
    run_after timestamptz, query text, params text[], depends_on bigint[], run_as text, owner text, attempt bigint,
    resubmit_limit bigint, max_wait_interval interval, max_duration interval, submit_time timestamptz,
    canceled boolean, start_time timestamptz, is_success boolean, error text, done_time timestamptz,
    status schedule.job_at_status_t);

-- ---------------------------------------------------------------------------------------
-- timetable(start, end): every planned, running and finished execution in the interval
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION schedule.timetable(from_time timestamptz, to_time timestamptz) RETURNS TABLE (
    id bigint, type schedule.timetable_job_type_t, node text, name text, comments text, commands text[],
    scheduled_at timestamptz, start_time timestamptz, done_time timestamptz,
    status schedule.timetable_job_status_t, error text)
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    me text := schedule._caller();
    su boolean := schedule._is_superuser(schedule._caller());
    t0 timestamptz := from_time;
    t1 timestamptz := to_time;
BEGIN
    IF t0 IS NULL OR t1 IS NULL OR t1 < t0 THEN
        RAISE EXCEPTION 'end_time: give a start and an end time, end not before start' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH jobs AS (SELECT * FROM schedule.cron c WHERE su OR c.owner = me),
    runs AS (
        SELECT r.cron::bigint AS id, 'periodical'::schedule.timetable_job_type_t AS type, r.node, j.name, j.comments,
               j.commands, r.scheduled_at, r.started, r.finished,
               (CASE r.state WHEN 'planned' THEN 'submitted' WHEN 'working' THEN 'inprogress'
                             ELSE r.state END)::schedule.timetable_job_status_t, r.message
        FROM schedule.cron_run r JOIN jobs j ON j.id = r.cron
        WHERE r.scheduled_at >= t0 AND r.scheduled_at <= t1
    ),
    future AS (
        SELECT f.cron AS cron, f.fire_at FROM schedule.cron_forecast f
        UNION
        SELECT j.id, j.next_run FROM jobs j WHERE j.next_run IS NOT NULL
        UNION
        SELECT j.id, d::text::timestamptz FROM jobs j, jsonb_array_elements(coalesce(j.rule -> 'dates', '[]')) d
    ),
    planned AS (
        SELECT j.id::bigint, 'periodical'::schedule.timetable_job_type_t, j.node, j.name, j.comments, j.commands,
               f.fire_at, NULL::timestamptz, NULL::timestamptz, 'submitted'::schedule.timetable_job_status_t, NULL::text
        FROM future f JOIN jobs j ON j.id = f.cron
        WHERE f.fire_at >= t0 AND f.fire_at <= t1 AND j.active AND NOT j.broken
          AND (j.start_date IS NULL OR f.fire_at >= j.start_date) AND (j.end_date IS NULL OR f.fire_at <= j.end_date)
          AND NOT EXISTS (SELECT 1 FROM schedule.cron_run r WHERE r.cron = f.cron AND r.scheduled_at = f.fire_at)
    ),
    onetime AS (
        SELECT a.id, 'onetime'::schedule.timetable_job_type_t, a.node, a.name, a.comments, ARRAY[a.query],
               coalesce(a.run_after, a.submit_time), a.start_time, a.done_time,
               (CASE WHEN a.status = 'submitted' THEN 'submitted' WHEN a.status = 'processing' THEN 'inprogress'
                     WHEN a.is_success THEN 'done' ELSE 'error' END)::schedule.timetable_job_status_t, a.error
        FROM schedule.at_job a
        WHERE (su OR a.owner = me) AND coalesce(a.run_after, a.submit_time) BETWEEN t0 AND t1
    )
    SELECT * FROM runs UNION ALL SELECT * FROM planned UNION ALL SELECT * FROM onetime
    ORDER BY 7, 1;
END $$;

-- ---------------------------------------------------------------------------------------
-- General functions
-- ---------------------------------------------------------------------------------------
CREATE FUNCTION schedule.enable() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._only_superuser('enable');
    UPDATE schedule.manager_state SET enabled = true, start_epoch = start_epoch + CASE WHEN enabled THEN 0 ELSE 1 END,
        changed_at = now(), changed_by = schedule._caller();
    PERFORM schedule._notify('state');
    RETURN true;
END $$;

CREATE FUNCTION schedule.disable() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._only_superuser('disable');
    UPDATE schedule.manager_state SET enabled = false, changed_at = now(), changed_by = schedule._caller();
    PERFORM schedule._notify('state');
    RETURN true;
END $$;

CREATE FUNCTION schedule.is_enabled() RETURNS boolean
LANGUAGE sql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT enabled FROM schedule.manager_state
$$;

CREATE FUNCTION schedule.start() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    was boolean;
BEGIN
    PERFORM schedule._only_superuser('start');
    SELECT started INTO was FROM schedule.manager_state FOR UPDATE;
    IF was THEN RETURN false; END IF;
    UPDATE schedule.manager_state SET started = true, start_epoch = start_epoch + 1, changed_at = now(),
        changed_by = schedule._caller();
    PERFORM schedule._notify('state');
    RETURN true;
END $$;

CREATE FUNCTION schedule.stop() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    was boolean;
BEGIN
    PERFORM schedule._only_superuser('stop');
    SELECT started INTO was FROM schedule.manager_state FOR UPDATE;
    IF NOT was THEN RETURN false; END IF;
    UPDATE schedule.manager_state SET started = false, changed_at = now(), changed_by = schedule._caller();
    PERFORM schedule._notify('state');
    RETURN true;
END $$;

-- The engine's sessions serving this database (application_name 'pgtt-schedule ...').
CREATE FUNCTION schedule.status() RETURNS TABLE (pid integer, database text, type text)
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT a.pid, a.datname::text,
           CASE WHEN a.application_name LIKE 'pgtt-schedule manager%' THEN 'database manager'
                WHEN a.application_name LIKE 'pgtt-schedule cron%' THEN 'cron job executor'
                ELSE 'at job executor' END
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.application_name LIKE 'pgtt-schedule %'
    ORDER BY 3, 1;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::integer, current_database()::text, 'database manager'::text;
    END IF;
END $$;

-- Used by the engine before it commits a job's transaction: the job must not have left
-- its run_as role (SET ROLE / RESET ROLE inside the job).
CREATE FUNCTION schedule._assert_role(p_role text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN
    IF current_user::text <> p_role THEN
        RAISE EXCEPTION 'the job changed its role to "%" (SET ROLE / RESET ROLE); it must run as "%"',
            current_user, p_role USING ERRCODE = '42501';
    END IF;
END $$;

CREATE FUNCTION schedule.version() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'pgtt-tui schedule 1 (pgpro_scheduler 2.x compatible API)'::text $$;

-- ---------------------------------------------------------------------------------------
-- Privileges: EXECUTE for the public API only
-- ---------------------------------------------------------------------------------------
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA schedule FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    schedule.create_job(jsonb), schedule.create_job(text, text, text), schedule.create_job(text, text[], text),
    schedule.create_job(timestamptz, text, text), schedule.create_job(timestamptz, text[], text),
    schedule.create_job(timestamptz[], text, text), schedule.create_job(timestamptz[], text[], text),
    schedule.set_job_attributes(integer, jsonb), schedule.set_job_attribute(integer, text, text),
    schedule.set_job_attribute(integer, text, anyarray), schedule.set_job_attribute(integer, text, jsonb),
    schedule.activate_job(integer), schedule.deactivate_job(integer), schedule.drop_job(integer),
    schedule.get_job(integer), schedule.get_owned_cron(text), schedule.get_cron(), schedule.get_user_cron(text),
    schedule.get_active_jobs(text), schedule.get_active_jobs(), schedule.get_log(), schedule.get_log(text),
    schedule.get_user_log(text), schedule.clean_log(), schedule.nodename(), schedule.job_info(integer),
    schedule.list_jobs(),
    schedule.submit_job(text, text[], timestamptz, text, interval, interval, text, bigint[], text, text, bigint),
    schedule.get_self_id(), schedule.resubmit(interval), schedule.cancel_job(bigint), schedule.stop_job(bigint),
    schedule.stop_cron_job(integer), schedule.timetable(timestamptz, timestamptz),
    schedule.enable(), schedule.disable(), schedule.is_enabled(), schedule.start(), schedule.stop(),
    schedule.status(), schedule.version(),
    schedule._caller(), schedule._is_superuser(text), schedule._only_superuser(text),
    schedule._all_job_status(), schedule._all_job_status_su(), schedule._cron_problem(text),
    schedule._assert_role(text)
TO PUBLIC;
GRANT SELECT ON schedule.job_status, schedule.all_job_status TO PUBLIC;
