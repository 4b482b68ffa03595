"""engine.timetable.api and ``pgtt-tui chain``: listing, detail, validation, control."""

from __future__ import annotations

import asyncio
import json

import psycopg
import pytest
from typer.testing import CliRunner

from _timetable_support import SteppingClock, q, q1, running_engine, until
from engine.errors import InputError, NotFoundError
from engine.timetable import api
from pgtt_tui.cli import app


@pytest.fixture
def tdsn(make_db):
    return make_db(("timetable",))


def cli(dsn, *args):
    result = CliRunner().invoke(app, ["chain", *args, "--dsn", dsn])
    return result


def test_create_validate_list_show_reorder_delete(tdsn):
    with psycopg.connect(tdsn, autocommit=True) as conn:
        cid = api.create_chain(conn, "nightly", "30 2 * * *", time_zone="Europe/Berlin", missed_runs="skip",
                               max_instances=1)
        t1 = api.add_task(conn, "nightly", "SELECT $1::int", parameters=[[1], [2]])
        t2 = api.add_task(conn, cid, "SELECT 2", task_name="second", ignore_error=True)
        with pytest.raises(InputError, match=r'run_at: cron field "hour" \(2nd\): 25 is out of range'):
            api.create_chain(conn, "bad", "0 25 * * *")
        with pytest.raises(InputError, match="name: a chain named 'nightly' already exists"):
            api.create_chain(conn, "nightly", "@daily")
        with pytest.raises(InputError, match="time_zone"):
            api.create_chain(conn, "tz", "@daily", time_zone="Mars/Base")
        with pytest.raises(InputError, match=r"parameters\[0\]"):
            api.add_task(conn, cid, "SELECT $1", parameters=[{"not": "an array"}])
        with pytest.raises(NotFoundError):
            api.get_chain(conn, "nope")
        assert q1(tdsn, "SELECT count(*) FROM timetable.chain") == 1  # nothing changed by the bad calls
        rows = api.list_chains(conn, filter="night")
        assert [r["chain_name"] for r in rows] == ["nightly"] and rows[0]["next_run"] is not None
        detail = api.get_chain(conn, "nightly")
        assert detail["time_zone"] == "Europe/Berlin" and detail["missed_runs"] == "skip"
        assert [t["task_id"] for t in detail["tasks"]] == [t1, t2]
        assert detail["tasks"][0]["parameters"] == [[1], [2]]
        assert all(u.astimezone().tzinfo for u in detail["upcoming"]) and len(detail["upcoming"]) == 5
        assert api.move_task(conn, t2, "up") is True
        assert [t["task_id"] for t in api.get_chain(conn, cid)["tasks"]] == [t2, t1]
        api.update_chain(conn, cid, run_at="@every 5 minutes", missed_runs="run_all")
        assert api.get_chain(conn, cid)["missed_runs"] == "run_all"
        with pytest.raises(InputError, match="interval"):
            api.update_chain(conn, cid, run_at="@every soon")
        assert api.pause_chain(conn, cid)["live"] is False
        assert api.list_chains(conn, live=False)[0]["next_run"] is None
        api.delete_task(conn, t1)
        api.delete_chain(conn, "nightly")
        assert api.list_chains(conn) == []


def test_cli_list_show_pause_resume_delete_json(tdsn):
    with psycopg.connect(tdsn, autocommit=True) as conn:
        api.create_chain(conn, "c1", "*/5 * * * *")
        api.add_task(conn, "c1", "SELECT 1")
    r = cli(tdsn, "list", "--json")
    assert r.exit_code == 0, r.output
    assert [c["chain_name"] for c in json.loads(r.output)] == ["c1"]
    r = cli(tdsn, "show", "c1", "--json")
    assert json.loads(r.output)["tasks"][0]["command"] == "SELECT 1"
    assert json.loads(cli(tdsn, "pause", "c1", "--json").output)["live"] is False
    assert json.loads(cli(tdsn, "resume", "c1", "--json").output)["live"] is True
    r = cli(tdsn, "show", "missing")  # the engine error; main() turns it into exit code 6
    assert isinstance(r.exception, NotFoundError) and r.exception.exit_code == 6
    r = cli(tdsn, "run", "c1")  # no engine running
    assert isinstance(r.exception, InputError) and "no engine is running" in str(r.exception)
    assert json.loads(cli(tdsn, "delete", "c1", "--yes", "--json").output)["deleted"] is True
    r = cli(tdsn, "list")
    assert r.exit_code == 0 and "(none)" in r.output


