"""Merge-leaf end to end on three separate servers, and a plain cascaded consumer run by the
worker's ``--cascade-consumer`` path.

Two cascades with their own roots, R1 (queue ``p1``, server 1) and R2 (queue ``p2``,
server 2), each with a producer inserting throughout.  On server 3 the node M is the root of
the combined queue ``comb`` and a merge-leaf of ``p1`` and of ``p2`` (``create-leaf --merge
comb``): its workers copy every data event of both part queues into ``comb`` in the batch
transaction (plus a ``pgq.tick-id`` event).  A plain cascaded consumer ``sinker`` on M reads
``comb`` and stores the events in a table.  M's worker is SIGKILLed once mid-run.  At the end
every acknowledged event of both producers is in the sink exactly once.
"""

from __future__ import annotations

import time

import pytest
from psycopg import sql

from engine.cascade import ops
from engine.cascade.status import collect_status
from tests.test_cascade_helpers import (Producer, WorkerProc, assert_exactly_once, completed, fast_ticks, final_tick,
                                        prepare_db, q, run_plan, sink_rows, wait_until)

pytestmark = pytest.mark.timeout(180)
SINK = "merged"


def consumer_tick(dsn: str, queue: str, consumer: str) -> int | None:
    return q(dsn, "SELECT completed_tick FROM pgq_node.get_consumer_state(%s, %s)", (queue, consumer))[0][0]


def test_merge_leaf_two_roots_into_one_queue_and_plain_consumer(make_servers, tmp_path):
    servers = make_servers(3, synchronous_commit="on")
    r1, r2, m = (prepare_db(s) for s in servers)
    run_plan(ops.plan_create_root("comb", "M", m))
    run_plan(ops.plan_create_root("p1", "R1", r1))
    run_plan(ops.plan_create_root("p2", "R2", r2))
    plan = ops.plan_create_leaf("p1", "M", m, r1, merge="comb")
    assert "'leaf', 'M', 'M_worker', 'R1', :global_wm, 'comb'" in plan.render()
    run_plan(plan)
    run_plan(ops.plan_create_leaf("p2", "M", m, r2, merge="comb"))
    fast_ticks(r1, "p1")
    fast_ticks(r2, "p2")
    fast_ticks(m, "comb")
    info = q(m, "SELECT node_type, combined_queue, combined_type FROM pgq_node.get_worker_state(%s)", ("p1",))
    assert info == [("leaf", "comb", "root")]
    assert q(m, "SELECT target_for FROM pgq_node.get_node_info('comb')")[0][0] == ["p1", "p2"]

    plan = ops.plan_register_consumer(m, "comb", "sinker")
    assert [s.node.name for s in plan.steps] == ["M", "M"]
    run_plan(plan)
    assert q(m, "SELECT provider_node FROM pgq_node.get_consumer_state('comb', 'sinker')") == [("M",)]

    workers = {"R1": WorkerProc(r1, tmp_path / "wR1.log", queues=("p1",)),
               "R2": WorkerProc(r2, tmp_path / "wR2.log", queues=("p2",)),
               "M": WorkerProc(m, tmp_path / "wM.log", queues=("p1", "p2", "comb")),
               "sinker": WorkerProc(m, tmp_path / "wsinker.log", queues=("comb",), consumer="sinker", sink=SINK)}
    for w in workers.values():
        w.start()
    p1 = Producer(r1, queue="p1", prefix="p1:")
    p2 = Producer(r2, queue="p2", prefix="p2:")
    p1.start()
    p2.start()
    try:
        wait_until(lambda: {p[:2] for _, p in sink_rows(m, SINK)} == {"p1", "p2"} and len(sink_rows(m, SINK)) > 40,
                   timeout=60, what="events of both part queues in the sink")
        workers["M"].kill()  # mid-run: the merge copy and the position commit together
        time.sleep(0.3)
        workers["M"].start()
        mark1, mark2 = max(p1.acked), max(p2.acked)
        wait_until(lambda: max(p1.acked) > mark1 + 30 and max(p2.acked) > mark2 + 30, what="more inserts")
    finally:
        p1.stop()
        p2.stop()
    try:
        t1, t2 = final_tick(r1, "p1"), final_tick(r2, "p2")
        wait_until(lambda: completed(m, "p1") >= t1 and completed(m, "p2") >= t2, timeout=60,
                   what="the merge-leaf workers to reach the final ticks")
        tc = final_tick(m, "comb")
        wait_until(lambda: (consumer_tick(m, "comb", "sinker") or 0) >= tc, timeout=60,
                   what="the plain consumer to reach the final tick of comb")
        acked = {f"p1:{n}" for n in p1.acked} | {f"p2:{n}" for n in p2.acked}
        uncertain = {f"p1:{n}" for n in p1.uncertain} | {f"p2:{n}" for n in p2.uncertain}
        assert_exactly_once(sink_rows(m, SINK), acked, uncertain)
        # comb carries one pgq.tick-id event per merged part batch, naming the part queue
        pfx = q(m, "SELECT queue_data_pfx FROM pgq.queue WHERE queue_name = 'comb'")[0][0]
        schema, _, table = pfx.partition(".")
        tick_ids = dict(q(m, sql.SQL("SELECT ev_extra1, count(*) FROM {} WHERE ev_type = 'pgq.tick-id' "
                                     "GROUP BY 1").format(sql.Identifier(schema, table))))
        assert set(tick_ids) == {"p1", "p2"} and min(tick_ids.values()) > 5
        st = collect_status(m, "comb")
        assert st.root == "M" and st.nodes["M"].node_type == "root"
        # the merge-leaf published its position upstream (the provider keeps what it still needs)
        assert q(r1, "SELECT node_watermark FROM pgq_node.get_subscriber_info('p1')")[0][0] is not None
    finally:
        for w in workers.values():
            w.stop()
    plan = ops.plan_unregister_consumer(m, "comb", "sinker")
    run_plan(plan)
    assert q(m, "SELECT ret_code FROM pgq_node.get_consumer_state('comb', 'sinker')")[0][0] == 404
    assert q(m, "SELECT count(*) FROM pgq.get_consumer_info('comb') WHERE consumer_name = 'sinker'")[0][0] == 0
