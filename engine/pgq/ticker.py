"""The PgQ ticker and maintenance daemon (what pgqd does), as an engine service.

Per database, on one connection:
- every ``ticker_period`` (1 s): ``select pgq.ticker()``;
- every ``retry_period`` (30 s): ``select pgq.maint_retry_events()`` until it returns 0;
- every ``maint_period`` (120 s): each row of ``pgq.maint_operations()`` as its own
  transaction (``vacuum`` rows as VACUUM statements), each repeated while it returns
  non-zero; then samples older than ``sample_keep`` (24 h) are pruned;
- every ``sample_period`` (10 s), where ``pgtt.queue_sample`` exists: one row per queue
  (events per second, ticker lag, tick) and per consumer (lag, pending events) for the
  console's queue charts (issue 18; PgQ keeps no lag history). The period is also checked
  in the database (no row newer than the period for that queue), so several engines
  ticking one database do not multiply the rate.

Several databases are served at once (one service each). A database that cannot be
reached is **reported**: ``health()`` turns not-ok at once, names the database and the
error, and says since when; the service keeps trying with back-off, and the standalone
``pgtt-tui ticker`` exits non-zero once a database has been unreachable for
``--fail-after`` seconds (pgqd would retry silently for ever, pgq/pgqd#5).

Works on our ``pgq`` schema and on the real extension (same public functions).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from engine.db import UNREACHABLE_PROBE_MAX, ConnSettings, aconnect, backoff_delays, redact, translate_db_error
from engine.errors import ConnectError, InputError

log = logging.getLogger("pgtt.pgq.ticker")

_QUALIFIED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")
MAX_REPEATS = 10_000  # a maintenance function that never returns 0 is cut off here
CHECK_PERIOD = 60.0  # re-check a database that has no pgq schema

HAS_SAMPLES_SQL = "SELECT to_regclass('pgtt.queue_sample') IS NOT NULL"
# One statement per round: the queues whose newest sample is older than the period, and
# their consumers. ``at`` NULL: the server's now().
SAMPLE_QUEUES_SQL = """
WITH due AS (
    SELECT q.queue_name, q.ev_per_sec, q.ticker_lag, q.last_tick_id
    FROM pgq.get_queue_info() q
    WHERE NOT EXISTS (SELECT 1 FROM pgtt.queue_sample s
                      WHERE s.queue_name = q.queue_name AND s.consumer_name = ''
                        AND s.sampled_at > coalesce(%(at)s::timestamptz, now()) - %(period)s::interval)
)
INSERT INTO pgtt.queue_sample (queue_name, consumer_name, sampled_at, ev_per_sec, lag_s, pending, tick_id)
SELECT d.queue_name, '', coalesce(%(at)s::timestamptz, now()), d.ev_per_sec, extract(epoch FROM d.ticker_lag),
       NULL, d.last_tick_id
FROM due d
UNION ALL
SELECT c.queue_name, c.consumer_name, coalesce(%(at)s::timestamptz, now()), NULL, extract(epoch FROM c.lag),
       c.pending_events, c.last_tick
FROM pgq.get_consumer_info() c JOIN due d ON d.queue_name = c.queue_name
ON CONFLICT DO NOTHING
"""
PRUNE_QUEUE_SAMPLES_SQL = """
DELETE FROM pgtt.queue_sample WHERE sampled_at < coalesce(%(at)s::timestamptz, now()) - %(keep)s::interval
"""
PRUNE_CASCADE_SAMPLES_SQL = """
DELETE FROM pgtt.cascade_sample WHERE sampled_at < coalesce(%(at)s::timestamptz, now()) - %(keep)s::interval
"""


@dataclass
class TickerOptions:
    ticker_period: float = 1.0
    maint_period: float = 120.0
    retry_period: float = 30.0
    sample_period: float = 10.0  # queue / consumer samples for the console's charts
    sample_keep: float = 86400.0  # samples older than this are pruned by the maintenance
    samples: bool = True

    def __post_init__(self) -> None:
        for name in ("ticker_period", "maint_period", "retry_period", "sample_period", "sample_keep"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise InputError(f"--{name.replace('_', '-')}", f"must be a positive number of seconds, not {value!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TickerOptions:
        known: dict[str, Any] = {k: float(v) for k, v in values.items() if v is not None and k in (
            "ticker_period", "maint_period", "retry_period", "sample_period", "sample_keep")}
        if values.get("samples") is not None:
            known["samples"] = bool(values["samples"])
        return cls(**known)


# -- the three jobs, usable on their own (tests, ``pgtt-tui ticker --once``) -------------------

async def has_pgq(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT to_regproc('pgq.version') IS NOT NULL")
    if not (await cur.fetchone())[0]:
        return False
    cur = await conn.execute("SELECT pgq.version()")
    version = (await cur.fetchone())[0] or ""
    if not version.startswith("3"):
        raise InputError("pgq", f"unsupported PgQ version {version!r} (3.x needed)")
    return True


async def tick(conn: psycopg.AsyncConnection) -> int:
    """One ticker round over all queues; returns what pgq.ticker() returns."""
    cur = await conn.execute("SELECT pgq.ticker()")
    return int((await cur.fetchone())[0] or 0)


async def retry_events(conn: psycopg.AsyncConnection) -> int:
    """Move due retry events back into their queues; returns how many."""
    total = 0
    for _ in range(MAX_REPEATS):
        cur = await conn.execute("SELECT pgq.maint_retry_events()")
        n = int((await cur.fetchone())[0] or 0)
        total += n
        if n == 0:
            break
    return total


async def has_samples(conn: psycopg.AsyncConnection) -> bool:
    """Whether this database has pgtt's sample tables (not where pgq stands alone)."""
    cur = await conn.execute(HAS_SAMPLES_SQL)
    return bool((await cur.fetchone())[0])


