"""Writes ``timetable.log`` and ``timetable.execution_log`` rows on one dedicated connection.

Entries are queued and inserted in batches (one statement per batch), outside any chain
transaction, so they survive a rollback.  ``await writer.execution(...)`` returns once the
row is stored, so "the run is finished" implies "its log rows are visible".

Since the executor's fast path (engine/timetable/executor.py), execution_log rows of SQL
tasks run in the chain transaction are written by the executor on the chain's own
connection; this writer takes the rows of tasks that run elsewhere (PROGRAM, BUILTIN,
autonomous and remote SQL) and every ``timetable.log`` message.

It also records the ends of successful runs (``run_ended``), after their chain transactions
committed, many per ``timetable.close_runs`` call and in a transaction of their own (so a
log row the server refuses cannot take them down).  Nobody waits for that: if the engine
dies first, ``reap_dead_runs`` finds the outcome in the run's committed execution_log rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg

from engine.db import UNREACHABLE_PROBE_MAX, ConnSettings, aconnect, array_literal, backoff_delays
from engine.errors import ConnectError

LEVEL_RANK = {"none": 0, "error": 1, "info": 2, "debug": 3}
TYPE_RANK = {"PANIC": 1, "ERROR": 1, "INFO": 2, "NOTICE": 2, "USER": 2, "DEBUG": 3}

INSERT_EXECUTION = """
INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, pid, returncode, ignore_error,
                                     kind, command, output, client_name, params, run_id)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::bigint[],
                     %s::int[], %s::bool[], %s::timetable.command_kind[], %s::text[], %s::text[], %s::text[], %s::text[],
                     %s::bigint[])
"""
CLOSE_RUNS = ("SELECT timetable.close_runs(%s::bigint[], %s::text[], %s::text[], %s::timestamptz[], "
              "%s::timestamptz[], %s::bigint[], %s::timestamptz[])")
#: a batch of log rows as ONE json parameter ([[ts, level, message, data], ...]): one C-level
#: json.dumps per batch instead of escaping four text arrays element by element
INSERT_LOG = """
INSERT INTO timetable.log (ts, pid, log_level, client_name, message, message_data)
SELECT (r->>0)::timestamptz, %s, (r->>1)::timetable.log_type, %s, r->>2,
       CASE WHEN json_typeof(r->3) = 'null' THEN NULL ELSE (r->3)::jsonb END
FROM json_array_elements(%s::json) AS r
"""


@dataclass
class ExecutionEntry:
    chain_id: int
    task_id: int
    txid: int
    last_run: datetime
    finished: datetime
    returncode: int
    ignore_error: bool
    kind: str
    command: str
    output: str | None
    params: str | None
    run_id: int | None = None


@dataclass
class RunEnd:
    """The end of a run whose chain transaction committed (``timetable.close_runs``)."""

    run_id: int
    status: str
    reason: str | None
    started: datetime | None
    finished: datetime
    txid: int | None
    next_due: datetime | None  # @after chains: the next firing


class DbWriter:
    def __init__(self, settings: ConnSettings, session_id: int, client_name: str, level: str,
                 log: logging.Logger):
        self.settings = settings.with_app(f"pgtt-tui timetable {client_name} log")
        self.session_id = session_id
        self.client_name = client_name
        self.level = LEVEL_RANK[level]
        self.log = log
        self._queue: asyncio.Queue[tuple[str, Any, asyncio.Future | None]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._conn: psycopg.AsyncConnection | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="timetable-log-writer")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            try:
                await self.flush()
            finally:  # also when the flush is cut short (database gone): no writer left behind
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # --- producers -------------------------------------------------------------------

    def wants_execution(self, failed: bool, ignore_error: bool) -> bool:
        if self.level >= LEVEL_RANK["info"]:
            return True
        return self.level >= LEVEL_RANK["error"] and failed and not ignore_error

    async def execution(self, entry: ExecutionEntry) -> None:
        if entry.output is not None and "\x00" in entry.output:
            entry.output = entry.output.replace("\x00", "")  # text cannot hold NUL
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(("exec", entry, fut))
        await asyncio.shield(fut)

    def run_ended(self, end: RunEnd) -> None:
        """Queue the end of a successful run (no wait; see the module docstring)."""
        self._queue.put_nowait(("end", end, None))

    def message(self, level: str, message: str, data: dict[str, Any] | None = None,
                ts: datetime | None = None) -> None:
        """Queue one timetable.log row if --log-database-level lets it through (no wait)."""
        if TYPE_RANK.get(level, 2) > self.level:
            return
        self._queue.put_nowait(("log", ((ts or datetime.now(timezone.utc)).isoformat(), level, message,
                                        data or None), None))

    async def flush(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(("flush", None, fut))
        await fut

    # --- consumer ----------------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await aconnect(self.settings)
        return self._conn

    async def _loop(self) -> None:
        delays = backoff_delays(initial=0.2, maximum=UNREACHABLE_PROBE_MAX)
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 1000:
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    await self._write(batch)
                    delays = backoff_delays(initial=0.2, maximum=UNREACHABLE_PROBE_MAX)
                    break
                except (psycopg.DataError, psycopg.errors.UntranslatableCharacter) as exc:
                    self.log.error("timetable log rows dropped (bad data): %s", exc)
                    break
                except (psycopg.Error, OSError, ConnectError) as exc:  # kept and retried, never dropped
                    self.log.warning("cannot write timetable log rows: %s; retrying", exc)
                    if self._conn is not None:
                        await self._conn.close()
                    self._conn = None
                    await asyncio.sleep(next(delays))
                except Exception as exc:  # noqa: BLE001 - never lose the futures
                    self.log.error("timetable log writer: %s", exc)
                    break
            for _, _, fut in batch:
                if fut is not None and not fut.done():
                    fut.set_result(None)

    async def _write(self, batch) -> None:
        execs = [e for kind, e, _ in batch if kind == "exec"]
        logs = [e for kind, e, _ in batch if kind == "log"]
        ends = [e for kind, e, _ in batch if kind == "end"]
        if not execs and not logs and not ends:
            return
        conn = await self._connection()
        if ends:  # idempotent: written again with the batch after an error, it changes nothing
            async with conn.transaction():
                await conn.execute(CLOSE_RUNS, tuple(array_literal(column) for column in (
                    [e.run_id for e in ends], [e.status for e in ends], [e.reason for e in ends],
                    [e.started for e in ends], [e.finished for e in ends], [e.txid for e in ends],
                    [e.next_due for e in ends])))
        if not execs and not logs:
            return
        async with conn.transaction():
            if execs:
                await conn.execute(INSERT_EXECUTION, (
                    [e.chain_id for e in execs], [e.task_id for e in execs], [e.txid for e in execs],
                    [e.last_run for e in execs], [e.finished for e in execs], [self.session_id] * len(execs),
                    [e.returncode for e in execs], [e.ignore_error for e in execs], [e.kind for e in execs],
                    [e.command for e in execs], [e.output for e in execs], [self.client_name] * len(execs),
                    [e.params for e in execs], [e.run_id for e in execs]))
            if logs:
                text = json.dumps(logs, default=str)
                if "\\u0000" in text:  # PostgreSQL's text and jsonb cannot hold NUL
                    text = json.dumps(_without_nul(logs), default=str)
                await conn.execute(INSERT_LOG, (self.session_id % 2**31, self.client_name, text))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nul(v) for v in value]
    return value
