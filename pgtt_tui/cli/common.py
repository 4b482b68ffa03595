"""Shared pieces of the CLI: global options, settings, output.

Every command is a thin shell over engine calls: it parses options, calls the engine and
prints the result as a plain table or, with ``--json``, as JSON. Errors are engine
exceptions; ``pgtt_tui.cli.main`` turns them into one line and an exit code.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from engine.db import ConnSettings, guard_write, resolve_settings


@dataclass
class GlobalOptions:
    dsn: str | None = None
    read_only: bool = False
    json: bool = False
    profile: str | None = None


DsnOpt = Annotated[str | None, typer.Option(
    "--dsn", "-d", help="libpq connection string or URI (service=NAME works); default: PG* environment, "
                        "else the embedded server", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
ReadOnlyOpt = Annotated[bool, typer.Option("--read-only", help="refuse every write (the server enforces it too)")]


def global_options(ctx: typer.Context | None) -> GlobalOptions:
    root = ctx.find_root() if ctx is not None else None
    obj = getattr(root, "obj", None)
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()


def settings_from(ctx: typer.Context | None, dsn: str | None = None, read_only: bool = False,
                  application_name: str = "pgtt-tui cli") -> ConnSettings:
    """Command-level --dsn wins over the global one; read-only if either says so."""
    glob = global_options(ctx)
    return resolve_settings(dsn if dsn is not None else glob.dsn, application_name=application_name,
                            read_only=read_only or glob.read_only)


def refuse_read_only(ctx: typer.Context | None, read_only: bool, what: str) -> None:
    """Commands that only write (db init / upgrade, the engine) refuse --read-only at once,
    before connecting: ReadOnlyError, exit code 5, one line."""
    guard_write(ConnSettings(read_only=read_only or global_options(ctx).read_only), what)


def want_json(ctx: typer.Context | None, as_json: bool) -> bool:
    return as_json or global_options(ctx).json


def _default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict  # noqa: PLC0415

        return asdict(value)
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(data, default=_default, indent=2, ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=_default, ensure_ascii=False)
    return str(value).replace("\n", " ")


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(none)"
    columns = columns or list(rows[0].keys())
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def emit(data: Any, as_json: bool, table_columns: list[str] | None = None) -> None:
    """Print data: JSON with --json, else a plain table (lists of dicts), key: value lines (a dict)
    or the text itself."""
    if as_json:
        sys.stdout.write(to_json(data) + "\n")
        return
    if isinstance(data, list) and (not data or isinstance(data[0], dict)):
        sys.stdout.write(format_table(data, table_columns) + "\n")
    elif isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            sys.stdout.write(f"{key.ljust(width)}  {_cell(value)}\n")
    elif isinstance(data, list):
        for item in data:
            sys.stdout.write(f"{_cell(item)}\n")
    else:
        sys.stdout.write(f"{data}\n")
