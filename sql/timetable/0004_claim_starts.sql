-- timetable: the claim starts the run; successful runs end in batches.
--
-- Until 0003 every scheduled run cost three transactions on the server: the claim (batched),
-- a start of its own (start_firing: insert the chain_run row as 'running', committed before
-- the chain transaction so that other engines count it for max_instances), and the chain
-- transaction, which also updated the run's row at its end.  Now:
--
-- * The claim starts the run.  The claim that wins a firing (the compare-and-set on
--   chain_state, as before) inserts the firing's chain_run row directly as 'running' -- or
--   as 'skipped' when max_instances is reached -- for the whole batch in one statement, and
--   the worker only runs the chain transaction.
-- * The end of a successful run is recorded after its chain transaction commits, by the
--   engine's log writer, for many runs in one statement (close_runs): updating each run's
--   row inside its own chain transaction cost more server time than the rest of a trivial
--   run (bench/bench_timetable.py (a)).  The chain transaction still writes the run's
--   execution_log rows, now with the run's id (execution_log.run_id, a compatible
--   addition): a committed chain transaction leaves committed rows, so the outcome of a run
--   whose engine died between COMMIT and close_runs is known (reap_dead_runs asks
--   txid_status() about the txid in those rows).  A failed run is still closed at once on
--   its own connection (finish_run), after the ROLLBACK.
-- * The run's row names the claiming backend (the engine's control connection) as its
--   owner, so reap_dead_runs ends it when that engine dies, before, during or after the
--   run, and marks it reaped; close_runs may still correct a reaped run (its chain
--   transaction committed after all: the engine had only lost its control connection).
-- * started_at is the planned start (the due time, or the claim time if later) until the
--   run ends; the end writes the real start.
-- * The claim_session bookkeeping of 0003 (claimed firings without a row) is not needed
--   any more: every claimed firing has its row from the claim on.
-- * Functions only the per-worker start and end used are dropped: start_firing,
--   start_firing_slow, start_run_or_raise, drop_firings, end_run and the old claim_due.

DROP FUNCTION timetable.claim_due(text, bigint, bigint[], timestamptz[], text[], timestamptz[], timestamptz[], bigint[]);
DROP FUNCTION timetable.start_firing(bigint, bigint, timestamptz, text, text, bigint, timestamptz, integer, timestamptz);
DROP FUNCTION timetable.start_firing_slow(bigint, bigint, timestamptz, text, text, bigint, timestamptz, integer,
                                          timestamptz);
DROP FUNCTION timetable.drop_firings(text, bigint, bigint[], bigint[], timestamptz[], text[], text, timestamptz);
DROP FUNCTION timetable.start_run_or_raise(bigint, timestamptz, integer, timestamptz);
DROP FUNCTION timetable.end_run(bigint, text, text, timestamptz, bigint, timestamptz, bigint, text, json);

-- Claim firings and start them.  Per chain, a compare-and-set of chain_state.next_due_at from
-- the value the engine read (p_old) to the next one it computed (p_new) decides the ONE
-- winner among all engines.  For each won firing (p_due not NULL) a chain_run row is
-- inserted: 'running', owned by the calling backend (p_backend_start: its start time, read
-- once by the engine), or 'skipped' with the reason when the chain's max_instances
-- (NULL: p_default_max) open runs are reached.  Rows of p_chain with p_due NULL only advance
-- next_due_at (the skip policy).  Returns (run_id, chain_id, due_at, status).
CREATE FUNCTION timetable.claim_due(p_client text, p_session bigint, p_backend_start timestamptz,
                                    p_default_max integer, p_chain bigint[], p_due timestamptz[],
                                    p_trigger text[], p_old timestamptz[], p_new timestamptz[],
                                    p_version bigint[])
RETURNS TABLE (run_id bigint, chain_id bigint, due_at timestamptz, status text)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
#variable_conflict use_column
DECLARE
    v_won bigint[];