async def sample_queues(conn: psycopg.AsyncConnection, *, period: float = 10.0, at: Any = None) -> int:
    """One sample of every queue whose newest sample is older than ``period`` seconds (and of
    its consumers); returns the rows written. ``at``: the time to record (tests), else now()."""
    cur = await conn.execute(SAMPLE_QUEUES_SQL, {"at": at, "period": timedelta(seconds=period)})
    return cur.rowcount or 0


async def prune_samples(conn: psycopg.AsyncConnection, *, keep: float = 86400.0, at: Any = None) -> int:
    """Delete queue and cascade samples older than ``keep`` seconds; returns how many."""
    params = {"at": at, "keep": timedelta(seconds=keep)}
    total = 0
    for query in (PRUNE_QUEUE_SAMPLES_SQL, PRUNE_CASCADE_SAMPLES_SQL):
        cur = await conn.execute(query, params)
        total += cur.rowcount or 0
    return total


def _qualified(field_name: str, text: str) -> sql.Identifier:
    match = _QUALIFIED.match(text or "")
    if not match:
        raise InputError(field_name, f"{text!r} is not a schema-qualified name")
    return sql.Identifier(match.group(1), match.group(2))


def maint_statement(func_name: str, func_arg: str | None) -> sql.Composed:
    """The statement for one row of pgq.maint_operations()."""
    low = func_name.strip().lower()
    if low in ("vacuum", "vacuum analyze"):
        verb = sql.SQL("VACUUM ANALYZE ") if low.endswith("analyze") else sql.SQL("VACUUM ")
        return verb + _qualified("func_arg", func_arg or "")
    func = _qualified("func_name", func_name)
    if func_arg is None:
        return sql.SQL("SELECT {}()").format(func)
    return sql.SQL("SELECT {}({})").format(func, sql.Literal(func_arg))


async def maintain(conn: psycopg.AsyncConnection) -> list[tuple[str, str | None, int]]:
    """Run every maintenance operation; returns (func_name, func_arg, times run)."""
    cur = await conn.execute("SELECT func_name, func_arg FROM pgq.maint_operations()")
    ops = await cur.fetchall()
    done = []
    for func_name, func_arg in ops:
        stmt = maint_statement(func_name, func_arg)
        runs = 0
        for _ in range(MAX_REPEATS):
            cur = await conn.execute(stmt)  # autocommit: one transaction per call
            runs += 1
            if cur.description is None:
                break  # VACUUM
            row = await cur.fetchone()
            value = row[0] if row else None
            if not value or not isinstance(value, int):
                break
        done.append((func_name, func_arg, runs))
    return done


# -- the service -----------------------------------------------------------------------------

