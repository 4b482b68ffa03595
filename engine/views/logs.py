"""Read-side: one log stream from timetable.log, timetable.execution_log and schedule job runs.

- ``Tail``: a cursor per source; ``start(conn, n)`` returns the last n lines, ``poll(conn)``
  what is new since (oldest first). Sources with a monotonic id are followed by id, the
  others by time; both re-read a small overlap and drop what was already returned, so a
  row that commits a little after a newer one is still shown (once).
- ``history(conn, before, limit, ...)``: an older page, filtered in SQL (keyset on time).
- Modules that are not installed contribute nothing (feature detection); a role that may
  not read the schedule tables follows its own jobs through the schedule SQL API
  (get_user_log(), the job_status view); sources it may not read at all are left out and
  named by ``denied_sources(conn)``.

Entries are plain ``LogEntry`` records; the console formats and filters them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

LEVEL_ORDER = {"DEBUG": 0, "INFO": 1, "NOTICE": 1, "USER": 1, "LOG": 1, "WARNING": 2, "ERROR": 3, "PANIC": 4}
MIN_LEVELS = {"all": 0, "info": 1, "warning": 2, "error": 3}
ID_OVERLAP = 500  # ids re-read each poll (late commits)
TIME_OVERLAP = timedelta(seconds=1)  # time re-read each poll for sources followed by time
POLL_LIMIT = 20_000  # rows per source per poll: the tail catches up over a few polls beyond this


@dataclass(frozen=True, slots=True)
class LogEntry:
    source: str  # "log" (timetable.log) | "exec" (execution_log) | "job" (schedule runs)
    key: tuple
    ts: datetime
    level: str
    client: str
    chain: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ts": self.ts, "level": self.level, "client": self.client,
                "chain": self.chain, "message": self.message}


@dataclass
class _Source:
    name: str
    relation: str
    # SQL select list producing: cursor, ts, level, client, chain, message, k1, k2
    select: str
    from_: str
    cursor: str  # expression used for the keyset (an id or a timestamp)
    by_id: bool
    ts: str = "now()"  # the time expression (second column of select)
    where: str = "TRUE"
    level_error: str = "FALSE"  # SQL condition meaning "error level"
    level_warning: str = "FALSE"
    level_debug: str = "FALSE"
    chain_expr: str = "''"
    client_expr: str = "''"
    text_expr: str = "''"


def _columns(conn: psycopg.Connection, schema: str, table: str) -> set[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                        "AND table_name = %s", (schema, table)).fetchall()
    return {r[0] for r in rows}


def _exists(conn: psycopg.Connection, name: str) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0])


def denied_sources(conn: psycopg.Connection) -> dict[str, str]:
    """Installed log sources this role may not read (part -> what is missing)."""
    from engine.access import access, denied  # noqa: PLC0415

    return {p: text for p, text in denied(access(conn)).items() if p == "timetable"}


def discover_sources(conn: psycopg.Connection) -> list[_Source]:
    """The log sources present in this database that this role may read, with the cursor
    each one is followed by."""
    from engine.access import access  # noqa: PLC0415

    parts = access(conn)
    out: list[_Source] = []
    if parts.readable("timetable") and _exists(conn, "timetable.log"):
        cols = _columns(conn, "timetable", "log")
        id_col = next((c for c in ("log_id", "id") if c in cols), None)
        cursor = f"l.{id_col}" if id_col else "l.ts"
        has_chain = "message_data" in cols and _exists(conn, "timetable.chain")
        chain = ("coalesce(lc.chain_name, l.message_data->>'name', l.message_data->>'chain_name', "
                 "l.message_data->>'chain', '')") if has_chain else "''"
        client = "coalesce(l.client_name, '')" if "client_name" in cols else "''"
        # "Chain failed" says why: the engine puts the failing task's error in message_data.reason
        text = ("coalesce(l.message, '') || coalesce(': ' || (l.message_data->>'reason'), '')"
                if "message_data" in cols else "coalesce(l.message, '')")
        out.append(_Source(
            name="log", relation="timetable.log", by_id=id_col is not None, cursor=cursor, ts="l.ts",
            select=f"{cursor}, l.ts, l.log_level::text, {client}, {chain}, {text}, "
                   f"{cursor if id_col else 'l.pid'}, {'0' if id_col else 'md5(coalesce(l.message,' + chr(39) * 2 + '))'}",
            from_="timetable.log l" + (
                " LEFT JOIN timetable.chain lc ON lc.chain_id = CASE WHEN jsonb_typeof(l.message_data->'chain') "
                "= 'number' THEN (l.message_data->>'chain')::bigint END" if has_chain else ""),
            level_error="l.log_level::text IN ('ERROR', 'PANIC')",
            level_warning="l.log_level::text IN ('WARNING', 'NOTICE')",
            level_debug="l.log_level::text = 'DEBUG'",
            chain_expr=chain, client_expr=client, text_expr=text))
    if parts.readable("timetable") and _exists(conn, "timetable.execution_log"):
        cols = _columns(conn, "timetable", "execution_log")
        id_col = next((c for c in ("log_id", "id", "exec_id") if c in cols), None)
        cursor = f"e.{id_col}" if id_col else "e.finished"
        has_chain = _exists(conn, "timetable.chain")
        has_task = _exists(conn, "timetable.task")
        chain = "coalesce(c.chain_name, e.chain_id::text, '')" if has_chain else "coalesce(e.chain_id::text, '')"
        task = "coalesce(t.task_name, 'task ' || e.task_id)" if has_task else "'task ' || e.task_id"
        joins = "timetable.execution_log e"
        if has_chain:
            joins += " LEFT JOIN timetable.chain c ON c.chain_id = e.chain_id"
        if has_task:
            joins += " LEFT JOIN timetable.task t ON t.task_id = e.task_id"
        message = (f"{task} || ' ' || coalesce(e.kind::text, '') || ' rc=' || coalesce(e.returncode::text, '?') "
                   f"|| ': ' || coalesce(e.output, '')")
        out.append(_Source(
            name="exec", relation="timetable.execution_log", by_id=id_col is not None, cursor=cursor,
            ts="coalesce(e.finished, e.last_run)",
            select=f"{cursor}, coalesce(e.finished, e.last_run), "
                   f"CASE WHEN coalesce(e.returncode, 0) <> 0 THEN 'ERROR' ELSE 'INFO' END, "
                   f"coalesce(e.client_name, ''), {chain}, {message}, "
                   f"{cursor if id_col else 'e.task_id'}, {'0' if id_col else 'e.txid'}",
            from_=joins, where="e.finished IS NOT NULL" if not id_col else "TRUE",
            level_error="coalesce(e.returncode, 0) <> 0", chain_expr=chain,
            client_expr="coalesce(e.client_name, '')", text_expr="coalesce(e.output, '')"))
    if parts["schedule"] and not parts.readable("schedule"):
        out += _schedule_api_sources()
    elif parts["schedule"]:
        name = "coalesce(c.name, 'job ' || r.cron)"
        out.append(_Source(
            name="job", relation="schedule.cron_run", by_id=False, cursor="r.finished", ts="r.finished",
            select=f"r.finished, r.finished, CASE WHEN r.state = 'error' THEN 'ERROR' ELSE 'INFO' END, "
                   f"coalesce(r.engine, r.node, ''), {name}, "
                   f"'cron job ' || r.state || coalesce(': ' || r.message, ''), r.run_id, 0",
            from_="schedule.cron_run r LEFT JOIN schedule.cron c ON c.id = r.cron",
            where="r.state IN ('done', 'error')",
            level_error="r.state = 'error'", chain_expr=name, client_expr="coalesce(r.engine, r.node, '')",
            text_expr="coalesce(r.message, '')"))
    if parts.readable("schedule"):
        name = "coalesce(a.name, 'one-time ' || a.id)"
        out.append(_Source(
            name="at", relation="schedule.at_job", by_id=False, cursor="a.done_time", ts="a.done_time",
            select=f"a.done_time, a.done_time, CASE WHEN a.is_success THEN 'INFO' ELSE 'ERROR' END, "
                   f"coalesce(a.engine, a.node, ''), {name}, "
                   f"'one-time job ' || CASE WHEN a.is_success THEN 'done' ELSE 'failed' END "
                   f"|| coalesce(': ' || a.error, ''), a.id, a.attempt",
            from_="schedule.at_job a", where="a.status = 'done' AND a.done_time IS NOT NULL",
            level_error="NOT coalesce(a.is_success, false)", chain_expr=name,
            client_expr="coalesce(a.engine, a.node, '')", text_expr="coalesce(a.error, '')"))
    return out


def _schedule_api_sources() -> list[_Source]:
    """The job logs through the schedule SQL API: runs of jobs that run as the caller
    (get_user_log()) and the caller's one-time jobs (job_status)."""
    name = "coalesce(r.name, 'job ' || r.cron)"
    at_name = "coalesce(a.name, 'one-time ' || a.id)"
    return [
        _Source(name="job", relation="schedule.get_user_log()", by_id=False, cursor="r.finished", ts="r.finished",
                select=f"r.finished, r.finished, CASE WHEN r.status = 'error' THEN 'ERROR' ELSE 'INFO' END, "
                       f"coalesce(r.node, ''), {name}, 'cron job ' || r.status || coalesce(': ' || r.message, ''), "
                       f"r.cron, extract(epoch FROM r.scheduled_at)",
                from_="schedule.get_user_log() r", where="r.finished IS NOT NULL",
                level_error="r.status = 'error'", chain_expr=name, client_expr="coalesce(r.node, '')",
                text_expr="coalesce(r.message, '')"),
        _Source(name="at", relation="schedule.job_status", by_id=False, cursor="a.done_time", ts="a.done_time",
                select=f"a.done_time, a.done_time, CASE WHEN a.is_success THEN 'INFO' ELSE 'ERROR' END, "
                       f"coalesce(a.node, ''), {at_name}, "
                       f"'one-time job ' || CASE WHEN a.is_success THEN 'done' ELSE 'failed' END "
                       f"|| coalesce(': ' || a.error, ''), a.id, a.attempt",
                from_="schedule.job_status a", where="a.status = 'done' AND a.done_time IS NOT NULL",
                level_error="NOT coalesce(a.is_success, false)", chain_expr=at_name,
                client_expr="coalesce(a.node, '')", text_expr="coalesce(a.error, '')"),
    ]


