"""PROGRAM and BUILTIN task kinds for the chain executor (plugs into engine.timetable.tasks).

- PROGRAM: ``command`` is the executable, each parameter row a JSON array of strings
  (argv[1:]); no shell; real exit code into ``execution_log.returncode``; stdout+stderr
  (bounded) into ``output``; the task timeout (row value, else ``--task-timeout``) kills
  the whole process group; STOP / the chain timeout cancel the run, which kills it too.
- BUILTIN: ``command`` names one of :data:`engine.timetable.builtins.BUILTINS`; the row is
  its JSON parameter. Failures are recorded with returncode -1 and the reason.

Neither runs inside the chain transaction (as pg_timetable: their effects cannot be
rolled back), so ``ignore_error`` needs no savepoint for them.

``--no-program-tasks`` (``TimetableOptions.no_program_tasks`` and the process-wide switch
in :mod:`engine.timetable.programs`) refuses PROGRAM tasks and the Copy*Program builtins.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.timetable import builtins as bt
from engine.timetable import programs
from engine.timetable.tasks import TaskContext, TaskFailed, TaskResult, TaskRow, register_kind

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "NOTICE": logging.INFO, "USER": logging.INFO,
           "ERROR": logging.ERROR, "PANIC": logging.CRITICAL}


def _allowed(ctx: TaskContext) -> bool:
    return not bool(getattr(ctx.options, "no_program_tasks", False)) and programs.programs_allowed()


def _task_timeout_ms(ctx: TaskContext) -> int | None:
    ms = ctx.task.timeout or getattr(ctx.options, "task_timeout_ms", 0) or 0
    return int(ms) if ms > 0 else None


class ProgramKind:
    def in_chain_transaction(self, task: TaskRow) -> bool:
        return False

    async def run(self, ctx: TaskContext, params: Any) -> TaskResult:
        if not _allowed(ctx):
            raise TaskFailed(str(programs.ProgramsDisabledError(f"PROGRAM task {ctx.task.task_id}")))
        try:
            argv = programs.validate_argv(ctx.task.command, params)
        except Exception as exc:  # InputError: a bad parameter row
            raise TaskFailed(f"PROGRAM task {ctx.task.task_id}: {exc}") from None
        res = await programs.run_piped(argv, timeout_ms=_task_timeout_ms(ctx),
                                       output_limit=int(ctx.extra.get("output_limit", programs.DEFAULT_OUTPUT_LIMIT)),
                                       allowed=True, what="PROGRAM task")
        if res.timed_out or res.returncode != 0:
            # the real exit status (128+N for a signal); -1 would be pg_timetable's lossy value
            raise TaskFailed(res.output or f"program exited with code {res.returncode}",
                             res.returncode if res.returncode != 0 else -1)
        return TaskResult(0, res.output or None)


def _db_log(ctx: TaskContext):
    writer = ctx.extra.get("writer") or getattr(ctx, "writer", None)

    def emit(level: str, message: str, data: dict) -> None:
        ctx.log.log(_LEVELS.get(level.upper(), logging.INFO), "%s", message)
        if writer is not None:
            writer.message(level.upper(), message, data)

    return emit


def _request_shutdown(ctx: TaskContext):
    def request() -> None:
        from engine.worker import request_engine_exit  # noqa: PLC0415 - the worker owns the process

        # as pg_timetable: cancel every chain running in this engine (not this run, which
        # ends normally), then stop; the worker exits with code 5
        if not request_engine_exit(5, f"stopped by the Shutdown builtin in chain {ctx.chain_id}",
                                   cancel_runs=True, keep_run=ctx.run_id):
            raise bt.BuiltinError("Shutdown: this engine was not started by `pgtt-tui worker`; nothing to stop")

    return request


class BuiltinKind:
    def in_chain_transaction(self, task: TaskRow) -> bool:
        return False

    async def run(self, ctx: TaskContext, params: Any) -> TaskResult:
        bctx = bt.BuiltinContext(
            connect=bt.BuiltinContext.connector(ctx.settings.with_app(f"pgtt-tui timetable {ctx.client_name} copy")),
            programs_allowed=_allowed(ctx),
            request_shutdown=_request_shutdown(ctx),
            log=_db_log(ctx),
            timeout_ms=_task_timeout_ms(ctx),
            chain_id=ctx.chain_id, task_id=ctx.task.task_id, client_name=ctx.client_name)
        res = await bt.execute_builtin(bctx, ctx.task.command, params)
        if res.returncode != 0:
            raise TaskFailed(res.output or "failed", res.returncode)
        return TaskResult(0, res.output or None)


register_kind("PROGRAM", ProgramKind())
register_kind("BUILTIN", BuiltinKind())
