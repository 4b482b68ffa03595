"""The console driven with Pilot against a real database: keys in, database state and
messages out."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from console_host import until
from engine.views import logs as logs_api
from engine.timetable import api as tt_api
from engine.db import ConnSettings
from engine.errors import InputError
from pgtt_tui.app import PgttApp
from pgtt_tui.config import parse_config
from pgtt_tui.messages import ActionDone, ActionFailed
from pgtt_tui.screens.modals import ConfirmScreen
from pgtt_tui.widgets.common import Banner, StatusBar
from pgtt_tui.widgets.logview import LogFilter, LogView

pytestmark = pytest.mark.timeout(120)


def make_app(settings: ConnSettings, **kw) -> PgttApp:
    kw.setdefault("refresh", 0.3)
    kw.setdefault("tz", timezone.utc)
    return PgttApp(settings, **kw)


def add_chains(conn: psycopg.Connection, n: int, prefix: str = "chain") -> None:
    conn.execute("INSERT INTO timetable.chain (chain_name, run_at, live) "
                 "SELECT format('%s-%%s', lpad(g::text, 5, '0')), '0 4 * * *', g %% 2 = 0 "
                 "FROM generate_series(1, %s) g" % (prefix, n))


async def test_views_switch_and_header_shows_connection(settings, conn):
    app = make_app(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        for key, name in [("2", "ChainsScreen"), ("3", "JobsScreen"), ("4", "SessionsScreen"),
                          ("5", "LogsScreen"), ("1", "OverviewScreen")]:
            await pilot.press(key)
            await until(pilot, lambda n=name: type(app.screen).__name__ == n)
        await until(pilot, lambda: app.server is not None and app.last_ok is not None)
        bar = app.screen.query_one(StatusBar)
        assert bar.where.endswith("/" + conn.info.dbname)
        assert bar.version and bar.role
        await until(pilot, lambda: app.screen.last_data is not None)
        assert app.screen.last_data["chains"]["total"] == 0


async def test_chain_list_pages_from_the_database_and_filters(settings, conn):
    add_chains(conn, 450)
    app = make_app(settings, start_view="chains")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.page is not None)
        assert (screen.page.total, screen.page.first_index, len(screen.page.rows)) == (450, 0, 200)
        await pilot.press("G")  # last page, keyset from the end
        await until(pilot, lambda: screen.page.first_index == 250, msg=lambda: (screen.anchor, screen.page.first_index, screen.page.total, [n.message for n in app._notifications]))
        assert screen.page.rows[-1]["chain_name"] == "chain-00450"
        await pilot.press("g")
        await until(pilot, lambda: screen.page.first_index == 0)
        table = screen.query_one("#chains")
        table.move_cursor(row=199)
        await pilot.press("j")  # past the last row: the next page
        await until(pilot, lambda: screen.page.first_index == 200)
        assert table.cursor_row == 0 and screen.page.rows[0]["chain_name"] == "chain-00201"
        await pilot.press("slash")
        await pilot.press(*"00123")
        await until(pilot, lambda: screen.page.filter == "00123" and screen.page.total == 1)
        assert screen.page.rows[0]["chain_name"] == "chain-00123"
        await pilot.press("escape")  # clears the filter
        await until(pilot, lambda: screen.page.filter == "" and screen.page.total == 450)
        await pilot.press("slash")
        await pilot.press(*"state:paused", "enter")
        await until(pilot, lambda: screen.page.filter == "state:paused" and screen.page.total == 225)


def test_chain_page_keyset_and_bad_filter(conn):
    add_chains(conn, 30, "k")
    page = tt_api.chain_page(conn, limit=10)
    nxt = tt_api.chain_page(conn, after=page.last_name, limit=10)
    back = tt_api.chain_page(conn, before=nxt.first_name, limit=10)
    assert [r["chain_name"] for r in back.rows] == [r["chain_name"] for r in page.rows]
    assert (nxt.first_index, nxt.has_prev, nxt.has_next) == (10, True, True)
    with pytest.raises(InputError) as err:
        tt_api.chain_page(conn, filter="state:sleepy")
    assert err.value.field == "filter"


async def test_read_only_hides_write_actions_and_the_server_refuses_them(settings, conn):
    add_chains(conn, 3)
    app = make_app(settings, read_only=True, start_view="chains")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.page is not None and screen.page.rows)
        assert screen.query_one(StatusBar).read_only
        for key, label in (("d", "delete"), ("x", "run now"), ("p", "pause/resume"), ("n", "new")):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert not isinstance(app.screen, ConfirmScreen) and app.screen is screen
            # not silence: one line says why
            assert any(f"read-only mode: {label} is not allowed" in n.message for n in app._notifications), key
        assert "delete" not in [d for _, d in screen.help_keys()]
        # the engine's connection refuses writes too (default_transaction_read_only)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            app.db.run("action", lambda c: c.execute("UPDATE timetable.chain SET live = false"))
    assert conn.execute("SELECT count(*) FROM timetable.chain WHERE live").fetchone()[0] == 1


def log_rows(conn: psycopg.Connection, n: int, at: datetime, level: str = "INFO", text: str = "line") -> None:
    conn.execute(
        "INSERT INTO timetable.log (ts, pid, log_level, client_name, message, message_data) "
        "SELECT %s + g * interval '1 millisecond', 1, %s::timetable.log_type, 'node-a', %s || ' ' || g, NULL "
        "FROM generate_series(1, %s) g", (at, level, text, n))


async def test_logs_follow_counter_filter_and_pause(settings, conn):
    now = datetime.now(timezone.utc)
    log_rows(conn, 50, now - timedelta(seconds=30))
    app = make_app(settings, start_view="logs")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        view = screen.query_one(LogView)
        await until(pilot, lambda: len(view.entries) == 50)
        assert view.follow
        log_rows(conn, 20, now - timedelta(seconds=5), "ERROR", "boom")
        await until(pilot, lambda: len(view.entries) == 70)
        assert view.scroll_y == view.max_scroll_y  # stayed at the bottom
        view.scroll_to(y=0, animate=False, immediate=True)  # the operator scrolls up
        await until(pilot, lambda: not view.follow)
        log_rows(conn, 5, now - timedelta(seconds=1), "INFO", "later")
        await until(pilot, lambda: view.pending == 5)
        assert "+5 new" in str(screen.query_one("#log-status").render())
        await pilot.press("f")
        await until(pilot, lambda: view.follow and view.pending == 0)
        await pilot.press("slash")
        await pilot.press(*"level:error boom", "enter")
        await until(pilot, lambda: view.shown == 20)
        await pilot.press("space")  # pause: the tail stops, and resumes from the same cursor
        assert app.paused
        await pilot.pause(0.4)
        log_rows(conn, 3, now, "ERROR", "boom-after-pause")
        await pilot.pause(0.6)
        assert len(view.entries) == 75
        await pilot.press("space")
        await until(pilot, lambda: len(view.entries) == 78)
        assert view.shown == 23
        await pilot.press("w")
        assert view.wrap


def test_tail_returns_late_commits_once(conn):
    now = datetime.now(timezone.utc)
    log_rows(conn, 10, now - timedelta(seconds=10))
    tail = logs_api.Tail()
    first = tail.start(conn, 500)
    assert len(first) == 10
    assert tail.poll(conn) == []
    # a row that commits late with an earlier timestamp than the newest seen one
    log_rows(conn, 1, now - timedelta(seconds=10, milliseconds=500), "INFO", "late")
    log_rows(conn, 2, now - timedelta(seconds=5))
    got = tail.poll(conn)
    assert sorted(e.message for e in got) == ["late 1", "line 1", "line 2"]
    assert tail.poll(conn) == []
    older = logs_api.history(conn, before=first[0], limit=100)
    assert [e.message for e in older] == ["late 1"]
    errors = logs_api.history(conn, level="error")
    assert errors == []


def test_log_filter_parsing():
    flt = LogFilter.parse("level:error chain:night client:node-a disk full")
    assert (flt.min_level, flt.chain, flt.client, flt.text) == ("error", "night", "node-a", "disk full")
    assert flt.describe() == 'level≥error chain:night client:node-a "disk full"'


async def test_sessions_cancel_a_running_job_with_confirmation(settings, conn):
    job = conn.execute("SELECT schedule.create_job(%s::jsonb)",
                       (json.dumps({"name": "long-job", "cron": "* * * * *", "commands": ["SELECT 1"]}),)).fetchone()[0]
    with psycopg.connect(settings.dsn, autocommit=True) as victim:
        pid = victim.info.backend_pid
        conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at, state, started, pid, engine) "
                     "VALUES (%s, 'master', now(), 'working', now() - interval '42 seconds', %s, 'node-a')", (job, pid))
        messages = []
        app = make_app(settings, start_view="sessions")
        async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.last_data is not None and screen.last_data["running"])
            running = screen.query_one("#running")
            running.focus()
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "long-job" in app.screen.body
            await pilot.press("y")
            await until(pilot, lambda: app.last_action is not None)
            assert app.last_action[:2] == ("cancel_run", "ok"), app.last_action
    stop = conn.execute("SELECT stop_requested FROM schedule.cron_run WHERE cron = %s", (job,)).fetchone()[0]
    assert stop and "stop_cron_job" in stop


async def test_one_time_job_submitted_through_the_editor(settings, conn):
    messages = []
    app = make_app(settings, start_view="jobs")
    async with app.run_test(size=(100, 36), message_hook=messages.append) as pilot:
        await until(pilot, lambda: app.screen.last_data is not None)
        await pilot.press("o")
        await until(pilot, lambda: type(app.screen).__name__ == "OneTimeJobEditor")
        editor = app.screen
        assert editor.query_one("#save").disabled  # empty query
        await pilot.press(*"SELECT 42")
        await until(pilot, lambda: not editor.query_one("#save").disabled)
        editor.query_one("#run_after").value = "not a time"
        await pilot.pause(0.05)
        assert "run after" in str(editor.query_one("#when-msg").render()) and editor.query_one("#save").disabled
        editor.query_one("#run_after").value = ""
        editor.query_one("#name").value = "answer"
        await pilot.press("f2")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
    row = conn.execute("SELECT query, name, status::text FROM schedule.at_job").fetchone()
    assert row == ("SELECT 42", "answer", "submitted")
    assert app.last_action[1] == "ok" and "submitted" in app.last_action[2]


async def test_chain_editor_validates_as_you_type(settings):
    app = make_app(settings, start_view="chains")
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("n")
        await until(pilot, lambda: type(app.screen).__name__ == "ChainEditor")
        editor = app.screen
        editor.query_one("#name").value = "nightly"
        editor.query_one("#run_at").value = "0 25 * * *"
        await pilot.pause(0.05)
        msg = str(editor.query_one("#run_at-msg").render())
        assert "hour" in msg and "✗" in msg
        editor.query_one("#run_at").value = "*/15 * * * *"
        await pilot.pause(0.05)
        assert str(editor.query_one("#run_at-msg").render()).count(":") >= 5  # five firings listed
        editor.query_one("#params").text = '[1, "a"]\n{"bad json'
        await pilot.pause(0.05)
        assert "line 2" in str(editor.query_one("#params-msg").render())
        assert editor.query_one("#save").disabled
        editor.query_one("#params").text = '[1, "a"]\n[2, "b"]'
        editor.query_one("#command").text = "SELECT $1"
        await pilot.pause(0.05)
        assert "2 parameter rows" in str(editor.query_one("#params-msg").render())
        assert not editor.query_one("#save").disabled


async def test_lost_connection_shows_banner_and_recovers(make_servers):
    from engine import schema

    (server,) = make_servers(1)
    with psycopg.connect(server.dsn(), autocommit=True) as c:
        schema.install(c, ["pgtt", "timetable"])
    settings = ConnSettings(dsn=server.dsn(), application_name="pgtt-test", connect_timeout=2)
    app = make_app(settings, refresh=0.3)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.last_data is not None)
        before = screen.last_data
        await asyncio.to_thread(server.stop, "immediate")
        await until(pilot, lambda: app.stale, timeout=15)
        assert screen.query_one(Banner).has_class("-shown")
        assert "connection lost" in str(screen.query_one(Banner).render())
        assert screen.query_one(StatusBar).stale and screen.last_data == before  # the last data stays, marked stale
        await asyncio.to_thread(server.start)
        await until(pilot, lambda: not app.stale, timeout=20)
        assert not screen.query_one(Banner).has_class("-shown")


def test_config_profiles_and_errors(tmp_path):
    config = parse_config("""
