"""The engine process (``pgtt-tui worker``): runs the services of the chosen modules.

A service is anything with ``name``, ``async run(ctx)``, ``health()`` and ``metrics()``.
The supervisor here is the one place that knows about:
- standby servers: while ``pg_is_in_recovery()`` no service runs; after promotion they
  start by themselves;
- connection loss: a service that raises is restarted with back-off (its own state is
  in the database, so a restart loses nothing);
- registration: the engine's row in ``pgtt.engine`` with a heartbeat, for the sessions
  view;
- shutdown: SIGTERM / SIGINT set ``ctx.stopping``; services finish their current step.

Modules plug in through ``SERVICE_FACTORIES``: module name → "package.module:function",
where the function takes the WorkerOptions and returns a list of services.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from engine import __version__
from engine.clock import Clock, SystemClock
from engine.db import (UNREACHABLE_PROBE_MAX, ConnSettings, aconnect, backoff_delays, connection_lost_reason,
                       is_connection_loss, settle_connects)
from engine.errors import ConnectError, InputError

log = logging.getLogger("pgtt.worker")

SERVICE_FACTORIES: dict[str, str] = {
    "timetable": "engine.timetable.service:build_services",
    "schedule": "engine.schedule.manager:build_services",
    "pgq": "engine.pgq.ticker:build_services",
    "cascade": "engine.cascade.worker:build_services",
}
STANDBY_POLL_SECONDS = 2.0  # while running: how often the services' server is checked for demotion
# while idling on a standby: pg_is_in_recovery() on one held connection (cheap), so that
# the services start within this after a promotion; a multi-host DSN that finds only
# standbys (target_session_attrs=read-write) has to connect each time, so less often
PROMOTION_POLL_SECONDS = 0.25
PROMOTION_CONNECT_POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0
# A crashed engine's row stays "lost" for an hour (so the console shows that it died),
# then counts as stopped at its last heartbeat; stopped rows go after a week.
ENGINE_LOST_AFTER = "1 hour"
ENGINE_KEEP_STOPPED = "7 days"
REGISTER_ENGINE_SQL = (
    "INSERT INTO pgtt.engine (client_name, backend_pid, host, os_pid, modules, version, slots) "
    "VALUES (%s, pg_backend_pid(), %s, %s, %s, %s, %s) RETURNING engine_id")
#: a reconnect (server restart, lost connection) keeps the engine's row: one process, one row
REATTACH_ENGINE_SQL = (
    "UPDATE pgtt.engine SET backend_pid = pg_backend_pid(), connected_at = now(), heartbeat_at = now(), "
    "stopped_at = NULL WHERE engine_id = %s RETURNING engine_id")
PRUNE_ENGINES_SQL = """
WITH lost AS (
    UPDATE pgtt.engine e SET stopped_at = e.heartbeat_at
    WHERE e.stopped_at IS NULL AND e.heartbeat_at < now() - %s::interval
      AND NOT pgtt.engine_alive(e.backend_pid, coalesce(e.connected_at, e.started_at))
    RETURNING engine_id)
DELETE FROM pgtt.engine WHERE stopped_at < now() - %s::interval
"""


@dataclass
class Metric:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)
    kind: str = "gauge"  # "counter" | "gauge"
    help: str = ""


class Service(Protocol):
    name: str

    async def run(self, ctx: WorkerContext) -> None: ...

    def health(self) -> dict[str, Any]: ...

    def metrics(self) -> list[Metric]: ...

    # optional: ``cancel_runs(reason, keep_run) -> int`` stops work in progress at once
    # (used when a task asks the engine to exit, e.g. the Shutdown builtin)


@dataclass
class WorkerOptions:
    settings: ConnSettings
    client_name: str = ""
    modules: list[str] = field(default_factory=list)
    module_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_module(self, module: str) -> dict[str, Any]:
        return self.module_options.setdefault(module, {})


def engine_slots(options: WorkerOptions) -> int | None:
    """The timetable worker slots of this engine (cron + interval workers), recorded in
    pgtt.engine.slots for the console's slot-use chart; None without the timetable module."""
    if "timetable" not in options.modules:
        return None
    from engine.timetable.options import TimetableOptions  # noqa: PLC0415 - only with the module

    opts = options.module_options.get("timetable") or {}
    return int(opts.get("cron_workers") or TimetableOptions.cron_workers) + int(
        opts.get("interval_workers") or TimetableOptions.interval_workers)


