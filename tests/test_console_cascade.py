"""Console: the Cascade view and the plan walker against three real servers (issue 7).

One cascade A (root) → B (branch) → C (leaf, stores events in a sink table), real workers
(the ``pgtt-tui worker`` CLI), a producer inserting at the root all along.  Entirely with
keys: a switchover A → B, a change of provider stopped half-way (the nodes are where the
screen says), a failover to A after SIGKILL of B's server, and B resurrected as a branch once its
server is back.  At the end every event the
producer got a commit for is at the leaf exactly once (by ev_id)."""

from __future__ import annotations

import json
import time

import pytest

from console_host import HostApp
from engine.cascade import ops
from engine.cascade.status import collect_status
from engine.db import ConnSettings
from pgtt_tui.screens.cascade import CascadeScreen
from pgtt_tui.screens.modals import ConfirmScreen
from pgtt_tui.screens.plan import PlanScreen
from pgtt_tui.widgets.topology import TopologyTree
from tests.test_cascade_helpers import (QUEUE, Producer, WorkerProc, completed, fast_ticks, final_tick,
                                        prepare_db, q, root_top, run_plan, sink_rows, wait_until)

pytestmark = pytest.mark.timeout(200)


async def wait_for(pilot, cond, timeout: float = 30.0, what: str = "condition") -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def select_node(pilot, tree: TopologyTree, name: str) -> None:
    """Move the tree cursor with j (wrapping with g) until ``name`` is selected."""
    for _ in range(12):
        if tree.selected_name() == name:
            return
        if tree.cursor_line >= tree.last_line:
            await pilot.press("g")
        else:
            await pilot.press("j")
    raise AssertionError(f"could not select {name} with j (at {tree.selected_name()})")


async def open_plan(pilot, app, key: str, kind: str) -> PlanScreen:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=20, what=f"the {kind} plan")
    screen = app.screen
    assert kind in screen.plan.title
    return screen


async def run_all_steps(pilot, app, screen: PlanScreen) -> None:
    """One key per step; the irreversible one gets the node name typed."""
    n = len(screen.plan.steps)
    while not screen.finished:
        i = screen.runner.next_step
        assert i < n
        step = screen.plan.steps[i]
        await pilot.press("n")
        if step.irreversible:
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the typed confirmation")
            await pilot.press(*step.node.name)
            await pilot.press("enter")
        await wait_for(pilot, lambda: screen.running is None and screen.states[i] != "pending",
                       timeout=60, what=f"step {i + 1}")
        assert screen.states[i] in ("done", "warning"), "\n".join(screen.output[-15:])


def leaf_has_all(c, producer) -> bool:
    got = {int(d) for _, d in sink_rows(c)}
    return set(producer.acked) <= got


