-- pgtt: the search half of the one SQL cron evaluator (engine.schedules._next_instant),
-- moved here from timetable (sql/timetable/0001_timetable.sql) so that schedule, which
-- needs only pgtt, evaluates with it too.  timetable.cron_next is now a thin wrapper over
-- pgtt.cron_next (sql/timetable/0013_shared_search.sql); the private helpers moved as
-- they were, with one addition: p_both, the day rule of pgpro_scheduler's rule objects
-- (days AND wdays), where cron combines a restricted day-of-month and day-of-week with OR.
--
-- pgtt.cron_firings lists every firing in an interval: the search finds the next day that
-- fires, every time of that day is a firing (the time fields are the same each day), and
-- each wall time maps to its instant as _wall_to_utc does (overlap: first occurrence; gap:
-- the transition, several gap times collapsing into one firing).  Cost grows with the days
-- that fire, not with the firings: a yearly job costs one step per year.
--
-- Pure functions, granted to PUBLIC like the parser (sql/pgtt/0002_cron.sql).

CREATE FUNCTION pgtt._cron_next_in(p_vals int[], p_v int) RETURNS int
LANGUAGE sql IMMUTABLE AS $$ SELECT min(x) FROM unnest(p_vals) x WHERE x >= p_v $$;

-- First day >= p_day of the month allowed by the day fields, or NULL.  p_both: a day must
-- match day-of-month (or L) AND day-of-week (pgpro rule objects).
CREATE FUNCTION pgtt._cron_next_day(f pgtt.cron_fields, y int, mo int, p_day int, p_both boolean DEFAULT false)
RETURNS int LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    last int := extract(day FROM (make_date(y, mo, 1) + interval '1 month - 1 day'))::int;
    wd int;
    d int;
    dom_ok boolean;
    dow_ok boolean;
BEGIN
    IF p_day > last THEN RETURN NULL; END IF;
    IF f.dom_any AND f.dow_any AND NOT p_both THEN RETURN p_day; END IF;
    wd := extract(dow FROM make_date(y, mo, p_day))::int;
    FOR d IN p_day..last LOOP
        dom_ok := d = ANY(f.days) OR (f.last_day AND d = last);
        dow_ok := wd = ANY(f.weekdays);
        IF (p_both AND dom_ok AND dow_ok)
           OR (NOT p_both AND ((f.dom_any AND dow_ok) OR (f.dow_any AND dom_ok)
                               OR (NOT f.dom_any AND NOT f.dow_any AND (dom_ok OR dow_ok)))) THEN
            RETURN d;
        END IF;
        wd := (wd + 1) % 7;
    END LOOP;
    RETURN NULL;
END $$;

-- Earliest matching wall time >= p_start (whole seconds), or NULL past the year 9999.
CREATE FUNCTION pgtt._cron_first_at_or_after(f pgtt.cron_fields, p_start timestamp, p_both boolean DEFAULT false)
RETURNS timestamp LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
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
        v := pgtt._cron_next_in(f.months, mo);
        IF v IS NULL THEN
            y := y + 1; mo := 1; d := 1; h := 0; mi := 0; s := 0;
            CONTINUE;
        END IF;
        IF v <> mo THEN mo := v; d := 1; h := 0; mi := 0; s := 0; END IF;
        v := pgtt._cron_next_day(f, y, mo, d, p_both);
        IF v IS NULL THEN
            mo := mo + 1; d := 1; h := 0; mi := 0; s := 0;
            CONTINUE;
        END IF;
        IF v <> d THEN d := v; h := 0; mi := 0; s := 0; END IF;
        v := pgtt._cron_next_in(f.hours, h);
        IF v IS NULL THEN
            d := d + 1; h := 0; mi := 0; s := 0;
            CONTINUE;
        END IF;
        IF v <> h THEN h := v; mi := 0; s := 0; END IF;
        v := pgtt._cron_next_in(f.minutes, mi);
        IF v IS NULL THEN
            h := h + 1; mi := 0; s := 0;
            CONTINUE;
        END IF;
        IF v <> mi THEN mi := v; s := 0; END IF;
        v := pgtt._cron_next_in(f.seconds, s);
        IF v IS NULL THEN
            mi := mi + 1; s := 0;
            CONTINUE;
        END IF;
        RETURN make_timestamp(y, mo, d, h, mi, v);
    END LOOP;
END $$;

CREATE FUNCTION pgtt._cron_utc_offset(t timestamptz, tz text) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$ SELECT (t AT TIME ZONE tz) - (t AT TIME ZONE 'UTC') $$;