@dataclass
class WorkerContext:
    settings: ConnSettings
    clock: Clock
    client_name: str
    options: WorkerOptions
    stopping: asyncio.Event
    log: logging.Logger = log
    standby: bool = False
    #: why the supervisor cancels the services when it is not a plain stop (e.g. "database
    #: connection lost: …"); services may record it for the work they abandon
    stop_reason: str = ""


def default_client_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def build_services(options: WorkerOptions) -> list[Service]:
    services: list[Service] = []
    for module in options.modules:
        target = SERVICE_FACTORIES.get(module)
        if target is None:
            choices = ", ".join(sorted(SERVICE_FACTORIES)) or "(none available)"
            raise InputError("--modules", f"no engine service for module {module!r} (choose from {choices})")
        mod_name, _, func = target.partition(":")
        services.extend(getattr(importlib.import_module(mod_name), func)(options))
    return services


async def server_is_standby(settings: ConnSettings) -> bool:
    conn = await aconnect(settings.with_app(f"{settings.application_name} probe"))
    try:
        cur = await conn.execute("SELECT pg_is_in_recovery()")
        return bool((await cur.fetchone())[0])
    finally:
        await conn.close()


class Supervisor:
    """Runs services; restarts them after failures; idles them on a standby."""

    def __init__(self, options: WorkerOptions, services: list[Service], clock: Clock | None = None):
        self.options = options
        self.services = services
        self.ctx = WorkerContext(settings=options.settings, clock=clock or SystemClock(),
                                 client_name=options.client_name or default_client_name(), options=options,
                                 stopping=asyncio.Event())
        self.state = "starting"  # starting | standby | running | reconnecting | stopped
        self.restarts: dict[str, int] = {s.name: 0 for s in services}
        self.last_error: str = ""
        self.engine_id: int | None = None  # our row in pgtt.engine, kept across reconnects
        self.database_up = False  # the last probe or service round reached the server
        self.connect_errors = 0  # failed probes of the server
        self._probe: psycopg.AsyncConnection | None = None  # held while idling on a standby

    def stop(self) -> None:
        self.ctx.stopping.set()

    def health(self) -> dict[str, Any]:
        parts = {s.name: s.health() for s in self.services}
        ok = self.state == "standby" or (self.state == "running" and all(p.get("ok", False) for p in parts.values()))
        return {"ok": ok, "state": self.state, "client_name": self.ctx.client_name, "services": parts,
                "last_error": self.last_error}

    def metrics(self) -> list[Metric]:
        out = [Metric("pgtt_worker_up", 1.0 if self.state == "running" else 0.0, help="1 while services run"),
               Metric("pgtt_worker_standby", 1.0 if self.state == "standby" else 0.0,
                      help="1 while the server is a standby"),
               Metric("pgtt_worker_database_up", 1.0 if self.database_up else 0.0,
                      help="1 while the engine reaches its database"),
               Metric("pgtt_worker_connect_errors_total", self.connect_errors, kind="counter",
                      help="failed attempts to reach the database")]
        for name, count in self.restarts.items():
            out.append(Metric("pgtt_service_restarts_total", count, {"service": name}, "counter",
                              "service restarts after an error"))
        for service in self.services:
            out.extend(service.metrics())
        return out

    async def _wait_stopping(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.ctx.stopping.wait(), timeout=seconds)
            return True
        except TimeoutError:
            return False

    def _unreachable(self, message: str) -> None:
        """The database cannot be reached: health and metrics say so, services are told."""
        self.database_up = False
        self.connect_errors += 1
        for service in self.services:
            hook = getattr(service, "database_unreachable", None)  # optional service hook
            if hook is not None:
                hook(message)

    async def _in_recovery(self) -> bool:
        """pg_is_in_recovery() on the held probe connection (opened on first use)."""
        if self._probe is None or self._probe.closed:
            self._probe = await aconnect(self.ctx.settings.with_app(f"{self.ctx.settings.application_name} probe"))
        try:
            cur = await self._probe.execute("SELECT pg_is_in_recovery()")
            return bool((await cur.fetchone())[0])
        except psycopg.Error as exc:
            await self._close_probe()
            lost = ConnectError(f"lost the connection to the server: {exc}")
            lost.retryable = True  # probe again soon (a restarting standby), not the refused back-off
            raise lost from None

    async def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None and not probe.closed:
            await probe.close()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self._close_probe()
            self.state = "stopped"

    async def _run(self) -> None:
        # a server that is down is probed about every second (it may be back any moment);
        # one that refuses us (password, missing database) is asked less often
        delays = backoff_delays(initial=0.2, maximum=UNREACHABLE_PROBE_MAX)
        refused = backoff_delays(initial=0.5, maximum=15.0)
        while not self.ctx.stopping.is_set():
            try:
                standby = await self._in_recovery()
            except ConnectError as exc:
                if getattr(exc, "standby", False):
                    # a multi-host DSN (target_session_attrs=read-write) that reached only
                    # standbys: the same as idling on one; no growing back-off, so that a
                    # promotion is noticed promptly
                    if self.state != "standby":
                        log.info("only standby servers answer: idling until one is promoted (%s)", exc)
                    self.state = "standby"
                    self.ctx.standby = True
                    self.database_up = True
                    if await self._wait_stopping(PROMOTION_CONNECT_POLL_SECONDS):
                        break
                    continue
                if self.state != "reconnecting":
                    log.warning("database unreachable: %s", exc)
                self.state = "reconnecting"
                self.last_error = str(exc)
                self._unreachable(str(exc))
                wait = next(delays) if getattr(exc, "retryable", False) else next(refused)
                if await self._wait_stopping(wait):
                    break
                continue
            self.database_up = True
            if standby:
                if self.state != "standby":
                    log.info("server is a standby: idling until it is promoted")
                self.state = "standby"
                self.ctx.standby = True
                if await self._wait_stopping(PROMOTION_POLL_SECONDS):
                    break
                continue
            await self._close_probe()  # the services have their own connections
            self.ctx.standby = False
            self.state = "running"
            self.ctx.stop_reason = ""
            delays = backoff_delays(initial=0.2, maximum=UNREACHABLE_PROBE_MAX)
            refused = backoff_delays(initial=0.5, maximum=15.0)
            await self._run_services_once()

    async def _run_services_once(self) -> None:
        """Run every service until stop, a failure, or the server turns into a standby."""
        tasks = {asyncio.create_task(s.run(self.ctx), name=s.name): s for s in self.services}
        watch = asyncio.create_task(self._watch_recovery(), name="recovery-watch")
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        stop_wait = asyncio.create_task(self.ctx.stopping.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([*tasks, watch, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task in tasks and task.exception() is not None:
                    exc = task.exception()
                    self.restarts[tasks[task].name] += 1
                    self.last_error = f"{tasks[task].name}: {exc}"
                    log.error("service %s failed: %s; restarting", tasks[task].name, exc)
                    if is_connection_loss(exc):
                        self.database_up = False
                        self.ctx.stop_reason = self.ctx.stop_reason or connection_lost_reason(exc)
        finally:
            pending = [t for t in [*tasks, watch, heartbeat, stop_wait] if not t.done()]
            if not self.ctx.stopping.is_set():
                # a failure or demotion: stop the others, then the outer loop decides
                for t in pending:
                    t.cancel()
            else:
                # a clean stop: give services a moment to finish their current step
                service_tasks = [t for t in tasks if not t.done()]
                if service_tasks:
                    await asyncio.wait(service_tasks, timeout=30)
                for t in [*tasks, watch, heartbeat, stop_wait]:
                    if not t.done():
                        t.cancel()
            await asyncio.gather(*tasks, watch, heartbeat, stop_wait, return_exceptions=True)
        if not self.ctx.stopping.is_set():
            await self._wait_stopping(0.5)

    async def _watch_recovery(self) -> None:
        """Returns when the server becomes a standby (services are then stopped)."""
        while not self.ctx.stopping.is_set():
            await asyncio.sleep(STANDBY_POLL_SECONDS)
            try:
                if await server_is_standby(self.ctx.settings):
                    log.warning("server turned into a standby: stopping services")
                    return
            except ConnectError:
                return

    async def _heartbeat(self) -> None:
        """Keep our row in pgtt.engine fresh; best effort (the module may be absent).  The
        row is registered once per process: after a reconnect the same row points at the new
        backend, so restarts of the server leave no "lost" engines behind."""
        conn: psycopg.AsyncConnection | None = None
        try:
            while not self.ctx.stopping.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = await aconnect(self.ctx.settings.with_app(f"pgtt-tui engine {self.ctx.client_name}"))
                        row = None
                        if self.engine_id is not None:
                            row = await (await conn.execute(REATTACH_ENGINE_SQL, (self.engine_id,))).fetchone()
                        if row is None:
                            row = await (await conn.execute(REGISTER_ENGINE_SQL, (
                                self.ctx.client_name, socket.gethostname(), os.getpid(), self.options.modules,
                                __version__, engine_slots(self.options)))).fetchone()
                        self.engine_id = row[0]
                        await conn.execute(PRUNE_ENGINES_SQL, (ENGINE_LOST_AFTER, ENGINE_KEEP_STOPPED))
                    else:
                        await conn.execute("UPDATE pgtt.engine SET heartbeat_at = now() WHERE engine_id = %s",
                                           (self.engine_id,))
                except (psycopg.Error, ConnectError) as exc:
                    log.debug("heartbeat failed: %s", exc)
                    if conn is not None:
                        await conn.close()
                    conn = None
                await asyncio.sleep(HEARTBEAT_SECONDS)
        finally:
            if conn is not None and not conn.closed:
                if self.ctx.stopping.is_set():  # a restart of the services is not a stop of the engine
                    try:
                        await conn.execute("UPDATE pgtt.engine SET stopped_at = now() WHERE engine_id = %s",
                                           (self.engine_id,))
                    except psycopg.Error:
                        pass
                await conn.close()


def install_signal_handlers(supervisor: Supervisor) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, supervisor.stop)
        except (NotImplementedError, RuntimeError):
            pass


# ---- exit requests and the HTTP endpoint (timetable tasks engineer) ------------------------------
# A task may ask the engine that runs it to stop and exit with a code (pg_timetable's Shutdown
# builtin: 5). The handler is per run_worker call (a context variable, inherited by the tasks
# it starts), so several engines in one process stay independent.
_EXIT_REQUEST: contextvars.ContextVar = contextvars.ContextVar("pgtt_engine_exit", default=None)


def request_engine_exit(code: int, reason: str, *, cancel_runs: bool = False, keep_run: int | None = None) -> bool:
    """Stop the engine running the caller, which then exits with ``code``; False if none.

    ``cancel_runs`` (pg_timetable's Shutdown builtin): first cancel every chain run in
    progress in this engine, except ``keep_run`` (the run asking), as a STOP does, so the
    engine does not wait for them; they end as failed with ``reason``."""
    handler = _EXIT_REQUEST.get()
    if handler is None:
        return False
    handler(code, reason, cancel_runs, keep_run)
    return True


def _cancel_runs(supervisor: Supervisor, reason: str, keep_run: int | None) -> int:
    """Ask every service that has work in progress to stop it now (optional ``cancel_runs``
    hook: the timetable service STOPs its chain runs but ``keep_run``)."""
    n = 0
    for service in supervisor.services:
        cancel = getattr(service, "cancel_runs", None)
        if cancel is not None:
            n += cancel(reason, keep_run)
    return n


async def run_worker(options: WorkerOptions, clock: Clock | None = None) -> Supervisor:
    supervisor = Supervisor(options, build_services(options), clock)
    install_signal_handlers(supervisor)
    supervisor.exit_code = None  # set by request_engine_exit

    def _exit(code: int, reason: str, cancel_runs: bool = False, keep_run: int | None = None) -> None:
        log.warning("engine exit requested (%s): stopping, exit code %s", reason, code)
        if cancel_runs:
            n = _cancel_runs(supervisor, reason, keep_run)
            log.warning("%s: %d chain run(s) in progress cancelled", reason, n)
        supervisor.exit_code = code
        supervisor.stop()

    _EXIT_REQUEST.set(_exit)
    http_opts = options.module_options.get("http") or {}
    endpoint = None
    if http_opts.get("rest_port"):  # --rest-port (0 = off, as pg_timetable)
        from engine.http import DEFAULT_HOST, start_endpoint  # noqa: PLC0415

        endpoint = await start_endpoint(supervisor, options.settings, supervisor.ctx.client_name,
                                        int(http_opts["rest_port"]), http_opts.get("rest_host") or DEFAULT_HOST,
                                        token=http_opts.get("rest_token") or None,
                                        allowed_hosts=http_opts.get("rest_allowed_hosts") or ())
    supervisor.http = endpoint
    try:
        await supervisor.run()
    finally:
        if endpoint is not None:
            await endpoint.close()
        await settle_connects()  # attempts left by cancelled services end closed, not cut off
    return supervisor
# ---- end exit requests and HTTP endpoint ----------------------------------------------------------
