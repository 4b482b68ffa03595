"""``pgtt-tui db``: install, upgrade and inspect the schema; manage the embedded server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import psycopg
import typer

from engine import embedded, grants, schema
from engine.db import connect, guard_write
from engine.errors import PgttError, SchemaError
from pgtt_tui.cli.common import DsnOpt, JsonOpt, ReadOnlyOpt, emit, refuse_read_only, settings_from, want_json
from pgtt_tui.cli.progress import Progress

app = typer.Typer(help="Install, upgrade and inspect the database modules.", no_args_is_help=True)
embedded_app = typer.Typer(help="The embedded PostgreSQL server used when no --dsn is given.",
                           no_args_is_help=True)
app.add_typer(embedded_app, name="embedded")

ModulesOpt = Annotated[str | None, typer.Option(
    "--modules", "-m", help="comma-separated: timetable,schedule,pgq,pgq_node (default: all); "
                            "dependencies are added")]


@contextlib.contextmanager
def _one_line(what: str) -> Iterator[None]:
    """Whatever goes wrong while installing reaches the user as one line (exit 4), never a
    traceback; our own errors and the server's keep their codes (main() prints them)."""
    try:
        yield
    except (PgttError, psycopg.Error):
        raise
    except Exception as exc:  # noqa: BLE001 - the promise is one line, whatever it was
        raise SchemaError(f"{what} failed: {type(exc).__name__}: {exc} — nothing of the module that failed was "
                          f"kept; fix the cause and run it again") from exc


@app.command("init")
def init(ctx: typer.Context, dsn: DsnOpt = None, modules: ModulesOpt = None, as_json: JsonOpt = False,
         read_only: ReadOnlyOpt = False) -> None:
    """Install the chosen modules (default: all) and bring them up to date. Safe to re-run."""
    refuse_read_only(ctx, read_only, "db init (it installs the schema)")
    wanted = schema.parse_modules(modules)
    progress = Progress("db init: applying")
    with _one_line("db init"), connect(settings_from(ctx, dsn, application_name="pgtt-tui db init")) as conn:
        try:
            done = schema.install(conn, wanted, on_progress=lambda n, total, name: progress.update(n + 1, name))
        finally:
            progress.close()
        result = {"changes": done, "modules": [s.as_dict() for s in schema.status(conn)]}
    if want_json(ctx, as_json):
        emit(result, True)
    else:
        emit(done or ["nothing to do: the schema is up to date"], False)


@app.command("upgrade")
def upgrade(ctx: typer.Context, dsn: DsnOpt = None, as_json: JsonOpt = False,
            read_only: ReadOnlyOpt = False) -> None:
    """Apply pending migrations to the modules already installed."""
    refuse_read_only(ctx, read_only, "db upgrade (it changes the schema)")
    progress = Progress("db upgrade: applying")
    with _one_line("db upgrade"), connect(settings_from(ctx, dsn, application_name="pgtt-tui db upgrade")) as conn:
        try:
            done = schema.install(conn, list(schema.MODULES), upgrade_only=True,
                                  on_progress=lambda n, total, name: progress.update(n + 1, name))
        finally:
            progress.close()
    emit(done if want_json(ctx, as_json) else (done or ["nothing to do: the schema is up to date"]),
         want_json(ctx, as_json))


@app.command("status")
def status(ctx: typer.Context, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """List the modules with their installed and available versions."""
    with connect(settings_from(ctx, dsn, read_only=True, application_name="pgtt-tui db status")) as conn:
        rows = [s.as_dict() for s in schema.status(conn)]
    emit(rows, want_json(ctx, as_json), ["module", "installed", "available", "state", "note"])


@app.command("grant")
def grant(ctx: typer.Context,
          role: Annotated[str, typer.Option("--role", help="the role to give the profile to (it must exist)")],
          profile: Annotated[str, typer.Option("--as", help="reader (sees everything but connection secrets) or "
                                                            "operator (also starts and stops chains, operates "
                                                            "queues and cascades)")],
          dsn: DsnOpt = None,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="print the statements, run nothing")] = False,
          as_json: JsonOpt = False) -> None:
    """Give a role one of the documented profiles (README "Security model") in this database."""
    settings = settings_from(ctx, dsn, application_name="pgtt-tui db grant")
    if not dry_run:
        guard_write(settings, "granting")
    with connect(settings) as conn:
        done = grants.apply(conn, role, profile, dry_run=dry_run)
    emit(done if want_json(ctx, as_json) else [s + ";" for s in done], want_json(ctx, as_json))


@embedded_app.command("status")
def embedded_status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Where the embedded server lives and whether it runs."""
    emit(embedded.shared_status(), want_json(ctx, as_json))


@embedded_app.command("start")
def embedded_start(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Start the embedded server (no-op when it runs already)."""
    cluster = embedded.ensure_shared_running()
    emit({"running": True, "dsn": cluster.dsn()}, want_json(ctx, as_json))


@embedded_app.command("stop")
def embedded_stop(ctx: typer.Context, as_json: JsonOpt = False, force: Annotated[bool, typer.Option(
        "--force", help="stop it even while other clients are connected (they lose their connection)")] = False,
) -> None:
    """Stop the embedded server; refused while other clients are connected (named), unless --force."""
    emit(embedded.stop_shared(force=force), want_json(ctx, as_json))


@embedded_app.command("path")
def embedded_path() -> None:
    """Print the embedded server's folder."""
    typer.echo(str(embedded.shared_cluster().base))


@embedded_app.command("dsn")
def embedded_dsn() -> None:
    """Print a connection string for the embedded server (starting it if needed)."""
    typer.echo(embedded.ensure_shared_running().dsn())
