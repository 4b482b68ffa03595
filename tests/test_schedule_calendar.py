"""schedule.timetable(start, end): every firing in the interval, computed in SQL from the
job's schedule (pgtt.cron_firings, the one SQL evaluator), whether or not an engine ran;
parity with engine/schedules.py (the engine's evaluator) on random schedules."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

from engine.clock import SystemClock
from engine.db import ConnSettings
from engine.schedule.manager import DatabaseManager, job_schedule
from engine.schedules import CronExpr, ScheduleError, firings_between

UTC = timezone.utc
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago",
         "Pacific/Chatham"]
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
WDAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@pytest.fixture
def sconn(make_db):
    dsn = make_db(("schedule",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield dsn, conn


def _item(rng: random.Random, lo: int, hi: int, names: list[str] | None = None) -> str:
    kind = rng.choice(["n", "n", "range", "step", "rangestep", "startstep", "list", "star"])
    a, b = sorted(rng.sample(range(lo, hi + 1), 2))
    name = (lambda v: names[v - (1 if names is MONTHS else 0)] if names and rng.random() < 0.4 and
            v - (1 if names is MONTHS else 0) < len(names) else str(v))
    if kind == "n":
        return name(a)
    if kind == "range":
        return f"{name(a)}-{name(b)}"
    if kind == "step":
        return f"*/{rng.randint(2, max(2, (hi - lo) // 2))}"
    if kind == "rangestep":
        return f"{a}-{b}/{rng.randint(1, 4)}"
    if kind == "startstep":
        return f"{a}/{rng.randint(2, 9)}"
    if kind == "list":
        return ",".join(str(v) for v in sorted(rng.sample(range(lo, hi + 1), min(3, hi - lo + 1))))
    return "*"


def random_cron(rng: random.Random, dense: bool) -> str:
    if rng.random() < 0.08:
        return rng.choice(["@daily", "@hourly", "@weekly", "@monthly", "@yearly"])
    minute = _item(rng, 0, 59) if not dense else rng.choice(["*", "*/5", "0-10", "*/7", "15,45"])
    hour = "*" if dense and rng.random() < 0.5 else _item(rng, 0, 23)
    dom = rng.choice(["*", "*", _item(rng, 1, 31), "L", "1,15,L"])
    month = rng.choice(["*", "*", _item(rng, 1, 12, MONTHS)])
    dow = rng.choice(["*", "*", _item(rng, 0, 7, WDAYS)])
    fields = [minute, hour, dom, month, dow]
    if rng.random() < 0.15:
        fields.insert(0, rng.choice(["0", "30", "0,20,40", "*/15"]))
    return " ".join(fields)


def random_rule(rng: random.Random) -> dict:
    rule: dict = {}
    if rng.random() < 0.2:
        rule["seconds"] = sorted(rng.sample(range(60), rng.randint(1, 3)))
    if rng.random() < 0.7:
        rule["minutes"] = sorted(rng.sample(range(60), rng.randint(1, 4)))
    if rng.random() < 0.6:
        rule["hours"] = sorted(rng.sample(range(24), rng.randint(1, 5)))
    if rng.random() < 0.4:
        rule["days"] = sorted(rng.sample(range(1, 32), rng.randint(1, 8)))
    if rng.random() < 0.3:
        rule["months"] = sorted(rng.sample(range(1, 13), rng.randint(3, 8)))
    if rng.random() < 0.4:
        rule["wdays"] = sorted(rng.sample(range(7), rng.randint(1, 4)))
    if rng.random() < 0.15:
        rule["onlastday"] = True
    if not rule:
        rule["hours"] = [3]
    return rule


def random_options(rng: random.Random, base: datetime, dense: bool) -> dict:
    opts: dict = {"commands": "select 1", "tz": rng.choice(ZONES)}
    kind = rng.random()
    if kind < 0.55:
        opts["cron"] = random_cron(rng, dense)
    elif kind < 0.85:
        opts["rule"] = random_rule(rng)
    else:
        opts["cron"] = random_cron(rng, dense)
        opts["rule"] = random_rule(rng)
    if rng.random() < 0.3:
        opts["dates"] = [(base + timedelta(seconds=rng.randint(-3600, 400 * 86400))).isoformat()
                         for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.25:
        opts["start_date"] = (base + timedelta(minutes=rng.randint(-600, 3000))).isoformat()
    if rng.random() < 0.25:
        opts["end_date"] = (base + timedelta(minutes=rng.randint(3000, 200 * 1440))).isoformat()
    return opts


def _valid(opts: dict) -> bool:
    try:
        if "cron" in opts:
            CronExpr.parse(opts["cron"])
        job_schedule({**opts.get("rule", {}), **({"crontab": opts["cron"]} if "cron" in opts else {})})
    except ScheduleError:
        return False
    return True


def python_firings(job: dict, start: datetime, end: datetime, limit: int | None) -> list[datetime]:
    lo = max(start, job["start_date"]) if job["start_date"] else start
    hi = min(end, job["end_date"]) if job["end_date"] else end
    if hi < lo:
        return []
    return firings_between(job_schedule(job["rule"]), lo, hi, job["tz"], limit=limit, include_start=True)


SQL_FIRINGS = ("SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM schedule._job_firings(%s, %s, %s, %s, %s, %s, %s) x")

# intervals: an hour, two days, a year; starts that straddle DST changes in both hemispheres
STARTS = [datetime(2030, 3, 31, 0, 30, tzinfo=UTC), datetime(2030, 3, 10, 6, 0, tzinfo=UTC),
          datetime(2030, 11, 3, 5, 15, tzinfo=UTC), datetime(2030, 10, 27, 0, 0, tzinfo=UTC),
          datetime(2030, 4, 6, 14, 0, tzinfo=UTC), datetime(2030, 9, 28, 13, 0, tzinfo=UTC),
          datetime(2031, 2, 28, 23, 59, 30, tzinfo=UTC), datetime(2030, 7, 1, 12, 0, 0, 250000, tzinfo=UTC)]


@pytest.mark.parametrize("span", [timedelta(hours=1), timedelta(days=2), timedelta(days=366)],
                         ids=["hour", "two-days", "year"])
def test_firings_match_the_engine_evaluator_on_random_schedules(sconn, span):
    _, conn = sconn
    rng = random.Random(20261121 + span.days)
    jobs = []
    while len(jobs) < 70:
        base = rng.choice(STARTS)
        opts = random_options(rng, base, dense=span < timedelta(days=3))
        if not _valid(opts):
            continue
        jid = conn.execute("SELECT schedule.create_job(%s)", (Jsonb(opts),)).fetchone()[0]
        jobs.append((base, conn.execute("SELECT id, rule, tz, start_date, end_date FROM schedule.cron WHERE id = %s",
                                        (jid,)).fetchone()))
    limit = 3000
    compared = 0
    for base, (jid, rule, tz, start_date, end_date) in jobs:
        job = {"rule": rule, "tz": tz, "start_date": start_date, "end_date": end_date}
        start, end = base, base + span
        expected = python_firings(job, start, end, limit)
        got = conn.execute(SQL_FIRINGS, (Jsonb(rule), tz, start_date, end_date, start, end, limit)).fetchone()[0]
        assert got == expected, (rule, tz, start_date, end_date, start, end)
        compared += len(expected)
    assert compared > 50 * (1 if span < timedelta(days=1) else 20)


def test_dst_edges_collapse_and_fire_once(sconn):
    """Gap: the skipped wall times fire once, at the transition; overlap: the first pass only."""
    _, conn = sconn
    for cron, tz, start, end in [
            ("*/20 * * * *", "Europe/Berlin", "2030-03-31 00:00Z", "2030-03-31 02:00Z"),
            ("30 2 * * *", "America/New_York", "2030-03-09 00:00Z", "2030-03-12 00:00Z"),
            ("*/30 * * * *", "America/New_York", "2030-11-03 04:00Z", "2030-11-03 08:00Z"),
            ("15 * * * *", "Australia/Lord_Howe", "2030-04-06 13:00Z", "2030-04-06 17:00Z")]:
        rule = {"crontab": cron}
        got = conn.execute(SQL_FIRINGS, (Jsonb(rule), tz, None, None, start, end, None)).fetchone()[0]
        s, e = (datetime.fromisoformat(x.replace("Z", "+00:00")) for x in (start, end))
        assert got == firings_between(job_schedule(rule), s, e, tz, limit=None, include_start=True)
        assert len(got) == len(set(got))


def _count(conn, jid, span):
    return conn.execute("SELECT count(*) FROM schedule.timetable(now(), now() + %s::interval) "
                        "WHERE id = %s AND type = 'periodical'", (span, jid)).fetchone()[0]


async def test_issue_reproductions_without_and_with_the_engine(sconn):
    dsn, conn = sconn
    conn.execute("SELECT schedule.enable()")
    jid = conn.execute("""SELECT schedule.create_job('{"commands": "SELECT 1", "cron": "*/10 * * * *"}')""").fetchone()[0]
    # at once, no engine has ever run
    assert _count(conn, jid, "2 hours") == 12
    assert _count(conn, jid, "48 hours") == 288
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=SystemClock())
    try:
        await m.step()  # plans the job's next run
        assert conn.execute("SELECT next_run IS NOT NULL FROM schedule.cron WHERE id = %s", (jid,)).fetchone()[0]
        nxt = conn.execute("SELECT next_run FROM schedule.cron WHERE id = %s", (jid,)).fetchone()[0]
        conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at) VALUES (%s, 'primary', %s)", (jid, nxt))
        assert _count(conn, jid, "2 hours") == 12  # the planned run is not counted twice
        assert _count(conn, jid, "48 hours") == 288
    finally:
        await m.close()


def test_a_year_of_every_minute_streams_in_little_memory(sconn):
    _, conn = sconn
    jid = conn.execute("""SELECT schedule.create_job('{"commands": "SELECT 1", "cron": "* * * * *",
                          "tz": "Europe/Berlin"}')""").fetchone()[0]
    with conn.transaction():
        conn.execute("SET LOCAL work_mem = '64kB'")
        got, first, last = conn.execute(
            "SELECT count(*), min(scheduled_at), max(scheduled_at) FROM schedule.timetable(now(), now() + interval '1 year') "
            "WHERE id = %s", (jid,)).fetchone()
        want = conn.execute("SELECT (extract(epoch FROM date_trunc('minute', now() + interval '1 year')) - "
                            "extract(epoch FROM date_trunc('minute', now()) + interval '1 minute')) / 60 + 1"
                            ).fetchone()[0]
    # one DST change back in the year repeats an hour of wall times, which fire once only
    assert got == want - 60
    assert (last - first) > timedelta(days=364)


