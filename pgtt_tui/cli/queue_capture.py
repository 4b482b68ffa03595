"""``pgtt-tui queue capture`` / ``queue captures``: put PgQ's change-capture triggers on a table,
remove them, list which tables feed which queue. Thin shell over engine.pgq.capture."""

from __future__ import annotations

from typing import Annotated

import typer

from engine.db import connect, guard_write
from engine.errors import InputError
from engine.pgq import capture
from pgtt_tui.cli.common import DsnOpt, JsonOpt, emit, settings_from, want_json

CAPTURE_COLUMNS = ["table", "trigger", "queue", "format", "timing", "events", "options", "enabled"]


def capture_cmd(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="table to capture, e.g. shop.orders")],
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="destination queue")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="json (pgq.jsontriga), url (pgq.logutriga) or "
                                                            "sql (pgq.sqltriga)")] = "json",
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="raw trigger option, repeatable: SKIP, "
                                                     "backup, deny, ignore=c1,c2, pkey=c1,c2, when=expr, "
                                                     "ev_type=expr, ev_extra1=expr …")] = None,
    ignore: Annotated[str | None, typer.Option("--ignore", help="columns left out (ignore=)")] = None,
    pkey: Annotated[str | None, typer.Option("--pkey", help="key columns instead of the primary key (pkey=)")] = None,
    when: Annotated[str | None, typer.Option("--when", help="queue only rows where this SQL is true (when=)")] = None,
    backup: Annotated[bool, typer.Option("--backup", help="old row of an UPDATE into ev_extra2")] = False,
    before: Annotated[bool, typer.Option("--before", help="BEFORE trigger (needed for SKIP)")] = False,
    no_truncate: Annotated[bool, typer.Option("--no-truncate", help="do not capture TRUNCATE")] = False,
    name: Annotated[str | None, typer.Option("--name", help="trigger name (default pgq_<format>_<queue>)")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="replace an existing trigger of that name")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="remove the capture trigger(s) instead")] = False,
    dsn: DsnOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Capture a table's INSERT/UPDATE/DELETE/TRUNCATE into a queue with PgQ's triggers (or --remove)."""
    settings = settings_from(ctx, dsn, application_name="pgtt-tui queue")
    guard_write(settings, "queue capture")
    opts = list(option or [])
    if ignore is not None:
        opts.append(f"ignore={ignore}")
    if pkey is not None:
        opts.append(f"pkey={pkey}")
    if when is not None:
        opts.append(f"when={when}")
    if backup:
        opts.append("backup")
    with connect(settings) as conn:
        if remove:
            dropped = capture.remove_capture(conn, table, queue, name)
            emit({"table": table, "removed": dropped} if want_json(ctx, as_json)
                 else f"removed {', '.join(dropped)} from {table}", want_json(ctx, as_json))
            return
        if queue is None:
            raise InputError("--queue", "is required (the queue the changes go to)")
        made = capture.add_capture(conn, table, queue, fmt, opts, before=before, truncate=not no_truncate,
                                   name=name, replace=replace)
    rows = [c.as_dict() for c in made]
    emit(rows, want_json(ctx, as_json), CAPTURE_COLUMNS)


def captures_cmd(
    ctx: typer.Context,
    queue: Annotated[str | None, typer.Option("--queue", "-q", help="only triggers feeding this queue")] = None,
    table: Annotated[str | None, typer.Option("--table", "-t", help="only this table")] = None,
    dsn: DsnOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tables feeding queues: every pgq.jsontriga/logutriga/sqltriga trigger (from pg_trigger)."""
    settings = settings_from(ctx, dsn, read_only=True, application_name="pgtt-tui queue")
    with connect(settings) as conn:
        rows = [c.as_dict() for c in capture.list_captures(conn, queue, table)]
    emit(rows, want_json(ctx, as_json), CAPTURE_COLUMNS)


def register(queue_app: typer.Typer) -> None:
    queue_app.command("capture")(capture_cmd)
    queue_app.command("captures")(captures_cmd)
