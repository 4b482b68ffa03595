-- timetable: the engine's fast path (bench/bench_timetable.py targets of issue 3).
--
-- * chain_state keeps what the scheduler needs to claim a due chain (its schedule text,
--   time zone and missed-run policy, copied when the due time is computed), so finding due
--   chains reads chain_state's due index only: no join to timetable.chain per tick.
-- * a partial index for the chains any engine may run (client_name NULL) turns "the
--   earliest next firing" into a one-row probe, however many chains are defined.
-- * start_run_or_raise: the start of a run that the executor sends in the same round trip
--   as BEGIN and the first task; it raises instead of recording a skip, so nothing after it
--   runs (the engine then calls start_run, which records the skip).
-- * _log_executions: execution_log rows written on the chain's own connection (inside the
--   chain transaction for a success, right after the ROLLBACK for a failure).

ALTER TABLE timetable.chain_state
    ADD COLUMN run_at      TEXT,   -- copy of chain.run_at when next_due_at was computed
    ADD COLUMN time_zone   TEXT,   -- copy of chain_option.time_zone
    ADD COLUMN missed_runs TEXT;   -- copy of chain_option.missed_runs (NULL: run_once)

-- recompute every due time once, so the copies are filled
UPDATE timetable.chain_state SET dirty = true, next_due_at = NULL, version = version + 1;

-- room on each page, so that the per-run updates of last_* (start, finish) are HOT updates
-- (no index entries), as none of them changes an indexed column
ALTER TABLE timetable.chain_state SET (fillfactor = 50);

CREATE INDEX chain_state_due_anyone_idx ON timetable.chain_state (next_due_at)
    WHERE client_name IS NULL AND next_due_at IS NOT NULL;

-- Like start_run, but a run that cannot start raises (SQLSTATE PGTT1: not claimed any more
-- or chain deleted; PGTT2: max_instances reached) and so changes nothing.  p_backend_start:
-- the calling backend's start time, which the engine read once per connection (reading it
-- from pg_stat_activity here would cost more than the rest of the function).
CREATE FUNCTION timetable.start_run_or_raise(p_run_id bigint, p_started timestamptz, p_default_max integer,
                                             p_backend_start timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_chain bigint;
    v_client text;
    v_max integer;
    n int;
BEGIN
    UPDATE timetable.chain_run r
       SET status = 'running', started_at = p_started, backend_pid = pg_backend_pid(), backend_start = p_backend_start
     WHERE r.run_id = p_run_id AND r.status = 'claimed'
    RETURNING r.chain_id, r.client_name INTO v_chain, v_client;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PGTT1', MESSAGE = format('run %s is not claimed any more', p_run_id);
    END IF;
    -- the chain's state row serialises starts of the same chain across engines
    UPDATE timetable.chain_state s SET last_run_id = p_run_id, last_started_at = p_started, last_status = 'running'
     WHERE s.chain_id = v_chain;
    SELECT c.max_instances INTO v_max FROM timetable.chain c WHERE c.chain_id = v_chain;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PGTT1', MESSAGE = format('chain %s was deleted', v_chain);
    END IF;
    SELECT count(*) INTO n FROM timetable.chain_run x
     WHERE x.chain_id = v_chain AND x.status = 'running' AND x.run_id <> p_run_id;
    IF n >= coalesce(v_max, p_default_max) THEN
        RAISE EXCEPTION USING ERRCODE = 'PGTT2', MESSAGE = format('max_instances (%s) reached', coalesce(v_max, p_default_max));
    END IF;
    INSERT INTO timetable.active_chain (chain_id, client_name, started_at) VALUES (v_chain, v_client, p_started);
END $$;

-- execution_log rows from a JSON array of
-- [chain_id, task_id, txid, last_run, finished, returncode, ignore_error, kind, command, output, params].
-- SECURITY DEFINER: a task may have left SET ROLE behind in the chain transaction.
CREATE FUNCTION timetable._log_executions(p_session bigint, p_client text, p_rows json)
RETURNS integer LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH ins AS (
        INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, pid, returncode,
                                             ignore_error, kind, command, output, client_name, params)
        SELECT (r->>0)::bigint, (r->>1)::bigint, (r->>2)::bigint, (r->>3)::timestamptz, (r->>4)::timestamptz,
               p_session, (r->>5)::integer, (r->>6)::boolean, (r->>7)::timetable.command_kind, r->>8, r->>9,
               p_client, r->>10
          FROM json_array_elements(p_rows) AS r
        RETURNING 1)
    SELECT count(*)::integer FROM ins
$$;

