"""Runs one claimed chain the way pg_timetable does, in as few round trips as we can.

Semantics (pg_timetable's, see reference §3.2):

1. the max_instances slot is taken cluster-wide before the chain transaction, so other
   engines count it: for scheduled runs by the claim itself (``timetable.claim_due`` inserts
   the run as 'running', or records it as skipped), for ad-hoc runs by ``timetable.start_run``
   on the worker's connection;
2. BEGIN; the chain transaction's id (``txid_current()``) becomes ``txid``; a transaction-level advisory
   lock, exclusive for ``exclusive_execution`` chains and shared for all others, makes
   exclusivity hold across every engine on the database;
3. the live tasks in ``task_order``; each task once per non-NULL parameter row, with the
   ``pg_timetable.current_*`` settings set, ``run_as`` as a quoted ``SET ROLE``, a savepoint
   for local ``ignore_error`` tasks, task and chain timeouts (milliseconds; row value, else
   the CLI default; 0 = none) and STOP; one execution_log row per execution;
4. a failure of a task without ignore_error: ROLLBACK, then ``on_error`` in a fresh
   transaction; otherwise COMMIT, then ``self_destruct`` deletes the chain;
5. the run's result and real start (and, for @after chains, the next due time) are
   recorded: for a success by the log writer right after COMMIT, many runs per statement
   (``timetable.close_runs``: the chain transaction's own execution_log rows, which carry
   the run id, tell the reaper the outcome if the engine dies in between); for a failure at
   once on the run's connection after the ROLLBACK (``timetable.finish_run``).

How it stays cheap (bench/bench_timetable.py): every chain run happens on the worker's own
connection (no pool checkout), and the statements of one step go to the server as ONE
simple-protocol query string (simple protocol: a task's command may hold several
statements, as with pg_timetable; so the values around it are composed as quoted literals
with ``psycopg.sql.Literal``, never pasted).  For a one-task SQL chain that is two round trips:

* ``BEGIN; SELECT <lock>, <txid>, set_config(..) ..; <task command>``
* ``RESET ..; INSERT INTO timetable.execution_log .. VALUES (..); COMMIT``

The execution_log rows of tasks run on the chain connection (local SQL tasks) are written
in the chain transaction, at the next step, so later tasks of the run see them.  If the
chain fails they are written again right after the ROLLBACK (with the run's result), so a
failed run keeps its rows.  Tasks that run elsewhere (autonomous / remote SQL, PROGRAM,
BUILTIN) keep their rows going through the log writer at once, as before.  Timeouts and
STOP cancel the statement in progress with a cancel request (a timer, no extra task).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import pq, sql

from engine.clock import Clock
from engine.db import ConnSettings, aconnect, redact
from engine.schedules import ScheduleError, parse_schedule
from engine.timetable.dblog import DbWriter, ExecutionEntry, RunEnd
from engine.timetable.options import TimetableOptions
from engine.timetable.tasks import (TaskContext, TaskFailed, TaskResult, TaskRow, enforces_task_timeout,
                                    get_kind)
from engine.timetable.tasks.sql import bind_values, set_session_settings

_parse = functools.lru_cache(maxsize=4096)(parse_schedule)  # schedules are immutable values

#: pg_advisory_xact_lock key for exclusive_execution (shared by every other chain run)
EXCLUSIVE_LOCK_KEY = 0x70677474_00000101

#: the chains (by id) and their live tasks in task order, each with its parameter rows and
#: its whole connection string (a password lives in timetable_secret, sql/timetable/0007);
#: one primary-key probe per id (LATERAL ... LIMIT 1 keeps the planner from turning a big
#: batch into a scan of all chains): cost grows with the chains claimed, not defined
DEFS_SQL = """
SELECT c.chain_id, c.chain_name, c.run_at, coalesce(c.timeout, 0), coalesce(c.exclusive_execution, false),
       coalesce(c.self_destruct, false), c.on_error,
       coalesce((SELECT json_agg(json_build_array(
                     t.task_id, t.task_order, t.task_name, t.kind, t.command, t.run_as,
                     coalesce((SELECT s.database_connection FROM timetable_secret.task_connection s
                                WHERE s.task_id = t.task_id), t.database_connection),
                     t.ignore_error, t.autonomous, coalesce(t.timeout, 0),
                     (SELECT coalesce(json_agg(p.value ORDER BY p.order_id), '[]'::json)
                        FROM timetable.parameter p
                       WHERE p.task_id = t.task_id AND p.value IS NOT NULL AND p.value <> 'null'::jsonb))
                   ORDER BY t.task_order, t.task_id)
                   FROM timetable.task t WHERE t.chain_id = c.chain_id AND t.live), '[]'::json)
