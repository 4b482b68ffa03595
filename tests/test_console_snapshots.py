"""SVG snapshots of every console screen on fixed data and a fixed clock.

Data: the demo samples plus engine.demo.load_history at NOW (fixed times); the clock and
the header's server line are injected, so nothing in a frame depends on when or where the
test runs. Update with ``pytest tests/test_console_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from console_host import settle

from engine import demo
from pgtt_tui.app import PgttApp
from pgtt_tui.dbaccess import ServerInfo

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)
SERVER = ServerInfo(where="db-host:5432/pgtt_demo", role="postgres", version="18.1")


@pytest.fixture
def demo_settings(settings, conn):
    demo.load_samples(conn)
    demo.load_history(conn, NOW)  # the engine row stays alive while `conn` is open
    return settings


def make(settings, view: str = "overview", **kw) -> PgttApp:
    return PgttApp(settings, refresh=60, clock=lambda: NOW, tz=timezone.utc, server=SERVER, start_view=view, **kw)


def test_overview(snap_compare, demo_settings):
    assert snap_compare(make(demo_settings), terminal_size=(120, 36), run_before=settle)


def test_overview_80x24(snap_compare, demo_settings):
    assert snap_compare(make(demo_settings), terminal_size=(80, 24), run_before=settle)


def test_chains(snap_compare, demo_settings):
    assert snap_compare(make(demo_settings, "chains"), terminal_size=(120, 36), run_before=settle)


def test_chains_read_only_80x24(snap_compare, demo_settings):
    assert snap_compare(make(demo_settings, "chains", read_only=True), terminal_size=(80, 24), run_before=settle)


def test_chain_detail(snap_compare, demo_settings):
    async def run_before(pilot):
        await settle(pilot)
        pilot.app.open_chain("hourly-report")
        await settle(pilot, lambda app: getattr(app.screen, "detail", None) is not None)

    assert snap_compare(make(demo_settings, "chains"), terminal_size=(120, 36), run_before=run_before)


def test_run_history(snap_compare, demo_settings):
    async def run_before(pilot):
        await settle(pilot)
        pilot.app.open_chain("flaky-import")
        await settle(pilot, lambda app: getattr(app.screen, "detail", None) is not None)
        await pilot.press("h")
        await settle(pilot, lambda app: getattr(app.screen, "history", None) is not None)

    assert snap_compare(make(demo_settings, "chains"), terminal_size=(120, 36), run_before=run_before)


def test_chain_editor(snap_compare, demo_settings):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause(0.2)
        editor = pilot.app.screen
        editor.query_one("#name").value = "nightly-export"
        editor.query_one("#run_at").value = "30 2 * * 1-5"
        editor.query_one("#params").text = '["2026-11"]\n{oops'
        await pilot.pause(0.2)

    assert snap_compare(make(demo_settings, "chains"), terminal_size=(100, 40), run_before=run_before)


def test_jobs(snap_compare, demo_settings):
    assert snap_compare(make(demo_settings, "jobs"), terminal_size=(120, 36), run_before=settle)


def test_onetime_jobs(snap_compare, demo_settings):
    async def run_before(pilot):
        await settle(pilot)
        pilot.app.screen.action_tab("onetime")
        await pilot.pause(0.2)

    assert snap_compare(make(demo_settings, "jobs"), terminal_size=(120, 36), run_before=run_before)


def test_sessions(snap_compare, demo_settings):
    assert snap_compare(make(demo_settings, "sessions"), terminal_size=(120, 36), run_before=settle)


def test_logs(snap_compare, demo_settings):
    async def run_before(pilot):
        await settle(pilot, lambda app: len(app.screen.query_one("#log").entries) > 0)

    assert snap_compare(make(demo_settings, "logs"), terminal_size=(120, 36), run_before=run_before)


def test_help(snap_compare, demo_settings):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.3)

    assert snap_compare(make(demo_settings, "chains"), terminal_size=(100, 30), run_before=run_before)
