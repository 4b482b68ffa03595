"""Read-side for the console: the overview, the paged chain list, name look-ups.

- ``overview(conn)``: engines, chains and jobs by state, recent failures, next runs;
- ``chain_page(conn, ...)``: one page of chains in name order, keyset-paginated (never
  OFFSET, never everything), with next run, last run and result, so the list stays fast
  with 100,000 chains;
- ``lookup_names(conn, needle)``: chains and jobs whose name contains the text (palette).

Modules that are not installed contribute nothing (to_regclass feature detection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.errors import InputError
from engine.sessions import installed

MAX_PAGE = 1000

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


def _rows(conn: psycopg.Connection, query: str | sql.Composable, params: dict | None = None) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params or {})
        return list(cur.fetchall())


def overview(conn: psycopg.Connection, n: int = 8) -> dict[str, Any]:
    """Counts by state, recent failures and next runs, over the installed modules."""
    parts = installed(conn)
    out: dict[str, Any] = {"parts": parts, "engines": None, "chains": None, "jobs": None,
                           "failures": [], "next": []}
    if parts["pgtt"]:
        out["engines"] = _rows(conn, ENGINE_COUNTS_SQL)[0]
    if parts["timetable"]:
        out["chains"] = _rows(conn, CHAIN_COUNTS_SQL)[0]
        out["failures"] += _rows(conn, CHAIN_FAILURES_SQL, {"n": n})
        out["next"] += _rows(conn, CHAIN_NEXT_SQL, {"n": n})
    if parts["schedule"]:
        out["jobs"] = _rows(conn, JOB_COUNTS_SQL)[0]
        out["failures"] += _rows(conn, JOB_FAILURES_SQL, {"n": n})
        out["next"] += _rows(conn, JOB_NEXT_SQL, {"n": n})
    out["failures"] = sorted(out["failures"], key=lambda r: r["at"], reverse=True)[:n]
    out["next"] = sorted(out["next"], key=lambda r: r["at"])[:n]
    return out


# ---- the chain list ------------------------------------------------------------------------

CHAIN_PAGE_SELECT = """
SELECT c.chain_id, c.chain_name, c.run_at, coalesce(c.live, false) AS live, c.client_name, c.max_instances,
       s.next_due_at, s.last_started_at, s.last_finished_at, s.last_status,
       EXISTS (SELECT 1 FROM timetable.chain_run r WHERE r.chain_id = c.chain_id
               AND r.status IN ('claimed', 'running')) AS running
