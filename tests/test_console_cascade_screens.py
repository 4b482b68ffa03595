"""Console: snapshots of the cascade tree and of the plan walker before, during and after a
switchover (fixed data, fixed clock, fixed header), plus the plan walker's read-only mode
and cancelling a wait.

The tree is shown from fixed ``CascadeStatus`` values (two polls, so the highlights show).
"Before" is the engine's real switchover plan (``engine.cascade.ops``) for fixed nodes.
"During" / "after" run a rehearsal of the same steps through the real PlanRunner on a real
database: every statement is a SELECT of the fixed row the pgq_node call returns (so the
output is the same on every run), one step raises a NOTICE.  The real switchover on three
servers is in test_console_cascade.py.
"""

from __future__ import annotations

import json

import pytest

from console_host import FIXED_NOW, HostApp
from engine.cascade import ops
from engine.cascade.plan import Check, CheckResult, NodeRef, Plan, Ref, Statement, Step, Wait
from engine.cascade.status import CascadeStatus, NodeStatus
from engine.db import ConnSettings
from pgtt_tui.screens import plan as plan_screen
from pgtt_tui.screens.cascade import CascadeScreen
from pgtt_tui.screens.plan import PlanScreen

SNAP = ConnSettings(dsn="host=db.example port=5432 dbname=prod")  # snapshots that never connect


async def wait_for(pilot, cond, timeout: float = 20.0, what: str = "condition") -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ---- the tree ------------------------------------------------------------------------------

def node(name, node_type, provider, tick, **kw) -> NodeStatus:
    kw.setdefault("paused", False)
    return NodeStatus(name=name, location=f"host={name.lower()}.example dbname=app", node_type=node_type,
                      provider=provider, worker=f"{name}_worker", uptodate=True, last_tick=tick, **kw)


def fixed_status(second: bool) -> CascadeStatus:
    nodes = {
        "A": node("A", "root", "A", 1207, queue_top=1207, local_watermark=1190, global_watermark=1188,
                  ticker_lag=0.4, subscribers=["B", "D"], children=["B", "D"]),
        "B": node("B", "branch", "A", 1205, queue_top=1205, local_watermark=1199, global_watermark=1188,
                  ticker_lag=0.6, subscribers=["C"], children=["C"], paused=second),
        "C": node("C", "leaf", "B", 1205, local_watermark=1205,
                  cur_error="provider: connection refused" if second else None),
        "D": node("D", "leaf", "A", 1207, local_watermark=1207),
    }
    if second:
        nodes["D"] = NodeStatus(name="D", location="host=d.example dbname=app", reachable=False,
                                error="connection to server failed: Connection refused")
        nodes["A"].children = ["B"]
    for n in nodes.values():
        if n.last_tick is not None:
            n.lag_ticks = 1207 - n.last_tick
    return CascadeStatus("cq", nodes, "A")


class FixedCascade(CascadeScreen):
    POLLS = False

    def on_mount(self) -> None:
        super().on_mount()
        from pgtt_tui.screens.cascade import CascadeData

        self.show(CascadeData(fixed_status(False), ["cq"], SNAP.dsn))
        self.show(CascadeData(fixed_status(True), ["cq"], SNAP.dsn))


def test_snapshot_cascade_tree(snap_compare):
    app = HostApp(SNAP, FixedCascade, clock=lambda: FIXED_NOW)

    async def run_before(pilot) -> None:
        await pilot.pause()
        await pilot.press("j", "j")  # select C (its worker reports an error)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


