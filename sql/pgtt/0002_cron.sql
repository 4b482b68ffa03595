-- pgtt: the cron dialect of engine/schedules.py (CronExpr.parse), once for every SQL module.
--
-- timetable (the timetable.cron domain, cron_parse, cron_next) and schedule (the cron and
-- rule.crontab checks of its job functions) are thin wrappers over pgtt.cron_scan
-- (sql/timetable/0005_shared_cron.sql, sql/schedule/0003_shared_cron.sql).  The scan never
-- raises on bad input: it says where and what is wrong, and each caller reports that in
-- its own way (timetable raises, schedule returns "field: problem").
--
-- Whitespace, quoting in messages and the wording are Python's, so pgtt.cron_problem(t)
-- is str(ScheduleError) of CronExpr.parse(t) (tests/test_pgtt_cron.py checks a corpus).
--
-- Every function here is pure, so PUBLIC may use them: the timetable.cron domain CHECK runs
-- as whoever inserts a chain, and schedule._cron_problem is granted to PUBLIC.  Granting
-- USAGE on the schema and EXECUTE on these functions is less than SECURITY DEFINER
-- wrappers would give (those would run the parser as the installing role).  USAGE reveals
-- nothing the catalogs do not; pgtt's tables stay ungranted, and its one other function,
-- pgtt.engine_alive, only reads pg_stat_activity, which every role may read.

CREATE TYPE pgtt.cron_fields AS (
    seconds  int[],
    minutes  int[],
    hours    int[],
    days     int[],      -- day-of-month values, without L
    months   int[],
    weekdays int[],      -- 0-6, 0 = Sunday
    last_day boolean,    -- L in day-of-month
    dom_any  boolean,    -- day-of-month field was exactly *
    dow_any  boolean     -- day-of-week field was exactly *
);

