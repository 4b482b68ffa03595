-- schedule: a run in one statement, with plans that stay cached.
--
-- Measured before this file (1,000 jobs due at once, 8 workers, PostgreSQL 15,
-- pg_stat_statements with track_planning): the server spent 3.4 ms per run *planning* the
-- engine's statements, more than it spent running them (2.7 ms, the job included).  Half of
-- it was schedule._commit_hazards(), an inlined SQL function read twice per run and planned
-- anew each time (1.1 ms a plan); then the sandbox call with its search_path subquery
-- (0.5 ms) and the claim (0.7 ms a batch).  The engine also sent about 14 statements a run.
--
-- Here the same steps run inside PL/pgSQL functions, whose plans are kept for the session
-- (schedule._reset_session no longer runs DISCARD PLANS: a cached plan carries no privilege
-- of the role it was made for, since permissions are checked when a plan is executed, and
-- PostgreSQL replans on DDL, search_path and role changes by itself):
--
--   schedule._sandbox_run   the job sandbox of engine/schedule/manager.py ("How a job runs"),
--                           steps 1-3, in one call: commit hazards read before, the per-run
--                           SECURITY DEFINER function created and given to the run_as role,
--                           SET LOCAL ROLE, the call, RESET ROLE, the search_path pin, the drop,
--                           the hazards read after (the job is refused with an error if it
--                           changed a table whose code would run at COMMIT);
--   schedule._run_cron      a scheduled run's settings, its sandbox and its outcome: the whole
--                           run of a one-transaction job is one statement;
--   schedule._claim_cron_batch  the claimer's advisory lock and batch claim.
--
-- And the per-run function is SQL, running the job's statements through one permanent
-- PL/pgSQL function (schedule._job_exec): a backend keeps every PL/pgSQL function it ever
-- compiled, with its plans, until it exits, dropped or not.  With a new one per run an
-- executor backend grew by ~100 kB a run and its CPU per run from 1.5 ms to 60 ms over
-- 8,000 runs (every invalidation walks the kept plans).
--
-- The boundary is unchanged: the per-run function is created, called and dropped inside the
-- job's own transaction, so no other session ever sees it, and the job's text only ever runs
-- inside it.  These functions are the engine's: EXECUTE is revoked from PUBLIC.

-- Code that would still run at COMMIT as the engine's role is refused while the job's rights
-- are still in force: a cursor WITH HOLD left open (its query runs at COMMIT).
CREATE FUNCTION schedule._no_cursor_with_hold() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_cursor text;
BEGIN
    SELECT c.name INTO v_cursor FROM pg_catalog.pg_cursors c WHERE c.is_holdable LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a job may not leave a cursor WITH HOLD open (cursor "%"): its query would run when the '
                        'engine commits, outside the job''s role', v_cursor USING ERRCODE = '42501';
    END IF;
END $$;

-- A job's statements, run by its per-run SECURITY DEFINER function (below), so as the job's
-- run_as role and with role changes refused: the role's search_path while they run, then
-- the engine's again. Invoker's rights and no SET clause: called directly, it only runs SQL
-- as the caller, so PUBLIC may (every run_as role must).
CREATE FUNCTION schedule._job_exec(p_sql text[], p_path text, p_want_value boolean) RETURNS timestamptz
LANGUAGE plpgsql AS $$
DECLARE
    v_sql pg_catalog.text;
    v_result pg_catalog.timestamptz;
BEGIN
    PERFORM pg_catalog.set_config('search_path', p_path, true);
    FOREACH v_sql IN ARRAY p_sql LOOP
        IF p_want_value THEN
            EXECUTE v_sql INTO v_result;
        ELSE
            EXECUTE v_sql;
        END IF;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM schedule._no_cursor_with_hold();
    RETURN v_result;
END $$;

CREATE FUNCTION schedule._sandbox_run(p_role text, p_sql text[], p_params text[], p_server_path text,
                                      p_want_value boolean) RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    -- random: a job cannot pre-create it (and it never outlives the transaction)
    v_name text := 'pgtt_job_' || pg_catalog.replace(pg_catalog.gen_random_uuid()::pg_catalog.text, '-', '');
    v_args CONSTANT text := 'pg_catalog.text[], pg_catalog.text[], pg_catalog.text';
    v_using text := '';
    v_check text := pg_catalog.current_setting('check_function_bodies');
    v_before jsonb;
    v_after jsonb;
    v_hits text;
    v_path text;
    v_value timestamptz;