def _entry(source: _Source, row: tuple) -> LogEntry:
    return LogEntry(source=source.name, key=(source.name, row[6], row[7], row[1]),
                    ts=row[1], level=row[2] or "INFO", client=row[3] or "", chain=row[4] or "",
                    message=row[5] or "")


def _filters(source: _Source, level: str, chain: str, client: str, text: str) -> tuple[list[sql.Composable], dict]:
    conds: list[sql.Composable] = [sql.SQL(source.where)]
    params: dict[str, Any] = {}
    rank = MIN_LEVELS.get(level, 0)
    if rank >= 3:
        conds.append(sql.SQL(source.level_error))
    elif rank == 2:
        conds.append(sql.SQL("({}) OR ({})").format(sql.SQL(source.level_error), sql.SQL(source.level_warning)))
    elif rank == 1:
        conds.append(sql.SQL("NOT ({})").format(sql.SQL(source.level_debug)))
    if chain:
        conds.append(sql.SQL("{} ILIKE %(chain)s").format(sql.SQL(source.chain_expr)))
        params["chain"] = f"%{_like(chain)}%"
    if client:
        conds.append(sql.SQL("{} ILIKE %(client)s").format(sql.SQL(source.client_expr)))
        params["client"] = f"%{_like(client)}%"
    if text:
        conds.append(sql.SQL("({} ILIKE %(text)s OR {} ILIKE %(text)s)").format(
            sql.SQL(source.text_expr), sql.SQL(source.chain_expr)))
        params["text"] = f"%{_like(text)}%"
    return conds, params


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass
class _Cursor:
    value: Any = None  # last cursor value seen (id or timestamp)
    seen: dict = field(default_factory=dict)  # key -> cursor value, for the overlap


