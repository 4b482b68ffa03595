"""Read-side: who is connected (engines) and what is running (chain runs, job runs).

Used by the console's sessions view and by ``overview``. Modules that are not installed
are simply absent from the result (feature detection with to_regclass), so the view works
on a database with only some modules.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

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

_EXISTS_SQL = "SELECT to_regclass(%s) IS NOT NULL"


def has_relation(conn: psycopg.Connection, name: str) -> bool:
    return bool(conn.execute(_EXISTS_SQL, (name,)).fetchone()[0])


def installed(conn: psycopg.Connection) -> dict[str, bool]:
    """Which parts are there: pgtt (engines), timetable, schedule."""
    row = conn.execute(
        "SELECT to_regclass('pgtt.engine_status') IS NOT NULL, to_regclass('timetable.chain_run') IS NOT NULL,"
        " to_regclass('schedule.cron_run') IS NOT NULL").fetchone()
    return {"pgtt": bool(row[0]), "timetable": bool(row[1]), "schedule": bool(row[2])}


def _rows(conn: psycopg.Connection, query: str, **params: Any) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return list(cur.fetchall())


def engines(conn: psycopg.Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Engines registered in pgtt.engine (live ones first; stopped in the last 10 minutes too)."""
    if not has_relation(conn, "pgtt.engine_status"):
        return []
    return _rows(conn, ENGINES_SQL, limit=limit)


def running(conn: psycopg.Connection, limit: int = 500, parts: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """Chain runs and job runs in progress, oldest first: kind (chain | cron | at), run_key,
    id, name, client, started."""
    parts = parts or installed(conn)
    out: list[dict[str, Any]] = []
    if parts.get("timetable"):
        out += _rows(conn, RUNNING_CHAINS_SQL, limit=limit)
    if parts.get("schedule"):
        out += _rows(conn, RUNNING_CRON_SQL, limit=limit)
        out += _rows(conn, RUNNING_AT_SQL, limit=limit)
    far = datetime.max.replace(tzinfo=timezone.utc)
    out.sort(key=lambda r: r["started"] or far)
    return out[:limit]


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything the sessions view shows, in one call."""
    parts = installed(conn)
    return {"parts": parts, "engines": engines(conn) if parts["pgtt"] else [],
            "running": running(conn, parts=parts)}
