"""Console: the remaining tree operations with keys against three real servers (issue 7).

A (root, server 1) → B (branch, server 2) → C (leaf, server 3, stores events in a sink), and a
second leaf D (server 2) under A; real workers, a producer inserting at the root all along; the
console is connected to the leaf C.  With keys only:

* change the provider of C from B to A (picked from the list), run to the end;
* tag B dead (`d`), then alive again (`a`): every reachable member records the flag, the tree
  shows it;
* drop the leaf D (`x`, its name typed for the irreversible step): the node is gone from its
  database, from every member's map and from the tree.

At the end every event the producer got a commit for is at C exactly once (by ev_id).
"""

from __future__ import annotations

import pytest

from console_host import HostApp
from engine.cascade import ops
from engine.cascade.status import collect_status
from engine.db import ConnSettings
from pgtt_tui.screens.cascade import CascadeScreen
from pgtt_tui.screens.plan import PlanScreen
from pgtt_tui.screens.prompts import PickScreen
from pgtt_tui.widgets.topology import TopologyTree
from tests.test_cascade_helpers import (QUEUE, Producer, WorkerProc, assert_exactly_once, completed, fast_ticks,
                                        final_tick, prepare_db, q, run_plan, sink_rows, wait_until)
from tests.test_console_cascade import open_plan, run_all_steps, select_node, wait_for

pytestmark = pytest.mark.timeout(150)


def dead_flags(dsn: str) -> dict[str, bool]:
    return dict(q(dsn, "SELECT node_name, dead FROM pgq_node.get_queue_locations(%s)", (QUEUE,)))


async def back_to_tree(pilot, app, cascade) -> None:
    await pilot.press("escape")
    await wait_for(pilot, lambda: app.screen is cascade, what="the tree again")


async def test_change_provider_tag_dead_alive_and_drop_with_keys(make_servers, tmp_path):
    servers = make_servers(3, synchronous_commit="on")
    a, b, c = (prepare_db(s) for s in servers)
    d = prepare_db(servers[1], db="leafd")
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    run_plan(ops.plan_create_leaf(QUEUE, "C", c, b))
    run_plan(ops.plan_create_leaf(QUEUE, "D", d, a))
    fast_ticks(a)
    fast_ticks(b)
    workers = {name: WorkerProc(dsn, tmp_path / f"w{name}.log", sink=name == "C")
               for name, dsn in (("A", a), ("B", b), ("C", c), ("D", d))}
    for w in workers.values():
        w.start()
    producer = Producer(a, rate=100)
    producer.start()
    app = HostApp(ConnSettings(dsn=c), lambda: CascadeScreen(journal_dir=tmp_path, wait_timeout=30), refresh=0.3)
    try:
        wait_until(lambda: len(sink_rows(c)) > 10, timeout=60, what="events flowing")
        async with app.run_test(size=(80, 24)) as pilot:
            cascade: CascadeScreen = app.screen
            tree = cascade.query_one(TopologyTree)
            await wait_for(pilot, lambda: cascade.status is not None and len(cascade.status.nodes) == 4,
                           what="the tree")

            # --- change provider of C: B -> A, to the end ---------------------------------------
            await select_node(pilot, tree, "C")
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, PickScreen), what="the provider list")
            assert [v for v, _ in app.screen.choices] == ["A"]  # B is the current one, D is a leaf
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=20, what="the plan")
            plan = app.screen
            assert plan.plan.title == "change provider of C to A"
            await run_all_steps(pilot, app, plan)
            assert plan.finished and all(s in ("done", "warning") for s in plan.states)
            await back_to_tree(pilot, app, cascade)
            st = collect_status(a, QUEUE)
            assert st.nodes["C"].provider == "A" and not st.nodes["C"].paused
            assert "C" not in st.nodes["B"].subscribers and "C" in st.nodes["A"].subscribers
            await wait_for(pilot, lambda: cascade.status.nodes["C"].provider == "A", what="C under A in the tree")
            assert [name for _, name in tree.shape_of(cascade.status)] == ["A", "B", "C", "D"]
            assert "⚠ provider: B → A" in str(tree.node_of("C").label)
            mark = max(producer.acked)
            wait_until(lambda: {str(n) for n in producer.acked if n <= mark} <= {p for _, p in sink_rows(c)},
                       what="C to get everything from its new provider")

            # --- tag B dead, then alive -------------------------------------------------------
            await select_node(pilot, tree, "B")
            plan = await open_plan(pilot, app, "d", "tag B dead")
            assert sorted(s.node.name for s in plan.plan.steps) == ["A", "C", "D"]
            await run_all_steps(pilot, app, plan)
            await back_to_tree(pilot, app, cascade)
            for dsn in (a, c, d):
                assert dead_flags(dsn)["B"] is True
            await wait_for(pilot, lambda: cascade.status.nodes["B"].dead, what="B shown dead")
            assert "✗DEAD" in str(tree.node_of("B").label)
            assert "✗ tagged dead" in str(tree.node_of("B").label)
            await select_node(pilot, tree, "B")
            plan = await open_plan(pilot, app, "a", "tag B alive")
            await run_all_steps(pilot, app, plan)
            await back_to_tree(pilot, app, cascade)
            for dsn in (a, c, d):
                assert dead_flags(dsn)["B"] is False
            await wait_for(pilot, lambda: not cascade.status.nodes["B"].dead, what="B shown alive")
            assert "✗DEAD" not in str(tree.node_of("B").label)

            # --- drop the leaf D ------------------------------------------------------------------
            workers["D"].stop()
            await select_node(pilot, tree, "D")
            plan = await open_plan(pilot, app, "x", "drop node D")
            assert [s.irreversible for s in plan.plan.steps if s.node.name == "D"] == [True]
            await run_all_steps(pilot, app, plan)  # types "D" for the irreversible step
            await back_to_tree(pilot, app, cascade)
            assert q(d, "SELECT ret_code FROM pgq_node.get_node_info(%s)", (QUEUE,))[0][0] == 404
            for dsn in (a, b, c):
                assert "D" not in dead_flags(dsn)
            assert "D" not in collect_status(a, QUEUE).nodes["A"].subscribers
            await wait_for(pilot, lambda: "D" not in cascade.status.nodes, what="D gone from the tree")
            assert [name for _, name in tree.shape_of(cascade.status)] == ["A", "B", "C"]
    finally:
        producer.stop()
    try:
        top = final_tick(a)
        wait_until(lambda: (completed(c) or 0) >= top, timeout=60, what="the leaf to reach the final tick")
        assert_exactly_once(sink_rows(c), {str(n) for n in producer.acked}, {str(n) for n in producer.uncertain})
    finally:
        for w in workers.values():
            w.stop()
