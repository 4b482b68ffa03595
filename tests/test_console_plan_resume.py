"""Console: a half-run plan is never lost.  q (and ctrl+q, the palette's Quit) asks before
quitting with a half-run plan, ctrl+c does not quit; after quitting, the next console
finds the plan's record on disk, offers it, and continues from the next step after its
pre-checks ran.  Two real servers, real workers."""

from __future__ import annotations

import pytest

from console_host import HostApp
from engine.cascade import ops
from engine.cascade.plan_store import unfinished_plans
from engine.cascade.status import collect_status
from engine.db import ConnSettings
from pgtt_tui.screens.cascade import CascadeScreen
from pgtt_tui.screens.modals import ConfirmScreen
from pgtt_tui.screens.plan import PlanScreen
from pgtt_tui.screens.prompts import PickScreen
from pgtt_tui.widgets.topology import TopologyTree
from tests.test_cascade_helpers import QUEUE, WorkerProc, fast_ticks, prepare_db, run_plan
from tests.test_console_cascade import open_plan, run_all_steps, select_node, wait_for

pytestmark = pytest.mark.timeout(200)


async def test_quit_asks_with_a_half_run_plan_and_the_next_console_continues_it(make_servers, tmp_path):
    sa, sb = make_servers(2)
    a, b = prepare_db(sa), prepare_db(sb)
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    fast_ticks(a)
    workers = [WorkerProc(a, tmp_path / "wA.log"), WorkerProc(b, tmp_path / "wB.log")]
    for w in workers:
        w.start()
    try:
        app = HostApp(ConnSettings(dsn=b), lambda: CascadeScreen(journal_dir=tmp_path, wait_timeout=60),
                      refresh=0.3)
        async with app.run_test(size=(120, 36)) as pilot:
            cascade: CascadeScreen = app.screen
            await wait_for(pilot, lambda: cascade.status is not None and len(cascade.status.nodes) == 2,
                           what="the tree")
            await select_node(pilot, cascade.query_one(TopologyTree), "B")
            plan = await open_plan(pilot, app, "s", "switchover")
            for i in range(3):
                await pilot.press("n")
                await wait_for(pilot, lambda: plan.running is None and plan.states[i] != "pending",
                               timeout=60, what=f"step {i + 1}")
                assert plan.states[i] in ("done", "warning"), "\n".join(plan.output[-10:])
            record_id = plan.record_id()
            assert record_id is not None

            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the quit question")
            assert "half-run" in app.screen.title_text and record_id in app.screen.body
            await pilot.press("n")
            await wait_for(pilot, lambda: app.screen is plan, what="the plan again")
            await pilot.press("ctrl+c")
            await pilot.pause(0.2)
            assert app.is_running and app.screen is plan
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the quit question")
            await pilot.press("y")
        assert [r.id for r in unfinished_plans(QUEUE)] == [record_id]

        app2 = HostApp(ConnSettings(dsn=b), lambda: CascadeScreen(journal_dir=tmp_path, wait_timeout=60),
                       refresh=0.3)
        async with app2.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: isinstance(app2.screen, PickScreen), what="the offer")
            offer = app2.screen
            assert "Unfinished plan" in offer.title_text and "3 of" in offer.hint
            assert [v for v, _ in offer.choices] == ["show", "continue", "leave", "later"]
            await pilot.press("j", "enter")
            await wait_for(pilot, lambda: isinstance(app2.screen, PlanScreen), timeout=30, what="the resumed plan")
            resumed: PlanScreen = app2.screen
            assert resumed.runner.next_step == 3 and resumed.states[:3] == ["done"] * 3
            assert any("resumed:" in line for line in resumed.output)
            assert any("no pre-checks" in line for line in resumed.output)  # step 4 only waits
            await run_all_steps(pilot, app2, resumed)
        st = collect_status(a, QUEUE)
        assert st.root == "B" and st.nodes["A"].node_type == "branch"
        assert unfinished_plans(QUEUE) == []
    finally:
        for w in workers:
            w.stop()
