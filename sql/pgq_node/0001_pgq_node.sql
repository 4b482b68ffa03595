-- pgq_node: cascaded queues on top of pgq (API of SkyTools pgq_node 3.5).
--
-- Every queue-carrying node of a cascade (root, branch) has the same queue with the same
-- tick ids and event ids; leaves have no queue of their own.  These functions keep the
-- node map, the node's own state and the state of every cascaded consumer that writes to
-- this node.  The cascaded worker (engine/cascade/worker.py) and the admin plans
-- (engine/cascade/ops.py) drive them.  Return codes follow pgq_node: 1xx ok/debug,
-- 2xx ok/info, 3xx warning, >= 400 error; the ret_note texts are part of the API
-- (including the upstream typos), see /work/shared/reference/pgq.md section b.2.
--
-- Differences to the C-free upstream code, all deliberate:
--  * every function is SECURITY DEFINER with a fixed search_path (pg_catalog, pg_temp);
--  * subscriber_info has no foreign keys into pgq.consumer (the pgq module owns those rows).

CREATE SCHEMA IF NOT EXISTS pgq_node;

-- Every member of the cascade known to this node.
CREATE TABLE pgq_node.node_location (
    queue_name    text    NOT NULL,
    node_name     text    NOT NULL,
    node_location text    NOT NULL,
    dead          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (queue_name, node_name)
);

-- This node's role in the cascade for one queue.
CREATE TABLE pgq_node.node_info (
    queue_name     text NOT NULL PRIMARY KEY,
    node_type      text NOT NULL,
    node_name      text NOT NULL,
    worker_name    text,
    combined_queue text,
    node_attrs     text,
    FOREIGN KEY (queue_name, node_name) REFERENCES pgq_node.node_location,
    CHECK (node_type IN ('root', 'branch', 'leaf')),
    CHECK (CASE WHEN node_type = 'root' THEN worker_name IS NOT NULL AND combined_queue IS NULL
                WHEN node_type = 'branch' THEN worker_name IS NOT NULL AND combined_queue IS NULL
                WHEN node_type = 'leaf' THEN worker_name IS NOT NULL
                ELSE false END)
);

-- Every cascaded consumer whose target is this node (including the node's own worker).
CREATE TABLE pgq_node.local_state (
    queue_name    text    NOT NULL,
    consumer_name text    NOT NULL,
    provider_node text    NOT NULL,
    last_tick_id  bigint  NOT NULL,
    cur_error     text,
    paused        boolean NOT NULL DEFAULT false,
    uptodate      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (queue_name, consumer_name),
    FOREIGN KEY (queue_name) REFERENCES pgq_node.node_info,
    FOREIGN KEY (queue_name, provider_node) REFERENCES pgq_node.node_location
);

-- Nodes that read from this node.
CREATE TABLE pgq_node.subscriber_info (
    queue_name      text NOT NULL,
    subscriber_node text NOT NULL,
    worker_name     text NOT NULL,
    watermark_name  text NOT NULL,
    PRIMARY KEY (queue_name, subscriber_node),
    FOREIGN KEY (queue_name) REFERENCES pgq_node.node_info,
    FOREIGN KEY (queue_name, subscriber_node) REFERENCES pgq_node.node_location
);

COMMENT ON TABLE pgq_node.node_location IS 'pgq_node: cascade members known to this node (libpq connect strings)';
COMMENT ON TABLE pgq_node.node_info IS 'pgq_node: this node''s type, name and worker per cascaded queue';
COMMENT ON TABLE pgq_node.local_state IS 'pgq_node: position and flags of every cascaded consumer writing to this node';
COMMENT ON TABLE pgq_node.subscriber_info IS 'pgq_node: nodes subscribed to this node';

-- ---------------------------------------------------------------------------------------
-- internal helpers (not part of the upstream API)
-- ---------------------------------------------------------------------------------------

-- newest tick id of a local queue (NULL when there is no such queue)
CREATE FUNCTION pgq_node._queue_top(i_queue_name text) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT max(t.tick_id) FROM pgq.tick t JOIN pgq.queue q ON q.queue_id = t.tick_queue
    WHERE q.queue_name = i_queue_name
$$;

-- last tick of one pgq consumer on a local queue
CREATE FUNCTION pgq_node._consumer_tick(i_queue_name text, i_consumer text) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.sub_last_tick FROM pgq.subscription s
    JOIN pgq.queue q ON q.queue_id = s.sub_queue
    JOIN pgq.consumer c ON c.co_id = s.sub_consumer
    WHERE q.queue_name = i_queue_name AND c.co_name = i_consumer
$$;

-- local watermark: the lowest tick still needed here or below (min over every pgq consumer
-- of the local queue except .global_watermark; the newest tick when there are none)
CREATE FUNCTION pgq_node._local_watermark(i_queue_name text) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        (SELECT min(s.sub_last_tick) FROM pgq.subscription s
           JOIN pgq.queue q ON q.queue_id = s.sub_queue
           JOIN pgq.consumer c ON c.co_id = s.sub_consumer
          WHERE q.queue_name = i_queue_name AND c.co_name <> '.global_watermark'),
        pgq_node._queue_top(i_queue_name))
