"""Console: the Queues view (issue 7) — Pilot tests against a real database, and a
snapshot with fixed data."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from console_host import FIXED_NOW, HostApp
from engine.db import ConnSettings
from engine.pgq import api as pgq_api
from engine.views.queues import QueuesSnapshot
from pgtt_tui.screens.queues import EventsScreen, QueuesScreen
from pgtt_tui.widgets.common import VimTable


async def wait_for(pilot, cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def qdsn(make_db):
    dsn = make_db(("pgq",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        pgq_api.create_queue(conn, "orders")
        pgq_api.create_queue(conn, "audit")
        pgq_api.register(conn, "orders", "billing")
        pgq_api.register(conn, "orders", "mailer")
        for i in range(120):
            pgq_api.insert_event(conn, "orders", "order", f"id={i}")
        conn.execute("SELECT pgq.ticker()")
    return dsn


def cells(table: VimTable) -> dict[str, list]:
    return {rk.value: [str(c) for c in table.get_row(rk)] for rk in table.rows}


async def test_queues_view_shows_queues_and_consumers(qdsn):
    app = HostApp(ConnSettings(dsn=qdsn), QueuesScreen)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        queues = screen.query_one("#queues", VimTable)
        await wait_for(pilot, lambda: queues.row_count == 2)
        rows = cells(queues)
        assert set(rows) == {"orders", "audit"}
        assert rows["orders"][1] == "▶ ticking"
        assert rows["orders"][6].startswith("t1/3")  # rotation: current table of 3
        screen.query_one("#queues", VimTable).move_cursor(row=list(rows).index("orders"))
        consumers = screen.query_one("#consumers", VimTable)
        await wait_for(pilot, lambda: consumers.row_count == 2)
        names = [r[0] for r in cells(consumers).values()]
        assert names == ["billing", "mailer"]


async def test_register_unregister_and_ticker_pause_with_keys(qdsn):
    app = HostApp(ConnSettings(dsn=qdsn), QueuesScreen)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        queues = screen.query_one("#queues", VimTable)
        await wait_for(pilot, lambda: queues.row_count == 2)
        queues.move_cursor(row=[rk.value for rk in queues.rows].index("orders"))
        await pilot.pause()
        # register
        await pilot.press("a")
        await pilot.press(*"reports")
        await pilot.press("enter")
        with psycopg.connect(qdsn, autocommit=True) as conn:
            await wait_for(pilot, lambda: any(c.consumer_name == "reports" for c in pgq_api.consumers(conn, "orders")))
        consumers = screen.query_one("#consumers", VimTable)
        await wait_for(pilot, lambda: consumers.row_count == 3)
        # unregister: Tab to the consumers, pick "mailer", type its name to confirm
        await pilot.press("tab")
        consumers.move_cursor(row=[rk.value for rk in consumers.rows].index("orders\x1fmailer"))
        await pilot.press("u")
        await pilot.press(*"mailer")
        await pilot.press("enter")
        with psycopg.connect(qdsn, autocommit=True) as conn:
            await wait_for(pilot, lambda: not any(c.consumer_name == "mailer"
                                                  for c in pgq_api.consumers(conn, "orders")))
        # pause the ticker
        await pilot.press("shift+tab")
        await pilot.press("t")
        await pilot.press("y")
        with psycopg.connect(qdsn, autocommit=True) as conn:
            await wait_for(pilot, lambda: pgq_api.queue_info(conn, "orders").queue_ticker_paused)
        await wait_for(pilot, lambda: cells(queues)["orders"][1] == "‖ paused")


async def test_read_only_refuses_writes(qdsn):
    app = HostApp(ConnSettings(dsn=qdsn), QueuesScreen, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        queues = app.screen.query_one("#queues", VimTable)
        await wait_for(pilot, lambda: queues.row_count == 2)
        await pilot.press("a")
        await pilot.pause()
        assert len(app.screen_stack) == 1  # no prompt opened
        await pilot.press("t")
        await pilot.pause()
        assert len(app.screen_stack) == 1


async def test_peek_events_pages_from_the_database(qdsn):
    app = HostApp(ConnSettings(dsn=qdsn), QueuesScreen)
    async with app.run_test(size=(80, 24)) as pilot:
        queues = app.screen.query_one("#queues", VimTable)
        await wait_for(pilot, lambda: queues.row_count == 2)
        queues.move_cursor(row=[rk.value for rk in queues.rows].index("orders"))
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen))
        events = app.screen.query_one("#events", VimTable)
        await wait_for(pilot, lambda: events.row_count == 50)
        first_page = [rk.value for rk in events.rows]
        assert first_page[0] == "120"  # newest first
        await pilot.press("n")
        await wait_for(pilot, lambda: [rk.value for rk in events.rows][:1] == ["70"])
        await pilot.press("n")
        await wait_for(pilot, lambda: events.row_count == 20)
        assert [rk.value for rk in events.rows][-1] == "1"
        await pilot.press("p")
        await wait_for(pilot, lambda: [rk.value for rk in events.rows][:1] == ["70"])
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, QueuesScreen))


# ---- snapshot: fixed data, fixed clock --------------------------------------------------

def fixed_snapshot() -> QueuesSnapshot:
    def q(name, cur, paused=False, external=False, lag=1.5, eps=12.5, new=40, tick=981):
        return pgq_api.QueueInfo(name, 3, cur, timedelta(hours=2), FIXED_NOW - timedelta(minutes=35), external,
                                 paused, 500, timedelta(seconds=3), timedelta(minutes=1), timedelta(seconds=lag),
                                 eps, new, tick)

    def c(queue, name, lag, seen, tick, batch, pending):
        return pgq_api.ConsumerInfo(queue, name, timedelta(seconds=lag), timedelta(seconds=seen), tick, batch,
                                    None, pending)

    queues = [q("audit", 2, paused=True, lag=340, eps=0.0, new=0, tick=77),
              q("orders", 0),
              q("replica_feed", 1, external=True, lag=0.4, eps=250.0, new=12, tick=15012)]
    return QueuesSnapshot(queues, {
        "audit": [],
        "orders": [c("orders", "billing", 2.1, 0.8, 980, 4411, 40), c("orders", "mailer", 95, 93, 900, None, 3410)],
        "replica_feed": [c("replica_feed", "node_b_worker", 0.6, 0.2, 15011, None, 12)],
    })


class FixedQueues(QueuesScreen):
    POLLS = False

    def on_mount(self) -> None:
        super().on_mount()
        self.last_data = fixed_snapshot()
        self.show(self.last_data)


SNAP_SETTINGS = ConnSettings(dsn="host=db.example port=5432 dbname=prod")  # never connected: no poll


def test_snapshot_queue_view(snap_compare):
    app = HostApp(SNAP_SETTINGS, FixedQueues, clock=lambda: FIXED_NOW)

    async def run_before(pilot) -> None:
        await pilot.pause()
        app.screen.query_one("#queues", VimTable).move_cursor(row=1)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


async def test_the_console_app_opens_queues_and_cascade_views(qdsn):
    """The real PgttApp: view 6 is Queues, view 7 is Cascade (not a cascade node here)."""
    from pgtt_tui.app import PgttApp
    from pgtt_tui.screens.cascade import CascadeScreen

    app = PgttApp(ConnSettings(dsn=qdsn), start_view="queues", refresh=0.5)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, QueuesScreen))
        await wait_for(pilot, lambda: app.screen.query_one("#queues", VimTable).row_count == 2)
        await pilot.press("7")
        await wait_for(pilot, lambda: isinstance(app.screen, CascadeScreen))
        await wait_for(pilot, lambda: app.screen.last_data is not None)
        assert app.screen.last_data.status is None and "not a cascade node" in app.screen.last_data.note


async def test_consumers_panel_names_the_tables_feeding_the_queue(qdsn):
    from engine.pgq import capture

    with psycopg.connect(qdsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders_src (id int PRIMARY KEY, note text)")
        capture.add_capture(conn, "public.orders_src", "orders", fmt="json")
    app = HostApp(ConnSettings(dsn=qdsn), QueuesScreen)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        queues = screen.query_one("#queues", VimTable)
        await wait_for(pilot, lambda: queues.row_count == 2)
        panel = screen.query_one("#consumers-panel")
        queues.move_cursor(row=[rk.value for rk in queues.rows].index("orders"))
        await wait_for(pilot, lambda: "orders_src" in str(panel.border_subtitle))
        assert str(panel.border_subtitle).startswith("fed by ")
        queues.move_cursor(row=[rk.value for rk in queues.rows].index("audit"))
        await wait_for(pilot, lambda: str(panel.border_subtitle) == "no capture triggers")


async def test_slash_filters_queues_and_consumers_as_you_type(qdsn):
    app = HostApp(ConnSettings(dsn=qdsn), QueuesScreen)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        queues = screen.query_one("#queues", VimTable)
        consumers = screen.query_one("#consumers", VimTable)
        await wait_for(pilot, lambda: queues.row_count == 2)
        await pilot.press("slash")
        await pilot.press(*"aud")
        await wait_for(pilot, lambda: set(cells(queues)) == {"audit"})
        assert "1 of 2 match /aud" in str(screen.query_one("#queues-panel").border_title)
        # a consumer's name finds its queue; only the matching consumers are listed
        await pilot.press("backspace", "backspace", "backspace", *"mail")
        await wait_for(pilot, lambda: set(cells(queues)) == {"orders"})
        await wait_for(pilot, lambda: [r[0] for r in cells(consumers).values()] == ["mailer"])
        # the filter stays while the view refreshes; Enter keeps it, Esc (in the bar) clears it
        await pilot.press("enter")
        await pilot.pause(1.2)
        assert set(cells(queues)) == {"orders"}
        await pilot.press("slash")
        await pilot.press("escape")
        await wait_for(pilot, lambda: queues.row_count == 2)
        await wait_for(pilot, lambda: consumers.row_count == 2)
        assert screen.filter_text == ""
