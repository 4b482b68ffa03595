"""SQL tasks: local (in the chain transaction), autonomous (own connection, autocommit) or
remote (``database_connection``, autocommit), as pg_timetable runs them.

Parameters: each row must be a JSON array; its elements are bound to ``$1..$n``.  Without
parameter rows the command is sent with the simple protocol, so several statements
separated by ``;`` work.  Output is the command tag of the last statement.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from engine.db import ConnSettings, aconnect, redact
from engine.timetable.tasks import TaskContext, TaskFailed, TaskResult, TaskRow, register_kind

SETTINGS_SQL = ("SELECT set_config('pg_timetable.current_chain_id', %s, false), "
                "set_config('pg_timetable.current_task_id', %s, false), "
                "set_config('pg_timetable.current_client_name', %s, false)")


def bind_values(params: Any, task: TaskRow) -> list[Any] | None:
    if params is None:
        return None
    if not isinstance(params, list):
        raise TaskFailed(f"parameter of SQL task {task.task_id} must be a JSON array of values for $1..$n, "
                         f"got {type(params).__name__}")
    return [Jsonb(v) if isinstance(v, (dict, list)) else v for v in params]


async def set_session_settings(conn: psycopg.AsyncConnection, chain_id: int, task_id: int, client: str) -> None:
    await conn.execute(SETTINGS_SQL, (str(chain_id), str(task_id), client))


async def execute_command(conn: psycopg.AsyncConnection, command: str, values: list[Any] | None) -> str | None:
    if values is None:
        cur = await conn.execute(command)
    else:
        cur = psycopg.AsyncRawCursor(conn)
        await cur.execute(command, values)
    tag = cur.statusmessage
    while cur.nextset():
        tag = cur.statusmessage or tag
    return tag


class SqlKind:
    def in_chain_transaction(self, task: TaskRow) -> bool:
        return not task.autonomous and not task.database_connection

    async def run(self, ctx: TaskContext, params: Any) -> TaskResult:
        task = ctx.task
        values = bind_values(params, task)
        if self.in_chain_transaction(task):
            return await self._run_on(ctx, ctx.chain_conn, values, local=True)
        if task.database_connection:
            target = ConnSettings(dsn=task.database_connection,
                                  application_name=f"pgtt-tui timetable {ctx.client_name} remote")
        else:
            target = ctx.settings.with_app(f"pgtt-tui timetable {ctx.client_name} autonomous")
        try:
            conn = await aconnect(target, autocommit=True)
        except Exception as exc:  # noqa: BLE001 - reported as the task's failure
            raise TaskFailed(f"cannot connect for {'remote' if task.database_connection else 'autonomous'} "
                             f"task: {redact(str(exc))}") from None
        try:
            ctx.cancel_conn = conn
            await set_session_settings(conn, ctx.chain_id, task.task_id, ctx.client_name)
            return await self._run_on(ctx, conn, values, local=False)
        finally:
            ctx.cancel_conn = None
            await conn.close()

    async def _run_on(self, ctx: TaskContext, conn: psycopg.AsyncConnection, values, *, local: bool) -> TaskResult:
        task = ctx.task
        notices: list[str] = []

        def on_notice(diag) -> None:
            notices.append(diag.message_primary or "")
            ctx.log.info("notice from task %s of chain %s: %s", task.task_id, ctx.chain_id, diag.message_primary)

        conn.add_notice_handler(on_notice)
        try:
            if task.run_as:
                await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(task.run_as)))
            tag = await execute_command(conn, task.command, values)
            if task.run_as:
                await conn.execute("RESET ROLE")
            return TaskResult(0, tag or None)
        except psycopg.Error as exc:
            diag = getattr(exc, "diag", None)
            message = (diag.message_primary if diag and diag.message_primary else str(exc).strip()) or type(exc).__name__
            code = f" (SQLSTATE {diag.sqlstate})" if diag and diag.sqlstate else ""
            raise TaskFailed(redact(message + code)) from None
        finally:
            conn.remove_notice_handler(on_notice)


register_kind("SQL", SqlKind())
