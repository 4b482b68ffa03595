"""Charts of the console (issue 18): snapshots on the demo's fixed history at 120×36 and
80×24, Pilot tests that a new run appears after the next poll (appended, not redrawn),
and ``pgtt-tui chain stats``.

Data: engine.demo.load_trends + load_history at NOW (fixed times), a fixed clock and a
pinned header, as in test_console_snapshots.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from console_host import settle

from engine import demo
from engine.db import ConnSettings
from pgtt_tui.app import PgttApp
from pgtt_tui.dbaccess import ServerInfo
from pgtt_tui.widgets.charts import ActivityChart, RunChart, TimelineChart, bar_column
from test_cli_foundation import run_cli

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)
SERVER = ServerInfo(where="db-host:5432/pgtt_demo", role="postgres", version="18.1")


@pytest.fixture
def trend_settings(settings, conn):
    demo.load_samples(conn)
    demo.load_trends(conn, NOW)
    demo.load_history(conn, NOW)  # the engine row stays alive while `conn` is open
    return settings


def make(settings, view: str = "overview", **kw) -> PgttApp:
    return PgttApp(settings, refresh=60, clock=lambda: NOW, tz=timezone.utc, server=SERVER, start_view=view, **kw)


def open_chain(name: str):
    async def run_before(pilot):
        await settle(pilot)
        pilot.app.open_chain(name)
        await settle(pilot, lambda app: getattr(app.screen, "detail", None) is not None)
    return run_before


@pytest.mark.parametrize("size", [(120, 36), (80, 24)], ids=["120x36", "80x24"])
def test_snapshot_overview_activity(snap_compare, trend_settings, size):
    assert snap_compare(make(trend_settings), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", [(120, 36), (80, 24)], ids=["120x36", "80x24"])
def test_snapshot_chain_runs(snap_compare, trend_settings, size):
    assert snap_compare(make(trend_settings, "chains"), terminal_size=size, run_before=open_chain("slow-rollup"))


@pytest.mark.parametrize("size", [(120, 36), (80, 24)], ids=["120x36", "80x24"])
def test_snapshot_sessions_timeline(snap_compare, trend_settings, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("t")  # by chain / job: several lanes
        await pilot.pause(0.2)

    assert snap_compare(make(trend_settings, "sessions"), terminal_size=size, run_before=run_before)


def test_failures_differ_by_shape_not_only_colour():
    col = bar_column(2, [(1, "▒", "$error"), (1, "█", "$success")], 2)
    assert [g for g, _ in col] == ["▒", "█"]


async def _poll(pilot) -> None:
    pilot.app.screen.request_poll()
    await pilot.pause(0.1)
    await settle(pilot)


async def test_new_failure_appears_in_the_overview_after_the_next_poll(trend_settings, conn):
    app = make(trend_settings)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        chart = app.screen.query_one(ActivityChart)
        assert len(chart.buckets) == 60
        first = list(chart.buckets)
        drawn = chart.renders
        conn.execute("INSERT INTO timetable.chain_run (chain_id, trigger, client_name, session_id, started_at, "
                     "finished_at, status) SELECT chain_id, 'manual', 'node-a', 1, %s, %s, 'failed' "
                     "FROM timetable.chain WHERE chain_name = 'heartbeat'", (NOW, NOW))
        await _poll(pilot)
        assert chart.buckets[-1]["failed"] == first[-1]["failed"] + 1
        assert chart.buckets[:-1] == first[:-1]  # the older buckets were not read again
        assert app.screen.last_data["activity"]["since"] == first[-1]["at"]
        assert chart.renders - drawn <= 2  # only the changed column was drawn again


async def test_new_run_appears_in_the_chain_chart_after_the_next_poll(trend_settings, conn):
    app = make(trend_settings, "chains")
    async with app.run_test(size=(120, 36)) as pilot:
        await open_chain("flaky-import")(pilot)
        chart = app.screen.query_one(RunChart)
        before = [r["run_id"] for r in chart.runs]
        run_id = conn.execute(
            "INSERT INTO timetable.chain_run (chain_id, due_at, trigger, client_name, session_id, started_at, "
            "finished_at, status, reason) SELECT chain_id, %s, 'every', 'node-a', 1, %s, %s, 'failed', 'boom' "
            "FROM timetable.chain WHERE chain_name = 'flaky-import' RETURNING run_id",
            (NOW - timedelta(seconds=20), NOW - timedelta(seconds=19), NOW)).fetchone()[0]
        await _poll(pilot)
        assert [r["run_id"] for r in chart.runs] == (before + [run_id])[-len(chart.runs):]
        assert chart.runs[-1]["status"] == "failed" and chart.runs[-1]["lag"] == pytest.approx(1.0)
        assert all(r["run_id"] >= before[-1] for r in app.screen.last_data["run_stats"]["runs"])


async def test_running_run_grows_in_the_timeline(trend_settings, conn):
    app = make(trend_settings, "sessions")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        chart = app.screen.query_one(TimelineChart)
        conn.execute("INSERT INTO timetable.chain_run (chain_id, trigger, client_name, session_id, started_at, "
                     "status) SELECT chain_id, 'manual', 'node-b', 1, %s, 'running' "
                     "FROM timetable.chain WHERE chain_name = 'heartbeat'", (NOW - timedelta(minutes=3),))
        await _poll(pilot)
        assert "node-b" in chart.groups()
        assert "▶" in str(chart.render())


def test_cli_chain_stats(trend_settings, dsn):
    text = run_cli("chain", "stats", "flaky-import", "--dsn", dsn, "--runs", "10")
    assert text.returncode == 0, text.stderr
    assert "duration  p50" in text.stdout and " x" in text.stdout and "failed" in text.stdout
    js = run_cli("chain", "stats", "flaky-import", "--dsn", dsn, "--runs", "10", "--json")
    data = json.loads(js.stdout)
    assert len(data["runs"]) == 10 and data["summary"]["duration"]["max"] >= data["summary"]["duration"]["p50"]
    missing = run_cli("chain", "stats", "no-such", "--dsn", dsn)
    assert missing.returncode != 0 and "does not exist" in missing.stderr


# ---- queues: events per second and consumer lag (stored samples, or sampled live) -------------

from console_host import FIXED_NOW, HostApp  # noqa: E402
from engine.views import trends  # noqa: E402
from engine.pgq import api as pgq_api  # noqa: E402
from pgtt_tui.screens.queues import QueuesScreen  # noqa: E402
from pgtt_tui.widgets.charts import TrendChart  # noqa: E402
from pgtt_tui.widgets.common import VimTable  # noqa: E402
from test_console_queues import SNAP_SETTINGS, fixed_snapshot  # noqa: E402


def stored_queue_snapshot(conn):
    demo.load_queue_samples(conn, FIXED_NOW)
    snap = fixed_snapshot()
    snap.trends = trends.queue_trends(conn, FIXED_NOW)
    return snap


@pytest.mark.parametrize("size", [(120, 36), (80, 24)], ids=["120x36", "80x24"])
def test_snapshot_queue_trend(snap_compare, conn, size):
    snap = stored_queue_snapshot(conn)

    class Fixed(QueuesScreen):
        POLLS = False

        def on_mount(self) -> None:
            super().on_mount()
            self.last_data = snap
            self.show(snap)

    app = HostApp(SNAP_SETTINGS, Fixed, clock=lambda: FIXED_NOW)

    async def run_before(pilot) -> None:
        await pilot.pause()
        app.screen.query_one("#queues", VimTable).move_cursor(row=1)  # orders
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_growing_lag_is_told_by_shape(conn):
    snap = stored_queue_snapshot(conn)
    series = snap.trends["series"]
    assert trends.trend([b["lag"] for b in series[("orders", "mailer")]]) == "up"
    assert trends.trend([b["lag"] for b in series[("orders", "billing")]]) == "flat"


@pytest.fixture
def queue_settings(settings, conn):
    pgq_api.create_queue(conn, "orders")
    pgq_api.register(conn, "orders", "billing")
    pgq_api.register(conn, "orders", "mailer")
    demo.load_queue_samples(conn, NOW)
    return settings


async def test_new_queue_sample_appears_after_the_next_poll(queue_settings, conn):
    clock = [NOW]
    app = PgttApp(queue_settings, refresh=60, clock=lambda: clock[0], tz=timezone.utc, server=SERVER,
                  start_view="queues")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        screen = app.screen
        chart = screen.query_one(TrendChart)
        assert "orders" in screen.stored_queues
        before = {k: list(v) for k, v in chart.series.items()}
        assert len(before[("orders", "mailer")]) == 60
        assert chart.direction(next(r for r in chart.rows if r.label == "mailer")) == "up"
        assert "▲ growing" in str(chart.render())
        # the ticker's next sample, in the next bucket (30 s): appended, the older ones not read again
        clock[0] = NOW + timedelta(seconds=40)
        conn.execute("INSERT INTO pgtt.queue_sample (queue_name, consumer_name, sampled_at, lag_s) "
                     "VALUES ('orders', 'mailer', %s, 999)", (NOW + timedelta(seconds=35),))
        await _poll(pilot)
        after = chart.series[("orders", "mailer")]
        assert after[-1]["lag"] == 999.0 and after[-1]["at"] == NOW + timedelta(seconds=30)
        assert after[:-1] == before[("orders", "mailer")][1:]  # one bucket in, the oldest out
        assert screen.last_data.trends["since"] == before[("orders", "mailer")][-1]["at"]


async def test_queue_without_stored_samples_is_sampled_live(settings, conn):
    pgq_api.create_queue(conn, "audit")
    pgq_api.register(conn, "audit", "archiver")
    app = make(settings, "queues")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        screen = app.screen
        chart = screen.query_one(TrendChart)
        assert screen.stored_queues == set() and ("audit", "archiver") in chart.series
        assert "live" in chart.note and "sampled here since" in chart.note
        assert len([b for b in chart.series[("audit", "archiver")] if b["lag"] is not None]) == 1


# ---- cascade: each node's lag behind the root (stored samples, a catch-up going to zero) -------

from engine.cascade.status import collect_status  # noqa: E402
from pgtt_tui.screens.cascade import CascadeData, CascadeScreen  # noqa: E402
from test_console_cascade_screens import SNAP as CASCADE_SNAP  # noqa: E402
from test_console_cascade_screens import fixed_status  # noqa: E402


def stored_cascade_status(conn):
    """The fixed four-node status with fixed samples: A the root, B caught up after a pause
    (its curve goes back to zero), C and D steady."""
    for node, shape in (("A", "root"), ("B", "catchup"), ("C", "steady"), ("D", "steady")):
        demo.load_cascade_samples(conn, FIXED_NOW, "cq", node, shape)
    status = fixed_status(False)
    read = trends.cascade_lag(conn, "cq", FIXED_NOW)
    status.lag = {"A": read}  # one database holds all four here; the view merges by node name
    return status


@pytest.mark.parametrize("size", [(120, 36), (80, 24)], ids=["120x36", "80x24"])
def test_snapshot_cascade_lag(snap_compare, conn, size):
    status = stored_cascade_status(conn)

    class Fixed(CascadeScreen):
        POLLS = False

        def on_mount(self) -> None:
            super().on_mount()
            self.show(CascadeData(status, ["cq"], CASCADE_SNAP.dsn))

    app = HostApp(CASCADE_SNAP, Fixed, clock=lambda: FIXED_NOW)

    async def run_before(pilot) -> None:
        await pilot.pause()
        await pilot.press("j")  # B
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)


def test_catch_up_curve_goes_to_zero(conn):
    status = stored_cascade_status(conn)
    lag = [b["lag"] for b in status.lag["A"]["series"]["B"]]
    assert max(v for v in lag if v is not None) > 400 and lag[-1] < 5
    assert trends.trend(lag[:35]) == "up" and trends.trend(lag[:46]) == "down"


async def test_new_cascade_sample_appears_after_the_next_poll(make_db, conn):
    from engine.cascade import ops
    from tests.test_cascade_helpers import run_plan

    a, b = make_db(("pgq_node",)), make_db(("pgq_node",))
    run_plan(ops.plan_create_root("cq", "A", a))
    run_plan(ops.plan_create_branch("cq", "B", b, a))
    with psycopg.connect(b, autocommit=True) as cb:
        demo.load_cascade_samples(cb, NOW, "cq", "B", "catchup")
    clock = [NOW]
    app = PgttApp(ConnSettings(dsn=a), refresh=60, clock=lambda: clock[0], tz=timezone.utc, server=SERVER,
                  start_view="cascade")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot, lambda app: getattr(app.screen, "status", None) is not None)
        screen = app.screen
        chart = screen.query_one("#lag", TrendChart)
        assert screen.stored_nodes == {"B"} and len(chart.series["B"]) == 60
        assert "live for A" in chart.note  # A's worker never ran: sampled by the console
        before = list(chart.series["B"])
        clock[0] = NOW + timedelta(seconds=40)
        with psycopg.connect(b, autocommit=True) as cb:
            cb.execute("INSERT INTO pgtt.cascade_sample (queue_name, node_name, sampled_at, lag_s) "
                       "VALUES ('cq', 'B', %s, 77)", (NOW + timedelta(seconds=35),))
        await _poll(pilot)
        after = chart.series["B"]
        assert after[-1]["lag"] == 77.0 and after[:-1] == before[1:]