-- finish_run as in 0001, except that concurrent finishes of the same chain each free a
-- different active_chain row (0001 could pick the same row twice and leave one behind), and
-- a run that never started (released claim) frees none.
CREATE OR REPLACE FUNCTION timetable.finish_run(p_run_id bigint, p_status text, p_reason text, p_finished timestamptz,
                                                p_txid bigint DEFAULT NULL, p_next_due timestamptz DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    r timetable.chain_run;
BEGIN
    UPDATE timetable.chain_run x
       SET status = p_status, reason = p_reason, finished_at = p_finished, txid = coalesce(p_txid, x.txid)
     WHERE x.run_id = p_run_id AND x.status IN ('running', 'claimed')
    RETURNING * INTO r;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF r.started_at IS NOT NULL THEN  -- it had started: it holds an active_chain row
        DELETE FROM timetable.active_chain a
         WHERE a.ctid = (SELECT a2.ctid FROM timetable.active_chain a2
                          WHERE a2.chain_id = r.chain_id AND a2.client_name = r.client_name
                          LIMIT 1 FOR UPDATE SKIP LOCKED);
    END IF;
    UPDATE timetable.chain_state s
       SET last_finished_at = p_finished, last_status = p_status,
           next_due_at = CASE WHEN p_next_due IS NOT NULL AND NOT s.dirty AND s.next_due_at IS NULL
                              THEN p_next_due ELSE s.next_due_at END
     WHERE s.chain_id = r.chain_id;
    IF p_next_due IS NOT NULL THEN
        PERFORM pg_notify('pgtt_timetable_changed', '');
    END IF;
    RETURN true;
END $$;

-- The end of a run on its own connection, in one call: session advisory locks a task left
-- behind, the run's execution_log rows (JSON as for _log_executions), finish_run.
CREATE FUNCTION timetable.end_run(p_run_id bigint, p_status text, p_reason text, p_finished timestamptz,
                                  p_txid bigint, p_next_due timestamptz, p_session bigint, p_client text,
                                  p_rows json)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_unlock_all();
    IF p_rows IS NOT NULL THEN
        INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, pid, returncode,
                                             ignore_error, kind, command, output, client_name, params)
        SELECT (r->>0)::bigint, (r->>1)::bigint, (r->>2)::bigint, (r->>3)::timestamptz, (r->>4)::timestamptz,
               p_session, (r->>5)::integer, (r->>6)::boolean, (r->>7)::timetable.command_kind, r->>8, r->>9,
               p_client, r->>10
          FROM json_array_elements(p_rows) AS r;
    END IF;
    RETURN timetable.finish_run(p_run_id, p_status, p_reason, p_finished, p_txid, p_next_due);
END $$;

-- claim_firings as in 0001, except that chain_state is reached by primary key (= ANY) also
-- when a claim is big: the planner preferred a hash join over all of chain_state for a
-- claim of ~5 % of the chains, which costs O(chains defined) (tests/test_timetable_plans.py).
CREATE OR REPLACE FUNCTION timetable.claim_firings(p_client text, p_session bigint,
                                        p_chain bigint[], p_due timestamptz[], p_trigger text[],
                                        p_old timestamptz[], p_new timestamptz[], p_version bigint[])
RETURNS TABLE (run_id bigint, chain_id bigint, due_at timestamptz)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(p_chain, p_due, p_trigger, p_old, p_new, p_version)
               AS i(chain_id, due_at, trig, old_due, new_due, version)
    ), per_chain AS (
        SELECT DISTINCT ON (i.chain_id) i.chain_id, i.old_due, i.new_due, i.version,
               max(i.due_at) OVER (PARTITION BY i.chain_id) AS last_due
          FROM input i ORDER BY i.chain_id
    ), won AS (
        UPDATE timetable.chain_state s
           SET next_due_at = p.new_due, last_due_at = coalesce(p.last_due, s.last_due_at)
          FROM per_chain p
         WHERE s.chain_id = ANY (p_chain)  -- by primary key, however many chains are defined
           AND s.chain_id = p.chain_id AND s.next_due_at = p.old_due AND s.version = p.version AND NOT s.dirty
        RETURNING s.chain_id
    )
    INSERT INTO timetable.chain_run AS r (chain_id, due_at, trigger, client_name, session_id, backend_pid, backend_start)
    SELECT i.chain_id, i.due_at, i.trig, p_client, p_session, pg_backend_pid(),
           (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_backend_pid())
      FROM input i JOIN won w ON w.chain_id = i.chain_id
     WHERE i.due_at IS NOT NULL
    ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING
    RETURNING r.run_id, r.chain_id, r.due_at;
END $$;

