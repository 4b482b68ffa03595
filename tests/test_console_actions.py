"""Console actions end to end (Pilot: keys in, database state and messages out) and the engine
calls behind them: schedule jobs (activate / deactivate / edit / drop / resubmit / inactive
create, with their CLI twins), the timetable calendar, the timetable API's read-only guard and
keyset list, a non-superuser role, task reorder and editors, stop, older log history, the
command palette, focus help, and every view at 80x24."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from engine.db import ConnSettings
from engine.errors import InputError, NotFoundError, ReadOnlyError
from engine.schedule import api as sch
from engine.timetable import api as tt
from pgtt_tui.app import PgttApp
from pgtt_tui.cli import app as cli_app
from pgtt_tui.screens.modals import ConfirmScreen, HelpScreen
from pgtt_tui.widgets.common import StatusBar, VimTable
from pgtt_tui.widgets.logview import LogView

pytestmark = pytest.mark.timeout(120)


async def until(pilot, predicate, timeout: float = 10.0, step: float = 0.05, msg=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(step)
    raise AssertionError(f"condition not reached in time {msg() if msg else ''}")


def make_app(settings: ConnSettings, **kw) -> PgttApp:
    kw.setdefault("refresh", 0.3)
    kw.setdefault("tz", timezone.utc)
    return PgttApp(settings, **kw)


def new_job(conn, **options) -> int:
    options.setdefault("commands", ["SELECT 1"])
    return conn.execute("SELECT schedule.create_job(%s::jsonb)", (json.dumps(options),)).fetchone()[0]


def job_row(conn, job_id):
    return conn.execute("SELECT active, name, rule, commands FROM schedule.cron WHERE id = %s", (job_id,)).fetchone()


def finished_onetime(conn, query="SELECT 7", name="once", ok=False) -> int:
    job = conn.execute("SELECT schedule.submit_job(%s, name := %s)", (query, name)).fetchone()[0]
    conn.execute("UPDATE schedule.at_job SET status = 'done', is_success = %s, error = %s, done_time = now(), "
                 "start_time = now() WHERE id = %s", (ok, None if ok else "boom", job))
    return job


def cli(*args):
    return CliRunner().invoke(cli_app, ["job", *args])


# ---- 1. schedule jobs: engine calls, CLI twins, console keys ------------------------------------

def test_schedule_api_activate_deactivate_edit_drop_resubmit(conn, settings):
    job = sch.create_job(conn, settings, {"name": "quiet", "cron": "0 3 * * *", "commands": ["SELECT 1"],
                                          "active": False})
    assert job_row(conn, job)[0] is False  # created inactive, in one transaction
    assert conn.execute("SELECT count(*) FROM schedule.cron_run WHERE cron = %s", (job,)).fetchone()[0] == 0
    assert sch.activate(conn, settings, job) is True and job_row(conn, job)[0] is True
    assert sch.deactivate(conn, settings, job) is True and job_row(conn, job)[0] is False
    assert sch.set_attributes(conn, settings, job, {"cron": "*/10 * * * *", "name": "loud", "active": True}) is True
    active, name, rule, _ = job_row(conn, job)
    assert (active, name, rule) == (True, "loud", {"crontab": "*/10 * * * *"})
    assert sch.set_attributes(conn, settings, job, {"name": "loud"}) is False  # nothing changed
    with pytest.raises(InputError) as err:
        sch.set_attributes(conn, settings, job, {"cron": "0 25 * * *"})
    assert err.value.field.startswith("hour") and job_row(conn, job)[2] == {"crontab": "*/10 * * * *"}
    with pytest.raises(InputError):
        sch.create_job(conn, settings, {"cron": "* * * * *", "commands": ["SELECT 1"], "active": "no"})
    read_only = ConnSettings(dsn=settings.dsn, read_only=True)
    for call in (lambda: sch.activate(conn, read_only, job), lambda: sch.deactivate(conn, read_only, job),
                 lambda: sch.drop(conn, read_only, job), lambda: sch.set_attributes(conn, read_only, job, {"name": "x"}),
                 lambda: sch.resubmit(conn, read_only, 1)):
        with pytest.raises(ReadOnlyError):
            call()
    assert sch.drop(conn, settings, job) is True
    with pytest.raises(NotFoundError):
        sch.activate(conn, settings, job)
    once = finished_onetime(conn)
    again = sch.resubmit(conn, settings, once)
    row = conn.execute("SELECT query, name, status::text FROM schedule.at_job WHERE id = %s", (again,)).fetchone()
    assert row == ("SELECT 7", "once", "submitted")
    with pytest.raises(InputError, match="still queued"):
        sch.resubmit(conn, settings, again)


def test_job_cli_twins_with_json(dsn, conn):
    r = cli("create", '{"name": "c1", "cron": "0 4 * * *", "commands": ["SELECT 1"]}', "--inactive", "--json",
            "--dsn", dsn)
    assert r.exit_code == 0, r.output
    job = json.loads(r.output)["id"]
    assert job_row(conn, job)[0] is False
    assert json.loads(cli("activate", str(job), "--json", "--dsn", dsn).output) == {"id": job, "active": True}
    assert json.loads(cli("deactivate", str(job), "--json", "--dsn", dsn).output) == {"id": job, "active": False}
    r = cli("edit", str(job), '{"cron": "5 4 * * *", "active": true}', "--json", "--dsn", dsn)
    assert json.loads(r.output) == {"id": job, "changed": True}
    assert job_row(conn, job)[:3] == (True, "c1", {"crontab": "5 4 * * *"})
    r = cli("edit", str(job), "[1]", "--dsn", dsn)
    assert isinstance(r.exception, InputError) and r.exception.field == "attributes"
    once = finished_onetime(conn)
    r = cli("resubmit", str(once), "--json", "--dsn", dsn)
    assert json.loads(r.output)["resubmitted_from"] == once
    assert json.loads(cli("drop", str(job), "--yes", "--json", "--dsn", dsn).output)["dropped"] is True
    assert conn.execute("SELECT count(*) FROM schedule.cron").fetchone()[0] == 0
    r = CliRunner().invoke(cli_app, ["--read-only", "job", "activate", "1", "--dsn", dsn])
    assert isinstance(r.exception, ReadOnlyError)


async def test_jobs_view_keys_change_the_database(settings, conn):
    job = new_job(conn, name="nightly-sum", cron="0 2 * * *", commands=["SELECT 1", "SELECT 2"], tz="UTC")
    once = finished_onetime(conn, name="retry-me")
    queued = conn.execute("SELECT schedule.submit_job('SELECT 3', run_after := now() + interval '1 day', "
                          "name := 'later')").fetchone()[0]
    app = make_app(settings, start_view="jobs")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.last_data is not None and screen.last_data["cron"])
        await pilot.press("a")  # deactivate
        await until(pilot, lambda: job_row(conn, job)[0] is False)
        await until(pilot, lambda: not screen.last_data["cron"][0]["active"])
        await pilot.press("a")  # activate again
        await until(pilot, lambda: job_row(conn, job)[0] is True)
        await pilot.press("e")  # the editor opens on the whole job (commands included)
        await until(pilot, lambda: type(app.screen).__name__ == "CronJobEditor")
        editor = app.screen
        assert editor.query_one("#commands").text == "SELECT 1\nSELECT 2"
        editor.query_one("#cron").value = "0 25 * * *"
        await pilot.pause(0.05)
        assert editor.query_one("#save").disabled and "hour" in str(editor.query_one("#cron-msg").render())
        editor.query_one("#cron").value = "30 1 * * *"
        editor.query_one("#name").value = "nightly-total"
        await pilot.pause(0.05)
        await pilot.press("f2")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        assert job_row(conn, job)[:4] == (True, "nightly-total", {"crontab": "30 1 * * *"}, ["SELECT 1", "SELECT 2"])
        await pilot.press("n")  # a new job that starts inactive
        await until(pilot, lambda: type(app.screen).__name__ == "CronJobEditor")
        editor = app.screen
        editor.query_one("#name").value = "paused-from-start"
        editor.query_one("#cron").value = '{"hours": [4], "minutes": [15]}'
        editor.query_one("#commands").text = "SELECT 42"
        editor.query_one("#active").value = False
        await pilot.pause(0.05)
        assert "✓ next" in str(editor.query_one("#cron-msg").render()), editor.errors
        await pilot.press("f2")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        row = conn.execute("SELECT active, rule FROM schedule.cron WHERE name = 'paused-from-start'").fetchone()
        assert row == (False, {"hours": [4], "minutes": [15]})
        await until(pilot, lambda: len(screen.last_data["cron"]) == 2)
        screen.query_one("#cron-table", VimTable).move_cursor(row=0)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press(*"nightly-total", "enter")
        await until(pilot, lambda: conn.execute("SELECT count(*) FROM schedule.cron WHERE id = %s",
                                                (job,)).fetchone()[0] == 0)
        await pilot.press("question_mark")  # help for the focused tab
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert app.screen.focus_topic == "cron" and "(de)activate" in [d for _, d in app.screen.keys]
        await pilot.press("escape")
        screen.action_tab("onetime")
        await pilot.pause(0.1)
        assert "resubmit" in [d for _, d in screen.help_keys()] and "(de)activate" not in [d for _, d in screen.help_keys()]
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert app.screen.focus_topic == "onetime"
        await pilot.press("escape")
        table = screen.query_one("#at-table", VimTable)
        table.move_cursor(row=table.get_row_index(str(once)))
        await pilot.press("R")
        await until(pilot, lambda: conn.execute("SELECT count(*) FROM schedule.at_job WHERE name = 'retry-me'")
                    .fetchone()[0] == 2)
        await until(pilot, lambda: str(queued) in [r.value for r in table.rows])
        table.move_cursor(row=table.get_row_index(str(queued)))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: conn.execute("SELECT canceled FROM schedule.at_job WHERE id = %s",
                                                (queued,)).fetchone()[0])
        assert app.last_action[:2] == ("cancel_job", "ok"), app.last_action


# ---- 2. timetable(): real jobs, and the calendar tab ----------------------------------------------

async def test_timetable_with_cron_rule_and_dates_jobs_and_the_calendar(settings, conn):
    now = datetime(2031, 3, 10, 12, 0, tzinfo=timezone.utc)
    new_job(conn, name="every-30", cron="*/30 * * * *", tz="UTC")
    new_job(conn, name="ruled", rule={"hours": [13, 15], "minutes": [5]}, tz="UTC")
    new_job(conn, name="dated", dates=[(now + timedelta(hours=1, minutes=7)).isoformat()], tz="UTC")
    off = new_job(conn, name="off", cron="* * * * *")
    conn.execute("SELECT schedule.deactivate_job(%s)", (off,))
    rows = sch.timetable(conn, now - timedelta(hours=2), now + timedelta(hours=3), now=now)
    by_name: dict = {}
    for r in rows:
        by_name.setdefault(r["name"], []).append(r["scheduled_at"].astimezone(timezone.utc).strftime("%H:%M"))
    # nothing before `now` (nothing ran), the future from the shared evaluator; "off" never
    assert by_name["every-30"] == ["12:00", "12:30", "13:00", "13:30", "14:00", "14:30", "15:00"]
    assert by_name["ruled"] == ["13:05"] and by_name["dated"] == ["13:07"] and "off" not in by_name
    assert all(r["status"] == "submitted" for r in rows)
    # with the engine's plan (next_run) the expansion starts after it: no firing twice
    conn.execute("UPDATE schedule.cron SET next_run = %s WHERE name = 'every-30'", (now + timedelta(minutes=45),))
    rows = sch.timetable(conn, now, now + timedelta(hours=2), now=now)
    assert [r["scheduled_at"].astimezone(timezone.utc).strftime("%H:%M") for r in rows if r["name"] == "every-30"] \
        == ["12:45", "13:00", "13:30", "14:00"]
    with pytest.raises(InputError):
        sch.timetable(conn, now, now - timedelta(hours=1))
    app = make_app(settings, start_view="jobs", clock=lambda: now)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.last_data is not None)
        await pilot.press("t")
        cal = screen.query_one("#cal-table", VimTable)
        await until(pilot, lambda: cal.row_count > 0)
        assert not screen.last_data["calendar_error"]
        # the window: now - 6 h .. now + 24 h
        expected = sch.timetable(conn, *screen.window(), now=now)
        assert cal.row_count == len(expected) and "runs, past and planned" in str(screen.query_one("#cal-info").render())


# ---- 3. timetable api: read-only guard, one keyset list --------------------------------------------

def test_timetable_api_refuses_writes_in_read_only_mode(conn, settings, dsn):
    cid = tt.create_chain(conn, "guarded", "@daily", settings=settings)
    task = tt.add_task(conn, cid, "SELECT 1", settings=settings)
    tt.add_task(conn, cid, "SELECT 2", settings=settings)
    ro = ConnSettings(dsn=settings.dsn, read_only=True)
    calls = [lambda: tt.create_chain(conn, "x", "@daily", settings=ro),
             lambda: tt.update_chain(conn, cid, run_at="@hourly", settings=ro),
             lambda: tt.add_task(conn, cid, "SELECT 3", settings=ro),
             lambda: tt.update_task(conn, task, command="SELECT 9", settings=ro),
             lambda: tt.delete_task(conn, task, settings=ro), lambda: tt.move_task(conn, task, "down", settings=ro),
             lambda: tt.run_chain(conn, cid, settings=ro), lambda: tt.stop_chain(conn, cid, settings=ro),
             lambda: tt.pause_chain(conn, cid, settings=ro), lambda: tt.resume_chain(conn, cid, settings=ro),
             lambda: tt.delete_chain(conn, cid, settings=ro)]
    for call in calls:
        with pytest.raises(ReadOnlyError, match="read-only mode"):
            call()
    # without settings: a read-only connection (default_transaction_read_only, reported by PG 14+)
    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=on") as ro_conn:
        if ro_conn.info.server_version >= 140000:
            with pytest.raises(ReadOnlyError):
                tt.pause_chain(ro_conn, cid)
    detail = tt.get_chain(conn, cid)
    assert (detail["run_at"], detail["live"], len(detail["tasks"])) == ("@daily", True, 2)


def test_one_keyset_chain_list_for_cli_and_console(conn, dsn):
    conn.execute("INSERT INTO timetable.chain (chain_name, run_at, live) SELECT format('k-%s', lpad(g::text, 6, '0')), "
                 "'0 4 * * *', g % 2 = 0 FROM generate_series(1, 20000) g")
    conn.execute("ANALYZE timetable.chain")
    page = tt.chain_page(conn, limit=10)
    assert (page.total, page.first_index, page.has_prev, page.has_next) == (20000, 0, False, True)
    nxt = tt.chain_page(conn, after=page.last_name, limit=10)
    back = tt.chain_page(conn, before=nxt.first_name, limit=10)
    assert [r["chain_name"] for r in back.rows] == [r["chain_name"] for r in page.rows] and nxt.first_index == 10
    last = tt.chain_page(conn, last=True, limit=10)
    assert last.rows[-1]["chain_name"] == "k-020000" and last.first_index == 19990 and not last.has_next
    assert [r["chain_name"] for r in tt.list_chains(conn, filter="k-0001", live=True, limit=3)] == \
        ["k-000100", "k-000102", "k-000104"]
    with pytest.raises(InputError) as err:
        tt.chain_page(conn, filter="state:sleepy")
    assert err.value.field == "filter"
    # the page query walks the name index from the key: no sequential scan, whatever the page
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(tt.PAGE_SELECT)
                        + sql.SQL(" WHERE c.chain_name > 'k-015000' ORDER BY c.chain_name LIMIT 201")).fetchone()[0]
    assert "Seq Scan" not in json.dumps(plan)
    r = CliRunner().invoke(cli_app, ["chain", "list", "--after", "k-019997", "--json", "--dsn", dsn])
    assert [c["chain_name"] for c in json.loads(r.output)] == ["k-019998", "k-019999", "k-020000"]
    r = CliRunner().invoke(cli_app, ["chain", "list", "--limit", "2", "--dsn", dsn])
    assert "k-000002" in r.output and "--after 'k-000002'" in r.output


# ---- 4. a role that is not a superuser ---------------------------------------------------------------

@pytest.fixture
def plain_role(conn, dsn):
    role = f"alice_{conn.info.dbname}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield role, ConnSettings(dsn=make_conninfo(dsn, user=role), application_name="pgtt-test")
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_non_superuser_sees_own_jobs_and_what_it_may_not_read(conn, plain_role):
    role, settings = plain_role
    new_job(conn, name="admin-job", cron="* * * * *")  # not the role's: never shown to it
    with psycopg.connect(settings.dsn, autocommit=True) as mine:
        own = new_job(mine, name="alice-job", cron="*/5 * * * *")
        mine.execute("SELECT schedule.submit_job('SELECT 1', name := 'alice-once')")
    conn.execute("UPDATE schedule.cron SET next_run = now() + interval '3 minutes' WHERE id = %s", (own,))
    conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at, state, started, finished, message) "
                 "VALUES (%s, 'primary', now() - interval '1 minute', 'error', now() - interval '1 minute', "
                 "now() - interval '50 seconds', 'alice broke it'), "
                 "(%s, 'primary', now(), 'working', now() - interval '5 seconds', NULL, NULL)", (own, own))
    errors = []
    app = make_app(settings)
    async with app.run_test(size=(100, 30), message_hook=lambda m: errors.append(m)
                            if type(m).__name__ == "PollFailed" else None) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.last_data is not None)
        data = screen.last_data
        assert set(data["denied"]) == {"pgtt", "timetable"} and data["jobs_scope"] == "own"
        assert (data["jobs"]["active"], data["jobs"]["running"], data["jobs"]["queued"]) == (1, 1, 1)
        assert [f["name"] for f in data["failures"]] == ["alice-job"]
        assert [n["name"] for n in data["next"]] == ["alice-once", "alice-job"]
        summary = str(screen.query_one("#summary").render())
        assert " ".join(summary.split()).count(f"no access for role {role}") == 2 and "your cron" in summary
        await pilot.press("4")
        await until(pilot, lambda: type(app.screen).__name__ == "SessionsScreen" and app.screen.last_data is not None)
        assert [(r["kind"], r["name"]) for r in app.screen.last_data["running"]] == [("cron", "alice-job")]
        assert "timetable" in str(app.screen.query_one("#sessions-denied").render())
        await pilot.press("5")
        await until(pilot, lambda: type(app.screen).__name__ == "LogsScreen")
        view = app.screen.query_one(LogView)
        await until(pilot, lambda: any("alice broke it" in e.message for e in view.entries))
        assert not any("admin-job" == e.chain for e in view.entries)
        assert "not shown" in str(app.screen.query_one("#log-status").render())
        await pilot.pause(0.5)
    assert errors == [], [e.error for e in errors]


# ---- 5. chain detail: reorder, task editor, chain editor, stop ------------------------------------

async def test_chain_detail_reorder_add_edit_task_and_edit_chain(settings, conn):
    cid = tt.create_chain(conn, "etl", "0 3 * * *")
    first = tt.add_task(conn, cid, "SELECT 1", task_name="extract")
    second = tt.add_task(conn, cid, "SELECT 2", task_name="load")
    order = lambda: [t["task_id"] for t in tt.get_chain(conn, cid)["tasks"]]  # noqa: E731
    app = make_app(settings, start_view="chains")
    async with app.run_test(size=(100, 36)) as pilot:
        app.open_chain("etl")
        await until(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        screen = app.screen
        tasks = screen.query_one("#tasks", VimTable)
        tasks.move_cursor(row=1)  # "load"
        await pilot.press("K")
        await until(pilot, lambda: order() == [second, first])
        await until(pilot, lambda: tasks.selected_key() == str(second) and tasks.cursor_row == 0)
        await pilot.press("J")  # the cursor followed the task: move it back down
        await until(pilot, lambda: order() == [first, second])
        await pilot.press("a")  # add a task
        await until(pilot, lambda: type(app.screen).__name__ == "TaskEditor")
        editor = app.screen
        editor.query_one("#task_name").value = "report"
        editor.query_one("#command").text = "SELECT $1::text"
        editor.query_one("#params").text = '["a"]\n["b"]'
        await pilot.pause(0.05)
        await pilot.press("f2")
        await until(pilot, lambda: app.screen is screen)
        added = tt.get_chain(conn, cid)["tasks"][-1]
        assert (added["task_name"], added["parameters"]) == ("report", [["a"], ["b"]])
        await until(pilot, lambda: tasks.row_count == 3, msg=lambda: (tasks.row_count, app.screen, screen.detail and len(screen.detail["tasks"]), [n.message for n in app._notifications]))
        tasks.move_cursor(row=0)
        await pilot.press("enter")  # edit the first task
        await until(pilot, lambda: type(app.screen).__name__ == "TaskEditor")
        editor = app.screen
        assert editor.query_one("#command").text == "SELECT 1"
        editor.query_one("#command").text = "SELECT 100"
        editor.query_one("#timeout").value = "5000"
        editor.query_one("#ignore_error").value = True
        await pilot.pause(0.05)
        await pilot.press("f2")
        await until(pilot, lambda: app.screen is screen)
        task = tt.get_chain(conn, cid)["tasks"][0]
        assert (task["command"], task["timeout"], task["ignore_error"]) == ("SELECT 100", 5000, True)
        await pilot.press("e")  # edit the chain itself
        await until(pilot, lambda: type(app.screen).__name__ == "ChainEditor")
        editor = app.screen
        assert editor.query_one("#name").value == "etl"
        editor.query_one("#run_at").value = "15 4 * * 1-5"
        editor.query_one("#max_instances").value = "2"
        await pilot.pause(0.05)
        await pilot.press("f2")
        await until(pilot, lambda: app.screen is screen)
        chain = tt.get_chain(conn, cid)
        assert (chain["run_at"], chain["max_instances"], len(chain["tasks"])) == ("15 4 * * 1-5", 2, 3)
        await until(pilot, lambda: "15 4 * * 1-5" in str(screen.query_one("#chain-fields").render()))
        # focus help: the task table and the settings have their own part of the page
        tasks.focus()
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert app.screen.focus_topic == "tasks"
        await pilot.press("escape")
        screen.query_one("#chain-fields").focus()
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert app.screen.focus_topic == "chain-fields"


async def test_stop_a_running_chain_from_the_console(settings, conn):
    from engine.demo import EngineThread

    cid = tt.create_chain(conn, "sleepy", "@reboot", live=False)
    tt.add_task(conn, cid, "SELECT pg_sleep(60)")
    engine = EngineThread(settings, client_name="stop-engine", modules=["timetable"])
    engine.start()
    try:
        app = make_app(settings, start_view="chains")
        async with app.run_test(size=(100, 30)) as pilot:
            app.open_chain("sleepy")
            await until(pilot, lambda: getattr(app.screen, "detail", None) is not None)
            await until(pilot, lambda: tt.live_engines(conn) == ["stop-engine"], timeout=20)
            await pilot.press("x")
            running = "SELECT count(*) FROM timetable.chain_run WHERE chain_id = %s AND status = 'running'"
            await until(pilot, lambda: conn.execute(running, (cid,)).fetchone()[0] == 1, timeout=20)
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "sleepy" in app.screen.body
            await pilot.press("y")
            await until(pilot, lambda: conn.execute(
                "SELECT status FROM timetable.chain_run WHERE chain_id = %s", (cid,)).fetchone()[0] == "failed",
                timeout=20)
            assert app.last_action[:2] == ("stop", "ok"), app.last_action
    finally:
        await asyncio.to_thread(engine.stop)


# ---- 6. logs: older history with `o` ------------------------------------------------------------------

async def test_logs_older_key_pages_history_from_the_database(settings, conn):
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    conn.execute("INSERT INTO timetable.log (ts, pid, log_level, client_name, message) "
                 "SELECT %s + g * interval '1 second', 1, 'INFO', 'n', 'line ' || lpad(g::text, 4, '0') "
                 "FROM generate_series(1, 650) g", (start,))
    app = make_app(settings, start_view="logs")
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.screen.query_one(LogView)
        await until(pilot, lambda: len(view.entries) == 500)
        assert view.entries[0].message == "line 0151"
        await pilot.press("o")
        await until(pilot, lambda: len(view.entries) == 650)
        assert view.entries[0].message == "line 0001" and view.entries[-1].message == "line 0650"
        assert app.screen.history_done
        await pilot.press("o")
        await until(pilot, lambda: any("no older lines" in n.message for n in app._notifications))


# ---- 7. the command palette ---------------------------------------------------------------------------

async def test_palette_jumps_to_a_chain_and_to_a_job(settings, conn):
    tt.create_chain(conn, "nightly-export", "0 1 * * *")
    job = new_job(conn, name="cleanup-reports", cron="0 5 * * *")
    app = make_app(settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.screen.last_data is not None)
        for text, screen_name, check in (
                ("nightly-export", "ChainDetailScreen", lambda s: s.chain_name == "nightly-export"),
                ("cleanup-reports", "JobDetailScreen", lambda s: s.job_id == job)):
            await pilot.press("colon")
            await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette")
            await pilot.press(*text)
            await until(pilot, lambda: _palette_has(app, text))
            await pilot.press("down", "enter")
            await until(pilot, lambda s=screen_name: type(app.screen).__name__ == s)
            assert check(app.screen)


def _palette_has(app, text: str) -> bool:
    from textual.command import CommandList

    try:
        options = app.screen.query_one(CommandList)
    except Exception:  # noqa: BLE001
        return False
    return options.option_count > 0 and text in str(options.get_option_at_index(0).prompt)


# ---- 8. every view at 80x24: nothing runs off to the side -----------------------------------------------

async def test_every_view_fits_80_columns(settings, conn, tmp_path):
    from engine import demo

    demo.load_samples(conn)
    app = make_app(settings, refresh=60, demo=True)
    async with app.run_test(size=(80, 24)) as pilot:
        for key in ("1", "2", "3", "4"):
            await pilot.press(key)
            await until(pilot, lambda: getattr(app.screen, "last_data", None) is not None)
            await pilot.pause(0.1)
            screen = app.screen
            for table in screen.query(VimTable):
                if table.display and table.size.width:
                    assert table.virtual_size.width <= table.size.width, (screen.VIEW, table.id)
            bar = screen.query_one(StatusBar)
            assert len(bar.render().replace("[b]", "").split(" · ")) >= 3
            assert bar.size.width <= 80 and f"▸ {screen.TITLE}" in str(bar.render())
        await pilot.press("2")
        app.open_chain("flaky-import")
        await until(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        await pilot.pause(0.1)
        tasks = app.screen.query_one("#tasks", VimTable)
        assert tasks.virtual_size.width <= tasks.size.width
        # saved screenshots keep their spaces in any SVG renderer (rsvg-convert for the PNGs)
        saved = app.save_screenshot(filename="shot.svg", path=str(tmp_path))
        assert 'xml:space="preserve"' in open(saved, encoding="utf-8").read()
