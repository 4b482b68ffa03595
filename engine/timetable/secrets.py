"""Secrets of timetable tasks: the one place they are masked and, on request, revealed.

- a remote task's ``database_connection`` with a password is stored whole in
  ``timetable_secret.task_connection`` (no grants: the owner's and the engine's role read
  it); ``timetable.task`` keeps it masked (sql/timetable/0008_task_secret.sql moves it, also
  for SQL written for pg_timetable). The mask is ``engine.db.redact``'s: ``password=***``,
  ``postgresql://user:***@host``.
- a SendMail task's ``password`` parameter is masked when shown (``***``).

``chain show`` / ``chain export`` and the console show the masked forms; ``--show-secrets``
reveals them (refused in read-only mode and for a role that may not read the secret schema).
An import carrying masked passwords keeps the secrets of the same chain's same task or is
refused (``keep_secrets``).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from engine.db import redact
from engine.errors import InputError, ReadOnlyError

SECRET_MASK = "***"
SECRETS_SQL = "SELECT task_id, database_connection FROM timetable_secret.task_connection WHERE task_id = ANY(%s)"
_MASKED = re.compile(r"password\s*=\s*\*\*\*(\s|$)|postgres(?:ql)?://[^:/@\s]*:\*\*\*@", re.IGNORECASE)


def mask_connection(dsn: str | None) -> str | None:
    """A connection string as it may be shown: the password masked."""
    return None if dsn is None else redact(dsn)


def is_masked(dsn: str | None) -> bool:
    """The string holds a masked password (``***``), not a real one."""
    return bool(dsn) and redact(dsn) == dsn and bool(_MASKED.search(dsn))


def mask_parameters(kind: str, command: str, rows: list[Any]) -> list[Any]:
    """A task's parameter rows as they may be shown: SendMail's password masked."""
    if str(kind).upper() != "BUILTIN" or command != "SendMail":
        return rows
    return [{**row, "password": SECRET_MASK} if isinstance(row, dict) and row.get("password") else row
            for row in rows]


def mask_task(task: dict[str, Any]) -> dict[str, Any]:
    """A task row (``database_connection``, ``parameters``) as it may be shown."""
    out = dict(task)
    if "database_connection" in out:
        out["database_connection"] = mask_connection(out["database_connection"])
    if "parameters" in out:
        out["parameters"] = mask_parameters(out.get("kind", ""), out.get("command", ""), out["parameters"])
    return out


def check_may_reveal(read_only: bool) -> None:
    if read_only:
        raise ReadOnlyError("read-only mode: --show-secrets is not allowed (secrets are shown only without "
                            "--read-only)")


def read_secrets(conn: psycopg.Connection, task_ids: list[int]) -> dict[int, str]:
    """The whole connection strings of these tasks (those with a password); a role that may not
    read them gets a one-line error naming what it lacks."""
    if not task_ids:
        return {}
    try:
        with conn.transaction():
            rows = conn.execute(SECRETS_SQL, (list(task_ids),)).fetchall()
    except psycopg.errors.InsufficientPrivilege:
        role = conn.execute("SELECT current_user").fetchone()[0]
        raise InputError("--show-secrets", f"role {role} may not read connection secrets (SELECT on "
                                           f"timetable_secret.task_connection)") from None
    return dict(rows)
