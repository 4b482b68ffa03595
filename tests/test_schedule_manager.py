"""schedule manager: runs, transactions, next_time_statement, one-time jobs, limits,
restart safety, exactly-once with several engines.  FakeClock: no sleeping for schedules."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from engine.clock import FakeClock
from engine.db import ConnSettings
from engine.schedule.manager import DatabaseManager

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def sdb(make_db):
    dsn = make_db(("schedule",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT schedule.enable()")
        conn.execute("CREATE TABLE t (x text, at timestamptz DEFAULT clock_timestamp())")
        conn.execute("GRANT ALL ON t TO PUBLIC")
        yield dsn, conn


def manager(dsn, clock, **kw) -> DatabaseManager:
    return DatabaseManager(ConnSettings(dsn=dsn), clock=clock, **kw)


async def cycle(m: DatabaseManager, clock: FakeClock, steps: int = 1, advance: float = 0) -> None:
    for _ in range(steps):
        if advance:
            clock.advance(advance)
        await m.step()
        await m.drain()


def rows(conn, q, *a):
    return conn.execute(q, a).fetchall()


async def test_cron_job_runs_once_per_firing_and_logs(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    jid = conn.execute("SELECT schedule.create_job('* * * * *', 'insert into t values (''m'')')").fetchone()[0]
    m = manager(dsn, clock)
    try:
        await cycle(m, clock)
        assert rows(conn, "SELECT count(*) FROM t") == [(0,)]  # nothing due at creation
        await cycle(m, clock, steps=3, advance=60)
        await cycle(m, clock)  # a pass without time moving runs nothing more
        assert rows(conn, "SELECT count(*) FROM t") == [(3,)]
        log = rows(conn, "SELECT cron, scheduled_at, status FROM schedule.get_log() ORDER BY scheduled_at")
        assert [(r[0], r[1], r[2]) for r in log] == [(jid, T0 + timedelta(minutes=i), "done") for i in (1, 2, 3)]
    finally:
        await m.close()


async def test_text_is_one_transaction_array_is_one_each_same_transaction_and_onrollback(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    conn.execute("""SELECT schedule.create_job('{"commands": "insert into t values (''s1''); select 1/0",
                    "cron": "* * * * *", "name": "text"}')""")
    conn.execute("""SELECT schedule.create_job('{"commands": ["insert into t values (''a1'')", "select 1/0",
                    "insert into t values (''a3'')"], "cron": "* * * * *", "onrollback": "insert into t values (''rb'')"}')""")
    conn.execute("""SELECT schedule.create_job('{"commands": ["insert into t values (''u1'')", "select 1/0"],
                    "cron": "* * * * *", "use_same_transaction": true}')""")
    m = manager(dsn, clock)
    try:
        await cycle(m, clock)
        await cycle(m, clock, advance=60)
        assert sorted(r[0] for r in rows(conn, "SELECT x FROM t")) == ["a1", "rb"]
        msgs = sorted(r[0] for r in rows(conn, "SELECT message FROM schedule.get_log()"))
        assert msgs == ["error in command #1: division by zero", "error in command #2: division by zero",
                        "error: division by zero"] or all("division by zero" in x for x in msgs)
        assert [r[0] for r in rows(conn, "SELECT status FROM schedule.get_log()")] == ["error"] * 3
    finally:
        await m.close()


