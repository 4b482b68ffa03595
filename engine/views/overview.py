"""Read-side for the console: the overview and name look-ups.

- ``overview(conn)``: engines, chains and jobs by state, recent failures, next runs;
- ``lookup_names(conn, needle)``: chains and jobs whose name contains the text (palette).
(The paged chain list is engine.timetable.api.chain_page, shared with ``pgtt-tui chain list``.)

Modules that are not installed contribute nothing (feature detection in the catalogs). A
role that may not read the schedule tables gets its own jobs through the schedule SQL API
(SECURITY DEFINER functions and views); a part it may not read at all is named in
``denied`` with what is missing, instead of failing with a permission error.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.access import access, denied

ENGINE_COUNTS_SQL = """
SELECT count(*) FILTER (WHERE alive) AS alive, count(*) FILTER (WHERE stopped_at IS NULL AND NOT alive) AS lost
FROM pgtt.engine_status WHERE stopped_at IS NULL
"""

CHAIN_COUNTS_SQL = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE c.live) AS live,
       count(*) FILTER (WHERE NOT coalesce(c.live, false)) AS paused,
       count(*) FILTER (WHERE s.last_status = 'failed') AS failed,
       (SELECT count(*) FROM timetable.chain_run r WHERE r.status IN ('claimed', 'running')) AS running
FROM timetable.chain c LEFT JOIN timetable.chain_state s USING (chain_id)
"""

JOB_COUNTS_SQL = """
SELECT (SELECT count(*) FROM schedule.cron WHERE active AND NOT broken) AS active,
       (SELECT count(*) FROM schedule.cron WHERE NOT active AND NOT broken) AS inactive,
       (SELECT count(*) FROM schedule.cron WHERE broken) AS broken,
       (SELECT count(*) FROM schedule.cron_run WHERE state = 'working')
         + (SELECT count(*) FROM schedule.at_job WHERE status = 'processing') AS running,
       (SELECT count(*) FROM schedule.at_job WHERE status = 'submitted' AND NOT canceled) AS queued,
       (SELECT count(*) FROM schedule.at_job WHERE status = 'done' AND is_success) AS done,
       (SELECT count(*) FROM schedule.at_job WHERE status = 'done' AND NOT coalesce(is_success, false)) AS failed
"""

CHAIN_FAILURES_SQL = """
SELECT 'chain' AS kind, coalesce(c.chain_name, 'chain ' || r.chain_id) AS name, r.finished_at AS at,
       coalesce(r.reason, '') AS message, r.client_name AS client
FROM timetable.chain_run r LEFT JOIN timetable.chain c USING (chain_id)
WHERE r.status = 'failed' AND r.finished_at IS NOT NULL
ORDER BY r.finished_at DESC LIMIT %(n)s
"""

JOB_FAILURES_SQL = """
(SELECT 'cron' AS kind, coalesce(c.name, 'job ' || r.cron) AS name, r.finished AS at,
        coalesce(r.message, '') AS message, coalesce(r.engine, r.node) AS client
 FROM schedule.cron_run r LEFT JOIN schedule.cron c ON c.id = r.cron
 WHERE r.state = 'error' AND r.finished IS NOT NULL ORDER BY r.finished DESC LIMIT %(n)s)
UNION ALL
(SELECT 'at', coalesce(a.name, 'one-time ' || a.id), a.done_time, coalesce(a.error, ''), coalesce(a.engine, a.node)
 FROM schedule.at_job a
 WHERE a.status = 'done' AND NOT coalesce(a.is_success, false) AND a.done_time IS NOT NULL
 ORDER BY a.done_time DESC LIMIT %(n)s)
"""

CHAIN_NEXT_SQL = """
SELECT 'chain' AS kind, c.chain_name AS name, s.next_due_at AS at, coalesce(c.run_at, '* * * * *') AS schedule
FROM timetable.chain_state s JOIN timetable.chain c USING (chain_id)
WHERE s.next_due_at IS NOT NULL AND c.live
ORDER BY s.next_due_at LIMIT %(n)s
"""

JOB_NEXT_SQL = """
(SELECT 'cron' AS kind, coalesce(name, 'job ' || id) AS name, next_run AS at,
        coalesce(rule->>'crontab', 'rule') AS schedule
 FROM schedule.cron WHERE active AND NOT broken AND next_run IS NOT NULL ORDER BY next_run LIMIT %(n)s)
UNION ALL
(SELECT 'at', coalesce(name, 'one-time ' || id), run_after, 'one-time'
 FROM schedule.at_job WHERE status = 'submitted' AND NOT canceled AND run_after IS NOT NULL
 ORDER BY run_after LIMIT %(n)s)
"""


# The same answers through the schedule SQL API: list_jobs() (own jobs; all for a
# superuser), the job_status view (own one-time jobs) and get_user_log() (runs of jobs
# that run as the caller).
JOB_COUNTS_API_SQL = """
SELECT (SELECT count(*) FROM schedule.list_jobs() j WHERE j.active AND NOT j.broken) AS active,
       (SELECT count(*) FROM schedule.list_jobs() j WHERE NOT j.active AND NOT j.broken) AS inactive,
       (SELECT count(*) FROM schedule.list_jobs() j WHERE j.broken) AS broken,
       (SELECT coalesce(sum(j.running), 0) FROM schedule.list_jobs() j)
         + (SELECT count(*) FROM schedule.job_status a WHERE a.status = 'processing') AS running,
       (SELECT count(*) FROM schedule.job_status a WHERE a.status = 'submitted' AND NOT a.canceled) AS queued,
       (SELECT count(*) FROM schedule.job_status a WHERE a.status = 'done' AND a.is_success) AS done,
       (SELECT count(*) FROM schedule.job_status a
         WHERE a.status = 'done' AND NOT coalesce(a.is_success, false)) AS failed
"""

