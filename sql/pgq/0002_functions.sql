-- pgq: PgQ 3.5-compatible transactional queues.
-- Part 2: the functions. Names, argument names, result columns, strictness, security
-- definer flags and error texts follow PgQ 3.5 (reference/pgq.md section a.3-a.7).
--
-- How a batch is cut: a batch is the pair (previous tick, current tick) of one consumer.
-- Each tick stores the snapshot of the transaction that made it. An event belongs to the
-- batch iff its inserting transaction is visible (committed) in the current tick's
-- snapshot and not visible in the previous tick's one. A long transaction therefore lands
-- in the first batch whose end snapshot sees it committed: never lost, never twice.

-- ---------------------------------------------------------------------------------------
-- Small helpers
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq.version() RETURNS text LANGUAGE sql STABLE AS $$
    -- the PgQ API level implemented here (tools such as pgqd check that it starts with 3)
    SELECT '3.5'::text
$$;

CREATE FUNCTION pgq.quote_fqname(i_name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    dot integer := position('.' in i_name);
BEGIN
    IF dot = 0 THEN
        RETURN 'public.' || quote_ident(i_name);
    END IF;
    RETURN quote_ident(left(i_name, dot - 1)) || '.' || quote_ident(substr(i_name, dot + 1));
END
$$;

CREATE FUNCTION pgq.seq_getval(i_seq_name text) RETURNS bigint
LANGUAGE plpgsql STRICT AS $$
DECLARE
    res bigint;
BEGIN
    EXECUTE 'select last_value from ' || pgq.quote_fqname(i_seq_name) INTO res;
    RETURN res;
END
$$;

CREATE FUNCTION pgq.seq_setval(i_seq_name text, i_new_value bigint) RETURNS bigint
LANGUAGE plpgsql STRICT AS $$
DECLARE
    cur bigint := pgq.seq_getval(i_seq_name);
BEGIN
    -- never moves a sequence backwards
    IF cur < i_new_value THEN
        PERFORM setval(pgq.quote_fqname(i_seq_name), i_new_value);
        RETURN i_new_value;
    END IF;
    RETURN cur;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Permissions and storage of per-queue objects
-- ---------------------------------------------------------------------------------------

-- Copy the table privileges of src to dst (used to give event tables the grants of
-- pgq.event_template).
CREATE FUNCTION pgq._grant_perms_from(src_schema text, src_table text, dst_schema text, dst_table text)
RETURNS integer LANGUAGE plpgsql STRICT AS $$
DECLARE
    g record;
    dst text := quote_ident(dst_schema) || '.' || quote_ident(dst_table);
BEGIN
    FOR g IN
        SELECT a.privilege_type AS priv,
               CASE WHEN a.grantee = 0 THEN 'public' ELSE quote_ident(r.rolname) END AS who
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL aclexplode(c.relacl) a
          LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
         WHERE n.nspname = src_schema AND c.relname = src_table
           AND a.grantee <> c.relowner
    LOOP
        EXECUTE 'grant ' || g.priv || ' on ' || dst || ' to ' || g.who;
    END LOOP;
    RETURN 1;
END
$$;

CREATE FUNCTION pgq.grant_perms(x_queue_name text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    q record;
    i integer;
    dot integer;
    dst_schema text;
    dst_table text;
BEGIN
    SELECT * INTO q FROM pgq.queue WHERE queue_name = x_queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Queue not found';
    END IF;
    dot := position('.' in q.queue_data_pfx);
    dst_schema := CASE WHEN dot > 0 THEN left(q.queue_data_pfx, dot - 1) ELSE 'public' END;
    dst_table := substr(q.queue_data_pfx, dot + 1);
    PERFORM pgq._grant_perms_from('pgq', 'event_template', dst_schema, dst_table);
    FOR i IN 0 .. q.queue_ntables - 1 LOOP
        PERFORM pgq._grant_perms_from('pgq', 'event_template', dst_schema, dst_table || '_' || i);
    END LOOP;
    EXECUTE 'grant select on ' || pgq.quote_fqname(q.queue_event_seq) || ' to public';
    EXECUTE 'grant usage on ' || pgq.quote_fqname(q.queue_event_seq) || ' to pgq_admin';
    EXECUTE 'grant select on ' || pgq.quote_fqname(q.queue_tick_seq) || ' to public';
    RETURN 1;
END
$$;

CREATE FUNCTION pgq.tune_storage(i_queue_name text) RETURNS integer
LANGUAGE plpgsql STRICT AS $$
DECLARE
    q record;
    i integer;
BEGIN
    SELECT * INTO q FROM pgq.queue WHERE queue_name = i_queue_name;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- event tables are append-only and truncated on rotation: no free space, no autovacuum
    FOR i IN 0 .. q.queue_ntables - 1 LOOP
        EXECUTE 'alter table ' || q.queue_data_pfx || '_' || i
             || ' set (fillfactor = 100, autovacuum_enabled = off, toast.autovacuum_enabled = off)';
    END LOOP;
    RETURN 1;
END
$$;

-- Nothing to upgrade: the migrator (pgtt-tui db upgrade) owns schema changes.
CREATE FUNCTION pgq.upgrade_schema() RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    RETURN 0;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Ticker
-- ---------------------------------------------------------------------------------------

-- External ticker (cascade branches): the tick id, time and event position come from the
-- provider; the snapshot is the inserting transaction's own.
CREATE FUNCTION pgq.ticker(i_queue_name text, i_tick_id bigint, i_orig_timestamp timestamptz, i_event_seq bigint)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    q record;
BEGIN
    SELECT queue_id, queue_tick_seq, queue_event_seq INTO q
      FROM pgq.queue
     WHERE queue_name = i_queue_name AND queue_external_ticker AND NOT queue_ticker_paused;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'queue not found or ticker disabled: %', i_queue_name;
    END IF;
    INSERT INTO pgq.tick (tick_queue, tick_id, tick_time, tick_event_seq)
    VALUES (q.queue_id, i_tick_id, i_orig_timestamp, i_event_seq);
    PERFORM pgq.seq_setval(q.queue_tick_seq, i_tick_id);
    PERFORM pgq.seq_setval(q.queue_event_seq, i_event_seq);
    RETURN i_tick_id;
END
$$;

-- Tick one queue if it is due. Returns the new tick id, or NULL when no tick was needed:
-- with new events, wait until ticker_max_count events or ticker_max_lag; without, tick
-- at least every ticker_max_lag/2 but back off exponentially up to ticker_idle_period.
CREATE FUNCTION pgq.ticker(i_queue_name text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    q record;
    lt record;
    cur_seq bigint;
    new_events bigint;
    lag interval;
    prev_gap interval;
    my_txid bigint;
    new_tick bigint;
BEGIN
    SELECT queue_id, queue_tick_seq, queue_event_seq, queue_external_ticker, queue_ticker_paused,
           queue_ticker_max_count, queue_ticker_max_lag, queue_ticker_idle_period
      INTO q
      FROM pgq.queue WHERE queue_name = i_queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no such queue';
    END IF;
    IF q.queue_external_ticker THEN
        RAISE EXCEPTION 'This queue has external tick source.';
    END IF;
    IF q.queue_ticker_paused THEN
        RAISE EXCEPTION 'Ticker has been paused for this queue';
    END IF;
    cur_seq := pgq.seq_getval(q.queue_event_seq);

    SELECT tick_id, tick_time, tick_event_seq,
           txid_snapshot_xmin(tick_snapshot) AS sxmin, txid_snapshot_xmax(tick_snapshot) AS sxmax
      INTO lt
      FROM pgq.tick WHERE tick_queue = q.queue_id
     ORDER BY tick_queue DESC, tick_id DESC LIMIT 1;
    IF FOUND THEN
        my_txid := txid_current();
        IF lt.sxmin > my_txid THEN
            RAISE EXCEPTION 'Invalid PgQ state: old xmin=%, old xmax=%, cur txid=%', lt.sxmin, lt.sxmax, my_txid;
        END IF;
        new_events := cur_seq - lt.tick_event_seq;
        IF new_events < 0 THEN
            RAISE WARNING 'Negative new_events?  old=% cur=%', lt.tick_event_seq, cur_seq;
        END IF;
        IF lt.sxmax > my_txid THEN
            RAISE WARNING 'Dubious PgQ state: old xmax=%, cur txid=%', lt.sxmax, my_txid;
        END IF;
        lag := now() - lt.tick_time;
        IF new_events > 0 THEN
            IF new_events < q.queue_ticker_max_count AND lag < q.queue_ticker_max_lag THEN
                RETURN NULL;
            END IF;
        ELSE
            SELECT lt.tick_time - t.tick_time INTO prev_gap
              FROM pgq.tick t
             WHERE t.tick_queue = q.queue_id AND t.tick_id < lt.tick_id
             ORDER BY t.tick_queue DESC, t.tick_id DESC LIMIT 1;
            IF FOUND AND (lag < q.queue_ticker_max_lag / 2
                          OR (lag < prev_gap * 2 AND lag < q.queue_ticker_idle_period)) THEN
                RETURN NULL;
            END IF;
        END IF;
    END IF;

    new_tick := nextval(q.queue_tick_seq::regclass);
    INSERT INTO pgq.tick (tick_queue, tick_id, tick_event_seq) VALUES (q.queue_id, new_tick, cur_seq);
    RETURN new_tick;
END
$$;

-- Tick every queue that has its own ticker; returns how many queues were looked at.
CREATE FUNCTION pgq.ticker() RETURNS bigint
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
        PERFORM pgq.ticker(qname);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Make the next ticker() call tick: pretend many events arrived. Returns the newest tick id.
CREATE FUNCTION pgq.force_tick(i_queue_name text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    q record;
    last_tick bigint;
BEGIN
    SELECT queue_id, queue_event_seq, queue_ticker_max_count INTO q
      FROM pgq.queue WHERE queue_name = i_queue_name;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM setval(q.queue_event_seq::regclass,
                   nextval(q.queue_event_seq::regclass) + q.queue_ticker_max_count * 2 + 1000);
    SELECT tick_id INTO last_tick FROM pgq.tick WHERE tick_queue = q.queue_id
     ORDER BY tick_queue DESC, tick_id DESC LIMIT 1;
    RETURN last_tick;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Queues
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq.create_queue(i_queue_name text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    qid integer;
    pfx text;
    tbl text;
    ev_seq text;
    tick_seq text;
    ntables integer;
    i integer;
BEGIN
    IF i_queue_name IS NULL THEN
        RAISE EXCEPTION 'Invalid NULL value';
    END IF;
    PERFORM 1 FROM pgq.queue WHERE queue_name = i_queue_name;
    IF FOUND THEN
        RETURN 0;
    END IF;
    -- one queue creation/drop at a time (they regenerate the shared insert path)
    PERFORM pg_advisory_xact_lock(hashtext('pgq.queue_ddl'));
    PERFORM 1 FROM pgq.queue WHERE queue_name = i_queue_name;
    IF FOUND THEN
        RETURN 0;
    END IF;

    qid := nextval('pgq.queue_queue_id_seq');
    pfx := 'pgq.event_' || qid;
    ev_seq := pfx || '_id_seq';
    tick_seq := pfx || '_tick_seq';
    INSERT INTO pgq.queue (queue_id, queue_name, queue_data_pfx, queue_event_seq, queue_tick_seq)
    VALUES (qid, i_queue_name, pfx, ev_seq, tick_seq)
    RETURNING queue_ntables INTO ntables;

    EXECUTE 'create sequence ' || ev_seq;
    EXECUTE 'create sequence ' || tick_seq;
    EXECUTE 'create table ' || pfx || ' () inherits (pgq.event_template)';
    FOR i IN 0 .. ntables - 1 LOOP
        tbl := pfx || '_' || i;
        EXECUTE 'create table ' || tbl || ' () inherits (' || pfx || ')';
        EXECUTE 'alter table ' || tbl || ' alter column ev_id set default nextval(' || quote_literal(ev_seq) || ')';
        EXECUTE 'create index ' || quote_ident('event_' || qid || '_' || i || '_txid_idx')
             || ' on ' || tbl || ' (ev_txid)';
    END LOOP;

    PERFORM pgq.grant_perms(i_queue_name);
    PERFORM pgq.ticker(i_queue_name);
    PERFORM pgq.tune_storage(i_queue_name);
    PERFORM pgq._refresh_insert_path();
    RETURN 1;
END
$$;

CREATE FUNCTION pgq.drop_queue(x_queue_name text, x_force boolean) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    q record;
    cname text;
    i integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('pgq.queue_ddl'));
    SELECT * INTO q FROM pgq.queue WHERE queue_name = x_queue_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such event queue';
    END IF;
    IF x_force THEN
        FOR cname IN
            SELECT c.co_name FROM pgq.subscription s JOIN pgq.consumer c ON c.co_id = s.sub_consumer
             WHERE s.sub_queue = q.queue_id ORDER BY 1
        LOOP
            PERFORM pgq.unregister_consumer(x_queue_name, cname);
        END LOOP;
    ELSE
        PERFORM 1 FROM pgq.subscription WHERE sub_queue = q.queue_id;
        IF FOUND THEN
            RAISE EXCEPTION 'cannot drop queue, consumers still attached';
        END IF;
    END IF;

    FOR i IN 0 .. q.queue_ntables - 1 LOOP
        EXECUTE 'drop table ' || q.queue_data_pfx || '_' || i;
    END LOOP;
    EXECUTE 'drop table ' || q.queue_data_pfx;
    DELETE FROM pgq.tick WHERE tick_queue = q.queue_id;
    DELETE FROM pgq.retry_queue WHERE ev_queue = q.queue_id;
    EXECUTE 'drop sequence ' || q.queue_tick_seq;
    EXECUTE 'drop sequence ' || q.queue_event_seq;
    DELETE FROM pgq.queue WHERE queue_id = q.queue_id;
    PERFORM pgq._refresh_insert_path();
    RETURN 1;
END
$$;

CREATE FUNCTION pgq.drop_queue(x_queue_name text) RETURNS integer
LANGUAGE sql STRICT AS $$
    SELECT pgq.drop_queue(x_queue_name, false)
$$;

CREATE FUNCTION pgq.set_queue_config(x_queue_name text, x_param_name text, x_param_value text)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    col text;
BEGIN
    IF x_queue_name IS NULL OR x_param_name IS NULL OR x_param_value IS NULL THEN
        RAISE EXCEPTION 'Invalid NULL value';
    END IF;
    PERFORM 1 FROM pgq.queue WHERE queue_name = x_queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such event queue';
    END IF;
    col := 'queue_' || x_param_name;
    IF col NOT IN ('queue_ticker_max_count', 'queue_ticker_max_lag', 'queue_ticker_idle_period',
                   'queue_ticker_paused', 'queue_rotation_period', 'queue_external_ticker') THEN
        -- (PgQ's message, including its trailing "s")
        RAISE EXCEPTION 'cannot change parameter "%s"', x_param_name;
    END IF;
    EXECUTE format('update pgq.queue set %I = $1::%s where queue_name = $2', col,
                   CASE WHEN col IN ('queue_ticker_paused', 'queue_external_ticker') THEN 'boolean'
                        WHEN col = 'queue_ticker_max_count' THEN 'integer'
                        ELSE 'interval' END)
        USING x_param_value, x_queue_name;
    RETURN 1;
END
$$;

-- The table producers write to in the current transaction (rotation may change it later).
CREATE FUNCTION pgq.current_event_table(x_queue_name text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    q record;
BEGIN
    SELECT queue_data_pfx, queue_cur_table, queue_disable_insert INTO q
      FROM pgq.queue WHERE queue_name = x_queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Event queue not found';
    END IF;
    IF q.queue_disable_insert AND current_setting('session_replication_role') <> 'replica' THEN
        RAISE EXCEPTION 'Writing to queue disabled';
    END IF;
    RETURN q.queue_data_pfx || '_' || q.queue_cur_table;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Producers
-- ---------------------------------------------------------------------------------------

-- pgq.insert_event_raw is generated by pgq._refresh_insert_path(): a fixed prologue
-- (queue lookup, disabled-queue and per-transaction-limit checks, event id) followed by
-- one static INSERT per event table of the most recent queues, whose plans PL/pgSQL
-- caches per session, and a dynamic INSERT for any other table.
CREATE FUNCTION pgq._refresh_insert_path() RETURNS void
LANGUAGE plpgsql AS $gen$
DECLARE
    dispatch text := '';
    q record;
    i integer;
    first_q boolean := true;
    cols constant text := '(ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)';
    vals constant text := 'values (v_id, ev_time, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)';
BEGIN
    FOR q IN
        SELECT queue_id, queue_data_pfx, queue_ntables FROM pgq.queue
         WHERE queue_data_pfx ~ '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$'
         ORDER BY queue_id DESC LIMIT 100
    LOOP
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
    IF NOT first_q THEN
        dispatch := dispatch || '    END IF;' || E'\n';
    END IF;

    EXECUTE $def$
CREATE OR REPLACE FUNCTION pgq.insert_event_raw(
    queue_name text, ev_id bigint, ev_time timestamptz, ev_owner integer, ev_retry integer,
    ev_type text, ev_data text, ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text)
RETURNS bigint LANGUAGE plpgsql AS $body$
-- generated by pgq._refresh_insert_path(); do not edit
DECLARE
    q record;
    v_id bigint;
    n integer;
BEGIN
    SELECT queue_id, queue_cur_table, queue_data_pfx, queue_event_seq, queue_disable_insert,
           queue_per_tx_limit
      INTO q
      FROM pgq.queue WHERE pgq.queue.queue_name = insert_event_raw.queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'No such queue';
    END IF;
    IF q.queue_disable_insert AND current_setting('session_replication_role') <> 'replica' THEN
        RAISE EXCEPTION 'Insert into queue disallowed';
    END IF;
    IF q.queue_per_tx_limit IS NOT NULL THEN
        -- events of this queue in this transaction, kept in a transaction-local setting
        n := coalesce(nullif(current_setting('pgq.tx_events_' || q.queue_id, true), ''), '0')::integer + 1;
        IF n > q.queue_per_tx_limit THEN
            RAISE EXCEPTION 'Queue ''%'' allows max % events from one TX', queue_name, q.queue_per_tx_limit;
        END IF;
        PERFORM set_config('pgq.tx_events_' || q.queue_id, n::text, true);
    END IF;
    -- always advance the event sequence: that is what the ticker watches
    v_id := nextval(q.queue_event_seq::regclass);
    IF ev_id IS NOT NULL THEN
        v_id := ev_id;
    END IF;
$def$ || dispatch || $def$
    EXECUTE 'insert into ' || q.queue_data_pfx || '_' || q.queue_cur_table
         || ' (ev_id, ev_time, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)'
         || ' values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)'
        USING v_id, ev_time, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4;
    RETURN v_id;
END
$body$
$def$;
END
$gen$;

SELECT pgq._refresh_insert_path();

CREATE FUNCTION pgq.insert_event(queue_name text, ev_type text, ev_data text, ev_extra1 text, ev_extra2 text,
                                 ev_extra3 text, ev_extra4 text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN pgq.insert_event_raw(queue_name, NULL, now(), NULL, NULL, ev_type, ev_data,
                                ev_extra1, ev_extra2, ev_extra3, ev_extra4);
END
$$;

CREATE FUNCTION pgq.insert_event(queue_name text, ev_type text, ev_data text)
RETURNS bigint LANGUAGE sql AS $$
    SELECT pgq.insert_event(queue_name, ev_type, ev_data, NULL, NULL, NULL, NULL)
$$;

-- ---------------------------------------------------------------------------------------
-- Consumers
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq.register_consumer_at(x_queue_name text, x_consumer_name text, x_tick_pos bigint)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    qid integer;
    cid integer;
    start_tick bigint;
BEGIN
    SELECT queue_id INTO qid FROM pgq.queue WHERE queue_name = x_queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Event queue not created yet';
    END IF;
    SELECT co_id INTO cid FROM pgq.consumer WHERE co_name = x_consumer_name;
    IF NOT FOUND THEN
        INSERT INTO pgq.consumer (co_name) VALUES (x_consumer_name)
        ON CONFLICT (co_name) DO NOTHING;
        SELECT co_id INTO cid FROM pgq.consumer WHERE co_name = x_consumer_name;
    END IF;
    IF x_tick_pos IS NOT NULL THEN
        PERFORM 1 FROM pgq.tick WHERE tick_queue = qid AND tick_id = x_tick_pos;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'cannot reposition, tick not found: %', x_tick_pos;
        END IF;
    END IF;

    PERFORM 1 FROM pgq.subscription WHERE sub_queue = qid AND sub_consumer = cid FOR UPDATE;
    IF FOUND THEN
        IF x_tick_pos IS NOT NULL THEN
            -- reposition: forget any open batch
            UPDATE pgq.subscription
               SET sub_last_tick = x_tick_pos, sub_active = now(), sub_batch = NULL, sub_next_tick = NULL
             WHERE sub_queue = qid AND sub_consumer = cid;
        END IF;
        RETURN 0;
    END IF;

    IF x_tick_pos IS NULL THEN
        SELECT tick_id INTO start_tick FROM pgq.tick WHERE tick_queue = qid
         ORDER BY tick_queue DESC, tick_id DESC LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'No ticks for this queue.  Please run ticker on database.';
        END IF;
    ELSE
        start_tick := x_tick_pos;
    END IF;
    INSERT INTO pgq.subscription (sub_queue, sub_consumer, sub_last_tick) VALUES (qid, cid, start_tick);
    RETURN 1;
END
$$;

CREATE FUNCTION pgq.register_consumer(x_queue_name text, x_consumer_id text)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN pgq.register_consumer_at(x_queue_name, x_consumer_id, NULL);
END
$$;

CREATE FUNCTION pgq.unregister_consumer(x_queue_name text, x_consumer_name text)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    sub record;
    sharing integer;
    removed integer;
    consumers integer[];
BEGIN
    SELECT s.sub_id, s.sub_queue, s.sub_consumer, s.sub_last_tick, s.sub_next_tick INTO sub
      FROM pgq.subscription s
      JOIN pgq.consumer c ON c.co_id = s.sub_consumer
      JOIN pgq.queue q ON q.queue_id = s.sub_queue
     WHERE q.queue_name = x_queue_name AND c.co_name = x_consumer_name
       FOR UPDATE OF s;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;

    SELECT count(*) INTO sharing FROM pgq.subscription WHERE sub_id = sub.sub_id;
    IF sharing > 1 AND ((sub.sub_last_tick IS NULL AND sub.sub_next_tick IS NULL)
                        OR (sub.sub_last_tick IS NOT NULL AND sub.sub_next_tick IS NOT NULL)) THEN
        -- a cooperative sub-consumer: only its own row goes
        DELETE FROM pgq.subscription WHERE sub_queue = sub.sub_queue AND sub_consumer = sub.sub_consumer;
        DELETE FROM pgq.consumer c WHERE c.co_id = sub.sub_consumer
           AND NOT EXISTS (SELECT 1 FROM pgq.subscription s WHERE s.sub_consumer = c.co_id);
        RETURN 1;
    END IF;

    DELETE FROM pgq.retry_queue WHERE ev_owner = sub.sub_id;
    WITH gone AS (DELETE FROM pgq.subscription WHERE sub_id = sub.sub_id RETURNING sub_consumer)
    SELECT count(*), array_agg(sub_consumer) INTO removed, consumers FROM gone;
    DELETE FROM pgq.consumer c WHERE c.co_id = ANY (consumers)
       AND NOT EXISTS (SELECT 1 FROM pgq.subscription s WHERE s.sub_consumer = c.co_id);
    RETURN removed;
END
$$;

-- First tick after the previous one that is far enough (min_count events or min_interval).
CREATE FUNCTION pgq.find_tick_helper(i_queue_id integer, i_prev_tick_id bigint, i_prev_tick_time timestamptz,
                                     i_prev_tick_seq bigint, i_min_count bigint, i_min_interval interval,
                                     OUT next_tick_id bigint, OUT next_tick_time timestamptz,
                                     OUT next_tick_seq bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT t.tick_id, t.tick_time, t.tick_event_seq INTO next_tick_id, next_tick_time, next_tick_seq
      FROM pgq.tick t
     WHERE t.tick_queue = i_queue_id AND t.tick_id > i_prev_tick_id
       AND ((i_min_count IS NOT NULL AND t.tick_event_seq - i_prev_tick_seq >= i_min_count)
            OR (i_min_interval IS NOT NULL AND t.tick_time - i_prev_tick_time >= i_min_interval))
     ORDER BY t.tick_queue, t.tick_id
     LIMIT 1;
END
$$;

CREATE FUNCTION pgq.next_batch_custom(i_queue_name text, i_consumer_name text, i_min_lag interval,
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
           t2.tick_time AS next_time, t2.tick_event_seq AS next_seq
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
        RAISE EXCEPTION 'PgQ corruption: Consumer % on queue % does not see tick %',
                        i_consumer_name, i_queue_name, s.sub_last_tick;
    END IF;

    IF s.sub_batch IS NOT NULL THEN
        -- a batch is open (the consumer may have crashed): hand out the same one again
        batch_id := s.sub_batch;
        cur_tick_id := s.sub_next_tick;
        prev_tick_id := s.sub_last_tick;
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

CREATE FUNCTION pgq.next_batch_info(i_queue_name text, i_consumer_name text,
                                    OUT batch_id bigint, OUT cur_tick_id bigint, OUT prev_tick_id bigint,
                                    OUT cur_tick_time timestamptz, OUT prev_tick_time timestamptz,
                                    OUT cur_tick_event_seq bigint, OUT prev_tick_event_seq bigint)
LANGUAGE sql AS $$
    SELECT * FROM pgq.next_batch_custom(i_queue_name, i_consumer_name, NULL, NULL, NULL)
$$;

CREATE FUNCTION pgq.next_batch(i_queue_name text, i_consumer_name text) RETURNS bigint
LANGUAGE sql AS $$
    SELECT batch_id FROM pgq.next_batch_custom(i_queue_name, i_consumer_name, NULL, NULL, NULL)
$$;

-- The event tables a batch may have rows in: the current one, the previous one, or both,
-- depending on where the batch's transactions lie relative to the last rotation.
CREATE FUNCTION pgq.batch_event_tables(x_batch_id bigint) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    cur_tbl text;
    prev_tbl text;
    tx_min bigint;
    tx_max bigint;
BEGIN
    SELECT q.queue_data_pfx, q.queue_cur_table, q.queue_ntables, q.queue_switch_step1, q.queue_switch_step2,
           t1.tick_snapshot AS prev_snap, t2.tick_snapshot AS cur_snap
      INTO b
      FROM pgq.subscription s
      JOIN pgq.queue q ON q.queue_id = s.sub_queue
      JOIN pgq.tick t1 ON t1.tick_queue = s.sub_queue AND t1.tick_id = s.sub_last_tick
      JOIN pgq.tick t2 ON t2.tick_queue = s.sub_queue AND t2.tick_id = s.sub_next_tick
     WHERE s.sub_batch = x_batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Cannot find data for batch %', x_batch_id;
    END IF;
    tx_min := txid_snapshot_xmin(b.prev_snap);
    tx_max := txid_snapshot_xmax(b.cur_snap);
    cur_tbl := b.queue_data_pfx || '_' || b.queue_cur_table;
    prev_tbl := b.queue_data_pfx || '_' || ((b.queue_cur_table + b.queue_ntables - 1) % b.queue_ntables);
    IF tx_max < b.queue_switch_step1 THEN
        RETURN NEXT prev_tbl;
    ELSIF b.queue_switch_step2 IS NOT NULL AND tx_min > b.queue_switch_step2 THEN
        RETURN NEXT cur_tbl;
    ELSE
        RETURN NEXT prev_tbl;
        RETURN NEXT cur_tbl;
    END IF;
END
$$;

-- The SELECT that returns a batch's events, ordered by ev_id.
CREATE FUNCTION pgq.batch_event_sql(x_batch_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    b record;
    lo bigint;
    hi bigint;
    prev_xmax bigint;
    far bigint[];
    near_min bigint;
    conds text;
    tbl text;
    parts text[] := '{}';
    cols constant text := 'select ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, '
                          'ev_extra1, ev_extra2, ev_extra3, ev_extra4 from ';
BEGIN
    SELECT s.sub_id, t1.tick_snapshot AS prev_snap, t2.tick_snapshot AS cur_snap INTO b
      FROM pgq.subscription s
      JOIN pgq.tick t1 ON t1.tick_queue = s.sub_queue AND t1.tick_id = s.sub_last_tick
      JOIN pgq.tick t2 ON t2.tick_queue = s.sub_queue AND t2.tick_id = s.sub_next_tick
     WHERE s.sub_batch = x_batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch not found';
    END IF;

    -- Candidates: txids from xmax(prev) up to xmax(cur), plus those running at the
    -- previous tick that had committed by the current one. Running ones just below
    -- xmax(prev) are folded into the range instead of being listed.
    prev_xmax := txid_snapshot_xmax(b.prev_snap);
    hi := txid_snapshot_xmax(b.cur_snap);
    SELECT min(x) FILTER (WHERE x >= prev_xmax - 100),
           coalesce(array_agg(x ORDER BY x) FILTER (WHERE x < prev_xmax - 100), '{}')
      INTO near_min, far
      FROM txid_snapshot_xip(b.prev_snap) AS x
     WHERE txid_visible_in_snapshot(x, b.cur_snap);
    lo := least(prev_xmax, near_min);

    conds := ' where ev_txid >= ' || lo || ' and ev_txid < ' || hi;
    IF EXISTS (SELECT 1 FROM txid_snapshot_xip(b.cur_snap)) THEN
        conds := conds || ' and txid_visible_in_snapshot(ev_txid, ' || quote_literal(b.cur_snap::text) || ')';
    END IF;
    IF lo < prev_xmax THEN
        conds := conds || ' and not txid_visible_in_snapshot(ev_txid, ' || quote_literal(b.prev_snap::text) || ')';
    END IF;
    conds := conds || ' and (ev_owner is null or ev_owner = ' || b.sub_id || ')';

    FOR tbl IN SELECT * FROM pgq.batch_event_tables(x_batch_id) LOOP
        parts := parts || (cols || tbl || conds);
        IF cardinality(far) > 0 THEN
            parts := parts || (cols || tbl || ' where ev_txid in (' || array_to_string(far, ',') || ')'
                               || ' and (ev_owner is null or ev_owner = ' || b.sub_id || ')');
        END IF;
    END LOOP;
    RETURN array_to_string(parts, ' union all ') || ' order by 1';
END
$$;

CREATE FUNCTION pgq.get_batch_events(x_batch_id bigint,
                                     OUT ev_id bigint, OUT ev_time timestamptz, OUT ev_txid bigint,
                                     OUT ev_retry integer, OUT ev_type text, OUT ev_data text,
                                     OUT ev_extra1 text, OUT ev_extra2 text, OUT ev_extra3 text,
                                     OUT ev_extra4 text)
RETURNS SETOF record LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE pgq.batch_event_sql(x_batch_id);
END
$$;

-- Declares a NO SCROLL cursor over the batch (the caller FETCHes the rest) and returns
-- the first i_quick_limit rows. extra_where filters with an expression on the event columns.
CREATE FUNCTION pgq.get_batch_cursor(i_batch_id bigint, i_cursor_name text, i_quick_limit integer,
                                     i_extra_where text,
                                     OUT ev_id bigint, OUT ev_time timestamptz, OUT ev_txid bigint,
                                     OUT ev_retry integer, OUT ev_type text, OUT ev_data text,
                                     OUT ev_extra1 text, OUT ev_extra2 text, OUT ev_extra3 text,
                                     OUT ev_extra4 text)
RETURNS SETOF record LANGUAGE plpgsql AS $$
DECLARE
    q text;
BEGIN
    IF i_batch_id IS NULL OR i_cursor_name IS NULL OR i_quick_limit IS NULL THEN
        RETURN;
    END IF;
    q := pgq.batch_event_sql(i_batch_id);
    IF i_extra_where IS NOT NULL THEN
        q := 'select * from (' || left(q, -length(' order by 1')) || ') _evs where ' || i_extra_where
             || ' order by 1';
    END IF;
    EXECUTE 'declare ' || quote_ident(i_cursor_name) || ' no scroll cursor for ' || q;
    RETURN QUERY EXECUTE 'fetch ' || i_quick_limit || ' from ' || quote_ident(i_cursor_name);
END
$$;

CREATE FUNCTION pgq.get_batch_cursor(i_batch_id bigint, i_cursor_name text, i_quick_limit integer,
                                     OUT ev_id bigint, OUT ev_time timestamptz, OUT ev_txid bigint,
                                     OUT ev_retry integer, OUT ev_type text, OUT ev_data text,
                                     OUT ev_extra1 text, OUT ev_extra2 text, OUT ev_extra3 text,
                                     OUT ev_extra4 text)
RETURNS SETOF record LANGUAGE sql STRICT AS $$
    SELECT * FROM pgq.get_batch_cursor(i_batch_id, i_cursor_name, i_quick_limit, NULL)
$$;

CREATE FUNCTION pgq.finish_batch(x_batch_id bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    UPDATE pgq.subscription
       SET sub_active = now(), sub_last_tick = sub_next_tick, sub_next_tick = NULL, sub_batch = NULL
     WHERE sub_batch = x_batch_id;
    IF NOT FOUND THEN
        RAISE WARNING 'finish_batch: batch % not found', x_batch_id;
        RETURN 0;
    END IF;
    RETURN 1;
END
$$;

CREATE FUNCTION pgq.get_batch_info(x_batch_id bigint,
                                   OUT queue_name text, OUT consumer_name text,
                                   OUT batch_start timestamptz, OUT batch_end timestamptz,
                                   OUT prev_tick_id bigint, OUT tick_id bigint, OUT lag interval,
                                   OUT seq_start bigint, OUT seq_end bigint)
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    SELECT q.queue_name, c.co_name, t1.tick_time, t2.tick_time, t1.tick_id, t2.tick_id,
           now() - t2.tick_time, t1.tick_event_seq, t2.tick_event_seq
      INTO queue_name, consumer_name, batch_start, batch_end, prev_tick_id, tick_id, lag, seq_start, seq_end
      FROM pgq.subscription s
      JOIN pgq.queue q ON q.queue_id = s.sub_queue
      JOIN pgq.consumer c ON c.co_id = s.sub_consumer
      JOIN pgq.tick t1 ON t1.tick_queue = s.sub_queue AND t1.tick_id = s.sub_last_tick
      JOIN pgq.tick t2 ON t2.tick_queue = s.sub_queue AND t2.tick_id = s.sub_next_tick
     WHERE s.sub_batch = x_batch_id;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Retries (private to the consumer that asked for them)
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq.event_retry(x_batch_id bigint, x_event_id bigint, x_retry_time timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid, ev_owner, ev_retry,
                                 ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
    SELECT x_retry_time, s.sub_queue, e.ev_id, e.ev_time, NULL, s.sub_id, coalesce(e.ev_retry, 0) + 1,
           e.ev_type, e.ev_data, e.ev_extra1, e.ev_extra2, e.ev_extra3, e.ev_extra4
      FROM pgq.get_batch_events(x_batch_id) e, pgq.subscription s
     WHERE s.sub_batch = x_batch_id AND e.ev_id = x_event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event not found';
    END IF;
    RETURN 1;
EXCEPTION
    WHEN unique_violation THEN
        RETURN 0;  -- already queued for retry
    WHEN raise_exception THEN
        IF SQLERRM = 'batch not found' THEN
            RAISE EXCEPTION 'event not found';
        END IF;
        RAISE;
END
$$;

CREATE FUNCTION pgq.event_retry(x_batch_id bigint, x_event_id bigint, x_retry_seconds integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    RETURN pgq.event_retry(x_batch_id, x_event_id, now() + x_retry_seconds * interval '1 second');
END
$$;

CREATE FUNCTION pgq.batch_retry(i_batch_id bigint, i_retry_seconds integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    s record;
    n integer;
BEGIN
    SELECT sub_id, sub_queue INTO s FROM pgq.subscription WHERE sub_batch = i_batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch_retry: batch % not found', i_batch_id;
    END IF;
    INSERT INTO pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_txid, ev_owner, ev_retry,
                                 ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
    SELECT now() + i_retry_seconds * interval '1 second', s.sub_queue, e.ev_id, e.ev_time, NULL, s.sub_id,
           coalesce(e.ev_retry, 0) + 1, e.ev_type, e.ev_data, e.ev_extra1, e.ev_extra2, e.ev_extra3, e.ev_extra4
      FROM pgq.get_batch_events(i_batch_id) e
     WHERE NOT EXISTS (SELECT 1 FROM pgq.retry_queue r WHERE r.ev_owner = s.sub_id AND r.ev_id = e.ev_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE FUNCTION pgq.event_retry_raw(x_queue text, x_consumer text, x_retry_after timestamptz, x_ev_id bigint,
                                    x_ev_time timestamptz, x_ev_retry integer, x_ev_type text, x_ev_data text,
                                    x_ev_extra1 text, x_ev_extra2 text, x_ev_extra3 text, x_ev_extra4 text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    s record;
    id bigint;
BEGIN
    SELECT sub.sub_id, q.queue_id, q.queue_event_seq INTO s
      FROM pgq.queue q
      JOIN pgq.subscription sub ON sub.sub_queue = q.queue_id
      JOIN pgq.consumer c ON c.co_id = sub.sub_consumer
     WHERE q.queue_name = x_queue AND c.co_name = x_consumer;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'consumer not registered';
    END IF;
    id := coalesce(x_ev_id, nextval(s.queue_event_seq::regclass));
    INSERT INTO pgq.retry_queue (ev_retry_after, ev_queue, ev_id, ev_time, ev_owner, ev_retry,
                                 ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
    VALUES (x_retry_after, s.queue_id, id, x_ev_time, s.sub_id, x_ev_retry,
            x_ev_type, x_ev_data, x_ev_extra1, x_ev_extra2, x_ev_extra3, x_ev_extra4);
    RETURN id;
END
$$;

-- ---------------------------------------------------------------------------------------
-- Information
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq.get_queue_info(i_queue_name text,
    OUT queue_name text, OUT queue_ntables integer, OUT queue_cur_table integer,
    OUT queue_rotation_period interval, OUT queue_switch_time timestamptz,
    OUT queue_external_ticker boolean, OUT queue_ticker_paused boolean,
    OUT queue_ticker_max_count integer, OUT queue_ticker_max_lag interval,
    OUT queue_ticker_idle_period interval, OUT ticker_lag interval,
    OUT ev_per_sec double precision, OUT ev_new bigint, OUT last_tick_id bigint)
RETURNS SETOF record LANGUAGE plpgsql AS $$
DECLARE
    q record;
BEGIN
    FOR q IN
        SELECT * FROM pgq.queue qq
         WHERE i_queue_name IS NULL OR qq.queue_name = i_queue_name
         ORDER BY qq.queue_name
    LOOP
        queue_name := q.queue_name;
        queue_ntables := q.queue_ntables;
        queue_cur_table := q.queue_cur_table;
        queue_rotation_period := q.queue_rotation_period;
        queue_switch_time := q.queue_switch_time;
        queue_external_ticker := q.queue_external_ticker;
        queue_ticker_paused := q.queue_ticker_paused;
        queue_ticker_max_count := q.queue_ticker_max_count;
        queue_ticker_max_lag := q.queue_ticker_max_lag;
        queue_ticker_idle_period := q.queue_ticker_idle_period;
        SELECT now() - t.tick_time, pgq.seq_getval(q.queue_event_seq) - t.tick_event_seq, t.tick_id,
               (SELECT (t.tick_event_seq - o.tick_event_seq)::double precision
                       / nullif(extract(epoch FROM t.tick_time - o.tick_time), 0)
                  FROM pgq.tick o
                 WHERE o.tick_queue = t.tick_queue AND o.tick_id < t.tick_id AND o.tick_id >= t.tick_id - 20
                 ORDER BY o.tick_queue, o.tick_id LIMIT 1)
          INTO ticker_lag, ev_new, last_tick_id, ev_per_sec
          FROM pgq.tick t
         WHERE t.tick_queue = q.queue_id
         ORDER BY t.tick_queue DESC, t.tick_id DESC LIMIT 1;
        IF NOT FOUND THEN
            ticker_lag := NULL; ev_new := NULL; last_tick_id := NULL; ev_per_sec := NULL;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE FUNCTION pgq.get_queue_info(
    OUT queue_name text, OUT queue_ntables integer, OUT queue_cur_table integer,
    OUT queue_rotation_period interval, OUT queue_switch_time timestamptz,
    OUT queue_external_ticker boolean, OUT queue_ticker_paused boolean,
    OUT queue_ticker_max_count integer, OUT queue_ticker_max_lag interval,
    OUT queue_ticker_idle_period interval, OUT ticker_lag interval,
    OUT ev_per_sec double precision, OUT ev_new bigint, OUT last_tick_id bigint)
RETURNS SETOF record LANGUAGE sql AS $$
    SELECT * FROM pgq.get_queue_info(NULL)
$$;

CREATE FUNCTION pgq.get_consumer_info(i_queue_name text, i_consumer_name text,
    OUT queue_name text, OUT consumer_name text, OUT lag interval, OUT last_seen interval,
    OUT last_tick bigint, OUT current_batch bigint, OUT next_tick bigint, OUT pending_events bigint)
RETURNS SETOF record LANGUAGE sql SECURITY DEFINER AS $$
    SELECT q.queue_name, c.co_name, now() - t.tick_time, now() - s.sub_active,
           s.sub_last_tick, s.sub_batch, s.sub_next_tick,
           (SELECT top.tick_event_seq FROM pgq.tick top WHERE top.tick_queue = q.queue_id
             ORDER BY top.tick_queue DESC, top.tick_id DESC LIMIT 1) - t.tick_event_seq
      FROM pgq.subscription s
      JOIN pgq.queue q ON q.queue_id = s.sub_queue
      JOIN pgq.consumer c ON c.co_id = s.sub_consumer
      LEFT JOIN pgq.tick t ON t.tick_queue = s.sub_queue AND t.tick_id = s.sub_last_tick
     WHERE (i_queue_name IS NULL OR q.queue_name = i_queue_name)
       AND (i_consumer_name IS NULL OR c.co_name = i_consumer_name)
     ORDER BY 1, 2
$$;

CREATE FUNCTION pgq.get_consumer_info(i_queue_name text,
    OUT queue_name text, OUT consumer_name text, OUT lag interval, OUT last_seen interval,
    OUT last_tick bigint, OUT current_batch bigint, OUT next_tick bigint, OUT pending_events bigint)
RETURNS SETOF record LANGUAGE sql SECURITY DEFINER AS $$
    SELECT * FROM pgq.get_consumer_info(i_queue_name, NULL)
$$;

CREATE FUNCTION pgq.get_consumer_info(
    OUT queue_name text, OUT consumer_name text, OUT lag interval, OUT last_seen interval,
    OUT last_tick bigint, OUT current_batch bigint, OUT next_tick bigint, OUT pending_events bigint)
RETURNS SETOF record LANGUAGE sql SECURITY DEFINER AS $$
    SELECT * FROM pgq.get_consumer_info(NULL, NULL)
$$;

-- ---------------------------------------------------------------------------------------
-- Maintenance (what pgqd / pgtt-tui ticker runs)
-- ---------------------------------------------------------------------------------------

-- Move due retry events back into their queue (at most 10 per call; call until 0).
CREATE FUNCTION pgq.maint_retry_events() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ev record;
    n integer := 0;
BEGIN
    LOCK TABLE pgq.retry_queue IN SHARE UPDATE EXCLUSIVE MODE;
    FOR ev IN
        SELECT q.queue_name, r.*
          FROM pgq.retry_queue r JOIN pgq.queue q ON q.queue_id = r.ev_queue
         WHERE r.ev_retry_after <= current_timestamp
         ORDER BY r.ev_retry_after
         LIMIT 10
    LOOP
        PERFORM pgq.insert_event_raw(ev.queue_name, ev.ev_id, ev.ev_time, ev.ev_owner, ev.ev_retry,
                                     ev.ev_type, ev.ev_data, ev.ev_extra1, ev.ev_extra2, ev.ev_extra3, ev.ev_extra4);
        DELETE FROM pgq.retry_queue WHERE ev_owner = ev.ev_owner AND ev_id = ev.ev_id;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Rotation, step 1: switch producers to the next event table, truncating it first.
-- Skipped while the slowest consumer may still need the table that drops out of reach.
CREATE FUNCTION pgq.maint_rotate_tables_step1(i_queue_name text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    q record;
    lowest_tick bigint;
    lowest_xmin bigint;
    nxt integer;
    tbl text;
BEGIN
    SELECT * INTO q FROM pgq.queue
     WHERE queue_name = i_queue_name
       AND queue_rotation_period IS NOT NULL
       AND queue_switch_step2 IS NOT NULL
       AND queue_switch_time + queue_rotation_period < current_timestamp
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF txid_current() < q.queue_switch_step1 THEN
        RAISE EXCEPTION 'queue % maint failure: step1=%, current=%', i_queue_name, q.queue_switch_step1, txid_current();
    END IF;

    SELECT min(sub_last_tick) INTO lowest_tick FROM pgq.subscription WHERE sub_queue = q.queue_id;
    IF lowest_tick IS NOT NULL THEN
        SELECT txid_snapshot_xmin(tick_snapshot) INTO lowest_xmin
          FROM pgq.tick WHERE tick_queue = q.queue_id AND tick_id = lowest_tick;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'queue % maint failure: tick % not found', i_queue_name, lowest_tick;
        END IF;
        IF lowest_xmin <= q.queue_switch_step2 THEN
            RETURN 0;  -- that consumer may still read the previous table
        END IF;
    END IF;

    nxt := (q.queue_cur_table + 1) % q.queue_ntables;
    tbl := q.queue_data_pfx || '_' || nxt;
    BEGIN
        EXECUTE 'lock table ' || tbl || ' nowait';
        EXECUTE 'truncate ' || tbl;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 0;  -- someone (pg_dump?) holds it: try next time
    END;
    UPDATE pgq.queue
       SET queue_cur_table = nxt, queue_switch_time = current_timestamp,
           queue_switch_step1 = txid_current(), queue_switch_step2 = NULL
     WHERE queue_id = q.queue_id;
    -- ticks older than every consumer's position are of no use any more
    DELETE FROM pgq.tick
     WHERE tick_queue = q.queue_id AND txid_snapshot_xmin(tick_snapshot) < q.queue_switch_step2;
    RETURN 0;
END
$$;

-- Rotation, step 2 (a later transaction than step 1): the txid after which every
-- producer writes to the new table.
CREATE FUNCTION pgq.maint_rotate_tables_step2() RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pgq.queue SET queue_switch_step2 = txid_current() WHERE queue_switch_step2 IS NULL;
    RETURN 0;
END
$$;

CREATE FUNCTION pgq.maint_tables_to_vacuum() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    IF current_setting('autovacuum') = 'on' THEN
        RETURN;
    END IF;
    FOREACH t IN ARRAY ARRAY['pgq.subscription', 'pgq.consumer', 'pgq.queue', 'pgq.tick', 'pgq.retry_queue',
                             'pgq_ext.completed_tick', 'pgq_ext.completed_batch', 'pgq_ext.completed_event',
                             'pgq_ext.partial_batch', 'pgq_node.local_state', 'txid.epoch', 'londiste.completed']
    LOOP
        IF to_regclass(t) IS NOT NULL THEN
            RETURN NEXT t;
        END IF;
    END LOOP;
END
$$;

-- Everything a maintenance run should do, one (function, argument) per row; the daemon
-- runs each as its own transaction and repeats it while it returns non-zero.
CREATE FUNCTION pgq.maint_operations(OUT func_name text, OUT func_arg text) RETURNS SETOF record
LANGUAGE plpgsql AS $$
DECLARE
    nrot integer := 0;
    ops text[];
    op text;
BEGIN
    func_name := 'pgq.maint_rotate_tables_step1';
    FOR func_arg IN
        SELECT queue_name FROM pgq.queue
         WHERE queue_rotation_period IS NOT NULL AND queue_switch_step2 IS NOT NULL
           AND queue_switch_time + queue_rotation_period < current_timestamp
         ORDER BY 1
    LOOP
        nrot := nrot + 1;
        RETURN NEXT;
    END LOOP;
    IF nrot = 0 THEN
        SELECT count(*) INTO nrot FROM pgq.queue
         WHERE queue_rotation_period IS NOT NULL AND queue_switch_step2 IS NULL;
    END IF;
    IF nrot > 0 THEN
        func_name := 'pgq.maint_rotate_tables_step2';
        func_arg := NULL;
        RETURN NEXT;
    END IF;

    FOR func_arg, ops IN
        SELECT queue_name, queue_extra_maint FROM pgq.queue
         WHERE queue_extra_maint IS NOT NULL ORDER BY 1
    LOOP
        FOREACH op IN ARRAY ops LOOP
            func_name := op;
            RETURN NEXT;
        END LOOP;
    END LOOP;

    func_name := 'vacuum';
    FOR func_arg IN SELECT * FROM pgq.maint_tables_to_vacuum() LOOP
        RETURN NEXT;
    END LOOP;

    IF to_regprocedure('pgq_node.maint_watermark(text)') IS NOT NULL THEN
        func_name := 'pgq_node.maint_watermark';
        FOR func_arg IN
            EXECUTE 'select queue_name from pgq_node.node_info where node_type = ''root'' order by 1'
        LOOP
            RETURN NEXT;
        END LOOP;
    END IF;

    IF to_regprocedure('londiste.root_check_seqs(text)') IS NOT NULL THEN
        func_name := 'londiste.root_check_seqs';
        FOR func_arg IN
            EXECUTE 'select distinct s.queue_name from londiste.seq_info s, pgq_node.node_info n'
                    ' where s.local and n.node_type = ''root'' and n.queue_name = s.queue_name order by 1'
        LOOP
            RETURN NEXT;
        END LOOP;
    END IF;
    IF to_regprocedure('londiste.periodic_maintenance()') IS NOT NULL THEN
        func_name := 'londiste.periodic_maintenance';
        func_arg := NULL;
        RETURN NEXT;
    END IF;
END
$$;
