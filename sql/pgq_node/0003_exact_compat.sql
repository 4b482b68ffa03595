-- pgq_node: closer to pgq_node 3.5, statement by statement (issue 16; found and kept so by
-- tests/test_pgq_differential.py, which runs the same operations against CREATE EXTENSION
-- pgq_node in another database of the same server).
--
-- get_node_info: target_for is NULL (not '{}') when no combined queue names this one, and
-- always NULL on a leaf; the note for an unknown NULL queue name is NULL, as upstream's
-- 'Unknown queue: ' || NULL; combined_queue is NULL when that queue has no node here.

CREATE OR REPLACE FUNCTION pgq_node.get_node_info(
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
    select n.node_type, n.node_name, n.worker_name, c.queue_name as combined_queue, n.node_attrs,
           c.node_type as ctype,
           w.provider_node, w.paused, w.uptodate, w.last_tick_id, l.node_location
      into r
      from pgq_node.node_info n
      left join pgq_node.node_info c on c.queue_name = n.combined_queue
      left join pgq_node.local_state w on w.queue_name = n.queue_name and w.consumer_name = n.worker_name
      left join pgq_node.node_location l on l.queue_name = w.queue_name and l.node_name = w.provider_node
     where n.queue_name = i_queue_name;
    if not found then
        select 404, 'Unknown queue: ' || i_queue_name into ret_code, ret_note;
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
        -- NULL, not an empty array, when no combined queue names this one
        select array_agg(i.queue_name order by i.queue_name) into target_for
          from pgq_node.node_info i where i.combined_queue = i_queue_name;
    else
        local_watermark := r.last_tick_id;
    end if;
    return;
end;
$$;

-- set_subscriber_watermark: like pgq_node 3.5, the subscriber is found by its pgq consumer
-- (.<node>.watermark) on the queue, not by its subscriber_info row; its 404 note ends in
-- "queue " without the queue name, as upstream's does.
CREATE OR REPLACE FUNCTION pgq_node.set_subscriber_watermark(
    in i_queue_name text, in i_node_name text, in i_watermark bigint,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
declare
    v_wm_name text := '.' || i_node_name || '.watermark';
    v_cur bigint;
begin
    select s.sub_last_tick into v_cur
      from pgq.subscription s
      join pgq.queue q on q.queue_id = s.sub_queue
      join pgq.consumer c on c.co_id = s.sub_consumer
     where q.queue_name = i_queue_name and c.co_name = v_wm_name;
    if not found then
        select 404, 'node ' || i_node_name || ' not subscribed to queue ' into ret_code, ret_note;
        return;
    end if;
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

-- set_partition_watermark: only a leaf part queue of a branch combined queue, as upstream.
CREATE OR REPLACE FUNCTION pgq_node.set_partition_watermark(
    in i_combined_queue_name text, in i_part_queue_name text, in i_watermark bigint,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- On a combined branch: move the local merge-leaf worker of the part queue to the tick
-- the combined root reported (pgq.tick-id event), so a later failover finds it in place.
declare
    v_worker text;
begin
    select p.worker_name into v_worker
      from pgq_node.node_info p
      join pgq_node.node_info c on c.queue_name = p.combined_queue
     where p.queue_name = i_part_queue_name and c.queue_name = i_combined_queue_name
       and p.node_type = 'leaf' and c.node_type = 'branch';
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

-- register_consumer: re-registering sets the position to the given tick, also to NULL
-- (which the table refuses, as upstream's does), instead of keeping the old one.
CREATE OR REPLACE FUNCTION pgq_node.register_consumer(
    in i_queue_name text, in i_consumer_name text, in i_provider_node text, in i_custom_tick_id int8,
    out ret_code int4, out ret_note text) RETURNS record
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
-- Record a cascaded consumer that reads from i_provider_node and writes here.
begin
    perform 1 from pgq_node.node_info where queue_name = i_queue_name for update;
    if not found then
        select 404, 'Unknown queue: ' || i_queue_name into ret_code, ret_note;
        return;
    end if;
    update pgq_node.local_state
       set provider_node = i_provider_node, last_tick_id = i_custom_tick_id
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

-- subscriber_info's worker and watermark names are pgq consumers, as upstream declares them:
-- unregistering a pgq consumer that a subscriber still names fails there as it does here.
-- NOT VALID: an existing installation's rows are not checked now (new rows and deletes of
-- consumers are).
ALTER TABLE pgq_node.subscriber_info
    ADD CONSTRAINT subscriber_info_worker_name_fkey FOREIGN KEY (worker_name) REFERENCES pgq.consumer (co_name)
        NOT VALID,
    ADD CONSTRAINT subscriber_info_watermark_name_fkey FOREIGN KEY (watermark_name) REFERENCES pgq.consumer (co_name)
        NOT VALID;
