-- pgq: closer to PgQ 3.5's C extension, statement by statement (issue 16; found and kept so by
-- tests/test_pgq_differential.py, which runs the same operations against CREATE EXTENSION pgq).
--
-- 1. The insert path. PgQ's C insert_event_raw takes the event id from the queue's sequence
--    before it refuses an insert (disabled queue, per-transaction limit), so a refused insert
--    uses up an id; its errors are internal errors (SQLSTATE XX000); a NULL queue name is
--    'Queue name must not be NULL'; a NULL ev_time is the current time.
--    Speed: insert_event(7) now does the work itself (one PL/pgSQL frame instead of two),
--    insert_event(3) is PL/pgSQL (as in PgQ) instead of an SQL function, whose body was parsed
--    again for every statement that was not prepared; each known queue's sequence is a
--    constant, so nextval() does no name lookup.
-- 2. find_tick_helper: PgQ takes the newest tick when it is within twice the minimum count /
--    interval, and only otherwise the first tick that reaches the minimum.
-- 3. next_batch_custom: the corruption message names the missing tick as PgQ does (<NULL>);
--    an open batch whose end tick is gone reports NULL tick columns.
-- 4. jsontriga: a NULL numeric / float4 / float8 column is JSON null, not the string "null".

-- ---------------------------------------------------------------------------------------
-- 1. insert path
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgq._refresh_insert_path() RETURNS void
LANGUAGE plpgsql AS $gen$
DECLARE
    seqs text := '';
    dispatch text := '';
    q record;
    i integer;
    first_q boolean := true;
    cols constant text := '(ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)';
    vals constant text := 'values (v_id, v_time, v_owner, v_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)';
    prologue text;
    epilogue text;
BEGIN
    FOR q IN
        SELECT queue_id, queue_data_pfx, queue_ntables, queue_event_seq FROM pgq.queue
         WHERE queue_data_pfx ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'
           AND queue_event_seq ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'
         ORDER BY queue_id DESC LIMIT 100
    LOOP
        seqs := seqs || CASE WHEN first_q THEN '    IF' ELSE '    ELSIF' END
             || ' q.queue_id = ' || q.queue_id || ' THEN' || E'\n'
             || '        v_id := nextval(' || quote_literal(q.queue_event_seq) || '::regclass);' || E'\n';
        dispatch := dispatch || CASE WHEN first_q THEN '    IF' ELSE '    ELSIF' END
                 || ' q.queue_id = ' || q.queue_id || ' THEN' || E'\n';
        first_q := false;
        FOR i IN 0 .. q.queue_ntables - 1 LOOP
            dispatch := dispatch || CASE WHEN i = 0 THEN '        IF' ELSE '        ELSIF' END
                     || ' q.queue_cur_table = ' || i || ' THEN' || E'\n'
                     || '            INSERT INTO ' || q.queue_data_pfx || '_' || i || ' ' || cols || E'\n'
                     || '            ' || vals || ';' || E'\n'
                     || '            RETURN v_id;' || E'\n';
        END LOOP;
        dispatch := dispatch || '        END IF;' || E'\n';
    END LOOP;
    IF first_q THEN
        seqs := '    v_id := nextval(q.queue_event_seq::regclass);' || E'\n';
    ELSE
        seqs := seqs || '    ELSE' || E'\n' || '        v_id := nextval(q.queue_event_seq::regclass);' || E'\n'
             || '    END IF;' || E'\n';
        dispatch := dispatch || '    END IF;' || E'\n';
    END IF;

    -- shared by insert_event_raw and insert_event(7); PgQ's order: queue, id, then the checks
    prologue := $p$
DECLARE
    q record;
    v_id bigint;
    n integer;
BEGIN
    IF queue_name IS NULL THEN
        RAISE EXCEPTION 'Queue name must not be NULL' USING ERRCODE = 'XX000';
    END IF;
    SELECT queue_id, queue_cur_table, queue_data_pfx, queue_event_seq, queue_disable_insert,
           queue_per_tx_limit
      INTO q
      FROM pgq.queue WHERE pgq.queue.queue_name = %FN%.queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such queue' USING ERRCODE = 'XX000';
    END IF;
    -- always advance the event sequence, also for an insert refused below: PgQ does
