"""Log retention for timetable.log and timetable.execution_log."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from engine.db import ConnSettings
from engine.errors import InputError
from engine.timetable.retention import RetentionService, build_services, prune_logs
from engine.worker import WorkerOptions

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=timezone.utc)


def _fill(conn, n_log=50, n_exec=40):
    # one row per hour going back from NOW; a few execution rows never finished
    conn.execute("INSERT INTO timetable.log (ts, pid, log_level, client_name, message) "
                 "SELECT %s - g * interval '1 hour', 1, 'INFO', 'c', 'm' || g FROM generate_series(0, %s - 1) g",
                 (NOW, n_log))
    conn.execute("INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, client_name) "
                 "SELECT 1, 1, g, %(now)s - g * interval '1 hour' - interval '1 minute', "
                 "       CASE WHEN g %% 10 = 5 THEN NULL ELSE %(now)s - g * interval '1 hour' END, 'c' "
                 "FROM generate_series(0, %(n)s - 1) g", {"now": NOW, "n": n_exec})


def _counts(conn):
    return (conn.execute("SELECT count(*) FROM timetable.log").fetchone()[0],
            conn.execute("SELECT count(*) FROM timetable.execution_log").fetchone()[0])


async def test_prune_by_age_and_rows(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        _fill(c)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        # age: keep the last 24 hours (rows 0..23 are younger than 24 h; row 24 is exactly 24 h: goes? no: '<')
        d_log, d_exec = await prune_logs(conn, timedelta(hours=24), None, batch=7, now=NOW)
        assert (d_log, d_exec) == (50 - 25, 40 - 25)
        with psycopg.connect(dsn, autocommit=True) as c:
            assert _counts(c) == (25, 25)
            oldest = c.execute("SELECT min(ts) FROM timetable.log").fetchone()[0]
            assert oldest == NOW - timedelta(hours=24)
        # rows: at most 10 newest stay
        d_log, d_exec = await prune_logs(conn, None, 10, batch=3, now=NOW)
        assert (d_log, d_exec) == (15, 15)
        with psycopg.connect(dsn, autocommit=True) as c:
            assert _counts(c) == (10, 10)
            assert c.execute("SELECT min(ts) FROM timetable.log").fetchone()[0] == NOW - timedelta(hours=9)
        # nothing more to do; 0 rows allowed empties the tables
        assert await prune_logs(conn, timedelta(days=30), 10, now=NOW) == (0, 0)
        assert await prune_logs(conn, None, 0, now=NOW) == (10, 10)


async def test_prune_bad_input_changes_nothing(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        _fill(c, 5, 5)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        with pytest.raises(InputError, match="--log-retention-days: must be more than 0"):
            await prune_logs(conn, timedelta(0), None)
        with pytest.raises(InputError, match="--log-max-rows"):
            await prune_logs(conn, None, -1)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        with pytest.raises(InputError, match="autocommit"):
            await prune_logs(conn, timedelta(days=1), None)
    with psycopg.connect(dsn, autocommit=True) as c:
        assert _counts(c) == (5, 5)


async def test_retention_service_in_worker_context(dsn):
    from engine.clock import FakeClock
    from engine.worker import WorkerContext

    with psycopg.connect(dsn, autocommit=True) as c:
        _fill(c, 30, 30)
    opts = WorkerOptions(settings=ConnSettings(dsn=dsn), module_options={
        "timetable_retention": {"log_retention_days": 0.5, "log_max_rows": 5, "interval": 0.05}})
    [svc] = build_services(opts)
    assert build_services(WorkerOptions(settings=ConnSettings(dsn=dsn))) == []
    ctx = WorkerContext(settings=ConnSettings(dsn=dsn), clock=FakeClock(NOW), client_name="r", options=opts,
                        stopping=asyncio.Event())
    task = asyncio.create_task(svc.run(ctx))
    for _ in range(100):
        if svc.passes >= 2:
            break
        await asyncio.sleep(0.05)
    ctx.stopping.set()
    await asyncio.wait_for(task, 5)
    assert svc.deleted == {"log": 25, "execution_log": 25}
    assert svc.health()["ok"] and svc.metrics()[0].name == "pgtt_timetable_log_rows_pruned_total"
    with psycopg.connect(dsn, autocommit=True) as c:
        assert _counts(c) == (5, 5)
