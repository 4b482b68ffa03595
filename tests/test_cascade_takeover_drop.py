"""Branch takeover, drop node and tag dead / alive on three separate servers, with a producer
inserting at the root throughout.

Topology: A (root, server 1) → B (branch, server 2) → D (branch, server 3) and C (leaf,
server 3, stores events in a sink); E (leaf, server 2) reads from A.

* D takes over branch B (§b.5 takeover_nonroot): D first moves to B's provider A, then B's
  other subscriber C and finally B itself read from D;
* B, now without subscribers, is dropped (its queue and node are gone, nobody knows it);
  a branch with subscribers is refused;
* D is tagged dead and alive again: every reachable member records it; the workers go on;
* the leaf E is dropped while events flow;
* at the leaf C every acknowledged event arrives exactly once (by ev_id).
"""

from __future__ import annotations

import pytest

from engine.cascade import ops
from engine.cascade.status import collect_status
from engine.errors import InputError
from tests.test_cascade_helpers import (QUEUE, Producer, WorkerProc, assert_exactly_once, completed, fast_ticks,
                                        final_tick, prepare_db, q, run_plan, sink_rows, wait_until)

pytestmark = pytest.mark.timeout(180)


def locations(dsn: str) -> dict[str, bool]:
    return dict(q(dsn, "SELECT node_name, dead FROM pgq_node.get_queue_locations(%s)", (QUEUE,)))


def subscribers(dsn: str) -> list[str]:
    return [r[0] for r in q(dsn, "SELECT node_name FROM pgq_node.get_subscriber_info(%s)", (QUEUE,))]


def node_gone(dsn: str) -> bool:
    info = q(dsn, "SELECT ret_code FROM pgq_node.get_node_info(%s)", (QUEUE,))[0][0]
    queue = q(dsn, "SELECT count(*) FROM pgq.queue WHERE queue_name = %s", (QUEUE,))[0][0]
    return info == 404 and queue == 0


def test_branch_takeover_then_drop_branch_and_leaf_and_tag_dead_alive(make_servers, tmp_path):
    servers = make_servers(3, synchronous_commit="on")
    a, b, d = (prepare_db(s) for s in servers)
    c = prepare_db(servers[2], db="leafc")
    e = prepare_db(servers[1], db="leafe")
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    run_plan(ops.plan_create_branch(QUEUE, "D", d, b))
    run_plan(ops.plan_create_leaf(QUEUE, "C", c, b))
    run_plan(ops.plan_create_leaf(QUEUE, "E", e, a))
    for dsn in (a, b, d):
        fast_ticks(dsn)
    workers = {name: WorkerProc(dsn, tmp_path / f"w{name}.log", sink=name == "C")
               for name, dsn in (("A", a), ("B", b), ("D", d), ("C", c), ("E", e))}
    for w in workers.values():
        w.start()
    producer = Producer(a)
    producer.start()
    try:
        wait_until(lambda: len(sink_rows(c)) > 20, timeout=60, what="events flowing to the leaf")
        with pytest.raises(InputError, match="still has subscribers"):
            ops.plan_drop_node(a, QUEUE, "B")

        # --- D takes over branch B --------------------------------------------------------------
        plan = ops.plan_takeover(a, QUEUE, "B", "D", wait_timeout=30)
        assert plan.title == "takeover: D takes the place of branch B"
        titles = [s.title for s in plan.steps]
        assert titles.index("switch D to provider A") < titles.index("switch C to provider D") \
            < titles.index("switch B to provider D")
        run_plan(plan)
        st = collect_status(a, QUEUE)
        assert (st.nodes["D"].provider, st.nodes["C"].provider, st.nodes["B"].provider) == ("A", "D", "D")
        assert sorted(subscribers(a)) == ["D", "E"] and sorted(subscribers(d)) == ["B", "C"]
        assert subscribers(b) == []
        mark = max(producer.acked)
        wait_until(lambda: {str(n) for n in producer.acked if n <= mark} <= {p for _, p in sink_rows(c)},
                   what="the leaf to get everything through D")

        # --- drop the branch B (its subscribers were moved by the takeover) ----------------------
        workers["B"].stop()
        plan = ops.plan_drop_node(a, QUEUE, "B")
        assert [s.irreversible for s in plan.steps if s.node.name == "B"] == [True]
        _, events, _ = run_plan(plan)
        assert sum(1 for ev in events if ev.kind == "verified") >= 4  # B itself + every other member
        assert node_gone(b)
        for dsn in (a, d, c, e):
            assert "B" not in locations(dsn) and "B" not in subscribers(dsn)
        st = collect_status(a, QUEUE)
        assert sorted(st.nodes) == ["A", "C", "D", "E"]

        # --- tag D dead, then alive --------------------------------------------------------------
        run_plan(ops.plan_tag(a, QUEUE, "D", True))
        for dsn in (a, c, e):
            assert locations(dsn)["D"] is True
        assert collect_status(c, QUEUE).nodes["D"].dead
        before = completed(c)
        wait_until(lambda: completed(c) > before + 2, what="the leaf to go on while D is tagged dead")
        run_plan(ops.plan_tag(c, QUEUE, "D", False))
        for dsn in (a, c, e):
            assert locations(dsn)["D"] is False
        assert not collect_status(a, QUEUE).nodes["D"].dead

        # --- drop the leaf E while events flow ---------------------------------------------------
        workers["E"].stop()
        run_plan(ops.plan_drop_node(a, QUEUE, "E"))
        assert q(e, "SELECT ret_code FROM pgq_node.get_node_info(%s)", (QUEUE,))[0][0] == 404
        assert "E" not in subscribers(a) and "E_worker" not in {
            r[0] for r in q(a, "SELECT consumer_name FROM pgq.get_consumer_info(%s)", (QUEUE,))}
        for dsn in (a, d, c):
            assert "E" not in locations(dsn)
        assert sorted(collect_status(a, QUEUE).nodes) == ["A", "C", "D"]
    finally:
        producer.stop()
    try:
        top = final_tick(a)
        wait_until(lambda: (completed(c) or 0) >= top, timeout=60, what="the leaf to reach the final tick")
        assert_exactly_once(sink_rows(c), {str(n) for n in producer.acked}, {str(n) for n in producer.uncertain})
    finally:
        for w in workers.values():
            w.stop()