@dataclass
class DatabaseTicker:
    """Ticks and maintains one database."""

    settings: ConnSettings
    options: TickerOptions = field(default_factory=TickerOptions)
    name: str = ""
    # state for health() and metrics()
    connected: bool = False
    pgq_present: bool | None = None
    ticks: int = 0
    ticker_calls: int = 0
    retried: int = 0
    maint_runs: int = 0
    samples_written: int = 0
    samples_pruned: int = 0
    sampling: bool = False  # pgtt.queue_sample exists in this database
    errors: int = 0
    last_error: str = ""
    last_tick_at: float | None = None  # time.monotonic()
    unreachable_since: float | None = None
    extra: bool = False  # another database than the engine's own (--pgq-database)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"pgq-ticker[{self.database}]"

    @property
    def database(self) -> str:
        try:
            params = psycopg.conninfo.conninfo_to_dict(self.settings.dsn) if self.settings.dsn else {}
        except psycopg.ProgrammingError:
            params = {}
        return params.get("dbname") or redact(self.settings.dsn) or "(default)"

    # health -------------------------------------------------------------------------------
    def unreachable_for(self) -> float:
        return 0.0 if self.unreachable_since is None else time.monotonic() - self.unreachable_since

    def health(self) -> dict[str, Any]:
        if self.unreachable_since is not None:
            return {"ok": False, "database": self.database,
                    "detail": f"database {self.database} unreachable for {self.unreachable_for():.0f}s: "
                              f"{self.last_error}"}
        if self.pgq_present is False:
            return {"ok": True, "database": self.database, "detail": "no pgq schema in this database: idle"}
        if not self.connected:
            return {"ok": False, "database": self.database, "detail": "not connected yet"}
        lag = None if self.last_tick_at is None else time.monotonic() - self.last_tick_at
        stale = lag is not None and lag > max(10 * self.options.ticker_period, 10.0)
        detail = f"ticking every {self.options.ticker_period:g}s"
        if stale:
            detail = f"no successful ticker call for {lag:.0f}s: {self.last_error}"
        return {"ok": not stale, "database": self.database, "detail": detail,
                "last_tick_seconds_ago": None if lag is None else round(lag, 3)}

    def metrics(self) -> list:
        from engine.worker import Metric  # noqa: PLC0415 - avoid an import cycle at load time

        labels = {"database": self.database}
        return [
            Metric("pgtt_pgq_ticker_calls_total", self.ticker_calls, labels, "counter", "pgq.ticker() calls"),
            Metric("pgtt_pgq_retried_events_total", self.retried, labels, "counter", "retry events moved back"),
            Metric("pgtt_pgq_maint_runs_total", self.maint_runs, labels, "counter", "maintenance statements run"),
            Metric("pgtt_pgq_ticker_errors_total", self.errors, labels, "counter", "failed ticker rounds"),
            Metric("pgtt_pgq_database_up", 1.0 if self.connected and self.unreachable_since is None else 0.0,
                   labels, "gauge", "1 while the ticker is connected to the database"),
        ]

    # loop ---------------------------------------------------------------------------------
    async def run(self, ctx) -> None:
        stopping: asyncio.Event = ctx.stopping
        delays = backoff_delays(initial=0.5, maximum=UNREACHABLE_PROBE_MAX)
        while not stopping.is_set():
            try:
                conn = await aconnect(self.settings.with_app(f"pgtt-tui ticker {self.database}"))
            except ConnectError as exc:
                self._unreachable(str(exc))
                if await _wait(stopping, next(delays) if getattr(exc, "retryable", False) else 15.0):
                    break
                continue
            delays = backoff_delays(initial=0.5, maximum=UNREACHABLE_PROBE_MAX)
            self.connected = True
            self.unreachable_since = None
            try:
                await self._serve(conn, stopping)
            except psycopg.OperationalError as exc:
                self._unreachable(translate_db_error(exc))
                if await _wait(stopping, next(delays)):
                    break
            finally:
                self.connected = False
                await conn.close()

    def _unreachable(self, message: str) -> None:
        if self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
            log.warning("%s: database unreachable: %s", self.name, message)
        self.last_error = redact(message)
        self.connected = False
        self.errors += 1  # a round that could not reach the database failed too

    def database_unreachable(self, message: str) -> None:
        """Supervisor hook: the engine's database is unreachable while no service runs.
        Only the engine's own database: another ``--pgq-database`` may well be up."""
        if not self.extra:
            self._unreachable(message)

    async def _serve(self, conn: psycopg.AsyncConnection, stopping: asyncio.Event) -> None:
        self.pgq_present = await has_pgq(conn)
        if not self.pgq_present:
            log.info("%s: no pgq schema; checking again in %ss", self.name, CHECK_PERIOD)
            await _wait(stopping, CHECK_PERIOD)
            return
        self.sampling = self.options.samples and await has_samples(conn)
        now = time.monotonic()
        next_tick, next_retry, next_maint = now, now + self.options.retry_period, now + self.options.maint_period
        next_sample = now if self.sampling else float("inf")
        while not stopping.is_set():
            now = time.monotonic()
            if now >= next_tick:
                await self._step("ticker", self._do_tick, conn)
                next_tick = now + self.options.ticker_period
            if now >= next_sample:
                await self._step("samples", self._do_sample, conn)
                next_sample = now + self.options.sample_period
            if now >= next_retry:
                await self._step("retry", self._do_retry, conn)
                next_retry = now + self.options.retry_period
            if now >= next_maint:
                await self._step("maintenance", self._do_maint, conn)
                next_maint = now + self.options.maint_period
            if await _wait(stopping, max(0.0, min(next_tick, next_retry, next_maint, next_sample)
                                                 - time.monotonic())):
                break

    async def _step(self, what: str, func, conn: psycopg.AsyncConnection) -> None:
        try:
            await func(conn)
        except psycopg.OperationalError:
            raise  # connection trouble: the outer loop reconnects
        except psycopg.Error as exc:
            self.errors += 1
            self.last_error = f"{what}: {translate_db_error(exc)}"
            log.error("%s: %s", self.name, self.last_error)
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await conn.rollback()

    async def _do_tick(self, conn: psycopg.AsyncConnection) -> None:
        self.ticks += await tick(conn)
        self.ticker_calls += 1
        self.last_tick_at = time.monotonic()

    async def _do_retry(self, conn: psycopg.AsyncConnection) -> None:
        self.retried += await retry_events(conn)

    async def _do_maint(self, conn: psycopg.AsyncConnection) -> None:
        for func_name, func_arg, runs in await maintain(conn):
            self.maint_runs += runs
            log.debug("%s: maintenance %s(%s) ×%d", self.name, func_name, func_arg or "", runs)
        if self.sampling:
            self.samples_pruned += await prune_samples(conn, keep=self.options.sample_keep)

    async def _do_sample(self, conn: psycopg.AsyncConnection) -> None:
        # the database's spacing a little under the loop's period: a round that comes a few
        # milliseconds early must not skip a whole period
        self.samples_written += await sample_queues(conn, period=self.options.sample_period * 0.8)


