"""Read-side: who is connected (engines) and what is running (chain runs, job runs).

Used by the console's sessions view and by ``overview``. Modules that are not installed
are simply absent from the result (feature detection in the catalogs), so the view works
on a database with only some modules.

Roles: the schedule tables are not granted to PUBLIC (its SQL API is SECURITY DEFINER and
shows a role its own jobs), and the pgtt / timetable schemas need explicit grants.  So
``access(conn)`` (engine.access) tells, per part, whether it is installed and whether this
role may read its tables; a role that may not read the schedule tables gets the same
answers through the schedule SQL API (its own jobs), and a part it may not read at all is
reported in ``denied`` (part -> what is missing) instead of failing with a permission error.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

from engine.access import Access, access, denied  # noqa: F401 - callers import them from here too

ENGINES_SQL = """
SELECT engine_id, client_name, backend_pid, host, os_pid, modules, version, started_at, heartbeat_at,
       stopped_at, alive
FROM pgtt.engine_status
WHERE stopped_at IS NULL OR stopped_at > now() - interval '10 minutes'
ORDER BY alive DESC, client_name, engine_id
LIMIT %(limit)s
"""

RUNNING_CHAINS_SQL = """
SELECT 'chain' AS kind, r.run_id::text AS run_key, r.chain_id AS id,
       coalesce(c.chain_name, 'chain ' || r.chain_id) AS name, r.client_name AS client,
       coalesce(r.started_at, r.claimed_at) AS started
FROM timetable.chain_run r
LEFT JOIN timetable.chain c USING (chain_id)
WHERE r.status IN ('claimed', 'running')
ORDER BY r.run_id
LIMIT %(limit)s
"""

RUNNING_CRON_SQL = """
SELECT 'cron' AS kind, r.run_id::text AS run_key, r.cron AS id, coalesce(c.name, 'job ' || r.cron) AS name,
       coalesce(r.engine, r.node) AS client, r.started AS started
FROM schedule.cron_run r
LEFT JOIN schedule.cron c ON c.id = r.cron
WHERE r.state = 'working'
ORDER BY r.started
LIMIT %(limit)s
"""

RUNNING_AT_SQL = """
SELECT 'at' AS kind, a.id::text AS run_key, a.id AS id, coalesce(a.name, 'one-time ' || a.id) AS name,
       coalesce(a.engine, a.node) AS client, a.start_time AS started
FROM schedule.at_job a
WHERE a.status = 'processing'
ORDER BY a.start_time
LIMIT %(limit)s
"""

# Running one-time jobs / cron runs through the schedule SQL API (roles that may not read
# its tables): the caller's own one-time jobs and the runs of jobs that run as the caller.
RUNNING_CRON_API_SQL = """
SELECT 'cron' AS kind, r.cron::text || '@' || r.scheduled_at::text AS run_key, r.cron AS id,
       coalesce(r.name, 'job ' || r.cron) AS name, r.node AS client, r.started AS started
FROM schedule.get_active_jobs(schedule._caller()) r
ORDER BY r.started
LIMIT %(limit)s
"""

RUNNING_AT_API_SQL = """
SELECT 'at' AS kind, a.id::text AS run_key, a.id AS id, coalesce(a.name, 'one-time ' || a.id) AS name,
       a.node AS client, a.start_time AS started
FROM schedule.job_status a
WHERE a.status = 'processing'
ORDER BY a.start_time
LIMIT %(limit)s
"""


def has_relation(conn: psycopg.Connection, name: str) -> bool:
    schema, _, rel = name.partition(".")
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE n.nspname = %s AND c.relname = %s)", (schema, rel)).fetchone()[0])


def installed(conn: psycopg.Connection) -> Access:
    """Which parts are there: pgtt (engines), timetable, schedule (see ``access``)."""
    return access(conn)


def _rows(conn: psycopg.Connection, query: str, **params: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return list(cur.fetchall())


def engines(conn: psycopg.Connection, limit: int = 200, parts: Access | None = None) -> list[dict[str, Any]]:
    """Engines registered in pgtt.engine (live ones first; stopped in the last 10 minutes too);
    [] when the pgtt schema is not there or not readable by this role."""
    parts = parts or access(conn)
    if not parts.readable("pgtt"):
        return []
    return _rows(conn, ENGINES_SQL, limit=limit)


def running(conn: psycopg.Connection, limit: int = 500, parts: Access | None = None) -> list[dict[str, Any]]:
    """Chain runs and job runs in progress, oldest first: kind (chain | cron | at), run_key,
    id, name, client, started.  Schedule runs come through its SQL API for a role that may
    not read its tables (then: the role's own jobs)."""
    parts = parts or access(conn)
    out: list[dict[str, Any]] = []
    if parts.readable("timetable"):
        out += _rows(conn, RUNNING_CHAINS_SQL, limit=limit)
    if parts.readable("schedule"):
        out += _rows(conn, RUNNING_CRON_SQL, limit=limit)
        out += _rows(conn, RUNNING_AT_SQL, limit=limit)
    elif parts["schedule"]:
        out += _rows(conn, RUNNING_CRON_API_SQL, limit=limit)
        out += _rows(conn, RUNNING_AT_API_SQL, limit=limit)
    far = datetime.max.replace(tzinfo=timezone.utc)
    out.sort(key=lambda r: r["started"] or far)
    return out[:limit]


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything the sessions view shows, in one call."""
    parts = access(conn)
    return {"parts": parts, "engines": engines(conn, parts=parts), "running": running(conn, parts=parts),
            "denied": denied(parts)}