async def test_run_now_stop_and_history_through_the_api(tdsn):
    with psycopg.connect(tdsn, autocommit=True) as conn:
        cid = api.create_chain(conn, "adhoc", "@reboot", live=False)
        api.add_task(conn, cid, "SELECT pg_sleep(20)")
        quick = api.create_chain(conn, "quick", "0 0 1 1 *")
        api.add_task(conn, quick, "SELECT $1::text", parameters=[["hello"]])
        async with running_engine(tdsn, "n1", SteppingClock()):
            api.run_chain(conn, quick)
            await until(lambda: q1(tdsn, "SELECT status FROM timetable.chain_run WHERE chain_id = %s", (quick,))
                        == "succeeded", what="quick run")
            api.run_chain(conn, "adhoc")  # live = false: ad-hoc runs still work, as in pg_timetable
            await until(lambda: q1(tdsn, "SELECT count(*) FROM timetable.chain_run WHERE chain_id = %s AND "
                                         "status = 'running'", (cid,)), what="adhoc running")
            assert api.stop_chain(conn, "adhoc")["engines"] == ["n1"]
            await until(lambda: q1(tdsn, "SELECT status FROM timetable.chain_run WHERE chain_id = %s", (cid,))
                        == "failed", what="stopped")
            await asyncio.sleep(0.2)
        hist = api.chain_history(conn, "quick")
        assert hist[0]["status"] == "succeeded" and hist[0]["trigger"] == "manual"
        assert hist[0]["tasks"][0]["output"] == "SELECT 1" and hist[0]["tasks"][0]["params"] == '["hello"]'
        assert "stopped by notify_chain_stop" in api.chain_history(conn, cid)[0]["reason"]
        assert any("STOP for chain" in r["message"] for r in api.recent_log(conn, chain_id=cid))


# ---- the console's create / edit / task actions as CLI commands ---------------------------------

def cli_json(dsn, *args):
    res = CliRunner().invoke(app, ["chain", *args, "--dsn", dsn, "--json"])
    assert res.exit_code == 0, (args, res.output, res.exception)
    return json.loads(res.stdout)


def cli_error(dsn, *args):
    res = CliRunner().invoke(app, ["chain", *args, "--dsn", dsn])
    assert res.exit_code != 0 and isinstance(res.exception, InputError), (args, res.output, res.exception)
    return res.exception


