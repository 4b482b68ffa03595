"""Console: branch takeover (`t`, SkyTools `takeover` on a branch) with keys.

* Three real servers: A (root, server 1) → B (branch, server 2) → C (branch, server 3) and
  L (leaf, server 3, stores events in a sink) under B; real workers, a producer inserting at
  the root all along, the console connected to the leaf.  From the Enter menu on C:
  "takeover" builds the engine's plan (C moves to A, then L and B move under C), every step
  is run with a key, the topology ends as A → C → {B, L}, and every event the producer got a
  commit for is at L exactly once (by ev_id).
* Refusals: the root cannot take over from itself, a branch of the root is told to use s
  (switchover) — both without asking the engine; what the engine refuses (a leaf taking
  over, a loop) is shown in its own words and no plan opens; in read-only mode the plan
  can be viewed, not run.
"""

from __future__ import annotations

import json

import pytest

from console_host import FIXED_NOW, HostApp
from engine.cascade import ops
from engine.cascade.status import collect_status
from engine.db import ConnSettings
from pgtt_tui.screens.cascade import CascadeData, CascadeScreen
from pgtt_tui.screens.plan import PlanScreen
from pgtt_tui.screens.prompts import PickScreen
from pgtt_tui.widgets.topology import TopologyTree
from tests.test_cascade_helpers import (QUEUE, Producer, WorkerProc, assert_exactly_once, completed, fast_ticks,
                                        final_tick, prepare_db, q, run_plan, sink_rows, wait_until)
from tests.test_console_cascade import run_all_steps, select_node, wait_for
from tests.test_console_cascade_screens import SNAP, fixed_status

pytestmark = pytest.mark.timeout(150)


def move(node: str, worker: str, new_provider: str, old_provider: str) -> list[str]:
    return [f"pause worker {worker} on {node}", f"worker {worker} on {node} acknowledged",
            f"register {node} as subscriber on {new_provider}", f"switch {node} to provider {new_provider}",
            f"resume worker {worker} on {node}", f"worker {worker} on {node} acknowledged",
            f"unregister {node} from its old provider {old_provider}"]


def subscribers(dsn: str) -> list[str]:
    return sorted(r[0] for r in q(dsn, "SELECT node_name FROM pgq_node.get_subscriber_info(%s)", (QUEUE,)))


def notified(app, text: str) -> bool:
    return any(text in n.message for n in app._notifications)


async def pick(pilot, app, value: str) -> None:
    """Choose ``value`` in the open PickScreen with j and Enter."""
    screen = app.screen
    assert isinstance(screen, PickScreen)
    await pilot.press(*["j"] * [v for v, _ in screen.choices].index(value))
    await pilot.press("enter")


def build_topology(servers) -> tuple[str, str, str, str]:
    """A → B → {C (branch), L (leaf)}; with one server every node is a database of it."""
    first, second, third = servers if len(servers) == 3 else servers * 3
    a = prepare_db(first, db="node_a")
    b = prepare_db(second, db="node_b")
    c = prepare_db(third, db="node_c")
    leaf = prepare_db(third, db="leaf_l")
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    run_plan(ops.plan_create_branch(QUEUE, "C", c, b))
    run_plan(ops.plan_create_leaf(QUEUE, "L", leaf, b))
    return a, b, c, leaf


async def test_takeover_from_the_menu_with_keys_moves_the_branch_and_loses_nothing(make_servers, tmp_path):
    servers = make_servers(3, synchronous_commit="on")
    a, b, c, leaf = build_topology(servers)
    for dsn in (a, b, c):
        fast_ticks(dsn)
    workers = {name: WorkerProc(dsn, tmp_path / f"w{name}.log", sink=name == "L")
               for name, dsn in (("A", a), ("B", b), ("C", c), ("L", leaf))}
    for w in workers.values():
        w.start()
    producer = Producer(a, rate=100)
    producer.start()
    app = HostApp(ConnSettings(dsn=leaf), lambda: CascadeScreen(journal_dir=tmp_path, wait_timeout=30),
                  refresh=0.3)
    try:
        wait_until(lambda: len(sink_rows(leaf)) > 10, timeout=60, what="events flowing")
        async with app.run_test(size=(80, 24)) as pilot:
            cascade: CascadeScreen = app.screen
            tree = cascade.query_one(TopologyTree)
            await wait_for(pilot, lambda: cascade.status is not None and len(cascade.status.nodes) == 4,
                           what="the tree")
            assert [name for _, name in tree.shape_of(cascade.status)] == ["A", "B", "C", "L"]

            await select_node(pilot, tree, "C")
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, PickScreen), what="the operations menu")
            labels = dict(app.screen.choices)
            assert labels["takeover"].startswith("t  takeover")
            await pick(pilot, app, "takeover")  # C's provider B is the only branch to take over: no question
            await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=20, what="the takeover plan")
            plan = app.screen
            assert plan.plan.title == "takeover: C takes the place of branch B"
            assert [s.title for s in plan.plan.steps] == (move("C", "C_worker", "A", "B")  # first out from under B
                                                          + move("L", "L_worker", "C", "B")  # B's subscriber
                                                          + move("B", "B_worker", "C", "A"))  # B itself
            # before anything runs: the node and exact SQL of a step are on screen
            assert "pgq_node.change_consumer_provider('cq', 'L_worker', 'C')" in plan.step_text(10)
            assert "on node L" in plan.step_text(10)
            await run_all_steps(pilot, app, plan)
            assert plan.finished and all(s in ("done", "warning") for s in plan.states)
            await pilot.press("w")
            await pilot.press("enter")  # the proposed path in journal_dir
            await wait_for(pilot, lambda: plan.saved_to is not None, what="the journal file")
            journal = json.loads(plan.saved_to.read_text())
            assert sum("change_consumer_provider" in e["statement"] for e in journal["entries"]) == 3
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is cascade, what="the tree again")

            st = collect_status(leaf, QUEUE)
            assert st.root == "A"
            assert {n: st.nodes[n].provider for n in "BCL"} == {"B": "C", "C": "A", "L": "C"}
            assert not any(st.nodes[n].paused for n in "ABCL")
            assert (subscribers(a), subscribers(b), subscribers(c)) == (["C"], [], ["B", "L"])
            await wait_for(pilot, lambda: cascade.status.nodes["B"].provider == "C", what="B under C in the tree")
            assert list(tree.shape_of(cascade.status)) == [(0, "A"), (1, "C"), (2, "B"), (2, "L")]
            mark = max(producer.acked)
            wait_until(lambda: {str(n) for n in producer.acked if n <= mark} <= {p for _, p in sink_rows(leaf)},
                       what="L to get everything through C")
    finally:
        producer.stop()
    try:
        top = final_tick(a)
        wait_until(lambda: (completed(leaf) or 0) >= top, timeout=60, what="the leaf to reach the final tick")
        assert_exactly_once(sink_rows(leaf), {str(n) for n in producer.acked}, {str(n) for n in producer.uncertain})
        assert len(producer.acked) > 50
    finally:
        for w in workers.values():
            w.stop()