async def test_switchover_cancel_and_failover_with_keys(make_servers, tmp_path):
    servers = make_servers(3, synchronous_commit="on")
    a, b, c = (prepare_db(s) for s in servers)
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    run_plan(ops.plan_create_leaf(QUEUE, "C", c, b))
    fast_ticks(a)
    fast_ticks(b)
    workers = {"A": WorkerProc(a, tmp_path / "wA.log"), "B": WorkerProc(b, tmp_path / "wB.log"),
               "C": WorkerProc(c, tmp_path / "wC.log", sink=True)}
    for w in workers.values():
        w.start()
    producer = Producer(a, rate=100)
    producer.start()
    # the console is connected to the leaf: it stays reachable through everything below
    app = HostApp(ConnSettings(dsn=c), lambda: CascadeScreen(journal_dir=tmp_path, wait_timeout=30), refresh=0.3)
    try:
        wait_until(lambda: len(producer.acked) > 20 and q(c, "SELECT to_regclass('cascade_sink') IS NOT NULL")[0][0],
                   timeout=60, what="events flowing")
        async with app.run_test(size=(80, 24)) as pilot:
            cascade: CascadeScreen = app.screen
            tree = cascade.query_one(TopologyTree)
            await wait_for(pilot, lambda: cascade.status is not None and cascade.status.root == "A"
                           and len(cascade.status.nodes) == 3, what="the tree")
            assert [name for _, name in tree.shape_of(cascade.status)] == ["A", "B", "C"]

            # --- switchover A -> B ----------------------------------------------------------
            await select_node(pilot, tree, "B")
            plan = await open_plan(pilot, app, "s", "switchover")
            # before anything runs: every step's node and exact SQL are on screen
            assert "pgq_node.demote_root('cq', 1, 'B')" in plan.step_text(2)
            await run_all_steps(pilot, app, plan)
            producer.root_dsn = b
            await pilot.press("w")
            await pilot.press("enter")  # the proposed path in journal_dir
            await wait_for(pilot, lambda: plan.saved_to is not None, what="the journal file")
            journal = json.loads(plan.saved_to.read_text())
            assert any("promote_branch" in e["statement"] for e in journal["entries"])
            assert all(e["time"] and e["result"] for e in journal["entries"])
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is cascade)
            st = collect_status(c, QUEUE)
            assert st.root == "B" and st.nodes["A"].node_type == "branch" and st.nodes["A"].provider == "B"
            await wait_for(pilot, lambda: cascade.status.root == "B", what="the tree to show B as root")
            assert any("role: root → branch" in ch.text for ch in cascade.changes.get("A", []))
            assert "role: root → branch" in str(tree.node_of("A").label)

            # --- change provider of C, stopped half-way ---------------------------------------
            await select_node(pilot, tree, "C")
            await pilot.press("c")
            await pilot.press("enter")  # the only candidate: A
            await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), what="the change-provider plan")
            plan = app.screen
            assert "change provider of C to A" in plan.plan.title
            for i in range(2):  # pause C's worker, wait for the acknowledgement
                await pilot.press("n")
                await wait_for(pilot, lambda: plan.running is None and plan.states[i] != "pending", timeout=40)
            await pilot.press("s")
            await wait_for(pilot, lambda: bool(plan.node_states) and any("stopped before step 3" in line
                                                                          for line in plan.output))
            shown = plan.node_states["C"]
            assert "leaf, provider B" in shown and "PAUSED" in shown
            info = q(c, "SELECT node_type, provider_node, worker_paused FROM pgq_node.get_node_info(%s)", (QUEUE,))
            assert info == [("leaf", "B", True)]  # exactly what the screen says
            assert "provider B" in plan.node_states["A"] or "branch" in plan.node_states["A"]
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="leave confirmation")
            await pilot.press("y")
            await wait_for(pilot, lambda: app.screen is cascade)
            # resume C from the tree (p on a paused node resumes it)
            await wait_for(pilot, lambda: cascade.status.nodes["C"].paused is True, what="C shown paused")
            assert "‖ paused" in str(tree.node_of("C").label)
            await pilot.press("p")
            await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), what="the resume plan")
            plan = app.screen
            assert plan.plan.title.startswith("resume")
            await run_all_steps(pilot, app, plan)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is cascade)

            # --- failover: B's server dies; A takes over ----------------------------------------
            producer.root_dsn = a  # A is a branch now: inserts are refused (not acknowledged)
            time.sleep(0.3)  # let an insert already under way at B commit first
            top = final_tick(b)
            wait_until(lambda: (completed(a) or 0) >= top and (completed(c) or 0) >= top, timeout=60,
                       what="A and C to have everything B had")
            workers["B"].kill()
            servers[1].kill()
            await wait_for(pilot, lambda: not cascade.status.nodes["B"].reachable, what="B shown unreachable")
            assert "✗ UNREACHABLE" in str(tree.node_of("B").label)
            assert any("stopped answering" in ch.text for ch in cascade.changes.get("B", []))
            await select_node(pilot, tree, "A")
            plan = await open_plan(pilot, app, "f", "failover")
            assert plan.plan.title.startswith("failover: A becomes root, B is dead")
            await run_all_steps(pilot, app, plan)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is cascade)
            st = collect_status(c, QUEUE)
            assert st.root == "A" and st.nodes["B"].dead and st.nodes["C"].provider == "A"
            await wait_for(pilot, lambda: cascade.status.root == "A", what="the tree to show A as root")
            mark = max(producer.acked)
            wait_until(lambda: max(producer.acked) > mark + 20, what="inserts at the new root A")

            # --- resurrect: B's server is back; it rejoins as a branch of A -------------------
            servers[1].start()
            workers["B"].start()
            await wait_for(pilot, lambda: cascade.status.nodes["B"].reachable, what="B answering again")
            await select_node(pilot, tree, "B")
            await pilot.press("e")
            await pilot.press("enter")  # the proposed dump file in journal_dir
            await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=20, what="the resurrect plan")
            plan = app.screen
            assert plan.plan.title.startswith("resurrect B")
            await run_all_steps(pilot, app, plan)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is cascade)
            st = collect_status(c, QUEUE)
            assert st.nodes["B"].node_type == "branch" and st.nodes["B"].provider == "A" and not st.nodes["B"].dead
            dumps = list(tmp_path.glob("resurrect-B-*.json"))
            assert len(dumps) == 1
            lost = [e for e in json.loads(dumps[0].read_text())["events"] if e["ev_type"] == "data"]
            assert lost == []  # A had everything B had: nothing was cut off
    finally:
        producer.stop()
        for w in workers.values():
            w.stop()
    # no event lost, none duplicated: count at the leaf by ev_id
    workers["C"].start()
    workers["A"].start()
    try:
        top = final_tick(a)
        wait_until(lambda: (completed(c) or 0) >= top, timeout=60, what="the leaf to reach the final tick")
        rows = sink_rows(c)
        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)), "an ev_id arrived twice at the leaf"
        got = {int(r[1]) for r in rows}
        missing = set(producer.acked) - got
        assert not missing, f"lost events: {sorted(missing)[:20]}"
        assert len(producer.acked) > 50
    finally:
        for w in workers.values():
            w.stop()
    assert root_top(a) >= top
