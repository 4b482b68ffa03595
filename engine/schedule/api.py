"""Calls for the CLI (``pgtt-tui job …``) and the console: each is one or a few calls of
the schedule.* SQL API, so the permission checks of the SQL side apply to both.

Database errors come back as engine errors with one clear line: ``InputError`` for bad
input (SQLSTATE 22023, the message starts with the field name), ``NotFoundError`` for an
unknown or foreign job, ``PgttError`` for a permission refusal.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from engine.db import guard_write, translate_db_error, ConnSettings
from engine.errors import InputError, NotFoundError, PgttError, SchemaError


class PermissionDenied(PgttError):
    exit_code = 7
    sqlstate = "42501"  # the server's insufficient_privilege it stands for (engine.access.is_permission_error)


LIST_JOBS = "SELECT * FROM schedule.list_jobs()"
JOB_INFO = "SELECT schedule.job_info(%s)"
SUBMIT = """
SELECT schedule.submit_job(query := %(query)s, params := %(params)s, run_after := %(run_after)s, node := %(node)s,
    max_duration := %(max_duration)s::interval, max_wait_interval := %(max_wait_interval)s::interval,
    run_as := %(run_as)s, depends_on := %(depends_on)s::bigint[], name := %(name)s, comments := %(comments)s,
    resubmit_limit := %(resubmit_limit)s)
"""
ONE_TIME_JOBS = "SELECT * FROM schedule.job_status ORDER BY id"
# _all_job_status(): own one-time jobs, every job for a superuser (the SECURITY DEFINER
# function behind the job_status / all_job_status views)
ONE_TIME_JOB = "SELECT * FROM schedule._all_job_status() WHERE id = %s"
CREATE_JOB = "SELECT schedule.create_job(%s::jsonb) AS id"
ACTIVATE = "SELECT schedule.activate_job(%s) AS ok"
DEACTIVATE = "SELECT schedule.deactivate_job(%s) AS ok"
DROP = "SELECT schedule.drop_job(%s) AS ok"
SET_ATTRIBUTES = "SELECT schedule.set_job_attributes(%s, %s::jsonb) AS ok"
JOB_ACTIVE = "SELECT (schedule.get_job(%s)).active AS active"
USER_LOG = """
SELECT cron AS job, scheduled_at, started, finished, status::text, message, name, run_as
  FROM schedule.get_user_log(%(user)s) WHERE %(job)s::int IS NULL OR cron = %(job)s::int
 ORDER BY finished DESC NULLS LAST LIMIT %(limit)s
"""
ALL_LOG = """
SELECT cron AS job, scheduled_at, started, finished, status::text, message, name, run_as
  FROM schedule.get_log() WHERE %(job)s::int IS NULL OR cron = %(job)s::int
 ORDER BY finished DESC NULLS LAST LIMIT %(limit)s
"""
IS_SUPERUSER = "SELECT schedule._is_superuser(schedule._caller())"
# one page of schedule.timetable(): computed in SQL from each job's schedule (sql/schedule/0005_calendar_claims.sql)
TIMETABLE_PAGE = """
SELECT * FROM schedule.timetable_page(%(start)s, %(end)s, %(after_at)s, %(after_id)s,
                                      %(after_type)s::schedule.timetable_job_type_t, %(limit)s, %(now)s)