async def _wait(stopping: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early on stop; True if stopping."""
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
        return True
    except TimeoutError:
        return stopping.is_set()


def tickers_for(settings: ConnSettings, extra_dsns: list[str] | tuple[str, ...] = (),
                options: TickerOptions | None = None) -> list[DatabaseTicker]:
    options = options or TickerOptions()
    all_settings = [settings] + [ConnSettings(dsn=d, application_name=settings.application_name,
                                              connect_timeout=settings.connect_timeout) for d in extra_dsns]
    seen: set[str] = set()
    out = []
    for s in all_settings:
        key = s.conninfo()
        if key in seen:
            continue
        seen.add(key)
        out.append(DatabaseTicker(s, options, extra=s is not settings))
    return out


def build_services(options) -> list[DatabaseTicker]:
    """Worker entry point (engine.worker.SERVICE_FACTORIES["pgq"]).

    module options (``options.module_options["pgq"]``): ``databases`` (more DSNs to tick),
    ``ticker_period``, ``maint_period``, ``retry_period`` (seconds).
    """
    mod = options.for_module("pgq")
    return tickers_for(options.settings, list(mod.get("databases") or ()), TickerOptions.from_dict(mod))


# -- standalone: ``pgtt-tui ticker`` -------------------------------------------------------------

@dataclass
class _StandaloneContext:
    stopping: asyncio.Event
    log: logging.Logger = log


async def run_standalone(tickers: list[DatabaseTicker], *, fail_after: float | None = 60.0,
                         stopping: asyncio.Event | None = None) -> int:
    """Run until stopped; returns an exit code: 0 after a clean stop, 3 when a database was
    unreachable for ``fail_after`` seconds (None: never give up)."""
    stopping = stopping or asyncio.Event()
    ctx = _StandaloneContext(stopping)
    tasks = [asyncio.create_task(t.run(ctx), name=t.name) for t in tickers]
    code = 0
    try:
        while not stopping.is_set():
            if await _wait(stopping, 0.5):
                break
            for t in tickers:
                if fail_after is not None and t.unreachable_for() >= fail_after:
                    log.error("%s", t.health()["detail"])
                    code = 3
                    stopping.set()
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()
    finally:
        stopping.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return code


async def run_once(settings: ConnSettings, *, maint: bool = True) -> dict[str, Any]:
    """One round of everything on one database (``pgtt-tui ticker --once``)."""
    conn = await aconnect(settings.with_app("pgtt-tui ticker"))
    try:
        if not await has_pgq(conn):
            return {"database": DatabaseTicker(settings).database, "pgq": False}
        ticked = await tick(conn)
        retried = await retry_events(conn)
        ops = await maintain(conn) if maint else []
        return {"database": DatabaseTicker(settings).database, "pgq": True, "queues_ticked": ticked,
                "retried_events": retried,
                "maintenance": [{"func_name": f, "func_arg": a, "runs": n} for f, a, n in ops]}
    finally:
        await conn.close()
