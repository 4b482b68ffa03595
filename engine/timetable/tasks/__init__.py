"""Task kinds: a registry the executor dispatches on (``timetable.task.kind``).

The plug-in interface (for PROGRAM and BUILTIN, or anything else):

    from engine.timetable.tasks import TaskKind, TaskContext, TaskResult, TaskFailed, register_kind

    class ProgramKind:                       # any object with these two members
        def in_chain_transaction(self, task: TaskRow) -> bool: return False
        async def run(self, ctx: TaskContext, params: list | dict | str | int | float | bool | None
                      ) -> TaskResult: ...

    register_kind("PROGRAM", ProgramKind())  # replaces the "not supported yet" placeholder

Optional member ``enforces_task_timeout`` (a bool, or a method taking the TaskRow): True
when the kind stops the task itself at the task timeout and returns its own result (a
killed program's exit status 137 and partial output).  The executor then waits a short
grace period (executor.SELF_TIMEOUT_GRACE_S) after the task deadline for that result and
records it, instead of cancelling at the deadline and recording "task timed out"; the
chain timeout and STOP still cancel at once.  Without the member, the PROGRAM and BUILTIN
kinds of engine.timetable.task_kinds count as enforcing it (they pass the task timeout to
programs.run_piped / the builtins), every other kind as not.

``run`` executes the task ONCE for one parameter row (``params`` is that row's JSON value,
already decoded; ``None`` when the task has no parameter rows).  It returns a TaskResult
(returncode 0, output text) or raises ``TaskFailed(output, returncode)``; any other
exception counts as a failure with returncode -1.  The executor owns everything around
it: the loop over parameter rows, the execution_log row per execution, task/chain
timeouts and STOP (it cancels ``ctx.cancel_conn`` if set, then the asyncio task — so a
kind that starts a process must kill it on ``asyncio.CancelledError``), ignore_error
savepoints (only when ``in_chain_transaction`` is true), on_error, and the chain result.

Kinds register at import time; ``engine.timetable.tasks.sql`` registers "SQL", and
``_PLUGIN_MODULES`` lists modules imported on first lookup (add yours there).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from engine.db import ConnSettings


@dataclass(frozen=True)
class TaskRow:
    task_id: int
    chain_id: int
    task_order: float
    task_name: str | None
    kind: str
    command: str
    run_as: str | None
    database_connection: str | None
    ignore_error: bool
    autonomous: bool
    timeout: int


@dataclass
class TaskContext:
    task: TaskRow
    chain_id: int
    run_id: int
    client_name: str
    settings: ConnSettings            # the engine's own database (for autonomous work)
    chain_conn: psycopg.AsyncConnection  # in the chain transaction; do not commit it
    log: logging.Logger
    options: Any                      # engine.timetable.options.TimetableOptions
    #: a connection the task is using right now; the executor cancels its query on
    #: timeout / STOP (set it while you run a statement on your own connection)
    cancel_conn: psycopg.AsyncConnection | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskResult:
    returncode: int = 0
    output: str | None = None


class TaskFailed(Exception):
    def __init__(self, output: str, returncode: int = -1):
        super().__init__(output)
        self.output = output
        self.returncode = returncode


class TaskKind(Protocol):
    def in_chain_transaction(self, task: TaskRow) -> bool: ...

    async def run(self, ctx: TaskContext, params: Any) -> TaskResult: ...


TASK_KINDS: dict[str, TaskKind] = {}
_PLUGIN_MODULES = [
    "engine.timetable.tasks.sql",
    "engine.timetable.tasks.unsupported",
    "engine.timetable.task_kinds",  # PROGRAM and BUILTIN (timetable tasks engineer); after the placeholders
]
_loaded = False


def register_kind(kind: str, runner: TaskKind) -> None:
    """Register (or replace) the runner for a ``timetable.command_kind`` value."""
    TASK_KINDS[kind.upper()] = runner


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in _PLUGIN_MODULES:
            importlib.import_module(name)


#: kinds known to enforce the task timeout themselves when they do not say (see above)
_SELF_TIMED_KINDS = frozenset({"PROGRAM", "BUILTIN"})


def enforces_task_timeout(runner: Any, task: TaskRow) -> bool:
    """Does ``runner`` stop ``task`` at its task timeout itself and return its own result?"""
    flag = getattr(runner, "enforces_task_timeout", None)
    if flag is None:
        return type(runner).__module__ == "engine.timetable.task_kinds" and task.kind.upper() in _SELF_TIMED_KINDS
    return bool(flag(task)) if callable(flag) else bool(flag)


def get_kind(kind: str) -> TaskKind | None:
    _load()
    return TASK_KINDS.get(kind.upper())
