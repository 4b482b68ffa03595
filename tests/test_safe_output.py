"""Issue 14 (2): text from the database or a program never reaches the terminal raw.

A hostile name (an OSC title change, a screen clear, a colour, Rich markup and a trailing
backslash) goes through every console view and every human-readable list/show command; no
control character may reach what is drawn or printed, and the text shows literally.
"""

from __future__ import annotations

import json
import re
from datetime import timezone

import psycopg
import pytest
from typer.testing import CliRunner

from console_host import FIXED_NOW, HostApp, until
from engine.cascade.status import CascadeStatus, NodeStatus
from engine.db import ConnSettings
from engine.pgq import api as pgq_api
from engine.safetext import visible
from pgtt_tui.app import PgttApp
from pgtt_tui.cli import app as cli_app
from pgtt_tui.cli import main as cli_main
from pgtt_tui.screens.cascade import CascadeScreen
from pgtt_tui.screens.queues import QueuesScreen
from pgtt_tui.widgets.format import escape

pytestmark = pytest.mark.timeout(120)

#: a title change (OSC 0 ... BEL), clear screen, red, Rich markup, a C1 CSI and a bidi override
HOSTILE = "n\x1b]0;OWNED\x07\x1b[2J\x1b[31m[b]x[/]\x9b\u202e"
#: how it must show (and a prefix of it that fits in narrow columns)
SHOWN = r"n\x1b]0;OWNED\x07\x1b[2J\x1b[31m[b]x[/]\x9b\u202e"
PREFIX = r"n\x1b]0;OWNED"
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_visible_and_markup_escape():
    assert visible(HOSTILE) == SHOWN
    assert visible("a\tb\nc\rd") == "a\tb\nc\\x0dd"
    assert visible("a\tb\nc", newlines=False) == "a\\x09b\\x0ac"
    assert visible("plain ünïcode ✓") == "plain ünïcode ✓"
    assert visible(None) == "" and visible(42) == "42"
    from textual.content import Content

    for data in (HOSTILE, "[bold]x[/]", "x\\", "a\\[b]", "[$error]y"):
        shown = Content.from_markup(f"[b]{escape(data)}[/b] tail")
        assert shown.plain.replace("\u200b", "") == visible(data) + " tail"
        assert all(s.end <= len(shown.plain) - len(" tail") for s in shown.spans)


# ---- the console ------------------------------------------------------------------------------

def screen_text(app) -> str:
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


def assert_safe(app, where: str, expect: str | None = PREFIX, problems: list | None = None) -> str:
    """No raw control character on the screen (nor in a toast), and ``expect`` shown; with
    ``problems`` the failure is collected, so one run names every view that leaks."""
    if problems is not None:
        try:
            return assert_safe(app, where, expect)
        except AssertionError as exc:
            problems.append(str(exc).splitlines()[0])
            return screen_text(app)
    text = screen_text(app)
    bad = UNSAFE.search(text)
    assert bad is None, f"{where}: raw {bad.group()!r} reaches the screen"
    if expect is not None:
        assert expect in text, f"{where}: {expect!r} not shown:\n{text}"
    for note in app._notifications:
        assert UNSAFE.search(note.message) is None and UNSAFE.search(note.title) is None
    return text