"""
TIMETABLE_PAGE_SIZE = 1000


def _call(conn: psycopg.Connection, query: str, params: Any = None, *, rows: bool = True):
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)
            return cur.fetchall() if rows else cur.fetchone()
    except psycopg.errors.UndefinedFunction as exc:
        if "schedule." in str(exc):
            raise SchemaError("the schedule module is not installed here: run `pgtt-tui db init --modules "
                              "schedule`") from None
        raise
    except psycopg.errors.InvalidParameterValue as exc:
        raise _input_error(exc, None) from None
    except psycopg.errors.NoDataFound as exc:
        raise NotFoundError(translate_db_error(exc)) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermissionDenied(translate_db_error(exc)) from None
    except psycopg.errors.UndefinedObject as exc:
        raise _input_error(exc, "run_as") from None


def _input_error(exc: psycopg.Error, default_field: str | None) -> InputError:
    """The server's "field: problem" message as InputError(field, problem), the field named
    once (schedule._check_run_as already says ``run_as: role "x" does not exist``)."""
    text = translate_db_error(exc)
    field, sep, problem = text.partition(": ")
    if sep and problem and " " not in field:
        return InputError(field, problem)
    return InputError(default_field or field, text if default_field else (problem or text))


def list_jobs(conn: psycopg.Connection) -> list[dict]:
    """Scheduled jobs the caller may see (own; all for a superuser)."""
    return _call(conn, LIST_JOBS)


def show_job(conn: psycopg.Connection, job_id: int) -> dict:
    return _call(conn, JOB_INFO, (job_id,), rows=False)["job_info"]


def create_job(conn: psycopg.Connection, settings: ConnSettings, options: dict) -> int:
    """schedule.create_job(options).  ``"active": false`` creates the job inactive: the
    create and schedule.deactivate_job run in one transaction, so no run is ever planned."""
    guard_write(settings, "creating a job")
    options = dict(options)
    active = _pop_active(options)
    with conn.transaction():
        job_id = _call(conn, CREATE_JOB, (json.dumps(options, default=str),), rows=False)["id"]
        if active is False:
            _call(conn, DEACTIVATE, (job_id,), rows=False)
    return job_id


def _pop_active(options: dict) -> bool | None:
    active = options.pop("active", None)
    if active is not None and not isinstance(active, bool):
        raise InputError("active", f"expected true or false, got {active!r}")
    return active


def activate(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> bool:
    """schedule.activate_job: the job is planned again (a broken job is repaired)."""
    guard_write(settings, "activating a job")
    return _call(conn, ACTIVATE, (job_id,), rows=False)["ok"]


def deactivate(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> bool:
    """schedule.deactivate_job: no further runs are planned (a running one finishes)."""
    guard_write(settings, "deactivating a job")
    return _call(conn, DEACTIVATE, (job_id,), rows=False)["ok"]


def drop(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> bool:
    """schedule.drop_job: delete the job and its planned runs (finished runs stay in the log)."""
    guard_write(settings, "deleting a job")
    return _call(conn, DROP, (job_id,), rows=False)["ok"]


def set_attributes(conn: psycopg.Connection, settings: ConnSettings, job_id: int, attrs: dict) -> bool:
    """Edit a scheduled job: schedule.set_job_attributes(job_id, attrs) with the keys of
    create_job; ``"active"`` switches it with activate_job / deactivate_job, in the same
    transaction.  Returns whether anything changed."""
    guard_write(settings, "editing a job")
    attrs = dict(attrs)
    active = _pop_active(attrs)
    if not attrs and active is None:
        raise InputError("attributes", "nothing to change: give at least one attribute")
    changed = False
    with conn.transaction():
        if attrs:
            changed = bool(_call(conn, SET_ATTRIBUTES, (job_id, json.dumps(attrs, default=str)), rows=False)["ok"])
        if active is not None:
            was = _call(conn, JOB_ACTIVE, (job_id,), rows=False)["active"]
            if was != active:
                _call(conn, ACTIVATE if active else DEACTIVATE, (job_id,), rows=False)
                changed = True
    return changed


def list_onetime(conn: psycopg.Connection) -> list[dict]:
    return _call(conn, ONE_TIME_JOBS)


def show_onetime(conn: psycopg.Connection, job_id: int) -> dict:
    """One one-time job the caller may see (own; any for a superuser)."""
    row = _call(conn, ONE_TIME_JOB, (job_id,), rows=False)
    if row is None:
        raise NotFoundError(f"one-time job {job_id} does not exist or is not yours")
    return row


def resubmit(conn: psycopg.Connection, settings: ConnSettings, job_id: int, *,
             run_after: datetime | None = None) -> int:
    """Run a finished (done, failed or canceled) one-time job again: schedule.submit_job
    with its query, parameters, node, limits, run_as, name and comments; returns the new
    job's id.  (schedule.resubmit() is the in-job call: a job resubmitting itself.)"""
    guard_write(settings, "resubmitting a job")
    old = show_onetime(conn, job_id)
    if old["status"] != "done":
        state = "still queued" if old["status"] == "submitted" else "running"
        raise InputError("job", f"one-time job {job_id} is {state}; only a finished job can be resubmitted "
                                "(cancel it first)")
    return submit(conn, settings, old["query"], params=old["params"], run_after=run_after, node=old["node"],
                  max_duration=old["max_duration"], max_wait_interval=old["max_wait_interval"],
                  run_as=old["run_as"], name=old["name"], comments=old["comments"],
                  resubmit_limit=old["resubmit_limit"])