[console]
refresh = 1.5
profile = "prod"

[profiles.prod]
dsn = "service=prod"
read_only = true

[profiles.dev]
dsn = "host=localhost dbname=dev"
refresh = 5
""")
    prod = config.profile(None)
    assert (prod.dsn, prod.read_only, prod.refresh) == ("service=prod", True, 1.5)
    assert config.profile("dev").refresh == 5
    with pytest.raises(InputError) as err:
        config.profile("nope")
    assert err.value.field == "--profile"
    with pytest.raises(InputError) as err:
        parse_config("[profiles.x]\nrefresh = 0.01\n")
    assert err.value.field == "profiles.x.refresh"
    with pytest.raises(InputError) as err:
        parse_config("[profiles.x]\ncolour = 'red'\n")
    assert err.value.field == "profiles.x.colour"


async def test_chain_created_in_the_editor_runs_and_its_log_line_arrives(settings, conn):
    """The whole loop: editor → database; run now → the engine (in this process) → log tail;
    pause; delete with the typed name."""
    from engine.demo import EngineThread
    from engine.timetable import api as tt

    engine = EngineThread(settings, client_name="pilot-engine", modules=["timetable"])
    engine.start()
    messages = []
    try:
        app = make_app(settings, start_view="chains")
        async with app.run_test(size=(110, 40), message_hook=messages.append) as pilot:
            await until(pilot, lambda: app.screen.page is not None)
            await pilot.press("n")
            await until(pilot, lambda: type(app.screen).__name__ == "ChainEditor")
            editor = app.screen
            editor.query_one("#name").value = "e2e-chain"
            editor.query_one("#run_at").value = "0 0 1 1 *"
            editor.query_one("#command").text = "SELECT $1::int * 2"
            editor.query_one("#params").text = "[21]"
            await pilot.pause(0.05)
            assert not editor.query_one("#save").disabled, editor.errors
            await pilot.press("f2")
            await until(pilot, lambda: type(app.screen).__name__ == "ChainsScreen")
            chain = tt.get_chain(conn, "e2e-chain")
            assert chain["run_at"] == "0 0 1 1 *" and chain["tasks"][0]["parameters"] == [[21]]
            app.open_chain("e2e-chain")
            await until(pilot, lambda: type(app.screen).__name__ == "ChainDetailScreen"
                        and app.screen.detail is not None)
            await until(pilot, lambda: tt.live_engines(conn) == ["pilot-engine"], timeout=20)
            await pilot.press("x")
            await until(pilot, lambda: app.last_action and app.last_action[0] == "run_now")
            assert app.last_action[1] == "ok", app.last_action
            await pilot.press("5")
            await until(pilot, lambda: type(app.screen).__name__ == "LogsScreen")
            view = app.screen.query_one(LogView)
            await until(pilot, lambda: any(e.chain == "e2e-chain" and "rc=0" in e.message for e in view.entries),
                        timeout=30, msg=lambda: [e.message for e in view.entries][-5:])
            await pilot.press("2")
            await until(pilot, lambda: type(app.screen).__name__ == "ChainDetailScreen")
            await pilot.press("p")  # pause
            await until(pilot, lambda: tt.get_chain(conn, "e2e-chain")["live"] is False)
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press(*"e2e-chain", "enter")
            await until(pilot, lambda: conn.execute(
                "SELECT count(*) FROM timetable.chain WHERE chain_name = 'e2e-chain'").fetchone()[0] == 0)
            await until(pilot, lambda: type(app.screen).__name__ == "ChainsScreen")
    finally:
        await asyncio.to_thread(engine.stop)


async def test_never_connected_says_so_not_stale(make_servers):
    """A console that never reached its server has no last data to call stale."""
    (server,) = make_servers(1)
    dsn = server.dsn()
    await asyncio.to_thread(server.stop, "fast")
    app = make_app(ConnSettings(dsn=dsn, application_name="pgtt-test", connect_timeout=2), refresh=0.3)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.stale, timeout=15)
        banner = app.screen.query_one(Banner)
        text = str(banner.render())
        assert "cannot connect" in text and "nothing has been read yet" in text
        assert "connection lost" not in text and "stale" not in text


async def test_escape_clears_an_applied_filter_in_every_view(settings, conn):
    """/ then Enter applies a filter; it stays visible after switching views and back; Esc
    (focus on the table, not in the filter) clears it."""
    from pgtt_tui.widgets.common import FilterBar

    app = make_app(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        for key in ("2", "3", "4", "5", "6"):
            await pilot.press(key)
            await until(pilot, lambda: app.screen.query(FilterBar))
            view = app.screen
            bar = view.query_one(FilterBar)
            await pilot.press("slash", "z", "z", "enter")
            await until(pilot, lambda: bar.value == "zz" and not bar.query_one("Input").has_focus)
            await pilot.press("1")
            await until(pilot, lambda: app.screen is not view)
            await pilot.press(key)
            await until(pilot, lambda: app.screen is view)
            assert bar.value == "zz" and bar.has_class("-shown") and bar.display, key
            await pilot.press("escape")
            await until(pilot, lambda: bar.value == "" and not bar.has_class("-shown"),
                        msg=lambda: (key, bar.value, app.focused))
            assert app.screen is view


async def test_chains_view_without_the_timetable_module_shows_the_not_installed_panel(make_db):
    """Not a toast with the server's 'relation does not exist', and the view keeps checking."""
    from pgtt_tui.widgets.common import NoAccessPanel

    dsn = make_db(("schedule",))
    app = make_app(ConnSettings(dsn=dsn, application_name="pgtt-test"), start_view="chains")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.no_access is not None)
        panel = screen.query_one(NoAccessPanel)
        assert panel.display and "not installed" in panel.border_title
        text = str(panel.render())
        assert "pgtt-tui db init --modules timetable" in text
        assert not any("does not exist" in n.message for n in app._notifications)
        await pilot.press("x")  # run now: refused with one line, not an error
        await until(pilot, lambda: any("not installed" in n.message for n in app._notifications))
        with psycopg.connect(dsn, autocommit=True) as c:
            from engine import schema

            schema.install(c, ["timetable"])
        await pilot.press("r")
        await until(pilot, lambda: screen.no_access is None and screen.page is not None, timeout=15)


