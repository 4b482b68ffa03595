"""``pgtt-tui chain``: pg_timetable chains (list, show, run, stop, pause, resume, delete, create,
edit, task add|edit|delete|up|down; import / export in chain_io.py).

Every command is one engine call from engine.timetable.api, the same the console makes, so
every console chain action has a CLI twin. Validation errors name the option (``--schedule``,
``--param[1]``…); nothing is changed then.
"""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

import typer

from engine.db import connect, guard_write
from engine.errors import InputError
from engine.timetable import api
from engine.timetable.secrets import check_may_reveal
from pgtt_tui.cli.common import DsnOpt, JsonOpt, emit, global_options, settings_from, want_json

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
         history: Annotated[int, typer.Option("--history", help="also show this many recent runs")] = 0,
         secrets: Annotated[bool, typer.Option("--show-secrets", help="show connection passwords (masked by "
                                                                      "default; not with --read-only)")] = False,
         ) -> None:
    """A chain with its tasks, parameters, options, next runs (and recent runs)."""
    if secrets:
        check_may_reveal(global_options(ctx).read_only)
    with _conn(ctx, dsn, "show") as conn:
        data = api.get_chain(conn, chain, secrets=secrets)
        if history:
            data["history"] = api.chain_history(conn, chain, limit=history)
    if want_json(ctx, as_json):
        emit(data, True)
        return
    tasks = data.pop("tasks")
    hist = data.pop("history", None)
    emit(data, False)
    typer.echo("")
    emit(tasks, False, ["task_id", "task_order", "task_name", "kind", "command", "parameters",
                        "database_connection", "ignore_error", "autonomous", "live"])
    if hist is not None:
        typer.echo("")
        emit(hist, False, ["run_id", "trigger", "due_at", "started_at", "finished_at", "status", "reason"])


@app.command("stats")
def stats(ctx: typer.Context, chain: ChainArg, dsn: DsnOpt = None, as_json: JsonOpt = False,
          runs: Annotated[int, typer.Option("--runs", min=1, help="how many of the last runs")] = 60) -> None:
    """Duration and due->start lag of the last runs: p50 / p95 / max, counts by status, and one
    line per run with a bar (# succeeded, x failed, - skipped, > running): the console's chart."""
    from datetime import datetime, timezone  # noqa: PLC0415

    from engine.views import trends  # noqa: PLC0415

    with _conn(ctx, dsn, "stats") as conn:
        data = trends.run_stats(conn, "chain", chain, n=runs, now=datetime.now(timezone.utc))
    if want_json(ctx, as_json):
        emit(data, True)
        return
    s = data["summary"]
    d, lag = s["duration"], s["lag"]
    sec = lambda v: "-" if v is None else f"{v:.3f}s"  # noqa: E731
    typer.echo(f"chain     {chain}")
    typer.echo(f"runs      {s['runs']}: {s['succeeded']} succeeded, {s['failed']} failed, {s['skipped']} skipped, "
               f"{s['running']} running")
    typer.echo(f"duration  p50 {sec(d['p50'])}  p95 {sec(d['p95'])}  max {sec(d['max'])}")
    typer.echo(f"lag       p50 {sec(lag['p50'])}  p95 {sec(lag['p95'])}  max {sec(lag['max'])}")
    top = max((r["duration"] or 0 for r in data["runs"]), default=0) or 1
    mark = {"succeeded": "#", "failed": "x", "skipped": "-", "running": ">"}
    rows = [{"run_id": r["run_id"], "started_at": r["started_at"], "status": r["status"],
             "duration_s": None if r["duration"] is None else round(r["duration"], 3),
             "lag_s": None if r["lag"] is None else round(r["lag"], 3),
             "bar": mark.get(r["status"], "?") * max(1 if r["status"] != "skipped" else 1,
                                                       round((r["duration"] or 0) / top * 30))}
            for r in data["runs"]]
    typer.echo("")
    emit(rows, False, ["run_id", "started_at", "status", "duration_s", "lag_s", "bar"])


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


# ---- create / edit and tasks (the console's chain and task editors) -------------------------------

