"""``pgtt-tui job``: pgpro_scheduler-style jobs (scheduled and one-time)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Annotated

import typer

from engine.db import connect
from engine.errors import InputError
from engine.schedule import api
from pgtt_tui.cli.common import DsnOpt, JsonOpt, emit, settings_from, want_json

app = typer.Typer(help="Scheduled and one-time jobs (pgpro_scheduler API).", no_args_is_help=True)


def _ts(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(field, f"{value!r} is not a timestamp (e.g. 2026-12-31T19:00:00+01:00)") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@app.command("list")
def list_(ctx: typer.Context, dsn: DsnOpt = None, as_json: JsonOpt = False,
          onetime: Annotated[bool, typer.Option("--onetime", help="list one-time jobs (job_status)")] = False) -> None:
    """Scheduled jobs you may see (all of them for a superuser), or one-time jobs with --onetime."""
    with connect(settings_from(ctx, dsn, read_only=True, application_name="pgtt-tui job list")) as conn:
        rows = api.list_onetime(conn) if onetime else api.list_jobs(conn)
    cols = ["id", "name", "status", "run_after", "attempt", "is_success", "error"] if onetime else \
        ["id", "name", "owner", "run_as", "schedule", "active", "broken", "next_run", "running", "last_state"]
    emit(rows, want_json(ctx, as_json), cols)


@app.command("show")
def show(ctx: typer.Context, job_id: int, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Everything about one scheduled job, with its last runs."""
    with connect(settings_from(ctx, dsn, read_only=True, application_name="pgtt-tui job show")) as conn:
        emit(api.show_job(conn, job_id), want_json(ctx, as_json))