def test_logs_say_why_a_chain_failed(conn):
    """The engine's "Chain failed" row carries the failing task's error in message_data.reason;
    the log read model (console and CLI) shows it, and a text filter finds it."""
    chain_id = conn.execute("INSERT INTO timetable.chain (chain_name) VALUES ('etl') RETURNING chain_id").fetchone()[0]
    reason = 'task 7 (extract) failed: role "x" does not exist'
    conn.execute("INSERT INTO timetable.log (pid, log_level, client_name, message, message_data) "
                 "VALUES (1, 'ERROR', 'node-a', 'Chain failed', %s)",
                 (json.dumps({"chain": chain_id, "run": 1, "reason": reason}),))
    (entry,) = [e for e in logs_api.history(conn, level="error") if "Chain failed" in e.message]
    assert entry.message == f"Chain failed: {reason}" and entry.chain == "etl"
    assert [e.message for e in logs_api.history(conn, text="does not exist")] == [entry.message]


async def test_brackets_switch_tabs_and_help_lists_the_views_keys_first(settings, conn):
    from textual.widgets import TabbedContent

    from pgtt_tui.screens.modals import HelpScreen

    app = make_app(settings, start_view="jobs")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.last_data is not None)
        tabs = screen.query_one(TabbedContent)
        assert tabs.active == "cron"
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: tabs.active == "onetime")
        assert app.focused is screen.query_one("#at-table")  # still in a table, not on the tab bar
        await pilot.press("right_square_bracket", "right_square_bracket")
        await until(pilot, lambda: tabs.active == "cron")
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: tabs.active == "calendar")

        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        help_screen = app.screen
        ours = [d for _, d in help_screen.keys]
        generic = [d.lower() for _, d in help_screen.generic]
        assert "new cron job" in ours and "filter" in ours and "next tab" in ours
        assert not any(d.lower() in ("cursor up", "page left", "focus previous") for d in ours)
        assert "cursor up" in generic or "focus previous" in generic
        text = help_screen.query_one("Markdown").source
        assert text.startswith("*Esc, q or ? closes this help.*")
        assert text.index("## Keys here") < text.index("## Other keys")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)