FROM unnest(%s::bigint[]) AS i(chain_id)
CROSS JOIN LATERAL (SELECT * FROM timetable.chain x WHERE x.chain_id = i.chain_id LIMIT 1) AS c
"""
#: the chain transaction's id, as txid_current() inside the chain sees it (pg_timetable
#: records the virtual xid from pg_locks instead, which costs more than a trivial chain run
#: and repeats across sessions; see README "Deliberate differences")
TXID = "txid_current()"
#: an ad-hoc run ('claimed' row): running, skipped (max_instances) or gone
START_SLOW = "SELECT timetable.start_run(%s, %s, %s)"
LOG_AND_FINISH = "SELECT timetable._log_executions(%s, %s, %s), timetable.finish_run(%s, %s, %s, %s, %s, %s)"
#: the execution_log columns of the rows the executor writes (pid = the engine's session)
LOG_COLUMNS = ("chain_id, task_id, txid, last_run, finished, pid, returncode, ignore_error, kind, command, output, "
               "params, run_id, client_name")
#: how long a task kind that enforces the task timeout itself (PROGRAM, BUILTIN) gets after
#: the deadline to hand back its own result (exit status 137 and the partial output of a
#: killed program) before the executor cancels it and records "task timed out"
SELF_TIMEOUT_GRACE_S = 3.0
#: what a task may leave behind on the worker's connection (RESET ALL leaves the role and
#: the session authorization alone)
RESET = ("RESET SESSION AUTHORIZATION", "RESET ROLE", "RESET ALL", "DISCARD TEMP", "UNLISTEN *",
         "SELECT pg_advisory_unlock_all()")
STOPPED = "stopped by notify_chain_stop"


class Interrupted(Exception):
    """A timeout or STOP ended the current step."""


class _StepFailed(Exception):
    """A statement the engine added around a task failed (lock, savepoint, COMMIT ...)."""


@dataclass
class RunOutcome:
    status: str  # succeeded | failed | skipped | gone
    reason: str | None = None


@dataclass
class ChainDef:
    chain_id: int
    name: str
    run_at: str | None
    timeout: int
    exclusive: bool
    self_destruct: bool
    on_error: str | None
    tasks: list[tuple[TaskRow, list]]


def parse_defs(rows) -> dict[int, ChainDef]:
    out: dict[int, ChainDef] = {}
    for chain_id, name, run_at, timeout, exclusive, self_destruct, on_error, tasks in rows:
        parsed = []
        for t in tasks or []:
            parsed.append((TaskRow(t[0], chain_id, float(t[1]), t[2], t[3], t[4], t[5], t[6], bool(t[7]),
                                   bool(t[8]), int(t[9] or 0)), list(t[10] or [])))
        out[chain_id] = ChainDef(chain_id, name, run_at, int(timeout or 0), bool(exclusive), bool(self_destruct),
                                 on_error, parsed)
    return out


def _now() -> datetime:
    return datetime.now(timezone.utc)


class _ResultsCursor(psycopg.AsyncCursor):
    """Keeps every result of a multi-statement simple query, the failed one included, so
    that we know which statement failed and what came before it."""

    results: list = []

    def _check_results(self, results) -> None:  # psycopg hook: called with all results
        self.results = results
        super()._check_results(results)


@dataclass
class _Run:
    """State of one run on the fast path."""

    handle: Any                      # scheduler.RunHandle
    conn: psycopg.AsyncConnection
    d: ChainDef
    prefix: list[str] = field(default_factory=list)   # statements to send before the next one
    lock_at: int = -1                # index of the lock/txid statement in prefix
    txid: int = 0
    pending: list[list] = field(default_factory=list)  # execution_log rows not yet sent
    in_tx_rows: list[list] = field(default_factory=list)  # rows written inside the chain transaction
    started_ts: datetime | None = None
    failed_at: int = -1              # index of the statement that failed in the last step
    reason: str | None = None        # set by a timeout or STOP
    busy: bool = False               # a bounded statement is in progress
    cancel: asyncio.Future | None = None


class ChainExecutor:
    def __init__(self, settings: ConnSettings, options: TimetableOptions, clock: Clock, session_id: int,
                 writer: DbWriter, log: logging.Logger):
        self.settings = settings
        self.options = options
        self.clock = clock
        self.session_id = session_id
        self.writer = writer
        self.log = log
        self._client_lit: str | None = None
        #: why runs still in progress are being cancelled, when it is not a plain engine stop
        #: (set by the scheduler before it cancels them, e.g. "database connection lost: …")
        self.abort_reason: str | None = None

    # --- literals ----------------------------------------------------------------------
    # Statements around a task go in one simple-protocol query (the task's command may hold
    # several statements), so values are quoted literals here, never pasted text: ints are
    # formatted as ints, timestamps as ISO text (digits, '-', ':', '.', '+', 'T' only), and
    # text is quoted by psycopg (or, with standard_conforming_strings on, by doubling quotes,
    # which is all that setting needs; NUL cannot occur in json.dumps output or is refused).

    @staticmethod
    def _lit(value: Any, conn) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, str) and "\x00" not in value and \
                conn.pgconn.parameter_status(b"standard_conforming_strings") == b"on":
            return "'" + value.replace("'", "''") + "'"
        return sql.Literal(value).as_string(conn)

    @staticmethod
    def _ts(value: datetime | None) -> str:
        if value is None:
            return "NULL::timestamptz"
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return f"'{value.isoformat()}'::timestamptz"

    def _client(self, conn) -> str:
        if self._client_lit is None:
            self._client_lit = self._lit(self.options.client_name, conn)
        return self._client_lit

    def _settings_exprs(self, r: _Run, task_id: int) -> str:
        c = r.d.chain_id
        return (f"set_config('pg_timetable.current_chain_id', '{int(c)}', false), "
                f"set_config('pg_timetable.current_task_id', '{int(task_id)}', false), "
                f"set_config('pg_timetable.current_client_name', {self._client(r.conn)}, false)")

    def _log_stmt(self, r: _Run, rows: list[list]) -> str:
        return (f"timetable._log_executions({int(self.session_id)}, {self._client(r.conn)}, "
                f"{self._lit(json.dumps(rows), r.conn)}::json)")

    # --- timeouts and STOP ---------------------------------------------------------------

    def interrupt(self, r: _Run | None, reason: str) -> None:
        """Cancel the statement in progress on the run's connection (STOP, timeouts)."""
        if r is None:
            return
        if r.reason is None:
            r.reason = reason
        if r.busy and r.cancel is None and not r.conn.closed:
            r.cancel = asyncio.ensure_future(self._cancel(r.conn))

    @staticmethod
    async def _cancel(conn: psycopg.AsyncConnection) -> None:
        try:
            await conn.cancel_safe(timeout=5.0)
        except Exception:  # noqa: BLE001 - best effort
            pass

    async def _bounded(self, coro, cancel_conn_of, deadline: float | None, stop: asyncio.Event | None,
                       what: str) -> Any:
        """Run a task kind's coroutine under a deadline and STOP (kinds that do not run on the
        chain connection: PROGRAM, BUILTIN, autonomous and remote SQL)."""
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
        reason = STOPPED if stop is not None and stop.is_set() else f"{what} timed out"
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

    # --- sending one step ----------------------------------------------------------------

    async def _send(self, r: _Run, extra: list[str], command: str | None = None, *,
                    deadline: float | None = None, what: str = "chain", bounded: bool = True) -> str | None:
        """Send r.prefix (+ pending log rows) + extra (+ command) as one query.  Returns the
        command's tag.  Raises Interrupted, _StepFailed (a statement of ours
        failed), or the command's psycopg.Error."""
        stmts = r.prefix
        log_at = -1
        if r.pending:
            stmts = stmts + [f"SELECT {self._log_stmt(r, r.pending)}"]
            log_at = len(stmts) - 1
        stmts = stmts + extra
        n_ours = len(stmts)
        lock_at = r.lock_at
        r.prefix, r.lock_at = [], -1
        sent_rows = r.pending if log_at >= 0 else []
        if log_at >= 0:
            r.pending = []
        text = ";\n".join(stmts + ([command] if command is not None else []))
        if bounded and r.handle.stop.is_set():
            r.reason = r.reason or STOPPED
        if bounded and r.reason is not None:
            r.pending = sent_rows + r.pending
            raise Interrupted(r.reason)
        cur = _ResultsCursor(r.conn)
        cur.results = []
        timer = None
        if bounded:
            r.busy = True
            if deadline is not None:
                timer = asyncio.get_running_loop().call_at(deadline, self.interrupt, r, f"{what} timed out")
        error: psycopg.Error | None = None
        try:
            await cur.execute(text, prepare=False)
        except psycopg.Error as exc:
            error = exc
        finally:
            r.busy = False
            if timer is not None:
                timer.cancel()
        if r.cancel is not None:
            await asyncio.gather(r.cancel, return_exceptions=True)
            r.cancel = None
        results = cur.results
        failed_at = len(results) - 1 if error is not None else len(results)
        if not results and error is not None:
            failed_at = 0  # nothing came back (connection lost)
        r.failed_at = failed_at if error is not None else -1
        if lock_at >= 0 and failed_at > lock_at:
            try:
                r.txid = int(results[lock_at].get_value(0, 1) or 0)
            except (IndexError, ValueError, TypeError):
                r.txid = 0
        if log_at >= 0:
            if failed_at > log_at:
                r.in_tx_rows.extend(sent_rows)
            else:
                r.pending = sent_rows + r.pending
        if r.reason is not None and bounded:
            raise Interrupted(r.reason)
        if error is not None:
            if failed_at < n_ours:
                raise _StepFailed(_message(error))
            raise error
        if command is None:
            return None
        tag = None
        for res in reversed(results[n_ours:]):
            if res.command_status:
                tag = res.command_status.decode("utf-8", "replace")
                break
        return tag

    # --- one run -------------------------------------------------------------------------

    async def execute(self, handle, conn: psycopg.AsyncConnection, backend_start: datetime | None) -> RunOutcome:
        """Run a claimed run on the worker's connection ``conn`` (autocommit, idle), whose
        backend started at ``backend_start`` (ad-hoc runs record it for dead-session detection)."""
        handle.backend_start = backend_start
        d: ChainDef | None = handle.definition
        if not handle.started:
            # ad-hoc runs: take the max_instances slot now, then read the definition
            state = await self._start_slow(handle, conn)
            if isinstance(state, RunOutcome):
                return state
            handle.started = True
            rows = await (await conn.execute(DEFS_SQL, ([handle.chain_id],))).fetchall()
            d = parse_defs(rows).get(handle.chain_id)
        if d is None:  # deleted after the claim
            outcome = RunOutcome("failed", "chain was deleted")
            await self._finish_elsewhere(_Run(handle, conn, ChainDef(handle.chain_id, "", None, 0, False, False,
                                                                    None, [])), outcome)
            return outcome
        handle.definition = d
        return await self._execute(handle, conn, d)

    async def _execute(self, handle, conn: psycopg.AsyncConnection, d: ChainDef) -> RunOutcome:
        r = _Run(handle, conn, d, started_ts=self.clock.now())
        handle.run_state = r
        outcome = RunOutcome("failed", "engine error")
        try:
            lock = "pg_advisory_xact_lock" if d.exclusive else "pg_advisory_xact_lock_shared"
            r.prefix = ["BEGIN", f"SELECT {lock}({EXCLUSIVE_LOCK_KEY}), {TXID}"]
            r.lock_at = 1
            chain_deadline = self._deadline(d.timeout or self.options.chain_timeout_ms)
            # BEGIN and the lock go with the first task unless a lock wait must be bounded by
            # the chain timeout on its own
            fuse = chain_deadline is None and not d.exclusive and bool(d.tasks) and self._local(d.tasks[0][0])
            self.writer.message("INFO", "Starting chain", {"chain": d.chain_id, "name": d.name,
                                                           "run": handle.run_id})
            try:
                if not fuse:
                    await self._send(r, [], deadline=chain_deadline, what="chain")
                outcome = await self._run_tasks(r, chain_deadline)
            except psycopg.OperationalError as exc:
                outcome = RunOutcome("failed", f"database connection lost: {redact(str(exc).strip())}")
            if outcome.status == "succeeded":
                outcome = await self._commit(r)
            if outcome.status == "failed":
                await self._fail(r, outcome)
            return outcome
        except asyncio.CancelledError:
            # the engine stops this run: because its connection to the database was lost
            # (the scheduler says so: abort_reason), or for a plain stop
            reason = self.abort_reason or "engine stopped while the chain was running"
            if r.conn.broken and not self.abort_reason:
                reason = "database connection lost"
            outcome = RunOutcome("failed", reason)
            await asyncio.shield(self._finish_elsewhere(r, outcome))
            raise
        except psycopg.Error as exc:
            outcome = RunOutcome("failed", f"database error: {redact(str(exc).strip())}")
            await asyncio.shield(self._finish_elsewhere(r, outcome))
            return outcome
        finally:
            if handle.run_state is r:
                handle.run_state = None

    async def _start_slow(self, handle, conn) -> str | RunOutcome:
        """timetable.start_run: records a skip (max_instances) or a vanished run."""
        args = (handle.run_id, self.clock.now(), self.options.default_max_instances)
        state = (await (await conn.execute(START_SLOW, args)).fetchone())[0]
        if state == "skipped":
            self.writer.message("INFO", "Cannot proceed: max_instances reached; run skipped",
                                {"chain": handle.chain_id, "run": handle.run_id})
            return RunOutcome("skipped", "max_instances reached")
        if state != "running":
            return RunOutcome("gone", "run no longer claimed")
        return state

    @staticmethod
    def _local(task: TaskRow) -> bool:
        return task.kind.upper() == "SQL" and not task.autonomous and not task.database_connection

    async def _run_tasks(self, r: _Run, chain_deadline: float | None) -> RunOutcome:
        if not r.d.tasks and r.prefix:
            try:
                await self._send(r, [], deadline=chain_deadline, what="chain")
            except (Interrupted, _StepFailed) as exc:
                return RunOutcome("failed", str(exc))
        for task, params in r.d.tasks:
            try:
                if self._local(task):
                    ok, message = await self._local_task(r, task, params, chain_deadline)
                else:
                    if r.prefix:  # the start and BEGIN must have happened before anything runs elsewhere
                        await self._send(r, [], deadline=chain_deadline, what="chain")
                    ok, message = await self._other_task(r, task, params, chain_deadline)
            except Interrupted as exc:
                return RunOutcome("failed", str(exc))
            except _StepFailed as exc:
                return RunOutcome("failed", str(exc))
            if not ok and not task.ignore_error:
                return RunOutcome("failed", message)
            if not ok:
                self.writer.message("INFO", "Ignoring task failure", {"chain": r.d.chain_id, "task": task.task_id})
        return RunOutcome("succeeded")

    def _row(self, r: _Run, task: TaskRow, started: datetime, result: TaskResult, param: Any) -> None:
        if not self.writer.wants_execution(result.returncode != 0, task.ignore_error):
            return
        output = result.output or None
        if output is not None and "\x00" in output:
            output = output.replace("\x00", "")
        r.pending.append([r.d.chain_id, task.task_id, r.txid, started.isoformat(), _now().isoformat(),
                          result.returncode, task.ignore_error, task.kind, task.command, output,
                          None if param is None else json.dumps(param), r.handle.run_id])

    async def _local_task(self, r: _Run, task: TaskRow, params: list, chain_deadline: float | None
                          ) -> tuple[bool, str | None]:
        """An SQL task in the chain transaction, on the chain connection."""
        task_deadline = self._deadline(task.timeout or self.options.task_timeout_ms)
        deadline = min((d for d in (task_deadline, chain_deadline) if d is not None), default=None)
        what = "task" if deadline is not None and deadline == task_deadline else "chain"
        savepoint = f"task_{int(task.task_id)}"
        extra = []
        if task.ignore_error:
            extra.append(f"SAVEPOINT {savepoint}")
        if task.run_as:
            extra.append(sql.SQL("SET ROLE {}").format(sql.Identifier(task.run_as)).as_string(r.conn))
        if r.lock_at >= 0 and not task.run_as and not task.ignore_error:
            # the first step of a run: the settings go with the lock / txid statement
            r.prefix[r.lock_at] += ", " + self._settings_exprs(r, task.task_id)
        else:
            extra.append("SELECT " + self._settings_exprs(r, task.task_id))
        ok, first_error = True, None
        notices: list[str] = []

        def on_notice(diag) -> None:
            notices.append(diag.message_primary or "")
            self.log.info("notice from task %s of chain %s: %s", task.task_id, r.d.chain_id, diag.message_primary)

        r.conn.add_notice_handler(on_notice)
        try:
            rows = params or [None]
            if not params:
                started = _now()
                try:
                    tag = await self._send(r, extra, task.command, deadline=deadline, what=what)
                    result = TaskResult(0, tag)
                except psycopg.Error as exc:
                    result = TaskResult(-1, _message(exc))
                except Interrupted as exc:
                    return self._interrupted(r, task, started, exc, None, deadline, task_deadline, savepoint)
                self._row(r, task, started, result, None)
                if result.returncode != 0:
                    ok, first_error = False, self._failure(task, result)
            else:
                await self._send(r, extra, deadline=chain_deadline, what="chain")
                for param in rows:
                    started = _now()
                    try:
                        values = bind_values(param, task)
                        tag = await self._execute_params(r, task.command, values, deadline, what)
                        result = TaskResult(0, tag)
                    except TaskFailed as exc:
                        result = TaskResult(-1, exc.output or "failed")
                    except psycopg.OperationalError:
                        raise
                    except psycopg.Error as exc:
                        result = TaskResult(-1, _message(exc))
                    except Interrupted as exc:
                        return self._interrupted(r, task, started, exc, param, deadline, task_deadline, savepoint)
                    self._row(r, task, started, result, param)
                    if result.returncode != 0:
                        ok, first_error = False, first_error or self._failure(task, result)
        finally:
            r.conn.remove_notice_handler(on_notice)
        if task.ignore_error:
            r.prefix.append(f"RELEASE SAVEPOINT {savepoint}" if ok else f"ROLLBACK TO SAVEPOINT {savepoint}")
        if task.run_as and (ok or task.ignore_error):
            r.prefix.append("RESET ROLE")
        return ok, first_error

    @staticmethod
    def _failure(task: TaskRow, result: TaskResult) -> str:
        return f"task {task.task_id} ({task.task_name or task.kind}) failed: {result.output}"

    def _interrupted(self, r: _Run, task: TaskRow, started: datetime, exc: Interrupted, param: Any,
                     deadline: float | None, task_deadline: float | None, savepoint: str) -> tuple[bool, str]:
        self._row(r, task, started, TaskResult(-1, str(exc)), param)
        if r.handle.stop.is_set() or deadline != task_deadline or not task.ignore_error:
            raise exc
        # a task timeout of an ignore_error task: undo the task, go on with the next one
        r.reason = None
        r.prefix.append(f"ROLLBACK TO SAVEPOINT {savepoint}")
        if task.run_as:
            r.prefix.append("RESET ROLE")
        return False, str(exc)

    async def _execute_params(self, r: _Run, command: str, values, deadline: float | None, what: str) -> str | None:
        if r.handle.stop.is_set():
            r.reason = r.reason or STOPPED
        if r.reason is not None:
            raise Interrupted(r.reason)
        r.busy = True
        timer = None
        if deadline is not None:
            timer = asyncio.get_running_loop().call_at(deadline, self.interrupt, r, f"{what} timed out")
        error = None
        try:
            cur = psycopg.AsyncRawCursor(r.conn)
            await cur.execute(command, values)
            tag = cur.statusmessage
        except psycopg.Error as exc:
            error = exc
        finally:
            r.busy = False
            if timer is not None:
                timer.cancel()
        if r.cancel is not None:
            await asyncio.gather(r.cancel, return_exceptions=True)
            r.cancel = None
        if r.reason is not None:
            raise Interrupted(r.reason)
        if error is not None:
            raise error
        return tag

    async def _other_task(self, r: _Run, task: TaskRow, params: list, chain_deadline: float | None
                          ) -> tuple[bool, str | None]:
        """PROGRAM, BUILTIN, autonomous and remote SQL: not on the chain connection."""
        kind = get_kind(task.kind)
        ctx = TaskContext(task=task, chain_id=r.d.chain_id, run_id=r.handle.run_id,
                          client_name=self.options.client_name, settings=self.settings, chain_conn=r.conn,
                          log=self.log, options=self.options,
                          extra={"writer": self.writer})  # the Log builtin writes timetable.log (tasks engineer)
        task_deadline = self._deadline(task.timeout or self.options.task_timeout_ms)
        deadline = min((d for d in (task_deadline, chain_deadline) if d is not None), default=None)
        stop = r.handle.stop
        ok, first_error = True, None
        loop = asyncio.get_running_loop()
        # a kind that enforces the task timeout itself (PROGRAM kills the process group at it)
        # gets a grace period after it to hand back its own result, which is what we record
        self_timed = kind is not None and task_deadline is not None and enforces_task_timeout(kind, task)
        for param in (params or [None]):
            started = _now()
            try:
                if kind is None:
                    raise TaskFailed(f"unknown task kind {task.kind!r}")
                if stop.is_set():
                    raise Interrupted(STOPPED)
                bound, what = deadline, "task" if deadline == task_deadline else "chain"
                if self_timed and deadline == task_deadline:
                    bound = task_deadline + SELF_TIMEOUT_GRACE_S
                    if chain_deadline is not None and chain_deadline < bound:
                        bound, what = chain_deadline, "chain"
                result = await self._bounded(kind.run(ctx, param), lambda: ctx.cancel_conn, bound, stop, what)
                if not isinstance(result, TaskResult):
                    result = TaskResult(0, None if result is None else str(result))
            except TaskFailed as exc:
                result = TaskResult(exc.returncode if exc.returncode != 0 else -1, exc.output or "failed")
            except Interrupted as exc:
                await self._log_elsewhere(r, task, started, TaskResult(-1, str(exc)), param)
                ok, first_error = False, first_error or str(exc)
                if stop.is_set() or deadline != task_deadline or not task.ignore_error:
                    raise
                return False, first_error
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # noqa: BLE001 - a kind's bug fails the task, not the engine
                result = TaskResult(-1, f"{type(exc).__name__}: {exc}")
            await self._log_elsewhere(r, task, started, result, param)
            if result.returncode != 0:
                ok = False
                if self_timed and loop.time() >= task_deadline:
                    first_error = first_error or (f"task {task.task_id} ({task.task_name or task.kind}) timed out "
                                                  f"(returncode {result.returncode})")
                first_error = first_error or self._failure(task, result)
        return ok, first_error

    async def _log_elsewhere(self, r: _Run, task: TaskRow, started: datetime, result: TaskResult,
                             param: Any) -> None:
        """Rows of tasks that ran outside the chain transaction: through the log writer, at once."""
        failed = result.returncode != 0
        if not self.writer.wants_execution(failed, task.ignore_error):
            return
        await self.writer.execution(ExecutionEntry(
            chain_id=r.d.chain_id, task_id=task.task_id, txid=r.txid, last_run=started, finished=_now(),
            returncode=result.returncode, ignore_error=task.ignore_error, kind=task.kind, command=task.command,
            output=result.output or None, params=None if param is None else json.dumps(param),
            run_id=r.handle.run_id))

    # --- the end of a run ----------------------------------------------------------------

    def _next_due(self, r: _Run, finished: datetime) -> datetime | None:
        try:
            sched = _parse(r.d.run_at) if r.d.run_at and r.d.run_at.lstrip()[:1] == "@" else None
            if sched is not None and sched.kind == "after":
                return sched.next_after(finished)
        except ScheduleError:
            pass
        return None

    def _insert_rows_stmt(self, r: _Run, rows: list[list]) -> str:
        """A plain INSERT of execution_log rows (only after RESET: a role a task set could not
        write them; mid-chain they go through the SECURITY DEFINER _log_executions)."""
        conn, lit = r.conn, self._lit
        session, client = int(self.session_id), self._client(conn)
        values = ",\n".join(
            f"({int(c)}, {int(t)}, {int(x)}, {lit(started, conn)}::timestamptz, {lit(finished, conn)}::timestamptz, "
            f"{session}, {int(code)}, {'true' if ignore else 'false'}, {lit(kind, conn)}, {lit(command, conn)}, "
            f"{lit(output, conn)}, {lit(params, conn)}, {int(run_id)}, {client})"
            for c, t, x, started, finished, code, ignore, kind, command, output, params, run_id in rows)
        return f"INSERT INTO timetable.execution_log ({LOG_COLUMNS}) VALUES {values}"

    def _finish_stmts(self, r: _Run, outcome: RunOutcome, log_rows: list[list]) -> list[str]:
        """A failed run's remaining execution_log rows and finish_run (after the ROLLBACK)."""
        finished = self.clock.now()
        conn = r.conn
        close = (f"SELECT timetable.finish_run({int(r.handle.run_id)}, {self._lit(outcome.status, conn)}, "
                 f"{self._lit(outcome.reason, conn)}::text, {self._ts(finished)}, "
                 f"{int(r.txid) if r.txid else 'NULL'}::bigint, {self._ts(self._next_due(r, finished))}, "
                 f"{self._ts(r.started_ts)})")
        return ([self._insert_rows_stmt(r, log_rows)] if log_rows else []) + [close]

    async def _commit(self, r: _Run) -> RunOutcome:
        """Success: the rows and COMMIT in one step; the run's end goes to the log writer
        (close_runs, batched); then self_destruct."""
        outcome = RunOutcome("succeeded")
        rows, r.pending = r.pending, []
        after = [f"DELETE FROM timetable.chain WHERE chain_id = {int(r.d.chain_id)}"] if r.d.self_destruct else []
        stmts = [*RESET, *([self._insert_rows_stmt(r, rows)] if rows else []), "COMMIT"]
        commit_at = len(r.prefix) + len(stmts) - 1
        try:
            await self._send(r, stmts + after, bounded=False)
        except (_StepFailed, psycopg.Error) as exc:
            if r.failed_at > commit_at and not r.conn.broken:
                # only the self_destruct DELETE failed: the run succeeded
                self._ended(r, outcome)
                self.writer.message("ERROR", f"self_destruct failed: {exc}", {"chain": r.d.chain_id})
                return outcome
            r.pending = r.in_tx_rows + rows + r.pending
            r.in_tx_rows = []
            return RunOutcome("failed", f"commit failed: {exc}")
        self._ended(r, outcome)
        if r.d.self_destruct:
            self.writer.message("INFO", "Chain deleted after a successful run (self_destruct)",
                                {"chain": r.d.chain_id})
        self.writer.message("INFO", "Chain succeeded", {"chain": r.d.chain_id, "run": r.handle.run_id,
                                                        "reason": None})
        return outcome

    def _ended(self, r: _Run, outcome: RunOutcome) -> None:
        finished = self.clock.now()
        self.writer.run_ended(RunEnd(r.handle.run_id, outcome.status, outcome.reason, r.started_ts, finished,
                                     r.txid or None, self._next_due(r, finished)))

    async def _fail(self, r: _Run, outcome: RunOutcome) -> None:
        """ROLLBACK, the run's execution_log rows again (they were rolled back), on_error, finish."""
        self.writer.message("ERROR", "Chain failed", {"chain": r.d.chain_id, "run": r.handle.run_id,
                                                      "reason": outcome.reason})
        conn = r.conn
        if conn.closed or conn.broken:
            await self._finish_elsewhere(r, outcome)
            return
        r.pending = r.in_tx_rows + r.pending
        r.in_tx_rows, r.prefix, r.lock_at = [], [], -1
        try:
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                r.prefix = ["ROLLBACK"]  # before anything else (the log rows come right after it)
            if r.d.on_error:
                # the rows first, so that on_error can read them
                if r.pending or r.prefix:
                    await self._send(r, [], bounded=False)
                    r.in_tx_rows = []  # committed on their own after the ROLLBACK
                await self._on_error(conn, r.d.chain_id, r.d.on_error)
            rows, r.pending = r.pending, []
            try:
                await self._send(r, [*RESET, *self._finish_stmts(r, outcome, rows)], bounded=False)
            except BaseException:
                r.pending = rows + r.pending  # after a ROLLBACK the rest is one implicit transaction
                raise
        except (_StepFailed, psycopg.Error) as exc:
            self.log.error("cannot record the end of run %s on its connection: %s", r.handle.run_id, exc)
            await self._finish_elsewhere(r, outcome)

    async def _finish_elsewhere(self, r: _Run, outcome: RunOutcome) -> None:
        """The chain connection is unusable: record the rows and the end on a new one."""
        rows = r.in_tx_rows + r.pending
        r.in_tx_rows, r.pending = [], []
        finished = self.clock.now()
        for attempt in range(3):
            try:
                conn = await aconnect(self.settings)
                try:
                    await conn.execute(LOG_AND_FINISH, (
                        self.session_id, self.options.client_name, json.dumps(rows), r.handle.run_id, outcome.status,
                        outcome.reason, finished, r.txid or None, self._next_due(r, finished)))
                finally:
                    await conn.close()
                return
            except Exception as exc:  # noqa: BLE001 - retried, then logged; the reaper is the last resort
                self.log.error("cannot record the end of run %s (attempt %s): %s", r.handle.run_id, attempt + 1, exc)
                await asyncio.sleep(0.2 * (attempt + 1))

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


def _message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None and diag.message_primary else str(exc).strip()
    code = f" (SQLSTATE {diag.sqlstate})" if diag is not None and diag.sqlstate else ""
    return redact((primary or type(exc).__name__) + code)
