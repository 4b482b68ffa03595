"""The one schedule evaluator of pgtt-tui.

Everything that asks "when does this fire next?" -- the timetable scheduler, the
pgpro-style ``schedule`` manager, the console's "next five runs" and calendar, missed-run
catch-up and the SQL-side previews -- goes through this module, so the due test and the
UI can never disagree (pg_timetable's ``next_run()`` and its due test do).

Pure Python: the standard library and ``zoneinfo`` only.

Schedule texts
==============

``parse_schedule(text)`` is the entry point for pg_timetable ``run_at`` strings:

* ``@reboot`` -- runs once when an engine starts; it never fires by time.
* ``@every <interval>`` -- the next run is due ``interval`` after the previous run
  *started*.  ``@after <interval>`` -- due ``interval`` after the previous run
  *finished*.  ``<interval>`` is PostgreSQL interval text: ``10 seconds``,
  ``1 hour 30 minutes``, ``500 milliseconds``, ``1.5 seconds``, ``2 days``, ``00:05:00``,
  ``1h30m``, ISO 8601 ``PT5M`` ...  Precision is one microsecond (pg_timetable rounds to
  whole seconds; we do not).  As in PostgreSQL's ``extract(epoch ...)``, a month counts
  as 30 days and a year as 365.25 days.  Zero, negative and unparsable intervals are
  rejected.
* anything else is a cron expression (``CronExpr``).

Cron expressions (``CronExpr.parse``)
=====================================

* 5 fields ``minute hour day-of-month month day-of-week`` or 6 fields with a leading
  ``second``.  Fields are separated by any run of spaces or tabs.
* Each field is a comma list of items; an item is ``*``, ``n``, ``a-b``, ``*/s``,
  ``a-b/s`` or ``a/s`` (from ``a`` to the field maximum in steps of ``s``).
* Months may be named ``JAN``..``DEC`` and weekdays ``SUN``..``SAT`` (any case), also
  inside ranges (``MON-FRI``).  Weekday ``0`` and ``7`` are both Sunday.
* ``L`` in the day-of-month field (alone or as a list item, ``1,15,L``) is the last day of
  the month.  It is rejected in every other field, and inside ranges or steps.
* Macros (any case): ``@yearly`` = ``@annually`` = ``0 0 1 1 *``, ``@monthly`` =
  ``0 0 1 * *``, ``@weekly`` = ``0 0 * * 0``, ``@daily`` = ``@midnight`` = ``0 0 * * *``,
  ``@hourly`` = ``0 * * * *``, and pgpro_scheduler's ``@every_second`` = ``* * * * * *``.
  ``@every_minute`` = ``* * * * *`` is accepted as well (our extension; pgpro documents
  only ``@every_second``).
* Day-of-month vs day-of-week follows Vixie cron: when *both* fields are restricted
  (neither is exactly ``*``), a day fires if EITHER matches; when one of them is ``*``,
  only the other one counts.  So ``0 0 13 * 5`` fires on every 13th and on every Friday.
  Unlike Vixie's implementation (which looks at the first character) ``*/2`` counts as
  restricted: only a field that is exactly ``*`` is unrestricted (croniter agrees).
* Expressions that can never fire are rejected when parsed: with day-of-week ``*``, a
  day-of-month set that occurs in none of the listed months (``0 0 31 2 *``).
  ``0 0 29 2 *`` is fine: there is no one-year search horizon.

pgpro_scheduler schedules
=========================

* ``RuleSchedule.from_json(rule)``: keys ``seconds``, ``minutes``, ``hours``, ``days``,
  ``months``, ``wdays`` (0-6, 0 = Sunday) -- lists of integers (numeric strings are
  accepted too, as pgpro does) -- plus ``onlastday`` (bool: also the last day of the
  month), ``onstart`` (0/1: run when the scheduler starts) and ``crontab`` (a cron
  string).  A missing field means "every" value, except ``seconds``, which means second
  0 (a rule without ``seconds`` fires at most once a minute).  Inside a rule ``days`` and
  ``wdays`` are combined with AND, as pgpro_scheduler does (``{"days": [13],
  "wdays": [5]}`` is Friday the 13th); ``onlastday`` adds the last day of the month to
  ``days`` (with ``days`` missing it means *only* the last day).  ``crontab`` alone is the
  schedule; next to explicit fields it is kept for information only (pgpro stores the
  expanded fields plus the original text that way).
* ``DatesSchedule``: a list of timestamps; naive ones are wall-clock times in the
  evaluation time zone.
* ``CombinedSchedule``: the union of cron / rule / dates / reboot parts -- the next
  firing is the earliest next firing over all parts.  ``pgpro_schedule(cron=, rule=,
  dates=)`` builds one from ``create_job`` keys (``dates`` may also sit inside ``rule``).

Time zones and daylight saving time
===================================

Cron, rule and naive dates are wall-clock schedules evaluated in an IANA zone (``tz``:
a name, a ``tzinfo`` or ``None`` for UTC).  A schedule's firings are the instants its
matching wall-clock times map to:

* a wall time that exists once maps to that instant;
* GAP (spring forward): a wall time that does not exist maps to the first valid instant
  after the gap, i.e. the transition itself -- ``30 2 * * *`` in Europe/Berlin on the
  last Sunday of March fires at 03:00 CEST.  Several missing wall times (every minute of
  the skipped hour) collapse into that ONE firing;
* OVERLAP (fall back): a wall time that occurs twice maps to its FIRST occurrence
  (``fold=0``) only.  So each distinct wall-clock second fires once: an hourly job fires
  at 01:00 EDT but not again at 01:00 EST, and an every-minute job pauses for the
  repeated hour.

All returned datetimes are timezone-aware in UTC.  Arguments must be timezone-aware.
``next_after(t)`` is strictly after ``t``.  ``None`` means "never (again)".

Interval schedules (``@every`` / ``@after``) are relative: ``next_after(t)`` is
``t + interval`` where ``t`` is the previous start (``@every``) or finish (``@after``);
previews chain from the given instant.

Errors: every rejected input raises ``ScheduleError`` (a ``ValueError``) whose ``field``
names the bad part (``"hour"``, ``"rule.hours"``, ``"dates[2]"``, ``"interval"``,
``"timezone"`` ...) and whose ``problem`` says what is wrong.
"""