@pytest.fixture
def hostile_db(make_db):
    dsn = make_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Names with control characters are refused where they enter now (the input checks);
        # rows written before those checks, or by hand with them off, must still show safely.
        for table, trigger in (("chain", "chain_input_check"), ("task", "task_input_check"),
                               ("parameter", "parameter_input_check")):
            conn.execute(f"ALTER TABLE timetable.{table} DISABLE TRIGGER {trigger}")
        cid = conn.execute("INSERT INTO timetable.chain (chain_name, run_at, live, client_name, on_error) "
                           "VALUES (%s, '0 4 * * *', true, %s, %s) RETURNING chain_id",
                           (HOSTILE, HOSTILE, HOSTILE)).fetchone()[0]
        tid = conn.execute("INSERT INTO timetable.task (chain_id, task_order, task_name, kind, command) "
                           "VALUES (%s, 10, %s, 'SQL', %s) RETURNING task_id",
                           (cid, HOSTILE, "SELECT '" + HOSTILE + "'")).fetchone()[0]
        conn.execute("INSERT INTO timetable.parameter (task_id, order_id, value) VALUES (%s, 1, %s)",
                     (tid, json.dumps([HOSTILE])))
        for table, trigger in (("chain", "chain_input_check"), ("task", "task_input_check"),
                               ("parameter", "parameter_input_check")):
            conn.execute(f"ALTER TABLE timetable.{table} ENABLE TRIGGER {trigger}")
        conn.execute("INSERT INTO timetable.chain_run (chain_id, trigger, client_name, session_id, started_at, "
                     "finished_at, status, reason) VALUES (%s, 'manual', %s, 1, now() - interval '1 minute', now(), "
                     "'failed', %s)", (cid, HOSTILE, HOSTILE))
        conn.execute("INSERT INTO timetable.chain_run (chain_id, trigger, client_name, session_id, started_at, "
                     "status) VALUES (%s, 'manual', %s, 1, now(), 'running')", (cid, HOSTILE))
        conn.execute("INSERT INTO timetable.execution_log (chain_id, task_id, txid, finished, returncode, kind, "
                     "command, output, client_name) VALUES (%s, %s, 1, now(), 1, 'SQL', %s, %s, %s)",
                     (cid, tid, HOSTILE, HOSTILE, HOSTILE))
        conn.execute("INSERT INTO timetable.log (pid, log_level, client_name, message, message_data) "
                     "VALUES (1, 'ERROR', %s, %s, %s)", (HOSTILE, HOSTILE, json.dumps({"chain": cid})))
        conn.execute("INSERT INTO pgtt.engine (client_name, backend_pid, host, version) VALUES (%s, 1, %s, %s)",
                     (HOSTILE, HOSTILE, HOSTILE))
        conn.execute("SELECT schedule.create_job(jsonb_build_object('name', %s::text, 'cron', '0 4 * * *', "
                     "'commands', jsonb_build_array(%s::text), 'comments', %s::text))",
                     (HOSTILE, "SELECT '" + HOSTILE + "'", HOSTILE))
        conn.execute("SELECT schedule.submit_job(%s::text, name := %s::text, run_after := now() + interval '1 hour')",
                     ("SELECT '" + HOSTILE + "'", HOSTILE))
        pgq_api.create_queue(conn, "q1")
        pgq_api.register(conn, "q1", HOSTILE)
        pgq_api.insert_event(conn, "q1", HOSTILE, HOSTILE)
        conn.execute("SELECT pgq.ticker()")
    return dsn


async def test_every_console_view_shows_hostile_text_escaped(hostile_db):
    settings = ConnSettings(dsn=hostile_db)
    problems: list[str] = []
    for view, ready in [("overview", lambda s: s.last_data is not None),
                        ("chains", lambda s: s.page is not None),
                        ("jobs", lambda s: s.last_data is not None),
                        ("sessions", lambda s: s.last_data is not None),
                        ("logs", lambda s: s.query_one("LogView").shown > 0)]:
        app = PgttApp(settings, refresh=0.3, tz=timezone.utc, start_view=view)
        async with app.run_test(size=(160, 40)) as pilot:
            await until(pilot, lambda: ready(app.screen), msg=lambda: view)
            await pilot.pause(0.2)
            assert_safe(app, view, problems=problems)
            if view == "chains":
                await pilot.press("enter")  # chain detail: fields, tasks, parameters
                await until(pilot, lambda: type(app.screen).__name__ == "ChainDetailScreen"
                            and app.screen.detail is not None)
                await pilot.pause(0.2)
                text = assert_safe(app, "chain detail", problems=problems)
                if "[b]x[/]" not in text:  # markup in data shows literally
                    problems.append("chain detail: markup in a name was interpreted")
                await pilot.press("h")  # run history and the run's task output
                await until(pilot, lambda: type(app.screen).__name__ == "RunHistoryScreen")
                await pilot.pause(0.5)
                assert_safe(app, "run history", problems=problems)
                await pilot.press("enter")  # the full output
                await pilot.pause(0.5)
                assert_safe(app, "run output", expect=None, problems=problems)
            if view == "jobs":
                await pilot.press("tab")
                await pilot.pause(0.2)
                assert_safe(app, "jobs (one-time)", expect=None, problems=problems)
    assert not problems, problems


