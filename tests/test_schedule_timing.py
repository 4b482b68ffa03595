"""schedule timing with a FakeClock: each rule key, combinations, windows, DST gap and
overlap in a named zone, 6-field seconds, @every_second; SQL/evaluator parity for cron text."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from engine.clock import FakeClock
from engine.db import ConnSettings
from engine.schedule.manager import DatabaseManager
from engine.schedules import ScheduleError, pgpro_schedule

UTC = timezone.utc


@pytest.fixture
def sdb(make_db):
    dsn = make_db(("schedule",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT schedule.enable()")
        yield dsn, conn


async def planned_times(dsn, conn, options: dict, start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """Create the job, walk the FakeClock from start to end, return the firings that ran."""
    conn.execute("TRUNCATE schedule.cron, schedule.cron_run")
    conn.execute("SELECT schedule.create_job(%s::jsonb)", (json.dumps({"commands": "select 1", **options}),))
    clock = FakeClock(start)
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=clock)
    try:
        await m.step()
        while clock.now() < end:
            # jump straight to the next planned firing (or by step), as the loop does
            nxt = await m.next_wake()
            target = min(nxt, end) if nxt is not None and nxt > clock.now() else min(clock.now() + step, end)
            clock.set(target)
            await m.step()
            await m.drain()
    finally:
        await m.close()
    return [r[0] for r in conn.execute("SELECT scheduled_at FROM schedule.cron_run WHERE state = 'done' "
                                       "ORDER BY 1").fetchall()]


def d(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


@pytest.mark.parametrize("rule, start, end, expect", [
    ({"minutes": [10, 20]}, d(2030, 1, 1), d(2030, 1, 1, 1, 30),
     [d(2030, 1, 1, 0, 10), d(2030, 1, 1, 0, 20), d(2030, 1, 1, 1, 10), d(2030, 1, 1, 1, 20)]),
    ({"seconds": [0, 30], "minutes": [1]}, d(2030, 1, 1), d(2030, 1, 1, 0, 2),
     [d(2030, 1, 1, 0, 1, 0), d(2030, 1, 1, 0, 1, 30)]),
    ({"hours": [6], "minutes": [0]}, d(2030, 1, 1), d(2030, 1, 3),
     [d(2030, 1, 1, 6), d(2030, 1, 2, 6)]),
    ({"days": [2], "hours": [0], "minutes": [0]}, d(2030, 1, 1), d(2030, 3, 3),
     [d(2030, 1, 2), d(2030, 2, 2), d(2030, 3, 2)]),
    ({"months": [2], "days": [1], "hours": [0], "minutes": [0]}, d(2030, 1, 1), d(2031, 3, 1),
     [d(2030, 2, 1), d(2031, 2, 1)]),
    # wdays: 0 = Sunday; 2030-01-06 is a Sunday.  days AND wdays = Sunday the 6th only
    ({"wdays": [0], "hours": [12], "minutes": [0]}, d(2030, 1, 1), d(2030, 1, 14),
     [d(2030, 1, 6, 12), d(2030, 1, 13, 12)]),
    ({"days": [6, 7], "wdays": [0], "hours": [12], "minutes": [0]}, d(2030, 1, 1), d(2030, 1, 14),
     [d(2030, 1, 6, 12)]),
])
async def test_each_rule_key_missing_keys_mean_every(sdb, rule, start, end, expect):
    dsn, conn = sdb
    assert await planned_times(dsn, conn, {"rule": rule, "tz": "UTC"}, start, end, timedelta(hours=6)) == expect


async def test_cron_rule_and_dates_combined_and_window(sdb):
    dsn, conn = sdb
    got = await planned_times(dsn, conn, {
        "cron": "0 15 * * *", "rule": {"hours": [3], "minutes": [30]},
        "dates": ["2030-01-01 19:00+00", "2030-01-05 13:00+00"],
        "start_date": "2030-01-01 10:00+00", "end_date": "2030-01-02 16:00+00", "tz": "UTC"},
        d(2030, 1, 1), d(2030, 1, 6), timedelta(hours=6))
    assert got == [d(2030, 1, 1, 15), d(2030, 1, 1, 19), d(2030, 1, 2, 3, 30), d(2030, 1, 2, 15)]


async def test_six_fields_and_every_second(sdb):
    dsn, conn = sdb
    got = await planned_times(dsn, conn, {"cron": "*/20 0 0 * * *", "tz": "UTC"}, d(2030, 1, 1),
                              d(2030, 1, 1, 0, 1), timedelta(seconds=10))
    assert got == [d(2030, 1, 1, 0, 0, 20), d(2030, 1, 1, 0, 0, 40)]
    got = await planned_times(dsn, conn, {"cron": "@every_second", "tz": "UTC"}, d(2030, 1, 1),
                              d(2030, 1, 1, 0, 0, 5), timedelta(seconds=1))
    assert got == [d(2030, 1, 1, 0, 0, s) for s in range(1, 6)]


async def test_dst_gap_runs_at_first_valid_instant_and_overlap_runs_once(sdb):
    dsn, conn = sdb
    # Europe/Berlin: 2030-03-31 02:00 -> 03:00 CEST; 2030-10-27 03:00 CEST -> 02:00 CET
    got = await planned_times(dsn, conn, {"cron": "30 2 * * *", "tz": "Europe/Berlin"},
                              d(2030, 3, 29, 12), d(2030, 4, 1, 12), timedelta(hours=6))
    assert got == [d(2030, 3, 30, 1, 30), d(2030, 3, 31, 1, 0), d(2030, 4, 1, 0, 30)]
    got = await planned_times(dsn, conn, {"cron": "30 2 * * *", "tz": "Europe/Berlin"},
                              d(2030, 10, 26, 12), d(2030, 10, 28, 12), timedelta(hours=6))
    # 02:30 happens twice on the 27th (00:30Z CEST and 01:30Z CET): it runs once, the first time
    assert got == [d(2030, 10, 27, 0, 30), d(2030, 10, 28, 1, 30)]


PARITY_CORPUS = [
    "* * * * *", "0 0 * * *", "*/5 * * * *", "0 0 1 1 *", "0 0 L * *", "0 0 1,15,L * *", "0 0 L-2 * *",
    "1-10/2 * * * *", "4/4 * * * *", "0 0 * * MON-FRI", "0 0 * * mon", "0 0 * JAN-mar *", "0 0 * * 7",
    "0 0 * * 8", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "0 0 31 2 *", "0 0 30 2 *",
    "0 0 29 2 *", "0 0 31 2 1", "0 0 31 2,3 *", "5-1 * * * *", "*/0 * * * *", "*/x * * * *", "1,,2 * * * *",
    "1- * * * *", "-1 * * * *", "* * * *", "* * * * * * *", "", "   ", "@daily", "@DAILY", "@every_second",
    "@every_minute", "@reboot", "@often", "@every 5 seconds", "0 0 0 * * *", "59 59 23 31 12 6",
    "0 0 * * L", "L * * * *", "  0  0   * * *  ", "0\t0 * * *", "1/2/3 * * * *", "* * * FOO *", "* * * * SUNDAY",
    "0 0 1-L * *", "0 0 */L * *", "? * * * *", "0 0 * * 0-7", "0 0 * * 7-7", "0 0 * * 5-3", "00 01 * * *",
    "999999999999999999999 * * * *",
]


def test_sql_cron_check_accepts_exactly_what_the_evaluator_accepts(sdb):
    _, conn = sdb
    mismatches = []
    for text in PARITY_CORPUS:
        try:
            pgpro_schedule(cron=text)
            py_ok = True
        except ScheduleError:
            py_ok = False
        problem = conn.execute("SELECT schedule._cron_problem(%s)", (text,)).fetchone()[0]
        if (problem is None) != py_ok:
            mismatches.append((text, problem))
    assert mismatches == []