async def test_tree_changes_async():
    app = HostApp(SNAP, FixedCascade, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        tree = screen.query_one("#topology")
        assert [name for _, name in tree.shape_of(screen.status)] == ["A", "B", "C", "D"]
        assert "✗ UNREACHABLE" in str(tree.node_of("D").label)
        assert "stopped answering" in str(tree.node_of("D").label)
        assert "‖ paused" in str(tree.node_of("B").label)
        assert "✗ error" in str(tree.node_of("C").label)
        assert tree.selected_name() == "A"  # the root is selected first
        await pilot.press("j", "j")
        assert tree.selected_name() == "C"
        assert "provider: connection refused" in screen.node_text(screen.status.nodes["C"])


# ---- the plan walker ----------------------------------------------------------------------

def fixed_switchover_plan() -> Plan:
    """The engine's real switchover plan for fixed nodes A (root) → B (branch) → C."""
    st = fixed_status(False)
    return ops.plan_takeover_from_status(st, "A", "B", wait_timeout=120.0)


def row(code: int, note: str, **extra) -> Statement:
    cols = ["%s AS ret_code", "%s AS ret_note"] + [f"%s AS {k}" for k in extra]
    return Statement("SELECT " + ", ".join(cols), (code, note, *extra.values()),
                     capture={k: k for k in extra})


def rehearsal_plan(dsn: str, stuck_wait: bool = False) -> Plan:
    """The switchover's steps as a rehearsal on one real database (fixed results)."""
    a, b = NodeRef("A", dsn), NodeRef("B", dsn)
    good = Check("A is root", lambda ctx: CheckResult.good("root"))
    caught_up = Wait("wait until B has completed tick :last_tick", b,
                     (lambda ctx: CheckResult.problem("at tick 1200, waiting for 1208")) if stuck_wait
                     else (lambda ctx: CheckResult.good("at tick 1208")), timeout=60, interval=0.1)
    steps = [
        Step("pause worker A_worker on A", a, [row(200, "Consumer A_worker tagged as paused")],
             undo="resume A_worker on A"),
        Step("demote step 1 on A: disable inserts", a, [row(200, "Step 1: Writing disabled for: cq")],
             checks=[good]),
        Step("demote step 2 on A: wait for writers, last tick", a,
             [Statement("DO $$ BEGIN RAISE NOTICE 'queue cq: waiting for writers done'; END $$"),
              row(200, "Step 2: Inserted last tick: cq", last_tick=1208)]),
        Step("B catches up to the last tick", b, wait=caught_up),
        Step("promote B to root", b, [row(200, "Branch node promoted to root")], irreversible=True),
        Step("register A as subscriber on B", b,
             [Statement("SELECT 200 AS ret_code, 'Subscriber registered: A' AS ret_note, %s AS tick",
                        (Ref("last_tick"),))]),
        Step("demote step 3 on A: become a branch of B", a, [row(200, "Step 3: Demoted root to branch: cq")]),
        Step("resume worker A_worker on A", a, [row(200, "Consumer A_worker tagged as resumed")]),
    ]
    return Plan("switchover: B takes over the root role from A (rehearsal)", "cq", [a, b], steps)


@pytest.fixture
def fixed_locations(monkeypatch):
    monkeypatch.setattr(plan_screen, "location_label", lambda location: "host=node.example dbname=app")


def test_snapshot_plan_before_switchover(snap_compare, fixed_locations):
    app = HostApp(SNAP, lambda: PlanScreen(fixed_switchover_plan()), clock=lambda: FIXED_NOW)
    assert snap_compare(app, terminal_size=(80, 24))


async def run_steps(pilot, screen: PlanScreen, count: int) -> None:
    for _ in range(count):
        i = screen.runner.next_step
        await pilot.press("n")
        if screen.plan.steps[i].irreversible:
            await wait_for(pilot, lambda: screen.app.screen is not screen)
            await pilot.press(*screen.plan.steps[i].node.name, "enter")
        await wait_for(pilot, lambda: screen.running is None and screen.states[i] in ("done", "warning", "failed"))
    await pilot.pause()


def test_snapshot_plan_during_switchover(snap_compare, fixed_locations, empty_dsn):
    app = HostApp(SNAP, lambda: PlanScreen(rehearsal_plan(empty_dsn)), clock=lambda: FIXED_NOW)

    async def run_before(pilot) -> None:
        await pilot.pause()
        await run_steps(pilot, app.screen, 3)
        await pilot.press("j")  # look at step 5 (the irreversible one) before running it
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshot_plan_after_switchover(snap_compare, fixed_locations, empty_dsn):
    app = HostApp(SNAP, lambda: PlanScreen(rehearsal_plan(empty_dsn)), clock=lambda: FIXED_NOW)

    async def run_before(pilot) -> None:
        await pilot.pause()
        await run_steps(pilot, app.screen, 8)
        assert app.screen.finished

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


async def test_plan_shows_results_notices_and_captured_values(empty_dsn, tmp_path):
    screen = PlanScreen(rehearsal_plan(empty_dsn), journal_dir=tmp_path)
    app = HostApp(ConnSettings(dsn=empty_dsn), lambda: screen)
    async with app.run_test(size=(80, 24)) as pilot:
        assert ":last_tick" in screen.step_text(5)  # not known before step 3 ran
        await run_steps(pilot, screen, 3)
        assert any("NOTICE: queue cq: waiting for writers done" in line for line in screen.output)
        assert any('"last_tick": 1208' in line for line in screen.output)
        assert "1208" in screen.step_text(5) and ":last_tick" not in screen.step_text(5)
        # the irreversible step: a wrong name does not run it
        await run_steps(pilot, screen, 1)
        await pilot.press("n")
        await wait_for(pilot, lambda: app.screen is not screen)
        await pilot.press(*"X", "enter")
        await pilot.pause()
        assert screen.states[4] == "pending" and app.screen is not screen
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
        assert screen.states[4] == "pending" and screen.runner.next_step == 4
        path = screen.save_journal(tmp_path / "j.json")
        entries = json.loads(path.read_text())["entries"]
        assert [e["node"] for e in entries] == ["A", "A", "A", "A"]
        assert all(e["ok"] and e["time"] for e in entries)


async def test_read_only_plan_can_be_viewed_not_run(empty_dsn):
    screen = PlanScreen(rehearsal_plan(empty_dsn))
    app = HostApp(ConnSettings(dsn=empty_dsn), lambda: screen, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert screen.runner.journal.entries == [] and screen.running is None
        assert screen.states == ["pending"] * 8
        assert screen.hint_text().startswith("READ-ONLY")
        await pilot.press("j", "j")
        assert "demote_root" not in screen.step_text(2)  # (rehearsal SQL) but the detail is shown
        assert "on node A" in screen.step_text(2)


async def test_stop_cancels_a_wait_and_reports_the_nodes(empty_dsn):
    screen = PlanScreen(rehearsal_plan(empty_dsn, stuck_wait=True))
    app = HostApp(ConnSettings(dsn=empty_dsn), lambda: screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await run_steps(pilot, screen, 3)
        await pilot.press("n")  # step 4 waits for a tick that never comes
        await wait_for(pilot, lambda: any("waiting" in line for line in screen.output))
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.running is None and screen.states[3] == "failed", timeout=10)
        assert any("canceled by the operator" in line for line in screen.output)
        assert screen.runner.next_step == 3  # nothing after the wait ran
        assert "to go back: step 1: resume A_worker on A" in "\n".join(screen.output)


# ---- NO_COLOR: every state is text + glyph ------------------------------------------------

def every_state(second: bool) -> CascadeStatus:
    st = fixed_status(second)
    st.nodes["E"] = node("E", "leaf" if second else "branch", "A", 1200, dead=second)
    st.nodes["F"] = NodeStatus(name="F", location="host=f.example dbname=app", provider=None)  # not set up
    st.nodes["A"].children.append("E")
    return st


class EveryStateCascade(CascadeScreen):
    POLLS = False

    def on_mount(self) -> None:
        super().on_mount()
        from pgtt_tui.screens.cascade import CascadeData

        self.show(CascadeData(every_state(False), ["cq"], SNAP.dsn))
        self.show(CascadeData(every_state(True), ["cq"], SNAP.dsn))


async def test_no_color_tree_shows_every_state_as_text_and_glyph(monkeypatch):
    import re

    monkeypatch.setenv("NO_COLOR", "1")
    app = HostApp(SNAP, EveryStateCascade, clock=lambda: FIXED_NOW)
    assert app.no_color
    async with app.run_test(size=(130, 30)) as pilot:
        await pilot.pause()
        tree = app.screen.query_one("#topology")
        label = {name: tree.node_of(name).label.plain for name in "ABCDEF"}
        assert "ROOT" in label["A"] and "▶ running" in label["A"]
        assert "branch" in label["B"] and "‖ paused" in label["B"]
        assert "leaf" in label["C"] and "✗ error" in label["C"]
        assert "✗ UNREACHABLE" in label["D"] and "✗ stopped answering" in label["D"]
        assert "✗DEAD" in label["E"] and "⚠ role: branch → leaf" in label["E"] and "✗ tagged dead" in label["E"]
        assert "? not set up" in label["F"]
        assert "-2" in label["C"]  # ticks behind the root, as a number
        svg = app.export_screenshot()
        for text in ("ROOT", "paused", "UNREACHABLE", "DEAD", "not&#160;set&#160;up", "error"):
            assert text in svg, text
        # and nothing is told by colour: every colour on the screen is a grey
        fills = set(re.findall(r'(?:fill|color)[:=]"?#([0-9a-fA-F]{6})', svg))
        # the window buttons the SVG export draws around the screen, and its default foreground
        fills -= {"ff5f57", "febc2e", "28c840", "c5c8c6"}
        assert fills
        coloured = sorted(f for f in fills if not f[0:2] == f[2:4] == f[4:6])
        assert not coloured, coloured