-- A text as Python's repr() writes it (exact for ASCII and for the whitespace below), so
-- that messages quote what the user typed as engine/schedules.py does.
CREATE FUNCTION pgtt._cron_quote(p_text text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog AS $$
DECLARE
    q text := CASE WHEN strpos(p_text, '''') > 0 AND strpos(p_text, '"') = 0 THEN '"' ELSE '''' END;
    quoted text := q;
    c text;
    code int;
BEGIN
    FOREACH c IN ARRAY regexp_split_to_array(p_text, '') LOOP
        code := ascii(c);
        quoted := quoted || CASE
            WHEN c = E'\\' OR c = q THEN E'\\' || c
            WHEN c = E'\t' THEN E'\\t'
            WHEN c = E'\n' THEN E'\\n'
            WHEN c = E'\r' THEN E'\\r'
            WHEN code < 32 OR code BETWEEN 127 AND 160 THEN E'\\x' || lpad(to_hex(code), 2, '0')
            WHEN code IN (5760, 8232, 8233, 8239, 8287, 12288) OR code BETWEEN 8192 AND 8202
                THEN E'\\u' || lpad(to_hex(code), 4, '0')
            ELSE c END;
    END LOOP;
    RETURN quoted || q;
END $$;

-- The one cron parser.  source: the text as read (trimmed).  Valid: fields set, the rest
-- NULL.  Invalid: fields NULL; field is 'cron' (the whole expression, ordinal NULL) or the
-- name of the cron field with its ordinal ('2nd'); problem says what is wrong.
-- p_also_known: the caller's own forms (e.g. '@reboot'), named in the unknown-keyword
-- message only; the caller handles them before or instead of parsing.
CREATE FUNCTION pgtt.cron_scan(p_text text, p_also_known text[] DEFAULT '{}',
                               OUT source text, OUT fields pgtt.cron_fields,
                               OUT field text, OUT ordinal text, OUT problem text)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    -- Python's str.isspace(): what str.strip() and str.split() cut at, whatever the locale
    ws constant text := '[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]';
    names constant text[] := ARRAY['second', 'minute', 'hour', 'day of month', 'month', 'day of week'];
    lows constant int[] := ARRAY[0, 0, 0, 1, 1, 0];
    highs constant int[] := ARRAY[59, 59, 23, 31, 12, 7];
    -- where '*' and 'a/s' end: day of week stops at 6, so '1/2' is not Sunday as well
    lasts constant int[] := ARRAY[59, 59, 23, 31, 12, 6];
    ordinals constant text[] := ARRAY['1st', '2nd', '3rd', '4th', '5th', '6th'];
    month_names constant text[] := ARRAY['JAN','FEB','MAR','APR','MAY','JUN','JUL','AUG','SEP','OCT','NOV','DEC'];
    day_names constant text[] := ARRAY['SUN','MON','TUE','WED','THU','FRI','SAT'];
    max_days constant int[] := ARRAY[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];  -- Feb: leap years
    src text;
    parts text[];
    n int;
    i int;
    f int;  -- index into names/lows/highs
    item text;
    base text;
    step_text text;
    step int;
    token text;
    bounds int[];
    v numeric;
    vals int[];
    last boolean;
    r pgtt.cron_fields;
BEGIN
    src := regexp_replace(coalesce(p_text, ''), '^' || ws || '+|' || ws || '+$', '', 'g');
    source := src;
    field := 'cron';
    IF src = '' THEN
        problem := 'empty expression; expected 5 fields (minute hour day-of-month month day-of-week), '
                   '6 with leading seconds, or a macro such as @daily';
        RETURN;
    END IF;
    IF left(src, 1) = '@' THEN
        src := CASE lower(src)
            WHEN '@yearly' THEN '0 0 1 1 *' WHEN '@annually' THEN '0 0 1 1 *'
            WHEN '@monthly' THEN '0 0 1 * *' WHEN '@weekly' THEN '0 0 * * 0'
            WHEN '@daily' THEN '0 0 * * *' WHEN '@midnight' THEN '0 0 * * *'
            WHEN '@hourly' THEN '0 * * * *'
            WHEN '@every_minute' THEN '* * * * *' WHEN '@every_second' THEN '* * * * * *' END;
        IF src IS NULL THEN
            problem := format('unknown keyword %s; known: %s', pgtt._cron_quote(source), array_to_string(
                ARRAY['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly',
                      '@every_minute', '@every_second'] || coalesce(p_also_known, '{}'), ', '));
            RETURN;
        END IF;
    END IF;
    parts := regexp_split_to_array(src, ws || '+');
    n := cardinality(parts);
    IF n NOT IN (5, 6) THEN
        problem := format('expected 5 fields (minute hour day-of-month month day-of-week) or 6 '
                          '(with leading seconds), got %s in %s', n, pgtt._cron_quote(source));
        RETURN;
    END IF;
    r.seconds := ARRAY[0];
    FOR i IN 1..n LOOP
        f := i + 6 - n;
        field := names[f];
        ordinal := ordinals[i];
        vals := '{}';
        last := false;
        FOREACH item IN ARRAY string_to_array(parts[i], ',') LOOP
            IF item = '' THEN
                problem := format('empty item in list %s', pgtt._cron_quote(parts[i]));
                RETURN;
            END IF;
            IF upper(item) = 'L' THEN
                IF field <> 'day of month' THEN
                    problem := 'L (last day of month) is only allowed in the day-of-month field';
                    RETURN;
                END IF;
                last := true;
                CONTINUE;
            END IF;
            base := item;
            step := 1;
            IF strpos(item, '/') > 0 THEN
                base := split_part(item, '/', 1);
                step_text := substr(item, strpos(item, '/') + 1);
                IF step_text !~ '^[0-9]+$' THEN
                    problem := format('step %s is not a positive whole number', pgtt._cron_quote(step_text));
                    RETURN;
                END IF;
                IF step_text::numeric = 0 THEN
                    problem := 'step 0 is not allowed (use a step of 1 or more)';
                    RETURN;
                END IF;
                step := least(step_text::numeric, 1000)::int;  -- any step past the field's span is one value
            END IF;
            IF base = '*' THEN
                bounds := ARRAY[lows[f], lasts[f]];
            ELSE
                bounds := '{}';
                FOREACH token IN ARRAY CASE WHEN strpos(base, '-') > 0
                        THEN ARRAY[split_part(base, '-', 1), substr(base, strpos(base, '-') + 1)]
                        ELSE ARRAY[base] END LOOP
                    IF token ~ '^[0-9]+$' THEN
                        v := token::numeric;
                        IF v < lows[f] OR v > highs[f] THEN
                            problem := format('%s is out of range %s-%s', v, lows[f], highs[f]);
                            RETURN;
                        END IF;
                        bounds := bounds || v::int;
                    ELSIF field = 'month' AND upper(token) = ANY (month_names) THEN
                        bounds := bounds || array_position(month_names, upper(token));
                    ELSIF field = 'day of week' AND upper(token) = ANY (day_names) THEN
                        bounds := bounds || (array_position(day_names, upper(token)) - 1);
                    ELSE
                        problem := CASE
                            WHEN upper(token) = 'L' AND field = 'day of month'
                                THEN 'L (last day of month) cannot be part of a range or step'
                            WHEN upper(token) = 'L'
                                THEN 'L (last day of month) is only allowed in the day-of-month field'
                            WHEN token = '' THEN 'missing number'
                            ELSE format('%s is not %s', pgtt._cron_quote(token), CASE field
                                WHEN 'month' THEN 'a month name or number 1-12'
                                WHEN 'day of week' THEN 'a day name or number 0-7'
                                ELSE format('a number %s-%s', lows[f], highs[f]) END) END;
                        RETURN;
                    END IF;
                END LOOP;
                IF cardinality(bounds) = 2 AND bounds[1] > bounds[2] THEN
                    problem := format('range %s is reversed (start is after end)', base);
                    RETURN;
                END IF;
                IF cardinality(bounds) = 1 THEN
                    -- 'a/s' runs from a to the field's end
                    bounds := bounds || CASE WHEN strpos(item, '/') > 0 THEN greatest(bounds[1], lasts[f])
                                             ELSE bounds[1] END;
                END IF;
            END IF;
            vals := vals || ARRAY(SELECT generate_series(bounds[1], bounds[2], step));
        END LOOP;
        IF field = 'day of week' THEN
            vals := ARRAY(SELECT DISTINCT CASE WHEN x = 7 THEN 0 ELSE x END FROM unnest(vals) x ORDER BY 1);
        ELSE
            vals := ARRAY(SELECT DISTINCT x FROM unnest(vals) x ORDER BY 1);
        END IF;
        CASE field
            WHEN 'second' THEN r.seconds := vals;
            WHEN 'minute' THEN r.minutes := vals;
            WHEN 'hour' THEN r.hours := vals;
            WHEN 'day of month' THEN r.days := vals; r.last_day := last;
            WHEN 'month' THEN r.months := vals;
            ELSE r.weekdays := vals;
        END CASE;
    END LOOP;
    r.dom_any := parts[n - 2] = '*';
    r.dow_any := parts[n] = '*';
    -- a day-of-month set that occurs in none of the months (weekday '*', no L) never fires
    IF r.dow_any AND NOT r.last_day AND cardinality(r.days) > 0
       AND NOT EXISTS (SELECT 1 FROM unnest(r.days) d, unnest(r.months) m WHERE d <= max_days[m]) THEN
        field := 'day of month';
        ordinal := ordinals[n - 2];
        problem := format('%s %s in month%s %s', array_to_string(r.days, ','),
            CASE WHEN cardinality(r.days) = 1 THEN 'never occurs' ELSE 'never occur' END,
            CASE WHEN cardinality(r.months) > 1 THEN 's' ELSE '' END, array_to_string(r.months, ','));
        RETURN;
    END IF;
    fields := r;
    field := NULL;
    ordinal := NULL;
END $$;

-- A problem of pgtt.cron_scan as one line, worded as str(ScheduleError) in Python.
CREATE FUNCTION pgtt._cron_message(p_field text, p_ordinal text, p_problem text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS $$
    SELECT CASE WHEN p_problem IS NULL THEN NULL
                WHEN p_ordinal IS NULL THEN p_field || ': ' || p_problem
                ELSE format('cron field "%s" (%s): %s', p_field, p_ordinal, p_problem) END
$$;

-- NULL when the text is a valid cron expression or macro, else the problem in one line.
CREATE FUNCTION pgtt.cron_problem(p_text text, p_also_known text[] DEFAULT '{}') RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS $$
    SELECT pgtt._cron_message(s.field, s.ordinal, s.problem) FROM pgtt.cron_scan(p_text, p_also_known) s
$$;

-- The fields of a valid cron expression or macro; raises invalid_parameter_value with the
-- message of pgtt.cron_problem otherwise.
CREATE FUNCTION pgtt.cron_parse(p_text text, p_also_known text[] DEFAULT '{}') RETURNS pgtt.cron_fields
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path = pg_catalog AS $$
DECLARE
    s record;
BEGIN
    SELECT * INTO s FROM pgtt.cron_scan(p_text, p_also_known);
    IF s.problem IS NULL THEN
        RETURN s.fields;
    END IF;
    IF s.ordinal IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = pgtt._cron_message(s.field, s.ordinal, s.problem);
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
        MESSAGE = pgtt._cron_message(s.field, s.ordinal, s.problem),
        HINT = 'fields: [second] minute hour day-of-month month day-of-week; '
               'items: *, n, a-b, */s, a-b/s, a/s, names, L';
END $$;

GRANT USAGE ON SCHEMA pgtt TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgtt._cron_quote(text), pgtt.cron_scan(text, text[]),
    pgtt._cron_message(text, text, text), pgtt.cron_problem(text, text[]), pgtt.cron_parse(text, text[])
TO PUBLIC;