FROM timetable.chain c LEFT JOIN timetable.chain_state s USING (chain_id)
"""


@dataclass
class ChainPage:
    rows: list[dict[str, Any]]
    total: int  # chains matching the filter
    first_index: int  # 0-based position of rows[0] among them
    has_prev: bool
    has_next: bool
    filter: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def first_name(self) -> str | None:
        return self.rows[0]["chain_name"] if self.rows else None

    @property
    def last_name(self) -> str | None:
        return self.rows[-1]["chain_name"] if self.rows else None


def _filter_sql(text: str) -> tuple[list[sql.Composable], dict[str, Any]]:
    conds: list[sql.Composable] = []
    params: dict[str, Any] = {}
    words = []
    for token in text.split():
        key, sep, value = token.partition(":")
        key = key.lower()
        if sep and key == "state":
            value = value.lower()
            if value in ("live", "active"):
                conds.append(sql.SQL("coalesce(c.live, false)"))
            elif value in ("paused", "inactive"):
                conds.append(sql.SQL("NOT coalesce(c.live, false)"))
            elif value in ("failed", "succeeded", "skipped"):
                conds.append(sql.SQL("s.last_status = {}").format(sql.Literal(value)))
            elif value == "running":
                conds.append(sql.SQL("EXISTS (SELECT 1 FROM timetable.chain_run r WHERE r.chain_id = c.chain_id "
                                     "AND r.status IN ('claimed', 'running'))"))
            else:
                raise InputError("filter", f"state:{value} is not one of live, paused, running, failed, succeeded")
        elif sep and key == "client":
            conds.append(sql.SQL("c.client_name ILIKE {}").format(sql.Literal(f"%{_like(value)}%")))
        else:
            words.append(token)
    if words:
        params["needle"] = f"%{_like(' '.join(words))}%"
        conds.append(sql.SQL("c.chain_name ILIKE %(needle)s"))
    return conds, params


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def chain_page(conn: psycopg.Connection, *, after: str | None = None, before: str | None = None,
               last: bool = False, limit: int = 200, filter: str = "") -> ChainPage:
    """A page of chains in name order.

    ``after``: the page after that name; ``before``: the page before it; ``last``: the
    final page; none of them: the first page. Filter: words match the name
    (case-insensitive), ``state:live|paused|running|failed|succeeded``, ``client:NAME``.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InputError("limit", f"must be between 1 and {MAX_PAGE}")
    conds, params = _filter_sql(filter)
    base_conds = list(conds)
    descending = False
    if after is not None:
        conds.append(sql.SQL("c.chain_name > %(after)s"))
        params["after"] = after
    elif before is not None:
        conds.append(sql.SQL("c.chain_name < %(before)s"))
        params["before"] = before
        descending = True
    elif last:
        descending = True
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds) if conds else sql.SQL("")
    order = sql.SQL(" ORDER BY c.chain_name DESC") if descending else sql.SQL(" ORDER BY c.chain_name")
    params["n"] = limit + 1
    query = sql.SQL(CHAIN_PAGE_SELECT) + where + order + sql.SQL(" LIMIT %(n)s")
    rows = _rows(conn, query, params)
    more = len(rows) > limit
    rows = rows[:limit]
    if descending:
        rows.reverse()
    # where are we: total matching, and how many come before the first row
    count_where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(base_conds) if base_conds else sql.SQL("")
    count_base = sql.SQL("SELECT count(*) FROM timetable.chain c LEFT JOIN timetable.chain_state s USING (chain_id)")
    count_params = {k: v for k, v in params.items() if k == "needle"}
    total = conn.execute(count_base + count_where, count_params).fetchone()[0]
    if rows:
        pos_conds = [*base_conds, sql.SQL("c.chain_name < %(first)s")]
        first_index = conn.execute(count_base + sql.SQL(" WHERE ") + sql.SQL(" AND ").join(pos_conds),
                                   {**count_params, "first": rows[0]["chain_name"]}).fetchone()[0]
    else:
        first_index = 0
    has_prev = first_index > 0
    has_next = first_index + len(rows) < total
    del more
    return ChainPage(rows=rows, total=total, first_index=first_index, has_prev=has_prev, has_next=has_next,
                     filter=filter)


# ---- palette look-ups -----------------------------------------------------------------------

def lookup_names(conn: psycopg.Connection, needle: str, limit: int = 20) -> list[tuple[str, Any, str]]:
    """(kind, id, name) of chains and jobs whose name contains ``needle``; prefix matches first."""
    parts = installed(conn)
    pattern = f"%{_like(needle)}%"
    prefix = f"{_like(needle)}%"
    out: list[tuple[str, Any, str]] = []
    if parts["timetable"]:
        rows = conn.execute(
            "SELECT chain_id, chain_name FROM timetable.chain WHERE chain_name ILIKE %s "
            "ORDER BY (chain_name NOT ILIKE %s), chain_name LIMIT %s", (pattern, prefix, limit)).fetchall()
        out += [("chain", r[0], r[1]) for r in rows]
    if parts["schedule"]:
        rows = conn.execute(
            "SELECT id, coalesce(name, 'job ' || id) FROM schedule.cron WHERE coalesce(name, '') ILIKE %s "
            "ORDER BY name LIMIT %s", (pattern, limit)).fetchall()
        out += [("job", r[0], r[1]) for r in rows]
    return out[:limit]