BEGIN
    IF p_params IS NOT NULL AND pg_catalog.cardinality(p_params) > 0 THEN
        SELECT ' USING ' || pg_catalog.string_agg(pg_catalog.format('p_params[%s]', i), ', ' ORDER BY i)
          INTO v_using FROM pg_catalog.generate_series(1, pg_catalog.cardinality(p_params)) AS i;
    END IF;
    -- this transaction's row changes so far (the job's own are the difference afterwards)
    SELECT pg_catalog.jsonb_object_agg(h.key, h.changes) INTO v_before FROM schedule._commit_hazards() h;
    -- the body is fixed text: skip the validator's parse (it is parsed when it is called)
    PERFORM pg_catalog.set_config('check_function_bodies', 'off', true);
    IF v_using = '' THEN
        -- SQL, not PL/pgSQL: a backend keeps every PL/pgSQL function it ever compiled, with
        -- its plans, until it exits, dropped or not (measured: ~30-100 kB and a growing
        -- share of every later invalidation per run); the job's text runs in the one
        -- permanent function schedule._job_exec, as run_as, under this function's
        -- SECURITY DEFINER
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION pg_temp.%I(p_sql pg_catalog.text[], p_params pg_catalog.text[], p_path pg_catalog.text) '
            'RETURNS pg_catalog.timestamptz LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp '
            'AS %L', v_name, pg_catalog.format('SELECT schedule._job_exec($1::pg_catalog.text[], $3::pg_catalog.text, %L::pg_catalog.bool)',
                                          p_want_value));
    ELSE
        -- a job with params binds them to $1..$n: the statement needs one USING list per count
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION pg_temp.%I(p_sql pg_catalog.text[], p_params pg_catalog.text[], p_path pg_catalog.text) '
            'RETURNS pg_catalog.timestamptz LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp '
            'AS %L', v_name, pg_catalog.format($body$
DECLARE
    v_sql pg_catalog.text;
    v_result pg_catalog.timestamptz;
BEGIN
    PERFORM pg_catalog.set_config('search_path', p_path, true);
    FOREACH v_sql IN ARRAY p_sql LOOP
        EXECUTE v_sql%s%s;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM schedule._no_cursor_with_hold();
    RETURN v_result;
END$body$, CASE WHEN p_want_value THEN ' INTO v_result' ELSE '' END, v_using));
    END IF;
    PERFORM pg_catalog.set_config('check_function_bodies', v_check, true);
    EXECUTE pg_catalog.format('ALTER FUNCTION pg_temp.%I(%s) OWNER TO %I', v_name, v_args, p_role);
    -- SET LOCAL ROLE: schedule.* functions called by the job see run_as as the caller
    PERFORM pg_catalog.set_config('role', p_role, true);
    -- the run_as role's normal search_path: ALTER ROLE ... IN DATABASE, ALTER ROLE, ALTER
    -- DATABASE, else the server's
    -- (the engine's queries here take no variables where they can: a query with variables is
    -- planned anew for its first five runs in a session, a plain one once)
    SELECT pg_catalog.substr(cfg, 13) INTO v_path
      FROM pg_catalog.pg_db_role_setting s CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) AS cfg
     WHERE s.setrole IN (0, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user))
       AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                                  WHERE d.datname = pg_catalog.current_database()))
       AND (s.setrole <> 0 OR s.setdatabase <> 0)
       AND pg_catalog.split_part(cfg, '=', 1) = 'search_path'
     ORDER BY CASE WHEN s.setrole <> 0 AND s.setdatabase <> 0 THEN 0 WHEN s.setrole <> 0 THEN 1 ELSE 2 END
     LIMIT 1;
    v_path := coalesce(v_path, p_server_path);
    EXECUTE pg_catalog.format('SELECT pg_temp.%I($1, $2, $3)', v_name) INTO v_value USING p_sql, p_params, v_path;
    RESET ROLE;
    -- the job may have changed search_path at session level
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false);
    EXECUTE pg_catalog.format('DROP FUNCTION pg_temp.%I(%s)', v_name, v_args);
    SELECT pg_catalog.jsonb_object_agg(h.key, pg_catalog.jsonb_build_array(h.item, h.changes)) INTO v_after
      FROM schedule._commit_hazards() h;
    IF v_after IS NOT NULL THEN  -- such objects exist (rare): did the job's rows change theirs?
        SELECT pg_catalog.string_agg(a.value ->> 0, '; ' ORDER BY (a.value ->> 0) COLLATE "C") INTO v_hits
          FROM pg_catalog.jsonb_each(v_after) a
         WHERE a.value -> 1 = 'null'::jsonb
            OR (a.value ->> 1)::bigint > coalesce((v_before ->> a.key)::bigint, 0);
    END IF;
    IF v_hits IS NOT NULL THEN
        RAISE EXCEPTION 'the job''s transaction was rolled back: it changed a table with a %, whose code would run '
                        'when the engine commits, outside the job''s role (make the constraint NOT DEFERRABLE, or '
                        'do this work outside schedule jobs)', v_hits USING ERRCODE = '42501';
    END IF;
    RETURN v_value;
END $fn$;

