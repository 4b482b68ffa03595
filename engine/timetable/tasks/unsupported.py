"""Placeholders for PROGRAM and BUILTIN until their kinds are registered.

They fail every execution with a clear execution_log entry; a real implementation just
calls ``register_kind("PROGRAM", ...)`` / ``register_kind("BUILTIN", ...)`` (imported after
this module, so it wins).
"""

from __future__ import annotations

from typing import Any

from engine.timetable.tasks import TaskContext, TaskFailed, TaskResult, TaskRow, TASK_KINDS, register_kind


class NotSupportedKind:
    def __init__(self, kind: str):
        self.kind = kind

    def in_chain_transaction(self, task: TaskRow) -> bool:
        return False

    async def run(self, ctx: TaskContext, params: Any) -> TaskResult:
        raise TaskFailed(f"{self.kind} tasks are not supported yet by this pgtt-tui engine "
                         f"(task {ctx.task.task_id}: {ctx.task.command!r})")


for _kind in ("PROGRAM", "BUILTIN"):
    if _kind not in TASK_KINDS:
        register_kind(_kind, NotSupportedKind(_kind))