#: engine field -> the option that sets it, so a validation error names what the user typed
_OPTION_OF = {"name": "--name", "chain_name": "--name", "run_at": "--schedule", "max_instances": "--max-instances",
              "timeout": "--timeout", "time_zone": "--time-zone", "missed_runs": "--missed-runs",
              "client_name": "--client-name", "on_error": "--on-error", "kind": "--kind", "command": "COMMAND",
              "task_order": "--order", "task_name": "--name", "run_as": "--run-as",
              "database_connection": "--connect-string", "chain": "CHAIN", "task": "TASK_ID"}


@contextlib.contextmanager
def _option_names(**options: str):
    """Re-raise the engine's InputError with the CLI option's name (``run_at`` -> ``--schedule``;
    ``options`` for a command whose option differs, e.g. ``command="--command"``)."""
    try:
        yield
    except InputError as exc:
        field = exc.field
        if field.startswith("parameters["):
            index, _, rest = field[len("parameters["):].partition("]")
            field = f"--param[{int(index) + 1}]{rest}"
        raise InputError(options.get(field) or _OPTION_OF.get(field, field), exc.problem) from None


def _rows(params: list[str] | None, clear: bool = False) -> list[Any] | None:
    """--param JSON (repeatable): each one parameter row (one execution); None: unchanged."""
    if clear:
        return []
    if not params:
        return None
    rows = []
    for i, text in enumerate(params, 1):
        try:
            rows.append(json.loads(text))
        except ValueError as exc:
            raise InputError(f"--param[{i}]", f"not valid JSON ({exc.msg}): {text!r}; e.g. '[\"a\", 1]' for "
                                              "$1, $2 of an SQL task") from None
    return rows


def _text(value: str | None) -> str | None:
    """'' clears a text field (NULL)."""
    return None if value is None or value == "" else value


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", "-p", help="one parameter row as JSON (repeatable, one execution each): SQL: an array for "
    "$1..$n, PROGRAM: an array of strings, BUILTIN: its JSON shape", show_default=False)]
KindOpt = Annotated[str | None, typer.Option("--kind", "-k", help="SQL, PROGRAM or BUILTIN", show_default=False)]


