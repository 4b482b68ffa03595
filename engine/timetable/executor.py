"""Runs one claimed chain the way pg_timetable does.

1. ``timetable.start_run`` on the execution connection: the max_instances slot is taken
   cluster-wide (or the run is recorded as skipped);
2. BEGIN; the chain's virtual transaction id becomes ``txid``; a transaction-level
   advisory lock, exclusive for ``exclusive_execution`` chains and shared for all others,
   makes exclusivity hold across every engine on the database;
3. the live tasks in ``task_order``; each task once per non-NULL parameter row, with the
   ``pg_timetable.current_*`` settings set, ``run_as`` as a quoted ``SET ROLE``, a savepoint
   for local ``ignore_error`` tasks, task and chain timeouts (milliseconds; row value, else
   the CLI default; 0 = none) and STOP; one execution_log row per execution;
4. a failure of a task without ignore_error: ROLLBACK, then ``on_error`` in a fresh
   transaction; otherwise COMMIT, then ``self_destruct`` deletes the chain;
5. ``timetable.finish_run`` records the result (and, for @after chains, the next due time).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg

from engine.clock import Clock
from engine.db import ConnSettings, redact
from engine.schedules import ScheduleError, parse_schedule
from engine.timetable.dblog import DbWriter, ExecutionEntry
from engine.timetable.options import TimetableOptions
from engine.timetable.tasks import TaskContext, TaskFailed, TaskResult, TaskRow, get_kind
from engine.timetable.tasks.sql import set_session_settings

#: pg_advisory_xact_lock key for exclusive_execution (shared by every other chain run)
EXCLUSIVE_LOCK_KEY = 0x70677474_00000101

LOAD_CHAIN = """
SELECT chain_id, chain_name, run_at, timeout, exclusive_execution, self_destruct, on_error
FROM timetable.chain WHERE chain_id = %s
"""
LOAD_TASKS = """
SELECT t.task_id, t.chain_id, t.task_order, t.task_name, t.kind::text, t.command, t.run_as, t.database_connection,
       t.ignore_error, t.autonomous, coalesce(t.timeout, 0),
       coalesce((SELECT array_agg(p.value::text ORDER BY p.order_id) FROM timetable.parameter p
                  WHERE p.task_id = t.task_id AND p.value IS NOT NULL AND p.value <> 'null'::jsonb), '{}')
