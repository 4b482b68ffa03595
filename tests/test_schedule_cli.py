"""``pgtt-tui job …``: each command is one engine call; --json output; clear errors."""

from __future__ import annotations

import json

import psycopg
from typer.testing import CliRunner

from engine.errors import InputError, NotFoundError
from pgtt_tui.cli import app

runner = CliRunner()


def run(dsn, *args):
    return runner.invoke(app, ["--dsn", dsn, "job", *args])


def test_job_commands_with_json(make_db):
    dsn = make_db(("schedule",))
    res = run(dsn, "create", '{"commands": "select 1", "cron": "0 * * * *", "name": "hourly"}', "--json")
    assert res.exit_code == 0, res.output
    jid = json.loads(res.output)["id"]
    listed = json.loads(run(dsn, "list", "--json").output)
    assert [(j["id"], j["name"]) for j in listed] == [(jid, "hourly")]
    shown = json.loads(run(dsn, "show", str(jid), "--json").output)
    assert shown["rule"] == {"crontab": "0 * * * *"} and shown["owner"] == "postgres"
    sub = json.loads(run(dsn, "submit", "select $1", "-p", "x", "--run-after", "2031-01-01T00:00:00+00:00",
                         "--json").output)
    onetime = json.loads(run(dsn, "list", "--onetime", "--json").output)
    assert onetime[0]["id"] == sub["id"] and onetime[0]["params"] == ["x"]
    tt = json.loads(run(dsn, "timetable", "--start", "2031-01-01T00:00:00+00:00", "--end",
                        "2031-01-01T03:00:00+00:00", "--json").output)
    assert [(r["type"], r["scheduled_at"]) for r in tt] == [
        ("onetime", "2031-01-01T00:00:00+00:00"), ("periodical", "2031-01-01T00:00:00+00:00"),
        ("periodical", "2031-01-01T01:00:00+00:00"), ("periodical", "2031-01-01T02:00:00+00:00"),
        ("periodical", "2031-01-01T03:00:00+00:00")]
    assert json.loads(run(dsn, "cancel", str(sub["id"]), "--json").output)["canceled"] is True
    assert json.loads(run(dsn, "stop", str(sub["id"]), "--json").output)["stopped"] == 0
    assert json.loads(run(dsn, "log", "--json").output) == []
    bad = run(dsn, "create", '{"commands": "select 1", "cron": "61 * * * *"}')
    # the entry point turns these into one line and the exit code of the error class
    assert isinstance(bad.exception, InputError) and bad.exception.field.startswith("minute")
    assert bad.exception.exit_code == 2
    missing = run(dsn, "show", "999")
    assert isinstance(missing.exception, NotFoundError) and "does not exist" in str(missing.exception)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM schedule.cron").fetchone()[0] == 1


def test_job_create_with_an_unknown_role_names_the_field_once(make_db):
    dsn = make_db(("schedule",))
    res = run(dsn, "create", '{"commands": "select 1", "cron": "0 * * * *", "run_as": "nope"}')
    assert isinstance(res.exception, InputError) and res.exception.exit_code == 2
    assert res.exception.field == "run_as"
    assert str(res.exception) == 'run_as: role "nope" does not exist'
    res = run(dsn, "create", '{"commands": "select 1", "cron": "0 * * * *", "run_as": "postgres; drop table x"}')
    assert str(res.exception) == 'run_as: role "postgres; drop table x" does not exist'
    res = runner.invoke(app, ["--dsn", dsn, "job", "submit", "select 1", "--run-as", "nope"])
    assert str(res.exception) == 'run_as: role "nope" does not exist'
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM schedule.cron").fetchone()[0] == 0