from __future__ import annotations

import bisect
import calendar
import json
import math
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import InputError

__all__ = [
    "UTC",
    "ScheduleError",
    "CronExpr",
    "Schedule",
    "CronSchedule",
    "EverySchedule",
    "AfterSchedule",
    "RebootSchedule",
    "RuleSchedule",
    "DatesSchedule",
    "CombinedSchedule",
    "parse_schedule",
    "parse_interval",
    "format_interval",
    "pgpro_schedule",
    "resolve_zone",
    "next_fire",
    "upcoming",
    "firings_between",
    "CRON_MACROS",
]

UTC = timezone.utc
_ONE_SECOND = timedelta(seconds=1)
_ONE_MICROSECOND = timedelta(microseconds=1)


class ScheduleError(InputError):
    """A schedule, interval, rule, date or time zone that we refuse.

    ``field`` names the bad part, ``problem`` says what is wrong; ``str()`` is one line
    such as ``cron field "hour" (2nd): 25 is out of range 0-23``.
    """

    def __init__(self, field: str, problem: str, *, where: str | None = None):
        super().__init__(field, problem)
        if where is not None:
            # A more precise label than the bare field name (which is kept in .field).
            self.args = (f"{where}: {problem}",)


# ---------------------------------------------------------------------------------------
# Time zone helpers
# ---------------------------------------------------------------------------------------


def resolve_zone(tz: str | tzinfo | None) -> tzinfo:
    """An IANA zone name, a tzinfo, or None (UTC) -> tzinfo."""
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise ScheduleError("timezone", f"expected an IANA zone name, got {type(tz).__name__}")
    name = tz.strip()
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError("timezone", f"unknown time zone {tz!r} (use an IANA name such as Europe/Berlin)") from None


