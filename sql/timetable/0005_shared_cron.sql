-- timetable: the cron dialect is parsed by pgtt (sql/pgtt/0002_cron.sql), the one SQL
-- parser that schedule uses too.  timetable.cron_parse keeps its name and type (the
-- timetable.cron domain's CHECK, cron_validate, cron_next and cron_split_to_arrays call
-- it; _next_day and _first_at_or_after take timetable.cron_fields) and only delegates.
--
-- Its one difference from pgtt.cron_parse: an unknown keyword's message also names the
-- forms timetable.cron_validate handles itself before parsing.
--
-- Who inserts a chain runs the domain CHECK: pgtt grants USAGE and EXECUTE on its pure
-- cron functions to PUBLIC, so every role that could insert one before still can.

CREATE OR REPLACE FUNCTION timetable.cron_parse(p_text text) RETURNS timetable.cron_fields
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT * FROM pgtt.cron_parse(p_text, ARRAY['@every <interval>', '@after <interval>', '@reboot'])
$$;

-- the private helpers of the former PL/pgSQL parser; nothing else calls them
DROP FUNCTION timetable._cron_field(text, text, int, int, int);
DROP FUNCTION timetable._cron_value(text, text, int, int, int);
DROP FUNCTION timetable._cron_error(text, int, text);
