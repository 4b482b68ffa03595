"""The ``pgtt-tui`` command line (typer).

No subcommand opens the console. Command groups live in their own modules (db, chain,
job, queue, node, worker, ...) and are thin: every command is an engine call, the same
one the console makes.

Exit codes (README "Exit codes"): 0 ok; 1 error reported by the database or the engine;
2 bad input or usage; 3 cannot connect / embedded server problem; 4 schema missing or
outdated; 5 refused in read-only mode; 6 not found; 130 interrupted.
"""

from __future__ import annotations

import getpass
import importlib
import sys
from typing import Annotated, Any

import psycopg
import typer

from engine import __version__
from engine.db import redact, translate_db_error
from engine.schema import missing_module
from engine.errors import PgttError
from engine.safetext import visible
from pgtt_tui.cli.common import DsnOpt, GlobalOptions, PasswordOpt, ReadOnlyOpt

# (module, command name): each module exposes `app` (a typer.Typer) or `register(root)`.
COMMAND_GROUPS = [
    ("pgtt_tui.cli.db", "db"),
    ("pgtt_tui.cli.chain", "chain"),
    ("pgtt_tui.cli.job", "job"),
    ("pgtt_tui.cli.queue", "queue"),
    ("pgtt_tui.cli.node", "node"),
]
# modules that add top-level commands (worker, ticker, demo, ...) through register(root)
COMMAND_MODULES = ["pgtt_tui.cli.worker", "pgtt_tui.cli.console",
                   "pgtt_tui.cli.queue"]  # pgq: adds `pgtt-tui ticker`

app = typer.Typer(
    name="pgtt-tui",
    help="PostgreSQL job scheduler (timetable, schedule) and PgQ cascaded queues, with a terminal console.\n\n"
         "Without a command: open the console. Without --dsn or PG* variables: use the embedded server.",
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pgtt-tui {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    dsn: DsnOpt = None,
    read_only: ReadOnlyOpt = False,
    ask_password: PasswordOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output for every command that prints data")] = False,
    refresh: Annotated[float, typer.Option("--refresh", help="console refresh interval in seconds", min=0.2)] = 2.0,
    profile: Annotated[str | None, typer.Option("--profile", "-P", help="a named profile from the config file")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    password = getpass.getpass("Password: ") if ask_password else None
    ctx.obj = GlobalOptions(dsn=dsn, read_only=read_only, json=as_json, profile=profile, password=password)
    if ctx.invoked_subcommand is None:
        console = importlib.import_module("pgtt_tui.cli.console")
        console.open_console(ctx, refresh=refresh)


def _register() -> None:
    for module_name, command in COMMAND_GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that group is not built yet
            raise
        app.add_typer(module.app, name=command)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(app)


_register()


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"pgtt-tui: error: {visible(redact(message), newlines=False)}\n")
    sys.exit(code)


def _full_summaries(command: Any) -> Any:
    """Click cuts a command's listed summary at about 45 characters ("Run the engine:
    schedulers, job manager, ticker and cascade..."); an explicit short_help is wrapped, not
    cut, so every command and group gets its help's first paragraph as its summary."""
    if command.short_help is None and command.help:
        command.short_help = " ".join(command.help.strip().split("\n\n")[0].split())
    for sub in getattr(command, "commands", {}).values():
        _full_summaries(sub)
    return command


def main(argv: list[str] | None = None) -> None:
    # standalone mode: typer/click print usage errors themselves and exit 2; what reaches
    # us here is an engine or database error, shown as one line without a traceback
    try:
        _full_summaries(typer.main.get_command(app))(args=argv, prog_name="pgtt-tui")
    except PgttError as exc:
        fail(str(exc), exc.exit_code)
    except psycopg.Error as exc:
        missing = missing_module(exc)
        if missing is not None:
            fail(str(missing), missing.exit_code)
        fail(translate_db_error(exc), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(0)
