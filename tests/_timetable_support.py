"""Helpers for the timetable tests: a clock the test steps by hand, an in-process engine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta, timezone

import psycopg

from engine.clock import FakeClock
from engine.db import ConnSettings
from engine.timetable.options import TimetableOptions
from engine.timetable.scheduler import Scheduler


class SteppingClock(FakeClock):
    """Fake time that moves only when the test moves it; sleepers wake when it passes them."""

    def __init__(self, start: datetime | None = None):
        super().__init__(start or datetime(2030, 1, 1, tzinfo=timezone.utc))
        self._waiters: set[asyncio.Event] = set()

    def _poke(self) -> None:
        for ev in list(self._waiters):
            ev.set()

    def set(self, t: datetime) -> None:
        super().set(t)
        self._poke()

    def advance(self, delta: timedelta | float) -> datetime:
        out = super().advance(delta)
        self._poke()
        return out

    async def sleep_until(self, t: datetime) -> None:
        while self.now() < t:
            ev = asyncio.Event()
            self._waiters.add(ev)
            try:
                await ev.wait()
            finally:
                self._waiters.discard(ev)


@contextlib.asynccontextmanager
async def running_engine(dsn: str, client: str, clock, **opts):
    opts.setdefault("poll_seconds", 0.2)
    opts.setdefault("reap_seconds", 0.5)
    options = TimetableOptions(client_name=client, **opts).validate()
    sched = Scheduler(ConnSettings(dsn=dsn, application_name="pgtt-test engine"), options, clock)
    stopping = asyncio.Event()
    task = asyncio.create_task(sched.run(stopping))
    deadline = time.monotonic() + 15
    while not sched.ready:
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("engine did not start")
        await asyncio.sleep(0.02)
    try:
        yield sched
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=40)


async def until(check, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll an (async or plain) callable until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last value: {last!r})")


def q(dsn: str, query: str, params=None):
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else None


def q1(dsn: str, query: str, params=None):
    rows = q(dsn, query, params)
    return rows[0][0] if rows else None
