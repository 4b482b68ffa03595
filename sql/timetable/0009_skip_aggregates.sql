-- timetable: skipped firings are aggregated; the reaper says what it recorded.
--
-- * A chain that keeps hitting max_instances no longer costs one chain_run row per skipped
--   firing (an "@every 1 microsecond" chain wrote 700,000 rows in 25 s).  The skipped
--   firings of one chain are recorded in ONE 'skipped' row per minute: due_at is the first
--   skipped firing, last_due_at the last one, skipped_firings how many there were,
--   started_at when the first was skipped, finished_at when the last was (never before
--   started_at), and the reason the max_instances reached.  A row with skipped_firings
--   NULL stands for one firing, as before (ad-hoc runs skipped by start_run).  Nothing is
--   lost: sum(coalesce(skipped_firings, 1)) over the skipped rows is the number of skipped
--   firings.  The firing key (chain_id, due_at) still holds: the compare-and-set on
--   chain_state decides each firing's claim, and a later firing merged into an aggregate
--   was never claimed by anyone else.
-- * claim_due keeps its signature: it returns one row per firing it won, a skipped one
--   with the run_id of the aggregate row that records it.
-- * reap_dead_runs returns the status it recorded (succeeded: the run's chain transaction
--   had committed), so the engine's log line says what happened.

ALTER TABLE timetable.chain_run ADD COLUMN skipped_firings INTEGER;
ALTER TABLE timetable.chain_run ADD COLUMN last_due_at TIMESTAMPTZ;
COMMENT ON COLUMN timetable.chain_run.skipped_firings IS
    'pgtt-tui: a skipped row that aggregates firings of one chain (max_instances reached): how many; '
    'NULL: the row is one firing';
COMMENT ON COLUMN timetable.chain_run.last_due_at IS
    'pgtt-tui: a skipped aggregate row: the due time of the last firing it records (due_at: the first)';
CREATE INDEX chain_run_skip_agg_idx ON timetable.chain_run (chain_id, started_at) WHERE skipped_firings IS NOT NULL;

-- Claim firings and start them (0004's contract, see there).  New: the firings of a chain
-- over its max_instances are merged into that chain's skipped aggregate row of the last
-- minute (or a new one); each is returned with that row's run_id and status 'skipped'.
CREATE OR REPLACE FUNCTION timetable.claim_due(p_client text, p_session bigint, p_backend_start timestamptz,
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
    --    count of open runs sees every start of these chains committed before ours; the
    --    firings that start get a row each (as in 0004), the skipped ones of each chain go
    --    into its aggregate row of the last minute (merged, or a new one)
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
    ), fm AS MATERIALIZED (
        SELECT f.chain_id, f.due_at, f.trig, f.nth + m.open_runs > m.max_instances AS skip, m.max_instances,
               m.open_runs
          FROM firing f JOIN room m ON m.chain_id = f.chain_id
    ), ins AS (
        INSERT INTO timetable.chain_run AS r (chain_id, due_at, trigger, client_name, session_id, backend_pid,
                                              backend_start, claimed_at, started_at, status)
        SELECT f.chain_id, f.due_at, f.trig, p_client, p_session, pg_backend_pid(), p_backend_start, now(),
               greatest(f.due_at, now()), 'running'
          FROM fm f WHERE NOT f.skip
        ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING
        RETURNING r.run_id, r.chain_id, r.due_at, r.status, r.started_at
    ), latest AS (
        SELECT DISTINCT ON (i.chain_id) i.chain_id, i.run_id, i.started_at
          FROM ins i
         ORDER BY i.chain_id, i.due_at DESC
    ), st AS (
        UPDATE timetable.chain_state s
           SET last_run_id = l.run_id, last_started_at = l.started_at, last_status = 'running'
          FROM latest l
         WHERE s.chain_id = l.chain_id
    ), sk AS (  -- per chain: the skipped firings of this claim, and its aggregate row of the last minute
        SELECT f.chain_id, count(*)::integer AS n, min(f.due_at) AS first_due, max(f.due_at) AS last_due,
               (array_agg(f.trig ORDER BY f.due_at))[1] AS trig, min(f.max_instances) AS max_instances,
               min(f.open_runs) AS open_runs,
               (SELECT a.run_id FROM timetable.chain_run a
                 WHERE a.chain_id = f.chain_id AND a.skipped_firings IS NOT NULL
                   AND a.started_at > now() - interval '1 minute'
                 ORDER BY a.started_at DESC LIMIT 1) AS agg_run
          FROM fm f WHERE f.skip GROUP BY f.chain_id
    ), merged AS (
        UPDATE timetable.chain_run x
           SET skipped_firings = x.skipped_firings + k.n, last_due_at = greatest(x.last_due_at, k.last_due),
               finished_at = greatest(x.finished_at, now()),
               reason = format('max_instances (%s) reached: %s run(s) in progress; %s firing(s) skipped',
                               k.max_instances, greatest(k.open_runs, k.max_instances), x.skipped_firings + k.n)
          FROM sk k
         WHERE x.run_id = k.agg_run
        RETURNING x.run_id, x.chain_id
    ), created AS (
        INSERT INTO timetable.chain_run AS r (chain_id, due_at, last_due_at, skipped_firings, trigger, client_name,
                                              session_id, backend_pid, backend_start, claimed_at, started_at,
                                              finished_at, status, reason)
        SELECT k.chain_id, k.first_due, k.last_due, k.n, k.trig, p_client, p_session, pg_backend_pid(),
               p_backend_start, now(), now(), now(), 'skipped',
               format('max_instances (%s) reached: %s run(s) in progress; %s firing(s) skipped',
                      k.max_instances, greatest(k.open_runs, k.max_instances), k.n)
          FROM sk k WHERE k.agg_run IS NULL
        ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING
        RETURNING r.run_id, r.chain_id
    )
    SELECT i.run_id, i.chain_id, i.due_at, i.status FROM ins i
    UNION ALL
    SELECT a.run_id, f.chain_id, f.due_at, 'skipped'::text
      FROM (SELECT * FROM merged UNION ALL SELECT * FROM created) a
      JOIN fm f ON f.chain_id = a.chain_id AND f.skip;
END $$;

-- 0004's reaper, returning the status it recorded as well.
DROP FUNCTION timetable.reap_dead_runs();
CREATE FUNCTION timetable.reap_dead_runs()
RETURNS TABLE (run_id bigint, chain_id bigint, reason text, status text)
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
               finished_at = greatest(now(), r.started_at), reaped = true, txid = coalesce(d.committed_txid, r.txid),
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
    SELECT e.run_id, e.chain_id, e.reason, e.status FROM ended e;
END $$;
