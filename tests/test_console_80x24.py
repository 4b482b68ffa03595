"""At 80x24 the console carries the key facts: nothing an operator must read before pressing
a key is cut off for good.  What does not fit wraps, or opens in full with one key (v)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from console_host import FIXED_NOW, HostApp
from engine.db import ConnSettings
from pgtt_tui.screens.modals import TextScreen
from pgtt_tui.screens.plan import PlanScreen
from tests.test_console_cascade_screens import SNAP, fixed_switchover_plan, wait_for

pytestmark = pytest.mark.timeout(120)


def visible_text(app) -> str:
    """What the screen shows, as text (the screenshot's SVG without its markup)."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", app.export_screenshot())).replace("\xa0", " ")


async def test_plan_step_opens_in_full_with_v(fixed_locations):
    plan = fixed_switchover_plan()
    app = HostApp(SNAP, lambda: PlanScreen(plan), clock=lambda: FIXED_NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        longest = max(range(len(plan.steps)), key=lambda i: len(plan.steps[i].sql()))
        for _ in range(longest):
            await pilot.press("j")
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen), what="the step in full")
        text = app.screen.text
        for stmt in plan.steps[longest].statements:
            assert stmt.render() in text  # every statement, whole
        assert "v: step in full" in screen.hint_text()


@pytest.fixture
def fixed_locations(monkeypatch):
    from pgtt_tui.screens import plan as plan_screen

    monkeypatch.setattr(plan_screen, "location_label", lambda location: "host=node.example dbname=app")


async def test_a_failure_message_opens_in_full_with_v(settings, conn):
    """The run history cuts a long reason at 80 columns; v shows it whole."""
    from pgtt_tui.app import PgttApp
    from pgtt_tui.widgets.common import VimTable

    reason = "task 7 (extract) failed: division by zero — " + "x" * 120
    cid = conn.execute("INSERT INTO timetable.chain (chain_name, live) VALUES ('etl', true) RETURNING chain_id"
                       ).fetchone()[0]
    conn.execute("INSERT INTO timetable.chain_run (chain_id, trigger, client_name, session_id, started_at, "
                 "finished_at, status, reason) VALUES (%s, 'manual', 'n', 1, now() - interval '1 minute', now(), "
                 "'failed', %s)", (cid, reason))
    app = PgttApp(settings, refresh=0.3, start_view="chains")
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_chain("etl")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ChainDetailScreen" and app.screen.detail)
        await pilot.press("h")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunHistoryScreen"
                       and app.screen.query("VimTable") and app.screen.query(VimTable).first().row_count)
        app.screen.query(VimTable).first().focus()
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen), what="the row in full")
        assert reason in app.screen.text.replace("\n", "")


async def test_task_editor_save_button_is_on_screen_at_80x24(settings, conn):
    from textual.widgets import Button

    from pgtt_tui.app import PgttApp
    from pgtt_tui.screens.editors import TaskEditor

    conn.execute("INSERT INTO timetable.chain (chain_name) VALUES ('etl')")
    app = PgttApp(settings, refresh=0.3, start_view="chains")
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(TaskEditor("etl", None))
        await wait_for(pilot, lambda: app.screen.query("#save"))
        await pilot.pause(0.1)
        save = app.screen.query_one("#save", Button)
        region = save.region
        assert region.height > 0 and region.bottom <= 24 and region.y >= 0, region


async def test_ticker_and_state_words_are_not_cut(settings, conn):
    """⇄ external (a cascade's queue) and ⊘ canceled read whole at 80 columns."""
    from pgtt_tui.app import PgttApp
    from pgtt_tui.widgets.common import VimTable

    conn.execute("SELECT pgq.create_queue('orders')")
    app = PgttApp(settings, refresh=0.3, start_view="queues")
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#queues", VimTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        conn.execute("UPDATE pgq.queue SET queue_external_ticker = true WHERE queue_name = 'orders'")
        await wait_for(pilot, lambda: "external" in str(table.get_row_at(0)[1]))
        await pilot.pause(0.2)
        assert "⇄ external" in visible_text(app)


async def test_a_stopped_engine_reads_stopped_whole(settings, conn):
    from pgtt_tui.app import PgttApp
    from pgtt_tui.widgets.common import VimTable

    conn.execute("INSERT INTO pgtt.engine (client_name, backend_pid, host, version, stopped_at) "
                 "VALUES ('node-a', 1, 'h', 'v', now())")
    app = PgttApp(settings, refresh=0.3, start_view="sessions")
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#engines", VimTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        await pilot.pause(0.2)
        assert "■ stopped" in visible_text(app)


async def test_cascade_key_hint_wraps_instead_of_stopping_at_80(monkeypatch):
    from pgtt_tui.screens.cascade import CascadeScreen
    from tests.test_console_cascade_screens import FixedCascade

    app = HostApp(SNAP, FixedCascade, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        text = " ".join(visible_text(app).split())
        assert "x drop" in text and "e resurrect" in text
        assert isinstance(app.screen, CascadeScreen)


async def test_a_waiting_step_shows_its_progress_shrinking(empty_dsn):
    """The walker's wait line is live: how far behind, with a bar that fills as it shrinks."""
    from engine.cascade.plan import CheckResult, NodeRef, Plan, Step, Wait

    node = NodeRef("B", empty_dsn)
    polls = {"n": 0}
    seen: list[str] = []

    def catching_up(ctx) -> CheckResult:
        polls["n"] += 1
        behind = max(0, 6 - polls["n"])
        return CheckResult(behind == 0, f"at tick {100 + polls['n']}", behind=float(behind))

    wait = Wait("wait until B has completed tick 106", node, catching_up, timeout=30, interval=0.3)
    plan = Plan("catch up (test)", "cq", [node], [Step("B catches up", node, wait=wait)])
    screen = PlanScreen(plan)
    app = HostApp(ConnSettings(dsn=empty_dsn), lambda: screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        for _ in range(200):
            if screen.wait_line is not None:
                seen.append(str(screen.wait_line))
            if screen.running is None and screen.states[0] == "done":
                break
            await pilot.pause(0.05)
        assert screen.states[0] == "done"
        assert screen.wait_line is None  # gone once the wait is over
    bars = [line for line in seen if "behind (of" in line]
    assert any("4 behind (of 5)" in line for line in bars) and any("1 behind (of 5)" in line for line in bars)
    assert "[####################]" not in bars[0]  # it fills as the node catches up