BEGIN
    -- 1. the compare-and-set: the chain_state rows we win stay locked until our COMMIT
    WITH per_chain AS (
        SELECT i.chain_id, min(i.old_due) AS old_due, min(i.new_due) AS new_due, min(i.version) AS version,
               max(i.due_at) AS last_due
          FROM unnest(p_chain, p_due, p_old, p_new, p_version) AS i(chain_id, due_at, old_due, new_due, version)
         GROUP BY i.chain_id
    ), won AS (
        UPDATE timetable.chain_state s
           SET next_due_at = p.new_due, last_due_at = coalesce(p.last_due, s.last_due_at)
          FROM per_chain p
         WHERE s.chain_id = ANY (p_chain)  -- by primary key, however many chains are defined
           AND s.chain_id = p.chain_id AND s.next_due_at = p.old_due AND s.version = p.version AND NOT s.dirty
        RETURNING s.chain_id)
    SELECT array_agg(w.chain_id) INTO v_won FROM won w;
    IF v_won IS NULL THEN
        RETURN;
    END IF;
    -- 2. the runs, in a new statement: its snapshot comes after the row locks above, so the
    --    count of open runs sees every start of these chains committed before ours
    RETURN QUERY
    WITH firing AS (
        SELECT i.chain_id, i.due_at, i.trig, row_number() OVER (PARTITION BY i.chain_id ORDER BY i.due_at) AS nth
          FROM unnest(p_chain, p_due, p_trigger) AS i(chain_id, due_at, trig)
         WHERE i.due_at IS NOT NULL AND i.chain_id = ANY (v_won)
    ), room AS MATERIALIZED (  -- one count per chain, not one per use below
        SELECT f.chain_id, coalesce(c.max_instances, p_default_max) AS max_instances,
               (SELECT count(*) FROM timetable.chain_run x
                 WHERE x.chain_id = f.chain_id AND x.status IN ('claimed', 'running')) AS open_runs
          FROM (SELECT DISTINCT f.chain_id FROM firing f) f
          JOIN timetable.chain c ON c.chain_id = f.chain_id
    ), ins AS (
        INSERT INTO timetable.chain_run AS r (chain_id, due_at, trigger, client_name, session_id, backend_pid,
                                              backend_start, claimed_at, started_at, finished_at, status, reason)
        SELECT f.chain_id, f.due_at, f.trig, p_client, p_session, pg_backend_pid(), p_backend_start, now(),
               greatest(f.due_at, now()),
               CASE WHEN f.nth + m.open_runs > m.max_instances THEN now() END,
               CASE WHEN f.nth + m.open_runs > m.max_instances THEN 'skipped' ELSE 'running' END,
               CASE WHEN f.nth + m.open_runs > m.max_instances
                    THEN format('max_instances (%s) reached: %s run(s) in progress', m.max_instances,
                                m.open_runs + least(f.nth - 1, greatest(m.max_instances - m.open_runs, 0))) END
          FROM firing f JOIN room m ON m.chain_id = f.chain_id
        ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING
        RETURNING r.run_id, r.chain_id, r.due_at, r.status, r.started_at
    ), latest AS (
        SELECT DISTINCT ON (i.chain_id) i.chain_id, i.run_id, i.started_at
          FROM ins i WHERE i.status = 'running'
         ORDER BY i.chain_id, i.due_at DESC
    ), st AS (
        UPDATE timetable.chain_state s
           SET last_run_id = l.run_id, last_started_at = l.started_at, last_status = 'running'
          FROM latest l
         WHERE s.chain_id = l.chain_id
    )
    SELECT i.run_id, i.chain_id, i.due_at, i.status FROM ins i;
END $$;

ALTER TABLE timetable.execution_log ADD COLUMN run_id BIGINT;
COMMENT ON COLUMN timetable.execution_log.run_id IS
    'pgtt-tui: the chain_run the execution belongs to (NULL in rows written by other tools)';
ALTER TABLE timetable.chain_run ADD COLUMN reaped BOOLEAN NOT NULL DEFAULT false;
COMMENT ON COLUMN timetable.chain_run.reaped IS
    'pgtt-tui: ended by reap_dead_runs because its engine lost its database session';

-- The execution_log rows the engine writes on a chain's own connection (0002's function, now
-- with the run id as the twelfth element of each row).
CREATE OR REPLACE FUNCTION timetable._log_executions(p_session bigint, p_client text, p_rows json)
RETURNS integer LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH ins AS (
        INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, pid, returncode,
                                             ignore_error, kind, command, output, client_name, params, run_id)
        SELECT (r->>0)::bigint, (r->>1)::bigint, (r->>2)::bigint, (r->>3)::timestamptz, (r->>4)::timestamptz,
               p_session, (r->>5)::integer, (r->>6)::boolean, (r->>7)::timetable.command_kind, r->>8, r->>9,
               p_client, r->>10, (r->>11)::bigint
          FROM json_array_elements(p_rows) AS r
        RETURNING 1)
    SELECT count(*)::integer FROM ins