async def test_next_time_statement_sees_transaction_state_and_chain_continues(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    conn.execute("CREATE TABLE st (s text)")
    # the statement records the state it saw and asks for a run 5 minutes after T0+1min
    jid = conn.execute("""SELECT schedule.create_job(jsonb_build_object(
        'commands', 'select 1/(select count(*) - 1 from st)',
        'cron', '* * * * *',
        'next_time_statement',
        'insert into st values (current_setting(''schedule.transaction_state'')) returning ''2030-01-01 00:06+00''::timestamptz'))""").fetchone()[0]
    m = manager(dsn, clock)
    try:
        await cycle(m, clock)
        await cycle(m, clock, advance=60)  # first run by schedule: 1/(0-1) works -> success
        assert rows(conn, "SELECT s FROM st") == [("success",)]
        assert rows(conn, "SELECT next_run, chain_state FROM schedule.cron") == [(T0 + timedelta(minutes=6), "chain")]
        await cycle(m, clock, steps=4, advance=60)  # minutes 2..5: the chain, not the cron, decides
        assert rows(conn, "SELECT count(*) FROM schedule.get_log()") == [(1,)]
        await cycle(m, clock, advance=60)  # 00:06: 1/(1-1) fails -> failure
        assert rows(conn, "SELECT s FROM st ORDER BY 1") == [("failure",), ("success",)]
        # returning the wrong type breaks the job with a reason
        conn.execute("SELECT schedule.set_job_attribute(%s, 'next_time_statement', 'select 1')", (jid,))
        await cycle(m, clock, advance=60)
        await cycle(m, clock, advance=60)
        broken, reason = conn.execute("SELECT broken, reason FROM schedule.cron").fetchone()
        assert broken and "next time statement" in reason
    finally:
        await m.close()


async def test_one_time_jobs_params_self_id_resubmit_limit_and_cancel(sdb):
    dsn, conn = sdb
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(seconds=2))
    a = conn.execute("SELECT schedule.submit_job(query := 'insert into t values ($1), ($2)', "
                     "params := '{\"text 1\", \"text 2\"}')").fetchone()[0]
    b = conn.execute("SELECT schedule.submit_job('insert into t values (''self '' || schedule.get_self_id()); "
                     "select schedule.resubmit(run_after := ''5'')', resubmit_limit := 3)").fetchone()[0]
    c = conn.execute("SELECT schedule.submit_job('select schedule.resubmit()', resubmit_limit := 100)").fetchone()[0]
    m = manager(dsn, clock)
    try:
        await cycle(m, clock)
        assert {r[0] for r in rows(conn, "SELECT x FROM t")} == {"text 1", "text 2", f"self {b}"}
        assert rows(conn, "SELECT status, attempt FROM schedule.job_status WHERE id = %s", b) == [("submitted", 1)]
        await cycle(m, clock, advance=1)  # resubmit(5): not yet
        assert rows(conn, "SELECT count(*) FROM t WHERE x LIKE 'self%%'") == [(1,)]
        await cycle(m, clock, steps=2, advance=5)
        assert rows(conn, "SELECT count(*) FROM t WHERE x LIKE 'self%%'") == [(3,)]
        st = rows(conn, "SELECT status, is_success, error FROM schedule.job_status WHERE id = %s", b)
        assert st == [("done", False, "resubmit limit reached (3)")]
        # cancel stops further resubmission
        assert conn.execute("SELECT schedule.cancel_job(%s)", (c,)).fetchone()[0] is True
        assert conn.execute("SELECT schedule.cancel_job(%s)", (c,)).fetchone()[0] is False
        await cycle(m, clock, advance=2)
        assert rows(conn, "SELECT status, canceled FROM schedule.job_status WHERE id = %s", c) == [("done", True)]
        assert rows(conn, "SELECT status, is_success FROM schedule.job_status WHERE id = %s", a) == [("done", True)]
    finally:
        await m.close()


async def test_dependency_failure_fails_dependents_with_the_reason(sdb):
    dsn, conn = sdb
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(seconds=2))
    ok = conn.execute("SELECT schedule.submit_job('insert into t values (''ok'')')").fetchone()[0]
    bad = conn.execute("SELECT schedule.submit_job('select 1/0')").fetchone()[0]
    after_ok = conn.execute("SELECT schedule.submit_job('insert into t values (''after ok'')', depends_on := %s)",
                            ([ok],)).fetchone()[0]
    after_bad = conn.execute("SELECT schedule.submit_job('insert into t values (''never'')', depends_on := %s)",
                             ([ok, bad],)).fetchone()[0]
    later = conn.execute("SELECT schedule.submit_job('select 1', run_after := now() + interval '1 hour')").fetchone()[0]
    canceled_dep = conn.execute("SELECT schedule.submit_job('select 2', depends_on := %s)", ([later],)).fetchone()[0]
    conn.execute("SELECT schedule.cancel_job(%s)", (later,))
    m = manager(dsn, clock)
    try:
        await cycle(m, clock, steps=3)
        got = dict((r[0], r[1:]) for r in rows(conn, "SELECT id, status, is_success, error FROM schedule.job_status"))
        assert got[after_ok] == ("done", True, None)
        assert got[after_bad][:2] == ("done", False)
        assert f"job {bad} failed: division by zero" in got[after_bad][2]
        assert got[canceled_dep][:2] == ("done", False) and f"job {later} was canceled" in got[canceled_dep][2]
        assert sorted(r[0] for r in rows(conn, "SELECT x FROM t")) == ["after ok", "ok"]
    finally:
        await m.close()