# ---- refusals --------------------------------------------------------------------------------

class FixedCascade(CascadeScreen):
    """A (root) → B (branch) → C (leaf), D (leaf) under A; never polls, never connects."""

    POLLS = False

    def on_mount(self) -> None:
        super().on_mount()
        self.show(CascadeData(fixed_status(False), ["cq"], SNAP.dsn))


async def test_takeover_of_the_root_or_by_the_root_is_refused_without_the_engine():
    app = HostApp(SNAP, FixedCascade, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        cascade = app.screen
        tree = cascade.query_one(TopologyTree)

        await select_node(pilot, tree, "A")
        await pilot.press("t")
        await wait_for(pilot, lambda: notified(app, "A cannot take over from itself"), what="the refusal")

        await select_node(pilot, tree, "B")  # its provider is the root, no other branch
        await pilot.press("t")
        await wait_for(pilot, lambda: notified(app, "A is the root: to make B the root use s (switchover)"),
                       what="the refusal")

        await pilot.pause(0.2)
        assert app.screen is cascade
        assert not notified(app, "building the plan")  # the engine was not asked
        assert not [w for w in app.workers if w.group == "plan-build"]  # no plan is being built either


async def test_engine_refusals_are_shown_and_read_only_views_the_plan_without_running_it(make_servers):
    (server,) = make_servers(1)
    a, b, c, leaf = build_topology([server])

    app = HostApp(ConnSettings(dsn=leaf), lambda: CascadeScreen(wait_timeout=5), refresh=0.3)
    async with app.run_test(size=(80, 24)) as pilot:
        cascade: CascadeScreen = app.screen
        tree = cascade.query_one(TopologyTree)
        await wait_for(pilot, lambda: cascade.status is not None and len(cascade.status.nodes) == 4, what="the tree")

        await select_node(pilot, tree, "L")  # a leaf cannot take over: the engine's words
        await pilot.press("t")
        await wait_for(pilot, lambda: notified(app, "--node: L is leaf: only a branch can take over"),
                       what="the engine's refusal")

        await select_node(pilot, tree, "B")  # its provider is the root; C is the other branch: asked
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, PickScreen), what="which branch")
        assert [v for v, _ in app.screen.choices] == ["C"]
        assert "its provider A is the root" in app.screen.hint
        await pilot.press("enter")
        await wait_for(pilot, lambda: notified(app, "C reads (indirectly) from B: that would be a loop"),
                       what="the engine's refusal")
        await pilot.pause(0.2)
        assert app.screen is cascade

    # read-only: the valid takeover of B by C opens, its steps cannot be run
    app = HostApp(ConnSettings(dsn=leaf), lambda: CascadeScreen(wait_timeout=5), refresh=0.3, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        cascade = app.screen
        tree = cascade.query_one(TopologyTree)
        await wait_for(pilot, lambda: cascade.status is not None and len(cascade.status.nodes) == 4, what="the tree")
        await select_node(pilot, tree, "C")
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=20, what="the takeover plan")
        plan = app.screen
        assert plan.plan.title == "takeover: C takes the place of branch B"
        await pilot.press("n")
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert plan.states == ["pending"] * len(plan.plan.steps) and plan.runner.journal.entries == []
        assert plan.hint_text().startswith("READ-ONLY")
    st = collect_status(a, QUEUE)
    assert {n: st.nodes[n].provider for n in "BCL"} == {"B": "A", "C": "B", "L": "B"}
    assert not any(st.nodes[n].paused for n in "ABCL")
