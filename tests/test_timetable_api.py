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