$$;

-- ---------------------------------------------------------------------------------------
-- Global node map
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq_node.register_location(
    in i_queue_name text, in i_node_name text, in i_node_location text, in i_dead boolean,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Add or update a node location.  On the root the change is also sent down the cascade
-- as a pgq.location-info event.  A NULL location keeps the stored one (tag dead/alive).
declare
    v_type text;
begin
    select node_type into v_type from pgq_node.node_info where queue_name = i_queue_name for update;
    update pgq_node.node_location
       set node_location = coalesce(i_node_location, node_location), dead = i_dead
     where queue_name = i_queue_name and node_name = i_node_name;
    if not found and i_node_location is not null then
        insert into pgq_node.node_location (queue_name, node_name, node_location, dead)
        values (i_queue_name, i_node_name, i_node_location, i_dead);
    end if;
    if v_type = 'root' then
        perform pgq.insert_event(i_queue_name, 'pgq.location-info', i_node_name, i_queue_name,
                                 i_node_location, i_dead::text, null);
    end if;
    select 200, 'Location registered' into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.unregister_location(
    in i_queue_name text, in i_node_name text, out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Drop a location that nothing here depends on.  200 Ok, 301 not found, 403 own/parent.
declare
    v_node record;
    v_sub record;
begin
    select n.node_name, n.node_type, s.provider_node into v_node
      from pgq_node.node_info n
      left join pgq_node.local_state s on s.queue_name = n.queue_name and s.consumer_name = n.worker_name
     where n.queue_name = i_queue_name for update of n;
    if found and v_node.node_name = i_node_name then
        select 403, 'Cannot drop node''s own location' into ret_code, ret_note;
        return;
    end if;
    if found and v_node.provider_node = i_node_name then
        select 403, 'Cannot drop location of node''s parent' into ret_code, ret_note;
        return;
    end if;
    select * into v_sub from pgq_node.subscriber_info
     where queue_name = i_queue_name and subscriber_node = i_node_name;
    if found then
        perform pgq_node.unregister_subscriber(i_queue_name, i_node_name);
    end if;
    delete from pgq_node.node_location where queue_name = i_queue_name and node_name = i_node_name;
    if found then
        select 200, 'Ok' into ret_code, ret_note;
    else
        select 301, 'Location not found: ' || i_queue_name || '/' || i_node_name into ret_code, ret_note;
    end if;
    if v_node.node_type = 'root' then
        perform pgq.insert_event(i_queue_name, 'pgq.unregister-location', i_node_name, i_queue_name,
                                 null, null, null);
    end if;
    return;
end;
$$;

CREATE FUNCTION pgq_node.get_queue_locations(
    in i_queue_name text, out node_name text, out node_location text, out dead boolean) RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- The node list of a queue as this node knows it.
begin
    for node_name, node_location, dead in
        select l.node_name, l.node_location, l.dead from pgq_node.node_location l
         where l.queue_name = i_queue_name
    loop
        return next;
    end loop;
    return;
end;
$$;

-- ---------------------------------------------------------------------------------------
-- Node operations
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq_node.create_node(
    in i_queue_name text, in i_node_type text, in i_node_name text, in i_worker_name text,
    in i_provider_name text, in i_global_watermark bigint, in i_combined_queue text,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Initialise this node for a queue: root (creates the queue and ticks it), branch (creates
-- the queue with an external ticker and inserts disabled, positioned at the global
-- watermark) or leaf (no queue; optionally merges into a local combined queue).
declare
    v_wm bigint := i_global_watermark;
    v_provider text := i_provider_name;
    r record;
begin
    perform 1 from pgq_node.node_info where queue_name = i_queue_name;
    if found then
        select 401, 'Node already initialized' into ret_code, ret_note;
        return;
    end if;

    if i_node_type = 'root' then
        if coalesce(i_provider_name, i_global_watermark::text, i_combined_queue) is not null then
            select 401, 'unexpected args for root' into ret_code, ret_note;
            return;
        end if;
        perform pgq.create_queue(i_queue_name);
        perform pgq.register_consumer(i_queue_name, '.global_watermark');
        v_wm := pgq_node._consumer_tick(i_queue_name, '.global_watermark');
        v_provider := i_node_name;
    elsif i_node_type = 'branch' then
        if i_provider_name is null then
            select 401, 'provider not set for branch' into ret_code, ret_note;
            return;
        end if;
        if i_global_watermark is null then
            select 401, 'global watermark not set for branch' into ret_code, ret_note;
            return;
        end if;
        perform pgq.create_queue(i_queue_name);
        update pgq.queue set queue_external_ticker = true, queue_disable_insert = true
         where queue_name = i_queue_name;
        if i_global_watermark > 1 then
            perform pgq.ticker(i_queue_name, i_global_watermark, now(), 1);
        end if;
        perform pgq.register_consumer_at(i_queue_name, '.global_watermark', i_global_watermark);
    elsif i_node_type = 'leaf' then
        if i_combined_queue is not null then
            perform 1 from pgq.queue where queue_name = i_combined_queue;
            if not found then
                select 401, 'non-existing queue on leaf side: ' || i_combined_queue into ret_code, ret_note;
                return;
            end if;
        end if;
    else
        -- upstream quirk: reports the bad type but goes on; the CHECK constraint then raises
        select 401, 'bad node type: ' || coalesce(i_node_type, 'NULL') into ret_code, ret_note;
    end if;

    insert into pgq_node.node_info (queue_name, node_type, node_name, worker_name, combined_queue)
    values (i_queue_name, i_node_type, i_node_name, i_worker_name, i_combined_queue);

    select f.ret_code, f.ret_note into r
      from pgq_node.register_consumer(i_queue_name, i_worker_name, v_provider, v_wm) f;
    if r.ret_code <> 200 then
        select r.ret_code, r.ret_note into ret_code, ret_note;
        return;
    end if;

    select 200, 'Node "' || i_node_name || '" initialized for queue "' || i_queue_name
                || '" with type "' || i_node_type || '"' into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.drop_node(
    in i_queue_name text, in i_node_name text, out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Drop a node.  Run on every member: on the node itself it removes the whole local setup
-- (queue included); elsewhere it unsubscribes the node and forgets its location.
declare
    v_local text;
    v_provider text;
begin
    select n.node_name, s.provider_node into v_local, v_provider
      from pgq_node.node_info n
      left join pgq_node.local_state s on s.queue_name = n.queue_name and s.consumer_name = n.worker_name
     where n.queue_name = i_queue_name for update of n;
    if not found or v_local = i_node_name then
        delete from pgq_node.subscriber_info where queue_name = i_queue_name;
        delete from pgq_node.local_state where queue_name = i_queue_name;
        delete from pgq_node.node_info where queue_name = i_queue_name;
        perform 1 from pgq.queue where queue_name = i_queue_name;
        if found then
            perform pgq.drop_queue(i_queue_name, true);
        end if;
        delete from pgq_node.node_location where queue_name = i_queue_name and node_name <> i_node_name;
    elsif v_provider = i_node_name then
        select 405, 'Cannot drop provider node: ' || i_node_name into ret_code, ret_note;
        return;
    else
        perform pgq_node.unregister_subscriber(i_queue_name, i_node_name);
    end if;
    perform pgq_node.unregister_location(i_queue_name, i_node_name);
    select 200, 'Node dropped: ' || i_node_name into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.get_node_info(
    in i_queue_name text,
    out ret_code int4, out ret_note text, out node_type text, out node_name text,
    out global_watermark bigint, out local_watermark bigint,
    out provider_node text, out provider_location text,
    out combined_queue text, out combined_type text,
    out worker_name text, out worker_paused bool, out worker_uptodate bool, out worker_last_tick bigint,
    out node_attrs text, out target_for text[]) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- This node's view of the queue.  On the root, worker_last_tick is the newest tick.
declare
    r record;
begin
    select n.node_type, n.node_name, n.worker_name, n.combined_queue, n.node_attrs, c.node_type as ctype,
           w.provider_node, w.paused, w.uptodate, w.last_tick_id, l.node_location
      into r
      from pgq_node.node_info n
      left join pgq_node.node_info c on c.queue_name = n.combined_queue
      left join pgq_node.local_state w on w.queue_name = n.queue_name and w.consumer_name = n.worker_name
      left join pgq_node.node_location l on l.queue_name = w.queue_name and l.node_name = w.provider_node
     where n.queue_name = i_queue_name;
    if not found then
        select 404, 'Unknown queue: ' || coalesce(i_queue_name, 'NULL') into ret_code, ret_note;
        return;
    end if;
    ret_code := 100;
    ret_note := 'Ok';
    node_type := r.node_type;
    node_name := r.node_name;
    provider_node := r.provider_node;
    provider_location := r.node_location;
    combined_queue := r.combined_queue;
    combined_type := r.ctype;
    worker_name := r.worker_name;
    worker_paused := r.paused;
    worker_uptodate := r.uptodate;
    worker_last_tick := r.last_tick_id;
    node_attrs := r.node_attrs;
    if r.node_type in ('root', 'branch') then
        global_watermark := pgq_node._consumer_tick(i_queue_name, '.global_watermark');
        local_watermark := pgq_node._local_watermark(i_queue_name);
        if r.node_type = 'root' then
            worker_last_tick := pgq_node._queue_top(i_queue_name);
        end if;
    else
        local_watermark := r.last_tick_id;
    end if;
    target_for := array(select i.queue_name from pgq_node.node_info i
                         where i.combined_queue = i_queue_name order by i.queue_name);
    return;
end;
$$;

CREATE FUNCTION pgq_node.is_root_node(i_queue_name text) RETURNS bool
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
declare
    v_type text;
begin
    select node_type into v_type from pgq_node.node_info where queue_name = i_queue_name;
    if not found then
        raise exception 'queue does not exist: %', i_queue_name;
    end if;
    return v_type = 'root';
end;
$$;

CREATE FUNCTION pgq_node.is_leaf_node(i_queue_name text) RETURNS bool
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
declare
    v_type text;
begin
    select node_type into v_type from pgq_node.node_info where queue_name = i_queue_name;
    if not found then
        raise exception 'queue does not exist: %', i_queue_name;
    end if;
    return v_type = 'leaf';
end;
$$;

CREATE FUNCTION pgq_node.get_subscriber_info(
    in i_queue_name text, out node_name text, out worker_name text, out node_watermark int8) RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Nodes reading from this node, with the watermark each one published.
begin
    for node_name, worker_name, node_watermark in
        select s.subscriber_node, s.worker_name, pgq_node._consumer_tick(i_queue_name, s.watermark_name)
          from pgq_node.subscriber_info s
         where s.queue_name = i_queue_name
         order by 1
    loop
        return next;
    end loop;
    return;
end;
$$;

CREATE FUNCTION pgq_node.get_consumer_info(
    in i_queue_name text, out consumer_name text, out provider_node text, out last_tick_id int8,
    out paused boolean, out uptodate boolean, out cur_error text) RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Cascaded consumers that write to this node.
begin
    for consumer_name, provider_node, last_tick_id, paused, uptodate, cur_error in
        select s.consumer_name, s.provider_node, s.last_tick_id, s.paused, s.uptodate, s.cur_error
          from pgq_node.local_state s
         where s.queue_name = i_queue_name
         order by 1
    loop
        return next;
    end loop;
    return;
end;
$$;

CREATE FUNCTION pgq_node.demote_root(
    in i_queue_name text, in i_step int4, in i_new_provider text,
    out ret_code int4, out ret_note text, out last_tick int8) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Turn the root into a branch in three steps, each its own transaction:
-- 1 disable inserts (and the local ticker); 2 wait for writers, insert the last tick;
-- 3 become a branch reading from i_new_provider at that last tick.
declare
    v_type text;
    v_worker text;
    v_ok boolean;
    q record;
begin
    select node_type, worker_name into v_type, v_worker
      from pgq_node.node_info where queue_name = i_queue_name for update;
    if not found then
        select 404, 'Node not initialized for queue: ' || i_queue_name into ret_code, ret_note;
        return;
    end if;
    if v_type <> 'root' then
        select 301, 'Node not root' into ret_code, ret_note;
        return;
    end if;
    select * into q from pgq.queue where queue_name = i_queue_name for update;
    if i_step > 1 and not (q.queue_disable_insert and q.queue_external_ticker) then
        raise exception 'steps in wrong order';
    end if;

    if i_step = 1 then
        update pgq.queue set queue_disable_insert = true, queue_external_ticker = true
         where queue_name = i_queue_name;
        if not found then
            select 404, 'Huh, no queue?: ' || i_queue_name into ret_code, ret_note;
            return;
        end if;
        select 200, 'Step 1: Writing disabled for: ' || i_queue_name into ret_code, ret_note;
    elsif i_step = 2 then
        set local session_replication_role = 'replica';
        -- wait until every writer that got in before step 1 has finished
        execute 'lock table ' || pgq.quote_fqname(q.queue_data_pfx) || ' in exclusive mode';
        last_tick := nextval(q.queue_tick_seq::regclass);
        perform pgq.ticker(i_queue_name, last_tick, now(), nextval(q.queue_event_seq::regclass));
        select 200, 'Step 2: Inserted last tick: ' || i_queue_name into ret_code, ret_note;
    elsif i_step = 3 then
        last_tick := pgq_node._queue_top(i_queue_name);
        update pgq_node.node_info set node_type = 'branch' where queue_name = i_queue_name;
        update pgq_node.local_state
           set provider_node = i_new_provider, last_tick_id = last_tick, uptodate = false
         where queue_name = i_queue_name and consumer_name = v_worker;
        select 200, 'Step 3: Demoted root to branch: ' || i_queue_name into ret_code, ret_note;
    else
        raise exception 'incorrect step number';
    end if;
    return;
end;
$$;

CREATE FUNCTION pgq_node.promote_branch(
    in i_queue_name text, out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Make this branch the root: it ticks its queue itself and accepts inserts.
declare
    v_type text;
    v_name text;
    v_worker text;
    v_top bigint;
    q record;
begin
    select node_type, node_name, worker_name into v_type, v_name, v_worker
      from pgq_node.node_info where queue_name = i_queue_name for update;
    if not found then
        select 404, 'Node not initialized for queue: ' || i_queue_name into ret_code, ret_note;
        return;
    end if;
    if v_type <> 'branch' then
        select 301, 'Node not branch' into ret_code, ret_note;
        return;
    end if;
    select * into q from pgq.queue where queue_name = i_queue_name for update;
    update pgq.queue set queue_disable_insert = false, queue_external_ticker = false
     where queue_name = i_queue_name;
    v_top := pgq_node._queue_top(i_queue_name);
    perform pgq.seq_setval(q.queue_tick_seq, v_top);
    update pgq_node.node_info set node_type = 'root' where queue_name = i_queue_name;
    update pgq_node.local_state
       set provider_node = v_name, last_tick_id = v_top, uptodate = false
     where queue_name = i_queue_name and consumer_name = v_worker;
    select 200, 'Branch node promoted to root' into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.set_node_attrs(
    in i_queue_name text, in i_node_attrs text, out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Store urlencoded worker attributes (e.g. sync_watermark=n1,n2).
begin
    update pgq_node.node_info set node_attrs = i_node_attrs where queue_name = i_queue_name;
    if not found then
        select 404, 'Node not found' into ret_code, ret_note;
        return;
    end if;
    select 200, 'Node attributes updated' into ret_code, ret_note;
    return;
end;
$$;

-- ---------------------------------------------------------------------------------------
-- Provider side: called on the provider by subscriber workers and admin plans
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq_node.register_subscriber(
    in i_queue_name text, in i_remote_node_name text, in i_remote_worker_name text, in i_custom_tick_id int8,
    out ret_code int4, out ret_note text, out global_watermark bigint) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Subscribe a remote node here: its worker reads from i_custom_tick_id (default: the global
-- watermark) and its .<node>.watermark consumer pins what it still needs.
declare
    v_type text;
    v_wm_name text := '.' || i_remote_node_name || '.watermark';
begin
    select node_type into v_type from pgq_node.node_info where queue_name = i_queue_name for update;
    if not found then
        select 404, 'Unknown queue: ' || i_queue_name into ret_code, ret_note;
        return;
    end if;
    if v_type = 'leaf' then
        select 401, 'Cannot subscribe to leaf node' into ret_code, ret_note;
        return;
    end if;
    global_watermark := pgq_node._consumer_tick(i_queue_name, '.global_watermark');
    perform pgq.register_consumer_at(i_queue_name, v_wm_name, global_watermark);
    perform pgq.register_consumer_at(i_queue_name, i_remote_worker_name,
                                     coalesce(i_custom_tick_id, global_watermark));
    insert into pgq_node.subscriber_info (queue_name, subscriber_node, worker_name, watermark_name)
    values (i_queue_name, i_remote_node_name, i_remote_worker_name, v_wm_name);
    select 200, 'Subscriber registered: ' || i_remote_node_name into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.unregister_subscriber(
    in i_queue_name text, in i_remote_node_name text, out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
declare
    v_sub record;
begin
    select * into v_sub from pgq_node.subscriber_info
     where queue_name = i_queue_name and subscriber_node = i_remote_node_name for update;
    if not found then
        select 304, 'Subscriber not found' into ret_code, ret_note;
        return;
    end if;
    delete from pgq_node.subscriber_info
     where queue_name = i_queue_name and subscriber_node = i_remote_node_name;
    perform pgq.unregister_consumer(i_queue_name, v_sub.watermark_name);
    perform pgq.unregister_consumer(i_queue_name, v_sub.worker_name);
    select 200, 'Subscriber unregistered: ' || i_remote_node_name into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.set_subscriber_watermark(
    in i_queue_name text, in i_node_name text, in i_watermark bigint,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- A subscriber reports the lowest tick it and its subtree still need; never backwards.
declare
    v_wm_name text;
    v_cur bigint;
begin
    select watermark_name into v_wm_name from pgq_node.subscriber_info
     where queue_name = i_queue_name and subscriber_node = i_node_name for update;
    if not found then
        select 404, 'node ' || i_node_name || ' not subscribed to queue ' || i_queue_name into ret_code, ret_note;
        return;
    end if;
    v_cur := pgq_node._consumer_tick(i_queue_name, v_wm_name);
    if v_cur > i_watermark then
        select 405, 'watermark must not be moved backwards' into ret_code, ret_note;
        return;
    elsif v_cur = i_watermark then
        select 100, 'watermark already set' into ret_code, ret_note;
        return;
    end if;
    perform pgq.register_consumer_at(i_queue_name, v_wm_name, i_watermark);
    select 200, v_wm_name || ' set to ' || i_watermark into ret_code, ret_note;
    return;
end;
$$;

-- ---------------------------------------------------------------------------------------
-- Subscriber side: the node's own worker
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq_node.get_worker_state(
    in i_queue_name text,
    out ret_code int4, out ret_note text, out node_type text, out node_name text,
    out completed_tick bigint, out provider_node text, out provider_location text,
    out paused boolean, out uptodate boolean, out cur_error text, out worker_name text,
    out global_watermark bigint, out local_watermark bigint, out local_queue_top bigint,
    out combined_queue text, out combined_type text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Everything the node's worker needs for one loop iteration.
declare
    r record;
begin
    select n.node_type, n.node_name, n.worker_name, n.combined_queue into r
      from pgq_node.node_info n where n.queue_name = i_queue_name;
    if not found then
        select 404, 'Unknown queue: ' || i_queue_name into ret_code, ret_note;
        return;
    end if;
    node_type := r.node_type;
    node_name := r.node_name;
    worker_name := r.worker_name;
    combined_queue := r.combined_queue;
    select s.last_tick_id, s.provider_node, s.paused, s.uptodate, s.cur_error
      into completed_tick, provider_node, paused, uptodate, cur_error
      from pgq_node.local_state s
     where s.queue_name = i_queue_name and s.consumer_name = r.worker_name;
    if not found then
        select 404, 'Unknown consumer: ' || i_queue_name || '/' || r.worker_name into ret_code, ret_note;
        return;
    end if;
    select l.node_location into provider_location from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = provider_node;
    if not found then
        select 404, 'Unknown provider node: ' || i_queue_name || '/' || provider_node into ret_code, ret_note;
        return;
    end if;
    if r.combined_queue is not null then
        select c.node_type into combined_type from pgq_node.node_info c where c.queue_name = r.combined_queue;
        if not found then
            select 404, 'Combinde queue node not found: ' || r.combined_queue into ret_code, ret_note;
            return;
        end if;
    end if;
    if r.node_type in ('root', 'branch') then
        global_watermark := pgq_node._consumer_tick(i_queue_name, '.global_watermark');
        local_watermark := pgq_node._local_watermark(i_queue_name);
        local_queue_top := pgq_node._queue_top(i_queue_name);
    else
        local_watermark := completed_tick;
    end if;
    select 100, 'Ok' into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.set_global_watermark(
    in i_queue_name text, in i_watermark bigint, out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Root (i_watermark NULL): the local watermark becomes the global one and is published as
-- a pgq.global-watermark event.  Branch: apply the published value if the tick is here.
declare
    v_type text;
    v_worker text;
    v_wm bigint := i_watermark;
begin
    select node_type, worker_name into v_type, v_worker
      from pgq_node.node_info where queue_name = i_queue_name for update;
    if not found then
        select 404, 'Queue' || i_queue_name || ' not found' into ret_code, ret_note;
        return;
    end if;
    if v_type = 'root' then
        if v_wm is null then
            v_wm := pgq_node._local_watermark(i_queue_name);
            if v_wm is null then
                raise exception 'local_watermark=NULL from get_node_info()?';
            end if;
        end if;
        perform pgq.register_consumer_at(i_queue_name, '.global_watermark', v_wm);
        perform pgq.insert_event(i_queue_name, 'pgq.global-watermark', v_wm::text, i_queue_name,
                                 null, null, null);
        update pgq_node.local_state set last_tick_id = v_wm
         where queue_name = i_queue_name and consumer_name = v_worker;
        select 200, 'Global watermark set to ' || v_wm into ret_code, ret_note;
    elsif v_type = 'branch' then
        if v_wm is null then
            select 500, 'bad usage: wm=null on branch node' into ret_code, ret_note;
            return;
        end if;
        perform 1 from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
         where q.queue_name = i_queue_name and t.tick_id = v_wm;
        if not found then
            select 200, 'Skipping global watermark update to ' || v_wm into ret_code, ret_note;
            return;
        end if;
        perform pgq.register_consumer_at(i_queue_name, '.global_watermark', v_wm);
        select 200, 'Global watermark set to ' || v_wm into ret_code, ret_note;
    else
        select 100, 'Ignoring global watermark in leaf' into ret_code, ret_note;
    end if;
    return;
end;
$$;

CREATE FUNCTION pgq_node.set_partition_watermark(
    in i_combined_queue_name text, in i_part_queue_name text, in i_watermark bigint,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- On a combined branch: move the local merge-leaf worker of the part queue to the tick
-- the combined root reported (pgq.tick-id event), so a later failover finds it in place.
declare
    v_worker text;
begin
    select worker_name into v_worker from pgq_node.node_info
     where queue_name = i_part_queue_name and combined_queue = i_combined_queue_name for update;
    if not found then
        select 201, 'Part-queue does not exist' into ret_code, ret_note;
        return;
    end if;
    update pgq_node.local_state set last_tick_id = i_watermark
     where queue_name = i_part_queue_name and consumer_name = v_worker;
    if not found then
        select 401, 'Worker registration not found' into ret_code, ret_note;
        return;
    end if;
    select 200, 'Ok' into ret_code, ret_note;
    return;
end;
$$;

-- ---------------------------------------------------------------------------------------
-- Any cascaded consumer writing to this node
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq_node.register_consumer(
    in i_queue_name text, in i_consumer_name text, in i_provider_node text, in i_custom_tick_id int8,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Record a cascaded consumer that reads from i_provider_node and writes here.
begin
    perform 1 from pgq_node.node_info where queue_name = i_queue_name;
    if not found then
        select 404, 'Unknown queue: ' || i_queue_name into ret_code, ret_note;
        return;
    end if;
    update pgq_node.local_state
       set provider_node = i_provider_node, last_tick_id = coalesce(i_custom_tick_id, last_tick_id)
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if found then
        select 201, 'Consumer already registered: ' || i_queue_name || '/' || i_consumer_name into ret_code, ret_note;
        return;
    end if;
    insert into pgq_node.local_state (queue_name, consumer_name, provider_node, last_tick_id)
    values (i_queue_name, i_consumer_name, i_provider_node, i_custom_tick_id);
    select 200, 'Consumer ' || i_consumer_name || ' registered on queue ' || i_queue_name into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.unregister_consumer(
    in i_queue_name text, in i_consumer_name text, out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
begin
    perform 1 from pgq_node.node_info where queue_name = i_queue_name for update;
    if not found then
        select 404, 'Unknown queue: ' || i_queue_name into ret_code, ret_note;
        return;
    end if;
    delete from pgq_node.local_state where queue_name = i_queue_name and consumer_name = i_consumer_name;
    select 200, 'Consumer ' || i_consumer_name || ' unregistered from ' || i_queue_name into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.get_consumer_state(
    in i_queue_name text, in i_consumer_name text,
    out ret_code int4, out ret_note text, out node_type text, out node_name text,
    out completed_tick bigint, out provider_node text, out provider_location text,
    out paused boolean, out uptodate boolean, out cur_error text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
begin
    select n.node_type, n.node_name into node_type, node_name
      from pgq_node.node_info n where n.queue_name = i_queue_name;
    if not found then
        select 404, 'Unknown queue: ' || i_queue_name into ret_code, ret_note;
        return;
    end if;
    select s.last_tick_id, s.provider_node, s.paused, s.uptodate, s.cur_error
      into completed_tick, provider_node, paused, uptodate, cur_error
      from pgq_node.local_state s
     where s.queue_name = i_queue_name and s.consumer_name = i_consumer_name;
    if not found then
        select 404, 'Unknown consumer: ' || i_queue_name || '/' || i_consumer_name into ret_code, ret_note;
        return;
    end if;
    select l.node_location into provider_location from pgq_node.node_location l
     where l.queue_name = i_queue_name and l.node_name = provider_node;
    if not found then
        select 404, 'Unknown provider node: ' || i_queue_name || '/' || provider_node into ret_code, ret_note;
        return;
    end if;
    select 100, 'Ok' into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.change_consumer_provider(
    in i_queue_name text, in i_consumer_name text, in i_new_provider text,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
begin
    perform 1 from pgq_node.node_location where queue_name = i_queue_name and node_name = i_new_provider;
    if not found then
        select 404, 'New node not found: ' || i_new_provider into ret_code, ret_note;
        return;
    end if;
    update pgq_node.local_state set provider_node = i_new_provider, uptodate = false
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if not found then
        select 404, 'Unknown consumer: ' || i_queue_name || '/' || i_consumer_name into ret_code, ret_note;
        return;
    end if;
    select 200, 'Consumer provider node set to : ' || i_new_provider into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.set_consumer_uptodate(
    in i_queue_name text, in i_consumer_name text, in i_uptodate boolean,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
begin
    update pgq_node.local_state set uptodate = i_uptodate
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if found then
        select 200, 'Consumer uptodate = ' || i_uptodate::int4 into ret_code, ret_note;
    else
        select 404, 'Consumer not known: ' || i_queue_name || '/' || i_consumer_name into ret_code, ret_note;
    end if;
    return;
end;
$$;

CREATE FUNCTION pgq_node.set_consumer_paused(
    in i_queue_name text, in i_consumer_name text, in i_paused boolean,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Pause / resume a consumer; it acknowledges by setting uptodate again.
declare
    v_old boolean;
    v_word text := case when i_paused then 'paused' else 'resumed' end;
begin
    select paused into v_old from pgq_node.local_state
     where queue_name = i_queue_name and consumer_name = i_consumer_name for update;
    if not found then
        select 404, 'Unknown consumer: ' || i_consumer_name into ret_code, ret_note;
        return;
    end if;
    if v_old = i_paused then
        select 201, 'Consumer ' || i_consumer_name || ' already ' || v_word into ret_code, ret_note;
        return;
    end if;
    update pgq_node.local_state set paused = i_paused, uptodate = false
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    select 200, 'Consumer ' || i_consumer_name || ' tagged as ' || v_word into ret_code, ret_note;
    return;
end;
$$;

CREATE FUNCTION pgq_node.set_consumer_completed(
    in i_queue_name text, in i_consumer_name text, in i_tick_id int8,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- The consumer's position; call in the same transaction as the batch's effects.
begin
    update pgq_node.local_state set last_tick_id = i_tick_id, cur_error = null
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if found then
        select 100, 'Consumer ' || i_consumer_name || ' completed tick = ' || i_tick_id::text into ret_code, ret_note;
    else
        select 404, 'Consumer not known: ' || i_queue_name || '/' || i_consumer_name into ret_code, ret_note;
    end if;
    return;
end;
$$;

CREATE FUNCTION pgq_node.set_consumer_error(
    in i_queue_name text, in i_consumer_name text, in i_error_msg text,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
begin
    update pgq_node.local_state set cur_error = i_error_msg
     where queue_name = i_queue_name and consumer_name = i_consumer_name;
    if found then
        select 100, 'Consumer ' || i_consumer_name || ' error = ' || i_error_msg into ret_code, ret_note;
    else
        select 101, 'Consumer not known, ignoring: ' || i_queue_name || '/' || i_consumer_name into ret_code, ret_note;
    end if;
    return;
end;
$$;

-- ---------------------------------------------------------------------------------------
-- Maintenance
-- ---------------------------------------------------------------------------------------

CREATE FUNCTION pgq_node.maint_watermark(i_queue_name text) RETURNS int4
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Root only: republish the global watermark when it is 5 minutes old (pgqd calls it once).
declare
    v_lag interval;
begin
    perform 1 from pgq_node.node_info where queue_name = i_queue_name and node_type = 'root' for update;
    if not found then
        return 0;
    end if;
    select now() - t.tick_time into v_lag
      from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue
     where q.queue_name = i_queue_name
       and t.tick_id = pgq_node._consumer_tick(i_queue_name, '.global_watermark');
    if v_lag >= interval '5 minutes' then
        perform pgq_node.set_global_watermark(i_queue_name, null);
    end if;
    return 0;
end;
$$;

CREATE FUNCTION pgq_node.upgrade_schema() RETURNS int4
LANGUAGE sql AS $$ SELECT 0 $$;

CREATE FUNCTION pgq_node.version() RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT '3.5'::text $$;

-- ---------------------------------------------------------------------------------------
-- Permissions: as upstream grants.ini, where pgq's roles exist
-- ---------------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgq_node FROM public;
GRANT USAGE ON SCHEMA pgq_node TO public;
GRANT EXECUTE ON FUNCTION pgq_node.is_root_node(text), pgq_node.is_leaf_node(text), pgq_node.version()
    TO public;
DO $$
declare
    r record;
begin
    for r in
        select * from (values
            ('pgq_reader', 'get_consumer_info(text),get_consumer_state(text,text),get_queue_locations(text),get_node_info(text),get_subscriber_info(text),register_subscriber(text,text,text,int8),unregister_subscriber(text,text),set_subscriber_watermark(text,text,bigint)'),
            ('pgq_writer', 'get_consumer_info(text),get_consumer_state(text,text),get_queue_locations(text),get_node_info(text),get_subscriber_info(text),register_subscriber(text,text,text,int8),unregister_subscriber(text,text),set_subscriber_watermark(text,text,bigint),register_consumer(text,text,text,int8),unregister_consumer(text,text),change_consumer_provider(text,text,text),set_consumer_uptodate(text,text,boolean),set_consumer_paused(text,text,boolean),set_consumer_completed(text,text,int8),set_consumer_error(text,text,text)'),
            ('pgq_admin', 'get_consumer_info(text),get_consumer_state(text,text),get_queue_locations(text),get_node_info(text),get_subscriber_info(text),register_subscriber(text,text,text,int8),unregister_subscriber(text,text),set_subscriber_watermark(text,text,bigint),register_consumer(text,text,text,int8),unregister_consumer(text,text),change_consumer_provider(text,text,text),set_consumer_uptodate(text,text,boolean),set_consumer_paused(text,text,boolean),set_consumer_completed(text,text,int8),set_consumer_error(text,text,text),create_node(text,text,text,text,text,bigint,text),drop_node(text,text),demote_root(text,int4,text),promote_branch(text),set_node_attrs(text,text),get_worker_state(text),set_global_watermark(text,bigint),set_partition_watermark(text,text,bigint),register_location(text,text,text,boolean),unregister_location(text,text),upgrade_schema(),maint_watermark(text)')
        ) v(role_name, funcs)
    loop
        if exists (select 1 from pg_roles where rolname = r.role_name) then
            execute format('grant usage on schema pgq_node to %I', r.role_name);
            execute (select string_agg(format('grant execute on function pgq_node.%s to %I', f, r.role_name), '; ')
                       from regexp_split_to_table(r.funcs, ',(?![^(]*\))') f);
        end if;
    end loop;
end;
$$;
