-- timetable: the pg_timetable 7 compatible schema (tables, types, job API) plus the
-- bookkeeping our engine needs (per-chain options, due index, run/claim table).
--
-- Everything pg_timetable-written SQL uses keeps its name, columns and signature.  Our
-- additions live in separate tables (chain_option, chain_state, chain_run) that such SQL
-- never has to know about.
--
-- The cron dialect implemented here is the one of engine/schedules.py (the one evaluator);
-- tests/test_timetable_cron_parity.py checks both agree on acceptance and on next firings.

CREATE SCHEMA IF NOT EXISTS timetable;
COMMENT ON SCHEMA timetable IS 'pgtt-tui: pg_timetable-compatible chains, tasks and logs';

-- pg_timetable's own migration ledger; kept for tools that read it.  pgtt-tui itself uses
-- pgtt.schema_migration.
CREATE TABLE timetable.migration (
    id      INT8 NOT NULL PRIMARY KEY,
    version TEXT NOT NULL
);
INSERT INTO timetable.migration (id, version) VALUES (17, '00797 Add indexes to timetable.execution_log');

---------------------------------------------------------------------------------------------
-- Interval text (the grammar of engine.schedules.parse_interval), in microseconds
---------------------------------------------------------------------------------------------

CREATE FUNCTION timetable._interval_error(p_source text, p_problem text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
        MESSAGE = 'interval: ' || p_problem || CASE WHEN p_source <> '' THEN ' in ''' || p_source || '''' ELSE '' END,
        HINT = 'e.g. ''10 seconds'', ''1 hour 30 minutes'', ''00:05:00'', ''500 ms'', ''PT5M''';
END $$;

CREATE FUNCTION timetable._unit_us(p_unit text) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_unit IN ('microsecond','microseconds','usec','usecs','us') THEN 1::numeric
        WHEN p_unit IN ('millisecond','milliseconds','msec','msecs','ms') THEN 1000::numeric
        WHEN p_unit IN ('second','seconds','sec','secs','s') THEN 1000000::numeric
        WHEN p_unit IN ('minute','minutes','min','mins','m') THEN 60000000::numeric
        WHEN p_unit IN ('hour','hours','hr','hrs','h') THEN 3600000000::numeric
        WHEN p_unit IN ('day','days','d') THEN 86400000000::numeric
        WHEN p_unit IN ('week','weeks','w') THEN 604800000000::numeric
        WHEN p_unit IN ('month','months','mon','mons') THEN 2592000000000::numeric
        WHEN p_unit IN ('year','years','yr','yrs','y') THEN 31557600000000::numeric
        WHEN p_unit IN ('decade','decades') THEN 315576000000000::numeric
        WHEN p_unit IN ('century','centuries') THEN 3155760000000000::numeric
        WHEN p_unit IN ('millennium','millennia','millenniums') THEN 31557600000000000::numeric
    END
$$;

CREATE FUNCTION timetable._unit_name(p_unit text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_unit IN ('microsecond','microseconds','usec','usecs','us') THEN 'microsecond'
        WHEN p_unit IN ('millisecond','milliseconds','msec','msecs','ms') THEN 'millisecond'
        WHEN p_unit IN ('second','seconds','sec','secs','s') THEN 'second'
        WHEN p_unit IN ('minute','minutes','min','mins','m') THEN 'minute'
        WHEN p_unit IN ('hour','hours','hr','hrs','h') THEN 'hour'
        WHEN p_unit IN ('day','days','d') THEN 'day'
        WHEN p_unit IN ('week','weeks','w') THEN 'week'
        WHEN p_unit IN ('month','months','mon','mons') THEN 'month'
        WHEN p_unit IN ('year','years','yr','yrs','y') THEN 'year'
        WHEN p_unit IN ('decade','decades') THEN 'decade'
        WHEN p_unit IN ('century','centuries') THEN 'century'
        WHEN p_unit IN ('millennium','millennia','millenniums') THEN 'millennium'
    END
$$;

-- Interval text -> positive number of microseconds; raises naming "interval" otherwise.
CREATE FUNCTION timetable.interval_us(p_text text) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    src text := regexp_replace(p_text, '^\s+|\s+$', '', 'g');
    iso text[];
    total numeric := 0;
    sizes numeric[] := ARRAY[31557600000000, 2592000000000, 604800000000, 86400000000,
                             3600000000, 60000000, 1000000]::numeric[];
    pos int := 1;
    m text[];
    rest text;
    seen text[] := '{}';
    names text[];
    amount numeric;
    negate boolean := false;
    unit text;
    tparts text[];
    micro numeric;
    i int;
BEGIN
    IF src = '' THEN
        PERFORM timetable._interval_error('', 'missing interval (e.g. ''10 seconds'', ''1 hour 30 minutes'', ''00:05:00'')');
    END IF;
    iso := regexp_match(src, '^P(?!$)(?:(\d+(?:[.,]\d+)?)Y)?(?:(\d+(?:[.,]\d+)?)M)?(?:(\d+(?:[.,]\d+)?)W)?(?:(\d+(?:[.,]\d+)?)D)?(?:T(?=\d)(?:(\d+(?:[.,]\d+)?)H)?(?:(\d+(?:[.,]\d+)?)M)?(?:(\d+(?:[.,]\d+)?)S)?)?$', 'i');
    IF iso IS NOT NULL THEN
        FOR i IN 1..7 LOOP
            IF iso[i] IS NOT NULL THEN
                total := total + replace(iso[i], ',', '.')::numeric * sizes[i];
            END IF;
        END LOOP;
    ELSE
        WHILE pos <= length(src) LOOP
            m := regexp_match(substr(src, pos),
                '^(\s*(?:([+-]?\d+:\d{1,2}(?::\d{1,2}(?:\.\d*)?)?)|([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-z]+)?|(ago)\y))', 'i');
            IF m IS NULL THEN
                rest := regexp_replace(substr(src, pos), '^\s+|\s+$', '', 'g');
                EXIT WHEN rest = '';
                PERFORM timetable._interval_error(src, 'cannot read ''' || (regexp_split_to_array(rest, '\s+'))[1] || '''');
            END IF;
            pos := pos + length(m[1]);
            IF negate THEN
                PERFORM timetable._interval_error(src, '''ago'' must come last');
            END IF;
            IF m[5] IS NOT NULL THEN
                negate := true;
                CONTINUE;
            END IF;
            IF m[2] IS NOT NULL THEN
                names := ARRAY['hour', 'minute', 'second'];
                tparts := string_to_array(ltrim(m[2], '+-'), ':');
                IF tparts[2]::numeric >= 60 OR coalesce(tparts[3], '0')::numeric >= 60 THEN
                    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                        MESSAGE = format('interval: minutes and seconds must be below 60 in ''%s''', m[2]);
                END IF;
                amount := (tparts[1]::numeric * 3600 + tparts[2]::numeric * 60 + coalesce(tparts[3], '0')::numeric) * 1000000;
                IF left(m[2], 1) = '-' THEN amount := -amount; END IF;
            ELSE
                unit := lower(coalesce(m[4], ''));
                IF unit = 'ago' THEN
                    unit := '';
                    negate := true;
                END IF;
                IF unit <> '' THEN
                    IF timetable._unit_us(unit) IS NULL THEN
                        PERFORM timetable._interval_error(src, 'unknown unit ''' || m[4] || '''');
                    END IF;
                    names := ARRAY[timetable._unit_name(unit)];
                    amount := m[3]::numeric * timetable._unit_us(unit);
                ELSE
                    names := ARRAY['second'];
                    amount := m[3]::numeric * 1000000;
                END IF;
            END IF;
            IF seen && names THEN
                PERFORM timetable._interval_error(src, array_to_string(ARRAY(
                    SELECT x FROM unnest(seen) x WHERE x = ANY(names) ORDER BY x), '/') || ' given twice');
            END IF;
            seen := seen || names;
            total := total + amount;
        END LOOP;
        IF cardinality(seen) = 0 THEN
            PERFORM timetable._interval_error(src, 'no amount given');
        END IF;
        IF negate THEN total := -total; END IF;
    END IF;
    -- round half to even, as Decimal.quantize(ROUND_HALF_EVEN)
    micro := round(total);
    IF abs(total - trunc(total)) = 0.5 THEN
        micro := 2 * round(total / 2);
    END IF;
    IF micro <= 0 THEN
        PERFORM timetable._interval_error(src, CASE WHEN micro < 0 OR total < 0 THEN 'interval must be positive'
                                                    ELSE 'interval must be longer than zero' END);
    END IF;
    IF micro > 86399999999999999999 THEN  -- beyond Python's timedelta.max
        PERFORM timetable._interval_error(src, 'interval is too large');
    END IF;
    RETURN micro::bigint;
END $$;

---------------------------------------------------------------------------------------------
-- Cron expressions (the dialect of engine.schedules.CronExpr)
---------------------------------------------------------------------------------------------

CREATE TYPE timetable.cron_fields AS (
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

CREATE FUNCTION timetable._cron_error(p_field text, p_pos int, p_problem text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
        MESSAGE = format('cron field "%s" (%s): %s', p_field,
                         (ARRAY['1st','2nd','3rd','4th','5th','6th'])[p_pos + 1], p_problem),
        HINT = 'fields: [second] minute hour day-of-month month day-of-week; items: *, n, a-b, */s, a-b/s, a/s, names, L';
END $$;

CREATE FUNCTION timetable._cron_value(p_token text, p_field text, p_low int, p_high int, p_pos int)
RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v numeric;
    names text[];
    idx int;
BEGIN
    IF p_token ~ '^[0-9]+$' THEN
        v := p_token::numeric;
        IF v < p_low OR v > p_high THEN
            PERFORM timetable._cron_error(p_field, p_pos, format('%s is out of range %s-%s', v, p_low, p_high));
        END IF;
        RETURN v::int;
    END IF;
    IF p_field = 'month' THEN
        names := ARRAY['JAN','FEB','MAR','APR','MAY','JUN','JUL','AUG','SEP','OCT','NOV','DEC'];
        idx := array_position(names, upper(p_token));
        IF idx IS NOT NULL THEN RETURN idx; END IF;
    ELSIF p_field = 'day of week' THEN
        names := ARRAY['SUN','MON','TUE','WED','THU','FRI','SAT'];
        idx := array_position(names, upper(p_token));
        IF idx IS NOT NULL THEN RETURN idx - 1; END IF;
    END IF;
    IF upper(p_token) = 'L' THEN
        IF p_field = 'day of month' THEN
            PERFORM timetable._cron_error(p_field, p_pos, 'L (last day of month) cannot be part of a range or step');
        END IF;
        PERFORM timetable._cron_error(p_field, p_pos, 'L (last day of month) is only allowed in the day-of-month field');
    END IF;
    IF p_token = '' THEN
        PERFORM timetable._cron_error(p_field, p_pos, 'missing number');
    END IF;
    PERFORM timetable._cron_error(p_field, p_pos, format('''%s'' is not %s', p_token,
        CASE p_field WHEN 'month' THEN 'a month name or number 1-12'
                     WHEN 'day of week' THEN 'a day name or number 0-7'
                     ELSE format('a number %s-%s', p_low, p_high) END));
    RETURN NULL;
END $$;

-- One field -> allowed values (sorted) and whether L was given.
CREATE FUNCTION timetable._cron_field(p_text text, p_field text, p_low int, p_high int, p_pos int,
                                      OUT vals int[], OUT last boolean)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    item text;
    base text;
    step_text text;
    step int;
    lo int;
    hi int;
    k int;
    acc int[] := '{}';
BEGIN
    last := false;
    FOREACH item IN ARRAY string_to_array(p_text, ',') LOOP
        IF item = '' THEN
            PERFORM timetable._cron_error(p_field, p_pos, format('empty item in list ''%s''', p_text));
        END IF;
        IF upper(item) = 'L' THEN
            IF p_field <> 'day of month' THEN
                PERFORM timetable._cron_error(p_field, p_pos, 'L (last day of month) is only allowed in the day-of-month field');
            END IF;
            last := true;
            CONTINUE;
        END IF;
        k := position('/' IN item);
        IF k > 0 THEN
            base := substr(item, 1, k - 1);
            step_text := substr(item, k + 1);
            IF step_text !~ '^[0-9]+$' THEN
                PERFORM timetable._cron_error(p_field, p_pos, format('step ''%s'' is not a positive whole number', step_text));
            END IF;
            IF step_text::numeric = 0 THEN
                PERFORM timetable._cron_error(p_field, p_pos, 'step 0 is not allowed (use a step of 1 or more)');
            END IF;
            step := least(step_text::numeric, 1000)::int;
        ELSE
            base := item;
            step := 1;
        END IF;
        IF base = '*' THEN
            lo := p_low;
            hi := p_high;
        ELSIF position('-' IN base) > 0 THEN
            lo := timetable._cron_value(substr(base, 1, position('-' IN base) - 1), p_field, p_low, p_high, p_pos);
            hi := timetable._cron_value(substr(base, position('-' IN base) + 1), p_field, p_low, p_high, p_pos);
            IF lo > hi THEN
                PERFORM timetable._cron_error(p_field, p_pos, format('range %s is reversed (start is after end)', base));
            END IF;
        ELSE
            lo := timetable._cron_value(base, p_field, p_low, p_high, p_pos);
            hi := CASE WHEN k > 0 THEN p_high ELSE lo END;
        END IF;
        acc := acc || ARRAY(SELECT generate_series(lo, hi, step));
    END LOOP;
    IF p_field = 'day of week' AND 7 = ANY(acc) THEN
        acc := array_remove(acc, 7) || 0;
    END IF;
    vals := ARRAY(SELECT DISTINCT x FROM unnest(acc) x ORDER BY x);
END $$;

-- Parse a 5/6-field cron expression or macro; raises naming the bad field.
CREATE FUNCTION timetable.cron_parse(p_text text) RETURNS timetable.cron_fields
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    src text := regexp_replace(p_text, '^\s+|\s+$', '', 'g');
    parts text[];
    n int;
    off int;
    r timetable.cron_fields;
    f record;
    names text[] := ARRAY['second', 'minute', 'hour', 'day of month', 'month', 'day of week'];
    lows int[] := ARRAY[0, 0, 0, 1, 1, 0];
    highs int[] := ARRAY[59, 59, 23, 31, 12, 7];
    maxdays int[] := ARRAY[31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    i int;
    dom_last boolean := false;
BEGIN
    IF src = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'cron: empty expression; expected 5 fields (minute hour day-of-month month day-of-week), 6 with leading seconds, or a macro such as @daily';
    END IF;
    IF left(src, 1) = '@' THEN
        CASE lower(src)
            WHEN '@yearly', '@annually' THEN src := '0 0 1 1 *';
            WHEN '@monthly' THEN src := '0 0 1 * *';
            WHEN '@weekly' THEN src := '0 0 * * 0';
            WHEN '@daily', '@midnight' THEN src := '0 0 * * *';
            WHEN '@hourly' THEN src := '0 * * * *';
            WHEN '@every_minute' THEN src := '* * * * *';
            WHEN '@every_second' THEN src := '* * * * * *';
            ELSE
                RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                    MESSAGE = format('cron: unknown keyword ''%s''; known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @every_minute, @every_second, @every <interval>, @after <interval>, @reboot', src);
        END CASE;
    END IF;
    parts := regexp_split_to_array(src, '\s+');
    n := cardinality(parts);
    IF n NOT IN (5, 6) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('cron: expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with leading seconds), got %s in ''%s''', n, src);
    END IF;
    off := CASE WHEN n = 5 THEN 1 ELSE 0 END;  -- index shift into names[]
    r.seconds := ARRAY[0];
    FOR i IN 1..n LOOP
        f := timetable._cron_field(parts[i], names[i + off], lows[i + off], highs[i + off], i - 1);
        CASE names[i + off]
            WHEN 'second' THEN r.seconds := f.vals;
            WHEN 'minute' THEN r.minutes := f.vals;
            WHEN 'hour' THEN r.hours := f.vals;
            WHEN 'day of month' THEN r.days := f.vals; dom_last := f.last;
            WHEN 'month' THEN r.months := f.vals;
            ELSE r.weekdays := f.vals;
        END CASE;
    END LOOP;
    r.last_day := dom_last;
    r.dom_any := parts[n - 2] = '*';
    r.dow_any := parts[n] = '*';
    IF r.dow_any AND NOT dom_last AND cardinality(r.days) > 0 THEN
        IF NOT EXISTS (SELECT 1 FROM unnest(r.days) d, unnest(r.months) m WHERE d <= maxdays[m]) THEN
            PERFORM timetable._cron_error('day of month', n - 3, format('%s %s in month%s %s',
                array_to_string(r.days, ','), CASE WHEN cardinality(r.days) = 1 THEN 'never occurs' ELSE 'never occur' END,
                CASE WHEN cardinality(r.months) > 1 THEN 's' ELSE '' END, array_to_string(r.months, ',')));
        END IF;
    END IF;
    RETURN r;
END $$;

-- The domain check: exactly what engine.schedules.parse_schedule accepts.  Raises with a
-- message naming the bad field; returns true otherwise (NULL stays allowed: every minute).
CREATE FUNCTION timetable.cron_validate(p_text text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    src text := regexp_replace(p_text, '^\s+|\s+$', '', 'g');
    m text[];
BEGIN
    IF lower(src) = '@reboot' THEN
        RETURN true;
    END IF;
    m := regexp_match(src, '^@(every|after)(?![a-z_])\s*(.*)$', 'i');
    IF m IS NOT NULL THEN
        IF regexp_replace(m[2], '^\s+|\s+$', '', 'g') = '' THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = format('interval: missing interval after @%s (e.g. ''@%s 10 seconds'')', lower(m[1]), lower(m[1]));
        END IF;
        PERFORM timetable.interval_us(m[2]);
        RETURN true;
    END IF;
    PERFORM timetable.cron_parse(src);
    RETURN true;
END $$;

CREATE DOMAIN timetable.cron AS TEXT CHECK (timetable.cron_validate(VALUE));
COMMENT ON DOMAIN timetable.cron IS
    'Cron (5 or 6 fields, names, ranges with steps, lists, L, @macros), @every <interval>, @after <interval> or @reboot';

-- Kind of a schedule text: cron | every | after | reboot (NULL run_at = every minute = cron).
CREATE FUNCTION timetable.schedule_kind(p_text text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_text IS NULL THEN 'cron'
        WHEN lower(regexp_replace(p_text, '^\s+|\s+$', '', 'g')) = '@reboot' THEN 'reboot'
        WHEN regexp_replace(p_text, '^\s+', '') ~* '^@every(?![a-z_])' THEN 'every'
        WHEN regexp_replace(p_text, '^\s+', '') ~* '^@after(?![a-z_])' THEN 'after'
        ELSE 'cron' END
$$;

-- The @every/@after interval of a schedule text, NULL for other kinds.
CREATE FUNCTION timetable.schedule_interval(p_text text) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN timetable.schedule_kind(p_text) IN ('every', 'after') THEN
        make_interval(secs => timetable.interval_us(
            (regexp_match(regexp_replace(p_text, '^\s+|\s+$', '', 'g'), '^@(?:every|after)\s*(.*)$', 'i'))[1]) / 1000000.0)
    END
$$;

---------------------------------------------------------------------------------------------
-- Next firing (the search of engine.schedules._next_instant)
---------------------------------------------------------------------------------------------

CREATE FUNCTION timetable._next_in(p_vals int[], p_v int) RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT min(x) FROM unnest(p_vals) x WHERE x >= p_v $$;

-- First day >= p_day of the month allowed by the day fields, or NULL.
CREATE FUNCTION timetable._next_day(f timetable.cron_fields, y int, mo int, p_day int) RETURNS int
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    last int := extract(day FROM (make_date(y, mo, 1) + interval '1 month - 1 day'))::int;
    wd int;
    d int;
    dom_ok boolean;
    dow_ok boolean;
BEGIN
    IF p_day > last THEN RETURN NULL; END IF;
    IF f.dom_any AND f.dow_any THEN RETURN p_day; END IF;
    wd := extract(dow FROM make_date(y, mo, p_day))::int;
    FOR d IN p_day..last LOOP
        dom_ok := d = ANY(f.days) OR (f.last_day AND d = last);
        dow_ok := wd = ANY(f.weekdays);
        IF (f.dom_any AND dow_ok) OR (f.dow_any AND dom_ok) OR (NOT f.dom_any AND NOT f.dow_any AND (dom_ok OR dow_ok)) THEN
            RETURN d;
        END IF;
        wd := (wd + 1) % 7;
    END LOOP;
    RETURN NULL;
END $$;

-- Earliest matching wall time >= p_start (whole seconds), or NULL past the year 9999.
CREATE FUNCTION timetable._first_at_or_after(f timetable.cron_fields, p_start timestamp) RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    st timestamp := p_start;
    y int; mo int; d int; h int; mi int; s int;
    v int;
BEGIN
    IF date_trunc('second', st) <> st THEN
        st := date_trunc('second', st) + interval '1 second';
    END IF;
    y := extract(year FROM st); mo := extract(month FROM st); d := extract(day FROM st);
    h := extract(hour FROM st); mi := extract(minute FROM st); s := floor(extract(second FROM st));
    LOOP
        IF y > 9999 THEN RETURN NULL; END IF;
        v := timetable._next_in(f.months, mo);
        IF v IS NULL THEN
            y := y + 1; mo := 1; d := 1; h := 0; mi := 0; s := 0;
            CONTINUE;
        END IF;
        IF v <> mo THEN mo := v; d := 1; h := 0; mi := 0; s := 0; END IF;
        v := timetable._next_day(f, y, mo, d);
        IF v IS NULL THEN
            mo := mo + 1; d := 1; h := 0; mi := 0; s := 0;
            CONTINUE;
        END IF;
        IF v <> d THEN d := v; h := 0; mi := 0; s := 0; END IF;
        v := timetable._next_in(f.hours, h);
        IF v IS NULL THEN
            d := d + 1; h := 0; mi := 0; s := 0;
            CONTINUE;
        END IF;
        IF v <> h THEN h := v; mi := 0; s := 0; END IF;
        v := timetable._next_in(f.minutes, mi);
        IF v IS NULL THEN
            h := h + 1; mi := 0; s := 0;
            CONTINUE;
        END IF;
        IF v <> mi THEN mi := v; s := 0; END IF;
        v := timetable._next_in(f.seconds, s);
        IF v IS NULL THEN
            mi := mi + 1; s := 0;
            CONTINUE;
        END IF;
        RETURN make_timestamp(y, mo, d, h, mi, v);
    END LOOP;
END $$;

CREATE FUNCTION timetable._utc_offset(t timestamptz, tz text) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$ SELECT (t AT TIME ZONE tz) - (t AT TIME ZONE 'UTC') $$;

-- First instant (whole seconds) in (lo, hi] whose UTC offset is the one at hi.
CREATE FUNCTION timetable._transition(tz text, lo timestamptz, hi timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    target interval := timetable._utc_offset(hi, tz);
    lo_s bigint := floor(extract(epoch FROM lo));
    hi_s bigint := ceil(extract(epoch FROM hi));
    mid bigint;
BEGIN
    WHILE hi_s - lo_s > 1 LOOP
        mid := (lo_s + hi_s) / 2;
        IF timetable._utc_offset(to_timestamp(mid), tz) = target THEN
            hi_s := mid;
        ELSE
            lo_s := mid;
        END IF;
    END LOOP;
    RETURN to_timestamp(hi_s);
END $$;

-- A wall time in zone tz as Python's fold=0 reads it (first occurrence in an overlap,
-- the offset before the transition in a gap).  Returns (instant, exists, fold1 instant).
CREATE FUNCTION timetable._wall_fold0(p_wall timestamp, tz text, OUT first timestamptz, OUT valid boolean,
                                      OUT second timestamptz)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    u timestamptz := p_wall AT TIME ZONE 'UTC';
    o_prev interval := timetable._utc_offset(u - interval '36 hours', tz);
    o_next interval := timetable._utc_offset(u + interval '36 hours', tz);
    c1 timestamptz := (p_wall - o_prev) AT TIME ZONE 'UTC';
    c2 timestamptz := (p_wall - o_next) AT TIME ZONE 'UTC';
    ok1 boolean := (c1 AT TIME ZONE tz) = p_wall;
    ok2 boolean := (c2 AT TIME ZONE tz) = p_wall;
BEGIN
    second := c2;
    IF ok1 AND ok2 THEN
        first := least(c1, c2); valid := true;
    ELSIF ok1 THEN
        first := c1; valid := true;
    ELSIF ok2 THEN
        first := c2; valid := true;
    ELSE
        first := c1; valid := false;  -- gap
    END IF;
END $$;

-- Wall time -> the instant it fires at: once -> that instant; overlap -> first occurrence;
-- gap -> the transition (first valid instant after the gap).
CREATE FUNCTION timetable._wall_to_utc(p_wall timestamp, tz text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    r record;
BEGIN
    r := timetable._wall_fold0(p_wall, tz);
    IF r.valid THEN
        RETURN r.first;
    END IF;
    RETURN timetable._transition(tz, r.second, r.first);
END $$;

CREATE FUNCTION timetable._is_utc(tz text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$ SELECT tz IS NULL OR upper(btrim(tz)) IN ('UTC', 'Z', 'GMT') $$;

-- Whether tz is a zone name the engine can use (IANA names, as zoneinfo knows them).
CREATE FUNCTION timetable.valid_time_zone(tz text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT timetable._is_utc(tz) OR EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = btrim(tz))
$$;

-- First firing strictly after p_after of a cron expression, evaluated in zone p_tz
-- (NULL = UTC).  No search horizon: NULL only past the year 9999.
CREATE FUNCTION timetable.cron_next(p_cron text, p_after timestamptz, p_tz text DEFAULT NULL)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
    f timetable.cron_fields := timetable.cron_parse(coalesce(p_cron, '* * * * *'));
    tz text := btrim(p_tz);
    t timestamptz := p_after;
    loc timestamp;
    st timestamp;
    w timestamp;
    inst timestamptz;
    r record;
    i int;
BEGIN
    IF p_after IS NULL THEN RETURN NULL; END IF;
    IF timetable._is_utc(tz) THEN
        w := timetable._first_at_or_after(f, date_trunc('second', t AT TIME ZONE 'UTC') + interval '1 second');
        RETURN w AT TIME ZONE 'UTC';
    END IF;
    IF NOT timetable.valid_time_zone(tz) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('timezone: unknown time zone ''%s'' (use an IANA name such as Europe/Berlin)', p_tz);
    END IF;
    loc := t AT TIME ZONE tz;
    r := timetable._wall_fold0(loc, tz);
    IF r.first <> t THEN
        -- second pass through a repeated stretch: those wall times fired already
        st := (timetable._transition(tz, r.first, t) AT TIME ZONE 'UTC') + timetable._utc_offset(r.first, tz);
    ELSE
        st := date_trunc('second', loc) + interval '1 second';
    END IF;
    FOR i IN 1..100000 LOOP
        w := timetable._first_at_or_after(f, st);
        IF w IS NULL THEN RETURN NULL; END IF;
        inst := timetable._wall_to_utc(w, tz);
        IF inst > t THEN RETURN inst; END IF;
        st := w + interval '1 second';
    END LOOP;
    RAISE EXCEPTION 'schedule search did not converge';
END $$;

-- Next firing of any run_at text: cron (NULL = every minute), @every/@after = after + interval,
-- @reboot = NULL.
CREATE FUNCTION timetable.schedule_next(p_run_at text, p_after timestamptz, p_tz text DEFAULT NULL)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
BEGIN
    CASE timetable.schedule_kind(p_run_at)
        WHEN 'reboot' THEN RETURN NULL;
        WHEN 'every', 'after' THEN RETURN p_after + timetable.schedule_interval(p_run_at);
        ELSE RETURN timetable.cron_next(p_run_at, p_after, p_tz);
    END CASE;
END $$;

-- pg_timetable: the next run of a schedule from now, in the session time zone.  Unlike
-- pg_timetable there is no one-year horizon, and it agrees with the scheduler.
CREATE FUNCTION timetable.next_run(cron timetable.cron) RETURNS timestamptz
LANGUAGE sql STABLE STRICT AS $$
    SELECT timetable.schedule_next(cron, now(), current_setting('TimeZone'))
$$;

-- pg_timetable: does run_at fire within the minute of ts (session time zone)?  NULL means
-- every minute; @every/@after/@reboot never match (they are not minute-based).
CREATE FUNCTION timetable.is_cron_in_time(run_at timetable.cron, ts timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m timestamptz := date_trunc('minute', ts);
BEGIN
    IF run_at IS NULL THEN RETURN true; END IF;
    IF timetable.schedule_kind(run_at) <> 'cron' THEN RETURN false; END IF;
    RETURN timetable.cron_next(run_at, m - interval '1 microsecond', current_setting('TimeZone')) < m + interval '1 minute';
END $$;

-- pg_timetable compatibility helpers
CREATE FUNCTION timetable.cron_split_to_arrays(cron text, OUT mins integer[], OUT hours integer[],
    OUT days integer[], OUT months integer[], OUT dow integer[])
RETURNS record LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    f timetable.cron_fields := timetable.cron_parse(cron);
BEGIN
    mins := f.minutes; hours := f.hours; days := f.days; months := f.months; dow := f.weekdays;
END $$;

CREATE FUNCTION timetable.cron_runs(from_ts timestamptz, cron text) RETURNS SETOF timestamptz
LANGUAGE plpgsql STABLE STRICT AS $$
DECLARE
    t timestamptz := from_ts;
    n int := 0;
BEGIN
    LOOP
        t := timetable.schedule_next(cron, t, current_setting('TimeZone'));
        EXIT WHEN t IS NULL OR t > from_ts + interval '1 year' OR n >= 100000;
        RETURN NEXT t;
        n := n + 1;
    END LOOP;
END $$;

---------------------------------------------------------------------------------------------
-- pg_timetable tables
---------------------------------------------------------------------------------------------

CREATE TABLE timetable.chain (
    chain_id            BIGSERIAL   PRIMARY KEY,
    chain_name          TEXT        NOT NULL UNIQUE,
    run_at              timetable.cron,
    max_instances       INTEGER,
    timeout             INTEGER     DEFAULT 0,
    live                BOOLEAN     DEFAULT FALSE,
    self_destruct       BOOLEAN     DEFAULT FALSE,
    exclusive_execution BOOLEAN     DEFAULT FALSE,
    client_name         TEXT,
    on_error            TEXT
);
COMMENT ON TABLE timetable.chain IS 'Stores information about chains schedule';
COMMENT ON COLUMN timetable.chain.run_at IS 'Extended CRON-style time notation the chain has to be run at';
COMMENT ON COLUMN timetable.chain.max_instances IS 'Number of instances (clients) this chain can run in parallel';
COMMENT ON COLUMN timetable.chain.timeout IS 'Abort any chain that takes more than the specified number of milliseconds';
COMMENT ON COLUMN timetable.chain.live IS 'Indication that the chain is ready to run, set to FALSE to pause execution';
COMMENT ON COLUMN timetable.chain.self_destruct IS 'Indication that this chain will delete itself after successful run';
COMMENT ON COLUMN timetable.chain.exclusive_execution IS 'All parallel chains should be paused while executing this chain';
COMMENT ON COLUMN timetable.chain.client_name IS 'Only client with this name is allowed to run this chain, set to NULL to allow any client';
COMMENT ON COLUMN timetable.chain.on_error IS 'SQL to run in a new transaction when the chain fails';

CREATE TYPE timetable.command_kind AS ENUM ('SQL', 'PROGRAM', 'BUILTIN');

CREATE TABLE timetable.task (
    task_id             BIGSERIAL               PRIMARY KEY,
    chain_id            BIGINT                  REFERENCES timetable.chain(chain_id) ON UPDATE CASCADE ON DELETE CASCADE,
    task_order          DOUBLE PRECISION        NOT NULL,
    task_name           TEXT,
    kind                timetable.command_kind  NOT NULL DEFAULT 'SQL',
    command             TEXT                    NOT NULL,
    run_as              TEXT,
    database_connection TEXT,
    ignore_error        BOOLEAN                 NOT NULL DEFAULT FALSE,
    autonomous          BOOLEAN                 NOT NULL DEFAULT FALSE,
    timeout             INTEGER                 DEFAULT 0,
    live                BOOLEAN                 NOT NULL DEFAULT TRUE
);
CREATE INDEX task_chain_order_idx ON timetable.task (chain_id, task_order);
COMMENT ON TABLE timetable.task IS 'Holds information about chain elements aka tasks';
COMMENT ON COLUMN timetable.task.chain_id IS 'Link to the chain, if NULL task considered to be disabled';
COMMENT ON COLUMN timetable.task.task_order IS 'Indicates the order of task within a chain';
COMMENT ON COLUMN timetable.task.run_as IS 'Role name to run task as. Uses SET ROLE for SQL commands';
COMMENT ON COLUMN timetable.task.ignore_error IS 'Indicates whether a next task in a chain can be executed regardless of the success of the current one';
COMMENT ON COLUMN timetable.task.kind IS 'Indicates whether "command" is SQL, built-in function or an external program';
COMMENT ON COLUMN timetable.task.command IS 'Contains either an SQL command, or command string to be executed';
COMMENT ON COLUMN timetable.task.timeout IS 'Abort any task within a chain that takes more than the specified number of milliseconds';
COMMENT ON COLUMN timetable.task.live IS 'Indication that the task is ready to run, set to FALSE to skip it';

CREATE TABLE timetable.parameter (
    task_id     BIGINT  REFERENCES timetable.task(task_id) ON UPDATE CASCADE ON DELETE CASCADE,
    order_id    INTEGER CHECK (order_id > 0),
    value       JSONB,
    PRIMARY KEY (task_id, order_id)
);
COMMENT ON TABLE timetable.parameter IS 'Stores parameters passed as arguments to a chain task';

CREATE UNLOGGED TABLE timetable.active_session (
    client_pid  BIGINT  NOT NULL,
    server_pid  BIGINT  NOT NULL,
    client_name TEXT    NOT NULL,
    started_at  TIMESTAMPTZ DEFAULT now()
);
COMMENT ON TABLE timetable.active_session IS 'Stores information about active sessions';

CREATE TYPE timetable.log_type AS ENUM ('DEBUG', 'NOTICE', 'INFO', 'ERROR', 'PANIC', 'USER');

CREATE FUNCTION timetable.get_client_name(integer) RETURNS TEXT AS
$$
    SELECT client_name FROM timetable.active_session WHERE server_pid = $1 LIMIT 1
$$
LANGUAGE sql;

CREATE TABLE timetable.log (
    ts              TIMESTAMPTZ         DEFAULT now(),
    pid             INTEGER             NOT NULL,
    log_level       timetable.log_type  NOT NULL,
    client_name     TEXT                DEFAULT timetable.get_client_name(pg_backend_pid()),
    message         TEXT,
    message_data    jsonb
);
CREATE INDEX log_ts_idx ON timetable.log USING brin (ts);
COMMENT ON TABLE timetable.log IS 'Stores log entries of active sessions';

CREATE TABLE timetable.execution_log (
    chain_id     BIGINT,
    task_id      BIGINT,
    txid         BIGINT NOT NULL,
    last_run     TIMESTAMPTZ DEFAULT now(),
    finished     TIMESTAMPTZ,
    pid          BIGINT,
    returncode   INTEGER,
    ignore_error BOOLEAN,
    kind         timetable.command_kind,
    command      TEXT,
    output       TEXT,
    client_name  TEXT        NOT NULL,
    params       TEXT
);
CREATE INDEX execution_log_chain_finished_idx ON timetable.execution_log (chain_id, finished);
CREATE INDEX execution_log_finished_brin_idx ON timetable.execution_log USING brin (finished);
COMMENT ON TABLE timetable.execution_log IS 'Stores log entries of executed tasks and chains';

CREATE UNLOGGED TABLE timetable.active_chain (
    chain_id    BIGINT  NOT NULL,
    client_name TEXT    NOT NULL,
    started_at  TIMESTAMPTZ DEFAULT now()
);
COMMENT ON TABLE timetable.active_chain IS 'Stores information about active chains within session';

---------------------------------------------------------------------------------------------
-- pgtt-tui additions (pg_timetable SQL never needs to know about these)
---------------------------------------------------------------------------------------------

-- Per-chain options.  No row = defaults (engine's time zone, missed runs: run once).
CREATE TABLE timetable.chain_option (
    chain_id     BIGINT PRIMARY KEY REFERENCES timetable.chain(chain_id) ON UPDATE CASCADE ON DELETE CASCADE,
    time_zone    TEXT CHECK (time_zone IS NULL OR timetable.valid_time_zone(time_zone)),
    missed_runs  TEXT NOT NULL DEFAULT 'run_once' CHECK (missed_runs IN ('run_once', 'skip', 'run_all')),
    note         TEXT
);
COMMENT ON TABLE timetable.chain_option IS
    'pgtt-tui: per-chain IANA time zone for cron schedules (NULL: the engine''s server TimeZone) and missed-run policy after downtime';

-- Scheduling state: the due index.  One row per chain, maintained by triggers (dirty) and
-- by the engine (next_due_at, computed with engine/schedules.py).
CREATE TABLE timetable.chain_state (
    chain_id         BIGINT PRIMARY KEY REFERENCES timetable.chain(chain_id) ON UPDATE CASCADE ON DELETE CASCADE,
    client_name      TEXT,                   -- copy of chain.client_name (part of the due index)
    next_due_at      TIMESTAMPTZ,            -- next firing; NULL: none (paused, @reboot, @after running, dirty)
    dirty            BOOLEAN NOT NULL DEFAULT TRUE,  -- schedule/live/zone changed: the engine recomputes
    version          BIGINT NOT NULL DEFAULT 1,      -- bumped on every change (compare-and-set)
    last_due_at      TIMESTAMPTZ,            -- the firing last claimed
    last_run_id      BIGINT,
    last_started_at  TIMESTAMPTZ,
    last_finished_at TIMESTAMPTZ,
    last_status      TEXT
);
CREATE INDEX chain_state_due_idx ON timetable.chain_state (client_name, next_due_at) WHERE next_due_at IS NOT NULL;
CREATE INDEX chain_state_dirty_idx ON timetable.chain_state (chain_id) WHERE dirty;
COMMENT ON TABLE timetable.chain_state IS
    'pgtt-tui: next due time per chain (indexed, so finding due chains costs O(due)), last run and result';

-- Runs and claims.  A scheduled firing (chain_id, due_at) is claimed at most once
-- (unique index); ad-hoc and @reboot runs have due_at NULL.
CREATE TABLE timetable.chain_run (
    run_id        BIGSERIAL PRIMARY KEY,
    chain_id      BIGINT NOT NULL,              -- no FK: history outlives self-destructing chains
    due_at        TIMESTAMPTZ,
    trigger       TEXT NOT NULL CHECK (trigger IN ('cron', 'every', 'after', 'reboot', 'manual', 'missed')),
    client_name   TEXT NOT NULL,                -- the engine that claimed it
    session_id    BIGINT NOT NULL,              -- active_session.client_pid of that engine
    backend_pid   INTEGER,                      -- backend owning the run (claim, then execution)
    backend_start TIMESTAMPTZ,
    claimed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    status        TEXT NOT NULL DEFAULT 'claimed'
                  CHECK (status IN ('claimed', 'running', 'succeeded', 'failed', 'skipped')),
    reason        TEXT,
    txid          BIGINT
);
CREATE UNIQUE INDEX chain_run_firing_key ON timetable.chain_run (chain_id, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX chain_run_open_idx ON timetable.chain_run (chain_id) WHERE status IN ('claimed', 'running');
CREATE INDEX chain_run_chain_idx ON timetable.chain_run (chain_id, run_id DESC);
COMMENT ON TABLE timetable.chain_run IS
    'pgtt-tui: one row per claimed firing or ad-hoc run (claimed -> running -> succeeded/failed/skipped)';

-- Triggers: any change that affects scheduling marks the chain dirty and wakes engines.
CREATE FUNCTION timetable._chain_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO timetable.chain_state (chain_id, client_name) VALUES (NEW.chain_id, NEW.client_name)
        ON CONFLICT (chain_id) DO UPDATE SET dirty = true, next_due_at = NULL, client_name = EXCLUDED.client_name,
                                             version = timetable.chain_state.version + 1;
    ELSE
        UPDATE timetable.chain_state
           SET dirty = true, next_due_at = NULL, client_name = NEW.client_name, version = version + 1
         WHERE chain_id = NEW.chain_id;
    END IF;
    PERFORM pg_notify('pgtt_timetable_changed', '');
    RETURN NULL;
END $$;

CREATE TRIGGER chain_changed AFTER INSERT ON timetable.chain
    FOR EACH ROW EXECUTE FUNCTION timetable._chain_changed();
CREATE TRIGGER chain_schedule_changed AFTER UPDATE ON timetable.chain
    FOR EACH ROW WHEN (OLD.run_at IS DISTINCT FROM NEW.run_at OR OLD.live IS DISTINCT FROM NEW.live
                       OR OLD.client_name IS DISTINCT FROM NEW.client_name)
    EXECUTE FUNCTION timetable._chain_changed();

CREATE FUNCTION timetable._chain_option_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    id bigint := CASE WHEN TG_OP = 'DELETE' THEN OLD.chain_id ELSE NEW.chain_id END;
BEGIN
    UPDATE timetable.chain_state SET dirty = true, next_due_at = NULL, version = version + 1 WHERE chain_id = id;
    PERFORM pg_notify('pgtt_timetable_changed', '');
    RETURN NULL;
END $$;

CREATE TRIGGER chain_option_changed AFTER INSERT OR UPDATE OR DELETE ON timetable.chain_option
    FOR EACH ROW EXECUTE FUNCTION timetable._chain_option_changed();

---------------------------------------------------------------------------------------------
-- Sessions
---------------------------------------------------------------------------------------------

-- Is the backend pid (started at backend_start, if known) still connected?
CREATE FUNCTION timetable._backend_alive(p_pid bigint, p_start timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                    WHERE a.pid = p_pid
                      AND (p_start IS NULL OR a.backend_start IS NULL OR a.backend_start = p_start))
$$;

-- pg_timetable: register this session under worker_name unless another live engine holds
-- the name.  Unlike pg_timetable, dead sessions are recognised by their backend being gone
-- (whatever the application_name), and their runs are marked failed.
CREATE FUNCTION timetable.try_lock_client_name(worker_pid BIGINT, worker_name TEXT)
RETURNS bool AS
$CODE$
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE NOTICE 'Cannot obtain lock on a replica. Please, use the primary node';
        RETURN FALSE;
    END IF;
    -- serialise registrations under the same name
    PERFORM pg_advisory_xact_lock(hashtext('pgtt_timetable_client'), hashtext(worker_name));
    PERFORM timetable.reap_dead_runs();
    PERFORM 1
        FROM timetable.active_session s
        WHERE s.client_pid <> worker_pid
          AND s.client_name = worker_name
        LIMIT 1;
    IF FOUND THEN
        RAISE NOTICE 'Another client is already connected to server with name: %', worker_name;
        RETURN FALSE;
    END IF;
    INSERT INTO timetable.active_session(client_pid, client_name, server_pid)
    SELECT worker_pid, worker_name, pg_backend_pid()
    WHERE NOT EXISTS (SELECT 1 FROM timetable.active_session
                       WHERE client_pid = worker_pid AND server_pid = pg_backend_pid());
    RETURN TRUE;
END;
$CODE$
STRICT
LANGUAGE plpgsql;

-- Mark runs whose owning backend is gone as failed (with the reason), free their
-- max_instances slots, drop dead sessions.  Any engine may call it; returns what it did.
CREATE FUNCTION timetable.reap_dead_runs()
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
        RETURNING r.run_id, r.chain_id, r.client_name, r.reason, r.status
    ), freed AS (
        DELETE FROM timetable.active_chain a
         WHERE a.ctid IN (SELECT min(a2.ctid) FROM timetable.active_chain a2
                            JOIN dead d ON d.chain_id = a2.chain_id AND d.client_name = a2.client_name
                           GROUP BY a2.chain_id, a2.client_name)
    ), st AS (
        UPDATE timetable.chain_state s
           SET last_status = 'failed', last_finished_at = now(),
               dirty = s.dirty OR s.next_due_at IS NULL, version = s.version + 1
          FROM dead d
         WHERE s.chain_id = d.chain_id
    )
    SELECT d.run_id, d.chain_id, d.reason FROM dead d;
    DELETE FROM timetable.active_chain a
     WHERE NOT EXISTS (SELECT 1 FROM timetable.active_session s WHERE s.client_name = a.client_name);
END $$;

---------------------------------------------------------------------------------------------
-- Engine entry points: claims, starts, finishes (the exactly-once protocol)
---------------------------------------------------------------------------------------------

-- Claim firings.  Per chain, a compare-and-set of chain_state.next_due_at from the value
-- the engine read (p_old) to the next one it computed (p_new) decides the ONE winner among
-- all engines; the winner's firings are inserted into chain_run, whose unique key
-- (chain_id, due_at) is the second line of defence.  Returns the claimed runs.
CREATE FUNCTION timetable.claim_firings(p_client text, p_session bigint,
                                        p_chain bigint[], p_due timestamptz[], p_trigger text[],
                                        p_old timestamptz[], p_new timestamptz[], p_version bigint[])
RETURNS TABLE (run_id bigint, chain_id bigint, due_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(p_chain, p_due, p_trigger, p_old, p_new, p_version)
               AS i(chain_id, due_at, trig, old_due, new_due, version)
    ), per_chain AS (
        SELECT DISTINCT ON (i.chain_id) i.chain_id, i.old_due, i.new_due, i.version,
               max(i.due_at) OVER (PARTITION BY i.chain_id) AS last_due
          FROM input i ORDER BY i.chain_id
    ), won AS (
        UPDATE timetable.chain_state s
           SET next_due_at = p.new_due, last_due_at = coalesce(p.last_due, s.last_due_at)
          FROM per_chain p
         WHERE s.chain_id = p.chain_id AND s.next_due_at = p.old_due AND s.version = p.version AND NOT s.dirty
        RETURNING s.chain_id
    )
    INSERT INTO timetable.chain_run AS r (chain_id, due_at, trigger, client_name, session_id, backend_pid, backend_start)
    SELECT i.chain_id, i.due_at, i.trig, p_client, p_session, pg_backend_pid(),
           (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_backend_pid())
      FROM input i JOIN won w ON w.chain_id = i.chain_id
     WHERE i.due_at IS NOT NULL
    ON CONFLICT (chain_id, due_at) WHERE due_at IS NOT NULL DO NOTHING
    RETURNING r.run_id, r.chain_id, r.due_at;
END $$;

-- An ad-hoc (or @reboot) run: no firing key.
CREATE FUNCTION timetable.claim_adhoc(p_chain bigint, p_trigger text, p_client text, p_session bigint)
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO timetable.chain_run (chain_id, due_at, trigger, client_name, session_id, backend_pid, backend_start)
    SELECT p_chain, NULL, p_trigger, p_client, p_session, pg_backend_pid(),
           (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_backend_pid())
    WHERE EXISTS (SELECT 1 FROM timetable.chain c WHERE c.chain_id = p_chain)
    RETURNING run_id
$$;

-- Start a claimed run on the calling (execution) connection, honouring max_instances
-- (NULL = p_default_max) cluster-wide: counting and inserting happen under a row lock on
-- the chain's state row.  Returns 'running', 'skipped' (slots full) or 'gone'.
CREATE FUNCTION timetable.start_run(p_run_id bigint, p_started timestamptz, p_default_max integer DEFAULT 16)
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
    INSERT INTO timetable.active_chain (chain_id, client_name, started_at) VALUES (r.chain_id, r.client_name, p_started);
    UPDATE timetable.chain_state SET last_run_id = p_run_id, last_started_at = p_started, last_status = 'running'
     WHERE chain_id = r.chain_id;
    RETURN 'running';
END $$;

-- Finish a run.  p_next_due: for @after chains, the next due time (finish + interval),
-- applied only if nothing changed the schedule meanwhile.
CREATE FUNCTION timetable.finish_run(p_run_id bigint, p_status text, p_reason text, p_finished timestamptz,
                                     p_txid bigint DEFAULT NULL, p_next_due timestamptz DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    r timetable.chain_run;
BEGIN
    UPDATE timetable.chain_run x
       SET status = p_status, reason = p_reason, finished_at = p_finished, txid = coalesce(p_txid, x.txid)
     WHERE x.run_id = p_run_id AND x.status IN ('running', 'claimed')
    RETURNING * INTO r;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM timetable.active_chain a
     WHERE a.ctid = (SELECT a2.ctid FROM timetable.active_chain a2
                      WHERE a2.chain_id = r.chain_id AND a2.client_name = r.client_name LIMIT 1);
    UPDATE timetable.chain_state s
       SET last_finished_at = p_finished, last_status = p_status,
           next_due_at = CASE WHEN p_next_due IS NOT NULL AND NOT s.dirty AND s.next_due_at IS NULL
                              THEN p_next_due ELSE s.next_due_at END
     WHERE s.chain_id = r.chain_id;
    IF p_next_due IS NOT NULL THEN
        PERFORM pg_notify('pgtt_timetable_changed', '');
    END IF;
    RETURN true;
END $$;

---------------------------------------------------------------------------------------------
-- pg_timetable job API
---------------------------------------------------------------------------------------------

CREATE FUNCTION timetable.add_job(
    job_name            TEXT,
    job_schedule        timetable.cron,
    job_command         TEXT,
    job_parameters      JSONB DEFAULT NULL,
    job_kind            timetable.command_kind DEFAULT 'SQL'::timetable.command_kind,
    job_client_name     TEXT DEFAULT NULL,
    job_max_instances   INTEGER DEFAULT NULL,
    job_live            BOOLEAN DEFAULT TRUE,
    job_self_destruct   BOOLEAN DEFAULT FALSE,
    job_ignore_errors   BOOLEAN DEFAULT TRUE,
    job_exclusive       BOOLEAN DEFAULT FALSE,
    job_on_error        TEXT DEFAULT NULL
) RETURNS BIGINT AS $$
    WITH
        cte_chain (v_chain_id) AS (
            INSERT INTO timetable.chain (chain_name, run_at, max_instances, live, self_destruct, client_name,
                                         exclusive_execution, on_error)
            VALUES (job_name, job_schedule, job_max_instances, job_live, job_self_destruct, job_client_name,
                    job_exclusive, job_on_error)
            RETURNING chain_id
        ),
        cte_task (v_task_id) AS (
            INSERT INTO timetable.task (chain_id, task_order, kind, command, ignore_error, autonomous)
            SELECT v_chain_id, 10, job_kind, job_command, job_ignore_errors, TRUE
            FROM cte_chain
            RETURNING task_id
        ),
        cte_param AS (
            INSERT INTO timetable.parameter (task_id, order_id, value)
            SELECT v_task_id, 1, job_parameters FROM cte_task
        )
    SELECT v_chain_id FROM cte_chain
$$ LANGUAGE SQL;
COMMENT ON FUNCTION timetable.add_job IS 'Add one-task chain (job) with parameters; returns the chain_id';

CREATE FUNCTION timetable.add_task(
    kind timetable.command_kind,
    command TEXT,
    parent_id BIGINT,
    order_delta DOUBLE PRECISION DEFAULT 10
) RETURNS BIGINT AS $$
    INSERT INTO timetable.task (chain_id, task_order, kind, command)
    SELECT chain_id, task_order + $4, $1, $2 FROM timetable.task WHERE task_id = $3
    RETURNING task_id
$$ LANGUAGE SQL;
COMMENT ON FUNCTION timetable.add_task IS 'Add a task to the same chain as the task with parent_id';

CREATE FUNCTION timetable.delete_job(IN job_name TEXT) RETURNS boolean AS $$
    WITH del_chain AS (DELETE FROM timetable.chain WHERE chain.chain_name = $1 RETURNING chain_id)
    SELECT EXISTS (SELECT 1 FROM del_chain)
$$ LANGUAGE SQL;

CREATE FUNCTION timetable.delete_task(IN task_id BIGINT) RETURNS boolean AS $$
    WITH del_task AS (DELETE FROM timetable.task WHERE task_id = $1 RETURNING task_id)
    SELECT EXISTS (SELECT 1 FROM del_task)
$$ LANGUAGE SQL;

CREATE FUNCTION timetable.pause_job(IN job_name TEXT) RETURNS boolean AS $$
    WITH upd_chain AS (UPDATE timetable.chain SET live = FALSE WHERE chain.chain_name = $1 RETURNING chain_id)
    SELECT EXISTS (SELECT 1 FROM upd_chain)
$$ LANGUAGE SQL;

CREATE FUNCTION timetable.resume_job(IN job_name TEXT) RETURNS boolean AS $$
    WITH upd_chain AS (UPDATE timetable.chain SET live = TRUE WHERE chain.chain_name = $1 RETURNING chain_id)
    SELECT EXISTS (SELECT 1 FROM upd_chain)
$$ LANGUAGE SQL;

CREATE FUNCTION timetable.move_task_up(IN task_id BIGINT) RETURNS boolean AS $$
    WITH current_task (ct_chain_id, ct_id, ct_order) AS (
        SELECT chain_id, task_id, task_order FROM timetable.task WHERE task_id = $1
    ),
    tasks(t_id, t_new_order) AS (
        SELECT task_id, COALESCE(LAG(task_order) OVER w, LEAD(task_order) OVER w)
        FROM timetable.task t, current_task ct
        WHERE chain_id = ct_chain_id AND (task_order < ct_order OR task_id = ct_id)
        WINDOW w AS (PARTITION BY chain_id ORDER BY ABS(task_order - ct_order))
        LIMIT 2
    ),
    upd AS (
        UPDATE timetable.task t SET task_order = t_new_order
        FROM tasks WHERE tasks.t_id = t.task_id AND tasks.t_new_order IS NOT NULL
        RETURNING true
    )
    SELECT COUNT(*) > 0 FROM upd
$$ LANGUAGE SQL;

CREATE FUNCTION timetable.move_task_down(IN task_id BIGINT) RETURNS boolean AS $$
    WITH current_task (ct_chain_id, ct_id, ct_order) AS (
        SELECT chain_id, task_id, task_order FROM timetable.task WHERE task_id = $1
    ),
    tasks(t_id, t_new_order) AS (
        SELECT task_id, COALESCE(LAG(task_order) OVER w, LEAD(task_order) OVER w)
        FROM timetable.task t, current_task ct
        WHERE chain_id = ct_chain_id AND (task_order > ct_order OR task_id = ct_id)
        WINDOW w AS (PARTITION BY chain_id ORDER BY ABS(task_order - ct_order))
        LIMIT 2
    ),
    upd AS (
        UPDATE timetable.task t SET task_order = t_new_order
        FROM tasks WHERE tasks.t_id = t.task_id AND tasks.t_new_order IS NOT NULL
        RETURNING true
    )
    SELECT COUNT(*) > 0 FROM upd
$$ LANGUAGE SQL;

-- Ad-hoc control: pg_timetable's payloads on the channel named after the worker.
CREATE FUNCTION timetable.notify_chain_start(chain_id BIGINT, worker_name TEXT, start_delay INTERVAL DEFAULT NULL)
RETURNS void AS $$
    SELECT pg_notify(
        worker_name,
        format('{"ConfigID": %s, "Command": "START", "Ts": %s, "Delay": %s}',
               chain_id,
               EXTRACT(epoch FROM clock_timestamp())::bigint,
               COALESCE(EXTRACT(epoch FROM start_delay)::bigint, 0))
    )
$$ LANGUAGE SQL;

CREATE FUNCTION timetable.notify_chain_stop(chain_id BIGINT, worker_name TEXT)
RETURNS void AS $$
    SELECT pg_notify(
        worker_name,
        format('{"ConfigID": %s, "Command": "STOP", "Ts": %s}',
               chain_id,
               EXTRACT(epoch FROM clock_timestamp())::bigint)
    )
$$ LANGUAGE SQL;
