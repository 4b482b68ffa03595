-- pgq_node: closer to pgq_node 3.5, statement by statement (issue 16; found and kept so by
-- tests/test_pgq_differential.py, which runs the same operations against CREATE EXTENSION
-- pgq_node in another database of the same server).
--
-- get_node_info: target_for is NULL (not '{}') when no combined queue names this one, and
-- always NULL on a leaf; the note for an unknown NULL queue name is NULL, as upstream's
-- 'Unknown queue: ' || NULL.

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
    select n.node_type, n.node_name, n.worker_name, n.combined_queue, n.node_attrs, c.node_type as ctype,
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