-- First instant (whole seconds) in (lo, hi] whose UTC offset is the one at hi.
CREATE FUNCTION pgtt._cron_transition(tz text, lo timestamptz, hi timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    target interval := pgtt._cron_utc_offset(hi, tz);
    lo_s bigint := floor(extract(epoch FROM lo));
    hi_s bigint := ceil(extract(epoch FROM hi));
    mid bigint;
BEGIN
    WHILE hi_s - lo_s > 1 LOOP
        mid := (lo_s + hi_s) / 2;
        IF pgtt._cron_utc_offset(to_timestamp(mid), tz) = target THEN
            hi_s := mid;
        ELSE
            lo_s := mid;
        END IF;
    END LOOP;
    RETURN to_timestamp(hi_s);
END $$;

-- A wall time in zone tz as Python's fold=0 reads it (first occurrence in an overlap,
-- the offset before the transition in a gap).  Returns (instant, exists, fold1 instant).
CREATE FUNCTION pgtt._cron_wall_fold0(p_wall timestamp, tz text, OUT first timestamptz, OUT valid boolean,
                                      OUT second timestamptz)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    u timestamptz := p_wall AT TIME ZONE 'UTC';
    o_prev interval := pgtt._cron_utc_offset(u - interval '36 hours', tz);
    o_next interval := pgtt._cron_utc_offset(u + interval '36 hours', tz);
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
CREATE FUNCTION pgtt._cron_wall_to_utc(p_wall timestamp, tz text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    r record;
BEGIN
    r := pgtt._cron_wall_fold0(p_wall, tz);
    IF r.valid THEN
        RETURN r.first;
    END IF;
    RETURN pgtt._cron_transition(tz, r.second, r.first);
END $$;

CREATE FUNCTION pgtt._cron_is_utc(tz text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$ SELECT tz IS NULL OR upper(btrim(tz)) IN ('UTC', 'Z', 'GMT') $$;

-- First firing strictly after p_after of parsed cron fields, in zone p_tz (NULL = UTC).
-- The zone is not checked here (an unknown name fails with PostgreSQL's own error).
CREATE FUNCTION pgtt._cron_next(f pgtt.cron_fields, p_after timestamptz, p_tz text, p_both boolean DEFAULT false)
RETURNS timestamptz LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
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
    IF pgtt._cron_is_utc(tz) THEN
        w := pgtt._cron_first_at_or_after(f, date_trunc('second', t AT TIME ZONE 'UTC') + interval '1 second', p_both);
        RETURN w AT TIME ZONE 'UTC';
    END IF;
    loc := t AT TIME ZONE tz;
    r := pgtt._cron_wall_fold0(loc, tz);
    IF r.first <> t THEN
        -- second pass through a repeated stretch: those wall times fired already
        st := (pgtt._cron_transition(tz, r.first, t) AT TIME ZONE 'UTC') + pgtt._cron_utc_offset(r.first, tz);
    ELSE
        st := date_trunc('second', loc) + interval '1 second';
    END IF;
    FOR i IN 1..100000 LOOP
        w := pgtt._cron_first_at_or_after(f, st, p_both);
        IF w IS NULL THEN RETURN NULL; END IF;
        inst := pgtt._cron_wall_to_utc(w, tz);
        IF inst > t THEN RETURN inst; END IF;
        st := w + interval '1 second';
    END LOOP;
    RAISE EXCEPTION 'schedule search did not converge';
END $$;

-- First firing strictly after p_after of a cron expression, evaluated in zone p_tz
-- (NULL = UTC).  No search horizon: NULL only past the year 9999.  p_also_known: as for
-- pgtt.cron_parse (named in the unknown-keyword message).
CREATE FUNCTION pgtt.cron_next(p_cron text, p_after timestamptz, p_tz text DEFAULT NULL,
                               p_also_known text[] DEFAULT '{}')
RETURNS timestamptz LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    f pgtt.cron_fields := pgtt.cron_parse(coalesce(p_cron, '* * * * *'), p_also_known);
BEGIN
    IF p_after IS NULL THEN RETURN NULL; END IF;
    IF NOT pgtt._cron_is_utc(p_tz)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = btrim(p_tz)) THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('timezone: unknown time zone ''%s'' (use an IANA name such as Europe/Berlin)', p_tz);
    END IF;
    RETURN pgtt._cron_next(f, p_after, p_tz);
END $$;

-- Every firing f of parsed cron fields with p_from <= f <= p_to, ascending, each once, in
-- zone p_tz (NULL = UTC; a zone name PostgreSQL knows).  At most p_limit (NULL: all).
-- Set-returning day by day: the rows of one day are in memory at a time (at most 86,400).
CREATE FUNCTION pgtt.cron_firings(f pgtt.cron_fields, p_from timestamptz, p_to timestamptz, p_tz text DEFAULT NULL,
                                  p_both boolean DEFAULT false, p_limit bigint DEFAULT NULL)
RETURNS SETOF timestamptz LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
    tz text := CASE WHEN pgtt._cron_is_utc(p_tz) THEN 'UTC' ELSE btrim(p_tz) END;
    times interval[];   -- the times of day that fire, ascending
    st timestamp;       -- where the search for the next day that fires resumes (wall time)
    last_day date;      -- no day after it can fire in the interval (offsets are < 1 day)
    w timestamp;
    d timestamp;        -- a day that fires (wall time, midnight)
    lo timestamptz;
    hi timestamptz;
    o_prev interval;
    o_next interval;
    gap_end timestamptz;
    xs timestamptz[];
    after timestamptz := p_from - interval '1 microsecond';  -- firings so far are <= this
    n bigint := 0;
BEGIN
    IF f IS NULL OR p_from IS NULL OR p_to IS NULL OR p_to < p_from OR p_limit <= 0 THEN
        RETURN;
    END IF;
    times := ARRAY(SELECT DISTINCT make_interval(hours => h, mins => m, secs => s)
                     FROM unnest(f.hours) h, unnest(f.minutes) m, unnest(f.seconds) s ORDER BY 1);
    st := date_trunc('day', p_from AT TIME ZONE tz) - interval '1 day';
    last_day := (p_to AT TIME ZONE tz)::date + 1;
    LOOP
        w := pgtt._cron_first_at_or_after(f, st, p_both);
        EXIT WHEN w IS NULL;
        d := date_trunc('day', w);
        EXIT WHEN d::date > last_day;
        -- the offsets around this day: equal means no transition near it, and every wall
        -- time of the day exists once
        lo := (d - interval '36 hours') AT TIME ZONE 'UTC';
        hi := (d + interval '60 hours') AT TIME ZONE 'UTC';
        o_prev := pgtt._cron_utc_offset(lo, tz);
        o_next := pgtt._cron_utc_offset(hi, tz);
        IF o_prev = o_next THEN
            xs := ARRAY(SELECT x FROM (SELECT (d + t - o_prev) AT TIME ZONE 'UTC' AS x FROM unnest(times) t) q
                         WHERE x > after AND x <= p_to ORDER BY x LIMIT p_limit - n);
        ELSE
            -- as _cron_wall_fold0 / _cron_wall_to_utc, for every time of the day at once
            gap_end := pgtt._cron_transition(tz, lo, hi);
            xs := ARRAY(SELECT DISTINCT x FROM (
                        SELECT CASE WHEN ok1 AND ok2 THEN least(c1, c2) WHEN ok1 THEN c1 WHEN ok2 THEN c2
                                    ELSE gap_end END AS x
                          FROM (SELECT c1, c2, (c1 AT TIME ZONE tz) = wall AS ok1, (c2 AT TIME ZONE tz) = wall AS ok2
                                  FROM (SELECT d + t AS wall, (d + t - o_prev) AT TIME ZONE 'UTC' AS c1,
                                               (d + t - o_next) AT TIME ZONE 'UTC' AS c2
                                          FROM unnest(times) t) a) b) q
                         WHERE x > after AND x <= p_to ORDER BY x LIMIT p_limit - n);
        END IF;
        IF cardinality(xs) > 0 THEN
            RETURN QUERY SELECT unnest(xs);
            n := n + cardinality(xs);
            after := xs[cardinality(xs)];
            EXIT WHEN n >= p_limit;
        END IF;
        st := d + interval '1 day';
    END LOOP;
END $$;

GRANT EXECUTE ON FUNCTION pgtt._cron_next_in(int[], int), pgtt._cron_next_day(pgtt.cron_fields, int, int, int, boolean),
    pgtt._cron_first_at_or_after(pgtt.cron_fields, timestamp, boolean), pgtt._cron_utc_offset(timestamptz, text),
    pgtt._cron_transition(text, timestamptz, timestamptz), pgtt._cron_wall_fold0(timestamp, text),
    pgtt._cron_wall_to_utc(timestamp, text), pgtt._cron_is_utc(text),
    pgtt._cron_next(pgtt.cron_fields, timestamptz, text, boolean), pgtt.cron_next(text, timestamptz, text, text[]),
    pgtt.cron_firings(pgtt.cron_fields, timestamptz, timestamptz, text, boolean, bigint)
TO PUBLIC;
