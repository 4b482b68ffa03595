"""The console's actions: each is one engine call (the same the CLI makes).

Every function takes the connection first (the view's worker passes its ``action`` or
``poll`` connection) and returns plain data. No SQL here: the engine modules own it.
Modules are imported lazily so a console without a module still opens.
"""

from __future__ import annotations

from typing import Any

import psycopg

from engine.db import ConnSettings
from engine.errors import NotFoundError, PgttError


def _tt():
    from engine.timetable import api  # noqa: PLC0415

    return api


def _sch():
    from engine.schedule import api  # noqa: PLC0415

    return api


# ---- chains (engine.timetable.api) -----------------------------------------------------------
# reads: fn(conn, ...); writes: fn(conn, settings, ...) (the engine calls guard_write)

def chain_detail(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    return _tt().chain_detail(conn, name)


def run_history(conn: psycopg.Connection, name: str, limit: int = 100) -> dict[str, Any]:
    return _tt().run_history(conn, name, limit=limit)


def create_chain(conn: psycopg.Connection, settings: ConnSettings, values: dict[str, Any]) -> Any:
    return _tt().create_chain(conn, settings, values)


def update_chain(conn: psycopg.Connection, settings: ConnSettings, name: str, values: dict[str, Any]) -> Any:
    return _tt().update_chain(conn, settings, name, values)


def add_task(conn: psycopg.Connection, settings: ConnSettings, chain: str, values: dict[str, Any]) -> Any:
    return _tt().add_task(conn, settings, chain, values)


def update_task(conn: psycopg.Connection, settings: ConnSettings, task_id: int, values: dict[str, Any]) -> Any:
    return _tt().update_task(conn, settings, task_id, values)


def delete_task(conn: psycopg.Connection, settings: ConnSettings, task_id: int) -> Any:
    return _tt().delete_task(conn, settings, task_id)


def move_task(conn: psycopg.Connection, settings: ConnSettings, task_id: int, direction: int) -> Any:
    return _tt().move_task(conn, settings, task_id, direction)


def run_chain_now(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().run_now(conn, settings, name)


def stop_chain(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().stop_chain(conn, settings, name)


def pause_chain(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().pause_chain(conn, settings, name)


def resume_chain(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().resume_chain(conn, settings, name)


def delete_chain(conn: psycopg.Connection, settings: ConnSettings, name: str) -> Any:
    return _tt().delete_chain(conn, settings, name)


# ---- schedule jobs (engine.schedule.api) ----------------------------------------------------------

def _need(module: Any, name: str, what: str) -> Any:
    func = getattr(module, name, None)
    if func is None:
        raise PgttError(f"{what} is not available: this engine has no {module.__name__}.{name}()")
    return func


def list_jobs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return _sch().list_jobs(conn)


def list_onetime(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return _sch().list_onetime(conn)


def job_calendar(conn: psycopg.Connection, start: Any, end: Any) -> list[dict[str, Any]]:
    return _sch().timetable(conn, start, end)


def job_info(conn: psycopg.Connection, job_id: Any) -> Any:
    if isinstance(job_id, str) and job_id.startswith("at:"):
        rows = [r for r in _sch().list_onetime(conn) if r["id"] == int(job_id[3:])]
        if not rows:
            raise NotFoundError(f"one-time job {job_id[3:]} does not exist (or is not yours)")
        return rows[0]
    return _sch().show_job(conn, int(job_id))


def create_job(conn: psycopg.Connection, settings: ConnSettings, values: dict[str, Any]) -> Any:
    options = {k: v for k, v in values.items() if v is not None and k != "active"}
    job_id = _sch().create_job(conn, settings, options)
    if values.get("active") is False:
        _need(_sch(), "deactivate", "deactivating a job")(conn, settings, job_id)
    return job_id


def update_job(conn: psycopg.Connection, settings: ConnSettings, job_id: int, values: dict[str, Any]) -> Any:
    return _need(_sch(), "set_attributes", "editing a job")(conn, settings, job_id, values)


def activate_job(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _need(_sch(), "activate", "activating a job")(conn, settings, job_id)


def deactivate_job(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _need(_sch(), "deactivate", "deactivating a job")(conn, settings, job_id)


def drop_job(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _need(_sch(), "drop", "deleting a job")(conn, settings, job_id)


def submit_onetime(conn: psycopg.Connection, settings: ConnSettings, values: dict[str, Any]) -> Any:
    values = dict(values)
    query = values.pop("query")
    return _sch().submit(conn, settings, query, **values)


def cancel_onetime(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _sch().cancel(conn, settings, job_id)


def resubmit_onetime(conn: psycopg.Connection, settings: ConnSettings, job_id: int) -> Any:
    return _need(_sch(), "resubmit", "resubmitting a one-time job")(conn, settings, job_id)


# ---- sessions ----------------------------------------------------------------------------------------

def cancel_run(conn: psycopg.Connection, settings: ConnSettings, run: dict[str, Any]) -> Any:
    """Cancel a running chain or job run; ``run`` is a row of engine.sessions.running."""
    if run["kind"] == "chain":
        return stop_chain(conn, settings, run["name"])
    return _sch().stop(conn, settings, int(run["id"]), scheduled=run["kind"] == "cron")