class Tail:
    """Follows every source; not thread-safe (one tail worker owns it)."""

    def __init__(self) -> None:
        self.sources: list[_Source] | None = None
        self.cursors: dict[str, _Cursor] = {}

    def _ensure(self, conn: psycopg.Connection) -> list[_Source]:
        if self.sources is None:
            self.sources = discover_sources(conn)
            self.cursors = {s.name: _Cursor() for s in self.sources}
        return self.sources

    def start(self, conn: psycopg.Connection, n: int = 500) -> list[LogEntry]:
        """The last ``n`` entries over all sources (oldest first); sets every cursor."""
        entries: list[LogEntry] = []
        for source in self._ensure(conn):
            query = sql.SQL("SELECT {sel} FROM {frm} WHERE {where} ORDER BY {cur} DESC NULLS LAST LIMIT %(n)s").format(
                sel=sql.SQL(source.select), frm=sql.SQL(source.from_), where=sql.SQL(source.where),
                cur=sql.SQL(source.cursor))
            rows = conn.execute(query, {"n": n}).fetchall()
            cursor = self.cursors[source.name]
            top = conn.execute(sql.SQL("SELECT max({cur}) FROM {frm} WHERE {where}").format(
                cur=sql.SQL(source.cursor), frm=sql.SQL(source.from_), where=sql.SQL(source.where))).fetchone()[0]
            cursor.value = top
            for row in rows:
                entry = _entry(source, row)
                cursor.seen[entry.key] = row[0]
                entries.append(entry)
        entries.sort(key=lambda e: e.ts)
        return entries[-n:] if n else entries

    def poll(self, conn: psycopg.Connection, limit: int = POLL_LIMIT) -> list[LogEntry]:
        """What is new since the last call, oldest first."""
        out: list[LogEntry] = []
        for source in self._ensure(conn):
            cursor = self.cursors[source.name]
            if cursor.value is None:
                low = None
            elif source.by_id:
                low = cursor.value - ID_OVERLAP
            else:
                low = cursor.value - TIME_OVERLAP
            cond = sql.SQL("TRUE") if low is None else sql.SQL("{} > %(low)s").format(sql.SQL(source.cursor))
            query = sql.SQL("SELECT {sel} FROM {frm} WHERE {where} AND {cond} ORDER BY {cur} LIMIT %(n)s").format(
                sel=sql.SQL(source.select), frm=sql.SQL(source.from_), where=sql.SQL(source.where), cond=cond,
                cur=sql.SQL(source.cursor))
            rows = conn.execute(query, {"low": low, "n": limit}).fetchall()
            for row in rows:
                entry = _entry(source, row)
                if entry.key in cursor.seen:
                    continue
                cursor.seen[entry.key] = row[0]
                out.append(entry)
                if cursor.value is None or row[0] > cursor.value:
                    cursor.value = row[0]
            if cursor.value is not None and len(cursor.seen) > 4 * ID_OVERLAP:
                floor = cursor.value - (ID_OVERLAP if source.by_id else TIME_OVERLAP)
                cursor.seen = {k: v for k, v in cursor.seen.items() if v is not None and v >= floor}
        out.sort(key=lambda e: e.ts)
        return out


def history(conn: psycopg.Connection, before: LogEntry | None = None, limit: int = 500, level: str = "all",
            chain: str = "", client: str = "", text: str = "",
            sources: list[_Source] | None = None) -> list[LogEntry]:
    """Up to ``limit`` entries older than ``before`` (all when None), filtered, oldest first."""
    per_source: list[list[LogEntry]] = []
    for source in sources or discover_sources(conn):
        conds, params = _filters(source, level, chain, client, text)
        ts_expr = sql.SQL(source.ts)
        if before is not None:
            conds.append(sql.SQL("{} < %(before)s").format(ts_expr))
            params["before"] = before.ts
        params["n"] = limit
        query = sql.SQL("SELECT {sel} FROM {frm} WHERE {where} ORDER BY {ts} DESC LIMIT %(n)s").format(
            sel=sql.SQL(source.select), frm=sql.SQL(source.from_), where=sql.SQL(" AND ").join(conds), ts=ts_expr)
        per_source.append([_entry(source, r) for r in conn.execute(query, params).fetchall()])
    merged = list(heapq.merge(*per_source, key=lambda e: e.ts, reverse=True))[:limit]
    merged.reverse()
    return merged