$$;

-- The chain's state at the end of one of its runs (last result; for @after chains the next
-- due time, unless the chain was edited meanwhile).  Rows are locked in chain_id order (by
-- primary key, like claim_due's compare-and-set), so a batch of ends and a batch of claims
-- cannot deadlock.
CREATE FUNCTION timetable._chain_ended(p_chain bigint[], p_status text[], p_finished timestamptz[],
                                       p_next_due timestamptz[])
RETURNS void LANGUAGE plpgsql SET enable_seqscan = off AS $$
BEGIN
    UPDATE timetable.chain_state s
       SET last_finished_at = e.finished, last_status = e.status,
           next_due_at = CASE WHEN e.next_due IS NOT NULL AND NOT s.dirty AND s.next_due_at IS NULL
                              THEN e.next_due ELSE s.next_due_at END
      FROM (SELECT DISTINCT ON (i.chain_id) i.chain_id, i.status, i.finished, i.next_due
              FROM unnest(p_chain, p_status, p_finished, p_next_due) AS i(chain_id, status, finished, next_due)
             ORDER BY i.chain_id, i.finished DESC) e
     WHERE s.chain_id = ANY (p_chain) AND s.chain_id = e.chain_id;
    IF EXISTS (SELECT 1 FROM unnest(p_next_due) AS d WHERE d IS NOT NULL) THEN
        PERFORM pg_notify('pgtt_timetable_changed', '');
    END IF;
END $$;

-- The ends of successful runs, many at once (the engine's log writer, after each run's chain
-- transaction committed).  A run still open, or ended by the reaper meanwhile (its chain
-- transaction committed after all), gets its result; anything else is left alone, so a
-- batch written twice changes nothing the second time.  Returns the number of runs ended.
CREATE FUNCTION timetable.close_runs(p_run bigint[], p_status text[], p_reason text[], p_started timestamptz[],
                                     p_finished timestamptz[], p_txid bigint[], p_next_due timestamptz[])
RETURNS integer LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_chain bigint[]; v_status text[]; v_finished timestamptz[]; v_next timestamptz[];
BEGIN
    WITH fin AS (
        UPDATE timetable.chain_run x
           SET status = i.status, finished_at = i.finished, started_at = coalesce(i.started, x.started_at),
               txid = coalesce(i.txid, x.txid), reaped = false,
               reason = CASE WHEN x.reaped
                             THEN concat_ws('; ', i.reason, 'its chain transaction committed after the reaper '
                                                           'had recorded: ' || x.reason)
                             ELSE i.reason END
          FROM unnest(p_run, p_status, p_reason, p_started, p_finished, p_txid, p_next_due)
               AS i(run_id, status, reason, started, finished, txid, next_due)
         WHERE x.run_id = ANY (p_run) AND x.run_id = i.run_id AND (x.status IN ('claimed', 'running') OR x.reaped)
        RETURNING x.chain_id, i.status, i.finished, i.next_due)
    SELECT array_agg(f.chain_id ORDER BY f.chain_id), array_agg(f.status ORDER BY f.chain_id),
           array_agg(f.finished ORDER BY f.chain_id), array_agg(f.next_due ORDER BY f.chain_id)
      INTO v_chain, v_status, v_finished, v_next FROM fin f;
    IF v_chain IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM timetable._chain_ended(v_chain, v_status, v_finished, v_next);
    RETURN cardinality(v_chain);
END $$;

-- The end of one run (a failed run after its ROLLBACK and on_error, a run ended from another
-- connection, a claimed run that will not start): 0003's finish_run, now also with the
-- run's real start (p_started, NULL: keep the planned one) and the chain's state through
-- _chain_ended, as close_runs does for many.  Returns whether the run was still open.
DROP FUNCTION timetable.finish_run(bigint, text, text, timestamptz, bigint, timestamptz);
CREATE FUNCTION timetable.finish_run(p_run_id bigint, p_status text, p_reason text, p_finished timestamptz,
                                     p_txid bigint DEFAULT NULL, p_next_due timestamptz DEFAULT NULL,
                                     p_started timestamptz DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_chain bigint;
BEGIN
    UPDATE timetable.chain_run x
       SET status = p_status, reason = p_reason, finished_at = p_finished,
           started_at = coalesce(p_started, x.started_at), txid = coalesce(p_txid, x.txid)
     WHERE x.run_id = p_run_id AND x.status IN ('running', 'claimed')
    RETURNING x.chain_id INTO v_chain;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM timetable._chain_ended(ARRAY[v_chain], ARRAY[p_status], ARRAY[p_finished], ARRAY[p_next_due]);
    RETURN true;
END $$;

-- Mark runs whose owning backend is gone as failed (with the reason) and drop dead sessions.
-- A claimed run is owned by the claiming engine's control connection from the claim on, so
-- 0003's second pass (firings claimed by a dead engine without a row) is gone with
-- chain_state.claim_session.  Any engine may call it.
CREATE OR REPLACE FUNCTION timetable.reap_dead_runs()
RETURNS TABLE (run_id bigint, chain_id bigint, reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    DELETE FROM timetable.active_session s WHERE NOT timetable._backend_alive(s.server_pid, NULL);
    RETURN QUERY
    WITH dead AS (
        SELECT r.run_id, r.chain_id, r.client_name, r.session_id, r.backend_pid, r.status, r.claimed_at,
               -- the run's chain transaction committed: its execution_log rows carry its txid
               (SELECT max(e.txid) FROM timetable.execution_log e
                 WHERE e.chain_id = r.chain_id AND e.finished >= r.claimed_at - interval '1 day'
                   AND e.run_id = r.run_id AND e.txid IS NOT NULL AND e.txid <> 0
                   AND txid_status(e.txid) = 'committed') AS committed_txid
          FROM timetable.chain_run r
         WHERE r.status IN ('claimed', 'running')
           AND NOT timetable._backend_alive(r.backend_pid, r.backend_start)
           FOR UPDATE OF r
    ), ended AS (
        UPDATE timetable.chain_run r
           SET status = CASE WHEN d.committed_txid IS NOT NULL THEN 'succeeded' ELSE 'failed' END,
               finished_at = now(), reaped = true, txid = coalesce(d.committed_txid, r.txid),
               reason = CASE WHEN d.committed_txid IS NOT NULL
                             THEN format('engine %s (session %s) lost its database session (backend %s) after the '
                                         'run committed; recorded by reap_dead_runs',
                                         d.client_name, d.session_id, d.backend_pid)
                             ELSE format('engine %s (session %s) lost its database session (backend %s) while '
                                         'the run was %s', d.client_name, d.session_id, d.backend_pid, d.status)
                        END
          FROM dead d
         WHERE r.run_id = d.run_id
        RETURNING r.run_id, r.chain_id, r.status, r.reason
    ), st AS (
        UPDATE timetable.chain_state s
           SET last_status = e.status, last_finished_at = now(),
               dirty = s.dirty OR s.next_due_at IS NULL, version = s.version + 1
          FROM ended e
         WHERE s.chain_id = e.chain_id
    )
    SELECT e.run_id, e.chain_id, e.reason FROM ended e;
END $$;

ALTER TABLE timetable.chain_state DROP COLUMN claim_session;

-- The due indexes without a predicate on next_due_at.  With "WHERE next_due_at IS NOT NULL",
-- statistics gathered while every chain was still waiting for its first due time (a fresh
-- install, a big import) made the planner believe the index was empty, and the generic plans
-- PL/pgSQL caches for the life of the engine's connection then scanned the whole due index
-- to find a handful of chains by id, in every claim (found by bench/bench_timetable.py (a):
-- ~0.6 ms per claim instead of ~0.05).  Without it the planner reaches rows by primary key,
-- whatever the statistics say; the NULLs this indexes in addition are few (paused chains).
DROP INDEX timetable.chain_state_due_idx;
CREATE INDEX chain_state_due_idx ON timetable.chain_state (client_name, next_due_at);
DROP INDEX timetable.chain_state_due_anyone_idx;
CREATE INDEX chain_state_due_anyone_idx ON timetable.chain_state (next_due_at) WHERE client_name IS NULL;