def submit(conn: psycopg.Connection, settings: ConnSettings, query: str, *, params: list[str] | None = None,
           run_after: datetime | None = None, node: str | None = None, max_duration: str | None = None,
           max_wait_interval: str | None = None, run_as: str | None = None, depends_on: list[int] | None = None,
           name: str | None = None, comments: str | None = None, resubmit_limit: int = 100) -> int:
    guard_write(settings, "submitting a job")
    row = _call(conn, SUBMIT, {"query": query, "params": params, "run_after": run_after, "node": node,
                               "max_duration": max_duration, "max_wait_interval": max_wait_interval,
                               "run_as": run_as, "depends_on": depends_on, "name": name, "comments": comments,
                               "resubmit_limit": resubmit_limit}, rows=False)
    return row["submit_job"]


def cancel(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> bool:
    """schedule.cancel_job: no further start; a running instance is not interrupted."""
    guard_write(settings, "cancelling a job")
    return _call(conn, "SELECT schedule.cancel_job(%s) AS ok", (job_id,), rows=False)["ok"]


def stop(conn: psycopg.Connection, settings: ConnSettings, job_id: int, *, scheduled: bool = False) -> int:
    """Interrupt a running job now: a one-time job (default) or every running instance of a
    scheduled job.  Returns how many runs were signalled."""
    guard_write(settings, "stopping a job")
    if scheduled:
        return _call(conn, "SELECT schedule.stop_cron_job(%s) AS n", (job_id,), rows=False)["n"]
    return int(bool(_call(conn, "SELECT schedule.stop_job(%s) AS ok", (job_id,), rows=False)["ok"]))


def log(conn: psycopg.Connection, *, job_id: int | None = None, user: str | None = None,
        limit: int = 100) -> list[dict]:
    """Finished runs: all (superuser, no user given) or those of jobs run as ``user``."""
    superuser = _call(conn, IS_SUPERUSER, rows=False)["_is_superuser"]
    if superuser and user is None:
        return _call(conn, ALL_LOG, {"job": job_id, "limit": limit})
    return _call(conn, USER_LOG, {"user": user, "job": job_id, "limit": limit})


def timetable_page(conn: psycopg.Connection, start: datetime, end: datetime, *,
                   after: tuple[datetime, str, int] | None = None, limit: int = TIMETABLE_PAGE_SIZE,
                   now: datetime | None = None) -> list[dict]:
    """One page of the executions in [start, end], ordered by (scheduled_at, type, id): at
    most ``limit`` rows after ``after`` (the (scheduled_at, type, id) of the previous page's
    last row; None: from the start).  Runs that happened or are planned, one-time jobs, and
    every firing of each active job from ``now`` on (default: the database's now()), computed
    by the database from the job's schedule -- whatever the interval, engine or not."""
    if end < start:
        raise InputError("--end", "is before --start")
    if limit < 1:
        raise InputError("--limit", f"must be at least 1, got {limit}")
    at, kind, ident = after if after is not None else (None, None, None)
    return _call(conn, TIMETABLE_PAGE, {"start": start, "end": end, "after_at": at, "after_type": kind,
                                        "after_id": ident, "limit": limit, "now": now})


def timetable(conn: psycopg.Connection, start: datetime, end: datetime, *, now: datetime | None = None,
              limit: int | None = None) -> list[dict]:
    """Every execution in [start, end] (``limit``: at most that many), fetched page by page."""
    out: list[dict] = []
    after = None
    while limit is None or len(out) < limit:
        size = TIMETABLE_PAGE_SIZE if limit is None else min(TIMETABLE_PAGE_SIZE, limit - len(out))
        page = timetable_page(conn, start, end, after=after, limit=size, now=now)
        out += page
        if len(page) < size:
            break
        last = page[-1]
        after = (last["scheduled_at"], last["type"], last["id"])
    return out


def set_enabled(conn: psycopg.Connection, settings: ConnSettings, on: bool) -> bool:
    guard_write(settings, "enabling the scheduler" if on else "disabling the scheduler")
    return _call(conn, f"SELECT schedule.{'enable' if on else 'disable'}() AS ok", rows=False)["ok"]


def status(conn: psycopg.Connection) -> dict:
    enabled = _call(conn, "SELECT schedule.is_enabled() AS e, schedule.version() AS v", rows=False)
    return {"enabled": enabled["e"], "version": enabled["v"],
            "processes": _call(conn, "SELECT * FROM schedule.status()")}