JOB_FAILURES_API_SQL = """
(SELECT 'cron' AS kind, coalesce(r.name, 'job ' || r.cron) AS name, r.finished AS at,
        coalesce(r.message, '') AS message, r.node AS client
 FROM schedule.get_user_log() r WHERE r.status = 'error' AND r.finished IS NOT NULL
 ORDER BY r.finished DESC LIMIT %(n)s)
UNION ALL
(SELECT 'at', coalesce(a.name, 'one-time ' || a.id), a.done_time, coalesce(a.error, ''), a.node
 FROM schedule.job_status a
 WHERE a.status = 'done' AND NOT coalesce(a.is_success, false) AND a.done_time IS NOT NULL
 ORDER BY a.done_time DESC LIMIT %(n)s)
"""

JOB_NEXT_API_SQL = """
(SELECT 'cron' AS kind, coalesce(j.name, 'job ' || j.id) AS name, j.next_run AS at,
        coalesce(j.schedule->>'crontab', 'rule') AS schedule
 FROM schedule.list_jobs() j WHERE j.active AND NOT j.broken AND j.next_run IS NOT NULL
 ORDER BY j.next_run LIMIT %(n)s)
UNION ALL
(SELECT 'at', coalesce(a.name, 'one-time ' || a.id), a.run_after, 'one-time'
 FROM schedule.job_status a WHERE a.status = 'submitted' AND NOT a.canceled AND a.run_after IS NOT NULL
 ORDER BY a.run_after LIMIT %(n)s)
"""


def _rows(conn: psycopg.Connection, query: str | sql.Composable, params: dict | None = None) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params or {})
        return list(cur.fetchall())


def overview(conn: psycopg.Connection, n: int = 8) -> dict[str, Any]:
    """Counts by state, recent failures and next runs, over the installed modules.

    ``denied``: installed parts this role may not read (part -> what is missing); their
    entry (``engines`` / ``chains``) is then None too.  ``jobs_scope``: "all" when the
    schedule tables are read directly, "own" when through the SQL API."""
    parts = access(conn)
    out: dict[str, Any] = {"parts": parts, "engines": None, "chains": None, "jobs": None,
                           "failures": [], "next": [], "denied": denied(parts), "jobs_scope": "all"}
    if parts.readable("pgtt"):
        out["engines"] = _rows(conn, ENGINE_COUNTS_SQL)[0]
    if parts.readable("timetable"):
        out["chains"] = _rows(conn, CHAIN_COUNTS_SQL)[0]
        out["failures"] += _rows(conn, CHAIN_FAILURES_SQL, {"n": n})
        out["next"] += _rows(conn, CHAIN_NEXT_SQL, {"n": n})
    if parts.readable("schedule"):
        out["jobs"] = _rows(conn, JOB_COUNTS_SQL)[0]
        out["failures"] += _rows(conn, JOB_FAILURES_SQL, {"n": n})
        out["next"] += _rows(conn, JOB_NEXT_SQL, {"n": n})
    elif parts["schedule"]:
        out["jobs_scope"] = "own"
        out["jobs"] = _rows(conn, JOB_COUNTS_API_SQL)[0]
        out["failures"] += _rows(conn, JOB_FAILURES_API_SQL, {"n": n})
        out["next"] += _rows(conn, JOB_NEXT_API_SQL, {"n": n})
    out["failures"] = sorted(out["failures"], key=lambda r: r["at"], reverse=True)[:n]
    out["next"] = sorted(out["next"], key=lambda r: r["at"])[:n]
    return out


# ---- palette look-ups -----------------------------------------------------------------------

def lookup_names(conn: psycopg.Connection, needle: str, limit: int = 20) -> list[tuple[str, Any, str]]:
    """(kind, id, name) of chains and jobs whose name contains ``needle``; prefix matches first."""
    parts = access(conn)
    pattern = f"%{_like(needle)}%"
    prefix = f"{_like(needle)}%"
    out: list[tuple[str, Any, str]] = []
    if parts.readable("timetable"):
        rows = conn.execute(
            "SELECT chain_id, chain_name FROM timetable.chain WHERE chain_name ILIKE %s "
            "ORDER BY (chain_name NOT ILIKE %s), chain_name LIMIT %s", (pattern, prefix, limit)).fetchall()
        out += [("chain", r[0], r[1]) for r in rows]
    if parts["schedule"]:
        # list_jobs(): the role's own jobs (every job for a superuser), by name or id
        rows = conn.execute(
            "SELECT id, coalesce(name, 'job ' || id) FROM schedule.list_jobs() "
            "WHERE coalesce(name, '') ILIKE %s OR id::text = %s "
            "ORDER BY (coalesce(name, '') NOT ILIKE %s), name LIMIT %s", (pattern, needle.strip(), prefix, limit)).fetchall()
        out += [("job", r[0], r[1]) for r in rows]
    return out


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
