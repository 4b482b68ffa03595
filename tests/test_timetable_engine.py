"""The timetable engine against a real server: pg_timetable's samples (our equivalents,
with asserted results), execution semantics, schedules with a stepped clock (DST, month
ends, catch-up), ad-hoc control and client names."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from _timetable_support import SteppingClock, q, q1, running_engine, until
from engine.timetable.scheduler import ClientNameInUse

T0 = datetime(2030, 1, 1, 0, 0, 30, tzinfo=timezone.utc)


@pytest.fixture
def tdsn(make_db):
    dsn = make_db(("timetable",))
    q(dsn, "CREATE TABLE out (chain text, v text, at timestamptz DEFAULT clock_timestamp())")
    return dsn


def runs(dsn, chain_id):
    return q(dsn, "SELECT status, trigger, due_at, reason FROM timetable.chain_run WHERE chain_id = %s "
                  "ORDER BY run_id", (chain_id,))


async def finished_runs(dsn, chain_id, n, timeout=10.0):
    return await until(lambda: (lambda r: r if len([x for x in r if x[0] not in ("claimed", "running")]) >= n
                                else None)(runs(dsn, chain_id)), timeout, what=f"{n} finished run(s) of {chain_id}")


async def test_basic_job_with_parameters_logs_each_execution(tdsn):
    cid = q1(tdsn, "SELECT timetable.add_job(job_name => 'basic', job_schedule => '* * * * *', "
                   "job_command => 'INSERT INTO out VALUES ($1, $2)', job_parameters => '[\"basic\", \"hello\"]', "
                   "job_max_instances => 1)")
    clock = SteppingClock(T0)
    async with running_engine(tdsn, "n1", clock):
        await until(lambda: q1(tdsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,)))
        clock.advance(30)
        await finished_runs(tdsn, cid, 1)
    assert q(tdsn, "SELECT chain, v FROM out") == [("basic", "hello")]
    assert runs(tdsn, cid) == [("succeeded", "cron", datetime(2030, 1, 1, 0, 1, tzinfo=timezone.utc), None)]
    row = q(tdsn, "SELECT returncode, output, params, kind::text, ignore_error, client_name, txid > 0, "
                  "finished >= last_run FROM timetable.execution_log WHERE chain_id = %s", (cid,))
    assert row == [(0, "INSERT 0 1", '["basic", "hello"]', "SQL", True, "n1", True, True)]
    # add_job's pg_timetable defaults
    assert q(tdsn, "SELECT task_order, autonomous, ignore_error FROM timetable.task WHERE chain_id = %s",
             (cid,)) == [(10.0, True, True)]
    levels = {r[0] for r in q(tdsn, "SELECT log_level::text FROM timetable.log")}
    assert "INFO" in levels


async def _chain(dsn, name, run_at="@reboot", **cols):
    cols = {"live": True, **cols}
    names = ", ".join(["chain_name", "run_at", *cols])
    marks = ", ".join(["%s"] * (2 + len(cols)))
    return q1(dsn, f"INSERT INTO timetable.chain ({names}) VALUES ({marks}) RETURNING chain_id",
              (name, run_at, *cols.values()))


def _task(dsn, chain_id, order, command, params=(), **cols):
    names = ", ".join(["chain_id", "task_order", "command", *cols])
    marks = ", ".join(["%s"] * (3 + len(cols)))
    tid = q1(dsn, f"INSERT INTO timetable.task ({names}) VALUES ({marks}) RETURNING task_id",
             (chain_id, order, command, *cols.values()))
    for i, p in enumerate(params, 1):
        q(dsn, "INSERT INTO timetable.parameter (task_id, order_id, value) VALUES (%s, %s, %s)", (tid, i, p))
    return tid


async def test_parameters_many_tasks_settings_live_and_ignore_error(tdsn):
    cid = await _chain(tdsn, "many")
    _task(tdsn, cid, 1, "INSERT INTO out VALUES ('p', $1::text || '-' || $2::text)",
          ['[1, "a"]', '[2, "b"]', None, '[3, {"k": 1}]'])
    for i in range(20):  # tasks that fail at random-ish positions, with ignore_error
        _task(tdsn, cid, 10 + i, "SELECT 1/0" if i % 3 == 0 else "INSERT INTO out VALUES ('m', 'ok')",
              ignore_error=True)
    _task(tdsn, cid, 50, "INSERT INTO out VALUES ('skipped', 'x')", live=False)
    _task(tdsn, cid, 60, "INSERT INTO out SELECT 'count', count(*) FILTER (WHERE returncode = 0) || '/' || count(*) "
                         "FROM timetable.execution_log WHERE chain_id = current_setting('pg_timetable.current_chain_id')::bigint")
    _task(tdsn, cid, 70, "INSERT INTO out SELECT 'settings', current_setting('pg_timetable.current_chain_id') || ',' || "
                         "current_setting('pg_timetable.current_task_id') || ',' || "
                         "current_setting('pg_timetable.current_client_name')")
    async with running_engine(tdsn, "n1", SteppingClock(T0)):
        await finished_runs(tdsn, cid, 1)
    assert runs(tdsn, cid)[0][:2] == ("succeeded", "reboot")
    got = q(tdsn, "SELECT chain, v FROM out ORDER BY at")
    assert got[:3] == [("p", "1-a"), ("p", "2-b"), ("p", '3-{"k": 1}')]
    assert ("m", "ok") in got and ("skipped", "x") not in got
    assert ("count", "16/23") in got  # 3 parameter rows + 20 tasks (7 failed) before the counting task
    last_task = q1(tdsn, "SELECT max(task_id) FROM timetable.task")
    assert ("settings", f"{cid},{last_task},n1") in got
    params = q(tdsn, "SELECT params FROM timetable.execution_log WHERE task_id = (SELECT min(task_id) FROM "
                     "timetable.task) ORDER BY last_run")
    assert [p for (p,) in params] == ['[1, "a"]', '[2, "b"]', '[3, {"k": 1}]']
    fails = q(tdsn, "SELECT DISTINCT returncode, output FROM timetable.execution_log WHERE returncode <> 0")
    assert fails == [(-1, "division by zero (SQLSTATE 22012)")]


async def test_failure_rolls_back_runs_on_error_and_keeps_self_destruct_chain(tdsn):
    cid = await _chain(tdsn, "err", self_destruct=True,
                       on_error="INSERT INTO out VALUES ('on_error', current_setting('pg_timetable.current_chain_id') "
                                "|| '/' || current_setting('pg_timetable.current_task_id'))")
    _task(tdsn, cid, 1, "INSERT INTO out VALUES ('rolled back', 'x')")
    _task(tdsn, cid, 2, "SELECT 42/0")
    _task(tdsn, cid, 3, "INSERT INTO out VALUES ('never', 'x')")
    ok = await _chain(tdsn, "selfdestruct", self_destruct=True, on_error="INSERT INTO out VALUES ('wrong', 'x')")
    _task(tdsn, ok, 1, "INSERT INTO out VALUES ('sd', 'ran')")
    _task(tdsn, ok, 2, "SELECT 1/0", ignore_error=True)  # ignored: no on_error, still success
    async with running_engine(tdsn, "n1", SteppingClock(T0)):
        await finished_runs(tdsn, cid, 1)
        await until(lambda: q1(tdsn, "SELECT count(*) = 0 FROM timetable.chain WHERE chain_id = %s", (ok,)))
    assert q(tdsn, "SELECT chain, v FROM out ORDER BY at") == [("sd", "ran"), ("on_error", f"{cid}/0")] or \
        sorted(q(tdsn, "SELECT chain, v FROM out")) == sorted([("sd", "ran"), ("on_error", f"{cid}/0")])
    status, _, _, reason = runs(tdsn, cid)[0]
    assert status == "failed" and "division by zero" in reason
    assert q1(tdsn, "SELECT count(*) FROM timetable.chain WHERE chain_id = %s", (cid,)) == 1  # failed: stays
    assert runs(tdsn, ok)[0][0] == "succeeded"


async def test_autonomous_remote_and_run_as(tdsn, make_db):
    remote = make_db(())
    q(remote, "CREATE TABLE r (v text)")
    q(tdsn, "DROP ROLE IF EXISTS \"Weird Role\"")
    q(tdsn, "CREATE ROLE \"Weird Role\"")
    q(tdsn, "GRANT ALL ON out TO \"Weird Role\"")
    q(tdsn, "CREATE PROCEDURE commit_twice() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO out VALUES ('proc', '1'); "
            "COMMIT; INSERT INTO out VALUES ('proc', '2'); COMMIT; END $$")
    cid = await _chain(tdsn, "auto")
    _task(tdsn, cid, 1, "VACUUM out", autonomous=True)
    _task(tdsn, cid, 2, "CALL commit_twice()", autonomous=True)
    _task(tdsn, cid, 3, "INSERT INTO r VALUES ($1)", ['["one"]', '["two"]'], database_connection=remote)
    _task(tdsn, cid, 4, "INSERT INTO out VALUES ('role', current_user)", run_as="Weird Role")
    _task(tdsn, cid, 5, "INSERT INTO out VALUES ('after role', current_user)")
    try:
        async with running_engine(tdsn, "n1", SteppingClock(T0)):
            await finished_runs(tdsn, cid, 1)
        assert runs(tdsn, cid)[0][0] == "succeeded", runs(tdsn, cid)
        got = q(tdsn, "SELECT chain, v FROM out ORDER BY at")
        assert got[:2] == [("proc", "1"), ("proc", "2")]
        assert ("role", "Weird Role") in got and ("after role", "postgres") in got
        assert sorted(q(remote, "SELECT v FROM r")) == [("one",), ("two",)]
    finally:
        q(tdsn, "DROP OWNED BY \"Weird Role\"")
        q(tdsn, "DROP ROLE \"Weird Role\"")


async def test_task_and_chain_timeouts(tdsn):
    t1 = await _chain(tdsn, "task timeout", on_error="INSERT INTO out VALUES ('on_error', 'after timeout')")
    _task(tdsn, t1, 1, "SELECT pg_sleep(20)", timeout=300)
    t2 = await _chain(tdsn, "cli task timeout")
    _task(tdsn, t2, 1, "SELECT pg_sleep(20)")
    t3 = await _chain(tdsn, "chain timeout", timeout=400)
    _task(tdsn, t3, 1, "SELECT pg_sleep(0.1)")
    _task(tdsn, t3, 2, "SELECT pg_sleep(20)")
    t4 = await _chain(tdsn, "ignored timeout")
    _task(tdsn, t4, 1, "SELECT pg_sleep(20)", timeout=200, ignore_error=True)
    _task(tdsn, t4, 2, "INSERT INTO out VALUES ('t4', 'continued')")
    async with running_engine(tdsn, "n1", SteppingClock(T0), task_timeout_ms=500):
        for cid in (t1, t2, t3, t4):
            await finished_runs(tdsn, cid, 1)
    assert runs(tdsn, t1)[0][0] == "failed" and "task timed out" in runs(tdsn, t1)[0][3]
    assert runs(tdsn, t2)[0][0] == "failed" and "task timed out" in runs(tdsn, t2)[0][3]
    assert runs(tdsn, t3)[0][0] == "failed" and "chain timed out" in runs(tdsn, t3)[0][3]
    assert runs(tdsn, t4)[0][0] == "succeeded"
    assert sorted(q(tdsn, "SELECT chain, v FROM out")) == [("on_error", "after timeout"), ("t4", "continued")]


async def test_task_kinds_are_pluggable_and_placeholders_fail_clearly(tdsn, monkeypatch):
    from engine.timetable import tasks
    from engine.timetable.tasks.unsupported import NotSupportedKind

    tasks.get_kind("SQL")  # load the registry, then put the placeholder in place for this test
    monkeypatch.setitem(tasks.TASK_KINDS, "PROGRAM", NotSupportedKind("PROGRAM"))
    cid = await _chain(tdsn, "prog")
    _task(tdsn, cid, 1, "echo", ['["hi"]'], kind="PROGRAM")
    async with running_engine(tdsn, "n1", SteppingClock(T0)):
        await finished_runs(tdsn, cid, 1)
    out = q1(tdsn, "SELECT output FROM timetable.execution_log WHERE chain_id = %s", (cid,))
    assert "PROGRAM tasks are not supported yet" in out
    assert runs(tdsn, cid)[0][0] == "failed"


async def test_delayed_retry_via_notify_chain_start(tdsn):
    q(tdsn, "CREATE TABLE attempts (n serial, at timestamptz DEFAULT now())")
    cid = await _chain(tdsn, "retry", "@every 10 minutes",
                       on_error="SELECT timetable.notify_chain_start("
                                "current_setting('pg_timetable.current_chain_id')::bigint, "
                                "current_setting('pg_timetable.current_client_name'), interval '30 seconds')")
    _task(tdsn, cid, 1, "INSERT INTO attempts DEFAULT VALUES", autonomous=True)
    _task(tdsn, cid, 2, "SELECT 42/0")
    clock = SteppingClock(T0)
    async with running_engine(tdsn, "n1", clock):
        await finished_runs(tdsn, cid, 1)
        await asyncio.sleep(0.3)
        assert q1(tdsn, "SELECT count(*) FROM attempts") == 1  # the retry waits for its delay
        clock.advance(31)
        r = await finished_runs(tdsn, cid, 2)
        assert [x[1] for x in r[:2]] == ["every", "manual"]
        assert q1(tdsn, "SELECT count(*) FROM attempts") >= 2


async def test_client_specific_chains_and_name_lock(tdsn):
    mine = await _chain(tdsn, "for n2", client_name="n2")
    _task(tdsn, mine, 1, "INSERT INTO out VALUES ('n2 only', current_setting('pg_timetable.current_client_name'))")
    clock = SteppingClock(T0)
    async with running_engine(tdsn, "n1", clock):
        async with running_engine(tdsn, "n2", clock):
            await finished_runs(tdsn, mine, 1)
            with pytest.raises(ClientNameInUse):
                async with running_engine(tdsn, "n2", clock):
                    pass
    assert q(tdsn, "SELECT chain, v FROM out") == [("n2 only", "n2")]
    assert q1(tdsn, "SELECT client_name FROM timetable.chain_run WHERE chain_id = %s", (mine,)) == "n2"
    assert q1(tdsn, "SELECT count(*) FROM timetable.active_session") == 0  # clean shutdown removes sessions


async def test_stop_every_instance_and_interval_chains(tdsn):
    cid = await _chain(tdsn, "long", "@every 1 second", max_instances=3)
    _task(tdsn, cid, 1, "SELECT pg_sleep(30)")
    clock = SteppingClock(T0)
    async with running_engine(tdsn, "n1", clock):
        for _ in range(2):
            clock.advance(1)
            await asyncio.sleep(0.3)
        await until(lambda: q1(tdsn, "SELECT count(*) >= 3 FROM timetable.chain_run WHERE chain_id = %s "
                                     "AND status = 'running'", (cid,)), what="three running instances")
        q(tdsn, "SELECT timetable.pause_job('long')")
        q(tdsn, "SELECT timetable.notify_chain_stop(%s, 'n1')", (cid,))
        r = await finished_runs(tdsn, cid, 3)
    assert all(x[0] == "failed" and "stopped by notify_chain_stop" in x[3] for x in r), r
    assert q1(tdsn, "SELECT count(*) FROM timetable.active_chain") == 0


async def test_max_instances_is_cluster_wide(tdsn):
    cid = await _chain(tdsn, "one at a time", "@every 1 second", max_instances=1)
    _task(tdsn, cid, 1, "SELECT pg_sleep(1.5)")
    clock = SteppingClock(T0)
    async with running_engine(tdsn, "a", clock), running_engine(tdsn, "b", clock):
        for _ in range(4):
            await asyncio.sleep(0.4)
            assert q1(tdsn, "SELECT count(*) FROM timetable.chain_run WHERE chain_id = %s AND status = 'running'",
                      (cid,)) <= 1
            clock.advance(1)
        await until(lambda: q1(tdsn, "SELECT count(*) FROM timetable.chain_run WHERE chain_id = %s "
                                     "AND status = 'skipped'", (cid,)), what="a skipped firing")
    assert q1(tdsn, "SELECT count(*) FROM timetable.chain_run WHERE chain_id = %s AND reason LIKE "
                    "'max_instances (1) reached%%'", (cid,)) >= 1


async def test_exclusive_execution_holds_across_engines(tdsn):
    q(tdsn, "CREATE TABLE spans (who text, s timestamptz, e timestamptz)")
    x = await _chain(tdsn, "excl", exclusive_execution=True, client_name="a")  # @reboot: once per engine
    _task(tdsn, x, 1, "SELECT pg_sleep(0.6); INSERT INTO spans VALUES ('X', clock_timestamp() - interval '0.6 s', "
                      "clock_timestamp())")
    others = []
    for i in range(4):
        cid = await _chain(tdsn, f"plain{i}", client_name="a" if i % 2 else "b")
        _task(tdsn, cid, 1, f"SELECT pg_sleep(0.3); INSERT INTO spans VALUES ('p{i}', "
                            f"clock_timestamp() - interval '0.3 s', clock_timestamp())")
        others.append(cid)
    clock = SteppingClock(T0)
    async with running_engine(tdsn, "a", clock), running_engine(tdsn, "b", clock):
        await until(lambda: q1(tdsn, "SELECT count(*) = 5 FROM spans"), timeout=15, what="all chains")
    xs, xe = q(tdsn, "SELECT s, e FROM spans WHERE who = 'X'")[0]
    for who, s, e in q(tdsn, "SELECT who, s, e FROM spans WHERE who <> 'X'"):
        assert e <= xs + timedelta(milliseconds=50) or s >= xe - timedelta(milliseconds=50), (who, s, e, xs, xe)


async def test_edits_pauses_and_new_chains_take_effect_within_a_second(tdsn):
    clock = SteppingClock(T0)
    async with running_engine(tdsn, "n1", clock, poll_seconds=5.0):  # only NOTIFY can be this fast
        cid = await _chain(tdsn, "new", "15 * * * *")
        await until(lambda: q1(tdsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,)),
                    timeout=1.0, what="next_due_at of a new chain")
        assert q1(tdsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,)) == \
            datetime(2030, 1, 1, 0, 15, tzinfo=timezone.utc)
        q(tdsn, "UPDATE timetable.chain SET run_at = '*/5 * * * *' WHERE chain_id = %s", (cid,))
        await until(lambda: q1(tdsn, "SELECT next_due_at = '2030-01-01 00:05Z' FROM timetable.chain_state "
                                     "WHERE chain_id = %s", (cid,)), timeout=1.0, what="edited schedule")
        q(tdsn, "SELECT timetable.pause_job('new')")
        await until(lambda: q1(tdsn, "SELECT NOT dirty AND next_due_at IS NULL FROM timetable.chain_state "
                                     "WHERE chain_id = %s", (cid,)), timeout=1.0, what="paused")
        q(tdsn, "INSERT INTO timetable.chain_option (chain_id, time_zone) VALUES (%s, 'Asia/Kolkata')", (cid,))
        q(tdsn, "SELECT timetable.resume_job('new')")
        # Kolkata is UTC+5:30, so */5 wall minutes are still :00/:05 UTC + 30 min offsets -> 00:05Z
        await until(lambda: q1(tdsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,)),
                    timeout=1.0, what="resumed")


@pytest.mark.parametrize("zone, run_at, start, expect", [
    # DST gap: 02:30 does not exist in Berlin on 2026-03-29 -> runs at the transition (03:00 CEST = 01:00Z)
    ("Europe/Berlin", "30 2 * * *", datetime(2026, 3, 29, 0, 50, tzinfo=timezone.utc),
     [datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)]),
    # DST overlap: 02:30 happens twice in Berlin on 2026-10-25 -> runs once, at the first (00:30Z)
    ("Europe/Berlin", "30 2 * * *", datetime(2026, 10, 25, 0, 0, tzinfo=timezone.utc),
     [datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)]),
    # month end: L = last day of February
    ("UTC", "0 12 L * *", datetime(2030, 2, 27, 13, 0, tzinfo=timezone.utc),
     [datetime(2030, 2, 28, 12, 0, tzinfo=timezone.utc)]),
])
async def test_schedule_edges_with_a_stepped_clock(tdsn, zone, run_at, start, expect):
    cid = await _chain(tdsn, "edge", run_at)
    q(tdsn, "INSERT INTO timetable.chain_option (chain_id, time_zone) VALUES (%s, %s)", (cid, zone))
    _task(tdsn, cid, 1, "INSERT INTO out VALUES ('edge', 'x')")
    clock = SteppingClock(start)
    async with running_engine(tdsn, "n1", clock):
        await until(lambda: q1(tdsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,)))
        for _ in range(60):  # walk two days in 48-minute steps
            clock.advance(timedelta(minutes=48))
            await asyncio.sleep(0.02)
        await finished_runs(tdsn, cid, len(expect))
        await asyncio.sleep(0.3)
    got = [r[2] for r in runs(tdsn, cid)]
    assert got[:len(expect)] == expect
    # nothing else fired inside the walked window, apart from the following days' normal firings
    assert len(got) == len(set(got))


@pytest.mark.parametrize("policy, expected", [("run_once", 1), ("skip", 0), ("run_all", 5)])
async def test_missed_firings_after_downtime_follow_the_policy(tdsn, policy, expected):
    cid = await _chain(tdsn, "hourly", "0 * * * *")
    q(tdsn, "INSERT INTO timetable.chain_option (chain_id, missed_runs) VALUES (%s, %s)", (cid, policy))
    _task(tdsn, cid, 1, "INSERT INTO out VALUES ('hourly', 'x')")
    clock = SteppingClock(datetime(2030, 1, 1, 0, 30, tzinfo=timezone.utc))
    async with running_engine(tdsn, "n1", clock):
        await until(lambda: q1(tdsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,)))
    clock.set(datetime(2030, 1, 1, 5, 30, tzinfo=timezone.utc))  # the engine was down 01:00 .. 05:00
    async with running_engine(tdsn, "n1", clock):
        if expected:
            await finished_runs(tdsn, cid, expected)
        await until(lambda: q1(tdsn, "SELECT next_due_at = '2030-01-01 06:00Z' FROM timetable.chain_state "
                                     "WHERE chain_id = %s", (cid,)), what="re-armed at 06:00")
        await asyncio.sleep(0.3)
    got = runs(tdsn, cid)
    assert len(got) == expected
    assert all(r[1] == "missed" and r[0] == "succeeded" for r in got)
    if policy == "run_once":
        assert got[0][2] == datetime(2030, 1, 1, 5, 0, tzinfo=timezone.utc)
    msg = q1(tdsn, "SELECT message FROM timetable.log WHERE message LIKE '%%missed firing%%'")
    assert msg.startswith(f"5 missed firing(s) of chain {cid}: policy {policy}")


async def test_reboot_runs_once_per_engine_start(tdsn):
    cid = await _chain(tdsn, "boot", "@reboot")
    _task(tdsn, cid, 1, "INSERT INTO out VALUES ('boot', 'x')")
    clock = SteppingClock(T0)
    for _ in range(2):
        async with running_engine(tdsn, "n1", clock):
            await asyncio.sleep(0.5)
    assert q1(tdsn, "SELECT count(*) FROM out") == 2


def test_job_api_functions(tdsn):
    with psycopg.connect(tdsn, autocommit=True) as c:
        cid = c.execute("SELECT timetable.add_job('api', '@every 1 hour', 'SELECT 1')").fetchone()[0]
        t1 = c.execute("SELECT task_id FROM timetable.task WHERE chain_id = %s", (cid,)).fetchone()[0]
        t2 = c.execute("SELECT timetable.add_task('SQL', 'SELECT 2', %s)", (t1,)).fetchone()[0]
        t3 = c.execute("SELECT timetable.add_task('SQL', 'SELECT 3', %s, 5)", (t2,)).fetchone()[0]
        order = lambda: [r[0] for r in c.execute(  # noqa: E731
            "SELECT task_id FROM timetable.task WHERE chain_id = %s ORDER BY task_order", (cid,)).fetchall()]
        assert order() == [t1, t2, t3]
        assert c.execute("SELECT timetable.move_task_up(%s)", (t3,)).fetchone()[0] is True
        assert order() == [t1, t3, t2]
        assert c.execute("SELECT timetable.move_task_down(%s)", (t2,)).fetchone()[0] is False
        assert c.execute("SELECT timetable.move_task_up(%s)", (t1,)).fetchone()[0] is False
        assert c.execute("SELECT timetable.delete_task(%s)", (t3,)).fetchone()[0] is True
        assert c.execute("SELECT timetable.pause_job('api'), timetable.resume_job('nope')").fetchone() == (True, False)
        c.execute("LISTEN someworker")
        c.execute("SELECT timetable.notify_chain_start(%s, 'someworker', interval '90 seconds')", (cid,))
        c.execute("SELECT timetable.notify_chain_stop(%s, 'someworker')", (cid,))
        notes = list(c.notifies(timeout=1, stop_after=2))
        import json
        start, stop = (json.loads(n.payload) for n in notes)
        assert start["ConfigID"] == cid and start["Command"] == "START" and start["Delay"] == 90
        assert stop["Command"] == "STOP" and "Ts" in stop
        assert c.execute("SELECT timetable.delete_job('api'), timetable.delete_job('api')").fetchone() == (True, False)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match='cron field "hour"'):
            c.execute("SELECT timetable.add_job('bad', '0 25 * * *', 'SELECT 1')")


async def test_program_timeout_records_the_programs_own_status_and_output(tdsn):
    """A PROGRAM killed at its task timeout: execution_log has the program's own result (137
    and what it printed before), not the executor's -1 "task timed out"."""
    cid = await _chain(tdsn, "slow program")
    _task(tdsn, cid, 1, "/bin/sh", ['["-c", "echo started; echo to-stderr >&2; sleep 30"]'], kind="PROGRAM",
          timeout=700)
    async with running_engine(tdsn, "n1", SteppingClock(T0)):
        t0 = asyncio.get_running_loop().time()
        r = await finished_runs(tdsn, cid, 1, timeout=15)
        assert asyncio.get_running_loop().time() - t0 < 8  # killed at the timeout, not after the sleep
    assert r[0][0] == "failed" and "timed out" in r[0][3], r
    rc, output = q(tdsn, "SELECT returncode, output FROM timetable.execution_log WHERE chain_id = %s", (cid,))[0]
    assert rc == 137, (rc, output)
    assert "started" in output and "to-stderr" in output and "killed after the timeout of 700 ms" in output


