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
-- schedule._refuse_commit_hazards() is called by the engine just before it commits a job's
-- transaction; it raises (and the engine rolls back) if the transaction changed a table
-- where such code could run.

CREATE FUNCTION schedule._refuse_commit_hazards() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    -- without track_counts we cannot tell which tables changed: every table counts
    all_tables boolean := NOT coalesce(nullif(current_setting('track_counts', true), '')::boolean, false);
    what text;
BEGIN
    SELECT string_agg(s.item, '; ' ORDER BY s.item) INTO what FROM (
        SELECT format('deferrable trigger %I on table %s', t.tgname, t.tgrelid::regclass) AS item
          FROM pg_trigger t
          JOIN pg_proc p ON p.oid = t.tgfoid
          JOIN pg_language l ON l.oid = p.prolang
         WHERE t.tgdeferrable
           AND l.lanname NOT IN ('internal', 'c')      -- foreign keys (RI_FKey_*) and C triggers are trusted
           AND (all_tables OR pg_stat_get_xact_tuples_inserted(t.tgrelid) + pg_stat_get_xact_tuples_updated(t.tgrelid)
                              + pg_stat_get_xact_tuples_deleted(t.tgrelid) > 0)
        UNION ALL
        SELECT format('deferrable constraint %I on table %s (its index has expressions or a WHERE clause)',
                      c.conname, c.conrelid::regclass)
          FROM pg_constraint c
          JOIN pg_index i ON i.indexrelid = c.conindid
         WHERE c.condeferrable AND c.contype IN ('p', 'u', 'x')
           AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
           AND (all_tables OR pg_stat_get_xact_tuples_inserted(c.conrelid) + pg_stat_get_xact_tuples_updated(c.conrelid)
                              + pg_stat_get_xact_tuples_deleted(c.conrelid) > 0)
    ) s;
    IF what IS NOT NULL THEN
        RAISE EXCEPTION 'the job''s transaction was rolled back: it changed a table with a %, whose code would run '
                        'when the engine commits, outside the job''s role', what
            USING ERRCODE = '42501',
                  HINT = 'Deferred checks run at COMMIT; make the constraint NOT DEFERRABLE (or run this work '
                         'outside schedule jobs).';
    END IF;
END $$;
COMMENT ON FUNCTION schedule._refuse_commit_hazards() IS
    'pgtt-tui engine: refuse to commit a job transaction that left code to run at COMMIT (deferred triggers/checks)';

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

GRANT EXECUTE ON FUNCTION schedule._refuse_commit_hazards(), schedule.resubmit(interval) TO PUBLIC;