def test_one_time_jobs_dates_windows_and_foreign_jobs(sconn):
    _, conn = sconn
    conn.execute("CREATE ROLE cal_other_role")
    try:
        jid = conn.execute("""SELECT schedule.create_job('{"commands": "SELECT 1", "cron": "0 12 * * *",
            "dates": ["2031-05-04 10:00+00"], "start_date": "2031-05-02 00:00+00", "end_date": "2031-05-05 23:00+00",
            "tz": "UTC"}')""").fetchone()[0]
        aid = conn.execute("SELECT schedule.submit_job('select 2', run_after := '2031-05-03 08:00+00')").fetchone()[0]
        rows = conn.execute("SELECT type::text, id, scheduled_at FROM schedule.timetable('2031-05-01', '2031-05-10')"
                            ).fetchall()
        t = lambda s: datetime.fromisoformat(s).replace(tzinfo=UTC)  # noqa: E731
        assert rows == [("periodical", jid, t("2031-05-02 12:00")), ("onetime", aid, t("2031-05-03 08:00")),
                        ("periodical", jid, t("2031-05-03 12:00")), ("periodical", jid, t("2031-05-04 10:00")),
                        ("periodical", jid, t("2031-05-04 12:00")), ("periodical", jid, t("2031-05-05 12:00"))]
        conn.execute("SELECT schedule.deactivate_job(%s)", (jid,))
        assert [r[0] for r in conn.execute("SELECT type::text FROM schedule.timetable('2031-05-01', '2031-05-10')")
                ] == ["onetime"]
        conn.execute("SELECT schedule.activate_job(%s)", (jid,))
        with conn.transaction():
            conn.execute("SET LOCAL ROLE cal_other_role")
            assert conn.execute("SELECT count(*) FROM schedule.timetable('2031-05-01', '2031-05-10')"
                                ).fetchone()[0] == 0
    finally:
        conn.execute("DROP ROLE cal_other_role")