def _json_object(text: str, field: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(field, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InputError(field, "expected a JSON object, e.g. '{\"cron\": \"0 3 * * *\"}'")
    return value


def _write(ctx: typer.Context, dsn: str | None, what: str):
    settings = settings_from(ctx, dsn, application_name=f"pgtt-tui job {what}")
    return settings, connect(settings)


@app.command("create")
def create(ctx: typer.Context, options: Annotated[str, typer.Argument(help="the create_job jsonb object")],
           inactive: Annotated[bool, typer.Option("--inactive", help="create it deactivated (no run is planned)")]
           = False,
           dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Create a scheduled job from a JSON object (keys as schedule.create_job; "active": false
    or --inactive creates it deactivated)."""
    opts = _json_object(options, "options")
    if inactive:
        opts["active"] = False
    settings, conn = _write(ctx, dsn, "create")
    with conn:
        emit({"id": api.create_job(conn, settings, opts)}, want_json(ctx, as_json))


@app.command("edit")
def edit(ctx: typer.Context, job_id: int,
         attributes: Annotated[str, typer.Argument(help='attributes to change as a JSON object, e.g. '
                                                        '\'{"cron": "*/10 * * * *", "name": "x"}\'')],
         dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Change a scheduled job (schedule.set_job_attributes; "active": true/false switches it)."""
    attrs = _json_object(attributes, "attributes")
    settings, conn = _write(ctx, dsn, "edit")
    with conn:
        emit({"id": job_id, "changed": api.set_attributes(conn, settings, job_id, attrs)}, want_json(ctx, as_json))


@app.command("activate")
def activate(ctx: typer.Context, job_id: int, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Activate a scheduled job (schedule.activate_job; also repairs a broken one)."""
    settings, conn = _write(ctx, dsn, "activate")
    with conn:
        emit({"id": job_id, "active": api.activate(conn, settings, job_id)}, want_json(ctx, as_json))


@app.command("deactivate")
def deactivate(ctx: typer.Context, job_id: int, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Deactivate a scheduled job (schedule.deactivate_job): no further runs are planned."""
    settings, conn = _write(ctx, dsn, "deactivate")
    with conn:
        api.deactivate(conn, settings, job_id)
        emit({"id": job_id, "active": False}, want_json(ctx, as_json))


@app.command("drop")
def drop(ctx: typer.Context, job_id: int,
         yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
         dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a scheduled job (schedule.drop_job); its finished runs stay in the log."""
    if not yes and not typer.confirm(f"delete scheduled job {job_id}?"):
        raise typer.Exit(1)
    settings, conn = _write(ctx, dsn, "drop")
    with conn:
        emit({"id": job_id, "dropped": api.drop(conn, settings, job_id)}, want_json(ctx, as_json))


@app.command("resubmit")
def resubmit(ctx: typer.Context, job_id: int,
             run_after: Annotated[str | None, typer.Option("--run-after", help="start after this time (ISO 8601)")]
             = None,
             dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Run a finished one-time job again (a new job with the same query and settings)."""
    settings, conn = _write(ctx, dsn, "resubmit")
    with conn:
        new_id = api.resubmit(conn, settings, job_id, run_after=_ts(run_after, "--run-after"))
    emit({"id": new_id, "resubmitted_from": job_id}, want_json(ctx, as_json))


@app.command("submit")
def submit(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="SQL to run once")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="value for $1, $2, … (repeatable)")] = None,
    run_after: Annotated[str | None, typer.Option("--run-after", help="start after this time (ISO 8601)")] = None,
    depends_on: Annotated[list[int] | None, typer.Option("--depends-on", help="job id to wait for (repeatable)")] = None,
    max_duration: Annotated[str | None, typer.Option("--max-duration", help="interval, e.g. '5 minutes'")] = None,
    max_wait: Annotated[str | None, typer.Option("--max-wait", help="max_wait_interval, e.g. '30 seconds'")] = None,
    run_as: Annotated[str | None, typer.Option("--run-as", help="role to run as (you must be a member)")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    comments: Annotated[str | None, typer.Option("--comments")] = None,
    node: Annotated[str | None, typer.Option("--node")] = None,
    resubmit_limit: Annotated[int, typer.Option("--resubmit-limit", min=1)] = 100,
    dsn: DsnOpt = None, as_json: JsonOpt = False,
) -> None:
    """Submit a one-time job (schedule.submit_job)."""
    settings = settings_from(ctx, dsn, application_name="pgtt-tui job submit")
    with connect(settings) as conn:
        job_id = api.submit(conn, settings, query, params=param or None, run_after=_ts(run_after, "--run-after"),
                            node=node, max_duration=max_duration, max_wait_interval=max_wait, run_as=run_as,
                            depends_on=depends_on or None, name=name, comments=comments,
                            resubmit_limit=resubmit_limit)
    emit({"id": job_id}, want_json(ctx, as_json))


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: int, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a one-time job: no further start or resubmission (a running instance finishes)."""
    settings = settings_from(ctx, dsn, application_name="pgtt-tui job cancel")
    with connect(settings) as conn:
        emit({"id": job_id, "canceled": api.cancel(conn, settings, job_id)}, want_json(ctx, as_json))


@app.command("stop")
def stop(ctx: typer.Context, job_id: int,
         scheduled: Annotated[bool, typer.Option("--scheduled", help="JOB_ID is a scheduled (cron) job")] = False,
         dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Interrupt a running job now (cancels its statement; it is logged as stopped)."""
    settings = settings_from(ctx, dsn, application_name="pgtt-tui job stop")
    with connect(settings) as conn:
        emit({"id": job_id, "stopped": api.stop(conn, settings, job_id, scheduled=scheduled)},
             want_json(ctx, as_json))


@app.command("log")
def log_(ctx: typer.Context, job_id: Annotated[int | None, typer.Argument()] = None,
         user: Annotated[str | None, typer.Option("--user", help="runs of jobs run as this role")] = None,
         limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
         dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Finished runs of scheduled jobs, newest first."""
    with connect(settings_from(ctx, dsn, read_only=True, application_name="pgtt-tui job log")) as conn:
        rows = api.log(conn, job_id=job_id, user=user, limit=limit)
    emit(rows, want_json(ctx, as_json), ["job", "scheduled_at", "started", "finished", "status", "message"])


@app.command("timetable")
def timetable(ctx: typer.Context,
              start: Annotated[str | None, typer.Option("--start", help="from (ISO 8601; default now)")] = None,
              end: Annotated[str | None, typer.Option("--end", help="to (ISO 8601; default start + 1 day)")] = None,
              limit: Annotated[int, typer.Option("--limit", min=1, help="rows per page")] = api.TIMETABLE_PAGE_SIZE,
              after: Annotated[str | None, typer.Option(
                  "--after", help="continue after this row: SCHEDULED_AT,TYPE,ID (printed when there is more)")] = None,
              dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Every planned, running and finished execution in the interval (schedule.timetable), a page at a time."""
    t0 = _ts(start, "--start") or datetime.now(timezone.utc)
    t1 = _ts(end, "--end") or t0 + timedelta(days=1)
    cursor = None
    if after is not None:
        parts = after.rsplit(",", 2)
        if len(parts) != 3 or parts[1] not in ("periodical", "onetime") or not parts[2].isdigit():
            raise InputError("--after", f"{after!r}: expected SCHEDULED_AT,TYPE,ID as printed after a full page")
        cursor = (_ts(parts[0], "--after"), parts[1], int(parts[2]))
    with connect(settings_from(ctx, dsn, read_only=True, application_name="pgtt-tui job timetable")) as conn:
        rows = api.timetable_page(conn, t0, t1, after=cursor, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    emit(rows, want_json(ctx, as_json), ["scheduled_at", "type", "id", "name", "status", "start_time", "error"])
    if more:
        last = rows[-1]
        typer.echo(f"more: add --after '{last['scheduled_at'].isoformat()},{last['type']},{last['id']}'", err=True)
