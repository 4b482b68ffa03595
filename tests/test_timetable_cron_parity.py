"""The SQL side (timetable.cron domain, cron_next, next_run) agrees with engine/schedules.py.

Random expressions, random instants, several zones including DST edges: the domain accepts
exactly what the evaluator accepts (and names the same field when it refuses), and the
next firing computed in PL/pgSQL equals the evaluator's.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from engine import schedules

ZONES = [None, "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]

_ATOMS = {
    "second": ["*", "0", "5", "30", "59", "*/15", "10-20", "10-40/7", "7/20", "60", "1,2,3", "0-59/30"],
    "minute": ["*", "0", "15", "*/5", "0-30/10", "5/20", "1,2,40-45", "59", "61", "*/0", "3-1", "a"],
    "hour": ["*", "0", "2", "1-3", "*/6", "0-20/2", "23", "24", "2,14", "1-3,5"],
    "dom": ["*", "1", "15", "31", "L", "1,15,L", "29", "30", "*/10", "28-31", "0", "L-2", "30,31"],
    "month": ["*", "1", "2", "JAN", "feb", "FEB-APR", "*/3", "2,4", "13", "2/5", "DEC"],
    "dow": ["*", "0", "7", "MON", "mon-fri", "1-5", "SUN,SAT", "5", "*/2", "8", "FRI-MON", "L"],
}


def _random_cron(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.05:
        return rng.choice(["@daily", "@HOURLY", "@weekly", "@monthly", "@yearly", "@annually", "@midnight",
                           "@every_minute", "@every_second", "@reboot", "@fortnightly", "@every 10 seconds",
                           "@after 1h30m", "@every", "@every 0 seconds", "@every -5 minutes", "@after PT5M",
                           "@every 500 milliseconds", "@every 1 day ago", "@every 1 fortnight", "@every 10:30",
                           "@every 1 hour 1 hour", "@every 1.5 seconds", "@after 00:05:00", "@every10 seconds"])
    keys = ["minute", "hour", "dom", "month", "dow"]
    if r < 0.25:
        keys = ["second"] + keys
    if r > 0.97:
        keys = keys[:-1]
    # bias toward valid fields
    return " ".join(rng.choice(_ATOMS[k][:6]) if rng.random() < 0.8 else rng.choice(_ATOMS[k]) for k in keys)


def _sql_accepts(conn, text):
    try:
        conn.execute("SELECT %s::timetable.cron", (text,))
        return True, ""
    except psycopg.errors.InvalidParameterValue as exc:
        return False, exc.diag.message_primary or ""


def _py_accepts(text):
    try:
        schedules.parse_schedule(text)
        return True, ""
    except schedules.ScheduleError as exc:
        return False, str(exc)


def _field_of(message: str) -> str:
    if message.startswith("cron field"):
        return message.split('"')[1]
    return message.split(":")[0]


@pytest.fixture
def tconn(make_db):
    with psycopg.connect(make_db(("timetable",)), autocommit=True) as c:
        yield c


def test_domain_accepts_exactly_what_the_evaluator_accepts(tconn):
    rng = random.Random(20261121)
    disagreements = []
    accepted = 0
    for _ in range(1500):
        text = _random_cron(rng)
        ok_sql, msg_sql = _sql_accepts(tconn, text)
        ok_py, msg_py = _py_accepts(text)
        accepted += ok_py
        if ok_sql != ok_py or (not ok_py and _field_of(msg_sql) != _field_of(msg_py)):
            disagreements.append((text, msg_sql, msg_py))
    assert not disagreements, disagreements[:10]
    assert 200 < accepted < 1400  # the generator exercises both sides


@pytest.mark.parametrize("text, field", [
    ("60 * * * *", "minute"), ("0 24 * * *", "hour"), ("0 0 0 * *", "day of month"),
    ("0 0 31 2 *", "day of month"), ("0 0 * 13 *", "month"), ("0 0 * * MON-FRX", "day of week"),
    ("* * * *", "cron"), ("@every", "interval"), ("@fortnightly", "cron"), ("0 0 L * L", "day of week"),
])
def test_domain_error_names_the_field(tconn, text, field):
    ok, msg = _sql_accepts(tconn, text)
    assert not ok
    assert field in msg, msg


def test_pg_timetable_examples_are_accepted(tconn):
    for text in ["* * * * *", "*/15 * * * *", "5/15 * * * *", "0 12 * * 1-5", "0 0 * * 0", "0 0 * * 7",
                 "*  *  *  *  *", "@every 2 hours", "@after 30 seconds", "@every 500 milliseconds",
                 "@every  1 day", "@reboot", "23 0-20/2 * * *", "1-5,10 * * * *", "@daily", "0 0 1 JAN *",
                 "0 0 * * MON", "0 0 L * *", "0 0 0 1 * *", "*\t*\t*\t*\t*"]:
        assert _sql_accepts(tconn, text) == (True, ""), text


def test_next_firing_agrees_on_many_random_expressions(tconn):
    rng = random.Random(7)
    exprs = []
    while len(exprs) < 160:
        text = _random_cron(rng)
        ok, _ = _py_accepts(text)
        if ok and schedules.parse_schedule(text).kind == "cron":
            exprs.append(text)
    # instants: random ones plus DST edges of the zones above
    edges = [datetime(2026, 3, 29, 0, 30, tzinfo=timezone.utc), datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc),
             datetime(2026, 3, 8, 6, 30, tzinfo=timezone.utc), datetime(2026, 11, 1, 5, 45, 30, tzinfo=timezone.utc),
             datetime(2026, 11, 1, 6, 10, tzinfo=timezone.utc), datetime(2026, 4, 4, 14, 50, tzinfo=timezone.utc),
             datetime(2026, 10, 3, 15, 20, tzinfo=timezone.utc), datetime(2028, 2, 28, 23, 59, 59, 500000, tzinfo=timezone.utc)]
    cases = []
    for text in exprs:
        tz = rng.choice(ZONES)
        t = rng.choice(edges) if rng.random() < 0.5 else \
            datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(3 * 365 * 86400),
                                                                 microseconds=rng.choice([0, 1, 999999]))
        cases.append((text, t, tz))
    rows = tconn.execute(
        "SELECT timetable.cron_next(e, t, z) FROM unnest(%s::text[], %s::timestamptz[], %s::text[]) AS x(e, t, z)",
        ([c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases])).fetchall()
    mismatches = []
    for (text, t, tz), (got,) in zip(cases, rows):
        want = schedules.CronExpr.parse(text).next_after(t, tz)
        if got != want:
            mismatches.append((text, t.isoformat(), tz, got, want))
    assert not mismatches, mismatches[:10]


def test_consecutive_firings_across_dst_agree(tconn):
    """Walk several firings in a row through gap and overlap, both sides."""
    for text, tz, start in [
        ("*/20 * * * *", "Europe/Berlin", datetime(2026, 3, 29, 0, 10, tzinfo=timezone.utc)),
        ("*/20 * * * *", "Europe/Berlin", datetime(2026, 10, 24, 23, 30, tzinfo=timezone.utc)),
        ("30 2 * * *", "America/New_York", datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc)),
        ("0 1 * * *", "America/New_York", datetime(2026, 10, 31, 12, 0, tzinfo=timezone.utc)),
        ("*/30 * * * * *", "America/New_York", datetime(2026, 11, 1, 5, 58, tzinfo=timezone.utc)),
        ("0 0 L 2 *", "Australia/Lord_Howe", datetime(2026, 1, 1, tzinfo=timezone.utc)),
    ]:
        want = schedules.upcoming(text, start, 8, tz)
        got, t = [], start
        for _ in range(8):
            t = tconn.execute("SELECT timetable.cron_next(%s, %s, %s)", (text, t, tz)).fetchone()[0]
            got.append(t)
        assert got == want, (text, tz)


def test_next_run_uses_the_session_zone_and_has_no_horizon(tconn):
    tconn.execute("SET TimeZone = 'America/New_York'")
    got = tconn.execute("SELECT timetable.next_run('0 0 29 2 *'), now()").fetchone()
    want = schedules.CronExpr.parse("0 0 29 2 *").next_after(got[1], "America/New_York")
    assert got[0] == want
    # dow 7 is Sunday for next_run too (pg_timetable returns NULL here)
    got = tconn.execute("SELECT timetable.next_run('0 0 * * 7'), now()").fetchone()
    assert got[0] == schedules.CronExpr.parse("0 0 * * 7").next_after(got[1], "America/New_York")
    assert tconn.execute("SELECT timetable.next_run('@reboot')").fetchone()[0] is None
    t = tconn.execute("SELECT timetable.next_run('@every 90 seconds') - now()").fetchone()[0]
    assert t == timedelta(seconds=90)


def test_is_cron_in_time(tconn):
    tconn.execute("SET TimeZone = 'UTC'")
    q = "SELECT timetable.is_cron_in_time(%s, %s)"
    t = datetime(2026, 11, 22, 10, 15, 42, tzinfo=timezone.utc)  # a Sunday
    assert tconn.execute(q, (None, t)).fetchone()[0] is True
    assert tconn.execute(q, ("15 10 * * 7", t)).fetchone()[0] is True
    assert tconn.execute(q, ("15 10 * * 1", t)).fetchone()[0] is False
    assert tconn.execute(q, ("*/5 10 * * *", t)).fetchone()[0] is True
    assert tconn.execute(q, ("@every 1 minute", t)).fetchone()[0] is False
