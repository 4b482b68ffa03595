"""The chain scheduler: due detection, exactly-once claims, ad-hoc control, dead runs.

Design (see also sql/timetable/0001_timetable.sql):

* **Due index.** ``timetable.chain_state.next_due_at`` holds each chain's next firing,
  computed here with engine/schedules.py (the one evaluator) in the chain's time zone
  (``chain_option.time_zone``, else the server's TimeZone).  A partial index on
  ``(client_name, next_due_at)`` makes "what is due for me now" and "when is the next
  firing" cost O(due), not O(chains defined).  Triggers mark a chain ``dirty`` (and NOTIFY
  ``pgtt_timetable_changed``) when ``run_at``, ``live``, ``client_name`` or its options
  change; the next loop recomputes only dirty rows.
* **Timing.** The loop sleeps (on the injected Clock) until the earliest ``next_due_at``
  (minute or second boundaries, sub-second for @every/@after), or until a NOTIFY wakes it
  (edits, pauses, new chains, ad-hoc START/STOP), with a short real-time poll as a
  fallback in case a notification is lost.
* **Exactly once.** ``timetable.claim_firings`` does a compare-and-set of ``next_due_at``
  (old value and row version as read -> the next value computed here) per chain: however
  many engines see the firing, exactly one UPDATE matches, and only that engine inserts
  the ``chain_run`` rows (unique on ``(chain_id, due_at)``) and runs them.  This holds for
  chains with ``client_name`` NULL too.
* **Missed firings** (due longer than ``missed_grace_seconds`` ago, e.g. after downtime)
  follow ``chain_option.missed_runs``: ``run_once`` (default: one run for all of them),
  ``skip`` or ``run_all``; each case is logged to ``timetable.log``.
* **@every** keeps its grid (due + interval); **@after** gets its next due time when the
  run finishes (``finish_run``); **@reboot** runs once per engine start.
* **Dead engines.** Every open run records the backend that owns it; ``reap_dead_runs``
  (called every few seconds and at start) marks runs whose backend is gone as failed with
  the reason, frees their ``max_instances`` slot and ``active_chain`` row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from engine.clock import Clock
from engine.db import ConnSettings, aconnect, make_async_pool
from engine.errors import PgttError, SchemaError
from engine.schedules import ScheduleError, parse_schedule, resolve_zone
from engine.timetable.dblog import DbWriter
from engine.timetable.executor import ChainExecutor
from engine.timetable.options import TimetableOptions
from engine.timetable.runstats import RunTimings

CHANGED_CHANNEL = "pgtt_timetable_changed"
_US = timedelta(microseconds=1)


class ClientNameInUse(PgttError):
    """Another live engine holds this client name."""

    exit_code = 1


DIRTY_SQL = """
SELECT s.chain_id, s.version, c.run_at, coalesce(c.live, false), o.time_zone, s.last_due_at, s.last_finished_at,
       EXISTS (SELECT 1 FROM timetable.chain_run r WHERE r.chain_id = s.chain_id AND r.status IN ('claimed', 'running'))
FROM timetable.chain_state s
JOIN timetable.chain c ON c.chain_id = s.chain_id
LEFT JOIN timetable.chain_option o ON o.chain_id = s.chain_id
WHERE s.dirty
LIMIT %s
"""
SET_NEXT_SQL = """
UPDATE timetable.chain_state s SET next_due_at = v.next_due, dirty = false
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[]) AS v(chain_id, version, next_due)
WHERE s.chain_id = v.chain_id AND s.version = v.version AND s.dirty
"""
DUE_SQL = """
SELECT s.chain_id, s.next_due_at, s.version, c.run_at, o.time_zone, coalesce(o.missed_runs, 'run_once')
FROM (
    (SELECT * FROM timetable.chain_state WHERE client_name = %(me)s AND next_due_at <= %(now)s
      ORDER BY next_due_at LIMIT %(n)s)
    UNION ALL
    (SELECT * FROM timetable.chain_state WHERE client_name IS NULL AND next_due_at <= %(now)s
      ORDER BY next_due_at LIMIT %(n)s)
) s
JOIN timetable.chain c ON c.chain_id = s.chain_id
LEFT JOIN timetable.chain_option o ON o.chain_id = s.chain_id
WHERE NOT s.dirty AND c.live
"""
NEXT_WAKE_SQL = """
SELECT least(
    (SELECT min(next_due_at) FROM timetable.chain_state WHERE client_name = %(me)s AND next_due_at IS NOT NULL),
    (SELECT min(next_due_at) FROM timetable.chain_state WHERE client_name IS NULL AND next_due_at IS NOT NULL))
