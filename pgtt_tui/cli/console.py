"""Opening the console: ``pgtt-tui`` (no command) and ``pgtt-tui demo``.

``open_console`` merges the command line with the config file's profile (flags win) and
runs the Textual app. ``demo`` starts the embedded server, creates the ``pgtt_demo``
database with every module and sample data, builds the three-node cascade sample
(``pgtt_demo`` → ``pgtt_demo_mirror`` → ``pgtt_demo_reports``), runs the engine for all three
in this process (its own thread and event loop) and opens the console on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.db import env_names_a_server
from engine.errors import InputError
from pgtt_tui.cli.common import GlobalOptions, command_line_dsn, global_options


def _resolve(ctx: typer.Context, refresh: float | None):
    from engine.db import resolve_settings  # noqa: PLC0415
    from pgtt_tui.config import check_refresh, load_config  # noqa: PLC0415

    glob: GlobalOptions = global_options(ctx)
    profile = load_config().profile(glob.profile)
    dsn = command_line_dsn(ctx, glob.dsn if glob.dsn is not None else profile.dsn, from_argv=glob.dsn is not None)
    read_only = glob.read_only or profile.read_only
    source = ctx.find_root().get_parameter_source("refresh") if ctx is not None else None
    explicit = source is not None and source.name == "COMMANDLINE"
    rate = check_refresh(refresh if explicit and refresh is not None else profile.refresh)
    settings = resolve_settings(dsn, application_name="pgtt-tui console", read_only=read_only)
    return settings, profile, rate


@contextmanager
def ui_terminal() -> Iterator[None]:
    """Textual draws on stderr.  With stderr redirected (``pgtt-tui 2>err.log``) the screen
    would stay blank: draw on the controlling terminal instead while the console runs, and
    give stderr back afterwards (so a final error still reaches the log).  Without any
    terminal, refuse with one line."""
    if os.isatty(2):
        yield
        return
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise InputError("terminal", "the console needs a terminal, and this process has none (stderr is "
                                     "redirected and there is no /dev/tty); run it in a terminal, or use the "
                                     "CLI commands") from None
    saved = os.dup(2)
    os.dup2(tty, 2)
    os.close(tty)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run_app(app: Any) -> None:
    with ui_terminal():
        app.run()


def open_console(ctx: typer.Context, refresh: float | None = None) -> None:
    """Run the console on --dsn / the profile / the libpq environment / the embedded server."""
    from pgtt_tui.app import PgttApp  # noqa: PLC0415 - Textual only when the console opens

    settings, profile, rate = _resolve(ctx, refresh)
    app = PgttApp(settings, refresh=rate, read_only=settings.read_only, theme=profile.theme,
                  log_lines=profile.log_lines, profile=profile.name)
    run_app(app)


def demo(
    ctx: typer.Context,
    no_console: Annotated[bool, typer.Option("--no-console", help="load the demo and run the engine without "
                                             "the console (Ctrl+C stops)")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="drop and re-create the demo databases first")] = False,
    chains: Annotated[int, typer.Option("--chains", help="extra generated chains (to try the list with many)",
                                        min=0, max=1_000_000)] = 0,
    no_cascade: Annotated[bool, typer.Option("--no-cascade", help="skip the three-node cascade sample "
                                             "(pgtt_demo_mirror, pgtt_demo_reports)")] = False,
) -> None:
    """Try it out: embedded PostgreSQL, sample chains and jobs, a three-node cascade, the engine, and the console."""
    from engine import demo as demo_mod  # noqa: PLC0415

    # With the console on screen, log lines written to the terminal would tear the frame:
    # the in-process engine logs to a file instead, named when the demo ends.
    log_path = None if no_console else _engine_log_file()
    if log_path is None:
        logging.basicConfig(level=logging.WARNING)
    glob = global_options(ctx)
    setup = demo_mod.prepare(dsn=command_line_dsn(ctx, glob.dsn), reset=reset, extra_chains=chains,
                             cascade=not no_cascade)
    settings = setup.settings
    runner = demo_mod.EngineThread(settings, cascade=setup.cascade)
    runner.start()
    reach = demo_mod.how_to_reach(settings, embedded=glob.dsn is None and not env_names_a_server())
    try:
        if no_console:
            typer.echo(f"demo database ready: {settings.describe()}")
            typer.echo(reach)
            if setup.cascade is not None:
                c = setup.cascade
                typer.echo(f"cascade {c.queue} ({'built' if c.built else 'reused'}): "
                           + ", ".join(f"{n.name} = {n.dbname}" for n in c.nodes)
                           + f"; the leaf stores events in {c.sink_table}")
                for line in demo_mod.cascade_tree(setup):
                    typer.echo(f"  {line}")
            typer.echo("engine running (Ctrl+C stops)")
            runner.join_forever()
        else:
            from pgtt_tui.app import PgttApp  # noqa: PLC0415

            refresh = ctx.find_root().params.get("refresh") or 2.0
            app = PgttApp(settings, refresh=float(refresh), read_only=glob.read_only, demo=True, demo_hint=reach)
            run_app(app)
            typer.echo(reach)
    finally:
        runner.stop()
        if runner.alive:
            typer.echo("the demo engine did not stop within 15 s", err=True)
        if log_path is not None:
            typer.echo(f"demo engine log: {log_path}", err=True)


def _engine_log_file() -> Path:
    """Send every log record to <user log dir>/demo.log (appended); returns the path."""
    import platformdirs  # noqa: PLC0415

    folder = Path(platformdirs.user_log_dir("pgtt-tui"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old_handler in list(root.handlers):
        root.removeHandler(old_handler)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)
