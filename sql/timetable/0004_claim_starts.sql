-- timetable: the claim starts the run.
--
-- Until 0003 every scheduled run cost three transactions on the server: the claim (batched),
-- a start of its own (start_firing: insert the chain_run row as 'running', committed before
-- the chain transaction so that other engines count it for max_instances), and the chain
-- transaction.  A run's start is now part of the claim: the claim that wins a firing (the
-- compare-and-set on chain_state, as before) inserts the firing's chain_run row directly as
-- 'running' -- or as 'skipped' when max_instances is reached -- for the whole batch in one
-- statement, and the worker only runs the chain transaction, which ends with close_run.
--
-- * The run's row names the claiming backend (the engine's control connection) as its
--   owner, so reap_dead_runs fails it when that engine dies, before or during the run;
--   close_run then refuses to commit the chain transaction of a run that somebody else
--   already ended (SQLSTATE PGTT3), so a reaped run cannot also succeed.
-- * started_at is the planned start (the due time, or the claim time if later) until the
--   run ends; close_run writes the real start.
-- * The claim_session bookkeeping of 0003 (claimed firings without a row) is not needed
--   any more: every claimed firing has its row from the claim on.
-- * Functions only the per-worker start used are dropped: start_firing, start_firing_slow,
--   drop_firings and the old claim_due.

DROP FUNCTION timetable.claim_due(text, bigint, bigint[], timestamptz[], text[], timestamptz[], timestamptz[], bigint[]);
DROP FUNCTION timetable.start_firing(bigint, bigint, timestamptz, text, text, bigint, timestamptz, integer, timestamptz);
DROP FUNCTION timetable.start_firing_slow(bigint, bigint, timestamptz, text, text, bigint, timestamptz, integer,
                                          timestamptz);
DROP FUNCTION timetable.drop_firings(text, bigint, bigint[], bigint[], timestamptz[], text[], text, timestamptz);

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

-- The end of a run, in the chain transaction on the run's own connection (success: before
-- COMMIT; failure: after the ROLLBACK and on_error): the run's result and real start, the
-- chain's state (for @after chains also the next due time), and the session advisory locks a
-- task left behind.  A run that is not open any more (the reaper failed it because its
-- engine's control connection was lost) returns false, or with p_strict raises PGTT3 so that
-- the chain transaction does not commit the work of a run recorded as failed.
CREATE FUNCTION timetable.close_run(p_run_id bigint, p_status text, p_reason text, p_started timestamptz,
                                    p_finished timestamptz, p_txid bigint, p_next_due timestamptz,
                                    p_strict boolean)
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
        IF p_strict THEN
            RAISE EXCEPTION USING ERRCODE = 'PGTT3',
                MESSAGE = format('run %s was already ended by another session (see its reason)', p_run_id);
        END IF;
        RETURN false;
    END IF;
    UPDATE timetable.chain_state s
       SET last_finished_at = p_finished, last_status = p_status,
           next_due_at = CASE WHEN p_next_due IS NOT NULL AND NOT s.dirty AND s.next_due_at IS NULL
                              THEN p_next_due ELSE s.next_due_at END
     WHERE s.chain_id = v_chain;
    PERFORM pg_advisory_unlock_all();
    IF p_next_due IS NOT NULL THEN
        PERFORM pg_notify('pgtt_timetable_changed', '');
    END IF;
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
        UPDATE timetable.chain_run r
           SET status = 'failed', finished_at = now(),
               reason = format('engine %s (session %s) lost its database session (backend %s) while the run was %s',
                               r.client_name, r.session_id, r.backend_pid, r.status)
         WHERE r.status IN ('claimed', 'running')
           AND NOT timetable._backend_alive(r.backend_pid, r.backend_start)
        RETURNING r.run_id, r.chain_id, r.reason
    ), st AS (
        UPDATE timetable.chain_state s
           SET last_status = 'failed', last_finished_at = now(),
               dirty = s.dirty OR s.next_due_at IS NULL, version = s.version + 1
          FROM dead d
         WHERE s.chain_id = d.chain_id
    )
    SELECT d.run_id, d.chain_id, d.reason FROM dead d;
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
