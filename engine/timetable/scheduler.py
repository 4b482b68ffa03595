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
* **Exactly once.** ``timetable.claim_due`` does a compare-and-set of ``next_due_at``
  (old value and row version as read -> the next value computed here) per chain: however
  many engines see the firing, exactly one UPDATE matches, and only that engine runs it.
  This holds for chains with ``client_name`` NULL too.  The same call starts the runs it
  won: it inserts each firing's ``chain_run`` row as 'running' (or 'skipped' once the
  chain's ``max_instances`` open runs are reached; the count sees every start committed
  before the claim took the chain's row lock), owned by the control connection's backend,
  so a worker only runs the chain transaction (sql/timetable/0004_claim_starts.sql).  The
  firing key ``(chain_id, due_at)`` is the second line of defence.  Firings are claimed up
  to ``claim_ahead_ms`` early; the worker waits for the due time.
* **Ad-hoc control.** START and STOP from ``notify_chain_start`` / ``notify_chain_stop``
  are rows of ``timetable.pending_start`` with the role that asked (set by a trigger as the
  inserting role, sql/timetable/0006_chain_control.sql); the NOTIFY only wakes this engine.
  Requests from a role that may not control chains (``timetable.may_control``) are deleted
  and logged, the others taken: a START gets its start time (our clock + the delay) when
  first seen and is taken when due (delete + claim in one statement), so it survives a
  restart and runs once; a STOP ends this engine's runs of the chain.  A notification that
  names no request (a bare ``pg_notify``) changes nothing and is logged with its sender.
* **Missed firings** (:func:`plan_firings`): of a chain's firings due now, the latest is
  the current one (run as usual if at most ``missed_grace_seconds`` late); every earlier
  one is missed, whatever the grace (after downtime, or an engine that fell behind).
  ``chain_option.missed_runs``: ``run_once`` (default: one run for all of them -- the
  current firing if it runs, else one catch-up run), ``skip`` (none) or ``run_all`` (each,
  oldest first, at most ``missed_run_all_limit``; starts over ``max_instances`` are
  recorded as skipped).  One ``timetable.log`` row says how many were missed and what was
  done.  A backlog longer than FIRING_CAP is counted, not listed.
* **Skipped firings** (``max_instances`` reached) are aggregated: one ``chain_run`` row
  per chain per minute (``skipped_firings``, ``due_at`` .. ``last_due_at``, written by
  claim_due) and one ``timetable.log`` row per chain per SKIP_LOG_SECONDS (the first at
  once) with the count and the span; the counted rest is logged at shutdown.
* **@every** keeps its grid (due + interval); **@after** gets its next due time when the
  run finishes (``close_runs`` / ``finish_run``); **@reboot** runs once per engine start.
* **Dead engines.** Every open run records the backend that owns it (for scheduled runs:
  the claiming engine's control connection); ``reap_dead_runs`` (called every few seconds
  and at start) ends runs whose backend is gone, with the reason, which frees their
  ``max_instances`` slot: 'succeeded' when the run's execution_log rows carry a committed
  txid (the engine died between COMMIT and recording the end), else 'failed'.
* **Cost per tick** (bench/bench_timetable.py (c)): the due rows are read from
  ``chain_state`` alone (it keeps a copy of the schedule, zone and policy, refreshed with
  the due time), by index, ``FOR UPDATE SKIP LOCKED`` in the claim transaction, so several
  engines take disjoint sets of due chains instead of racing for the same ones; the next
  wake-up is one index probe per client (a partial index for ``client_name IS NULL``); the
  claimed chains' definitions are read by primary key in the same round trip as the claim.
  Dirty rows are looked for only after a change notification (or each fallback poll).
* **Workers.** ``cron_workers`` + ``interval_workers`` long-lived coroutines, each with its
  own connection, take claimed runs from two queues (no pool checkout, no task per run);
  see engine/timetable/executor.py for the run itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq, sql

from engine.clock import Clock
from psycopg import conninfo as pg_conninfo

from engine.db import ConnSettings, aconnect, array_literal, connection_lost_reason, is_connection_loss
from engine.errors import PgttError, SchemaError
from engine.schedules import ScheduleError, parse_schedule, resolve_zone
from engine.timetable.dblog import DbWriter
from engine.timetable.executor import DEFS_SQL, STOPPED, ChainDef, ChainExecutor, parse_defs
from engine.timetable.options import TimetableOptions
from engine.timetable.runstats import RunTimings

CHANGED_CHANNEL = "pgtt_timetable_changed"
BARE_REPEAT_SECONDS = 60.0  # the same notification from the same sender is logged once in this time
_parse = functools.lru_cache(maxsize=4096)(parse_schedule)  # schedules are immutable values


@functools.lru_cache(maxsize=8192)
def _next_firing(sched, t: datetime, zone: str | None) -> datetime | None:
    """``sched.next_after(t, zone)``, remembered: a schedule is a pure function of its text,
    and the chains due at one instant mostly share a few schedules (every minute, every
    hour ...), so a big claim computes each (schedule, due time) once, not once per chain."""
    return sched.next_after(t, zone)
_US = timedelta(microseconds=1)
#: at most this many firings of one chain are looked at per claim (a longer backlog is counted)
FIRING_CAP = 1000
#: skipped firings (max_instances reached) of a chain are logged once per this many seconds
SKIP_LOG_SECONDS = 60.0
_PROBES = (timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1),
           timedelta(days=32), timedelta(days=367), timedelta(days=5 * 366))


def _latest_firing(sched, t: datetime, zone: str | None, known: datetime) -> datetime:
    """The last firing at or before ``t`` (``known`` is one, earlier): probes back from ``t``
    in growing steps, then walks forward, so a long backlog costs a few evaluations."""
    if sched.kind == "every":
        return known + sched.interval * int((t - known) / sched.interval)
    for step in _PROBES:
        start = t - step
        if start <= known:
            break
        f = sched.next_after(start, zone)
        if f is not None and f <= t:
            known = f
            break
    for _ in range(FIRING_CAP):
        n = sched.next_after(known, zone)
        if n is None or n > t:
            break
        known = n
    return known