$p$ || seqs || $p$
    IF q.queue_disable_insert AND current_setting('session_replication_role') <> 'replica' THEN
        RAISE EXCEPTION 'Insert into queue disallowed' USING ERRCODE = 'XX000';
    END IF;
    IF q.queue_per_tx_limit IS NOT NULL THEN
        -- events of this queue in this transaction, kept in a transaction-local setting
        n := coalesce(nullif(current_setting('pgq.tx_events_' || q.queue_id, true), ''), '0')::integer + 1;
        IF n > q.queue_per_tx_limit THEN
            RAISE EXCEPTION 'Queue ''%'' allows max % events from one TX', queue_name, q.queue_per_tx_limit
                  USING ERRCODE = 'XX000';
        END IF;
        PERFORM set_config('pgq.tx_events_' || q.queue_id, n::text, true);
    END IF;
$p$;
    epilogue := dispatch || $p$
    EXECUTE 'insert into ' || q.queue_data_pfx || '_' || q.queue_cur_table
         || ' (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
         || ' values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)'
        USING v_id, v_time, v_owner, v_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4;
    RETURN v_id;
END
$p$;

    EXECUTE $def$
CREATE OR REPLACE FUNCTION pgq.insert_event_raw(
    queue_name text, ev_id bigint, ev_time timestamptz, ev_owner integer, ev_retry integer,
    ev_type text, ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
RETURNS bigint LANGUAGE plpgsql AS $body$
-- generated by pgq._refresh_insert_path(); do not edit
$def$ || replace(replace(prologue, '%FN%', 'insert_event_raw'), E'    v_id bigint;\n',
                 E'    v_id bigint;\n    v_time timestamptz := coalesce(ev_time, now());\n'
                 || E'    v_owner integer := ev_owner;\n    v_retry integer := ev_retry;\n') || $def$
    IF ev_id IS NOT NULL THEN
        v_id := ev_id;
    END IF;
$def$ || epilogue || $def$
$body$
$def$;

    EXECUTE $def$
CREATE OR REPLACE FUNCTION pgq.insert_event(queue_name text, ev_type text, ev_data text, ev_extra1 text,
                                            ev_extra2 text, ev_extra3 text, ev_extra4 text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER AS $body$
-- generated by pgq._refresh_insert_path(); do not edit
$def$ || replace(replace(prologue, '%FN%', 'insert_event'), E'    v_id bigint;\n',
                 E'    v_id bigint;\n    v_time timestamptz := now();\n'
                 || E'    v_owner integer;\n    v_retry integer;\n') || epilogue || $def$
$body$
$def$;
END
$gen$;

SELECT pgq._refresh_insert_path();

CREATE OR REPLACE FUNCTION pgq.insert_event(queue_name text, ev_type text, ev_data text)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    RETURN pgq.insert_event(queue_name, ev_type, ev_data, NULL, NULL, NULL, NULL);
END
$$;

-- ---------------------------------------------------------------------------------------
-- 2. find_tick_helper
-- ---------------------------------------------------------------------------------------

-- The newest tick after the previous one, if it reaches the minimum count or interval and
-- is not more than twice past it; else the first tick that reaches either minimum.
CREATE OR REPLACE FUNCTION pgq.find_tick_helper(i_queue_id integer, i_prev_tick_id bigint,
                                                i_prev_tick_time timestamptz, i_prev_tick_seq bigint,
                                                i_min_count bigint, i_min_interval interval,
                                                OUT next_tick_id bigint, OUT next_tick_time timestamptz,
                                                OUT next_tick_seq bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    newest record;
    reached boolean := false;
    too_far boolean := false;
BEGIN
    SELECT t.tick_id, t.tick_time, t.tick_event_seq INTO newest
      FROM pgq.tick t
     WHERE t.tick_queue = i_queue_id AND t.tick_id > i_prev_tick_id
     ORDER BY t.tick_queue DESC, t.tick_id DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF i_min_count IS NOT NULL THEN
        reached := newest.tick_event_seq - i_prev_tick_seq >= i_min_count;
        too_far := newest.tick_event_seq - i_prev_tick_seq > i_min_count * 2;
    END IF;
    IF i_min_interval IS NOT NULL THEN
        reached := reached OR newest.tick_time - i_prev_tick_time >= i_min_interval;
        too_far := too_far OR newest.tick_time - i_prev_tick_time > i_min_interval * 2;
    END IF;
    IF too_far THEN
        SELECT t.tick_id, t.tick_time, t.tick_event_seq INTO next_tick_id, next_tick_time, next_tick_seq
          FROM pgq.tick t
         WHERE t.tick_queue = i_queue_id AND t.tick_id > i_prev_tick_id
           AND ((i_min_count IS NOT NULL AND t.tick_event_seq - i_prev_tick_seq >= i_min_count)
                OR (i_min_interval IS NOT NULL AND t.tick_time - i_prev_tick_time >= i_min_interval))
         ORDER BY t.tick_queue, t.tick_id
         LIMIT 1;
    ELSIF reached THEN
        next_tick_id := newest.tick_id;
        next_tick_time := newest.tick_time;
        next_tick_seq := newest.tick_event_seq;
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------
-- 3. next_batch_custom
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgq.next_batch_custom(i_queue_name text, i_consumer_name text, i_min_lag interval,
                                                 i_min_count integer, i_min_interval interval,
                                                 OUT batch_id bigint, OUT cur_tick_id bigint, OUT prev_tick_id bigint,
                                                 OUT cur_tick_time timestamptz, OUT prev_tick_time timestamptz,
                                                 OUT cur_tick_event_seq bigint, OUT prev_tick_event_seq bigint)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    s record;
    nxt record;
BEGIN
    -- the row lock makes two sessions of one consumer agree on one batch
    SELECT sub.sub_queue, sub.sub_consumer, sub.sub_last_tick, sub.sub_batch, sub.sub_next_tick,
           t1.tick_id AS prev_id, t1.tick_time AS prev_time, t1.tick_event_seq AS prev_seq,
           t2.tick_id AS next_id, t2.tick_time AS next_time, t2.tick_event_seq AS next_seq
      INTO s
      FROM pgq.queue q
      JOIN pgq.subscription sub ON sub.sub_queue = q.queue_id
      JOIN pgq.consumer c ON c.co_id = sub.sub_consumer
      LEFT JOIN pgq.tick t1 ON t1.tick_queue = sub.sub_queue AND t1.tick_id = sub.sub_last_tick
      LEFT JOIN pgq.tick t2 ON t2.tick_queue = sub.sub_queue AND t2.tick_id = sub.sub_next_tick
     WHERE q.queue_name = i_queue_name AND c.co_name = i_consumer_name
       FOR UPDATE OF sub;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%', 'Not subscriber to queue: ' || coalesce(i_queue_name, 'NULL') || '/'
                             || coalesce(i_consumer_name, 'NULL');
    END IF;
    IF s.prev_id IS NULL THEN
        -- PgQ names the tick it did not find, which is NULL here
        RAISE EXCEPTION 'PgQ corruption: Consumer % on queue % does not see tick %',
                        i_consumer_name, i_queue_name, s.prev_id;
    END IF;

    IF s.sub_batch IS NOT NULL THEN
        -- a batch is open (the consumer may have crashed): hand out the same one again
        batch_id := s.sub_batch;
        cur_tick_id := s.next_id;
        prev_tick_id := s.prev_id;
        cur_tick_time := s.next_time;
        prev_tick_time := s.prev_time;
        cur_tick_event_seq := s.next_seq;
        prev_tick_event_seq := s.prev_seq;
        RETURN;
    END IF;

    IF i_min_count IS NULL AND i_min_interval IS NULL THEN
        SELECT t.tick_id, t.tick_time, t.tick_event_seq INTO nxt
          FROM pgq.tick t
         WHERE t.tick_queue = s.sub_queue AND t.tick_id > s.sub_last_tick
         ORDER BY t.tick_queue, t.tick_id LIMIT 1;
    ELSE
        SELECT h.next_tick_id AS tick_id, h.next_tick_time AS tick_time, h.next_tick_seq AS tick_event_seq
          INTO nxt
          FROM pgq.find_tick_helper(s.sub_queue, s.sub_last_tick, s.prev_time, s.prev_seq,
                                    i_min_count, i_min_interval) h;
    END IF;
    IF nxt.tick_id IS NULL THEN
        RETURN;  -- nothing new: all columns NULL
    END IF;
    IF i_min_lag IS NOT NULL AND now() - nxt.tick_time < i_min_lag THEN
        RETURN;
    END IF;

    batch_id := nextval('pgq.batch_id_seq');
    UPDATE pgq.subscription
       SET sub_batch = batch_id, sub_next_tick = nxt.tick_id, sub_active = now()
     WHERE sub_queue = s.sub_queue AND sub_consumer = s.sub_consumer;
    cur_tick_id := nxt.tick_id;
    prev_tick_id := s.sub_last_tick;
    cur_tick_time := nxt.tick_time;
    prev_tick_time := s.prev_time;
    cur_tick_event_seq := nxt.tick_event_seq;
    prev_tick_event_seq := s.prev_seq;
END
$$;

-- ---------------------------------------------------------------------------------------
-- 4. jsontriga and NULL numbers
-- ---------------------------------------------------------------------------------------

-- The jsontriga fast path renders rows with row_to_json() and then quotes the values of
-- numeric / float4 / float8 columns with the regexp in field 11 of the cache entry that
-- pgq._trg_build() returns (PgQ writes these numbers as JSON strings). Its value part,
-- ([^",}]+), also matched a NULL's literal null. No such value starts with n (NaN is already
-- a JSON string), so the value part now excludes that first letter. The builder of 0004 is
-- kept under another name and its answer is corrected here.
ALTER FUNCTION pgq._trg_build(text, oid, text[]) RENAME TO _trg_build_0004;

CREATE FUNCTION pgq._trg_build(kind text, relid oid, args text[]) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    s text := pgq._trg_build_0004(kind, relid, args);
    part1 text[] := string_to_array(split_part(s, chr(29), 1), chr(30));
BEGIN
    IF part1[11] <> '' THEN
        part1[11] := replace(part1[11], '):)([^",}]+)', '):)([^",}n][^",}]*)');
    END IF;
    RETURN array_to_string(part1, chr(30)) || chr(29) || split_part(s, chr(29), 2);
END
$$;

-- ---------------------------------------------------------------------------------------
-- 5. ticker(): counts the queues that got a tick (PgQ), not the queues it looked at
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgq.ticker() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    qname text;
    n bigint := 0;
BEGIN
    FOR qname IN
        SELECT queue_name FROM pgq.queue
         WHERE NOT queue_external_ticker AND NOT queue_ticker_paused
         ORDER BY queue_name
    LOOP
        IF pgq.ticker(qname) > 0 THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

-- ---------------------------------------------------------------------------------------
-- 6. trigger errors are internal errors (SQLSTATE XX000), as PgQ's C triggers raise them
-- ---------------------------------------------------------------------------------------

-- Every RAISE EXCEPTION of the trigger functions and their helpers (sql/pgq/0004_triggers.sql)
-- gains USING ERRCODE = 'XX000'; the functions are otherwise unchanged (their messages hold
-- no semicolon, which the rewrite relies on).
DO $errcodes$
DECLARE
    f regprocedure;
    def text;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'pgq'::regnamespace
           AND p.proname IN ('logutriga', 'sqltriga', 'jsontriga', '_trg_build_0004', '_trg_rewrite')
    LOOP
        def := pg_catalog.pg_get_functiondef(f);
        def := regexp_replace(def, '(RAISE EXCEPTION [^;]*);', '\1 USING ERRCODE = ''XX000'';', 'g');
        EXECUTE def;
    END LOOP;
END
$errcodes$;

-- ---------------------------------------------------------------------------------------
-- 7. force_tick: leaves queues with an external ticker and paused queues alone (PgQ)
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgq.force_tick(i_queue_name text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    q record;
    last_tick bigint;
BEGIN
    SELECT queue_id, queue_event_seq, queue_ticker_max_count INTO q
      FROM pgq.queue
     WHERE queue_name = i_queue_name AND NOT queue_external_ticker AND NOT queue_ticker_paused;
    IF FOUND THEN
        PERFORM setval(q.queue_event_seq::regclass,
                       nextval(q.queue_event_seq::regclass) + q.queue_ticker_max_count * 2 + 1000);
    END IF;
    -- the newest tick, also of a queue it did not touch
    SELECT t.tick_id INTO last_tick FROM pgq.tick t JOIN pgq.queue qq ON qq.queue_id = t.tick_queue
     WHERE qq.queue_name = i_queue_name
     ORDER BY t.tick_queue DESC, t.tick_id DESC LIMIT 1;
    RETURN last_tick;
END
$$;