async def test_every_200_milliseconds_fires_on_its_grid(tdsn):
    """Sub-second @every: each firing 200 ms after the previous one (not rounded to a
    second or to the loop's poll); a step of one second: the four firings before the last one
    in it are missed, and the default policy (run_once) runs only that last one for them.
    (Below the 1-second floor: the database's setting lowers it, as README says.)"""
    q(tdsn, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET pgtt.timetable_min_interval = %L', "
            "current_database(), '100 ms'); END $$")
    cid = await _chain(tdsn, "fast", "@every 200 milliseconds")
    _task(tdsn, cid, 1, "INSERT INTO out VALUES ('fast', current_setting('pg_timetable.current_chain_id'))")
    clock = SteppingClock(T0)
    step = timedelta(milliseconds=200)
    async with running_engine(tdsn, "n1", clock, poll_seconds=5.0):
        await finished_runs(tdsn, cid, 1)  # a new interval chain runs at once
        for i in range(1, 6):
            await until(lambda: q1(tdsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s",
                                   (cid,)) == T0 + i * step, what=f"next due {i}")
            clock.advance(step)
            await finished_runs(tdsn, cid, i + 1)
        clock.advance(timedelta(seconds=1))  # five more firings in one step
        await finished_runs(tdsn, cid, 7)
        await asyncio.sleep(0.3)
    got = runs(tdsn, cid)
    assert [r[2] for r in got] == [T0 + i * step for i in (0, 1, 2, 3, 4, 5, 10)]
    assert {(r[0], r[1]) for r in got} == {("succeeded", "every")}
    assert q1(tdsn, "SELECT count(*) FROM out WHERE chain = 'fast'") == 7
    assert q1(tdsn, "SELECT message FROM timetable.log WHERE message LIKE '%%missed%%'").startswith(
        f"4 missed firing(s) of chain {cid}: policy run_once: no separate catch-up")
    assert q1(tdsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,)) == T0 + 11 * step