@dataclass
class FiringPlan:
    """What one claim does with the due firings of one chain (see :func:`plan_firings`)."""

    chosen: list[tuple[datetime | None, str]]  # (due, trigger); (None, kind): only advance
    new_next: datetime | None
    missed: int = 0               # how many missed firings (at least, when not missed_exact)
    missed_exact: bool = True
    first_missed: datetime | None = None
    last_missed: datetime | None = None
    current: datetime | None = None  # the on-time firing (the latest due, within the grace)
    beyond_bound: int = 0          # run_all: missed firings over missed_run_all_limit, not run


def plan_firings(sched, next_due: datetime, now: datetime, horizon: datetime, zone: str | None,
                 grace: timedelta, policy: str, run_all_limit: int) -> FiringPlan:
    """The firings of one due chain to claim now, by its missed-run policy.

    Of the firings due from ``next_due`` up to ``now``, the latest is the *current* firing:
    it runs as usual when it is at most ``grace`` late.  Every earlier one, and the latest
    when it is later than the grace, is *missed*, whatever the grace.  Missed firings:
    ``skip`` runs none; ``run_once`` runs one catch-up (the latest missed firing, trigger
    'missed') unless the current firing runs (it is the one run then); ``run_all`` runs each,
    oldest first, at most ``run_all_limit`` (the rest are counted, not run).  Firings after
    ``now`` (claimed ahead, up to ``horizon``) are never missed.  claim_due records the
    starts over max_instances as skipped."""
    hidden, exact = 0, True  # past firings after the listed ones (a backlog over FIRING_CAP)
    if sched.kind == "after":
        firings, new_next = [next_due], None
    else:
        firings = [next_due]
        t, nxt = next_due, None
        while len(firings) < FIRING_CAP:
            nxt = _next_firing(sched, t, zone)
            if nxt is None or nxt > horizon:
                break
            firings.append(nxt)
            t = nxt
        if len(firings) >= FIRING_CAP:
            nxt = sched.next_after(firings[-1], zone)
        new_next = nxt  # the firing after the last one listed (<= horizon: claimed next pass)
    past = [f for f in firings if f <= now]
    ahead = [f for f in firings if f > now]
    latest = past[-1] if past else None
    if sched.kind != "after" and new_next is not None and new_next <= now:
        latest = _latest_firing(sched, now, zone, past[-1])  # the backlog is longer than FIRING_CAP
        exact = sched.kind == "every"
        hidden = int((latest - past[-1]) / sched.interval) if exact else 1
        ahead, new_next = [], sched.next_after(latest, zone)
    plan = FiringPlan(chosen=[], new_next=new_next)
    if latest is not None and now - latest <= grace:
        plan.current = latest
    missed = past[:-1] if plan.current is not None and not hidden else past  # listed, oldest first
    plan.missed = len(past) + hidden - (1 if plan.current is not None else 0)
    plan.missed_exact = exact
    if plan.missed:
        plan.first_missed = missed[0]
        if plan.current is None:
            plan.last_missed = latest
        elif not hidden:
            plan.last_missed = missed[-1]
        else:
            plan.last_missed = _latest_firing(sched, latest - _US, zone, past[-1])
        if policy == "run_all":
            listed = missed[:max(1, int(run_all_limit))]
            plan.beyond_bound = plan.missed - len(listed)
            plan.chosen = [(f, "missed") for f in listed]
        elif policy == "run_once" and plan.current is None:
            plan.chosen = [(latest, "missed")]
    if plan.current is not None:
        plan.chosen.append((plan.current, sched.kind))
    plan.chosen += [(f, sched.kind) for f in ahead]
    if not plan.chosen:
        plan.chosen = [(None, sched.kind)]  # still advance next_due_at (skip policy)
    return plan


class ClientNameInUse(PgttError):
    """Another live engine holds this client name."""

    exit_code = 1


DIRTY_SQL = """
SELECT s.chain_id, s.version, c.run_at, coalesce(c.live, false), o.time_zone, s.last_due_at, s.last_finished_at,
       EXISTS (SELECT 1 FROM timetable.chain_run r WHERE r.chain_id = s.chain_id AND r.status IN ('claimed', 'running')),
       coalesce(o.missed_runs, 'run_once')
FROM timetable.chain_state s
JOIN timetable.chain c ON c.chain_id = s.chain_id
LEFT JOIN timetable.chain_option o ON o.chain_id = s.chain_id
WHERE s.dirty
LIMIT %s
"""
SET_NEXT_SQL = """
UPDATE timetable.chain_state s
   SET next_due_at = v.next_due, dirty = false, run_at = v.run_at, time_zone = v.time_zone, missed_runs = v.policy
FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])
     AS v(chain_id, version, next_due, run_at, time_zone, policy)
WHERE s.chain_id = v.chain_id AND s.version = v.version AND s.dirty
"""
#: the due chains of this engine and of anyone (client_name NULL), oldest first; only
#: chain_state (index scans on chain_state_due_idx / chain_state_due_anyone_idx); rows
#: another engine is claiming right now are skipped, not waited for
DUE_SQL = """
WITH mine AS (
    SELECT chain_id, next_due_at, version, run_at, time_zone, missed_runs FROM timetable.chain_state
     WHERE client_name = %(me)s AND next_due_at <= %(now)s AND NOT dirty
     ORDER BY next_due_at LIMIT %(n)s FOR UPDATE SKIP LOCKED
), anyone AS (
    SELECT chain_id, next_due_at, version, run_at, time_zone, missed_runs FROM timetable.chain_state
     WHERE client_name IS NULL AND next_due_at <= %(now)s AND NOT dirty
     ORDER BY next_due_at LIMIT %(n)s FOR UPDATE SKIP LOCKED
)
SELECT chain_id, next_due_at, version, run_at, time_zone, coalesce(missed_runs, 'run_once')
FROM (SELECT * FROM mine UNION ALL SELECT * FROM anyone) d
LIMIT %(n)s
"""
NEXT_WAKE_SQL = """
SELECT least(
    (SELECT next_due_at FROM timetable.chain_state WHERE client_name = %(me)s AND next_due_at IS NOT NULL
      ORDER BY next_due_at LIMIT 1),
    (SELECT next_due_at FROM timetable.chain_state WHERE client_name IS NULL AND next_due_at IS NOT NULL
      ORDER BY next_due_at LIMIT 1))
"""
REARM_SQL = """
UPDATE timetable.chain_state SET dirty = true, version = version + 1 WHERE chain_id = %s AND next_due_at IS NULL
"""
#: the arrays go as array literals in text (engine.db.array_literal): adapting them element by
#: element cost more Python per claim than the rest of the claim
CLAIM_SQL = ("SELECT run_id, chain_id, due_at, status FROM timetable.claim_due(%s, %s, %s, %s, %s::bigint[], "
             "%s::timestamptz[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::bigint[])")
