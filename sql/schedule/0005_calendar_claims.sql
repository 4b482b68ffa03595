-- schedule: a complete calendar, and claims whose cost does not grow with the runs due.
--
-- The calendar:  schedule.timetable(start, end) lists every execution in
-- the interval -- runs that happened or are planned (cron_run), one-time jobs, and every
-- future firing of each active job computed here from its schedule (cron, rule, dates,
-- time zone, start_date/end_date) with pgtt's evaluator (sql/pgtt/0005_cron_search.sql),
-- for any interval, whether or not an engine has run.  The engine's forecast table
-- (cron_forecast, one day ahead) is gone.
--
-- The rules are engine/schedule/manager.py's (job_schedule, _next_firing): the crontab, the
-- rule's time fields and the dates are a union; a rule combines days and wdays with AND
-- (pgtt.cron_firings' p_both), a missing field means every value, seconds default to 0;
-- @reboot and onstart fire on a start, not at a time; firings lie in [start_date, end_date].
-- A job with a next_time_statement shows its next run only (what follows depends on it).
-- Past firings show only as what happened (cron_run); computed firings start at now(), or
-- after the engine's next_run when that is later (nothing fires before it).
--
-- schedule.timetable_page(start, end, after_at, after_id, after_type, page_size) returns
-- the same rows a page at a time, in the order (scheduled_at, type as text, id), after a cursor:
-- each job computes at most page_size + 1 firings, however long the interval.

-- The time-based cron parts of a stored rule object: the crontab, and the rule's fields.
CREATE FUNCTION schedule._rule_parts(p_rule jsonb, OUT fields pgtt.cron_fields, OUT days_and boolean)
RETURNS SETOF record LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    has_days boolean;
    has_wdays boolean;
    f pgtt.cron_fields;
BEGIN
    IF p_rule ? 'crontab' AND lower(btrim(p_rule ->> 'crontab')) <> '@reboot' THEN
        fields := pgtt.cron_parse(p_rule ->> 'crontab', ARRAY['@reboot']);
        days_and := false;
        RETURN NEXT;
    END IF;
    IF p_rule ?| ARRAY['seconds', 'minutes', 'hours', 'days', 'months', 'wdays']
       OR coalesce(p_rule -> 'onlastday', 'false') IN ('true', '1') THEN
        has_days := p_rule ? 'days' OR coalesce(p_rule -> 'onlastday', 'false') IN ('true', '1');
        has_wdays := p_rule ? 'wdays';
        f.seconds := coalesce(ARRAY(SELECT jsonb_array_elements_text(p_rule -> 'seconds')::int), '{}');
        IF NOT p_rule ? 'seconds' THEN f.seconds := ARRAY[0]; END IF;
        f.minutes := CASE WHEN p_rule ? 'minutes' THEN ARRAY(SELECT jsonb_array_elements_text(p_rule -> 'minutes')::int)
                          ELSE ARRAY(SELECT generate_series(0, 59)) END;
        f.hours := CASE WHEN p_rule ? 'hours' THEN ARRAY(SELECT jsonb_array_elements_text(p_rule -> 'hours')::int)
                        ELSE ARRAY(SELECT generate_series(0, 23)) END;
        f.days := CASE WHEN p_rule ? 'days' THEN ARRAY(SELECT jsonb_array_elements_text(p_rule -> 'days')::int)
                       ELSE '{}'::int[] END;
        f.months := CASE WHEN p_rule ? 'months' THEN ARRAY(SELECT jsonb_array_elements_text(p_rule -> 'months')::int)
                         ELSE ARRAY(SELECT generate_series(1, 12)) END;
        f.weekdays := CASE WHEN has_wdays THEN ARRAY(SELECT jsonb_array_elements_text(p_rule -> 'wdays')::int)
                           ELSE ARRAY(SELECT generate_series(0, 6)) END;
        f.last_day := coalesce(p_rule -> 'onlastday', 'false') IN ('true', '1');
        -- days only: day-of-month decides; wdays only: day-of-week; both: AND; none: every day
        f.dom_any := NOT has_days;
        f.dow_any := NOT has_wdays;
        fields := f;
        days_and := has_days AND has_wdays;
        RETURN NEXT;
    END IF;
END $$;

-- Every firing f of a job's schedule with p_from <= f <= p_to, ascending, each once, at
-- most p_limit (NULL: all).
CREATE FUNCTION schedule._job_firings(p_rule jsonb, p_tz text, p_start_date timestamptz, p_end_date timestamptz,
                                      p_from timestamptz, p_to timestamptz, p_limit bigint DEFAULT NULL)
RETURNS SETOF timestamptz LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    lo timestamptz := greatest(p_from, p_start_date);
    hi timestamptz := least(p_to, p_end_date);
    n_parts int;
BEGIN
    IF lo IS NULL OR hi IS NULL OR hi < lo THEN
        RETURN;
    END IF;
    SELECT count(*) INTO n_parts FROM schedule._rule_parts(p_rule);
    IF n_parts = 1 AND NOT p_rule ? 'dates' THEN
        -- one part: already ascending and distinct
        RETURN QUERY SELECT pgtt.cron_firings(p.fields, lo, hi, p_tz, p.days_and, p_limit)
                       FROM schedule._rule_parts(p_rule) p;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT DISTINCT x FROM (
        SELECT pgtt.cron_firings(p.fields, lo, hi, p_tz, p.days_and, p_limit) AS x FROM schedule._rule_parts(p_rule) p
        UNION ALL
        SELECT (d #>> '{}')::timestamptz FROM jsonb_array_elements(coalesce(p_rule -> 'dates', '[]')) d) s
     WHERE x BETWEEN lo AND hi
     ORDER BY x LIMIT p_limit;
END $$;

CREATE FUNCTION schedule._timetable(from_time timestamptz, to_time timestamptz, after_at timestamptz,
    after_id bigint, after_type schedule.timetable_job_type_t, page_size bigint, from_now timestamptz)
    RETURNS TABLE (
    id bigint, type schedule.timetable_job_type_t, node text, name text, comments text, commands text[],
    scheduled_at timestamptz, start_time timestamptz, done_time timestamptz,
    status schedule.timetable_job_status_t, error text)
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    me text := schedule._caller();
    su boolean := schedule._is_superuser(schedule._caller());
    t0 timestamptz := greatest(from_time, after_at);
    t1 timestamptz := to_time;
    per_job bigint := page_size + 1;  -- a job fires at most once at after_at
    now_ timestamptz := coalesce(from_now, now());
BEGIN
    IF from_time IS NULL OR to_time IS NULL OR to_time < from_time THEN
        RAISE EXCEPTION 'end_time: give a start and an end time, end not before start' USING ERRCODE = '22023';
    END IF;
    IF page_size IS NOT NULL AND page_size < 1 THEN
        RAISE EXCEPTION 'page_size: must be at least 1, got %', page_size USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH jobs AS (SELECT * FROM schedule.cron c WHERE su OR c.owner = me),
    runs AS (
        SELECT r.cron::bigint AS id, 'periodical'::schedule.timetable_job_type_t AS type, r.node, j.name, j.comments,
               j.commands, r.scheduled_at, r.started, r.finished,
               (CASE r.state WHEN 'planned' THEN 'submitted' WHEN 'working' THEN 'inprogress'
                             ELSE r.state END)::schedule.timetable_job_status_t AS status, r.message
        FROM schedule.cron_run r JOIN jobs j ON j.id = r.cron
        WHERE r.scheduled_at >= t0 AND r.scheduled_at <= t1
    ),
    future AS (
        -- computed from the schedule, from now on; the engine's next_run comes first (nothing
        -- fires between now and it; it is listed below)
        SELECT j.id AS cron, f.x AS fire_at
          FROM jobs j CROSS JOIN LATERAL schedule._job_firings(j.rule, j.tz, j.start_date, j.end_date,
                   CASE WHEN j.next_run >= greatest(t0, now_) THEN j.next_run + interval '1 microsecond'
                        ELSE greatest(t0, now_) END, t1, per_job) AS f(x)
         WHERE j.active AND NOT j.broken AND j.next_time_statement IS NULL
        UNION
        -- a next_time_statement job: its next run (the engine's), else the schedule's first
        SELECT j.id, coalesce(j.next_run, (SELECT min(x) FROM schedule._job_firings(j.rule, j.tz, j.start_date,
                                               j.end_date, greatest(t0, now_), t1, 1) x))
          FROM jobs j WHERE j.active AND NOT j.broken AND j.next_time_statement IS NOT NULL
        UNION
        -- the engine's next run (also when due and not yet planned)
        SELECT j.id, j.next_run FROM jobs j WHERE j.active AND NOT j.broken AND j.next_run IS NOT NULL
    ),
    planned AS (
        SELECT j.id::bigint, 'periodical'::schedule.timetable_job_type_t, j.node, j.name, j.comments, j.commands,
               f.fire_at, NULL::timestamptz, NULL::timestamptz, 'submitted'::schedule.timetable_job_status_t, NULL::text
        FROM future f JOIN jobs j ON j.id = f.cron
        WHERE f.fire_at >= t0 AND f.fire_at <= t1
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
    SELECT * FROM (SELECT * FROM runs UNION ALL SELECT * FROM planned UNION ALL SELECT * FROM onetime) u
     WHERE after_at IS NULL
        OR (u.scheduled_at, u.type::text, u.id) > (after_at, coalesce(after_type::text, ''), coalesce(after_id, -1))
     ORDER BY u.scheduled_at, u.type::text, u.id
     LIMIT page_size;
END $$;

CREATE OR REPLACE FUNCTION schedule.timetable(from_time timestamptz, to_time timestamptz) RETURNS TABLE (
    id bigint, type schedule.timetable_job_type_t, node text, name text, comments text, commands text[],
    scheduled_at timestamptz, start_time timestamptz, done_time timestamptz,
    status schedule.timetable_job_status_t, error text)
LANGUAGE sql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM schedule._timetable(from_time, to_time, NULL, NULL, NULL, NULL, NULL)
$$;

-- One page of schedule.timetable(from_time, to_time), ordered by (scheduled_at, type as text,
-- id) (onetime before periodical), after the row (after_at, after_type, after_id); after_at
-- alone: from after_at on, inclusive.  from_now: where computed firings start (default now()).
CREATE FUNCTION schedule.timetable_page(from_time timestamptz, to_time timestamptz,
    after_at timestamptz DEFAULT NULL, after_id bigint DEFAULT NULL,
    after_type schedule.timetable_job_type_t DEFAULT NULL, page_size integer DEFAULT 500,
    from_now timestamptz DEFAULT NULL) RETURNS TABLE (
    id bigint, type schedule.timetable_job_type_t, node text, name text, comments text, commands text[],
    scheduled_at timestamptz, start_time timestamptz, done_time timestamptz,
    status schedule.timetable_job_status_t, error text)
LANGUAGE sql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM schedule._timetable(from_time, to_time, after_at, after_id, after_type,
                                      coalesce(page_size, 500), from_now)
$$;

-- drop_job without the forecast; the forecast tables go
CREATE OR REPLACE FUNCTION schedule.drop_job(job_id integer) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._editable_job(job_id, 'drop_job');
    DELETE FROM schedule.cron_run WHERE cron = job_id AND state = 'planned';
    DELETE FROM schedule.cron WHERE id = job_id;
    RETURN true;
END $$;
DROP TABLE schedule.cron_forecast;
DROP TABLE schedule.cron_forecast_state;

REVOKE EXECUTE ON FUNCTION schedule._rule_parts(jsonb), schedule._job_firings(jsonb, text, timestamptz, timestamptz,
    timestamptz, timestamptz, bigint), schedule._timetable(timestamptz, timestamptz, timestamptz, bigint,
    schedule.timetable_job_type_t, bigint, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schedule.timetable_page(timestamptz, timestamptz, timestamptz, bigint,
    schedule.timetable_job_type_t, integer, timestamptz) TO PUBLIC;

-- ---------------------------------------------------------------------------------------
-- Claims (engine/schedule/manager.py CLAIM_CRON, SKIP_INSTANCES) in time independent of the
-- runs due: the claim takes the oldest due planned run, walking this index in its order
-- (before: every due run was filtered and sorted, under the claim lock, for each claim:
-- 6 ms per claim with 400 due); a job's running instances are counted from the second one
-- (before: from all of the job's runs, finished ones included).
-- ---------------------------------------------------------------------------------------
CREATE INDEX cron_run_planned_idx ON schedule.cron_run (node, scheduled_at, run_id) WHERE state = 'planned';
CREATE INDEX cron_run_working_idx ON schedule.cron_run (cron) WHERE state = 'working';

-- The engine's claimer connection ('pgtt-schedule claims ...') belongs to the database manager.
CREATE OR REPLACE FUNCTION schedule.status() RETURNS TABLE (pid integer, database text, type text)
LANGUAGE plpgsql SECURITY DEFINER STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT a.pid, a.datname::text,
           CASE WHEN a.application_name LIKE 'pgtt-schedule manager%' OR a.application_name LIKE 'pgtt-schedule claims%'
                THEN 'database manager'
                WHEN a.application_name LIKE 'pgtt-schedule cron%' THEN 'cron job executor'
                ELSE 'at job executor' END
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.application_name LIKE 'pgtt-schedule %'
    ORDER BY 3, 1;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::integer, current_database()::text, 'database manager'::text;
    END IF;
END $$;

-- What DISCARD ALL does, as one function call the engine may pipeline with a run's last
-- statements (DISCARD ALL itself refuses to run in a pipeline or a transaction block), then
-- the engine's own session settings again.  The engine calls it on an executor's session
-- after every run (engine/schedule/manager.py, RESET_SESSION).
CREATE FUNCTION schedule._reset_session() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE 'CLOSE ALL';
    EXECUTE 'SET SESSION AUTHORIZATION DEFAULT';
    EXECUTE 'RESET ALL';
    EXECUTE 'DEALLOCATE ALL';
    EXECUTE 'UNLISTEN *';
    PERFORM pg_advisory_unlock_all();
    EXECUTE 'DISCARD PLANS';
    EXECUTE 'DISCARD TEMP';
    EXECUTE 'DISCARD SEQUENCES';
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', false);
    IF current_setting('server_version_num')::int >= 140000 THEN
        PERFORM set_config('client_connection_check_interval', '1000', false);
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION schedule._reset_session() FROM PUBLIC;
