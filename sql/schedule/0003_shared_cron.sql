-- schedule: the cron check of create_job / set_job_attributes (cron and rule.crontab) is
-- pgtt.cron_scan (sql/pgtt/0002_cron.sql), the one SQL parser that timetable uses too.
-- schedule._cron_problem keeps its name, its EXECUTE grant to PUBLIC and its wording:
-- "<field> (cron field "<field>", <ordinal>): <problem>" or "cron: <problem>", so that
-- the message starts with the field, as every schedule error does.  @reboot is a schedule
-- of its own in pgpro_scheduler, not a cron expression: accepted here, as before.
--
-- Callers of the SECURITY DEFINER job functions reach pgtt as the definer; direct callers
-- of _cron_problem need nothing more than pgtt's PUBLIC grants.

CREATE OR REPLACE FUNCTION schedule._cron_problem(p_text text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS $$
    SELECT CASE
        WHEN s.problem IS NULL OR lower(s.source) = '@reboot' THEN NULL
        WHEN s.ordinal IS NULL THEN s.field || ': ' || s.problem
        ELSE format('%s (cron field "%s", %s): %s', s.field, s.field, s.ordinal, s.problem) END
    FROM pgtt.cron_scan(p_text, ARRAY['@reboot']) s
$$;