FROM timetable.task t
WHERE t.chain_id = %s AND t.live
ORDER BY t.task_order, t.task_id
"""
VXID = """
SELECT (split_part(virtualxid, '/', 1)::bigint << 32) | split_part(virtualxid, '/', 2)::bigint
FROM pg_catalog.pg_locks WHERE pid = pg_backend_pid() AND locktype = 'virtualxid' LIMIT 1
"""


RESET_SQL = "RESET ALL; DISCARD TEMP; UNLISTEN *; SELECT pg_advisory_unlock_all()"


class Interrupted(Exception):
    """A timeout or STOP ended the current step."""


@dataclass
class RunOutcome:
    status: str  # succeeded | failed | skipped | gone
    reason: str | None = None


def _now() -> datetime:
    return datetime.now(timezone.utc)


class ChainExecutor:
    def __init__(self, settings: ConnSettings, pool, options: TimetableOptions, clock: Clock, session_id: int,
                 writer: DbWriter, log: logging.Logger):
        self.settings = settings
        self.pool = pool
        self.options = options
        self.clock = clock
        self.session_id = session_id
        self.writer = writer
        self.log = log

    # --- bounded steps: timeouts and STOP ------------------------------------------------

    async def _bounded(self, coro, cancel_conn_of, deadline: float | None, stop: asyncio.Event | None,
                       what: str) -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(coro)
        stop_wait = asyncio.ensure_future(stop.wait()) if stop is not None else None
        waits = [task] + ([stop_wait] if stop_wait else [])
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            if stop_wait is not None and not stop_wait.done():
                stop_wait.cancel()
        if task in done:
            return task.result()
        reason = "stopped by notify_chain_stop" if stop is not None and stop.is_set() else f"{what} timed out"
        conn = cancel_conn_of()
        if conn is not None and not conn.closed:
            try:
                await conn.cancel_safe(timeout=5.0)
            except Exception:  # noqa: BLE001 - best effort
                pass
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        except BaseException:  # noqa: BLE001 - the step's own error is superseded by the reason
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        raise Interrupted(reason)

    @staticmethod
    def _deadline(ms: int) -> float | None:
        return asyncio.get_running_loop().time() + ms / 1000.0 if ms and ms > 0 else None

    # --- one run -------------------------------------------------------------------------

    async def execute(self, run_id: int, chain_id: int, stop: asyncio.Event) -> RunOutcome:
        txid = 0
        outcome = RunOutcome("failed", "engine error")
        run_at = None
        started: bool | None = None  # None: unknown (start_run may have committed)
        try:
            async with self.pool.connection() as conn:
                # PG 14+: a backend notices within a second that a killed engine is gone, so its
                # run ends and the reaper can free the slot (DISCARD ALL resets it afterwards)
                check = ("SELECT set_config('client_connection_check_interval', '1000', false), "
                         if conn.info.server_version >= 140000 else "SELECT NULL, ")
                state = (await (await conn.execute(check + "timetable.start_run(%s, %s, %s)",
                                                   (run_id, self.clock.now(),
                                                    self.options.default_max_instances))).fetchone())[1]
                if state in ("skipped", "gone"):
                    started = False
                if state == "skipped":
                    self.writer.message("INFO", "Cannot proceed: max_instances reached; run skipped",
                                        {"chain": chain_id, "run": run_id})
                    return RunOutcome("skipped", "max_instances reached")
                if state != "running":
                    return RunOutcome("gone", "run no longer claimed")
                started = True
                chain = await (await conn.execute(LOAD_CHAIN, (chain_id,))).fetchone()
                if chain is None:
                    outcome = RunOutcome("failed", "chain was deleted")
                    return outcome
                _, chain_name, run_at, timeout, exclusive, self_destruct, on_error = chain
                self.writer.message("INFO", "Starting chain", {"chain": chain_id, "name": chain_name, "run": run_id})
                deadline = self._deadline(timeout or self.options.chain_timeout_ms)
                try:
                    outcome, txid = await self._run_chain(conn, run_id, chain_id, exclusive, deadline, stop)
                except psycopg.OperationalError as exc:
                    outcome = RunOutcome("failed", f"database connection lost: {redact(str(exc).strip())}")
                if outcome.status == "failed" and on_error:
                    await self._on_error(conn, chain_id, on_error)
                if outcome.status == "succeeded" and self_destruct:
                    await conn.execute("DELETE FROM timetable.chain WHERE chain_id = %s", (chain_id,))
                    self.writer.message("INFO", "Chain deleted after a successful run (self_destruct)",
                                        {"chain": chain_id})
                if not conn.closed and not conn.broken:
                    # what tasks may have left behind (not DISCARD ALL: psycopg's prepared
                    # statements on this pooled connection must survive)
                    await conn.execute(RESET_SQL)
                return outcome
        except asyncio.CancelledError:
            outcome = RunOutcome("failed", "engine stopped while the chain was running")
            raise
        except psycopg.Error as exc:
            outcome = RunOutcome("failed", f"database error: {redact(str(exc).strip())}")
            return outcome
        finally:
            if started is not False:  # finish_run only touches a run still claimed/running
                await asyncio.shield(self._finish(run_id, chain_id, outcome, txid, run_at))

    async def _finish(self, run_id: int, chain_id: int, outcome: RunOutcome, txid: int, run_at: str | None) -> None:
        finished = self.clock.now()
        next_due = None
        try:
            sched = parse_schedule(run_at) if run_at else None
            if sched is not None and sched.kind == "after":
                next_due = sched.next_after(finished)
        except ScheduleError:
            pass
        level = "INFO" if outcome.status == "succeeded" else "ERROR"
        self.writer.message(level, f"Chain {outcome.status}", {"chain": chain_id, "run": run_id,
                                                                "reason": outcome.reason})
        for attempt in range(3):
            try:
                async with self.pool.connection() as conn:
                    await conn.execute("SELECT timetable.finish_run(%s, %s, %s, %s, %s, %s)",
                                       (run_id, outcome.status, outcome.reason, finished, txid or None, next_due))
                return
            except (psycopg.Error, OSError) as exc:
                self.log.error("cannot record the end of run %s (attempt %s): %s", run_id, attempt + 1, exc)
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _run_chain(self, conn: psycopg.AsyncConnection, run_id: int, chain_id: int, exclusive: bool,
                         deadline: float | None, stop: asyncio.Event) -> tuple[RunOutcome, int]:
        await conn.execute("BEGIN")
        in_tx = True
        txid = 0
        try:
            row = await (await conn.execute(VXID)).fetchone()
            txid = int(row[0]) if row and row[0] is not None else 0
            lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
            await self._bounded(conn.execute(f"SELECT {lock}(%s)", (EXCLUSIVE_LOCK_KEY,)), lambda: conn,
                                deadline, stop, "chain")
            rows = await (await conn.execute(LOAD_TASKS, (chain_id,))).fetchall()
            failure: str | None = None
            for r in rows:
                task = TaskRow(*r[:11])
                params = [json.loads(p) for p in r[11]]
                ok, message = await self._run_task(conn, run_id, chain_id, task, params, txid, deadline, stop)
                if not ok and not task.ignore_error:
                    failure = message
                    break
                if not ok:
                    self.writer.message("INFO", "Ignoring task failure", {"chain": chain_id, "task": task.task_id})
            if failure is not None:
                await conn.execute("ROLLBACK")
                in_tx = False
                return RunOutcome("failed", failure), txid
            try:
                await conn.execute("COMMIT")
                in_tx = False
            except psycopg.Error as exc:
                in_tx = False
                return RunOutcome("failed", f"commit failed: {redact(str(exc).strip())}"), txid
            return RunOutcome("succeeded"), txid
        except Interrupted as exc:
            return RunOutcome("failed", str(exc)), txid
        finally:
            if in_tx and not conn.closed and not conn.broken:
                try:
                    await conn.execute("ROLLBACK")
                except psycopg.Error:
                    pass

    async def _run_task(self, conn, run_id, chain_id, task: TaskRow, params: list, txid: int,
                        chain_deadline: float | None, stop: asyncio.Event) -> tuple[bool, str | None]:
        kind = get_kind(task.kind)
        ctx = TaskContext(task=task, chain_id=chain_id, run_id=run_id, client_name=self.options.client_name,
                          settings=self.settings, chain_conn=conn, log=self.log, options=self.options,
                          extra={"writer": self.writer})  # the Log builtin writes timetable.log (tasks engineer)
        local = kind is not None and kind.in_chain_transaction(task)
        savepoint = local and task.ignore_error
        task_deadline = self._deadline(task.timeout or self.options.task_timeout_ms)
        deadline = min((d for d in (task_deadline, chain_deadline) if d is not None), default=None)
        ok, first_error = True, None
        if savepoint:
            await conn.execute(f"SAVEPOINT task_{int(task.task_id)}")
        for param in (params or [None]):
            started = _now()
            try:
                if kind is None:
                    raise TaskFailed(f"unknown task kind {task.kind!r}")
                if not conn.broken:
                    await set_session_settings(conn, chain_id, task.task_id, self.options.client_name)
                result = await self._bounded(kind.run(ctx, param), lambda: ctx.cancel_conn or conn,
                                             deadline, stop, "task" if deadline == task_deadline else "chain")
                if not isinstance(result, TaskResult):
                    result = TaskResult(0, None if result is None else str(result))
            except TaskFailed as exc:
                result = TaskResult(exc.returncode if exc.returncode != 0 else -1, exc.output or "failed")
            except Interrupted as exc:
                result = TaskResult(-1, str(exc))
                await self._log_execution(chain_id, task, txid, started, result, param)
                ok, first_error = False, first_error or str(exc)
                if savepoint and not conn.broken:
                    await conn.execute(f"ROLLBACK TO SAVEPOINT task_{int(task.task_id)}")
                if stop.is_set() or deadline != task_deadline or not task.ignore_error:
                    raise
                return False, first_error
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # noqa: BLE001 - a kind's bug fails the task, not the engine
                result = TaskResult(-1, f"{type(exc).__name__}: {exc}")
            await self._log_execution(chain_id, task, txid, started, result, param)
            if result.returncode != 0:
                ok = False
                first_error = first_error or f"task {task.task_id} ({task.task_name or task.kind}) failed: " \
                                             f"{result.output}"
        if savepoint:
            if ok:
                await conn.execute(f"RELEASE SAVEPOINT task_{int(task.task_id)}")
            else:
                await conn.execute(f"ROLLBACK TO SAVEPOINT task_{int(task.task_id)}")
        return ok, first_error

    async def _log_execution(self, chain_id: int, task: TaskRow, txid: int, started: datetime,
                             result: TaskResult, param: Any) -> None:
        failed = result.returncode != 0
        if not self.writer.wants_execution(failed, task.ignore_error):
            return
        await self.writer.execution(ExecutionEntry(
            chain_id=chain_id, task_id=task.task_id, txid=txid, last_run=started, finished=_now(),
            returncode=result.returncode, ignore_error=task.ignore_error, kind=task.kind, command=task.command,
            output=result.output or None, params=None if param is None else json.dumps(param)))

    async def _on_error(self, conn: psycopg.AsyncConnection, chain_id: int, on_error: str) -> None:
        """on_error SQL in a fresh transaction, committed; never cut short by STOP/timeouts."""
        if conn.closed or conn.broken:
            self.writer.message("ERROR", "on_error not run: the connection is gone", {"chain": chain_id})
            return
        try:
            async with conn.transaction():
                await set_session_settings(conn, chain_id, 0, self.options.client_name)
                await conn.execute(on_error)
            self.writer.message("INFO", "on_error handler ran", {"chain": chain_id})
        except psycopg.Error as exc:
            self.writer.message("ERROR", f"on_error handler failed: {redact(str(exc).strip())}", {"chain": chain_id})
