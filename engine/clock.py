"""Clocks for the engine: real time in production, settable time in tests.

The engine never calls ``datetime.now()`` or ``asyncio.sleep()`` for scheduling; it asks
its clock, so cron, DST and catch-up behaviour are tested without waiting.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    async def sleep_until(self, t: datetime) -> None:
        """Return once ``now() >= t`` (immediately if that is already so)."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep_until(self, t: datetime) -> None:
        # Re-check after waking: the event loop's monotonic timer and the wall clock can
        # drift apart (NTP steps, suspend), and waking early must not fire a job early.
        while (remaining := (t - self.now()).total_seconds()) > 0:
            await asyncio.sleep(remaining)


class FakeClock:
    """A clock that moves only when told to; ``sleep_until`` jumps to the target time."""

    def __init__(self, start: datetime | None = None):
        start = start or datetime(2030, 1, 1, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start.astimezone(timezone.utc)

    def now(self) -> datetime:
        return self._now

    def set(self, t: datetime) -> None:
        if t.tzinfo is None:
            raise ValueError("FakeClock.set needs a timezone-aware time")
        self._now = t.astimezone(timezone.utc)

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by a timedelta or a number of seconds; returns the new time."""
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self._now

    async def sleep_until(self, t: datetime) -> None:
        if t > self._now:
            self._now = t.astimezone(timezone.utc)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep would be