def test_pages_concatenate_to_the_whole_timetable(sconn):
    _, conn = sconn
    for opts in ['{"commands": "SELECT 1", "cron": "*/7 * * * *"}',
                 '{"commands": "SELECT 1", "cron": "0 * * * *", "tz": "Asia/Kolkata"}',
                 '{"commands": "SELECT 1", "rule": {"minutes": [0, 30], "hours": [1, 2]}}']:
        conn.execute("SELECT schedule.create_job(%s)", (opts,))
    for i in range(5):
        conn.execute("SELECT schedule.submit_job('select 1', run_after := '2031-01-01 00:00+00'::timestamptz "
                     "+ %s * interval '1 hour')", (i,))
    start, end = "2031-01-01 00:00+00", "2031-01-03 00:00+00"
    whole = conn.execute("SELECT * FROM schedule.timetable(%s, %s)", (start, end)).fetchall()
    pages, after = [], (None, None, None)
    while True:
        page = conn.execute("SELECT * FROM schedule.timetable_page(%s, %s, %s, %s, %s, 37)",
                            (start, end, after[0], after[1], after[2])).fetchall()
        pages += page
        if len(page) < 37:
            break
        after = (page[-1][6], page[-1][0], page[-1][1])
    assert len(whole) > 37 * 3 and pages == whole
    keys = [(r[6], r[1], r[0]) for r in whole]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_cli_pages_with_limit_and_after(sconn):
    from typer.testing import CliRunner

    from pgtt_tui.cli import app

    dsn, conn = sconn
    conn.execute("""SELECT schedule.create_job('{"commands": "SELECT 1", "cron": "*/10 * * * *", "tz": "UTC"}')""")
    args = ["--dsn", dsn, "job", "timetable", "--start", "2031-01-01T00:00:00+00:00", "--end",
            "2031-01-02T00:00:00+00:00", "--json"]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--limit", "100"])
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout)
    assert len(rows) == 100 and rows[-1]["scheduled_at"] == "2031-01-01T16:30:00+00:00"
    assert "more: add --after '2031-01-01T16:30:00+00:00,periodical," in first.stderr
    after = first.stderr.split("--after '")[1].split("'")[0]
    rest = runner.invoke(app, [*args, "--limit", "100", "--after", after])
    more = json.loads(rest.stdout)
    assert [r["scheduled_at"] for r in more][:1] == ["2031-01-01T16:40:00+00:00"] and len(more) == 45
    assert "more:" not in rest.stderr
    bad = runner.invoke(app, [*args, "--after", "yesterday"])
    assert bad.exception is not None and bad.exception.field == "--after"