def _as_utc(t: datetime, what: str = "after") -> datetime:
    if not isinstance(t, datetime):
        raise ScheduleError(what, f"expected a datetime, got {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ScheduleError(what, "naive datetime; pass a timezone-aware datetime")
    return t.astimezone(UTC)


def _first_instant_with_new_offset(zone: tzinfo, lo: datetime, hi: datetime) -> datetime:
    """The transition instant between ``lo`` (old UTC offset) and ``hi`` (new offset).

    zoneinfo does not expose its transition table, so we bisect on whole seconds
    (tzdata transitions are on whole seconds).  Only used at DST edges, so speed is moot.
    """
    target = hi.astimezone(zone).utcoffset()
    lo_s, hi_s = math.floor(lo.timestamp()), math.ceil(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == target:
            hi_s = mid
        else:
            lo_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


def _wall_to_utc(wall: datetime, zone: tzinfo) -> datetime:
    """Map a naive wall-clock time in ``zone`` to the instant it fires at.

    Existing once -> that instant; in an overlap -> the first occurrence (fold=0); in a
    gap -> the first valid instant after the gap (the transition).
    """
    if isinstance(zone, timezone):
        return (wall - zone.utcoffset(None)).replace(tzinfo=UTC)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap fold=0 uses the offset before the transition (lands after it) and fold=1
    # the offset after it (lands before it); the transition lies in between.
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return _first_instant_with_new_offset(zone, before, first)


def _overlap_end_wall(local: datetime, t_utc: datetime, zone: tzinfo) -> datetime:
    """For ``local`` in the second pass of an overlap: the first wall time after it.

    Every wall time of the repeated stretch already fired during the first pass, so the
    search resumes where the wall clock stops repeating itself.
    """
    wall = local.replace(tzinfo=None, fold=0)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    old_offset = first.astimezone(zone).utcoffset()
    transition = _first_instant_with_new_offset(zone, first, t_utc)
    return (transition + old_offset).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------
# The matcher: field sets and the field-arithmetic search for the next wall time
# ---------------------------------------------------------------------------------------

# How day-of-month and day-of-week combine.
_DAYS_ALL, _DAYS_DOM, _DAYS_DOW, _DAYS_EITHER, _DAYS_BOTH = "all", "dom", "dow", "either", "both"


def _next_in(values: tuple[int, ...], v: int) -> int | None:
    """Smallest element >= v of a sorted tuple, or None."""
    i = bisect.bisect_left(values, v)
    return values[i] if i < len(values) else None


@dataclass(frozen=True)
class _Matcher:
    """Allowed values per field, as the search wants them (sorted tuples, bitmaps)."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    dom_bits: tuple[bool, ...]  # index 1..31
    last_day: bool
    dow_bits: tuple[bool, ...]  # index 0..6, 0 = Sunday
    day_mode: str

    @classmethod
    def build(cls, seconds, minutes, hours, days, months, weekdays, last_day, day_mode) -> "_Matcher":
        days_set, dow_set = set(days), set(weekdays)
        return cls(
            tuple(sorted(seconds)), tuple(sorted(minutes)), tuple(sorted(hours)), tuple(sorted(months)),
            tuple(d in days_set for d in range(32)), bool(last_day),
            tuple(w in dow_set for w in range(7)), day_mode,
        )

    def _next_day(self, year: int, month: int, day: int) -> int | None:
        """First day >= ``day`` of the month that the day fields allow, or None."""
        last = calendar.monthrange(year, month)[1]
        if day > last:
            return None
        mode = self.day_mode
        if mode == _DAYS_ALL:
            return day
        weekday = (date(year, month, day).weekday() + 1) % 7  # cron numbering, Sunday = 0
        dom_bits, dow_bits, last_day = self.dom_bits, self.dow_bits, self.last_day
        for d in range(day, last + 1):
            dom_ok = dom_bits[d] or (last_day and d == last)
            dow_ok = dow_bits[weekday]
            if mode == _DAYS_DOM:
                ok = dom_ok
            elif mode == _DAYS_DOW:
                ok = dow_ok
            elif mode == _DAYS_EITHER:
                ok = dom_ok or dow_ok
            else:
                ok = dom_ok and dow_ok
            if ok:
                return d
            weekday = (weekday + 1) % 7
        return None

    def first_at_or_after(self, start: datetime) -> datetime | None:
        """Earliest matching naive wall time >= ``start`` (whole seconds), or None past 9999.

        Field arithmetic: each field either already fits, jumps forward to its next allowed
        value (resetting the smaller fields), or overflows into the next larger unit.  The
        loop runs a handful of times per call; across years only for rare dates (Feb 29).
        """
        if start.microsecond:
            start = start.replace(microsecond=0) + _ONE_SECOND
        y, mo, d, h, mi, s = start.year, start.month, start.day, start.hour, start.minute, start.second
        guard_year = y + 500  # parse-time checks make every schedule fire within ~40 years
        while True:
            if y > 9999:
                return None
            if y > guard_year:  # pragma: no cover - defensive, impossible schedules are rejected
                raise RuntimeError("schedule search did not converge")
            m2 = _next_in(self.months, mo)
            if m2 is None:
                y, mo, d, h, mi, s = y + 1, 1, 1, 0, 0, 0
                continue
            if m2 != mo:
                mo, d, h, mi, s = m2, 1, 0, 0, 0
            d2 = self._next_day(y, mo, d)
            if d2 is None:
                mo, d, h, mi, s = mo + 1, 1, 0, 0, 0
                continue
            if d2 != d:
                d, h, mi, s = d2, 0, 0, 0
            h2 = _next_in(self.hours, h)
            if h2 is None:
                d, h, mi, s = d + 1, 0, 0, 0
                continue
            if h2 != h:
                h, mi, s = h2, 0, 0
            mi2 = _next_in(self.minutes, mi)
            if mi2 is None:
                h, mi, s = h + 1, 0, 0
                continue
            if mi2 != mi:
                mi, s = mi2, 0
            s2 = _next_in(self.seconds, s)
            if s2 is None:
                mi, s = mi + 1, 0
                continue
            return datetime(y, mo, d, h, mi, s2)


def _next_instant(matcher: _Matcher, after: datetime, tz: str | tzinfo | None) -> datetime | None:
    """First firing instant (UTC) strictly after ``after`` of a wall-clock matcher."""
    t = _as_utc(after)
    zone = resolve_zone(tz)
    try:
        if isinstance(zone, timezone):  # fixed offset: no DST, plain arithmetic
            offset = zone.utcoffset(None)
            wall = matcher.first_at_or_after((t + offset).replace(tzinfo=None, microsecond=0) + _ONE_SECOND)
            return None if wall is None else (wall - offset).replace(tzinfo=UTC)
        local = t.astimezone(zone)
        if local.fold:
            # Second pass through a repeated stretch: those wall times fired already.
            start = _overlap_end_wall(local, t, zone)
        else:
            start = local.replace(tzinfo=None, microsecond=0) + _ONE_SECOND
        for _ in range(1000):  # defensive: one pass always suffices (see _wall_to_utc)
            wall = matcher.first_at_or_after(start)
            if wall is None:
                return None
            instant = _wall_to_utc(wall, zone)
            if instant > t:
                return instant
            # Only reachable around DST edges (a wall time mapped to an instant <= t).
            start = wall + _ONE_SECOND
        raise RuntimeError("schedule search did not converge")  # pragma: no cover
    except OverflowError:
        return None


# ---------------------------------------------------------------------------------------
# Cron expressions
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int] | None = None
    open_high: int | None = None  # where '*' and 'a/s' end, if not at ``high``

    @property
    def last(self) -> int:
        return self.high if self.open_high is None else self.open_high


_MONTH_NAMES = {n: i for i, n in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1)}
_DAY_NAMES = {n: i for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}

_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day of month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES)
# 7 is an alias of 0 (Sunday) for explicit values and ranges ('5-7'); '*' and 'a/s' stop
# at 6 so that '1/2' is Mon, Wed, Fri and not Sunday as well.
_DOW = _Field("day of week", 0, 7, _DAY_NAMES, open_high=6)
_FIVE = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)
_SIX = (_SECOND,) + _FIVE

#: Accepted ``@`` macros of cron expressions and their expansion.
CRON_MACROS: Mapping[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
    "@every_minute": "* * * * *",
    "@every_second": "* * * * * *",
}

_NUMBER = re.compile(r"[0-9]+")
_ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "6th")
_MAX_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb: leap years


def _cron_error(spec: _Field, position: int, problem: str) -> ScheduleError:
    return ScheduleError(spec.name, problem, where=f'cron field "{spec.name}" ({_ORDINALS[position]})')


def _parse_value(token: str, spec: _Field, position: int) -> int:
    if _NUMBER.fullmatch(token):
        value = int(token)
        if not spec.low <= value <= spec.high:
            raise _cron_error(spec, position, f"{value} is out of range {spec.low}-{spec.high}")
        return value
    upper = token.upper()
    if spec.names and upper in spec.names:
        return spec.names[upper]
    if upper == "L":
        if spec is _DOM:
            raise _cron_error(spec, position, "L (last day of month) cannot be part of a range or step")
        raise _cron_error(spec, position, "L (last day of month) is only allowed in the day-of-month field")
    if token == "":
        raise _cron_error(spec, position, "missing number")
    what = {"month": "a month name or number 1-12", "day of week": "a day name or number 0-7"}.get(
        spec.name, f"a number {spec.low}-{spec.high}")
    raise _cron_error(spec, position, f"{token!r} is not {what}")


def _parse_step(text: str, spec: _Field, position: int) -> int:
    if not _NUMBER.fullmatch(text):
        raise _cron_error(spec, position, f"step {text!r} is not a positive whole number")
    step = int(text)
    if step == 0:
        raise _cron_error(spec, position, "step 0 is not allowed (use a step of 1 or more)")
    return step


def _parse_cron_field(text: str, spec: _Field, position: int) -> tuple[set[int], bool]:
    """One field -> (allowed values, 'L' given).  Weekday 7 is folded into 0."""
    values: set[int] = set()
    last = False
    for item in text.split(","):
        if item == "":
            raise _cron_error(spec, position, f"empty item in list {text!r}")
        if item.upper() == "L":
            if spec is not _DOM:
                raise _cron_error(spec, position, "L (last day of month) is only allowed in the day-of-month field")
            last = True
            continue
        base, slash, step_text = item.partition("/")
        step = _parse_step(step_text, spec, position) if slash else 1
        if base == "*":
            low, high = spec.low, spec.last
        elif "-" in base:
            a, _, b = base.partition("-")
            low, high = _parse_value(a, spec, position), _parse_value(b, spec, position)
            if low > high:
                raise _cron_error(spec, position, f"range {base} is reversed (start is after end)")
        else:
            low = _parse_value(base, spec, position)
            high = max(low, spec.last) if slash else low  # 'a/s' runs from a to the field maximum
        values.update(range(low, high + 1, step))
    if spec is _DOW and 7 in values:
        values.discard(7)
        values.add(0)
    return values, last


def _compress(values: Sequence[int], low: int, high: int, full_is_star: bool) -> str:
    """Canonical text of one field's value set."""
    vals = sorted(values)
    if full_is_star and vals == list(range(low, high + 1)):
        return "*"
    if len(vals) >= 3:
        step = vals[1] - vals[0]
        if step >= 2 and vals == list(range(vals[0], vals[-1] + 1, step)):
            if vals[0] == low and vals[-1] + step > high:
                return f"*/{step}"
            return f"{vals[0]}-{vals[-1]}/{step}"
    parts, i = [], 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{vals[i]}-{vals[j]}")
        else:
            parts.extend(str(v) for v in vals[i:j + 1])
        i = j + 1
    return ",".join(parts)


def _impossible_days(days: Iterable[int], months: Iterable[int]) -> str | None:
    """Problem text if no listed day occurs in any listed month (leap years count)."""
    days, months = sorted(days), sorted(months)
    if not days or any(d <= _MAX_DAYS_IN_MONTH[m] for d in days for m in months):
        return None
    day_text = ",".join(map(str, days))
    month_text = ",".join(map(str, months))
    verb = "never occurs" if len(days) == 1 else "never occur"
    return f"{day_text} {verb} in month{'s' if len(months) > 1 else ''} {month_text}"


@dataclass(frozen=True)
class CronExpr:
    """An immutable, validated cron expression (see the module docstring for the dialect).

    ``seconds`` is ``(0,)`` for 5-field expressions.  ``days`` excludes ``L``, which is
    ``last_day``.  ``weekdays`` uses 0-6 with 0 = Sunday.  ``dom_any`` / ``dow_any`` say
    whether the day fields were exactly ``*`` (this decides the OR rule).
    """

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    last_day: bool = False
    dom_any: bool = True
    dow_any: bool = True
    text: str = field(default="", compare=False)
    _matcher: _Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dom_any and self.dow_any:
            mode = _DAYS_ALL
        elif self.dom_any:
            mode = _DAYS_DOW
        elif self.dow_any:
            mode = _DAYS_DOM
        else:
            mode = _DAYS_EITHER  # Vixie: both restricted -> either may match
        object.__setattr__(self, "_matcher", _Matcher.build(
            self.seconds, self.minutes, self.hours, self.days, self.months, self.weekdays, self.last_day, mode))

    @classmethod
    def parse(cls, text: str) -> "CronExpr":
        """Parse a 5/6-field expression or a macro; raise ScheduleError naming the field."""
        if not isinstance(text, str):
            raise ScheduleError("cron", f"expected text, got {type(text).__name__}")
        source = text.strip()
        if not source:
            raise ScheduleError("cron", "empty expression; expected 5 fields (minute hour day-of-month month "
                                        "day-of-week), 6 with leading seconds, or a macro such as @daily")
        if source.startswith("@"):
            keyword = source.lower()
            if keyword not in CRON_MACROS:
                if re.match(r"@(every|after)\b|@reboot\b", keyword):
                    problem = f"{source!r} is not a cron expression (parse_schedule() handles it)"
                else:
                    problem = f"unknown keyword {source!r}; known: {', '.join(CRON_MACROS)}"
                raise ScheduleError("cron", problem)
            return replace(cls.parse(CRON_MACROS[keyword]), text=source)
        parts = source.split()
        if len(parts) not in (5, 6):
            raise ScheduleError("cron", f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
                                        f"(with leading seconds), got {len(parts)} in {source!r}")
        specs = _FIVE if len(parts) == 5 else _SIX
        parsed: dict[str, tuple[set[int], bool]] = {}
        for position, (part, spec) in enumerate(zip(parts, specs)):
            parsed[spec.name] = _parse_cron_field(part, spec, position)
        if len(parts) == 5:
            parsed["second"] = ({0}, False)
        dom_text, dow_text = parts[-3], parts[-1]
        dom_any, dow_any = dom_text == "*", dow_text == "*"
        days, last_day = parsed["day of month"]
        months = parsed["month"][0]
        if dow_any and not last_day:
            problem = _impossible_days(days, months)
            if problem:
                raise _cron_error(_DOM, len(parts) - 3, problem)
        return cls(
            seconds=tuple(sorted(parsed["second"][0])),
            minutes=tuple(sorted(parsed["minute"][0])),
            hours=tuple(sorted(parsed["hour"][0])),
            days=tuple(sorted(days)),
            months=tuple(sorted(months)),
            weekdays=tuple(sorted(parsed["day of week"][0])),
            last_day=last_day, dom_any=dom_any, dow_any=dow_any, text=source,
        )

    def to_text(self) -> str:
        """Canonical text: numbers only, sorted, ``*``/``*/s``/ranges; 5 fields unless seconds matter.

        ``CronExpr.parse(e.to_text()) == e`` always holds.
        """
        if self.dom_any:
            dom = "*"
        else:
            dom_parts = [_compress(self.days, 1, 31, False)] if self.days else []
            dom = ",".join(dom_parts + (["L"] if self.last_day else []))
        dow = "*" if self.dow_any else _compress(self.weekdays, 0, 6, False)
        fields = [
            _compress(self.minutes, 0, 59, True),
            _compress(self.hours, 0, 23, True),
            dom,
            _compress(self.months, 1, 12, True),
            dow,
        ]
        if self.seconds != (0,):
            fields.insert(0, _compress(self.seconds, 0, 59, True))
        return " ".join(fields)

    def __str__(self) -> str:
        return self.to_text()

    def next_after(self, t: datetime, tz: str | tzinfo | None = None) -> datetime | None:
        """First firing strictly after ``t``, evaluated in ``tz`` (None = UTC); UTC result.

        None only when the next firing would be after the year 9999.
        """
        return _next_instant(self._matcher, t, tz)

    def matches(self, t: datetime, tz: str | tzinfo | None = None) -> bool:
        """Whether ``t`` (truncated to the whole second) is a firing instant in ``tz``."""
        t = _as_utc(t, "t").replace(microsecond=0)
        return self.next_after(t - _ONE_MICROSECOND, tz) == t


# ---------------------------------------------------------------------------------------
# PostgreSQL interval text
# ---------------------------------------------------------------------------------------

_US = Decimal(1)
_SECOND_US = Decimal(1_000_000)
_DAY_US = 86_400 * _SECOND_US
_YEAR_US = Decimal("365.25") * _DAY_US  # extract(epoch from interval '1 year')
_UNITS: dict[str, tuple[str, Decimal]] = {}
for _canon, _size, _spellings in (
    ("microsecond", _US, "microsecond microseconds usec usecs us"),
    ("millisecond", Decimal(1000), "millisecond milliseconds msec msecs ms"),
    ("second", _SECOND_US, "second seconds sec secs s"),
    ("minute", 60 * _SECOND_US, "minute minutes min mins m"),
    ("hour", 3600 * _SECOND_US, "hour hours hr hrs h"),
    ("day", _DAY_US, "day days d"),
    ("week", 7 * _DAY_US, "week weeks w"),
    ("month", 30 * _DAY_US, "month months mon mons"),  # extract(epoch): a month is 30 days
    ("year", _YEAR_US, "year years yr yrs y"),
    ("decade", 10 * _YEAR_US, "decade decades"),
    ("century", 100 * _YEAR_US, "century centuries"),
    ("millennium", 1000 * _YEAR_US, "millennium millennia millenniums"),
):
    for _spelling in _spellings.split():
        _UNITS[_spelling] = (_canon, _size)

_INTERVAL_TOKEN = re.compile(r"""
    \s*(?:
        (?P<time>[+-]?\d+:\d{1,2}(?::\d{1,2}(?:\.\d*)?)?)          # [-]h:mm[:ss[.frac]]
      | (?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[a-z]+)?  # 10 seconds, 1.5h, 10
      | (?P<ago>ago)\b
    )""", re.X | re.I)
_ISO_NUM = r"(\d+(?:[.,]\d+)?)"
_ISO_INTERVAL = re.compile(
    rf"P(?!$)(?:{_ISO_NUM}Y)?(?:{_ISO_NUM}M)?(?:{_ISO_NUM}W)?(?:{_ISO_NUM}D)?"
    rf"(?:T(?=\d)(?:{_ISO_NUM}H)?(?:{_ISO_NUM}M)?(?:{_ISO_NUM}S)?)?", re.I)


def _interval_error(text: str, problem: str) -> ScheduleError:
    return ScheduleError("interval", f"{problem} in {text!r}" if text else problem)


def _iso_interval_us(text: str) -> Decimal | None:
    m = _ISO_INTERVAL.fullmatch(text)
    if not m:
        return None
    sizes = (_YEAR_US, 30 * _DAY_US, 7 * _DAY_US, _DAY_US, 3600 * _SECOND_US, 60 * _SECOND_US, _SECOND_US)
    return sum((Decimal(g.replace(",", ".")) * size for g, size in zip(m.groups(), sizes) if g), Decimal(0))


def _time_token_us(token: str) -> Decimal:
    negative = token.startswith("-")
    parts = token.lstrip("+-").split(":")
    hours, minutes = Decimal(parts[0]), Decimal(parts[1])
    seconds = Decimal(parts[2]) if len(parts) > 2 else Decimal(0)
    if minutes >= 60 or seconds >= 60:
        raise ScheduleError("interval", f"minutes and seconds must be below 60 in {token!r}")
    total = (hours * 3600 + minutes * 60 + seconds) * _SECOND_US
    return -total if negative else total


def parse_interval(text: str) -> timedelta:
    """PostgreSQL interval text -> a positive timedelta (microsecond precision).

    Accepts ``<number> <unit>`` pairs (units and abbreviations as PostgreSQL spells them,
    with or without a space: ``1h30m``), ``[-]h:mm[:ss[.frac]]``, a bare number (seconds),
    a trailing ``ago`` and ISO 8601 (``P1DT2H``).  A month is 30 days and a year 365.25
    days (``extract(epoch ...)``).  Raises ScheduleError(field="interval").
    """
    if not isinstance(text, str):
        raise ScheduleError("interval", f"expected text, got {type(text).__name__}")
    source = text.strip()
    if not source:
        raise ScheduleError("interval", "missing interval (e.g. '10 seconds', '1 hour 30 minutes', '00:05:00')")
    total = _iso_interval_us(source)
    if total is None:
        total = _words_interval_us(source)
    micro = int(total.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if micro <= 0:
        raise _interval_error(source, "interval must be positive" if micro < 0 or total < 0
                              else "interval must be longer than zero")
    try:
        return timedelta(microseconds=micro)
    except OverflowError:
        raise _interval_error(source, "interval is too large") from None


def _words_interval_us(source: str) -> Decimal:
    total, seen, pos, negate = Decimal(0), set(), 0, False
    while pos < len(source):
        m = _INTERVAL_TOKEN.match(source, pos)
        if not m or m.end() == pos:
            rest = source[pos:].strip()
            if not rest:
                break
            raise _interval_error(source, f"cannot read {rest.split()[0]!r}")
        pos = m.end()
        if negate:
            raise _interval_error(source, "'ago' must come last")
        if m.group("ago"):
            negate = True
            continue
        if m.group("time"):
            names, amount = ("hour", "minute", "second"), _time_token_us(m.group("time"))
        else:
            unit = (m.group("unit") or "").lower()
            try:
                number = Decimal(m.group("num"))
            except InvalidOperation:  # pragma: no cover - the regex only lets numbers through
                raise _interval_error(source, f"bad number {m.group('num')!r}") from None
            if unit == "ago":
                unit, negate = "", True
            if unit:
                if unit not in _UNITS:
                    raise _interval_error(source, f"unknown unit {m.group('unit')!r}")
                canon, size = _UNITS[unit]
            else:
                canon, size = "second", _SECOND_US  # PostgreSQL reads a bare number as seconds
            names, amount = (canon,), number * size
        if seen.intersection(names):
            raise _interval_error(source, f"{'/'.join(sorted(seen.intersection(names)))} given twice")
        seen.update(names)
        total += amount
    if not seen:
        raise _interval_error(source, "no amount given")
    return -total if negate else total


def format_interval(delta: timedelta) -> str:
    """Readable interval text that ``parse_interval`` reads back exactly."""
    micro = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    parts = []
    for name, size in (("day", 86_400_000_000), ("hour", 3_600_000_000), ("minute", 60_000_000)):
        count, micro = divmod(micro, size)
        if count:
            parts.append(f"{count} {name}{'s' if count != 1 else ''}")
    if micro or not parts:
        seconds = format(Decimal(micro) / _SECOND_US, "f")
        if "." in seconds:
            seconds = seconds.rstrip("0").rstrip(".")
        parts.append(f"{seconds} second{'' if seconds == '1' else 's'}")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------
# Schedules: a small tagged union
# ---------------------------------------------------------------------------------------


class Schedule:
    """Base of all schedules.  ``kind`` is one of cron, every, after, reboot, rule, dates,
    combined.  ``next_after(t, tz)`` -> first firing strictly after ``t`` (UTC) or None."""

    kind: str = ""
    #: runs once when an engine / the scheduler starts (@reboot, rule onstart)
    runs_at_start: bool = False
    #: the next firing is relative to the previous run (@every / @after)
    is_relative: bool = False

    def next_after(self, t: datetime, tz: str | tzinfo | None = None) -> datetime | None:
        raise NotImplementedError

    def to_text(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.to_text()


@dataclass(frozen=True)
class CronSchedule(Schedule):
    expr: CronExpr
    kind = "cron"

    def next_after(self, t: datetime, tz: str | tzinfo | None = None) -> datetime | None:
        return self.expr.next_after(t, tz)

    def to_text(self) -> str:
        return self.expr.to_text()


@dataclass(frozen=True)
class _IntervalSchedule(Schedule):
    interval: timedelta
    is_relative = True

    def next_after(self, t: datetime, tz: str | tzinfo | None = None) -> datetime | None:
        """``t`` is the previous start (@every) or finish (@after); the zone is irrelevant."""
        try:
            return _as_utc(t) + self.interval
        except OverflowError:
            return None

    def to_text(self) -> str:
        return f"@{self.kind} {format_interval(self.interval)}"


@dataclass(frozen=True)
class EverySchedule(_IntervalSchedule):
    """``@every i``: due ``i`` after the previous run started."""

    kind = "every"


@dataclass(frozen=True)
class AfterSchedule(_IntervalSchedule):
    """``@after i``: due ``i`` after the previous run finished."""

    kind = "after"


@dataclass(frozen=True)
class RebootSchedule(Schedule):
    """``@reboot``: once per engine start; never fires by time."""

    kind = "reboot"
    runs_at_start = True

    def next_after(self, t: datetime, tz: str | tzinfo | None = None) -> datetime | None:
        _as_utc(t)
        return None

    def to_text(self) -> str:
        return "@reboot"


_INTERVAL_KEYWORD = re.compile(r"@(every|after)(?![a-z_])\s*(.*)", re.I | re.S)


def parse_schedule(text: str) -> Schedule:
    """A pg_timetable ``run_at`` string (or any cron text) -> Schedule.

    ``@reboot``, ``@every <interval>``, ``@after <interval>``, else a cron expression or
    macro.  (A NULL ``run_at``, "every minute" in pg_timetable, is the caller's to map.)
    """
    if not isinstance(text, str):
        raise ScheduleError("cron", f"expected text, got {type(text).__name__}")
    source = text.strip()
    if source.lower() == "@reboot":
        return RebootSchedule()
    m = _INTERVAL_KEYWORD.fullmatch(source)
    if m:
        kind, rest = m.group(1).lower(), m.group(2)
        if not rest.strip():
            raise ScheduleError("interval", f"missing interval after @{kind} (e.g. '@{kind} 10 seconds')")
        interval = parse_interval(rest)
        return EverySchedule(interval) if kind == "every" else AfterSchedule(interval)
    return CronSchedule(CronExpr.parse(source))


# --- pgpro_scheduler rule objects ------------------------------------------------------

_RULE_FIELDS: dict[str, tuple[int, int]] = {
    "seconds": (0, 59), "minutes": (0, 59), "hours": (0, 23),
    "days": (1, 31), "months": (1, 12), "wdays": (0, 6),
}
_RULE_FLAGS = ("onlastday", "onstart")
_RULE_KEYS = tuple(_RULE_FIELDS) + _RULE_FLAGS + ("crontab",)


def _rule_values(key: str, raw: Any) -> tuple[int, ...]:
    low, high = _RULE_FIELDS[key]
    where = f"rule.{key}"
    if not isinstance(raw, (list, tuple)):
        raise ScheduleError(where, f"expected a list of integers {low}-{high}, got {type(raw).__name__}")
    if not raw:
        raise ScheduleError(where, "empty list never fires; omit the key to mean every value")
    values = set()
    for i, item in enumerate(raw):
        if isinstance(item, str) and _NUMBER.fullmatch(item.strip()):
            item = int(item.strip())  # pgpro accepts numeric strings in rule arrays
        if isinstance(item, bool) or not isinstance(item, int):
            raise ScheduleError(where, f"item {i} ({item!r}) is not an integer")
        if not low <= item <= high:
            raise ScheduleError(where, f"{item} is out of range {low}-{high}")
        values.add(item)
    return tuple(sorted(values))


def _rule_flag(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    raise ScheduleError(f"rule.{key}", f"expected true/false or 0/1, got {raw!r}")


@dataclass(frozen=True)
class RuleSchedule(Schedule):
    """A pgpro_scheduler ``rule`` object (see the module docstring for the semantics).

    A field that is None was not given ("every", but ``seconds`` defaults to 0).
    """

    seconds: tuple[int, ...] | None = None
    minutes: tuple[int, ...] | None = None
    hours: tuple[int, ...] | None = None
    days: tuple[int, ...] | None = None
    months: tuple[int, ...] | None = None
    wdays: tuple[int, ...] | None = None
    onlastday: bool = False
    onstart: bool = False
    crontab: str | None = None
    _matcher: _Matcher | None = field(init=False, repr=False, compare=False)
    kind = "rule"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_matcher", self._build_matcher())

    @property
    def has_time_fields(self) -> bool:
        return any(getattr(self, k) is not None for k in _RULE_FIELDS) or self.onlastday

    @property
    def runs_at_start(self) -> bool:  # type: ignore[override]
        return self.onstart or (not self.has_time_fields and (self.crontab or "").strip().lower() == "@reboot")

    def _build_matcher(self) -> _Matcher | None:
        if not self.has_time_fields:
            if self.crontab is None or self.crontab.strip().lower() == "@reboot":
                return None  # on-start only
            return CronExpr.parse(self.crontab)._matcher
        if self.days is not None or self.onlastday:
            mode = _DAYS_BOTH if self.wdays is not None else _DAYS_DOM
        else:
            mode = _DAYS_DOW if self.wdays is not None else _DAYS_ALL
        return _Matcher.build(
            self.seconds if self.seconds is not None else (0,),
            self.minutes if self.minutes is not None else range(60),
            self.hours if self.hours is not None else range(24),
            self.days if self.days is not None else (),
            self.months if self.months is not None else range(1, 13),
            self.wdays if self.wdays is not None else range(7),
            self.onlastday, mode)

    @classmethod
    def from_json(cls, rule: Mapping[str, Any] | str) -> "RuleSchedule":
        """Validate a rule object (a dict, or JSON text) and build the schedule."""
        if isinstance(rule, str):
            try:
                rule = json.loads(rule)
            except ValueError as exc:
                raise ScheduleError("rule", f"not valid JSON: {exc}") from None
        if not isinstance(rule, Mapping):
            raise ScheduleError("rule", f"expected a JSON object, got {type(rule).__name__}")
        for key in rule:
            if key == "dates":
                raise ScheduleError("rule.dates", "dates inside a rule are handled by pgpro_schedule(); "
                                                  "RuleSchedule covers the time fields only")
            if key not in _RULE_KEYS:
                raise ScheduleError(f"rule.{key}", f"unknown key; expected one of {', '.join(_RULE_KEYS)}")
        kwargs: dict[str, Any] = {k: _rule_values(k, rule[k]) for k in _RULE_FIELDS if k in rule}
        kwargs.update({k: _rule_flag(k, rule[k]) for k in _RULE_FLAGS if k in rule})
        if "crontab" in rule:
            crontab = rule["crontab"]
            if not isinstance(crontab, str):
                raise ScheduleError("rule.crontab", f"expected a cron string, got {type(crontab).__name__}")
            if crontab.strip().lower() != "@reboot":
                try:
                    CronExpr.parse(crontab)
                except ScheduleError as exc:
                    raise ScheduleError("rule.crontab", str(exc)) from None
            kwargs["crontab"] = crontab
        schedule = cls(**kwargs)
        if schedule._matcher is None and not schedule.runs_at_start:
            raise ScheduleError("rule", "no schedule in rule; give at least one of "
                                        f"{', '.join(_RULE_FIELDS)}, onlastday, crontab or onstart: 1")
        if schedule.has_time_fields and not schedule.onlastday and schedule.days is not None:
            problem = _impossible_days(schedule.days, schedule.months or range(1, 13))
            if problem:
                raise ScheduleError("rule.days", problem)
        return schedule

    def to_json(self) -> dict[str, Any]:
        """The rule object with only the keys that were given."""
        out: dict[str, Any] = {k: list(getattr(self, k)) for k in _RULE_FIELDS if getattr(self, k) is not None}
        if self.onlastday:
            out["onlastday"] = True
        if self.onstart:
            out["onstart"] = 1
        if self.crontab is not None:
            out["crontab"] = self.crontab
        return out

    def next_after(self, t: datetime, tz: str | tzinfo | None = None) -> datetime | None:
        if self._matcher is None:
            _as_utc(t)
            return None
        return _next_instant(self._matcher, t, tz)

    def to_text(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


# --- explicit dates --------------------------------------------------------------------


def _parse_date(raw: Any, where: str) -> datetime:
    if isinstance(raw, datetime):
        return raw
    if isinstance(raw, date):
        return datetime(raw.year, raw.month, raw.day)
    if not isinstance(raw, str):
        raise ScheduleError(where, f"expected a timestamp, got {type(raw).__name__}")
    try:
        # Python 3.11 reads PostgreSQL's output (+03 offsets), 'T' separators and 'Z'.
        return datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ScheduleError(where, f"{raw!r} is not a timestamp (e.g. '2026-12-31 19:00' or "
                                   "'2026-12-31 19:00:00+03')") from None


@dataclass(frozen=True)
class DatesSchedule(Schedule):
    """Explicit one-off timestamps.  Naive ones are wall-clock times in the evaluation zone
    (a gap time runs at the end of the gap, an overlap time at its first occurrence)."""

    dates: tuple[datetime, ...]
    kind = "dates"

    @classmethod
    def from_json(cls, value: Any) -> "DatesSchedule":
        """One timestamp or a list of them (datetime objects or timestamp text)."""
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items:
            raise ScheduleError("dates", "empty list; give at least one timestamp")
        return cls(tuple(_parse_date(raw, f"dates[{i}]") for i, raw in enumerate(items)))

    def instants(self, tz: str | tzinfo | None = None) -> list[datetime]:
        """All dates as sorted, distinct UTC instants."""
        zone = resolve_zone(tz)
        out = {d.astimezone(UTC) if d.tzinfo is not None else _wall_to_utc(d, zone) for d in self.dates}
        return sorted(out)

    def next_after(self, t: datetime, tz: str | tzinfo | None = None) -> datetime | None:
        t = _as_utc(t)
        instants = self.instants(tz)
        i = bisect.bisect_right(instants, t)
        return instants[i] if i < len(instants) else None

    def to_text(self) -> str:
        return ", ".join(d.isoformat(sep=" ") for d in sorted(self.dates, key=_sort_key))


def _sort_key(d: datetime) -> datetime:
    return d.astimezone(UTC).replace(tzinfo=None) if d.tzinfo is not None else d


# --- unions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CombinedSchedule(Schedule):
    """The union of cron / rule / dates / reboot parts: fires whenever any part fires."""

    parts: tuple[Schedule, ...]
    kind = "combined"

    def __post_init__(self) -> None:
        flat: list[Schedule] = []
        for part in self.parts:
            if isinstance(part, CronExpr):
                part = CronSchedule(part)
            if isinstance(part, CombinedSchedule):
                flat.extend(part.parts)
            elif part.is_relative:
                raise ScheduleError("schedule", f"{part.to_text()} is relative to the previous run "
                                                "and cannot be combined with other schedules")
            else:
                flat.append(part)
        if not flat:
            raise ScheduleError("schedule", "a combined schedule needs at least one part")
        object.__setattr__(self, "parts", tuple(flat))

    @property
    def runs_at_start(self) -> bool:  # type: ignore[override]
        return any(p.runs_at_start for p in self.parts)

    def next_after(self, t: datetime, tz: str | tzinfo | None = None) -> datetime | None:
        found = [n for n in (p.next_after(t, tz) for p in self.parts) if n is not None]
        return min(found) if found else None

    def to_text(self) -> str:
        return " | ".join(f"{p.kind}: {p.to_text()}" for p in self.parts)


def pgpro_schedule(cron: str | None = None, rule: Mapping[str, Any] | str | None = None,
                   dates: Any = None) -> Schedule:
    """The schedule of a pgpro_scheduler ``create_job`` call (keys cron, rule, dates).

    ``cron`` takes a cron expression, a macro or ``@reboot`` (no @every/@after: pgpro has
    none).  ``dates`` found inside ``rule`` are merged with ``dates``.  Several sources
    make a CombinedSchedule (their union); one source is returned as itself.
    """
    parts: list[Schedule] = []
    all_dates: list[Any] = []
    if cron is not None:
        if isinstance(cron, str) and cron.strip().lower() == "@reboot":
            parts.append(RebootSchedule())
        else:
            parts.append(CronSchedule(CronExpr.parse(cron)))
    if rule is not None:
        if isinstance(rule, str):
            try:
                rule = json.loads(rule)
            except ValueError as exc:
                raise ScheduleError("rule", f"not valid JSON: {exc}") from None
        if isinstance(rule, Mapping) and "dates" in rule:
            inner = rule["dates"]
            all_dates.extend(inner if isinstance(inner, (list, tuple)) else [inner])
            rule = {k: v for k, v in rule.items() if k != "dates"}
        if not isinstance(rule, Mapping) or rule:
            parts.append(RuleSchedule.from_json(rule))
    if dates is not None:
        if isinstance(dates, (list, tuple)) and not dates:
            raise ScheduleError("dates", "empty list; give at least one timestamp")
        all_dates[:0] = list(dates) if isinstance(dates, (list, tuple)) else [dates]
    if all_dates:
        parts.append(DatesSchedule.from_json(all_dates))
    if not parts:
        raise ScheduleError("schedule", "there is no information about the job's schedule; "
                                        "give cron, rule or dates")
    return parts[0] if len(parts) == 1 else CombinedSchedule(tuple(parts))


# ---------------------------------------------------------------------------------------
# Convenience functions used by the engine and the console
# ---------------------------------------------------------------------------------------


def _as_schedule(schedule: Schedule | CronExpr | str) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, CronExpr):
        return CronSchedule(schedule)
    return parse_schedule(schedule)


def next_fire(expr: Schedule | CronExpr | str, after: datetime,
              tz: str | tzinfo | None = None) -> datetime | None:
    """First firing strictly after ``after`` in zone ``tz`` (None = UTC), as a UTC datetime."""
    return _as_schedule(expr).next_after(after, tz)


def upcoming(schedule: Schedule | CronExpr | str, after: datetime, n: int = 5,
             tz: str | tzinfo | None = None) -> list[datetime]:
    """The next ``n`` firings after ``after`` (fewer if the schedule runs out).

    For @every / @after this chains ``after + i, after + 2i, ...`` (assuming instant runs).
    """
    sched = _as_schedule(schedule)
    out: list[datetime] = []
    t = after
    while len(out) < n:
        nxt = sched.next_after(t, tz)
        if nxt is None:
            break
        out.append(nxt)
        t = nxt
    return out


def firings_between(schedule: Schedule | CronExpr | str, start: datetime, end: datetime,
                    tz: str | tzinfo | None = None, limit: int | None = 10_000,
                    *, include_start: bool = False) -> list[datetime]:
    """Firings ``f`` with ``start < f <= end`` (``start <= f`` with include_start), ascending.

    At most ``limit`` are returned (None: no limit -- beware every-second schedules); a
    result of exactly ``limit`` items may be truncated.  Used for missed-run catch-up
    (``(last_fire, now]``) and pgpro's ``timetable(start, end)``.
    """
    sched = _as_schedule(schedule)
    start_utc, end_utc = _as_utc(start, "start"), _as_utc(end, "end")
    out: list[datetime] = []
    t = start_utc - _ONE_MICROSECOND if include_start else start_utc
    while limit is None or len(out) < limit:
        nxt = sched.next_after(t, tz)
        if nxt is None or nxt > end_utc:
            break
        out.append(nxt)
        t = nxt
    return out