def test_cli_create_edit_and_tasks(tdsn):
    made = cli_json(tdsn, "create", "report", "--schedule", "0 6 * * 1-5", "--max-instances", "1",
                    "--time-zone", "Europe/Vienna", "--missed-runs", "skip", "--client-name", "node-a",
                    "--on-error", "SELECT 1", "--command", "SELECT $1::int + $2::int",
                    "--param", "[1, 2]", "--param", "[3, 4]")
    cid, t1 = made["chain_id"], made["task_id"]
    chain = cli_json(tdsn, "show", "report")
    assert (chain["run_at"], chain["live"], chain["max_instances"], chain["time_zone"], chain["missed_runs"],
            chain["client_name"], chain["on_error"]) == ("0 6 * * 1-5", True, 1, "Europe/Vienna", "skip", "node-a",
                                                         "SELECT 1")
    assert [t["parameters"] for t in chain["tasks"]] == [[[1, 2], [3, 4]]]

    # tasks: add (SQL, PROGRAM, BUILTIN), edit, reorder, delete
    t2 = cli_json(tdsn, "task", "add", "report", "/bin/echo", "--kind", "PROGRAM", "--param", '["hi"]',
                  "--name", "say", "--ignore-error", "--timeout", "5000")["task_id"]
    t3 = cli_json(tdsn, "task", "add", str(cid), "Log", "--kind", "builtin", "--param", '{"Status": "ok"}',
                  "--skip")["task_id"]
    tasks = cli_json(tdsn, "show", "report")["tasks"]
    assert [(t["task_id"], t["kind"], t["task_order"]) for t in tasks] == [(t1, "SQL", 10), (t2, "PROGRAM", 20),
                                                                            (t3, "BUILTIN", 30)]
    assert (tasks[1]["task_name"], tasks[1]["ignore_error"], tasks[1]["timeout"]) == ("say", True, 5000)
    assert tasks[2]["live"] is False and tasks[2]["parameters"] == [{"Status": "ok"}]
    assert cli_json(tdsn, "task", "up", str(t3)) == {"task_id": t3, "moved": "up"}
    assert cli_json(tdsn, "task", "down", str(t1)) == {"task_id": t1, "moved": "down"}
    assert [t["task_id"] for t in cli_json(tdsn, "show", "report")["tasks"]] == [t3, t1, t2]
    assert cli_json(tdsn, "task", "up", str(t3))["moved"] is None  # already first
    cli_json(tdsn, "task", "edit", str(t2), "--command", "/bin/true", "--clear-params", "--no-ignore-error",
             "--name", "")
    cli_json(tdsn, "task", "edit", str(t1), "--param", "[5, 6]")
    tasks = {t["task_id"]: t for t in cli_json(tdsn, "show", "report")["tasks"]}
    assert (tasks[t2]["command"], tasks[t2]["parameters"], tasks[t2]["ignore_error"], tasks[t2]["task_name"]) == \
        ("/bin/true", [], False, None)
    assert tasks[t1]["parameters"] == [[5, 6]]
    assert cli_json(tdsn, "task", "delete", str(t3), "--yes") == {"task_id": t3, "deleted": True}
    assert [t["task_id"] for t in cli_json(tdsn, "show", "report")["tasks"]] == [t1, t2]

    # edit the chain: only what is given changes; '' clears
    edited = cli_json(tdsn, "edit", "report", "--name", "daily-report", "--schedule", "@every 10 minutes",
                      "--paused", "--client-name", "", "--missed-runs", "run_all", "--exclusive")
    assert (edited["chain_name"], edited["run_at"], edited["live"], edited["client_name"], edited["missed_runs"],
            edited["exclusive_execution"], edited["max_instances"], edited["time_zone"]) == \
        ("daily-report", "@every 10 minutes", False, None, "run_all", True, 1, "Europe/Vienna")
    cli_json(tdsn, "create", "bare")  # no schedule (every minute), no task
    assert q(tdsn, "SELECT run_at, live FROM timetable.chain WHERE chain_name = 'bare'") == [(None, True)]
    res = CliRunner().invoke(app, ["chain", "create", "plain", "-s", "@reboot", "--paused", "--dsn", tdsn])
    assert res.exit_code == 0 and "plain" in res.stdout