-- A run's settings in its session, for get_self_id() and transaction_state inside the job
-- (session settings: they outlive a failed job, for onrollback and next_time_statement;
-- the session reset clears them). One place for scheduled runs and one-time jobs.
CREATE FUNCTION schedule._job_settings(p_job bigint, p_kind text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog AS $$
    SELECT pg_catalog.set_config('schedule.job_id', p_job::pg_catalog.text, false),
           pg_catalog.set_config('schedule.job_kind', p_kind, false),
           pg_catalog.set_config('schedule.transaction_state', 'running', false);
$$;

CREATE FUNCTION schedule._run_cron(p_run_id bigint, p_job integer, p_role text, p_sql text[], p_server_path text,
                                   p_finished timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM schedule._job_settings(p_job, 'cron');
    PERFORM schedule._sandbox_run(p_role, p_sql, NULL, p_server_path, false);
    -- one plan for the bookkeeping, kept (the job is over; LOCAL: ends with this transaction)
    PERFORM pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true);
    -- the outcome commits with the job's changes; finished: the engine's clock when it is not
    -- the wall clock (tests), else now, never before the start
    UPDATE schedule.cron_run
       SET state = 'done', pid = NULL,
           finished = coalesce(p_finished, greatest(started, pg_catalog.clock_timestamp()))
     WHERE run_id = p_run_id;
END $$;

CREATE FUNCTION schedule._claim_cron_batch(p_key bigint, p_node text, p_now timestamptz, p_engine text,
                                           p_limit integer, p_pids integer[], p_starts timestamptz[])
RETURNS TABLE (run_id bigint, cron integer, pid integer, scheduled_at timestamptz, commands text[],
               same_transaction boolean, onrollback text, next_time_statement text, executor text,
               max_run_time interval, max_instances integer, end_date timestamptz, def_version integer)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    -- claims are serialized per database: the cluster-wide max_workers count must be exact
    PERFORM pg_catalog.pg_advisory_xact_lock(p_key);
    -- below the limit, the oldest due runs, one per idle executor, each recorded under that
    -- executor's backend (pid, backend_start: what recovery checks); a job never gets more runs
    -- than its max_instances allows
    RETURN QUERY
    WITH free AS (
        SELECT p_limit - (SELECT count(*) FROM schedule.cron_run w WHERE w.state = 'working' AND w.node = p_node) AS n),
    walk AS (
        SELECT r.run_id, r.cron, r.scheduled_at, c.max_instances,
               (SELECT count(*) FROM schedule.cron_run w WHERE w.cron = r.cron AND w.state = 'working') AS running
          FROM schedule.cron_run r JOIN schedule.cron c ON c.id = r.cron
         WHERE r.state = 'planned' AND r.node = p_node AND r.scheduled_at <= p_now
           AND (r.deadline IS NULL OR r.deadline >= p_now)
           AND (SELECT count(*) FROM schedule.cron_run w WHERE w.cron = r.cron AND w.state = 'working') < c.max_instances
         ORDER BY r.scheduled_at, r.run_id
         LIMIT greatest(0, least(cardinality(p_pids), (SELECT n FROM free)))),
    pick AS (
        SELECT x.run_id, row_number() OVER (ORDER BY x.scheduled_at, x.run_id) AS slot
          FROM (SELECT w.*, row_number() OVER (PARTITION BY w.cron ORDER BY w.scheduled_at, w.run_id) AS k
                  FROM walk w) x
         WHERE x.running + x.k <= x.max_instances),
    claimed AS (
        UPDATE schedule.cron_run r
           SET state = 'working', started = p_now, engine = p_engine, pid = p_pids[p.slot],
               backend_start = p_starts[p.slot]
          FROM pick p, schedule.cron c
         WHERE r.run_id = p.run_id AND c.id = r.cron
        RETURNING r.run_id, r.cron, r.pid, r.scheduled_at, c.commands, c.same_transaction, c.onrollback,
                  c.next_time_statement, c.executor, c.max_run_time, c.max_instances, c.end_date, c.def_version)
    SELECT * FROM claimed;
END $$;

-- what DISCARD ALL does except DISCARD PLANS (see above), then the engine's own settings
CREATE OR REPLACE FUNCTION schedule._reset_session() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
    EXECUTE 'CLOSE ALL';
    EXECUTE 'SET SESSION AUTHORIZATION DEFAULT';
    EXECUTE 'RESET ALL';
    EXECUTE 'DEALLOCATE ALL';
    EXECUTE 'UNLISTEN *';
    PERFORM pg_advisory_unlock_all();
    EXECUTE 'DISCARD TEMP';
    EXECUTE 'DISCARD SEQUENCES';
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', false);
    IF current_setting('server_version_num')::int >= 140000 THEN
        PERFORM set_config('client_connection_check_interval', '1000', false);
    END IF;
END $$;

GRANT EXECUTE ON FUNCTION schedule._job_exec(text[], text, boolean), schedule._no_cursor_with_hold() TO PUBLIC;
REVOKE EXECUTE ON FUNCTION schedule._job_settings(bigint, text), schedule._sandbox_run(text, text[], text[], text, boolean),
    schedule._run_cron(bigint, integer, text, text[], text, timestamptz),
    schedule._claim_cron_batch(bigint, text, timestamptz, text, integer, integer[], timestamptz[]) FROM PUBLIC;