async def test_console_calendar_pages_through_a_full_window(sconn, monkeypatch):
    import pgtt_tui.screens.jobs as jobs_screen
    from pgtt_tui.app import PgttApp
    from pgtt_tui.widgets.common import VimTable

    dsn, conn = sconn
    monkeypatch.setattr(jobs_screen, "CALENDAR_ROWS", 50)
    conn.execute("""SELECT schedule.create_job('{"commands": "SELECT 1", "cron": "*/10 * * * *", "tz": "UTC"}')""")
    now = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
    app = PgttApp(ConnSettings(dsn=dsn), start_view="jobs", clock=lambda: now, refresh=0.3, tz=UTC)

    async def until(pilot, predicate):
        for _ in range(200):
            if predicate():
                return
            await pilot.pause(0.05)
        raise AssertionError("not reached")

    def info() -> str:
        return str(app.screen.query_one("#cal-info").render())

    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.last_data is not None)
        await pilot.press("t")
        cal = screen.query_one("#cal-table", VimTable)
        # window now - 6 h .. now + 24 h: 24 h of */10 = 145 firings from now, 50 a page
        await until(pilot, lambda: cal.row_count == 50 and "page 1" in info())
        first = screen.last_data["calendar"][0]["scheduled_at"]
        await pilot.press("greater_than_sign")
        await until(pilot, lambda: "page 2" in info() and screen.last_data["calendar"][0]["scheduled_at"]
                    == first + timedelta(minutes=500))
        await pilot.press("greater_than_sign")
        await until(pilot, lambda: "page 3" in info() and cal.row_count == 45 and "more" not in info())
        await pilot.press("less_than_sign")
        await until(pilot, lambda: "page 2" in info())
        assert screen.window_offset == 0