"""
REARM_SQL = """
UPDATE timetable.chain_state SET dirty = true, version = version + 1 WHERE chain_id = %s AND next_due_at IS NULL
"""
CLAIM_SQL = "SELECT run_id, chain_id, due_at FROM timetable.claim_firings(%s, %s, %s, %s, %s, %s, %s, %s)"
REBOOT_SQL = """
SELECT chain_id FROM timetable.chain
WHERE live AND timetable.schedule_kind(run_at) = 'reboot' AND (client_name IS NULL OR client_name = %s)
ORDER BY chain_id
"""
ADHOC_SQL = """
SELECT timetable.claim_adhoc(c.chain_id, %s, %s, %s)
FROM timetable.chain c WHERE c.chain_id = %s AND (c.client_name IS NULL OR c.client_name = %s)
"""


@dataclass
class Firing:
    chain_id: int
    due_at: datetime
    trigger: str


@dataclass
class RunHandle:
    run_id: int
    chain_id: int
    trigger: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    begun: bool = False
    due_at: datetime | None = None  # the firing's due time, for the start-lag metric (tasks engineer)


class Scheduler:
    def __init__(self, settings: ConnSettings, options: TimetableOptions, clock: Clock,
                 log: logging.Logger | None = None, session_id: int | None = None):
        self.settings = settings.with_app(f"pgtt-tui timetable {options.client_name}")
        self.options = options
        self.clock = clock
        self.log = log or logging.getLogger("pgtt.timetable")
        self.session_id = session_id if session_id is not None else random.randrange(1, 2**31)
        self.default_tz: str | None = None
        self.wake = asyncio.Event()
        self.running: dict[int, RunHandle] = {}
        self.stats = {"claimed": 0, "succeeded": 0, "failed": 0, "skipped": 0, "missed": 0}
        self.timing = RunTimings()  # durations and start lag for /metrics (tasks engineer)
        self.last_loop_at: datetime | None = None
        self.ready = False
        self.error = ""
        self._cron_sem = asyncio.Semaphore(options.cron_workers)
        self._interval_sem = asyncio.Semaphore(options.interval_workers)
        self._bg: set[asyncio.Task] = set()
        self._starved = False
        self.writer: DbWriter | None = None
        self.pool = None

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        session = await aconnect(self.settings)
        ctl = None
        listener = None
        try:
            ctl = await aconnect(self.settings)
            await self._register(session)
            self.writer = DbWriter(self.settings, self.session_id, self.options.client_name,
                                   self.options.log_database_level, self.log)
            self.writer.start()
            self.pool = make_async_pool(self.settings, min_size=1,
                                        max_size=self.options.cron_workers + self.options.interval_workers + 2,
                                        name=f"timetable-{self.options.client_name}")
            await self.pool.open(wait=True)
            self.executor = ChainExecutor(self.settings, self.pool, self.options, self.clock, self.session_id,
                                          self.writer, self.log)
            listener = asyncio.create_task(self._listen(session), name="timetable-listen")
            await self._reap(ctl)
            self.writer.message("INFO", "Engine started", {"session": self.session_id,
                                                           "default_time_zone": self.default_tz})
            await self._start_reboot_chains(ctl)
            self.ready = True
            await self._loop(ctl, stopping, listener)
        finally:
            self.ready = False
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            await self._shutdown_runs(graceful=stopping.is_set())
            if self.pool is not None:
                await self.pool.close()
            for conn in (ctl, session):
                if conn is not None and not conn.closed and not conn.broken:
                    try:
                        await conn.execute("DELETE FROM timetable.active_session WHERE client_pid = %s "
                                           "AND server_pid = pg_backend_pid()", (self.session_id,))
                    except psycopg.Error:
                        pass
            if self.writer is not None:
                try:
                    await asyncio.wait_for(self.writer.close(), timeout=5)
                except (Exception, asyncio.TimeoutError):  # noqa: BLE001
                    pass
            for conn in (ctl, session):
                if conn is not None:
                    await conn.close()

    async def _register(self, session: psycopg.AsyncConnection) -> None:
        found = (await (await session.execute("SELECT to_regclass('timetable.chain_state') IS NOT NULL")).fetchone())[0]
        if not found:
            raise SchemaError("module timetable is not installed in this database: run `pgtt-tui db init "
                              "--modules timetable`")
        ok = (await (await session.execute("SELECT timetable.try_lock_client_name(%s, %s)",
                                           (self.session_id, self.options.client_name))).fetchone())[0]
        if not ok:
            raise ClientNameInUse(f"another engine named {self.options.client_name!r} is connected to this "
                                  f"database: choose another --clientname or stop that engine")
        tz = (await (await session.execute("SELECT current_setting('TimeZone')")).fetchone())[0]
        try:
            resolve_zone(tz)
            self.default_tz = tz
        except ScheduleError:
            self.log.warning("server TimeZone %r is not an IANA zone; cron chains without a time zone use UTC", tz)
            self.default_tz = None
        await session.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.options.client_name)))
        await session.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANGED_CHANNEL)))

    async def _shutdown_runs(self, graceful: bool) -> None:
        handles = list(self.running.values())
        for h in handles:  # claimed but still queued for a worker slot: release, do not drain
            if not h.begun and h.task is not None:
                h.task.cancel()
        if graceful and handles:
            tasks = [h.task for h in handles if h.task is not None and h.begun]
            if tasks:
                await asyncio.wait(tasks, timeout=30)
        for h in list(self.running.values()):
            if h.task is not None and not h.task.done():
                h.task.cancel()
        await asyncio.gather(*[h.task for h in handles if h.task is not None], return_exceptions=True)
        for t in list(self._bg):
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)

    # --- main loop -----------------------------------------------------------------------

    async def _loop(self, ctl: psycopg.AsyncConnection, stopping: asyncio.Event, listener: asyncio.Task) -> None:
        loop = asyncio.get_running_loop()
        next_reap = loop.time() + self.options.reap_seconds
        while not stopping.is_set():
            self.wake.clear()
            now = self.clock.now()
            self.last_loop_at = now
            await self._recompute_dirty(ctl, now)
            more = await self._claim_due(ctl, now)
            if loop.time() >= next_reap:
                await self._reap(ctl)
                next_reap = loop.time() + self.options.reap_seconds
            if more:
                continue
            wake_at = (await (await ctl.execute(NEXT_WAKE_SQL, {"me": self.options.client_name})).fetchone())[0]
            waits = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stopping.wait()), listener]
            sleeper = None
            if wake_at is not None:
                sleeper = asyncio.ensure_future(self.clock.sleep_until(wake_at))
                waits.append(sleeper)
            done, _ = await asyncio.wait(waits, timeout=self.options.poll_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                if w is not listener and not w.done():
                    w.cancel()
            if listener.done():
                listener.result()  # a lost session connection: raise, the supervisor restarts us
                raise ConnectionError("timetable listener stopped")

    async def _recompute_dirty(self, ctl: psycopg.AsyncConnection, now: datetime) -> None:
        while True:
            rows = await (await ctl.execute(DIRTY_SQL, (self.options.claim_batch,))).fetchall()
            if not rows:
                return
            ids, versions, nexts = [], [], []
            for chain_id, version, run_at, live, tz, last_due, last_finished, has_open in rows:
                ids.append(chain_id)
                versions.append(version)
                nexts.append(self._initial_due(chain_id, run_at, live, tz, last_due, last_finished, has_open, now))
            await ctl.execute(SET_NEXT_SQL, (ids, versions, nexts))
            if len(rows) < self.options.claim_batch:
                return

    def _zone(self, tz: str | None) -> str | None:
        return tz or self.default_tz

    def _initial_due(self, chain_id, run_at, live, tz, last_due, last_finished, has_open, now) -> datetime | None:
        if not live:
            return None
        try:
            sched = parse_schedule(run_at if run_at is not None else "* * * * *")
            if sched.kind == "reboot":
                return None
            if sched.kind == "every":
                if last_due is None:
                    return now  # a new interval chain runs at once, as in pg_timetable
                return max(now, sched.next_after(last_due))
            if sched.kind == "after":
                if has_open:
                    return None  # finish_run sets it
                if last_finished is None:
                    return now
                return max(now, sched.next_after(last_finished))
            return sched.next_after(now, self._zone(tz))
        except ScheduleError as exc:
            self.log.error("chain %s: bad schedule %r: %s", chain_id, run_at, exc)
            if self.writer:
                self.writer.message("ERROR", f"bad schedule: {exc}", {"chain": chain_id})
            return None

    def _capacity(self) -> int:
        """How many firings to claim now: a little more than our free worker slots, so that
        when several engines share the work, each takes what it can run right away."""
        slots = 2 * (self.options.cron_workers + self.options.interval_workers)
        return min(self.options.claim_batch, slots - len(self.running))

    async def _claim_due(self, ctl: psycopg.AsyncConnection, now: datetime) -> bool:
        n = self._capacity()
        if n <= 0:
            self._starved = True  # a finishing run wakes the loop again
            return False
        rows = await (await ctl.execute(DUE_SQL, {"me": self.options.client_name, "now": now, "n": n})).fetchall()
        if not rows:
            return False
        c_ids, c_due, c_trig, c_old, c_new, c_ver = [], [], [], [], [], []
        kinds: dict[int, str] = {}
        grace = timedelta(seconds=self.options.missed_grace_seconds)
        for chain_id, next_due, version, run_at, tz, policy in rows:
            try:
                sched = parse_schedule(run_at if run_at is not None else "* * * * *")
            except ScheduleError:
                continue
            kinds[chain_id] = sched.kind
            zone = self._zone(tz)
            if sched.kind == "after":
                firings = [next_due]
                new_next = None
            elif sched.kind in ("cron", "every"):
                firings = [next_due]
                t = next_due
                while len(firings) < 1000:
                    nxt = sched.next_after(t, zone)
                    if nxt is None or nxt > now:
                        break
                    firings.append(nxt)
                    t = nxt
                new_next = sched.next_after(firings[-1], zone)
                while new_next is not None and new_next <= now:  # more than 1000 missed
                    new_next = sched.next_after(now, zone) if sched.kind == "cron" else new_next + (
                        sched.interval * max(1, int((now - new_next) / sched.interval)))
            else:
                continue
            on_time = [f for f in firings if now - f <= grace]
            missed = [f for f in firings if now - f > grace]
            chosen: list[tuple[datetime, str]] = [(f, sched.kind) for f in on_time]
            if missed:
                self.stats["missed"] += len(missed)
                if policy == "run_all":
                    chosen = [(f, "missed") for f in missed] + chosen
                elif policy == "run_once" and not on_time:
                    chosen = [(missed[-1], "missed")]
                if self.writer:
                    self.writer.message("INFO", f"{len(missed)} missed firing(s) of chain {chain_id}: policy "
                                                f"{policy}, running {len([c for c in chosen if c[1] == 'missed'])}",
                                        {"chain": chain_id, "first_missed": missed[0].isoformat(),
                                         "last_missed": missed[-1].isoformat(), "policy": policy})
            if not chosen:
                chosen = [(None, sched.kind)]  # still advance next_due_at (skip policy)
            for due, trig in chosen:
                c_ids.append(chain_id)
                c_due.append(due)
                c_trig.append(trig)
                c_old.append(next_due)
                c_new.append(new_next)
                c_ver.append(version)
        if not c_ids:
            return False
        claimed = await (await ctl.execute(CLAIM_SQL, (self.options.client_name, self.session_id, c_ids, c_due,
                                                       c_trig, c_old, c_new, c_ver))).fetchall()
        for run_id, chain_id, _due in claimed:
            self.stats["claimed"] += 1
            self._launch(run_id, chain_id, kinds.get(chain_id, "cron")).due_at = _due  # lag metric
        return len(rows) >= n

    # --- runs ----------------------------------------------------------------------------

    def _launch(self, run_id: int, chain_id: int, trigger: str) -> RunHandle:
        handle = RunHandle(run_id, chain_id, trigger)
        self.running[run_id] = handle
        handle.task = asyncio.create_task(self._run_one(handle), name=f"chain-{chain_id}-run-{run_id}")
        return handle

    async def _run_one(self, handle: RunHandle) -> None:
        sem = self._interval_sem if handle.trigger in ("every", "after") else self._cron_sem
        begun = False
        try:
            async with sem:
                if handle.stop.is_set():
                    outcome_status = "failed"
                    async with self.pool.connection() as conn:
                        await conn.execute("SELECT timetable.finish_run(%s, 'failed', %s, %s)",
                                           (handle.run_id, "stopped before it started", self.clock.now()))
                else:
                    begun = handle.begun = True
                    t0 = asyncio.get_running_loop().time()  # timings for /metrics (tasks engineer)
                    if handle.due_at is not None:
                        self.timing.lag.observe((self.clock.now() - handle.due_at).total_seconds())
                    outcome = await self.executor.execute(handle.run_id, handle.chain_id, handle.stop)
                    self.timing.duration.observe(asyncio.get_running_loop().time() - t0)
                    outcome_status = outcome.status
                    if handle.trigger == "after" and outcome_status in ("skipped", "gone"):
                        # no finish_run for this run: let the dirty pass re-arm the @after chain
                        async with self.pool.connection() as conn:
                            await conn.execute(REARM_SQL, (handle.chain_id,))
            if outcome_status in self.stats:
                self.stats[outcome_status] += 1
        except asyncio.CancelledError:
            if not begun:  # claimed but never started: release the claim with a reason
                await asyncio.shield(self._release_claim(handle.run_id))
            raise
        except Exception as exc:  # noqa: BLE001 - one run never takes the engine down
            self.log.error("run %s of chain %s: %s", handle.run_id, handle.chain_id, exc)
            self.stats["failed"] += 1
        finally:
            self.running.pop(handle.run_id, None)
            if handle.trigger == "after" or self._starved:
                self._starved = False
                self.wake.set()

    async def _release_claim(self, run_id: int) -> None:
        try:
            async with self.pool.connection(timeout=5) as conn:
                await conn.execute("SELECT timetable.finish_run(%s, 'failed', %s, %s)",
                                   (run_id, "engine stopped before the run started", self.clock.now()))
        except Exception as exc:  # noqa: BLE001 - the reaper catches it once our session is gone
            self.log.warning("cannot release claimed run %s: %s", run_id, exc)

    async def _start_reboot_chains(self, ctl: psycopg.AsyncConnection) -> None:
        for (chain_id,) in await (await ctl.execute(REBOOT_SQL, (self.options.client_name,))).fetchall():
            await self.start_adhoc(chain_id, "reboot", ctl)

    async def start_adhoc(self, chain_id: int, trigger: str = "manual", conn=None) -> int | None:
        """Run a chain now (START / @reboot); it must be ours or have no client_name."""
        args = (trigger, self.options.client_name, self.session_id, chain_id, self.options.client_name)
        if conn is None:
            async with self.pool.connection() as c:
                row = await (await c.execute(ADHOC_SQL, args)).fetchone()
        else:
            row = await (await conn.execute(ADHOC_SQL, args)).fetchone()
        if row is None or row[0] is None:
            self.log.warning("START for chain %s ignored: no such chain for client %s", chain_id,
                             self.options.client_name)
            if self.writer:
                self.writer.message("ERROR", "START ignored: chain not found or bound to another client",
                                    {"chain": chain_id})
            return None
        self.stats["claimed"] += 1
        self._launch(row[0], chain_id, trigger)
        return row[0]

    def stop_chain(self, chain_id: int) -> int:
        """STOP every running instance of a chain in this engine; returns how many."""
        n = 0
        for h in list(self.running.values()):
            if h.chain_id == chain_id:
                h.stop.set()
                n += 1
        if self.writer:
            self.writer.message("INFO", f"STOP for chain {chain_id}: {n} running instance(s) stopped",
                                {"chain": chain_id})
        return n

    # --- notifications -------------------------------------------------------------------

    async def _listen(self, session: psycopg.AsyncConnection) -> None:
        async for note in session.notifies():
            if note.channel == CHANGED_CHANNEL:
                self.wake.set()
                continue
            self._command(note.payload)

    def _command(self, payload: str) -> None:
        try:
            data = json.loads(payload)
            chain_id = int(data["ConfigID"])
            command = str(data["Command"]).upper()
            delay = float(data.get("Delay") or 0)
        except (ValueError, KeyError, TypeError) as exc:
            self.log.warning("ignoring bad notification %r: %s", payload, exc)
            if self.writer:
                self.writer.message("ERROR", f"bad notification ignored: {payload!r}")
            return
        if chain_id <= 0 or command not in ("START", "STOP"):
            self.log.warning("ignoring notification %r", payload)
            return
        if command == "STOP":
            self.stop_chain(chain_id)
            return
        task = asyncio.create_task(self._delayed_start(chain_id, delay), name=f"start-{chain_id}")
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _delayed_start(self, chain_id: int, delay: float) -> None:
        if delay > 0:
            await self.clock.sleep_until(self.clock.now() + timedelta(seconds=delay))
        try:
            await self.start_adhoc(chain_id, "manual")
        except psycopg.Error as exc:
            self.log.error("START of chain %s failed: %s", chain_id, exc)

    # --- dead runs ---------------------------------------------------------------------

    async def _reap(self, ctl: psycopg.AsyncConnection) -> None:
        rows = await (await ctl.execute("SELECT run_id, chain_id, reason FROM timetable.reap_dead_runs()")).fetchall()
        for run_id, chain_id, reason in rows:
            self.log.warning("run %s of chain %s marked failed: %s", run_id, chain_id, reason)
            if self.writer:
                self.writer.message("ERROR", f"run marked failed: {reason}", {"chain": chain_id, "run": run_id})
        if rows:
            self.wake.set()

    # --- observability -------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"ok": self.ready, "detail": self.error or (f"{len(self.running)} run(s) in progress"
                                                           if self.ready else "starting")}
