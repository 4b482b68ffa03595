-- schedule 0002: helpers for the job sandbox (engine/schedule/manager.py, "How a job runs").
--
-- The engine runs a job's SQL inside a per-run SECURITY DEFINER function in pg_temp, owned
-- by the job's run_as role, so the job cannot SET ROLE / RESET ROLE / SET SESSION
-- AUTHORIZATION back to the engine's login role. Two things still run when the engine
-- COMMITs, after that function has returned, and so outside the sandbox:
--   * deferred triggers (on PostgreSQL 13-17 as the role current at COMMIT; on 18 as the
--     queuing role, but they may DECLARE a WITH HOLD cursor, whose query then runs at COMMIT
--     as the engine's role);
--   * the recheck of deferrable unique / exclusion constraints, which evaluates the index's
--     expressions and predicate (user functions).
-- schedule._commit_hazards() lists every such object with the number of rows changed in its
-- table by the current transaction; the engine reads it before and after the job (in the
-- job's transaction, so no statistics flush happens in between) and rolls the job back if
-- the count grew, or if track_counts is off (changes = NULL) and any such object exists.

-- LANGUAGE sql without a SET clause so that it is inlined into the engine's query (half the
-- cost of a PL/pgSQL call); every name is schema-qualified, and the engine calls it with its
-- pinned search_path (pg_catalog, pg_temp).
CREATE FUNCTION schedule._commit_hazards() RETURNS TABLE (key text, item text, changes bigint)
LANGUAGE sql STABLE AS $$
    SELECT 't' OPERATOR(pg_catalog.||) t.oid::pg_catalog.text,
           pg_catalog.format('deferrable trigger %I on table %s', t.tgname, t.tgrelid::pg_catalog.regclass),
           CASE WHEN pg_catalog.current_setting('track_counts')::pg_catalog.bool
                THEN pg_catalog.pg_stat_get_xact_tuples_inserted(t.tgrelid)
                     OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_updated(t.tgrelid)
                     OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_deleted(t.tgrelid) END
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid
      JOIN pg_catalog.pg_language l ON l.oid OPERATOR(pg_catalog.=) p.prolang
     WHERE t.tgdeferrable
       -- foreign keys (RI_FKey_*, checked as the table owner) and C triggers are trusted
       AND l.lanname OPERATOR(pg_catalog.<>) ALL (ARRAY['internal', 'c']::pg_catalog.name[])
    UNION ALL
    SELECT 'c' OPERATOR(pg_catalog.||) c.oid::pg_catalog.text,
           pg_catalog.format('deferrable constraint %I on table %s (its index has expressions or a WHERE clause)',
                             c.conname, c.conrelid::pg_catalog.regclass),
           CASE WHEN pg_catalog.current_setting('track_counts')::pg_catalog.bool
                THEN pg_catalog.pg_stat_get_xact_tuples_inserted(c.conrelid)
                     OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_updated(c.conrelid)
                     OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_deleted(c.conrelid) END
      FROM pg_catalog.pg_constraint c
      JOIN pg_catalog.pg_index i ON i.indexrelid OPERATOR(pg_catalog.=) c.conindid
     WHERE c.condeferrable AND c.contype OPERATOR(pg_catalog.=) ANY (ARRAY['p', 'u', 'x']::pg_catalog.char[])
       AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
$$;
COMMENT ON FUNCTION schedule._commit_hazards() IS
    'pgtt-tui engine: objects whose code would run at COMMIT (deferred triggers/checks), with this transaction''s row changes';

-- resubmit(): the request must survive a job that fails after calling it (pgpro_scheduler
-- re-queues "success or error"). A setting (set_config) would roll back with the job, so the
-- request goes to the engine's temporary sequence pg_temp.pgtt_resubmit, created for each
-- one-time run (setval is never rolled back). -1 there means "no request".
CREATE OR REPLACE FUNCTION schedule.resubmit(run_after interval DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    secs numeric;
BEGIN
    IF coalesce(current_setting('schedule.job_kind', true), '') <> 'at'
       OR to_regclass('pg_temp.pgtt_resubmit') IS NULL THEN
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
    -- the last call wins (as documented)
    PERFORM setval('pg_temp.pgtt_resubmit', secs::bigint, true);
    RETURN secs::bigint;
END $$;

GRANT EXECUTE ON FUNCTION schedule._commit_hazards(), schedule.resubmit(interval) TO PUBLIC;