async def test_queues_view_shows_hostile_consumer_and_event_escaped(hostile_db):
    app = HostApp(ConnSettings(dsn=hostile_db), QueuesScreen)
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: app.screen.query_one("#consumers").row_count == 1)
        await pilot.pause(0.2)
        assert_safe(app, "queues")
        await pilot.press("e")  # the events of q1
        await until(pilot, lambda: type(app.screen).__name__ == "EventsScreen"
                    and app.screen.query_one("#events").row_count == 1)
        assert_safe(app, "events")


class HostileCascade(CascadeScreen):
    POLLS = False

    def on_mount(self) -> None:
        super().on_mount()
        from pgtt_tui.screens.cascade import CascadeData

        nodes = {
            HOSTILE: NodeStatus(name=HOSTILE, location="host=a dbname=app", node_type="root", provider=HOSTILE,
                                worker=HOSTILE, uptodate=True, last_tick=5, queue_top=5, paused=False,
                                children=["B"], cur_error=HOSTILE),
            "B": NodeStatus(name="B", location="host=b dbname=app", reachable=False, error=HOSTILE),
        }
        self.show(CascadeData(CascadeStatus(HOSTILE, nodes, HOSTILE), [HOSTILE], "host=a dbname=app"))


async def test_cascade_view_shows_hostile_names_escaped():
    app = HostApp(ConnSettings(dsn="host=db.example dbname=prod"), HostileCascade, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause(0.3)
        assert_safe(app, "cascade")
        await pilot.press("j")
        await pilot.pause(0.2)
        assert_safe(app, "cascade node B")


# ---- the CLI ----------------------------------------------------------------------------------

def cli(dsn: str, *args: str) -> str:
    result = CliRunner().invoke(cli_app, ["--dsn", dsn, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_cli_list_and_show_prints_hostile_text_escaped(hostile_db, capsys):
    with psycopg.connect(hostile_db, autocommit=True) as conn:
        job_id = conn.execute("SELECT id FROM schedule.cron").fetchone()[0]
    for args in (["chain", "list"], ["chain", "show", HOSTILE, "--history", "5"], ["job", "list"],
                 ["job", "list", "--onetime"], ["job", "show", str(job_id)], ["job", "timetable"],
                 ["queue", "info", "q1"], ["queue", "consumers", "q1"], ["queue", "tail", "q1"]):
        out = cli(hostile_db, *args)
        bad = UNSAFE.search(out)
        assert bad is None, f"{' '.join(args[:2])}: raw {bad.group()!r} printed:\n{out!r}"
        assert PREFIX in out, f"{' '.join(args[:2])}: the name is not shown:\n{out}"
    # an error from the database that echoes the text: one line, made visible
    with pytest.raises(SystemExit) as exited:
        cli_main(["--dsn", hostile_db, "job", "create",
                  json.dumps({"cron": "0 4 * * *", "commands": ["SELECT 1"], "run_as": HOSTILE})])
    err = capsys.readouterr().err
    assert exited.value.code != 0 and err.startswith("pgtt-tui: error:") and UNSAFE.search(err) is None, err
    assert PREFIX in err and err.count("\n") == 1
    # --json stays JSON (it escapes control characters itself) and round-trips the text
    data = json.loads(cli(hostile_db, "--json", "chain", "show", HOSTILE))
    assert data["chain_name"] == HOSTILE
    assert "\x1b" not in cli(hostile_db, "--json", "chain", "list")
