-- timetable: cheaper bookkeeping per run, and persistent ad-hoc starts.
--
-- * A scheduled firing claimed by the engine's compare-and-set on chain_state (the claim
--   decides exactly-once, as before) no longer gets its chain_run row at the claim: the
--   row is inserted by the worker that starts it, directly as 'running' (start_firing),
--   in the start's own short transaction.  That saves, per run, the 'claimed' insert and a
--   non-HOT update of chain_run (its status is in chain_run_open_idx's predicate, so every
--   status change rewrites all its indexes).  The run id is allocated at the claim
--   (nextval), so the engine knows it from the start.
--   A firing claimed but not yet started is recorded on chain_state (claim_session, with
--   last_due_at the firing): if that engine dies before starting it, reap_dead_runs
--   records it as a failed run with the reason (as it did for 'claimed' rows).  A claim
--   of several firings of one chain at once (missed runs, run_all) still inserts
--   'claimed' rows.
-- * active_chain (pg_timetable's UNLOGGED table of running chains, which pg_timetable's
--   engine used for max_instances) becomes a view over the running chain_run rows: same
--   columns, same meaning, no insert and seq-scan delete per run any more.
-- * pending_start: notify_chain_start() also writes the request to this table, so a START
--   (with or without a delay) survives an engine restart and is taken exactly once.

ALTER TABLE timetable.chain_state
    ADD COLUMN claim_session BIGINT;  -- session that claimed last_due_at and has not started it yet

-- room on each page for the finishing update of a run (it is not HOT: status is in
-- chain_run_open_idx's predicate, but the new version stays on the run's page)
ALTER TABLE timetable.chain_run SET (fillfactor = 70);

-- The run functions below reach chain_run and chain_state by key only: `SET enable_seqscan
-- = off` keeps PL/pgSQL's cached generic plans from being seq scans planned while the
-- table was small (a fresh install: chain_run grows from empty while the plans stay cached
-- for the life of the worker connection).

---------------------------------------------------------------------------------------------
-- active_chain as a view
---------------------------------------------------------------------------------------------

-- functions of 0001/0002 that wrote active_chain, without it
CREATE OR REPLACE FUNCTION timetable.start_run(p_run_id bigint, p_started timestamptz, p_default_max integer DEFAULT 16)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r timetable.chain_run;
    c timetable.chain;
    n int;
BEGIN
    SELECT * INTO r FROM timetable.chain_run WHERE run_id = p_run_id FOR UPDATE;
    IF NOT FOUND OR r.status <> 'claimed' THEN
        RETURN 'gone';
    END IF;
    SELECT * INTO c FROM timetable.chain WHERE chain_id = r.chain_id;
    IF NOT FOUND THEN
        UPDATE timetable.chain_run SET status = 'failed', finished_at = now(), reason = 'chain was deleted'
         WHERE run_id = p_run_id;
        RETURN 'gone';
    END IF;
    PERFORM 1 FROM timetable.chain_state s WHERE s.chain_id = r.chain_id FOR UPDATE;
    SELECT count(*) INTO n FROM timetable.chain_run x WHERE x.chain_id = r.chain_id AND x.status = 'running';
    IF n >= coalesce(c.max_instances, p_default_max) THEN
        UPDATE timetable.chain_run
           SET status = 'skipped', started_at = p_started, finished_at = p_started,
               reason = format('max_instances (%s) reached: %s run(s) in progress', coalesce(c.max_instances, p_default_max), n)
         WHERE run_id = p_run_id;
        RETURN 'skipped';
    END IF;
    UPDATE timetable.chain_run
       SET status = 'running', started_at = p_started, backend_pid = pg_backend_pid(),
           backend_start = (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_backend_pid())
     WHERE run_id = p_run_id;
    UPDATE timetable.chain_state SET last_run_id = p_run_id, last_started_at = p_started, last_status = 'running'
     WHERE chain_id = r.chain_id;
    RETURN 'running';
END $$;

CREATE OR REPLACE FUNCTION timetable.start_run_or_raise(p_run_id bigint, p_started timestamptz, p_default_max integer,
                                                        p_backend_start timestamptz)
RETURNS void LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_chain bigint;
    v_max integer;
    n int;