@pytest.mark.parametrize("level", ["none", "error", "info", "debug"])
async def test_log_database_level_filters_what_is_written(tdsn, level):
    good = await _chain(tdsn, "good", live=False)
    _task(tdsn, good, 1, "SELECT 1")
    bad = await _chain(tdsn, "bad", live=False)
    _task(tdsn, bad, 1, "SELECT 1/0", ignore_error=True)  # an ignored failure
    _task(tdsn, bad, 2, "SELECT 2/0")                     # the chain's failure
    async with running_engine(tdsn, "lv", SteppingClock(T0), log_database_level=level) as sched:
        for cid in (good, bad):
            await sched.start_adhoc(cid)
            await finished_runs(tdsn, cid, 1)
    assert [r[0] for r in runs(tdsn, good) + runs(tdsn, bad)] == ["succeeded", "failed"]
    levels = {r[0] for r in q(tdsn, "SELECT DISTINCT log_level::text FROM timetable.log WHERE client_name = 'lv'")}
    messages = {r[0] for r in q(tdsn, "SELECT message FROM timetable.log WHERE client_name = 'lv'")}
    execs = sorted(q(tdsn, "SELECT chain_id = %s, returncode FROM timetable.execution_log", (bad,)))
    if level == "none":
        assert levels == set() and execs == []
    elif level == "error":
        assert levels == {"ERROR"} and "Chain failed" in messages
        assert execs == [(True, -1)]  # only the failure of the task without ignore_error
    else:
        assert levels == {"INFO", "ERROR"}  # the engine writes no DEBUG rows for these runs
        assert {"Engine started", "Starting chain", "Chain succeeded", "Chain failed"} <= messages
        assert execs == [(False, 0), (True, -1), (True, -1)]