@pytest.mark.parametrize("args, field, problem", [
    (("create", "x", "--schedule", "0 25 * * *"), "--schedule", 'cron field "hour"'),
    (("create", "x", "--time-zone", "Mars/Base"), "--time-zone", "unknown time zone"),
    (("create", "x", "--missed-runs", "later"), "--missed-runs", "run_once"),
    (("create", "x", "--max-instances", "-1"), "--max-instances", "must be 1 or more"),
    (("create", "x", "--command", "SELECT $1", "--param", "[1"), "--param[1]", "not valid JSON"),
    (("create", "x", "--command", "SELECT $1", "--param", "[1]", "--param", "2"), "--param[2]", "JSON array"),
    (("create", "x", "--kind", "PROGRAM"), "--command", "is required"),
    (("create", "x", "--command", "ls", "--kind", "SHELL"), "--kind", "'SHELL' is not one of"),
    (("create", "existing"), "--name", "already exists"),
    (("edit", "existing"), "edit", "nothing to change"),
    (("edit", "existing", "--schedule", "* * *"), "--schedule", ""),
    (("edit", "existing", "--name", " "), "--name", "must not be empty"),
    (("task", "add", "existing", "ls", "--kind", "PROGRAM", "--param", "[1]"), "--param[1]", "array of strings"),
    (("task", "add", "existing", " "), "COMMAND", "must not be empty"),
    (("task", "add", "existing", "SELECT 1", "--timeout", "-5"), "--timeout", "must be 0"),
    (("task", "edit", "1", "--kind", "nope"), "--kind", "is not one of"),
    (("task", "edit", "1"), "task edit", "nothing to change"),
    (("task", "edit", "1", "--param", "[1]", "--clear-params"), "--clear-params", "either"),
])
def test_cli_validation_errors_name_the_option(tdsn, args, field, problem):
    cli_json(tdsn, "create", "existing", "--command", "SELECT 1")
    before = q(tdsn, "SELECT c.*, t.* FROM timetable.chain c JOIN timetable.task t USING (chain_id)")
    exc = cli_error(tdsn, *args)
    assert exc.field == field and problem in exc.problem, (exc.field, exc.problem)
    assert q(tdsn, "SELECT c.*, t.* FROM timetable.chain c JOIN timetable.task t USING (chain_id)") == before
    assert q1(tdsn, "SELECT count(*) FROM timetable.chain") == 1  # nothing was created


def test_cli_chain_commands_refused_read_only_and_unknown(tdsn):
    cli_json(tdsn, "create", "ro", "--command", "SELECT 1")
    res = CliRunner().invoke(app, ["--read-only", "chain", "task", "add", "ro", "SELECT 2", "--dsn", tdsn])
    assert res.exit_code != 0 and "read-only" in str(res.exception)
    res = CliRunner().invoke(app, ["chain", "task", "delete", "999999", "--yes", "--dsn", tdsn])
    assert res.exit_code != 0 and isinstance(res.exception, NotFoundError)
    res = CliRunner().invoke(app, ["chain", "edit", "nope", "--paused", "--dsn", tdsn])
    assert res.exit_code != 0 and isinstance(res.exception, NotFoundError)
    assert q1(tdsn, "SELECT count(*) FROM timetable.task") == 1


def test_every_console_chain_action_has_a_cli_twin():
    """pgtt_tui.actions' chain functions <-> `pgtt-tui chain` commands."""
    import typer.main

    from pgtt_tui import actions

    group = typer.main.get_command(app).commands["chain"]
    names = set(group.commands) | {f"task {n}" for n in group.commands["task"].commands}
    twins = {"chain_page": "list", "chain_detail": "show", "run_history": "show", "create_chain": "create",
             "update_chain": "edit", "add_task": "task add", "update_task": "task edit",
             "delete_task": "task delete", "move_task": "task up", "run_chain_now": "run", "stop_chain": "stop",
             "pause_chain": "pause", "resume_chain": "resume", "delete_chain": "delete"}
    console = {n for n in dir(actions) if not n.startswith("_") and callable(getattr(actions, n))
               and n in twins}
    assert console == set(twins), set(twins) - console
    assert {twins[n] for n in console} <= names
    assert {"task down", "import", "export"} <= names


def test_next_runs_of_an_every_chain_follow_the_engines_due_time(conn):
    """`@every 10 minutes` last fired 7 minutes ago: the next run is in 3 minutes (the engine's
    next_due_at), not now + 10 minutes; chain show and the console's detail agree."""
    from datetime import datetime, timedelta, timezone

    from pgtt_tui import actions

    chain_id = conn.execute("INSERT INTO timetable.chain (chain_name, run_at, live) VALUES ('tick', '@every 10 minutes', true) "
                            "RETURNING chain_id").fetchone()[0]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    due = now + timedelta(minutes=3)
    conn.execute("UPDATE timetable.chain_state SET next_due_at = %s WHERE chain_id = %s", (due, chain_id))
    shown = api.get_chain(conn, "tick")["upcoming"]
    assert shown[:2] == [due, due + timedelta(minutes=10)]
    detail = actions.chain_detail(conn, "tick", now=now)["next_runs"]
    assert detail[:2] == [due, due + timedelta(minutes=10)]
