"""The console's actions: each is one engine call (the same the CLI makes).

Every function takes the connection first (the view's worker passes its ``action`` or
``poll`` connection) and returns plain data. No SQL here: the engine modules own it.
Modules are imported lazily so a console without a module still opens.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from engine.db import ConnSettings
from engine.errors import InputError


def _tt():
    from engine.timetable import api  # noqa: PLC0415

    return api


def _sch():
    from engine.schedule import api  # noqa: PLC0415

    return api


# ---- chains (engine.timetable.api) -----------------------------------------------------------
# reads: fn(conn, ...); writes: fn(conn, settings, ...): the engine refuses writes in
# read-only mode (guard_write), as does the server (default_transaction_read_only).

TASK_FIELDS = ("task_name", "run_as", "database_connection", "ignore_error", "autonomous", "timeout", "live")
CHAIN_FIELDS = ("chain_name", "run_at", "max_instances", "timeout", "live", "self_destruct", "exclusive_execution",
                "client_name", "on_error")


def chain_page(conn: psycopg.Connection, **kw: Any) -> Any:
    """One page of the chain list (the same keyset query as ``pgtt-tui chain list``)."""
    return _tt().chain_page(conn, **kw)


def chain_detail(conn: psycopg.Connection, name: str, now: datetime | None = None) -> dict[str, Any]:
    api = _tt()
    chain = api.get_chain(conn, name)
    upcoming = chain.get("upcoming") or []
    if now is not None and chain.get("live"):
        try:
            upcoming = api.upcoming_runs(chain.get("run_at"), chain.get("time_zone"), chain.get("next_due_at"),
                                         now, 5)
        except InputError:
            upcoming = []
    last = {"started_at": chain.get("last_started_at"), "status": chain.get("last_status")} \
        if chain.get("last_started_at") else {}
    return {"chain": chain, "tasks": chain["tasks"], "next_runs": upcoming, "last_run": last,
            "running": chain.get("running") or []}


def run_history(conn: psycopg.Connection, name: str, limit: int = 50) -> dict[str, Any]:
    runs = _tt().chain_history(conn, name, limit=limit)
    names = {t["task_id"]: t for t in _tt().get_chain(conn, name)["tasks"]}
    for run in runs:
        for step in run.get("tasks") or []:
            task = names.get(step.get("task_id")) or {}
            step.setdefault("task_name", task.get("task_name"))
            step.setdefault("kind", task.get("kind"))
    return {"runs": runs}


def create_chain(conn: psycopg.Connection, settings: ConnSettings, values: dict[str, Any]) -> Any:
    """The chain and its first task, in one transaction."""
    api = _tt()
    fields = {k: values[k] for k in CHAIN_FIELDS if k in values and k not in ("chain_name", "run_at")}
    task = values.get("task")
    with conn.transaction():
        chain_id = api.create_chain(conn, values["chain_name"], values.get("run_at"),
                                    time_zone=values.get("time_zone"), settings=settings, **fields)
        if task:
            api.add_task(conn, chain_id, task["command"], kind=task.get("kind") or "SQL",
                         parameters=task.get("parameters") or None, settings=settings)
    return chain_id


def timetable_min_interval(conn: psycopg.Connection) -> Any:
    """The @every / @after floor of this database (what create/update_chain check against)."""
    from engine.timetable import validate  # noqa: PLC0415

    return validate.min_interval(conn)


def update_chain(conn: psycopg.Connection, settings: ConnSettings, name: str, values: dict[str, Any]) -> Any:
    fields = {k: values[k] for k in CHAIN_FIELDS if k in values}
    return _tt().update_chain(conn, name, time_zone=values.get("time_zone"), settings=settings, **fields)


def add_task(conn: psycopg.Connection, settings: ConnSettings, chain: str, values: dict[str, Any]) -> Any:
    fields = {k: values[k] for k in TASK_FIELDS if k in values}
    return _tt().add_task(conn, chain, values["command"], kind=values.get("kind") or "SQL",
                          parameters=values.get("parameters"), settings=settings, **fields)


def update_task(conn: psycopg.Connection, settings: ConnSettings, task_id: int, values: dict[str, Any]) -> Any:
    fields = {k: values[k] for k in (*TASK_FIELDS, "kind", "command") if k in values}
    return _tt().update_task(conn, task_id, parameters=values.get("parameters"), settings=settings, **fields)


def delete_task(conn: psycopg.Connection, settings: ConnSettings, task_id: int) -> Any:
    return _tt().delete_task(conn, task_id, settings=settings)


def move_task(conn: psycopg.Connection, settings: ConnSettings, task_id: int, direction: int) -> Any:
    return _tt().move_task(conn, task_id, "up" if direction < 0 else "down", settings=settings)


def run_chain_now(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().run_chain(conn, name, settings=settings)


def stop_chain(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().stop_chain(conn, name, settings=settings)


def pause_chain(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().pause_chain(conn, name, settings=settings)


def resume_chain(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().resume_chain(conn, name, settings=settings)


def delete_chain(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().delete_chain(conn, name, settings=settings)


# ---- schedule jobs (engine.schedule.api) ----------------------------------------------------------

def list_jobs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return _sch().list_jobs(conn)


def list_onetime(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return _sch().list_onetime(conn)


def job_calendar(conn: psycopg.Connection, start: Any, end: Any, now: datetime | None = None,
                 limit: int | None = None, after: Any = None) -> list[dict[str, Any]]:
    """``limit`` executions in [start, end] after the row ``after`` ((scheduled_at, type, id);
    None: from the start; limit None: one page of the engine's size)."""
    return _sch().timetable_page(conn, start, end, now=now, after=after, limit=limit or _sch().TIMETABLE_PAGE_SIZE)


def job_info(conn: psycopg.Connection, job_id: Any) -> Any:
    if isinstance(job_id, str) and job_id.startswith("at:"):
        return _sch().show_onetime(conn, int(job_id[3:]))
    return _sch().show_job(conn, int(job_id))


def create_job(conn: psycopg.Connection, settings: ConnSettings, values: dict[str, Any]) -> Any:
    """schedule.create_job; ``active: False`` creates it deactivated (one transaction)."""
    options = {k: v for k, v in values.items() if v is not None}
    return _sch().create_job(conn, settings, options)


def update_job(conn: psycopg.Connection, settings: ConnSettings, job_id: int, values: dict[str, Any]) -> Any:
    return _sch().set_attributes(conn, settings, job_id, values)


def activate_job(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _sch().activate(conn, settings, job_id)


def deactivate_job(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _sch().deactivate(conn, settings, job_id)


def drop_job(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _sch().drop(conn, settings, job_id)


def submit_onetime(conn: psycopg.Connection, settings: ConnSettings, values: dict[str, Any]) -> Any:
    values = dict(values)
    query = values.pop("query")
    return _sch().submit(conn, settings, query, **values)


def cancel_onetime(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _sch().cancel(conn, settings, job_id)


def resubmit_onetime(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _sch().resubmit(conn, settings, job_id)


# ---- sessions ----------------------------------------------------------------------------------------

def cancel_run(conn: psycopg.Connection, settings: ConnSettings, run: dict[str, Any]) -> Any:
    """Cancel a running chain or job run; ``run`` is a row of engine.views.sessions.running."""
    if run["kind"] == "chain":
        return stop_chain(conn, settings, run["name"])
    return _sch().stop(conn, settings, int(run["id"]), scheduled=run["kind"] == "cron")