@app.command("create")
def create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="chain name (unique)")],
           schedule: Annotated[str | None, typer.Option(
               "--schedule", "-s", help="cron text, @every …, @after …, @reboot (default: every minute)",
               show_default=False)] = None,
           paused: Annotated[bool, typer.Option("--paused", help="create it paused (live = false)")] = False,
           max_instances: Annotated[int | None, typer.Option("--max-instances", show_default=False)] = None,
           timeout: Annotated[int | None, typer.Option("--timeout", help="chain timeout in ms (0: --chain-timeout)",
                                                       show_default=False)] = None,
           self_destruct: Annotated[bool, typer.Option("--self-destruct", help="delete it after a successful run")]
           = False,
           exclusive: Annotated[bool, typer.Option("--exclusive", help="nothing else runs while it runs")] = False,
           client_name: Annotated[str | None, typer.Option("--client-name", help="only this engine runs it",
                                                           show_default=False)] = None,
           on_error: Annotated[str | None, typer.Option("--on-error", help="SQL run when the chain fails",
                                                        show_default=False)] = None,
           time_zone: Annotated[str | None, typer.Option("--time-zone", help="IANA zone of the cron schedule",
                                                         show_default=False)] = None,
           missed_runs: Annotated[str | None, typer.Option("--missed-runs", help="run_once, skip or run_all",
                                                           show_default=False)] = None,
           command: Annotated[str | None, typer.Option("--command", "-c", help="also add a first task with this "
                                                       "command", show_default=False)] = None,
           kind: KindOpt = None, param: ParamOpt = None,
           dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Create a chain (live unless --paused), optionally with its first task (the console's "new")."""
    rows = _rows(param)
    if (kind or rows) and not command:
        raise InputError("--command", "is required with --kind / --param (they describe the first task)")
    fields = _given(max_instances=max_instances, timeout=timeout, client_name=_text(client_name),
                    on_error=_text(on_error))
    if paused:
        fields["live"] = False
    if self_destruct:
        fields["self_destruct"] = True
    if exclusive:
        fields["exclusive_execution"] = True
    settings = _settings(ctx, dsn)
    with _conn(ctx, dsn, "create", write=True) as conn, _option_names(command="--command"), conn.transaction():
        chain_id = api.create_chain(conn, name, schedule, time_zone=time_zone, missed_runs=missed_runs,
                                    settings=settings, **fields)
        task_id = None
        if command:
            task_id = api.add_task(conn, chain_id, command, kind=kind or "SQL", parameters=rows, settings=settings)
    emit({"chain_id": chain_id, "chain_name": name, "task_id": task_id}, want_json(ctx, as_json))


@app.command("edit")
def edit(ctx: typer.Context, chain: ChainArg,
         name: Annotated[str | None, typer.Option("--name", help="rename it", show_default=False)] = None,
         schedule: Annotated[str | None, typer.Option("--schedule", "-s", help="cron text, @every …, @after …, "
                                                      "@reboot; '' = every minute", show_default=False)] = None,
         live: Annotated[bool | None, typer.Option("--live/--paused", show_default=False)] = None,
         max_instances: Annotated[int | None, typer.Option("--max-instances", show_default=False)] = None,
         timeout: Annotated[int | None, typer.Option("--timeout", help="ms (0: --chain-timeout)",
                                                     show_default=False)] = None,
         self_destruct: Annotated[bool | None, typer.Option("--self-destruct/--no-self-destruct",
                                                            show_default=False)] = None,
         exclusive: Annotated[bool | None, typer.Option("--exclusive/--no-exclusive", show_default=False)] = None,
         client_name: Annotated[str | None, typer.Option("--client-name", help="'' = any engine",
                                                         show_default=False)] = None,
         on_error: Annotated[str | None, typer.Option("--on-error", help="'' = none", show_default=False)] = None,
         time_zone: Annotated[str | None, typer.Option("--time-zone", show_default=False)] = None,
         missed_runs: Annotated[str | None, typer.Option("--missed-runs", help="run_once, skip or run_all",
                                                         show_default=False)] = None,
         dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Change a chain's fields (only those given; the console's chain editor)."""
    fields = _given(chain_name=name, max_instances=max_instances, timeout=timeout, live=live,
                    self_destruct=self_destruct, exclusive_execution=exclusive)
    if schedule is not None:
        fields["run_at"] = _text(schedule)
    for key, value in (("client_name", client_name), ("on_error", on_error)):
        if value is not None:
            fields[key] = _text(value)
    if not fields and time_zone is None and missed_runs is None:
        raise InputError("edit", "nothing to change: give at least one option (see --help)")
    with _conn(ctx, dsn, "edit", write=True) as conn, _option_names():
        data = api.update_chain(conn, chain, time_zone=time_zone, missed_runs=missed_runs,
                                settings=_settings(ctx, dsn), **fields)
    if want_json(ctx, as_json):
        emit(data, True)
    else:
        data.pop("tasks", None)
        emit(data, False)


task_app = typer.Typer(help="Tasks of a chain: add, edit, delete, up, down.", no_args_is_help=True)
app.add_typer(task_app, name="task")
TaskArg = Annotated[int, typer.Argument(help="task id (see `chain show`)")]


def _task_fields(name, run_as, connect_string, ignore_error, autonomous, timeout, live, order) -> dict[str, Any]:
    fields = _given(ignore_error=ignore_error, autonomous=autonomous, timeout=timeout, live=live, task_order=order)
    for key, value in (("task_name", name), ("run_as", run_as), ("database_connection", connect_string)):
        if value is not None:
            fields[key] = _text(value)
    return fields


TaskName = Annotated[str | None, typer.Option("--name", help="task name ('' = none)", show_default=False)]
RunAs = Annotated[str | None, typer.Option("--run-as", help="role for SET ROLE ('' = none)", show_default=False)]
ConnStr = Annotated[str | None, typer.Option("--connect-string", help="run on this remote database ('' = local)",
                                             show_default=False)]
IgnoreErr = Annotated[bool | None, typer.Option("--ignore-error/--no-ignore-error", show_default=False)]
Autonomous = Annotated[bool | None, typer.Option("--autonomous/--no-autonomous", help="outside the chain "
                                                 "transaction", show_default=False)]
TaskTimeout = Annotated[int | None, typer.Option("--timeout", help="ms (0: --task-timeout)", show_default=False)]
TaskLive = Annotated[bool | None, typer.Option("--live/--skip", help="--skip: the chain skips this task",
                                               show_default=False)]
Order = Annotated[float | None, typer.Option("--order", help="task_order (default: after the last task)",
                                             show_default=False)]


@task_app.command("add")
def task_add(ctx: typer.Context, chain: ChainArg, command: Annotated[str, typer.Argument(help="SQL, program or "
                                                                                             "builtin name")],
             kind: KindOpt = None, param: ParamOpt = None, name: TaskName = None, run_as: RunAs = None,
             connect_string: ConnStr = None, ignore_error: IgnoreErr = None, autonomous: Autonomous = None,
             timeout: TaskTimeout = None, live: TaskLive = None, order: Order = None,
             dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Add a task to a chain (at the end unless --order)."""
    fields = _task_fields(name, run_as, connect_string, ignore_error, autonomous, timeout, live, order)
    with _conn(ctx, dsn, "task add", write=True) as conn, _option_names():
        task_id = api.add_task(conn, chain, command, kind=kind or "SQL", parameters=_rows(param),
                               settings=_settings(ctx, dsn), **fields)
    emit({"task_id": task_id, "chain": chain}, want_json(ctx, as_json))


@task_app.command("edit")
def task_edit(ctx: typer.Context, task_id: TaskArg,
              command: Annotated[str | None, typer.Option("--command", "-c", show_default=False)] = None,
              kind: KindOpt = None, param: ParamOpt = None,
              clear_params: Annotated[bool, typer.Option("--clear-params", help="remove every parameter row")]
              = False,
              name: TaskName = None, run_as: RunAs = None, connect_string: ConnStr = None,
              ignore_error: IgnoreErr = None, autonomous: Autonomous = None, timeout: TaskTimeout = None,
              live: TaskLive = None, order: Order = None, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Change a task (only what is given; --param replaces all its parameter rows)."""
    if clear_params and param:
        raise InputError("--clear-params", "give either --clear-params or --param")
    fields = _task_fields(name, run_as, connect_string, ignore_error, autonomous, timeout, live, order)
    if command is not None:
        fields["command"] = command
    if kind is not None:
        fields["kind"] = kind.upper()
    rows = _rows(param, clear_params)
    if not fields and rows is None:
        raise InputError("task edit", "nothing to change: give at least one option (see --help)")
    with _conn(ctx, dsn, "task edit", write=True) as conn, _option_names(command="--command"):
        api.update_task(conn, task_id, parameters=rows, settings=_settings(ctx, dsn), **fields)
    emit({"task_id": task_id, "changed": sorted(fields) + (["parameters"] if rows is not None else [])},
         want_json(ctx, as_json))


@task_app.command("delete")
def task_delete(ctx: typer.Context, task_id: TaskArg, dsn: DsnOpt = None, as_json: JsonOpt = False,
                yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False) -> None:
    """Delete a task and its parameters (timetable.delete_task)."""
    if not yes and not typer.confirm(f"delete task {task_id}?"):
        raise typer.Exit(1)
    with _conn(ctx, dsn, "task delete", write=True) as conn, _option_names():
        api.delete_task(conn, task_id, settings=_settings(ctx, dsn))
    emit({"task_id": task_id, "deleted": True}, want_json(ctx, as_json))


def _move(ctx: typer.Context, task_id: int, direction: str, dsn: str | None, as_json: bool) -> None:
    with _conn(ctx, dsn, f"task {direction}", write=True) as conn, _option_names():
        moved = api.move_task(conn, task_id, direction, settings=_settings(ctx, dsn))
    emit({"task_id": task_id, "moved": direction if moved else None}, want_json(ctx, as_json))
    if not moved and not want_json(ctx, as_json):
        typer.echo(f"task {task_id} is already the {'first' if direction == 'up' else 'last'} of its chain", err=True)


@task_app.command("up")
def task_up(ctx: typer.Context, task_id: TaskArg, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Move a task one place earlier (timetable.move_task_up)."""
    _move(ctx, task_id, "up", dsn, as_json)


@task_app.command("down")
def task_down(ctx: typer.Context, task_id: TaskArg, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Move a task one place later (timetable.move_task_down)."""
    _move(ctx, task_id, "down", dsn, as_json)


# chain import / export (pg_timetable YAML files): pgtt_tui/cli/chain_io.py (timetable tasks engineer)
from pgtt_tui.cli import chain_io  # noqa: E402

chain_io.register(app)
