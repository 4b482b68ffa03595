"""Tests of engine.schedules (no database needed) and engine.clock.

UTC instants are written as ``Z(...)``; DST expectations are spelled out in local time in
the comments.  croniter is used only as an oracle in the parity test.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from engine.clock import Clock, FakeClock, SystemClock
from engine.errors import InputError
from engine.schedules import (
    CRON_MACROS,
    AfterSchedule,
    CombinedSchedule,
    CronExpr,
    CronSchedule,
    DatesSchedule,
    EverySchedule,
    RebootSchedule,
    RuleSchedule,
    ScheduleError,
    firings_between,
    format_interval,
    next_fire,
    parse_interval,
    parse_schedule,
    pgpro_schedule,
    resolve_zone,
    upcoming,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def Z(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def nxt(expr: str, after: datetime, tz=None) -> datetime | None:
    return CronExpr.parse(expr).next_after(after, tz)


def seq(expr, after: datetime, n: int, tz=None) -> list[datetime]:
    return upcoming(expr, after, n, tz)


# ---------------------------------------------------------------------------------------
# Syntax
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, field, values",
    [
        ("* * * * *", "minutes", tuple(range(60))),
        ("5 * * * *", "minutes", (5,)),
        ("10-13 * * * *", "minutes", (10, 11, 12, 13)),
        ("10-20/5 * * * *", "minutes", (10, 15, 20)),
        ("*/20 * * * *", "minutes", (0, 20, 40)),
        ("45/5 * * * *", "minutes", (45, 50, 55)),  # a/s: from a to the maximum
        ("1,5-7,50/4,*/30 * * * *", "minutes", (0, 1, 5, 6, 7, 30, 50, 54, 58)),
        ("0 0-23/6 * * *", "hours", (0, 6, 12, 18)),
        ("0 0 1,15 * *", "days", (1, 15)),
        ("0 0 1 JAN,mar,Dec *", "months", (1, 3, 12)),
        ("0 0 1 feb-APR/2 *", "months", (2, 4)),
        ("0 0 * * MON-FRI", "weekdays", (1, 2, 3, 4, 5)),
        ("0 0 * * sun,SAT", "weekdays", (0, 6)),
        ("0 0 * * 7", "weekdays", (0,)),  # 7 is Sunday
        ("0 0 * * 5-7", "weekdays", (0, 5, 6)),
        ("0 0 * * 0-7", "weekdays", tuple(range(7))),
        ("0 0 * * MON/2", "weekdays", (1, 3, 5)),
        ("0 0 * * *", "seconds", (0,)),
        ("*/15 0 0 * * *", "seconds", (0, 15, 30, 45)),  # 6 fields: leading seconds
        ("1-3 5 0 * * *", "minutes", (5,)),
        ("0\t0  *   * *", "hours", (0,)),  # any whitespace separates fields
    ],
)
def test_field_syntax(text, field, values):
    assert getattr(CronExpr.parse(text), field) == values


def test_last_day_of_month_alone_and_in_lists():
    e = CronExpr.parse("0 0 L * *")
    assert e.last_day and e.days == () and not e.dom_any
    e = CronExpr.parse("0 0 1,15,l * *")
    assert e.last_day and e.days == (1, 15)


def test_star_flags_decide_day_matching_mode():
    assert CronExpr.parse("0 0 * * *").dom_any and CronExpr.parse("0 0 * * *").dow_any
    e = CronExpr.parse("0 0 */2 * 1")
    assert not e.dom_any and not e.dow_any  # only a bare '*' is unrestricted


@pytest.mark.parametrize("macro, expansion", sorted(CRON_MACROS.items()))
def test_macros_expand(macro, expansion):
    assert CronExpr.parse(macro) == CronExpr.parse(expansion)
    assert CronExpr.parse(macro.upper()) == CronExpr.parse(expansion)
    assert CronExpr.parse(macro).text == macro


def test_pgpro_keywords_are_all_accepted():
    # The list in the pgpro_scheduler documentation (seed 003), plus @every_minute.
    for keyword in ["@every_second", "@hourly", "@daily", "@midnight", "@weekly", "@monthly",
                    "@yearly", "@annually", "@every_minute"]:
        assert isinstance(parse_schedule(keyword), CronSchedule)
    assert CronExpr.parse("@every_second").seconds == tuple(range(60))
    assert CronExpr.parse("@every_second").next_after(Z(2024, 1, 1, 0, 0, 0)) == Z(2024, 1, 1, 0, 0, 1)
    assert CronExpr.parse("@yearly").next_after(Z(2024, 6, 1)) == Z(2025, 1, 1)
    assert CronExpr.parse("@weekly").next_after(Z(2024, 1, 1)) == Z(2024, 1, 7)  # a Sunday


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("*/15 0-20/2 L,1 JAN-MAR/2 mon-fri", "*/15 0-20/2 1,L 1,3 1-5"),
        ("0 0 * * 7", "0 0 * * 0"),
        ("0 0 1-31 * 0-7", "0 0 1-31 * 0-6"),
        ("1,2,3,5 */3 * * *", "1-3,5 */3 * * *"),
        ("5/10 * * * *", "5-55/10 * * * *"),
        ("0 0 0 * * *", "0 0 * * *"),  # seconds 0 -> 5 fields
        ("30 0 0 * * *", "30 0 0 * * *"),
        ("@daily", "0 0 * * *"),
        ("0-59 0-23 * 1-12 *", "* * * * *"),
    ],
)
def test_to_text_is_canonical_and_round_trips(text, canonical):
    e = CronExpr.parse(text)
    assert e.to_text() == canonical == str(e)
    assert CronExpr.parse(canonical) == e


def test_cron_expr_is_immutable_and_hashable():
    e = CronExpr.parse("0 12 * * 1-5")
    with pytest.raises(AttributeError):
        e.minutes = (1,)  # type: ignore[misc]
    assert hash(e) == hash(CronExpr.parse("0 12 * * MON-FRI"))


# ---------------------------------------------------------------------------------------
# Cron errors: every one names its field
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, field, fragment",
    [
        ("", "cron", "empty"),
        ("   ", "cron", "empty"),
        ("* * * *", "cron", "got 4"),
        ("* * * * * * *", "cron", "got 7"),
        ("60 * * * *", "minute", "60 is out of range 0-59"),
        ("* 25 * * *", "hour", "25 is out of range 0-23"),
        ("0 0 0 * *", "day of month", "0 is out of range 1-31"),
        ("0 0 32 * *", "day of month", "32 is out of range"),
        ("0 0 * 13 *", "month", "13 is out of range 1-12"),
        ("0 0 * 0 *", "month", "0 is out of range"),
        ("0 0 * * 8", "day of week", "8 is out of range 0-7"),
        ("60 * * * * *", "second", "60 is out of range 0-59"),
        ("0 60 * * * *", "minute", "(2nd)"),  # positions shift with 6 fields
        ("5-1 * * * *", "minute", "reversed"),
        ("0 0 * * FRI-MON", "day of week", "reversed"),
        ("*/0 * * * *", "minute", "step 0"),
        ("0 */x * * *", "hour", "step 'x'"),
        ("0 1/ * * *", "hour", "step ''"),
        ("0 0 * * 1/-1", "day of week", "step '-1'"),
        ("a * * * *", "minute", "'a' is not a number 0-59"),
        ("1.5 * * * *", "minute", "'1.5'"),
        ("1,,2 * * * *", "minute", "empty item"),
        ("-1 * * * *", "minute", "missing number"),
        ("1-2-3 * * * *", "minute", "'2-3'"),
        ("0 0 ? * *", "day of month", "'?'"),
        ("0 0 15W * *", "day of month", "'15W'"),
        ("0 0 * * 5#3", "day of week", "'5#3'"),
        ("0 0 * FOO *", "month", "not a month name"),
        ("0 0 * * JAN", "day of week", "not a day name"),
        ("0 0 * MON *", "month", "'MON'"),
        ("JAN * * * *", "minute", "'JAN'"),
        ("L * * * *", "minute", "only allowed in the day-of-month field"),
        ("0 0 * L *", "month", "only allowed in the day-of-month"),
        ("0 0 * * L", "day of week", "only allowed in the day-of-month"),
        ("0 0 L-2 * *", "day of month", "cannot be part of a range or step"),
        ("0 0 L/2 * *", "day of month", "cannot be part of a range or step"),
        ("0 0 31 2 *", "day of month", "31 never occurs in month 2"),
        ("0 0 30,31 2 *", "day of month", "30,31 never occur in month 2"),
        ("0 0 31 4,6,9,11 *", "day of month", "months 4,6,9,11"),
        ("0 0 0 31 2 *", "day of month", "(4th)"),
        ("@fortnightly", "cron", "unknown keyword"),
        ("@everyday", "cron", "unknown keyword"),
        ("@reboot", "cron", "parse_schedule"),
        ("@every 10 seconds", "cron", "parse_schedule"),
    ],
)
def test_cron_errors_name_the_field(text, field, fragment):
    with pytest.raises(ScheduleError) as info:
        CronExpr.parse(text)
    err = info.value
    assert err.field == field
    assert field in str(err)
    assert fragment in str(err)
    assert isinstance(err, ValueError) and isinstance(err, InputError)


def test_error_message_format_matches_the_contract():
    with pytest.raises(ScheduleError) as info:
        CronExpr.parse("0 25 * * *")
    assert str(info.value) == 'cron field "hour" (2nd): 25 is out of range 0-23'
    assert info.value.problem == "25 is out of range 0-23"


def test_non_text_is_rejected():
    with pytest.raises(ScheduleError, match="cron"):
        CronExpr.parse(None)  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="cron"):
        parse_schedule(5)  # type: ignore[arg-type]


def test_impossible_combination_allowed_when_weekday_restricted():
    # With a weekday given, Vixie OR semantics make it fire on that weekday (in February).
    e = CronExpr.parse("0 0 31 2 1")
    assert e.next_after(Z(2024, 1, 1)) == Z(2024, 2, 5)  # the first Monday of February
    # 'L' is possible in every month.
    assert CronExpr.parse("0 0 31,L 2 *").next_after(Z(2023, 1, 1)) == Z(2023, 2, 28)


# ---------------------------------------------------------------------------------------
# next_after in UTC: basics, month ends, leap years, L, DOM/DOW
# ---------------------------------------------------------------------------------------


def test_next_after_is_strictly_after():
    assert nxt("0 12 * * *", Z(2024, 5, 1, 12, 0)) == Z(2024, 5, 2, 12, 0)
    assert nxt("0 12 * * *", Z(2024, 5, 1, 11, 59, 59, 999999)) == Z(2024, 5, 1, 12, 0)
    assert nxt("0 12 * * *", Z(2024, 5, 1, 12, 0, 0, 1)) == Z(2024, 5, 2, 12, 0)
    assert nxt("* * * * *", Z(2024, 5, 1, 12, 0, 30)) == Z(2024, 5, 1, 12, 1)


def test_result_is_utc_and_input_zone_does_not_matter():
    after = datetime(2024, 5, 1, 14, 0, tzinfo=ZoneInfo(BERLIN))  # 12:00Z
    result = nxt("30 12 * * *", after)
    assert result == Z(2024, 5, 1, 12, 30) and result.tzinfo is timezone.utc


def test_naive_datetime_is_rejected():
    with pytest.raises(ScheduleError) as info:
        nxt("* * * * *", datetime(2024, 1, 1))
    assert info.value.field == "after"


@pytest.mark.parametrize(
    "expr, after, expected",
    [
        ("59 23 31 12 *", Z(2024, 12, 31, 23, 59), Z(2025, 12, 31, 23, 59)),  # year rollover
        ("0 0 31 * *", Z(2024, 1, 31), Z(2024, 3, 31)),  # skips February
        ("0 0 31 * *", Z(2024, 3, 31), Z(2024, 5, 31)),  # skips April
        ("0 0 30 * *", Z(2024, 1, 30), Z(2024, 3, 30)),
        ("0 0 29 2 *", Z(2024, 3, 1), Z(2028, 2, 29)),
        ("0 0 29 2 *", Z(2096, 3, 1), Z(2104, 2, 29)),  # 2100 is not a leap year: 8 years
        ("0 0 29 2 *", Z(2399, 1, 1), Z(2400, 2, 29)),  # 2400 is
        ("0 0 L * *", Z(2024, 1, 31), Z(2024, 2, 29)),
        ("0 0 L * *", Z(2023, 1, 31), Z(2023, 2, 28)),
        ("0 0 L * *", Z(2024, 4, 1), Z(2024, 4, 30)),
        ("0 0 L 2 *", Z(2100, 1, 1), Z(2100, 2, 28)),
        ("0 0 1,L * *", Z(2024, 2, 1), Z(2024, 2, 29)),
        ("0 0 1,L * *", Z(2024, 2, 29), Z(2024, 3, 1)),
        ("0 0 1 1 *", Z(2024, 1, 1), Z(2025, 1, 1)),
        ("0 0 * * 0", Z(2024, 1, 1), Z(2024, 1, 7)),
        ("0 0 * * 7", Z(2024, 1, 1), Z(2024, 1, 7)),
        ("*/10 * * * *", Z(2024, 1, 1, 23, 55), Z(2024, 1, 2, 0, 0)),
        ("0 0 * * *", Z(9999, 12, 31, 0, 0), None),  # nothing left before year 10000
    ],
)
def test_calendar_edges(expr, after, expected):
    assert nxt(expr, after) == expected


def test_dom_and_dow_are_ored_when_both_restricted():
    # '0 0 13 * 5': every 13th AND every Friday (Vixie cron), not only Friday the 13th.
    got = seq("0 0 13 * 5", Z(2024, 9, 1), 6)
    assert got == [Z(2024, 9, 6), Z(2024, 9, 13), Z(2024, 9, 20), Z(2024, 9, 27),
                   Z(2024, 10, 4), Z(2024, 10, 11)]
    got = seq("0 0 13 * 5", Z(2024, 10, 11), 2)
    assert got == [Z(2024, 10, 13), Z(2024, 10, 18)]  # the 13th is a Sunday


def test_only_one_day_field_restricted():
    assert seq("0 0 * * 1", Z(2024, 1, 1), 2) == [Z(2024, 1, 8), Z(2024, 1, 15)]
    assert seq("0 0 15 * *", Z(2024, 1, 1), 2) == [Z(2024, 1, 15), Z(2024, 2, 15)]
    # '*/2' counts as restricted: odd days OR Mondays.
    assert seq("0 0 */2 * 1", Z(2024, 1, 5), 3) == [Z(2024, 1, 7), Z(2024, 1, 8), Z(2024, 1, 9)]


def test_six_field_seconds():
    assert seq("*/20 * * * * *", Z(2024, 1, 1, 0, 0, 50), 3) == [
        Z(2024, 1, 1, 0, 1, 0), Z(2024, 1, 1, 0, 1, 20), Z(2024, 1, 1, 0, 1, 40)]
    assert nxt("30 0 12 * * *", Z(2024, 1, 1, 12, 0, 30)) == Z(2024, 1, 2, 12, 0, 30)
    assert nxt("15,45 * * * * *", Z(2024, 1, 1, 0, 0, 15, 500)) == Z(2024, 1, 1, 0, 0, 45)


def test_matches():
    e = CronExpr.parse("0 12 * * 1-5")
    assert e.matches(Z(2024, 1, 1, 12, 0))  # Monday
    assert e.matches(Z(2024, 1, 1, 12, 0, 0, 400))  # truncated to the second
    assert not e.matches(Z(2024, 1, 1, 12, 0, 1))
    assert not e.matches(Z(2024, 1, 6, 12, 0))  # Saturday
    assert e.matches(datetime(2024, 1, 1, 12, 0, tzinfo=ZoneInfo(BERLIN)), BERLIN)


def test_search_is_field_arithmetic_not_a_minute_walk():
    # A perf sanity check (no timing assert): these would take millions of steps if the
    # search walked minute by minute; field arithmetic answers each in a few jumps.
    rng = random.Random(7)
    exprs = [CronExpr.parse(random_cron(rng)) for _ in range(200)]
    t = Z(2024, 1, 1)
    for i in range(10_000):
        assert exprs[i % 200].next_after(t + timedelta(minutes=i * 37)) is not None
    assert nxt("0 0 29 2 1", Z(2024, 2, 27)) == Z(2024, 2, 29)  # OR: the 29th or Mondays
    assert nxt("0 0 29 2 1", Z(2024, 3, 1)) == Z(2025, 2, 3)  # ... in February only
    assert nxt("59 23 29 2 *", Z(2096, 3, 1), BERLIN) == Z(2104, 2, 29, 22, 59)


# ---------------------------------------------------------------------------------------
# Time zones and DST
# ---------------------------------------------------------------------------------------
# Europe/Berlin 2024: spring forward 2024-03-31 02:00 CET -> 03:00 CEST (01:00Z);
#                     fall back 2024-10-27 03:00 CEST -> 02:00 CET (01:00Z),
#                     wall times 02:00-02:59 happen twice (00:00-00:59Z and 01:00-01:59Z).
# America/New_York 2024: spring forward 2024-03-10 02:00 EST -> 03:00 EDT (07:00Z);
#                        fall back 2024-11-03 02:00 EDT -> 01:00 EST (06:00Z),
#                        wall times 01:00-01:59 happen twice (05:00-05:59Z, 06:00-06:59Z).


def test_plain_zone_evaluation():
    assert nxt("0 9 * * *", Z(2024, 7, 1), BERLIN) == Z(2024, 7, 1, 7, 0)  # CEST
    assert nxt("0 9 * * *", Z(2024, 1, 1), BERLIN) == Z(2024, 1, 1, 8, 0)  # CET
    assert nxt("0 9 * * *", Z(2024, 1, 1), ZoneInfo(NEW_YORK)) == Z(2024, 1, 1, 14, 0)
    assert nxt("0 9 * * *", Z(2024, 1, 1), timezone(timedelta(hours=5, minutes=30))) == Z(2024, 1, 1, 3, 30)
    assert nxt("0 9 * * *", Z(2024, 1, 1), "UTC") == Z(2024, 1, 1, 9, 0)


def test_gap_daily_berlin_fires_at_end_of_gap():
    # 02:30 does not exist on 2024-03-31: it runs at 03:00 CEST (01:00Z), once.
    assert seq("30 2 * * *", Z(2024, 3, 30, 12), 3, BERLIN) == [
        Z(2024, 3, 31, 1, 0), Z(2024, 4, 1, 0, 30), Z(2024, 4, 2, 0, 30)]


def test_gap_daily_new_york_fires_at_end_of_gap():
    # 02:30 on 2024-03-10 runs at 03:00 EDT (07:00Z).
    assert seq("30 2 * * *", Z(2024, 3, 9, 12), 3, NEW_YORK) == [
        Z(2024, 3, 10, 7, 0), Z(2024, 3, 11, 6, 30), Z(2024, 3, 12, 6, 30)]


def test_gap_hourly_collapses_into_one_firing():
    # Wall 02:00 (missing) and 03:00 both map to 01:00Z: one firing, not two.
    assert seq("0 * * * *", Z(2024, 3, 31, 0, 30), 3, BERLIN) == [
        Z(2024, 3, 31, 1, 0), Z(2024, 3, 31, 2, 0), Z(2024, 3, 31, 3, 0)]
    # :30 every hour: 01:30 CET, (02:30 missing ->) 03:00 CEST, 03:30 CEST.
    assert seq("30 * * * *", Z(2024, 3, 31, 0, 0), 4, BERLIN) == [
        Z(2024, 3, 31, 0, 30), Z(2024, 3, 31, 1, 0), Z(2024, 3, 31, 1, 30), Z(2024, 3, 31, 2, 30)]
    assert seq("30 * * * *", Z(2024, 3, 10, 6, 0), 3, NEW_YORK) == [
        Z(2024, 3, 10, 6, 30), Z(2024, 3, 10, 7, 0), Z(2024, 3, 10, 7, 30)]


def test_gap_every_minute():
    assert seq("* * * * *", Z(2024, 3, 31, 0, 58), 3, BERLIN) == [
        Z(2024, 3, 31, 0, 59), Z(2024, 3, 31, 1, 0), Z(2024, 3, 31, 1, 1)]
    assert seq("* * * * *", Z(2024, 3, 10, 6, 58), 3, NEW_YORK) == [
        Z(2024, 3, 10, 6, 59), Z(2024, 3, 10, 7, 0), Z(2024, 3, 10, 7, 1)]


def test_gap_every_second_keeps_ticking():
    got = firings_between("* * * * * *", Z(2024, 3, 31, 0, 59, 58), Z(2024, 3, 31, 1, 0, 2), BERLIN)
    assert got == [Z(2024, 3, 31, 0, 59, 59), Z(2024, 3, 31, 1, 0, 0), Z(2024, 3, 31, 1, 0, 1),
                   Z(2024, 3, 31, 1, 0, 2)]


def test_overlap_daily_fires_once_at_first_occurrence():
    # 02:30 happens twice on 2024-10-27 in Berlin: fire at 02:30 CEST (00:30Z) only.
    assert seq("30 2 * * *", Z(2024, 10, 26, 12), 3, BERLIN) == [
        Z(2024, 10, 26, 0, 30) + timedelta(days=1), Z(2024, 10, 28, 1, 30), Z(2024, 10, 29, 1, 30)]
    # 01:30 happens twice on 2024-11-03 in New York: 01:30 EDT (05:30Z) only.
    assert seq("30 1 * * *", Z(2024, 11, 2, 12), 3, NEW_YORK) == [
        Z(2024, 11, 3, 5, 30), Z(2024, 11, 4, 6, 30), Z(2024, 11, 5, 6, 30)]


def test_overlap_hourly_does_not_repeat_the_hour():
    assert seq("0 * * * *", Z(2024, 10, 26, 23, 30), 3, BERLIN) == [
        Z(2024, 10, 27, 0, 0), Z(2024, 10, 27, 2, 0), Z(2024, 10, 27, 3, 0)]  # not 01:00Z
    assert seq("0 * * * *", Z(2024, 11, 3, 3, 30), 4, NEW_YORK) == [
        Z(2024, 11, 3, 4, 0), Z(2024, 11, 3, 5, 0), Z(2024, 11, 3, 7, 0), Z(2024, 11, 3, 8, 0)]


def test_overlap_every_minute_pauses_during_the_repeat():
    assert seq("* * * * *", Z(2024, 10, 27, 0, 58), 2, BERLIN) == [
        Z(2024, 10, 27, 0, 59), Z(2024, 10, 27, 2, 0)]
    assert seq("* * * * *", Z(2024, 11, 3, 5, 58), 2, NEW_YORK) == [
        Z(2024, 11, 3, 5, 59), Z(2024, 11, 3, 7, 0)]


def test_asking_from_inside_the_second_pass():
    # 01:30Z on 2024-10-27 is 02:30 CET, the second time round: 02:31..02:59 already ran.
    assert nxt("* * * * *", Z(2024, 10, 27, 1, 30), BERLIN) == Z(2024, 10, 27, 2, 0)
    assert nxt("45 2 * * *", Z(2024, 10, 27, 1, 30), BERLIN) == Z(2024, 10, 28, 1, 45)
    assert nxt("0 3 * * *", Z(2024, 10, 27, 1, 0), BERLIN) == Z(2024, 10, 27, 2, 0)
    # From the first pass the rest of the first pass is still ahead.
    assert nxt("45 2 * * *", Z(2024, 10, 27, 0, 30), BERLIN) == Z(2024, 10, 27, 0, 45)
    assert nxt("*/15 * * * *", Z(2024, 11, 3, 6, 0), NEW_YORK) == Z(2024, 11, 3, 7, 0)


def test_each_wall_minute_of_a_dst_day_fires_once():
    # Local day 2024-10-27 in Berlin has 25 hours but 1440 distinct wall minutes.
    fall = firings_between("* * * * *", Z(2024, 10, 26, 22, 0), Z(2024, 10, 27, 23, 0), BERLIN,
                           include_start=True)
    assert len(fall) == 1441 and fall[-1] == Z(2024, 10, 27, 23, 0)  # end is inclusive
    assert len(set(fall)) == len(fall) == 1441
    # Local day 2024-03-31 has 23 hours: 1380 wall minutes exist.
    spring = firings_between("* * * * *", Z(2024, 3, 30, 23, 0), Z(2024, 3, 31, 21, 59), BERLIN,
                             include_start=True)
    assert len(spring) == 1380


def test_matches_follows_the_dst_rules():
    e = CronExpr.parse("30 2 * * *")
    assert e.matches(Z(2024, 3, 31, 1, 0), BERLIN)  # the gap firing
    assert e.matches(Z(2024, 10, 27, 0, 30), BERLIN)  # first occurrence
    assert not e.matches(Z(2024, 10, 27, 1, 30), BERLIN)  # second occurrence


def test_half_hour_dst_zone():
    # Australia/Lord_Howe moves 02:00 -> 02:30 on 2024-10-06 (+10:30 -> +11).
    lord_howe = "Australia/Lord_Howe"
    got = nxt("15 2 * * *", Z(2024, 10, 5, 12), lord_howe)
    assert got.astimezone(ZoneInfo(lord_howe)).replace(tzinfo=None) == datetime(2024, 10, 6, 2, 30)


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "../etc/passwd", 42])
def test_bad_time_zone(bad):
    with pytest.raises(ScheduleError) as info:
        nxt("* * * * *", Z(2024, 1, 1), bad)
    assert info.value.field == "timezone" and "timezone" in str(info.value)


def test_resolve_zone():
    assert resolve_zone(None) is timezone.utc
    assert resolve_zone("utc") is timezone.utc
    assert resolve_zone(BERLIN) == ZoneInfo(BERLIN)


# ---------------------------------------------------------------------------------------
# Intervals and parse_schedule
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10 seconds", timedelta(seconds=10)),
        ("1 hour 30 minutes", timedelta(minutes=90)),
        ("500 milliseconds", timedelta(milliseconds=500)),
        ("2 days", timedelta(days=2)),
        ("1.5 seconds", timedelta(seconds=1.5)),
        ("00:05:00", timedelta(minutes=5)),
        ("5:00", timedelta(hours=5)),
        ("00:00:01.25", timedelta(seconds=1.25)),
        ("1 day 02:00:00", timedelta(days=1, hours=2)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
        ("90 s", timedelta(seconds=90)),
        ("1 min 30 secs", timedelta(seconds=90)),
        ("  3  MINUTES ", timedelta(minutes=3)),
        ("1 week", timedelta(days=7)),
        ("1 mon", timedelta(days=30)),
        ("1 month", timedelta(days=30)),
        ("1 year", timedelta(days=365.25)),
        ("0.5 days", timedelta(hours=12)),
        ("100 microseconds", timedelta(microseconds=100)),
        ("2 hours -30 minutes", timedelta(minutes=90)),
        ("10", timedelta(seconds=10)),
        ("PT5M", timedelta(minutes=5)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("pt0.5s", timedelta(milliseconds=500)),
    ],
)
def test_parse_interval(text, expected):
    assert parse_interval(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "missing"),
        ("0 seconds", "longer than zero"),
        ("00:00:00", "longer than zero"),
        ("0.0000001 seconds", "longer than zero"),
        ("-5 seconds", "positive"),
        ("5 seconds ago", "positive"),
        ("ten seconds", "cannot read 'ten'"),
        ("5 fortnights", "unknown unit 'fortnights'"),
        ("1 hour 2 hours", "hour given twice"),
        ("1 minute 00:05:00", "minute given twice"),
        ("10 seconds,", "cannot read ','"),
        ("00:61:00", "below 60"),
        ("P", "cannot read"),
        ("1 second ago 2 seconds", "'ago' must come last"),
        ("99999999999 years", "too large"),
    ],
)
def test_parse_interval_errors(text, fragment):
    with pytest.raises(ScheduleError) as info:
        parse_interval(text)
    assert info.value.field == "interval" and "interval" in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("delta", [timedelta(seconds=10), timedelta(minutes=90), timedelta(milliseconds=500),
                                   timedelta(days=2, hours=3, seconds=1.5), timedelta(microseconds=1),
                                   timedelta(seconds=1)])
def test_format_interval_round_trips(delta):
    assert parse_interval(format_interval(delta)) == delta


def test_format_interval_reads_well():
    assert format_interval(timedelta(minutes=90)) == "1 hour 30 minutes"
    assert format_interval(timedelta(milliseconds=1500)) == "1.5 seconds"
    assert format_interval(timedelta(seconds=1)) == "1 second"


def test_parse_schedule_kinds():
    every = parse_schedule("@every 10 seconds")
    assert isinstance(every, EverySchedule) and every.kind == "every"
    assert every.interval == timedelta(seconds=10) and every.is_relative
    after = parse_schedule("@after 1 hour 30 minutes")
    assert isinstance(after, AfterSchedule) and after.kind == "after"
    assert after.interval == timedelta(minutes=90)
    assert parse_schedule("@every 500 milliseconds").interval == timedelta(milliseconds=500)
    assert parse_schedule("@every  1 day").interval == timedelta(days=1)
    assert parse_schedule("@EVERY 00:05:00").interval == timedelta(minutes=5)
    reboot = parse_schedule("@reboot")
    assert isinstance(reboot, RebootSchedule) and reboot.kind == "reboot" and reboot.runs_at_start
    assert parse_schedule(" @REBOOT ") == reboot
    cron = parse_schedule("0 12 * * 1-5")
    assert isinstance(cron, CronSchedule) and cron.kind == "cron"
    assert cron.expr == CronExpr.parse("0 12 * * MON-FRI")
    assert parse_schedule("@every_second").kind == "cron"


def test_schedule_texts():
    assert parse_schedule("@every 90 seconds").to_text() == "@every 1 minute 30 seconds"
    assert parse_schedule("@after 2 hours").to_text() == "@after 2 hours"
    assert str(parse_schedule("@reboot")) == "@reboot"
    assert parse_schedule("0 12 * * mon-fri").to_text() == "0 12 * * 1-5"


@pytest.mark.parametrize("text, field", [("@every", "interval"), ("@after   ", "interval"),
                                         ("@every 0 seconds", "interval"), ("@every soon", "interval"),
                                         ("@every -1 hour", "interval"), ("@daily 5", "cron"),
                                         ("@everyday", "cron"), ("", "cron")])
def test_parse_schedule_errors(text, field):
    with pytest.raises(ScheduleError) as info:
        parse_schedule(text)
    assert info.value.field == field and field in str(info.value)


def test_interval_schedules_are_relative():
    every = parse_schedule("@every 1.5 seconds")
    t = Z(2024, 1, 1)
    assert every.next_after(t) == Z(2024, 1, 1, 0, 0, 1, 500000)
    assert upcoming(every, t, 3) == [t + timedelta(seconds=1.5 * k) for k in (1, 2, 3)]
    assert len(firings_between(every, t, t + timedelta(seconds=10))) == 6
    assert parse_schedule("@after 1 minute").next_after(t, BERLIN) == Z(2024, 1, 1, 0, 1)


def test_reboot_never_fires_by_time():
    assert parse_schedule("@reboot").next_after(Z(2024, 1, 1)) is None
    assert upcoming("@reboot", Z(2024, 1, 1), 5) == []


# ---------------------------------------------------------------------------------------
# pgpro_scheduler rule objects
# ---------------------------------------------------------------------------------------


def test_rule_minutes_and_hours():
    rule = RuleSchedule.from_json({"minutes": [0, 30], "hours": [3]})
    assert rule.kind == "rule"
    assert upcoming(rule, Z(2024, 1, 1), 3) == [Z(2024, 1, 1, 3, 0), Z(2024, 1, 1, 3, 30), Z(2024, 1, 2, 3, 0)]


def test_rule_missing_keys_mean_every_value_but_second_zero():
    rule = RuleSchedule.from_json({"hours": [3]})
    assert upcoming(rule, Z(2024, 1, 1, 3, 58), 3) == [
        Z(2024, 1, 1, 3, 59), Z(2024, 1, 2, 3, 0), Z(2024, 1, 2, 3, 1)]
    every_minute = RuleSchedule.from_json({"months": list(range(1, 13))})
    assert every_minute.next_after(Z(2024, 1, 1, 0, 0, 10)) == Z(2024, 1, 1, 0, 1)


def test_rule_seconds():
    rule = RuleSchedule.from_json({"seconds": [0, 30], "minutes": [15]})
    assert upcoming(rule, Z(2024, 1, 1), 3) == [Z(2024, 1, 1, 0, 15), Z(2024, 1, 1, 0, 15, 30), Z(2024, 1, 1, 1, 15)]


def test_rule_days_and_wdays_are_anded():
    rule = RuleSchedule.from_json({"days": [13], "wdays": [5], "hours": [0], "minutes": [0]})
    assert upcoming(rule, Z(2024, 1, 1), 3) == [Z(2024, 9, 13), Z(2024, 12, 13), Z(2025, 6, 13)]


def test_rule_wdays_months_days():
    sundays = RuleSchedule.from_json({"wdays": [0], "hours": [0], "minutes": [0]})
    assert upcoming(sundays, Z(2024, 1, 1), 2) == [Z(2024, 1, 7), Z(2024, 1, 14)]
    leap = RuleSchedule.from_json({"months": [2], "days": [29], "hours": [0], "minutes": [0]})
    assert leap.next_after(Z(2024, 3, 1)) == Z(2028, 2, 29)
    fifteenth = RuleSchedule.from_json({"days": ["15"], "hours": [12], "minutes": [0]})  # numeric strings
    assert fifteenth.next_after(Z(2024, 1, 20)) == Z(2024, 2, 15, 12)


def test_rule_onlastday():
    last = RuleSchedule.from_json({"onlastday": True, "hours": [23], "minutes": [59]})
    assert upcoming(last, Z(2024, 1, 1), 3) == [Z(2024, 1, 31, 23, 59), Z(2024, 2, 29, 23, 59), Z(2024, 3, 31, 23, 59)]
    first_and_last = RuleSchedule.from_json({"days": [1], "onlastday": True, "hours": [0], "minutes": [0]})
    assert upcoming(first_and_last, Z(2024, 1, 15), 3) == [Z(2024, 1, 31), Z(2024, 2, 1), Z(2024, 2, 29)]
    # Feb 31 is fine when the last day is asked for too.
    assert RuleSchedule.from_json({"days": [31], "months": [2], "onlastday": True}).next_after(
        Z(2023, 1, 1)) == Z(2023, 2, 28)


def test_rule_onstart():
    only_start = RuleSchedule.from_json({"onstart": 1})
    assert only_start.runs_at_start and only_start.next_after(Z(2024, 1, 1)) is None
    both = RuleSchedule.from_json({"onstart": 1, "minutes": [0]})
    assert both.runs_at_start and both.next_after(Z(2024, 1, 1, 0, 30)) == Z(2024, 1, 1, 1, 0)
    assert not RuleSchedule.from_json({"onstart": 0, "minutes": [0]}).runs_at_start


def test_rule_crontab():
    alone = RuleSchedule.from_json({"crontab": "0 15 * * *"})
    assert alone.next_after(Z(2024, 1, 1)) == Z(2024, 1, 1, 15)
    # pgpro's stored form: expanded fields plus the original text (informational).
    stored = RuleSchedule.from_json({"crontab": "23 1 * * THU,SUN", "minutes": [23], "hours": [1],
                                     "days": list(range(1, 32)), "months": list(range(1, 13)),
                                     "wdays": [0, 4]})
    assert upcoming(stored, Z(2024, 1, 1), 2) == [Z(2024, 1, 4, 1, 23), Z(2024, 1, 7, 1, 23)]
    reboot = RuleSchedule.from_json({"crontab": "@reboot", "onstart": 1})
    assert reboot.runs_at_start and reboot.next_after(Z(2024, 1, 1)) is None


def test_rule_from_json_text_and_to_json():
    rule = RuleSchedule.from_json('{"hours": [3, 1], "minutes": [0], "onlastday": true}')
    assert rule.hours == (1, 3)
    assert rule.to_json() == {"hours": [1, 3], "minutes": [0], "onlastday": True}
    assert RuleSchedule.from_json(rule.to_json()) == rule


def test_rule_in_a_time_zone():
    rule = RuleSchedule.from_json({"hours": [2], "minutes": [30]})
    assert rule.next_after(Z(2024, 3, 30, 12), BERLIN) == Z(2024, 3, 31, 1, 0)  # gap rule applies


@pytest.mark.parametrize(
    "rule, field, fragment",
    [
        ([1, 2], "rule", "expected a JSON object"),
        ("{not json", "rule", "not valid JSON"),
        ({}, "rule", "no schedule in rule"),
        ({"onstart": 0}, "rule", "no schedule in rule"),
        ({"minute": [1]}, "rule.minute", "unknown key"),
        ({"hours": [24]}, "rule.hours", "24 is out of range 0-23"),
        ({"hours": 3}, "rule.hours", "expected a list"),
        ({"hours": []}, "rule.hours", "empty list"),
        ({"hours": [True]}, "rule.hours", "not an integer"),
        ({"hours": [1.5]}, "rule.hours", "not an integer"),
        ({"hours": ["x"]}, "rule.hours", "not an integer"),
        ({"minutes": [60]}, "rule.minutes", "out of range 0-59"),
        ({"seconds": [-1]}, "rule.seconds", "out of range"),
        ({"days": [0]}, "rule.days", "out of range 1-31"),
        ({"months": [13]}, "rule.months", "out of range 1-12"),
        ({"wdays": [7]}, "rule.wdays", "7 is out of range 0-6"),
        ({"onlastday": "yes"}, "rule.onlastday", "true/false"),
        ({"onstart": 2}, "rule.onstart", "0/1"),
        ({"crontab": 5}, "rule.crontab", "cron string"),
        ({"crontab": "* 25 * * *"}, "rule.crontab", "25 is out of range"),
        ({"days": [31], "months": [2]}, "rule.days", "31 never occurs in month 2"),
        ({"days": [30, 31], "months": [2]}, "rule.days", "30,31 never occur in month 2"),
        ({"days": [31], "months": [4, 6]}, "rule.days", "31 never occurs in months 4,6"),
        ({"dates": ["2024-01-01"]}, "rule.dates", "pgpro_schedule"),
    ],
)
def test_rule_errors(rule, field, fragment):
    with pytest.raises(ScheduleError) as info:
        RuleSchedule.from_json(rule)
    assert info.value.field == field and field in str(info.value)
    assert fragment in str(info.value)


# ---------------------------------------------------------------------------------------
# Dates, combinations, pgpro_schedule
# ---------------------------------------------------------------------------------------


def test_dates_aware_and_naive():
    dates = DatesSchedule.from_json([
        "2024-05-01 10:00", datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc), "2024-05-01 12:00:00+03"])
    assert dates.kind == "dates"
    assert upcoming(dates, Z(2024, 1, 1), 5) == [Z(2024, 5, 1, 9), Z(2024, 5, 1, 10)]  # deduplicated
    # Naive dates are wall times of the evaluation zone; aware ones are absolute.
    assert upcoming(dates, Z(2024, 1, 1), 5, BERLIN) == [Z(2024, 5, 1, 8), Z(2024, 5, 1, 9)]
    assert dates.next_after(Z(2024, 5, 1, 10)) is None


def test_dates_follow_the_dst_rules():
    dates = DatesSchedule.from_json(["2024-03-31 02:30", "2024-10-27 02:30"])
    assert dates.instants(BERLIN) == [Z(2024, 3, 31, 1, 0), Z(2024, 10, 27, 0, 30)]


@pytest.mark.parametrize("value, field", [([], "dates"), (["2024-01-01", "soon"], "dates[1]"),
                                          ([None], "dates[0]"), ("31.12.2024", "dates[0]")])
def test_dates_errors(value, field):
    with pytest.raises(ScheduleError) as info:
        DatesSchedule.from_json(value)
    assert info.value.field == field and field in str(info.value)


def test_seed_example_cron_plus_dates():
    # create_job('{"commands": "SELECT 15", "cron": "0 15 * * *",
    #              "dates": ["2017-12-31 19:00", "2020-04-04 13:00"]}')
    sched = pgpro_schedule(cron="0 15 * * *", dates=["2017-12-31 19:00", "2020-04-04 13:00"])
    assert isinstance(sched, CombinedSchedule) and sched.kind == "combined"
    assert upcoming(sched, Z(2017, 12, 31), 3) == [Z(2017, 12, 31, 15), Z(2017, 12, 31, 19), Z(2018, 1, 1, 15)]
    assert upcoming(sched, Z(2020, 4, 4, 12), 3) == [Z(2020, 4, 4, 13), Z(2020, 4, 4, 15), Z(2020, 4, 5, 15)]


def test_pgpro_schedule_single_and_union():
    assert pgpro_schedule(cron="0 15 * * *") == CronSchedule(CronExpr.parse("0 15 * * *"))
    assert isinstance(pgpro_schedule(rule={"hours": [1]}), RuleSchedule)
    assert isinstance(pgpro_schedule(dates="2024-01-01 00:00"), DatesSchedule)
    union = pgpro_schedule(cron="0 15 * * *", rule={"hours": [3], "minutes": [0]})
    assert upcoming(union, Z(2024, 1, 1), 3) == [Z(2024, 1, 1, 3), Z(2024, 1, 1, 15), Z(2024, 1, 2, 3)]
    # dates may sit inside the rule object (pgpro stores them there)
    inner = pgpro_schedule(rule={"hours": [3], "minutes": [0], "dates": ["2024-01-01 12:00"]})
    assert upcoming(inner, Z(2024, 1, 1), 3) == [Z(2024, 1, 1, 3), Z(2024, 1, 1, 12), Z(2024, 1, 2, 3)]
    only_dates = pgpro_schedule(rule={"dates": "2024-01-01 12:00"})
    assert isinstance(only_dates, DatesSchedule)
    reboot = pgpro_schedule(cron="@reboot", rule={"minutes": [0]})
    assert reboot.runs_at_start and reboot.next_after(Z(2024, 1, 1, 0, 1)) == Z(2024, 1, 1, 1)
    assert pgpro_schedule(rule='{"hours": [1]}') == RuleSchedule.from_json({"hours": [1]})


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({}, "schedule"),
        ({"cron": "@every 10 seconds"}, "cron"),
        ({"cron": "61 * * * *"}, "minute"),
        ({"rule": {"hours": [99]}}, "rule.hours"),
        ({"rule": "[1"}, "rule"),
        ({"dates": []}, "dates"),
        ({"dates": ["2024-01-01", "x"]}, "dates[1]"),
        ({"cron": "0 * * * *", "rule": {"bogus": 1}}, "rule.bogus"),
    ],
)
def test_pgpro_schedule_errors(kwargs, field):
    with pytest.raises(ScheduleError) as info:
        pgpro_schedule(**kwargs)
    assert info.value.field == field and field in str(info.value)


def test_combined_schedule_rules():
    parts = (parse_schedule("0 12 * * *"), DatesSchedule.from_json(["2024-01-01 06:00"]))
    combo = CombinedSchedule(parts)
    nested = CombinedSchedule((combo, RuleSchedule.from_json({"hours": [18], "minutes": [0]})))
    assert len(nested.parts) == 3  # flattened
    assert upcoming(nested, Z(2024, 1, 1), 4) == [Z(2024, 1, 1, 6), Z(2024, 1, 1, 12), Z(2024, 1, 1, 18),
                                                  Z(2024, 1, 2, 12)]
    with pytest.raises(ScheduleError, match="schedule"):
        CombinedSchedule((parse_schedule("@every 5 seconds"), parts[0]))
    with pytest.raises(ScheduleError, match="schedule"):
        CombinedSchedule(())
    assert CombinedSchedule((DatesSchedule.from_json(["2024-01-01"]),)).next_after(Z(2024, 2, 1)) is None


# ---------------------------------------------------------------------------------------
# upcoming / firings_between / next_fire
# ---------------------------------------------------------------------------------------


def test_next_fire_accepts_text_expr_and_schedule():
    t = Z(2024, 1, 1)
    assert next_fire("0 12 * * *", t) == Z(2024, 1, 1, 12)
    assert next_fire(CronExpr.parse("0 12 * * *"), t, BERLIN) == Z(2024, 1, 1, 11)
    assert next_fire(parse_schedule("@every 10 seconds"), t) == Z(2024, 1, 1, 0, 0, 10)


def test_upcoming_five():
    assert upcoming("*/15 * * * *", Z(2024, 1, 1, 0, 7), 5) == [
        Z(2024, 1, 1, 0, 15), Z(2024, 1, 1, 0, 30), Z(2024, 1, 1, 0, 45), Z(2024, 1, 1, 1, 0), Z(2024, 1, 1, 1, 15)]


def test_firings_between_bounds_and_limit():
    start, end = Z(2024, 1, 1, 0, 0), Z(2024, 1, 1, 1, 0)
    got = firings_between("*/15 * * * *", start, end)
    assert got == [Z(2024, 1, 1, 0, 15), Z(2024, 1, 1, 0, 30), Z(2024, 1, 1, 0, 45), Z(2024, 1, 1, 1, 0)]
    assert firings_between("*/15 * * * *", start, end, include_start=True)[0] == start
    assert firings_between("*/15 * * * *", start, end, limit=2) == got[:2]
    assert firings_between("* * * * *", start, start + timedelta(days=1), limit=None)[-1] == start + timedelta(days=1)
    assert firings_between("0 0 1 1 *", start, end) == []
    with pytest.raises(ScheduleError, match="end"):
        firings_between("* * * * *", start, datetime(2024, 1, 2))


def test_catch_up_after_downtime():
    # The engine was down from 09:58 to 12:03 local time: the missed firings are
    # exactly (last_fire, now].
    last, now = Z(2024, 7, 1, 8, 0), Z(2024, 7, 1, 10, 3)
    assert firings_between("0 * * * *", last, now, BERLIN) == [Z(2024, 7, 1, 9, 0), Z(2024, 7, 1, 10, 0)]


# ---------------------------------------------------------------------------------------
# Parity with croniter (oracle) on random 5-field expressions in UTC
# ---------------------------------------------------------------------------------------

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


def _random_item(rng: random.Random, low: int, high: int, names: list[str] | None) -> str:
    def value(v: int) -> str:
        if names and rng.random() < 0.3 and v - low < len(names):
            return names[v - low]
        return str(v)

    a = rng.randint(low, high - 1)
    b = rng.randint(a + 1, high)  # croniter reads an equal range 'a-a' as the whole cycle
    step = rng.randint(1, max(1, (high - low) // 2))
    return rng.choice([
        value(a),
        f"{value(a)}-{value(b)}",
        f"{value(a)}-{value(b)}/{step}",
        f"*/{step}",
        f"{a}/{step}",
    ])


def _random_field(rng: random.Random, low: int, high: int, names=None, star=0.4, last=False) -> str:
    if rng.random() < star:
        return "*"
    items = [_random_item(rng, low, high, names) for _ in range(rng.choice([1, 1, 2, 3]))]
    if last and rng.random() < 0.15:
        items.append("L")
    return ",".join(items)


def random_cron(rng: random.Random) -> str:
    """A random valid 5-field expression of the forms both we and croniter support."""
    while True:
        text = " ".join([
            _random_field(rng, 0, 59, star=0.2),
            _random_field(rng, 0, 23, star=0.3),
            _random_field(rng, 1, 31, star=0.5, last=True),
            _random_field(rng, 1, 12, _MONTHS, star=0.6),
            _random_field(rng, 0, 6, _DAYS, star=0.6),
        ])
        try:
            expr = CronExpr.parse(text)
        except ScheduleError:
            continue  # e.g. day 31 in February only; croniter would loop on it
        # croniter treats a day field that lists every value ('*/1', '0-6') as '*', which
        # turns Vixie's OR into AND; we (like Vixie) only treat a literal '*' that way.
        if (not expr.dom_any and expr.days == tuple(range(1, 32))) or (
                not expr.dow_any and expr.weekdays == tuple(range(7))):
            continue
        return text


def test_parity_with_croniter():
    croniter = pytest.importorskip("croniter").croniter
    rng = random.Random(20240601)
    starts = [Z(2024, 1, 1), Z(2024, 2, 28, 23, 59), Z(2023, 12, 31, 23, 59, 30), Z(2025, 6, 15, 13, 7, 12)]
    compared = 0
    for _ in range(500):
        text = random_cron(rng)
        expr = CronExpr.parse(text)
        start = rng.choice(starts) if rng.random() < 0.5 else Z(2024, 1, 1) + timedelta(
            seconds=rng.randint(0, 5 * 365 * 86400))
        it = croniter(text, start, day_or=True)
        t = start
        for _ in range(3):
            expected = it.get_next(datetime)
            t = expr.next_after(t)
            assert t == expected, f"{text!r} after {start}: ours {t}, croniter {expected}"
            compared += 1
    assert compared == 1500


# ---------------------------------------------------------------------------------------
# Clock
# ---------------------------------------------------------------------------------------


def test_fake_clock():
    clock = FakeClock(Z(2024, 1, 1))
    assert isinstance(clock, Clock)
    assert clock.now() == Z(2024, 1, 1)
    assert clock.advance(90) == Z(2024, 1, 1, 0, 1, 30)
    clock.advance(timedelta(hours=1))
    assert clock.now() == Z(2024, 1, 1, 1, 1, 30)
    clock.set(datetime(2024, 6, 1, 12, tzinfo=ZoneInfo(BERLIN)))
    assert clock.now() == Z(2024, 6, 1, 10) and clock.now().tzinfo is timezone.utc

    async def run():
        await clock.sleep_until(Z(2024, 6, 1, 11))
        assert clock.now() == Z(2024, 6, 1, 11)
        await clock.sleep_until(Z(2024, 1, 1))  # in the past: no change
        assert clock.now() == Z(2024, 6, 1, 11)

    asyncio.run(run())
    with pytest.raises(ValueError):
        FakeClock(datetime(2024, 1, 1))


def test_system_clock():
    clock = SystemClock()
    assert isinstance(clock, Clock)
    now = clock.now()
    assert now.tzinfo is timezone.utc
    asyncio.run(clock.sleep_until(now))  # already due: returns at once
    assert clock.now() >= now


def test_engine_loop_with_fake_clock_hits_each_firing_once():
    # How the engine uses both: sleep until the next firing, run, repeat -- no real sleeping.
    clock = FakeClock(Z(2024, 10, 26, 23, 0))
    sched = parse_schedule("*/30 * * * *")
    fired = []

    async def loop():
        while len(fired) < 6:
            due = sched.next_after(clock.now(), BERLIN)
            await clock.sleep_until(due)
            fired.append(clock.now())

    asyncio.run(loop())
    # 01:30 CEST, 02:00 CEST, 02:30 CEST, (02:00/02:30 CET skipped), 03:00 CET, 03:30 CET, 04:00 CET
    assert fired == [Z(2024, 10, 26, 23, 30), Z(2024, 10, 27, 0, 0), Z(2024, 10, 27, 0, 30),
                     Z(2024, 10, 27, 2, 0), Z(2024, 10, 27, 2, 30), Z(2024, 10, 27, 3, 0)]


# ---------------------------------------------------------------------------------------
# DST semantics against a brute-force oracle
# ---------------------------------------------------------------------------------------


def _wall_matches(e: CronExpr, w: datetime) -> bool:
    """Plain, slow restatement of the cron match rule for one wall-clock minute."""
    last = (w.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    dom_ok = w.day in e.days or (e.last_day and w.day == last.day)
    dow_ok = (w.weekday() + 1) % 7 in e.weekdays
    if e.dom_any and e.dow_any:
        day_ok = True
    elif e.dom_any:
        day_ok = dow_ok
    elif e.dow_any:
        day_ok = dom_ok
    else:
        day_ok = dom_ok or dow_ok
    return (day_ok and w.month in e.months and w.hour in e.hours and w.minute in e.minutes
            and w.second in e.seconds)


def _brute_force_firings(e: CronExpr, zone: ZoneInfo, first_wall: datetime, last_wall: datetime) -> list[datetime]:
    """Walk every wall minute; a missing one fires at the next existing wall minute (the end
    of the gap), an ambiguous one at its first occurrence; equal instants fire once."""
    out = set()
    w = first_wall
    while w <= last_wall:
        if _wall_matches(e, w):
            v = w
            while v.replace(tzinfo=zone).astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) != v:
                v += timedelta(minutes=1)  # inside a gap: move to the first wall time after it
            out.add(v.replace(tzinfo=zone, fold=0).astimezone(timezone.utc))
        w += timedelta(minutes=1)
    return sorted(out)


@pytest.mark.parametrize("zone_name, day", [
    (BERLIN, datetime(2024, 3, 31)), (BERLIN, datetime(2024, 10, 27)),
    (NEW_YORK, datetime(2024, 3, 10)), (NEW_YORK, datetime(2024, 11, 3)),
    ("Australia/Lord_Howe", datetime(2024, 10, 6)), ("Australia/Lord_Howe", datetime(2024, 4, 7)),
])
def test_dst_days_against_brute_force(zone_name, day):
    zone = ZoneInfo(zone_name)
    rng = random.Random(zone_name + day.isoformat())
    first_wall, last_wall = day - timedelta(hours=3), day + timedelta(hours=27)
    exprs = ["* * * * *", "0 * * * *", "30 * * * *", "*/7 * * * *", "30 2 * * *", "0 2 * * *",
             "59 1 * * *", "15 1,2,3 * * *"]
    exprs += [" ".join([_random_field(rng, 0, 59, star=0.1), _random_field(rng, 0, 23, star=0.5), "*", "*", "*"])
              for _ in range(12)]
    for text in exprs:
        e = CronExpr.parse(text)
        expected = _brute_force_firings(e, zone, first_wall, last_wall)
        start = first_wall.replace(tzinfo=zone).astimezone(timezone.utc) - timedelta(seconds=1)
        end = last_wall.replace(tzinfo=zone).astimezone(timezone.utc)
        assert firings_between(e, start, end, zone) == expected, text
        # ... and from arbitrary instants, including the second pass of an overlap.
        for _ in range(20):
            t = start + timedelta(seconds=rng.randint(0, int((end - start).total_seconds())))
            later = [f for f in expected if f > t]
            if later:
                assert e.next_after(t, zone) == later[0], (text, t)
