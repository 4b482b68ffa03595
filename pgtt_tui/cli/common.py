"""Shared pieces of the CLI: global options, settings, output.

Every command is a thin shell over engine calls: it parses options, calls the engine and
prints the result as a plain table or, with ``--json``, as JSON. Errors are engine
exceptions; ``pgtt_tui.cli.main`` turns them into one line and an exit code.

Everything human-readable that carries data (tables, key: value lines, plans, event lines,
errors) is printed through ``emit`` / ``say``, which show control characters visibly
(engine.safetext.visible): a name from the database cannot drive the terminal. JSON needs
no such step (``json.dumps`` escapes control characters).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from psycopg.conninfo import make_conninfo

from engine.db import ConnSettings, guard_write, redact, resolve_settings
from engine.safetext import visible, visible_json
from pgtt_tui.widgets.format import fmt_duration


@dataclass
class GlobalOptions:
    dsn: str | None = None
    read_only: bool = False
    json: bool = False
    profile: str | None = None
    password: str | None = None  # typed at the -W prompt: never on the command line


PASSWORD_IN_ARGV = ("pgtt-tui: warning: the --dsn given on the command line holds a password, which every "
                    "user of this machine can read (ps, /proc/PID/cmdline) for as long as pgtt-tui runs; use "
                    "~/.pgpass (PGPASSFILE), a service file (--dsn service=NAME), PGPASSWORD, or -W to be "
                    "asked for it\n")
_warned = False


def warn_password_in_argv(dsn: str | None) -> None:
    """Once per process: a DSN from the command line that holds a password is visible to every
    local user. Python cannot rewrite the process's argv area (that needs a C extension such as
    setproctitle), so the password stays visible there: all we can do is say so."""
    global _warned
    if dsn and not _warned and redact(dsn) != dsn:
        _warned = True
        sys.stderr.write(PASSWORD_IN_ARGV)


def command_line_dsn(ctx: typer.Context | None, dsn: str | None, *, from_argv: bool = True) -> str | None:
    """The DSN to connect with: a password in it warned about (when it came from the command
    line), the -W password added."""
    if from_argv:
        warn_password_in_argv(dsn)
    password = global_options(ctx).password
    if password is not None:
        dsn = make_conninfo(dsn or "", password=password)
    return dsn


DsnOpt = Annotated[str | None, typer.Option(
    "--dsn", "-d", help="libpq connection string or URI (service=NAME works); default: PG* environment, "
                        "else the embedded server", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
PasswordOpt = Annotated[bool, typer.Option(
    "--password", "-W", help="ask for the password (like psql -W): it stays out of ps and the shell history")]
ReadOnlyOpt = Annotated[bool, typer.Option("--read-only", help="refuse every write (the server enforces it too)")]


def global_options(ctx: typer.Context | None) -> GlobalOptions:
    root = ctx.find_root() if ctx is not None else None
    obj = getattr(root, "obj", None)
    return obj if isinstance(obj, GlobalOptions) else GlobalOptions()


def settings_from(ctx: typer.Context | None, dsn: str | None = None, read_only: bool = False,
                  application_name: str = "pgtt-tui cli") -> ConnSettings:
    """Command-level --dsn wins over the global one; read-only if either says so."""
    glob = global_options(ctx)
    return resolve_settings(command_line_dsn(ctx, dsn if dsn is not None else glob.dsn),
                            application_name=application_name, read_only=read_only or glob.read_only)


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


def to_json(data: Any, indent: int | None = 2) -> str:
    return visible_json(json.dumps(data, default=_default, indent=indent, ensure_ascii=False))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    # tables are for people (lags as 21m20s, rates as 1.36); --json keeps the raw numbers
    if isinstance(value, dt.timedelta):
        return fmt_duration(value)
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return visible(to_json(value, indent=None), newlines=False)
    return visible(str(value).replace("\n", " "), newlines=False)


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
        say(str(data))


def say(text: str, err: bool = False) -> None:
    """Print a line of human-readable text that may carry data, control characters made
    visible (tab and newline kept)."""
    (sys.stderr if err else sys.stdout).write(visible(text) + "\n")


class SafeStdout:
    """``sys.stdout`` for progress lines that carry data: each write made visible; our own
    trailing carriage return (a line rewritten in place) is kept."""

    def write(self, text: str) -> None:
        body, end = (text[:-1], "\r") if text.endswith("\r") else (text, "")
        sys.stdout.write(visible(body) + end)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()