BEGIN
    UPDATE timetable.chain_run r
       SET status = 'running', started_at = p_started, backend_pid = pg_backend_pid(), backend_start = p_backend_start
     WHERE r.run_id = p_run_id AND r.status = 'claimed'
    RETURNING r.chain_id INTO v_chain;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PGTT1', MESSAGE = format('run %s is not claimed any more', p_run_id);
    END IF;
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
END $$;

CREATE OR REPLACE FUNCTION timetable.finish_run(p_run_id bigint, p_status text, p_reason text, p_finished timestamptz,
                                                p_txid bigint DEFAULT NULL, p_next_due timestamptz DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_chain bigint;
BEGIN
    UPDATE timetable.chain_run x
       SET status = p_status, reason = p_reason, finished_at = p_finished, txid = coalesce(p_txid, x.txid)
     WHERE x.run_id = p_run_id AND x.status IN ('running', 'claimed')
    RETURNING x.chain_id INTO v_chain;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE timetable.chain_state s
       SET last_finished_at = p_finished, last_status = p_status,
           next_due_at = CASE WHEN p_next_due IS NOT NULL AND NOT s.dirty AND s.next_due_at IS NULL
                              THEN p_next_due ELSE s.next_due_at END
     WHERE s.chain_id = v_chain;
    IF p_next_due IS NOT NULL THEN
        PERFORM pg_notify('pgtt_timetable_changed', '');
    END IF;
    RETURN true;
END $$;

-- Mark runs whose owning backend is gone as failed (with the reason), and firings claimed
-- by a dead engine that it never started; drop dead sessions.  Any engine may call it.
CREATE OR REPLACE FUNCTION timetable.reap_dead_runs()
RETURNS TABLE (run_id bigint, chain_id bigint, reason text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_dead bigint[];
    v_names text[];
BEGIN
    WITH gone AS (
        DELETE FROM timetable.active_session s WHERE NOT timetable._backend_alive(s.server_pid, NULL)
        RETURNING s.client_pid, s.client_name)
    SELECT array_agg(g.client_pid), array_agg(g.client_name) INTO v_dead, v_names FROM gone g;
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
    IF v_dead IS NOT NULL THEN
        -- firings a dead engine claimed and never started (a rare scan of chain_state: only
        -- when an engine's session has gone)
        RETURN QUERY
        WITH lost AS (
            SELECT s.chain_id, s.last_due_at, s.claim_session, s.run_at FROM timetable.chain_state s
             WHERE s.claim_session = ANY (v_dead) AND s.last_due_at IS NOT NULL
               FOR UPDATE
        ), cleared AS (
            UPDATE timetable.chain_state s
               SET claim_session = NULL, last_status = 'failed', last_finished_at = now(),
                   dirty = s.dirty OR s.next_due_at IS NULL, version = s.version + 1
              FROM lost l
             WHERE s.chain_id = l.chain_id
        )
        INSERT INTO timetable.chain_run AS r (chain_id, due_at, trigger, client_name, session_id, status, finished_at,
                                              reason)
        SELECT l.chain_id, l.last_due_at,
               CASE timetable.schedule_kind(coalesce(l.run_at, '* * * * *'))
                    WHEN 'every' THEN 'every' WHEN 'after' THEN 'after' ELSE 'cron' END,
               n.name, l.claim_session, 'failed', now(),
               format('engine %s (session %s) lost its database session before the claimed run started',
                      n.name, l.claim_session)
          FROM lost l
          JOIN unnest(v_dead, v_names) AS n(session, name) ON n.session = l.claim_session
        ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING
        RETURNING r.run_id, r.chain_id, r.reason;
    END IF;
END $$;

DROP TABLE timetable.active_chain;
CREATE VIEW timetable.active_chain AS
    SELECT r.chain_id, r.client_name, r.started_at
      FROM timetable.chain_run r
     WHERE r.status = 'running';
COMMENT ON VIEW timetable.active_chain IS
    'Stores information about active chains within session (pgtt-tui: a view over the running chain_run rows)';

---------------------------------------------------------------------------------------------
-- Claims and starts
---------------------------------------------------------------------------------------------

-- Claim firings.  Per chain, a compare-and-set of chain_state.next_due_at from the value
-- the engine read (p_old) to the next one it computed (p_new) decides the ONE winner among
-- all engines.  A chain with one firing in the claim: no chain_run row yet (start_firing
-- inserts it), the firing is remembered on chain_state (last_due_at, claim_session), and
-- its run id is allocated here; several firings (missed runs): 'claimed' rows as before.
-- Rows of p_chain with p_due NULL only advance next_due_at (the skip policy).
-- Returns (run_id, chain_id, due_at, recorded).
CREATE FUNCTION timetable.claim_due(p_client text, p_session bigint,
                                    p_chain bigint[], p_due timestamptz[], p_trigger text[],
                                    p_old timestamptz[], p_new timestamptz[], p_version bigint[])
RETURNS TABLE (run_id bigint, chain_id bigint, due_at timestamptz, recorded boolean)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(p_chain, p_due, p_trigger, p_old, p_new, p_version)
               AS i(chain_id, due_at, trig, old_due, new_due, version)
    ), per_chain AS (
        SELECT i.chain_id, min(i.old_due) AS old_due, min(i.new_due) AS new_due, min(i.version) AS version,
               max(i.due_at) AS last_due, count(i.due_at) AS firings
          FROM input i GROUP BY i.chain_id
    ), won AS (
        UPDATE timetable.chain_state s
           SET next_due_at = p.new_due, last_due_at = coalesce(p.last_due, s.last_due_at),
               claim_session = CASE WHEN p.firings = 1 THEN p_session ELSE s.claim_session END
          FROM per_chain p
         WHERE s.chain_id = ANY (p_chain)  -- by primary key, however many chains are defined
           AND s.chain_id = p.chain_id AND s.next_due_at = p.old_due AND s.version = p.version AND NOT s.dirty
        RETURNING s.chain_id, p.firings
    ), several AS (
        INSERT INTO timetable.chain_run AS r (chain_id, due_at, trigger, client_name, session_id, backend_pid,
                                              backend_start)
        SELECT i.chain_id, i.due_at, i.trig, p_client, p_session, pg_backend_pid(),
               (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_backend_pid())
          FROM input i JOIN won w ON w.chain_id = i.chain_id
         WHERE i.due_at IS NOT NULL AND w.firings > 1
        ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING
        RETURNING r.run_id, r.chain_id, r.due_at
    )
    SELECT nextval('timetable.chain_run_run_id_seq'), i.chain_id, i.due_at, false
      FROM input i JOIN won w ON w.chain_id = i.chain_id
     WHERE i.due_at IS NOT NULL AND w.firings = 1
    UNION ALL
    SELECT s.run_id, s.chain_id, s.due_at, true FROM several s;
END $$;

-- Start a claimed firing that has no chain_run row yet (claim_due's recorded = false) on
-- the calling (execution) connection: the row is inserted as 'running', max_instances
-- (NULL = p_default_max) is honoured cluster-wide under the chain_state row lock.  Raises
-- instead of recording anything when it cannot start (SQLSTATE PGTT1: chain deleted or the
-- firing already recorded, e.g. by reap_dead_runs; PGTT2: max_instances reached), so that
-- nothing sent after it in the same query runs; start_firing_slow records those cases.
CREATE FUNCTION timetable.start_firing(p_run_id bigint, p_chain bigint, p_due timestamptz, p_trigger text,
                                       p_client text, p_session bigint, p_started timestamptz,
                                       p_default_max integer, p_backend_start timestamptz)
RETURNS void LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_max integer;
BEGIN
    -- the chain's state row serialises starts of the same chain across engines; the INSERT
    -- after it is a new statement, so its count sees every start committed before the lock
    UPDATE timetable.chain_state s
       SET last_run_id = p_run_id, last_started_at = p_started, last_status = 'running',
           claim_session = CASE WHEN s.last_due_at = p_due THEN NULL ELSE s.claim_session END
     WHERE s.chain_id = p_chain;
    INSERT INTO timetable.chain_run (run_id, chain_id, due_at, trigger, client_name, session_id, backend_pid,
                                     backend_start, claimed_at, started_at, status)
    SELECT p_run_id, p_chain, p_due, p_trigger, p_client, p_session, pg_backend_pid(), p_backend_start, p_started,
           p_started, 'running'
      FROM timetable.chain c
     WHERE c.chain_id = p_chain
       AND (SELECT count(*) FROM timetable.chain_run x WHERE x.chain_id = p_chain AND x.status = 'running')
           < coalesce(c.max_instances, p_default_max)
    ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING;
    IF NOT FOUND THEN  -- why not (rare): say so
        SELECT c.max_instances INTO v_max FROM timetable.chain c WHERE c.chain_id = p_chain;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'PGTT1', MESSAGE = format('chain %s was deleted', p_chain);
        END IF;
        IF EXISTS (SELECT 1 FROM timetable.chain_run x WHERE x.chain_id = p_chain AND x.due_at = p_due) THEN
            RAISE EXCEPTION USING ERRCODE = 'PGTT1',
                MESSAGE = format('firing %s of chain %s was already recorded', p_due, p_chain);
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'PGTT2', MESSAGE = format('max_instances (%s) reached', coalesce(v_max, p_default_max));
    END IF;
END $$;

-- The same, recording what happened: returns 'running' (started), 'skipped' (max_instances
-- reached: a skipped run is recorded) or 'gone' (chain deleted: a failed run is recorded;
-- firing already recorded: nothing).
CREATE FUNCTION timetable.start_firing_slow(p_run_id bigint, p_chain bigint, p_due timestamptz, p_trigger text,
                                            p_client text, p_session bigint, p_started timestamptz,
                                            p_default_max integer, p_backend_start timestamptz)
RETURNS text LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_max integer;
    n int;
    v_status text := 'running';
    v_reason text;
BEGIN
    UPDATE timetable.chain_state s
       SET claim_session = CASE WHEN s.last_due_at = p_due THEN NULL ELSE s.claim_session END
     WHERE s.chain_id = p_chain;
    SELECT c.max_instances INTO v_max FROM timetable.chain c WHERE c.chain_id = p_chain;
    IF NOT FOUND THEN
        v_status := 'failed';
        v_reason := 'chain was deleted';
    ELSE
        SELECT count(*) INTO n FROM timetable.chain_run x WHERE x.chain_id = p_chain AND x.status = 'running';
        IF n >= coalesce(v_max, p_default_max) THEN
            v_status := 'skipped';
            v_reason := format('max_instances (%s) reached: %s run(s) in progress', coalesce(v_max, p_default_max), n);
        END IF;
    END IF;
    INSERT INTO timetable.chain_run (run_id, chain_id, due_at, trigger, client_name, session_id, backend_pid,
                                     backend_start, claimed_at, started_at, finished_at, status, reason)
    VALUES (p_run_id, p_chain, p_due, p_trigger, p_client, p_session, pg_backend_pid(), p_backend_start, p_started,
            p_started, CASE WHEN v_status = 'running' THEN NULL ELSE p_started END, v_status, v_reason)
    ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'gone';
    END IF;
    IF v_status = 'running' THEN
        UPDATE timetable.chain_state s SET last_run_id = p_run_id, last_started_at = p_started, last_status = 'running'
         WHERE s.chain_id = p_chain;
    END IF;
    RETURN CASE v_status WHEN 'failed' THEN 'gone' ELSE v_status END;
END $$;

-- Firings claimed by claim_due that will not start (engine stopping, STOP before the start):
-- recorded as failed runs with the reason; @after chains are re-armed (their next due time
-- is otherwise set when a run finishes).
CREATE FUNCTION timetable.drop_firings(p_client text, p_session bigint, p_run bigint[], p_chain bigint[],
                                       p_due timestamptz[], p_trigger text[], p_reason text, p_at timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    UPDATE timetable.chain_state s
       SET claim_session = CASE WHEN s.last_due_at = i.due_at THEN NULL ELSE s.claim_session END,
           dirty = s.dirty OR s.next_due_at IS NULL,
           version = s.version + CASE WHEN s.next_due_at IS NULL THEN 1 ELSE 0 END
      FROM unnest(p_chain, p_due) AS i(chain_id, due_at)
     WHERE s.chain_id = i.chain_id;
    INSERT INTO timetable.chain_run (run_id, chain_id, due_at, trigger, client_name, session_id, claimed_at,
                                     finished_at, status, reason)
    SELECT i.run_id, i.chain_id, i.due_at, i.trig, p_client, p_session, p_at, p_at, 'failed', p_reason
      FROM unnest(p_run, p_chain, p_due, p_trigger) AS i(run_id, chain_id, due_at, trig)
    ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM pg_notify('pgtt_timetable_changed', '');
    RETURN n;
END $$;

---------------------------------------------------------------------------------------------
-- Persistent ad-hoc starts
---------------------------------------------------------------------------------------------

-- One row per START asked for with notify_chain_start(), until the engine named
-- worker_name takes it (exactly once: it deletes the row in the transaction that claims
-- the run).  start_at is set by that engine when it first sees the request: its clock
-- + start_delay (pg_timetable waits the delay after the notification arrives), so a
-- request made while the engine is down is served when it comes back, and one whose
-- delay is running survives a restart of the engine.
CREATE TABLE timetable.pending_start (
    id           BIGSERIAL PRIMARY KEY,
    chain_id     BIGINT NOT NULL,
    worker_name  TEXT NOT NULL,
    start_delay  INTERVAL NOT NULL DEFAULT '0',
    requested_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    start_at     TIMESTAMPTZ
);
CREATE INDEX pending_start_worker_idx ON timetable.pending_start (worker_name, start_at);
COMMENT ON TABLE timetable.pending_start IS
    'pgtt-tui: START requests (notify_chain_start) not yet taken by the engine they name';

-- pg_timetable's signature and payload; the payload also carries the request's id
-- ("PendingID"), so the engine that receives it takes the request from pending_start.
CREATE OR REPLACE FUNCTION timetable.notify_chain_start(chain_id BIGINT, worker_name TEXT, start_delay INTERVAL DEFAULT NULL)
RETURNS void AS $$
    WITH req AS (
        INSERT INTO timetable.pending_start (chain_id, worker_name, start_delay)
        VALUES (chain_id, worker_name, greatest(coalesce(start_delay, '0'), '0'))
        RETURNING id)
    SELECT pg_notify(
        worker_name,
        format('{"ConfigID": %s, "Command": "START", "Ts": %s, "Delay": %s, "PendingID": %s}',
               chain_id,
               EXTRACT(epoch FROM clock_timestamp())::bigint,
               COALESCE(EXTRACT(epoch FROM start_delay)::bigint, 0),
               req.id))
    FROM req
$$ LANGUAGE SQL;

-- The end of a run on its own connection (0002's end_run) in one statement: session
-- advisory locks a task left behind, the run's execution_log rows, the run's result and
-- the chain's state (as finish_run).  Returns whether the run was found open.
CREATE OR REPLACE FUNCTION timetable.end_run(p_run_id bigint, p_status text, p_reason text, p_finished timestamptz,
                                             p_txid bigint, p_next_due timestamptz, p_session bigint, p_client text,
                                             p_rows json)
RETURNS boolean LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    n integer;
    unlocked boolean;
BEGIN
    WITH logged AS (
        INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, pid, returncode,
                                             ignore_error, kind, command, output, client_name, params)
        SELECT (r->>0)::bigint, (r->>1)::bigint, (r->>2)::bigint, (r->>3)::timestamptz, (r->>4)::timestamptz,
               p_session, (r->>5)::integer, (r->>6)::boolean, (r->>7)::timetable.command_kind, r->>8, r->>9,
               p_client, r->>10
          FROM json_array_elements(p_rows) AS r
    ), fin AS (
        UPDATE timetable.chain_run x
           SET status = p_status, reason = p_reason, finished_at = p_finished, txid = coalesce(p_txid, x.txid)
         WHERE x.run_id = p_run_id AND x.status IN ('running', 'claimed')
        RETURNING x.chain_id
    ), st AS (
        UPDATE timetable.chain_state s
           SET last_finished_at = p_finished, last_status = p_status,
               next_due_at = CASE WHEN p_next_due IS NOT NULL AND NOT s.dirty AND s.next_due_at IS NULL
                                  THEN p_next_due ELSE s.next_due_at END
          FROM fin
         WHERE s.chain_id = fin.chain_id
    )
    SELECT count(*), pg_advisory_unlock_all() IS NULL INTO n, unlocked FROM fin;
    IF n > 0 AND p_next_due IS NOT NULL THEN
        PERFORM pg_notify('pgtt_timetable_changed', '');
    END IF;
    RETURN n > 0;
END $$;