REBOOT_SQL = """
SELECT chain_id FROM timetable.chain
WHERE live AND timetable.schedule_kind(run_at) = 'reboot' AND (client_name IS NULL OR client_name = %s)
ORDER BY chain_id
"""
ADHOC_SQL = """
SELECT timetable.claim_adhoc(c.chain_id, %s, %s, %s)
FROM timetable.chain c WHERE c.chain_id = %s AND (c.client_name IS NULL OR c.client_name = %s)
"""
RELEASE_SQL = """
SELECT timetable.finish_run(r, 'failed', %s, %s) FROM unnest(%s::bigint[]) AS r
"""
#: ad-hoc control (sql/timetable/0006_chain_control.sql): requests from roles that may not
#: control chains are deleted and reported; START requests for this engine get their start
#: time on our clock when first seen; the due ones are taken (deleted) and claimed in one
#: statement, so each runs once; STOP requests are taken; then the next start time.  Each
#: statement has its own snapshot, so the take statements check may_control again: a request
#: committed after the refusal ran is left for the next pass (which refuses and logs it)
PENDING_REFUSE_SQL = """
DELETE FROM timetable.pending_start p
 WHERE p.worker_name = %(me)s AND NOT timetable.may_control(p.requested_by, p.command)
RETURNING p.id, p.command, p.chain_id, p.requested_by, p.requested_pid
"""
PENDING_ARM_SQL = """
UPDATE timetable.pending_start p SET start_at = %(now)s + p.start_delay
 WHERE p.worker_name = %(me)s AND p.command = 'START' AND p.start_at IS NULL
   AND timetable.may_control(p.requested_by, p.command)
"""
PENDING_TAKE_SQL = """
WITH taken AS (
    DELETE FROM timetable.pending_start p
     WHERE p.worker_name = %(me)s AND p.command = 'START' AND p.start_at <= %(now)s
       AND timetable.may_control(p.requested_by, p.command)
    RETURNING p.id, p.chain_id, p.start_at)
SELECT t.id, t.chain_id, t.start_at,
       (SELECT timetable.claim_adhoc(c.chain_id, 'manual', %(me)s, %(session)s) FROM timetable.chain c
         WHERE c.chain_id = t.chain_id AND (c.client_name IS NULL OR c.client_name = %(me)s))
FROM taken t ORDER BY t.id
"""
PENDING_STOPS_SQL = """
DELETE FROM timetable.pending_start p WHERE p.worker_name = %(me)s AND p.command = 'STOP'
   AND timetable.may_control(p.requested_by, p.command)
RETURNING p.id, p.chain_id, p.requested_by
"""
#: STOP requests made while this engine was not running: nothing of ours ran then
STALE_STOPS_SQL = "DELETE FROM timetable.pending_start WHERE worker_name = %s AND command = 'STOP'"
SENDER_SQL = "SELECT usename FROM pg_catalog.pg_stat_activity WHERE pid = %s"
REAP_SQL = "SELECT run_id, chain_id, reason, status FROM timetable.reap_dead_runs()"
PENDING_NEXT_SQL = "SELECT min(start_at) FROM timetable.pending_start WHERE worker_name = %(me)s AND command = 'START'"


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
    begun: bool = False
    due_at: datetime | None = None  # the firing's due time, for the start-lag metric (tasks engineer)
    definition: ChainDef | None = None  # read with the claim (None: the executor reads it)
    run_state: Any = None  # the executor's state while it runs (STOP cancels through it)
    backend_start: datetime | None = None  # of the worker connection that runs it
    #: True: its chain_run row is 'running' since the claim (claim_due); False: 'claimed', the
    #: executor starts it (ad-hoc runs: timetable.start_run)
    started: bool = False


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
        self.running: dict[int, RunHandle] = {}  # claimed by this engine: queued or running
        self.stats = {"claimed": 0, "succeeded": 0, "failed": 0, "skipped": 0, "missed": 0}
        self.timing = RunTimings()  # durations and start lag for /metrics (tasks engineer)
        self.last_loop_at: datetime | None = None
        self.ready = False
        self.error = ""
        self._queues = {"cron": asyncio.Queue(), "interval": asyncio.Queue()}
        self._workers: list[asyncio.Task] = []
        self._bg: set[asyncio.Task] = set()
        self._bare_seen: dict[tuple[int, str], float] = {}  # notifications naming no request, when logged
        self._starved = False
        self._dirty = True  # look for dirty chain_state rows on the next pass
        self._pending = True  # look at timetable.pending_start on the next pass
        self._pending_at: datetime | None = None  # earliest start time of a pending START
        self._ahead = timedelta(milliseconds=max(0, int(options.claim_ahead_ms)))
        self._fatal: BaseException | None = None
        self._aux: psycopg.AsyncConnection | None = None
        self._ctl_started: datetime | None = None  # backend_start of the control connection
        self._aux_lock = asyncio.Lock()
        self._worker_conninfo: dict[str, str] = {}
        self.executor: ChainExecutor | None = None
        self.writer: DbWriter | None = None
        #: per chain: firings skipped at max_instances since the window began, not yet logged
        self._skips: dict[int, dict[str, Any]] = {}
        self._reaped_at_start: list = []
        #: when the engine cancels us (another service lost the database): why, or None
        self.abort_reason_of: Callable[[], str | None] = lambda: None

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        session = await aconnect(self.settings)
        ctl = None
        listener = None
        try:
            ctl = await aconnect(self.settings)
            # the claims' runs are owned by this backend (reap_dead_runs checks it is alive)
            self._ctl_started = (await (await ctl.execute(
                "SELECT backend_start FROM pg_catalog.pg_stat_activity WHERE pid = pg_backend_pid()")).fetchone())[0]
            self._aux = await aconnect(self.settings)
            await self._register(session)
            if ctl.info.server_version >= 140000:
                # a backend notices within a second that a killed engine is gone, so its run
                # ends and the reaper can free the slot (a startup option: RESET ALL keeps it)
                opts = pg_conninfo.conninfo_to_dict(self.settings.conninfo()).get("options") or ""
                self._worker_conninfo = {"options": f"{opts} -c client_connection_check_interval=1000".strip()}
            else:
                self._worker_conninfo = {}
            self.writer = DbWriter(self.settings, self.session_id, self.options.client_name,
                                   self.options.log_database_level, self.log)
            self.writer.start()
            self.executor = ChainExecutor(self.settings, self.options, self.clock, self.session_id,
                                          self.writer, self.log)
            for kind, count in (("cron", self.options.cron_workers), ("interval", self.options.interval_workers)):
                for i in range(count):
                    self._workers.append(asyncio.create_task(self._worker(kind, prewarm=kind == "cron"),
                                                             name=f"timetable-{kind}-worker-{i}"))
            listener = asyncio.create_task(self._listen(session), name="timetable-listen")
            self._log_reaped(self._reaped_at_start)
            await self._reap(ctl)
            self.writer.message("INFO", "Engine started", {"session": self.session_id,
                                                           "default_time_zone": self.default_tz})
            await self._start_reboot_chains()
            self.ready = True
            await self._loop(ctl, stopping, listener)
        except BaseException as exc:
            if self.executor is not None and not stopping.is_set():
                # runs still in progress end with the reason the engine stops them
                self.executor.abort_reason = (connection_lost_reason(exc) if is_connection_loss(exc)
                                              else self.abort_reason_of())
            raise
        finally:
            self.ready = False
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
            await self._shutdown_runs(graceful=stopping.is_set())
            for conn in (ctl, session):
                if conn is not None and not conn.closed and not conn.broken:
                    try:
                        await conn.execute("DELETE FROM timetable.active_session WHERE client_pid = %s "
                                           "AND server_pid = pg_backend_pid()", (self.session_id,))
                    except psycopg.Error:
                        pass
            if self.writer is not None:
                self._flush_skips(None)  # the skipped firings counted so far are not lost
                try:
                    await asyncio.wait_for(self.writer.close(), timeout=5)
                except (Exception, asyncio.TimeoutError):  # noqa: BLE001
                    pass
            for conn in (ctl, session, self._aux):
                if conn is not None:
                    await conn.close()

    async def _register(self, session: psycopg.AsyncConnection) -> None:
        found = (await (await session.execute("SELECT to_regclass('timetable.chain_state') IS NOT NULL")).fetchone())[0]
        if not found:
            raise SchemaError("module timetable is not installed in this database: run `pgtt-tui db init "
                              "--modules timetable`")
        fast = (await (await session.execute(
            "SELECT to_regprocedure('timetable.close_runs(bigint[],text[],text[],timestamptz[],timestamptz[],"
            "bigint[],timestamptz[])') IS NOT NULL AND to_regprocedure('timetable.may_control(name,text)') IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'timetable.chain_run'::regclass "
            "AND attname = 'skipped_firings' AND NOT attisdropped)"
        )).fetchone())[0]
        if not fast:
            raise SchemaError("module timetable is outdated in this database: run `pgtt-tui db upgrade`")
        # reap before try_lock_client_name does (it drops what it reaps): logged once the
        # writer runs, as the loop's reaps are
        self._reaped_at_start = await (await session.execute(REAP_SQL)).fetchall()
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
        await session.execute(STALE_STOPS_SQL, (self.options.client_name,))
        await session.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.options.client_name)))
        await session.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANGED_CHANNEL)))

    async def _shutdown_runs(self, graceful: bool) -> None:
        # claimed but still queued for a worker: release with a reason, do not run
        queued: list[RunHandle] = []
        for q in self._queues.values():
            while not q.empty():
                h = q.get_nowait()
                if h is not None:
                    queued.append(h)
        if queued:
            await self._release(queued, "engine stopped before the run started")
            for h in queued:
                self.running.pop(h.run_id, None)
        for kind, q in self._queues.items():
            for _ in range(sum(1 for w in self._workers if w.get_name().startswith(f"timetable-{kind}-"))):
                q.put_nowait(None)  # each worker ends after its current run
        if self._workers:
            if graceful:
                await asyncio.wait(self._workers, timeout=30)
            for w in self._workers:
                if not w.done():
                    w.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
        for t in list(self._bg):
            t.cancel()
        await asyncio.gather(*self._bg, return_exceptions=True)

    async def _release(self, handles: list[RunHandle], reason: str) -> None:
        """Claimed runs that will not start: recorded as failed with the reason."""
        try:
            async with self._aux_lock:
                if self._aux is None or self._aux.closed or self._aux.broken:
                    self._aux = await aconnect(self.settings)
                await self._aux.execute(RELEASE_SQL, (reason, self.clock.now(), [h.run_id for h in handles]))
        except Exception as exc:  # noqa: BLE001 - the reaper catches them once our session is gone
            self.log.warning("cannot release claimed runs %s: %s", [h.run_id for h in handles], exc)

    # --- main loop -----------------------------------------------------------------------

    async def _loop(self, ctl: psycopg.AsyncConnection, stopping: asyncio.Event, listener: asyncio.Task) -> None:
        loop = asyncio.get_running_loop()
        next_reap = loop.time() + self.options.reap_seconds
        while not stopping.is_set():
            if self._fatal is not None:
                raise self._fatal
            self.wake.clear()
            now = self.clock.now()
            self.last_loop_at = now
            if self._dirty:
                self._dirty = False
                await self._recompute_dirty(ctl, now)
            if self._pending or (self._pending_at is not None and self._pending_at <= now):
                self._pending = False
                await self._take_pending(now)
            more, wake_at = await self._claim_due(ctl, now)
            if self._skips:
                self._flush_skips(now)
            if loop.time() >= next_reap:
                await self._reap(ctl)
                next_reap = loop.time() + self.options.reap_seconds
            if more:
                continue
            if self._starved:
                wake_at = None  # nothing can be claimed until a run ends (it sets self.wake)
            elif wake_at is None:
                wake_at = (await (await ctl.execute(NEXT_WAKE_SQL, {"me": self.options.client_name})).fetchone())[0]
            if wake_at is not None:
                wake_at -= self._ahead  # claimed a little early; the worker waits for the due time
            if self._pending_at is not None and (wake_at is None or self._pending_at < wake_at):
                wake_at = self._pending_at
            if self._dirty or self._pending or self.wake.is_set():
                continue
            waits = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stopping.wait()), listener]
            sleeper = None
            if wake_at is not None:
                sleeper = asyncio.ensure_future(self.clock.sleep_until(wake_at))
                waits.append(sleeper)
            done, _ = await asyncio.wait(waits, timeout=self.options.poll_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                self._dirty = True  # the fallback poll: a notification may have been lost
                self._pending = True
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
            ids, versions, nexts, run_ats, zones, policies = [], [], [], [], [], []
            for chain_id, version, run_at, live, tz, last_due, last_finished, has_open, policy in rows:
                ids.append(chain_id)
                versions.append(version)
                nexts.append(self._initial_due(chain_id, run_at, live, tz, last_due, last_finished, has_open, now))
                run_ats.append(run_at)
                zones.append(tz)
                policies.append(policy)
            await ctl.execute(SET_NEXT_SQL, (ids, versions, nexts, run_ats, zones, policies))
            if len(rows) < self.options.claim_batch:
                return

    def _zone(self, tz: str | None) -> str | None:
        return tz or self.default_tz

    def _initial_due(self, chain_id, run_at, live, tz, last_due, last_finished, has_open, now) -> datetime | None:
        if not live:
            return None
        try:
            sched = _parse(run_at if run_at is not None else "* * * * *")
            if sched.kind == "reboot":
                return None
            if sched.kind == "every":
                if last_due is None:
                    return now  # a new interval chain runs at once, as in pg_timetable
                return max(now, sched.next_after(last_due))
            if sched.kind == "after":
                if has_open:
                    return None  # the end of the open run sets it (close_runs / finish_run)
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
        return min(self.options.claim_batch, self._slots() - len(self.running))

    def _slots(self) -> int:
        return 2 * (self.options.cron_workers + self.options.interval_workers)

    async def _claim_due(self, ctl: psycopg.AsyncConnection, now: datetime) -> tuple[bool, datetime | None]:
        """Claim what is due (up to our free capacity).  Returns (more may be due now, the
        next wake-up time if it was read on the way)."""
        n = self._capacity()
        if n <= 0:
            self._starved = True  # a finishing run wakes the loop again
            return False, None
        me = self.options.client_name
        horizon = now + self._ahead
        async with ctl.pipeline():
            await ctl.execute("BEGIN")
            due_cur = await ctl.execute(DUE_SQL, {"me": me, "now": horizon, "n": n})
        try:
            rows = await due_cur.fetchall()
            if not rows:
                async with ctl.pipeline():
                    await ctl.execute("ROLLBACK")
                    wake_cur = await ctl.execute(NEXT_WAKE_SQL, {"me": me})
                return False, (await wake_cur.fetchone())[0]
            return await self._claim_rows(ctl, now, rows, n, horizon)
        except BaseException:
            if not ctl.closed and not ctl.broken and ctl.info.transaction_status != pq.TransactionStatus.IDLE:
                try:
                    await ctl.execute("ROLLBACK")
                except psycopg.Error:
                    pass
            raise

    async def _claim_rows(self, ctl: psycopg.AsyncConnection, now: datetime, rows, n: int, horizon: datetime
                          ) -> tuple[bool, datetime | None]:
        c_ids, c_due, c_trig, c_old, c_new, c_ver = [], [], [], [], [], []
        kinds: dict[int, str] = {}
        grace = timedelta(seconds=self.options.missed_grace_seconds)
        plans: dict[int, tuple[FiringPlan, str]] = {}
        for chain_id, next_due, version, run_at, tz, policy in rows:
            try:
                sched = _parse(run_at if run_at is not None else "* * * * *")
            except ScheduleError:
                continue
            if sched.kind not in ("after", "cron", "every"):
                continue
            kinds[chain_id] = sched.kind
            plan = plan_firings(sched, next_due, now, horizon, self._zone(tz), grace, policy,
                                self.options.missed_run_all_limit)
            if plan.missed:
                self.stats["missed"] += plan.missed
                plans[chain_id] = (plan, policy)
            for due, trig in plan.chosen:
                c_ids.append(chain_id)
                c_due.append(due)
                c_trig.append(trig)
                c_old.append(next_due)
                c_new.append(plan.new_next)
                c_ver.append(version)
        if not c_ids:
            await ctl.execute("ROLLBACK")
            return len(rows) >= n, None
        async with ctl.pipeline():
            claim_cur = await ctl.execute(CLAIM_SQL, (
                self.options.client_name, self.session_id, self._ctl_started, self.options.default_max_instances,
                *(array_literal(a) for a in (c_ids, c_due, c_trig, c_old, c_new, c_ver))))
            await ctl.execute("COMMIT")
            defs_cur = await ctl.execute(DEFS_SQL, (sorted(set(c_ids)),))
        claimed = await claim_cur.fetchall()
        defs = parse_defs(await defs_cur.fetchall())
        outcome: dict[tuple[int, datetime], tuple[int, str]] = {}
        for run_id, chain_id, due, status in sorted(claimed, key=lambda x: (x[2], x[0])):
            outcome[(chain_id, due)] = (run_id, status)
            self.stats["claimed"] += 1
            if status != "running":  # max_instances reached: recorded (aggregated) as skipped by the claim
                self._skipped(chain_id, run_id, due, now)
                continue
            self._launch(RunHandle(run_id, chain_id, kinds.get(chain_id, "cron"), due_at=due,
                                   definition=defs.get(chain_id), started=True))
        for chain_id, (plan, policy) in plans.items():
            self._log_missed(chain_id, plan, policy, outcome)
        return len(rows) >= n, None

    def _log_missed(self, chain_id: int, plan: FiringPlan, policy: str,
                    outcome: dict[tuple[int, datetime], tuple[int, str]]) -> None:
        """One timetable.log row: how many firings were missed and what was done about them."""
        def fate(due: datetime) -> str:
            run_id, status = outcome.get((chain_id, due), (None, "not claimed (another engine took the chain)"))
            return f"run {run_id}" if status == "running" else (
                f"skipped: max_instances reached (run {run_id})" if status == "skipped" else status)

        count = f"{plan.missed}" if plan.missed_exact else f"more than {plan.missed - 1}"
        catchup = [d for d, t in plan.chosen if t == "missed"]
        if policy == "skip" or (policy == "run_once" and not catchup and plan.current is None):
            done = "none run"
        elif policy == "run_once" and plan.current is not None:
            done = f"no separate catch-up: the on-time firing due {plan.current.isoformat()} runs for them " \
                   f"({fate(plan.current)})"
        elif policy == "run_once":
            done = f"1 catch-up run for them, due {catchup[0].isoformat()} ({fate(catchup[0])})"
        else:
            fates = [outcome.get((chain_id, d), (None, "lost"))[1] for d in catchup]
            started, skipped = fates.count("running"), fates.count("skipped")
            done = f"{started} run(s) started"
            if skipped:
                done += f", {skipped} skipped (max_instances reached)"
            if len(catchup) - started - skipped:
                done += f", {len(catchup) - started - skipped} not claimed (another engine took the chain)"
            if plan.beyond_bound:
                done += f", {plan.beyond_bound} not run (over the bound of missed_run_all_limit = " \
                        f"{self.options.missed_run_all_limit})"
        self.log.info("chain %s: %s missed firing(s), policy %s: %s", chain_id, count, policy, done)
        if self.writer:
            span = {"first_missed": plan.first_missed.isoformat() if plan.first_missed else None,
                    "last_missed": plan.last_missed.isoformat() if plan.last_missed else None}
            self.writer.message("INFO", f"{count} missed firing(s) of chain {chain_id}: policy {policy}: {done}",
                                {"chain": chain_id, "missed": plan.missed, "exact": plan.missed_exact,
                                 "policy": policy, **span,
                                 "runs": [outcome[(chain_id, d)][0] for d in catchup if (chain_id, d) in outcome]})

    def _skipped(self, chain_id: int, run_id: int, due: datetime, now: datetime) -> None:
        """A firing skipped at max_instances (its chain_run aggregate row is written by the
        claim): counted, and logged once per chain per SKIP_LOG_SECONDS with the count and span."""
        self.stats["skipped"] += 1
        agg = self._skips.get(chain_id)
        if agg is None:  # the first of a window: logged at once, the rest at its end
            self._skips[chain_id] = {"since": now, "n": 0, "first": None, "last": None, "runs": []}
            self._log_skips(chain_id, 1, due, due, [run_id])
            return
        agg["n"] += 1
        agg["first"] = agg["first"] or due
        agg["last"] = due
        if run_id not in agg["runs"]:
            agg["runs"].append(run_id)

    def _flush_skips(self, now: datetime | None) -> None:
        """Log the skipped firings counted in windows that are over (all of them: ``now`` None)."""
        for chain_id, agg in list(self._skips.items()):
            if now is not None and (now - agg["since"]).total_seconds() < SKIP_LOG_SECONDS:
                continue
            if agg["n"]:
                self._log_skips(chain_id, agg["n"], agg["first"], agg["last"], agg["runs"])
            if agg["n"] and now is not None:  # still skipping: a new window
                self._skips[chain_id] = {"since": now, "n": 0, "first": None, "last": None, "runs": []}
            else:
                del self._skips[chain_id]

    def _log_skips(self, chain_id: int, n: int, first: datetime, last: datetime, runs: list[int]) -> None:
        if self.writer:
            span = f"due {first.isoformat()}" if n == 1 else f"due {first.isoformat()} to {last.isoformat()}"
            self.writer.message("INFO", f"Cannot proceed: max_instances reached; {n} firing(s) of chain {chain_id} "
                                        f"skipped, {span}",
                                {"chain": chain_id, "skipped": n, "first_due": first.isoformat(),
                                 "last_due": last.isoformat(), "runs": runs})

    # --- runs ----------------------------------------------------------------------------

    def _launch(self, handle: RunHandle) -> RunHandle:
        self.running[handle.run_id] = handle
        kind = "interval" if handle.trigger in ("every", "after") else "cron"
        self._queues[kind].put_nowait(handle)
        return handle

    async def _worker_conn(self) -> tuple[psycopg.AsyncConnection, datetime | None]:
        conn = await aconnect(self.settings, **self._worker_conninfo)
        row = await (await conn.execute("SELECT backend_start FROM pg_catalog.pg_stat_activity "
                                        "WHERE pid = pg_backend_pid()")).fetchone()
        return conn, (row[0] if row else None)

    async def _worker(self, kind: str, prewarm: bool) -> None:
        """One worker slot: takes claimed runs from its queue and runs them on its own connection."""
        queue = self._queues[kind]
        conn: psycopg.AsyncConnection | None = None
        started: datetime | None = None
        try:
            if prewarm:
                try:
                    conn, started = await self._worker_conn()
                except Exception as exc:  # noqa: BLE001 - tried again when a run comes
                    self.log.warning("timetable worker cannot connect yet: %s", exc)
            while True:
                handle = await queue.get()
                if handle is None:
                    return
                if conn is None or conn.closed or conn.broken or \
                        conn.info.transaction_status != pq.TransactionStatus.IDLE:
                    if conn is not None:
                        await conn.close()
                    conn = None
                    try:
                        conn, started = await self._worker_conn()
                    except Exception as exc:  # noqa: BLE001 - the engine restarts; the claim is released
                        self.running.pop(handle.run_id, None)
                        await self._release([handle], f"engine cannot connect: {exc}")
                        self._fatal = exc
                        self.wake.set()
                        return
                handle.backend_start = started
                await self._run_one(handle, conn)
        finally:
            if conn is not None:
                await conn.close()

    async def _run_one(self, handle: RunHandle, conn: psycopg.AsyncConnection) -> None:
        outcome_status = "failed"
        try:
            if handle.stop.is_set():
                await conn.execute("SELECT timetable.finish_run(%s, 'failed', %s, %s)",
                                   (handle.run_id, "stopped before it started", self.clock.now()))
            else:
                if handle.due_at is not None and handle.due_at > self.clock.now():
                    await self.clock.sleep_until(handle.due_at)  # claimed up to claim_ahead_ms early
                handle.begun = True
                t0 = asyncio.get_running_loop().time()  # timings for /metrics (tasks engineer)
                if handle.due_at is not None:
                    self.timing.lag.observe((self.clock.now() - handle.due_at).total_seconds())
                outcome = await self.executor.execute(handle, conn, handle.backend_start)
                self.timing.duration.observe(asyncio.get_running_loop().time() - t0)
                outcome_status = outcome.status
                if handle.trigger == "after" and outcome_status in ("skipped", "gone"):
                    # no finish_run for this run: let the dirty pass re-arm the @after chain
                    await conn.execute(REARM_SQL, (handle.chain_id,))
                    self._dirty = True
            if outcome_status in self.stats:
                self.stats[outcome_status] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one run never takes the engine down
            self.log.error("run %s of chain %s: %s", handle.run_id, handle.chain_id, exc)
            self.stats["failed"] += 1
        finally:
            self.running.pop(handle.run_id, None)
            if handle.trigger == "after" or (self._starved and self._capacity() >= self._slots() // 2):
                self._starved = False  # claim again once half the prefetch is free (bigger batches)
                self.wake.set()

    async def _start_reboot_chains(self) -> None:
        async with self._aux_lock:
            ids = [r[0] for r in await (await self._aux.execute(REBOOT_SQL, (self.options.client_name,))).fetchall()]
        for chain_id in ids:
            await self.start_adhoc(chain_id, "reboot")

    async def start_adhoc(self, chain_id: int, trigger: str = "manual", conn=None) -> int | None:
        """Run a chain now (START / @reboot); it must be ours or have no client_name."""
        args = (trigger, self.options.client_name, self.session_id, chain_id, self.options.client_name)
        async with self._aux_lock:
            if self._aux is None or self._aux.closed or self._aux.broken:
                self._aux = await aconnect(self.settings)
            row = await (await self._aux.execute(ADHOC_SQL, args)).fetchone()
        if row is None or row[0] is None:
            self.log.warning("START for chain %s ignored: no such chain for client %s", chain_id,
                             self.options.client_name)
            if self.writer:
                self.writer.message("ERROR", "START ignored: chain not found or bound to another client",
                                    {"chain": chain_id})
            return None
        self.stats["claimed"] += 1
        self._launch(RunHandle(row[0], chain_id, trigger))
        return row[0]

    def _stop_runs(self, keep, reason: str) -> int:
        """STOP the runs of this engine for which ``keep(handle)`` is false: a queued run ends
        "stopped before it started", a running one has its statement cancelled."""
        n = 0
        for h in list(self.running.values()):
            if keep(h):
                continue
            h.stop.set()
            if self.executor is not None:
                self.executor.interrupt(h.run_state, reason)
            n += 1
        return n

    def stop_all(self, reason: str, except_run: int | None = None) -> int:
        """STOP every run in progress in this engine but ``except_run`` (the Shutdown builtin)."""
        return self._stop_runs(lambda h: h.run_id == except_run, reason)

    def stop_chain(self, chain_id: int, requested_by: str | None = None) -> int:
        """STOP every running instance of a chain in this engine; returns how many."""
        n = self._stop_runs(lambda h: h.chain_id != chain_id, STOPPED)
        if self.writer:
            by = f" (asked by role {requested_by})" if requested_by else ""
            self.writer.message("INFO", f"STOP for chain {chain_id}{by}: {n} running instance(s) stopped",
                                {"chain": chain_id, "role": requested_by})
        return n

    # --- notifications -------------------------------------------------------------------

    async def _listen(self, session: psycopg.AsyncConnection) -> None:
        async for note in session.notifies():
            if note.channel == CHANGED_CHANNEL:
                self._dirty = True
                self.wake.set()
                continue
            self._notified(note.payload, note.pid)

    def _notified(self, payload: str, pid: int) -> None:
        """A notification on our channel only wakes us: what we do comes from the requests
        recorded in timetable.pending_start (with the role that asked), never from the
        payload.  One that names no request (pg_timetable's payload sent with a bare
        pg_notify, by anyone who can connect) changes nothing and is logged."""
        try:
            data = json.loads(payload)
            request = data.get("PendingID") if isinstance(data, dict) else None
            ok = isinstance(request, int) and not isinstance(request, bool) and request > 0
        except ValueError:
            ok = False
        if ok:
            self._pending = True
            self.wake.set()
            return
        key = (pid, payload)
        now = asyncio.get_running_loop().time()
        for k, t in list(self._bare_seen.items()):
            if now - t > BARE_REPEAT_SECONDS:
                del self._bare_seen[k]
        if key in self._bare_seen:
            return  # logged once; the same sender repeating itself is not logged again for a while
        self._bare_seen[key] = now
        task = asyncio.create_task(self._log_bare(payload, pid), name=f"bare-notify-{pid}")
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _log_bare(self, payload: str, pid: int) -> None:
        role = None
        try:
            async with self._aux_lock:
                if self._aux is None or self._aux.closed or self._aux.broken:
                    self._aux = await aconnect(self.settings)
                row = await (await self._aux.execute(SENDER_SQL, (pid,))).fetchone()
            role = row[0] if row else None
        except Exception as exc:  # noqa: BLE001 - the log line matters more than the role
            self.log.debug("cannot look up the sender of a notification: %s", exc)
        who = role if role is not None else "unknown (session ended)"
        shown = payload if len(payload) <= 200 else payload[:200] + "..."
        self.log.warning("ignored a notification on channel %r from pid %s (role %s) that names no request: %r",
                         self.options.client_name, pid, who, shown)
        if self.writer:
            self.writer.message(
                "ERROR", f"ignored a notification from pid {pid} (role {who}) that names no recorded request: "
                         "START and STOP must come through timetable.notify_chain_start / notify_chain_stop",
                {"pid": pid, "role": role, "payload": shown})

    def _refused(self, rows) -> None:
        for request_id, command, chain_id, role, pid in rows:
            who = role if role is not None else "unknown (asked before the upgrade)"
            self.log.warning("%s of chain %s refused: role %s (pid %s) may not control chains", command, chain_id,
                             who, pid)
            if self.writer:
                self.writer.message(
                    "ERROR", f"{command} of chain {chain_id} refused: role {who} (pid {pid}) may not control "
                             "chains (needs membership in timetable_operator or EXECUTE on "
                             f"timetable.notify_chain_{command.lower()})",
                    {"chain": chain_id, "request": request_id, "role": role, "pid": pid})

    async def _take_pending(self, now: datetime) -> None:
        """Refuse the requests of roles that may not control chains; arm (start time = our
        clock + delay) and take the due START requests; take and carry out the STOPs."""
        me = self.options.client_name
        args = {"me": me, "now": now, "session": self.session_id}
        try:
            async with self._aux_lock:
                if self._aux is None or self._aux.closed or self._aux.broken:
                    self._aux = await aconnect(self.settings)
                async with self._aux.pipeline():
                    refused_cur = await self._aux.execute(PENDING_REFUSE_SQL, args)
                    stops_cur = await self._aux.execute(PENDING_STOPS_SQL, args)
                    await self._aux.execute(PENDING_ARM_SQL, args)
                    taken_cur = await self._aux.execute(PENDING_TAKE_SQL, args)
                    next_cur = await self._aux.execute(PENDING_NEXT_SQL, args)
                refused = await refused_cur.fetchall()
                stops = await stops_cur.fetchall()
                taken = await taken_cur.fetchall()
                self._pending_at = (await next_cur.fetchone())[0]
        except psycopg.Error as exc:
            self.log.error("cannot read pending START/STOP requests: %s", exc)
            self._pending_at = now + timedelta(seconds=max(self.options.poll_seconds, 0.5))
            return
        self._refused(refused)
        for _request_id, chain_id, role in stops:
            self.stop_chain(chain_id, role)
        for request_id, chain_id, start_at, run_id in taken:
            if run_id is None:
                self.log.warning("START for chain %s ignored: no such chain for client %s", chain_id, me)
                if self.writer:
                    self.writer.message("ERROR", "START ignored: chain not found or bound to another client",
                                        {"chain": chain_id, "request": request_id})
                continue
            late = (now - start_at).total_seconds() if start_at is not None else 0.0
            if late > self.options.missed_grace_seconds and self.writer:
                self.writer.message("INFO", f"START of chain {chain_id} taken {late:.0f} s after its time "
                                            "(the engine was not running)", {"chain": chain_id, "run": run_id})
            self.stats["claimed"] += 1
            self._launch(RunHandle(run_id, chain_id, "manual"))

    # --- dead runs ---------------------------------------------------------------------

    async def _reap(self, ctl: psycopg.AsyncConnection) -> None:
        rows = await (await ctl.execute(REAP_SQL)).fetchall()
        self._log_reaped(rows)
        if rows:
            self._dirty = True
            self.wake.set()

    def _log_reaped(self, rows) -> None:
        """The runs reap_dead_runs ended, to the engine log and timetable.log (the same rows
        whether reaped at start-up or later)."""
        for run_id, chain_id, reason, status in rows:
            if status == "succeeded":  # its chain transaction had committed: it did succeed
                self.log.warning("run %s of chain %s recorded as succeeded: %s", run_id, chain_id, reason)
                if self.writer:
                    self.writer.message("INFO", f"run recorded as succeeded (its chain transaction had committed): "
                                                f"{reason}", {"chain": chain_id, "run": run_id, "status": status})
            else:
                self.log.warning("run %s of chain %s marked %s: %s", run_id, chain_id, status, reason)
                if self.writer:
                    self.writer.message("ERROR", f"run marked {status}: {reason}",
                                        {"chain": chain_id, "run": run_id, "status": status})

    # --- observability -------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"ok": self.ready, "detail": self.error or (f"{len(self.running)} run(s) in progress"
                                                           if self.ready else "starting")}