async def test_worker_limits_hold_under_load_and_queues_are_separate(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    db = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{db}" SET schedule.max_workers = 3')
    conn.execute("CREATE TABLE peak (n int)")
    probe = ("insert into peak select count(*) from pg_stat_activity where application_name like "
             "'pgtt-schedule cron%%' and state = 'active'; select pg_sleep(0.3)")
    for _ in range(10):
        conn.execute("SELECT schedule.create_job('* * * * *', %s)", (probe.replace("%%", "%"),))
    at_ids = [conn.execute("SELECT schedule.submit_job('select pg_sleep(0.3)')").fetchone()[0] for _ in range(4)]
    m = manager(dsn, clock)
    try:
        await m.step()
        assert m.max_workers == 3 and m.max_parallel_workers == 2
        clock.advance(60)
        await m.step()
        await asyncio.sleep(0.1)
        assert len(m._tasks["cron"]) == 3 and len(m._tasks["at"]) == 2  # separate queues, both busy
        await m.drain()
        assert rows(conn, "SELECT max(n), count(*) FROM peak") == [(3, 10)]
        assert rows(conn, "SELECT count(*) FROM schedule.job_status WHERE status = 'done'") == [(len(at_ids),)]
    finally:
        await m.close()


async def test_last_start_available_and_max_instances(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    conn.execute("""SELECT schedule.create_job('{"commands": "select 1", "cron": "* * * * *",
                    "last_start_available": "30 seconds"}')""")
    m = manager(dsn, clock)
    try:
        await m.step()
        clock.advance(60)
        await m.recover(clock.now())
        await m.plan(clock.now())  # planned but not dispatched (as if all workers were busy)
        clock.advance(45)
        await cycle(m, clock)
        msg = rows(conn, "SELECT status, message FROM schedule.get_log()")
        assert msg[0][0] == "error" and "last_start_available" in msg[0][1]
    finally:
        await m.close()


async def test_max_run_time_kills_and_stop_cron_job(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    conn.execute("""SELECT schedule.create_job('{"commands": "insert into t values (''x''); select pg_sleep(30)",
                    "cron": "* * * * *", "max_run_time": "0.3 seconds"}')""")
    m = manager(dsn, clock)
    try:
        await m.step()
        await cycle(m, clock, advance=60)
        st, msg = conn.execute("SELECT status, message FROM schedule.get_log()").fetchone()
        assert st == "error" and "limit" in msg
        assert rows(conn, "SELECT count(*) FROM t") == [(0,)]  # rolled back
    finally:
        await m.close()


async def test_stop_job_interrupts_a_running_one_time_job(sdb):
    dsn, conn = sdb
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(seconds=2))
    jid = conn.execute("SELECT schedule.submit_job('select pg_sleep(30)')").fetchone()[0]
    m = manager(dsn, clock)
    try:
        await m.step()
        for _ in range(100):
            if rows(conn, "SELECT status FROM schedule.job_status WHERE id = %s", jid) == [("processing",)]:
                break
            await asyncio.sleep(0.05)
        assert conn.execute("SELECT schedule.stop_job(%s)", (jid,)).fetchone()[0] is True
        await m.drain(timeout=10)
        st = rows(conn, "SELECT status, is_success, error FROM schedule.job_status WHERE id = %s", jid)
        assert st[0][:2] == ("done", False) and "stopped by" in st[0][2]
    finally:
        await m.close()


async def test_restart_mid_run_marks_interrupted_and_chain_continues(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    conn.execute("""SELECT schedule.create_job(jsonb_build_object('commands', 'select pg_sleep(30)',
        'cron', '* * * * *',
        'next_time_statement', 'select ''2030-01-01 01:00+00''::timestamptz + (case current_setting(''schedule.transaction_state'') when ''failure'' then interval ''1 hour'' else interval ''0'' end)'))""")
    at = conn.execute("SELECT schedule.submit_job('select pg_sleep(30)')").fetchone()[0]
    m1 = manager(dsn, clock)
    await m1.step()
    clock.advance(60)
    await m1.step()
    for _ in range(100):
        if rows(conn, "SELECT count(*) FROM schedule.cron_run WHERE state = 'working'") == [(1,)] and \
                rows(conn, "SELECT status FROM schedule.job_status") == [("processing",)]:
            break
        await asyncio.sleep(0.05)
    # the engine dies: its executor backends go away
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'pgtt-schedule%%'")
    for t in [*m1._tasks["cron"], *m1._tasks["at"]]:
        t.cancel()
    await asyncio.sleep(0.3)
    m1.control = None
    m2 = manager(dsn, clock)
    try:
        await m2.step()
        await m2.drain()
        log = rows(conn, "SELECT status, message FROM schedule.get_log()")
        assert log[0][0] == "error" and log[0][1].startswith("interrupted")
        st = rows(conn, "SELECT status, is_success, error FROM schedule.job_status WHERE id = %s", at)
        assert st[0][:2] == ("done", False) and st[0][2].startswith("interrupted")
        # the chain went on: next_time_statement ran with transaction_state = failure
        await m2.step()
        assert rows(conn, "SELECT next_run, chain_state, broken FROM schedule.cron") == [
            (datetime(2030, 1, 1, 2, tzinfo=timezone.utc), "chain", False)]
    finally:
        await m2.close()
        for kind in ("cron", "at"):
            for c in m1._idle[kind]:
                await c.close()


async def test_two_engines_run_each_firing_exactly_once(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    db = conn.info.dbname
    conn.execute(f'ALTER DATABASE "{db}" SET schedule.max_workers = 4')
    for i in range(12):
        conn.execute("SELECT schedule.create_job('* * * * *', %s)", (f"insert into t values ('{i}')",))
    for i in range(6):
        conn.execute("SELECT schedule.submit_job(%s)", (f"insert into t values ('at{i}')",))
    engines = [manager(dsn, clock, engine_name=f"e{i}") for i in range(3)]
    try:
        await asyncio.gather(*(e.step() for e in engines))
        for _ in range(3):
            clock.advance(60)
            await asyncio.gather(*(e.step() for e in engines))
            await asyncio.gather(*(e.drain() for e in engines))
        assert rows(conn, "SELECT count(*), count(DISTINCT x) FROM t WHERE x NOT LIKE 'at%%'") == [(36, 12)]
        assert rows(conn, "SELECT x, count(*) FROM t GROUP BY x HAVING count(*) <> 3 AND x NOT LIKE 'at%%'") == []
        assert rows(conn, "SELECT count(*) FROM t WHERE x LIKE 'at%%'") == [(6,)]
    finally:
        for e in engines:
            await e.close()


async def test_window_start_end_and_disabled_scheduler(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    conn.execute("""SELECT schedule.create_job('{"commands": "insert into t values (''w'')", "cron": "* * * * *",
                    "start_date": "2030-01-01 00:03+00", "end_date": "2030-01-01 00:05+00"}')""")
    m = manager(dsn, clock)
    try:
        await cycle(m, clock)
        await cycle(m, clock, steps=8, advance=60)
        assert rows(conn, "SELECT scheduled_at FROM schedule.get_log() ORDER BY 1") == [
            (T0 + timedelta(minutes=i),) for i in (3, 4, 5)]
        conn.execute("SELECT schedule.disable()")
        conn.execute("SELECT schedule.create_job('* * * * *', 'insert into t values (''d'')')")
        await cycle(m, clock, steps=2, advance=60)
        assert rows(conn, "SELECT count(*) FROM t WHERE x = 'd'") == [(0,)]
    finally:
        await m.close()


async def test_catch_up_after_downtime_runs_once(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    conn.execute("SELECT schedule.create_job('* * * * *', 'insert into t values (''c'')')")
    m = manager(dsn, clock)
    try:
        await cycle(m, clock)
        clock.advance(timedelta(hours=2))
        await cycle(m, clock)
        assert rows(conn, "SELECT count(*) FROM t") == [(1,)]
        msg = conn.execute("SELECT message FROM schedule.get_log()").fetchone()[0]
        assert "catch-up: 120 firing(s)" in msg
    finally:
        await m.close()


async def test_end_date_stops_a_running_job(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    conn.execute("""SELECT schedule.create_job('{"commands": "select pg_sleep(30)", "cron": "* * * * *",
                    "end_date": "2030-01-01 00:01:30+00"}')""")
    m = manager(dsn, clock)
    try:
        await m.step()
        clock.advance(60)
        await m.step()
        await asyncio.sleep(0.3)
        clock.advance(40)  # past end_date while it runs
        await m.drain(timeout=10)
        st, msg = conn.execute("SELECT status, message FROM schedule.get_log()").fetchone()
        assert st == "error" and "end_date" in msg
    finally:
        await m.close()


async def test_a_job_that_leaves_its_role_is_rolled_back(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    role = f"jobrole_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE ROLE "{role}"')
    conn.execute("SELECT schedule.create_job(jsonb_build_object('cron', '* * * * *', 'run_as', %s::text, "
                 "'commands', 'insert into t values (''x''); reset role'))", (role,))
    m = manager(dsn, clock)
    try:
        await cycle(m, clock)
        await cycle(m, clock, advance=60)
        st, msg = conn.execute("SELECT status, message FROM schedule.get_log()").fetchone()
        assert st == "error" and "may not change its role" in msg  # the sandbox refuses RESET ROLE
        assert rows(conn, "SELECT count(*) FROM t") == [(0,)]
    finally:
        await m.close()
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')
