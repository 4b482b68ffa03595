-- timetable: the next-firing search of the cron dialect is pgtt's (sql/pgtt/0005_cron_search.sql),
-- the one SQL evaluator that schedule's calendar uses too.  timetable.cron_next keeps its
-- name, arguments and messages (an unknown keyword names timetable's own forms, as
-- timetable.cron_parse does) and only delegates; the private helpers it used moved to
-- pgtt as they were (pgtt._cron_next_in, _cron_next_day, _cron_first_at_or_after,
-- _cron_utc_offset, _cron_transition, _cron_wall_fold0, _cron_wall_to_utc).

CREATE OR REPLACE FUNCTION timetable.cron_next(p_cron text, p_after timestamptz, p_tz text DEFAULT NULL)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT pgtt.cron_next(p_cron, p_after, p_tz, ARRAY['@every <interval>', '@after <interval>', '@reboot'])
$$;

DROP FUNCTION timetable._wall_to_utc(timestamp, text);
DROP FUNCTION timetable._wall_fold0(timestamp, text);
DROP FUNCTION timetable._transition(text, timestamptz, timestamptz);
DROP FUNCTION timetable._utc_offset(timestamptz, text);
DROP FUNCTION timetable._first_at_or_after(timetable.cron_fields, timestamp);
DROP FUNCTION timetable._next_day(timetable.cron_fields, int, int, int);
DROP FUNCTION timetable._next_in(int[], int);
