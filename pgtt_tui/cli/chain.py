"""``pgtt-tui chain``: pg_timetable chains (list, show, run, stop, pause, resume, delete).

Every command is one engine call from engine.timetable.api, the same the console makes.
"""

from __future__ import annotations

from typing import Annotated

import typer

from engine.db import connect, guard_write
from engine.timetable import api
from pgtt_tui.cli.common import DsnOpt, JsonOpt, emit, settings_from, want_json

app = typer.Typer(help="Timetable chains (pg_timetable API).", no_args_is_help=True)

ChainArg = Annotated[str, typer.Argument(help="chain name or id")]


def _settings(ctx, dsn):
    return settings_from(ctx, dsn, application_name="pgtt-tui chain")


def _conn(ctx, dsn, what: str, write: bool = False):
    settings = settings_from(ctx, dsn, read_only=not write, application_name=f"pgtt-tui chain {what}")
    if write:
        guard_write(settings, f"chain {what}")
    return connect(settings)


@app.command("list")
def list_(ctx: typer.Context, dsn: DsnOpt = None, as_json: JsonOpt = False,
          filter: Annotated[str | None, typer.Option(
              "--filter", "-f", help="words in the name; state:live|paused|running|failed|succeeded; client:NAME")]
          = None,
          live: Annotated[bool | None, typer.Option("--live/--paused", help="only live or only paused chains",
                                                    show_default=False)] = None,
          after: Annotated[str | None, typer.Option("--after", help="the page after this chain name")] = None,
          before: Annotated[str | None, typer.Option("--before", help="the page before this chain name")] = None,
          last: Annotated[bool, typer.Option("--last", help="the last page")] = False,
          limit: Annotated[int, typer.Option("--limit")] = 100) -> None:
    """Chains in name order with their next run and last result, one page at a time (keyset:
    the next page is --after the last name shown; the same query as the console's list)."""
    with _conn(ctx, dsn, "list") as conn:
        page = api.chain_page(conn, filter=filter or "", live=live, after=after, before=before, last=last,
                              limit=limit, count=False)
    emit(page.rows, want_json(ctx, as_json), ["chain_id", "chain_name", "run_at", "live", "client_name", "next_run",
                                              "last_status", "last_finished_at", "running", "tasks"])
    if page.has_next and not want_json(ctx, as_json):
        typer.echo(f"(more: --after {page.last_name!r})", err=True)


@app.command("show")
def show(ctx: typer.Context, chain: ChainArg, dsn: DsnOpt = None, as_json: JsonOpt = False,
         history: Annotated[int, typer.Option("--history", help="also show this many recent runs")] = 0) -> None:
    """A chain with its tasks, parameters, options, next runs (and recent runs)."""
    with _conn(ctx, dsn, "show") as conn:
        data = api.get_chain(conn, chain)
        if history:
            data["history"] = api.chain_history(conn, chain, limit=history)
    if want_json(ctx, as_json):
        emit(data, True)
        return
    tasks = data.pop("tasks")
    hist = data.pop("history", None)
    emit(data, False)
    typer.echo("")
    emit(tasks, False, ["task_id", "task_order", "task_name", "kind", "command", "parameters", "ignore_error",
                        "autonomous", "live"])
    if hist is not None:
        typer.echo("")
        emit(hist, False, ["run_id", "trigger", "due_at", "started_at", "finished_at", "status", "reason"])


@app.command("run")
def run(ctx: typer.Context, chain: ChainArg, dsn: DsnOpt = None, as_json: JsonOpt = False,
        worker: Annotated[str | None, typer.Option("--worker", help="engine (client name) to run it on")] = None,
        delay: Annotated[float, typer.Option("--delay", help="seconds to wait before starting")] = 0) -> None:
    """Run a chain now (notify_chain_start to a running engine)."""
    with _conn(ctx, dsn, "run", write=True) as conn:
        emit(api.run_chain(conn, chain, worker=worker, delay_seconds=delay, settings=_settings(ctx, dsn)),
             want_json(ctx, as_json))


@app.command("stop")
def stop(ctx: typer.Context, chain: ChainArg, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Stop every running instance of a chain, on every engine."""
    with _conn(ctx, dsn, "stop", write=True) as conn:
        emit(api.stop_chain(conn, chain, settings=_settings(ctx, dsn)), want_json(ctx, as_json))


@app.command("pause")
def pause(ctx: typer.Context, chain: ChainArg, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Pause a chain (live = false): no scheduled runs until resumed."""
    with _conn(ctx, dsn, "pause", write=True) as conn:
        emit(api.pause_chain(conn, chain, settings=_settings(ctx, dsn)), want_json(ctx, as_json))


@app.command("resume")
def resume(ctx: typer.Context, chain: ChainArg, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Resume a paused chain."""
    with _conn(ctx, dsn, "resume", write=True) as conn:
        emit(api.resume_chain(conn, chain, settings=_settings(ctx, dsn)), want_json(ctx, as_json))


@app.command("delete")
def delete(ctx: typer.Context, chain: ChainArg, dsn: DsnOpt = None, as_json: JsonOpt = False,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False) -> None:
    """Delete a chain with its tasks and parameters."""
    if not yes and not typer.confirm(f"delete chain {chain!r}?"):
        raise typer.Exit(1)
    with _conn(ctx, dsn, "delete", write=True) as conn:
        emit(api.delete_chain(conn, chain, settings=_settings(ctx, dsn)), want_json(ctx, as_json))


# chain import / export (pg_timetable YAML files): pgtt_tui/cli/chain_io.py (timetable tasks engineer)
from pgtt_tui.cli import chain_io  # noqa: E402

chain_io.register(app)