async def test_checkboxes_show_their_state_in_text(settings, conn):
    """[x] / [ ] in a plain capture, not only a colour."""
    from pgtt_tui.screens.editors import ChainEditor
    from pgtt_tui.widgets.common import TextCheckbox

    app = make_app(settings, start_view="chains")
    async with app.run_test(size=(120, 36)) as pilot:
        app.push_screen(ChainEditor(None))
        await until(pilot, lambda: app.screen.query(TextCheckbox))
        live = app.screen.query_one("#live", TextCheckbox)
        destruct = app.screen.query_one("#self_destruct", TextCheckbox)
        assert str(live.render()).startswith("[x]") and str(destruct.render()).startswith("[ ]")
        destruct.value = True
        await pilot.pause(0.05)
        assert str(destruct.render()).startswith("[x]")


async def test_O_sorts_a_table_by_column_and_keeps_it_across_refreshes(settings, conn):
    """Sessions' engines table: O cycles column and direction (shown in the header); a new
    poll keeps the order; the last step gives the view's own order back."""
    from pgtt_tui.widgets.common import VimTable

    for name in ("bravo", "alpha", "charlie"):
        conn.execute("INSERT INTO pgtt.engine (client_name, backend_pid, host, version) VALUES (%s, 1, 'h', 'v')",
                     (name,))
    app = make_app(settings, start_view="sessions")
    async with app.run_test(size=(140, 36)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.last_data is not None and screen.query_one("#engines", VimTable).row_count >= 3)
        table = screen.query_one("#engines", VimTable)
        table.focus()

        def first_column() -> list[str]:
            return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]

        own = first_column()
        await pilot.press("O")
        await until(pilot, lambda: first_column() == sorted(own, key=str.lower))
        assert "▲" in str(table.ordered_columns[0].label)
        await pilot.press("O")
        await until(pilot, lambda: first_column() == sorted(own, key=str.lower, reverse=True))
        assert "▼" in str(table.ordered_columns[0].label)
        generation = screen._generation
        await until(pilot, lambda: screen._generation > generation + 1)  # two more polls
        assert first_column() == sorted(own, key=str.lower, reverse=True)
