"""What the CLI (``pgtt-tui chain ...``) and the console call for timetable chains.

Every function takes a psycopg connection (autocommit), validates its input (raising
InputError naming the field; nothing is changed then) and returns plain dicts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.db import ConnSettings, guard_write
from engine.errors import InputError, NotFoundError, ReadOnlyError
from engine.schedules import ScheduleError, parse_schedule, resolve_zone
from engine.timetable import validate
from engine.timetable.secrets import mask_task, read_secrets

CHAIN_COLUMNS = ("chain_name", "run_at", "max_instances", "timeout", "live", "self_destruct",
                 "exclusive_execution", "client_name", "on_error")
TASK_COLUMNS = ("task_order", "task_name", "kind", "command", "run_as", "database_connection", "ignore_error",
                "autonomous", "timeout", "live")
KINDS = validate.KINDS
MISSED_POLICIES = ("run_once", "skip", "run_all")

# One page of chains in name order (keyset on the unique chain_name: never OFFSET), with
# next run, last run and result; each row costs two index probes (open runs, tasks).
PAGE_SELECT = """
SELECT c.chain_id, c.chain_name, c.run_at, coalesce(c.live, false) AS live, c.client_name, c.max_instances,
       o.time_zone, coalesce(o.missed_runs, 'run_once') AS missed_runs,
       s.next_due_at, s.dirty, s.last_started_at, s.last_finished_at, s.last_status,
       (SELECT count(*) FROM timetable.chain_run r WHERE r.chain_id = c.chain_id
         AND r.status IN ('claimed', 'running')) AS running,
       (SELECT count(*) FROM timetable.task t WHERE t.chain_id = c.chain_id) AS tasks
FROM timetable.chain c
LEFT JOIN timetable.chain_state s ON s.chain_id = c.chain_id
LEFT JOIN timetable.chain_option o ON o.chain_id = c.chain_id
"""
PAGE_COUNT = "SELECT count(*) FROM timetable.chain c LEFT JOIN timetable.chain_state s ON s.chain_id = c.chain_id"
MAX_PAGE = 10_000


def _guard(conn: psycopg.Connection, settings: ConnSettings | None, what: str) -> None:
    """Read-only refusal before any change, as engine.schedule.api does: with the caller's
    settings through engine.db.guard_write; without them, from the connection itself
    (default_transaction_read_only, reported by PostgreSQL 14+), with the same message."""
    if settings is not None:
        guard_write(settings, what)
    elif conn.info.parameter_status("default_transaction_read_only") == "on":
        raise ReadOnlyError(f"read-only mode: {what} is not allowed (start without --read-only to change things)")


def _server_tz(conn: psycopg.Connection) -> str | None:
    tz = conn.execute("SELECT current_setting('TimeZone')").fetchone()[0]
    try:
        resolve_zone(tz)
        return tz
    except ScheduleError:
        return None


def preview_next(run_at: str | None, tz: str | None, after: datetime, n: int = 1) -> list[datetime]:
    """Next firings of a schedule (cron in the given zone; interval chains from ``after``)."""
    sched = parse_schedule(run_at if run_at is not None else "* * * * *")
    out, t = [], after
    for _ in range(n):
        t = sched.next_after(t, tz)
        if t is None:
            break
        out.append(t)
    return out


def upcoming_runs(run_at: str | None, tz: str | None, next_due_at: datetime | None, now: datetime,
                  n: int = 5) -> list[datetime]:
    """What the chain detail and ``chain show`` list as next runs: the engine's own next due
    time first (an ``@every`` chain counts from its last firing, not from now), then the
    schedule's firings after it; without engine state, the schedule's firings from now."""
    if next_due_at is None:
        return preview_next(run_at, tz, now, n)
    return [next_due_at] + preview_next(run_at, tz, next_due_at, n - 1)


def validate_schedule(run_at: str | None, field: str = "run_at") -> None:
    if run_at is None:
        return
    try:
        parse_schedule(run_at)
    except ScheduleError as exc:
        raise InputError(field, str(exc)) from None


def _chain_row(conn: psycopg.Connection, ref: int | str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            cur.execute("SELECT * FROM timetable.chain WHERE chain_id = %s OR chain_name = %s", (int(ref), str(ref)))
        else:
            cur.execute("SELECT * FROM timetable.chain WHERE chain_name = %s", (ref,))
        row = cur.fetchone()
    if row is None:
        raise NotFoundError(f"chain {ref!r} does not exist")
    return row


@dataclass
class ChainPage:
    """One page of chains (``rows``, in name order) and where it is among the matches."""

    rows: list[dict[str, Any]]
    has_prev: bool
    has_next: bool
    filter: str = ""
    total: int | None = None  # chains matching the filter (None: not counted)
    first_index: int | None = None  # 0-based position of rows[0] among them (None: not counted)

    @property
    def first_name(self) -> str | None:
        return self.rows[0]["chain_name"] if self.rows else None

    @property
    def last_name(self) -> str | None:
        return self.rows[-1]["chain_name"] if self.rows else None


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filter_sql(text: str, live: bool | None) -> tuple[list[sql.Composable], dict[str, Any]]:
    """Words match the name (case-insensitive); ``state:live|paused|running|failed|succeeded|skipped``;
    ``client:NAME``."""
    conds: list[sql.Composable] = []
    params: dict[str, Any] = {}
    words = []
    for token in (text or "").split():
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
                raise InputError("filter", f"state:{value} is not one of live, paused, running, failed, "
                                           "succeeded, skipped")
        elif sep and key == "client":
            params["client"] = f"%{_like(value)}%"
            conds.append(sql.SQL("c.client_name ILIKE %(client)s"))
        else:
            words.append(token)
    if words:
        params["needle"] = f"%{_like(' '.join(words))}%"
        conds.append(sql.SQL("c.chain_name ILIKE %(needle)s"))
    if live is not None:
        params["live"] = live
        conds.append(sql.SQL("coalesce(c.live, false) = %(live)s"))
    return conds, params


def _where(conds: list[sql.Composable]) -> sql.Composable:
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds) if conds else sql.SQL("")


def _next_run(row: dict[str, Any], tz: str | None, now: datetime) -> None:
    row["next_run"] = row["next_due_at"]
    if row["live"] and (row["next_run"] is None or row.get("dirty")):
        try:
            if parse_schedule(row["run_at"] or "* * * * *").kind == "cron":
                row["next_run"] = preview_next(row["run_at"], row["time_zone"] or tz, now)[0]
        except (ScheduleError, IndexError):
            pass
    row.pop("dirty", None)
    row.pop("next_due_at", None)
    if not row["live"]:
        row["next_run"] = None


def chain_page(conn: psycopg.Connection, *, filter: str = "", live: bool | None = None, after: str | None = None,
               before: str | None = None, last: bool = False, limit: int = 200, count: bool = True,
               now: datetime | None = None) -> ChainPage:
    """A page of chains in name order, keyset-paginated on the unique name (so page 500 of
    100,000 chains costs what page 1 does): ``after`` a name, ``before`` a name, the
    ``last`` page, else the first.  ``count``: also count the matches and the position
    (two index-only counts; the console shows "201–400 of 100,000").  Used by
    ``pgtt-tui chain list`` and the console's chain list."""
    if not 1 <= limit <= MAX_PAGE:
        raise InputError("--limit", f"must be between 1 and {MAX_PAGE}")
    if sum(x is not None and x is not False for x in (after, before, last or None)) > 1:
        raise InputError("--after", "give at most one of after, before and last")
    conds, params = _filter_sql(filter, live)
    base = list(conds)
    descending = before is not None or last
    if after is not None:
        conds.append(sql.SQL("c.chain_name > %(after)s"))
        params["after"] = after
    elif before is not None:
        conds.append(sql.SQL("c.chain_name < %(before)s"))
        params["before"] = before
    order = sql.SQL(" ORDER BY c.chain_name DESC") if descending else sql.SQL(" ORDER BY c.chain_name")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql.SQL(PAGE_SELECT) + _where(conds) + order + sql.SQL(" LIMIT %(n)s"),
                           {**params, "n": limit + 1}).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    if descending:
        rows.reverse()
        has_prev, has_next = more, before is not None
    else:
        has_prev, has_next = after is not None, more
    tz = _server_tz(conn)
    now = now or datetime.now(timezone.utc)
    for row in rows:
        _next_run(row, tz, now)
    page = ChainPage(rows=rows, has_prev=has_prev, has_next=has_next, filter=filter or "")
    if count:
        page.total = conn.execute(sql.SQL(PAGE_COUNT) + _where(base), params).fetchone()[0]
        if rows:
            pos = [*base, sql.SQL("c.chain_name < %(first)s")]
            page.first_index = conn.execute(sql.SQL(PAGE_COUNT) + _where(pos),
                                            {**params, "first": rows[0]["chain_name"]}).fetchone()[0]
        else:
            page.first_index = 0
        page.has_prev = page.first_index > 0
        page.has_next = page.first_index + len(rows) < page.total
    return page


def list_chains(conn: psycopg.Connection, *, filter: str | None = None, live: bool | None = None,
                after: str | None = None, before: str | None = None, last: bool = False, limit: int = 100,
                now: datetime | None = None) -> list[dict[str, Any]]:
    """The rows of ``chain_page`` (no counting)."""
    return chain_page(conn, filter=filter or "", live=live, after=after, before=before, last=last, limit=limit,
                      count=False, now=now).rows


def get_chain(conn: psycopg.Connection, ref: int | str, *, secrets: bool = False) -> dict[str, Any]:
    """A chain with its tasks (passwords masked, engine.timetable.secrets; ``secrets=True``
    reveals them to a role that may read them), options, state, running runs, next runs."""
    chain = _chain_row(conn, ref)
    cid = chain["chain_id"]
    with conn.cursor(row_factory=dict_row) as cur:
        tasks = cur.execute("SELECT task_id, " + ", ".join(TASK_COLUMNS) +
                            " FROM timetable.task WHERE chain_id = %s ORDER BY task_order, task_id", (cid,)).fetchall()
        for task in tasks:
            task["kind"] = str(task["kind"])
            task["parameters"] = [r["value"] for r in cur.execute(
                "SELECT value FROM timetable.parameter WHERE task_id = %s ORDER BY order_id",
                (task["task_id"],)).fetchall()]
        opt = cur.execute("SELECT time_zone, missed_runs FROM timetable.chain_option WHERE chain_id = %s",
                          (cid,)).fetchone() or {"time_zone": None, "missed_runs": "run_once"}
        state = cur.execute("SELECT next_due_at, last_started_at, last_finished_at, last_status "
                            "FROM timetable.chain_state WHERE chain_id = %s", (cid,)).fetchone() or {}
        running = cur.execute("SELECT run_id, client_name, started_at FROM timetable.chain_run "
                              "WHERE chain_id = %s AND status = 'running' ORDER BY run_id", (cid,)).fetchall()
    revealed = read_secrets(conn, [t["task_id"] for t in tasks]) if secrets else {}
    tasks = [{**t, "database_connection": revealed.get(t["task_id"], t["database_connection"])} if secrets
             else mask_task(t) for t in tasks]
    tz = opt["time_zone"] or _server_tz(conn)
    upcoming: list[datetime] = []
    if chain["live"]:
        try:
            upcoming = upcoming_runs(chain["run_at"], tz, state.get("next_due_at"), datetime.now(timezone.utc), 5)
        except ScheduleError:
            pass
    return {**chain, **opt, **state, "tasks": tasks, "running": running, "upcoming": upcoming}


def _check_chain_fields(conn: psycopg.Connection, values: dict[str, Any]) -> None:
    """engine.timetable.validate's checks; the @every / @after floor is this database's."""
    floor = validate.min_interval(conn) if values.get("run_at") is not None else validate.DEFAULT_MIN_INTERVAL
    validate.check_chain(values, floor)


def _check_options(time_zone: str | None, missed_runs: str | None) -> None:
    if time_zone is not None:
        try:
            resolve_zone(time_zone)
        except ScheduleError as exc:
            raise InputError("time_zone", exc.problem) from None
    if missed_runs is not None and missed_runs not in MISSED_POLICIES:
        raise InputError("missed_runs", f"{missed_runs!r} is not one of {', '.join(MISSED_POLICIES)}")


def _set_options(conn, cid: int, time_zone, missed_runs) -> None:
    if time_zone is None and missed_runs is None:
        return
    conn.execute("INSERT INTO timetable.chain_option (chain_id, time_zone, missed_runs) "
                 "VALUES (%s, %s, coalesce(%s, 'run_once')) ON CONFLICT (chain_id) DO UPDATE SET "
                 "time_zone = coalesce(EXCLUDED.time_zone, timetable.chain_option.time_zone), "
                 "missed_runs = coalesce(%s, timetable.chain_option.missed_runs)",
                 (cid, time_zone, missed_runs, missed_runs))


def create_chain(conn: psycopg.Connection, name: str, run_at: str | None, *, time_zone: str | None = None,
                 missed_runs: str | None = None, settings: ConnSettings | None = None, **fields: Any) -> int:
    _guard(conn, settings, "creating a chain")
    unknown = set(fields) - set(CHAIN_COLUMNS)
    if unknown:
        raise InputError("chain", f"unknown field(s): {', '.join(sorted(unknown))}")
    values = {"chain_name": name, "run_at": run_at, "live": True, **fields}
    _check_chain_fields(conn, values)
    _check_options(time_zone, missed_runs)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM timetable.chain WHERE chain_name = %s", (name,)).fetchone():
            raise InputError("name", f"a chain named {name!r} already exists")
        query = sql.SQL("INSERT INTO timetable.chain ({}) VALUES ({}) RETURNING chain_id").format(
            sql.SQL(", ").join(map(sql.Identifier, values)), sql.SQL(", ").join(sql.Placeholder() * len(values)))
        cid = conn.execute(query, list(values.values())).fetchone()[0]
        _set_options(conn, cid, time_zone, missed_runs)
    return cid


def update_chain(conn: psycopg.Connection, ref: int | str, *, time_zone: str | None = None,
                 missed_runs: str | None = None, settings: ConnSettings | None = None,
                 **fields: Any) -> dict[str, Any]:
    _guard(conn, settings, "changing a chain")
    unknown = set(fields) - set(CHAIN_COLUMNS)
    if unknown:
        raise InputError("chain", f"unknown field(s): {', '.join(sorted(unknown))}")
    _check_chain_fields(conn, fields)
    _check_options(time_zone, missed_runs)
    chain = _chain_row(conn, ref)
    with conn.transaction():
        if fields:
            query = sql.SQL("UPDATE timetable.chain SET {} WHERE chain_id = %s").format(
                sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in fields))
            conn.execute(query, [*fields.values(), chain["chain_id"]])
        _set_options(conn, chain["chain_id"], time_zone, missed_runs)
    return get_chain(conn, chain["chain_id"])


def _check_task(conn: psycopg.Connection, values: dict[str, Any], parameters: list[Any] | None,
                old: dict[str, Any] | None = None) -> None:
    """engine.timetable.validate's checks of the given columns (with the task's stored kind
    and command for what is not given), its parameter rows, and that run_as exists."""
    validate.check_task(values)
    merged = {**(old or {}), **values}
    kind = validate.check_kind(merged.get("kind") or "SQL")
    if old is not None and ("kind" in values or "command" in values):
        validate.check_command(kind, merged.get("command"))
    validate.check_parameters(kind, merged.get("command"), parameters)
    if "run_as" in values:
        validate.check_run_as(conn, values["run_as"])


def add_task(conn: psycopg.Connection, chain_ref: int | str, command: str, *, kind: str = "SQL",
             parameters: list[Any] | None = None, settings: ConnSettings | None = None, **fields: Any) -> int:
    _guard(conn, settings, "adding a task")
    unknown = set(fields) - set(TASK_COLUMNS)
    if unknown:
        raise InputError("task", f"unknown field(s): {', '.join(sorted(unknown))}")
    values = {"command": command, "kind": validate.check_kind(kind), **fields}
    _check_task(conn, values, parameters)
    chain = _chain_row(conn, chain_ref)
    with conn.transaction():
        if values.get("task_order") is None:
            values["task_order"] = conn.execute(
                "SELECT coalesce(max(task_order), 0) + 10 FROM timetable.task WHERE chain_id = %s",
                (chain["chain_id"],)).fetchone()[0]
        values["chain_id"] = chain["chain_id"]
        query = sql.SQL("INSERT INTO timetable.task ({}) VALUES ({}) RETURNING task_id").format(
            sql.SQL(", ").join(map(sql.Identifier, values)), sql.SQL(", ").join(sql.Placeholder() * len(values)))
        tid = conn.execute(query, list(values.values())).fetchone()[0]
        _replace_parameters(conn, tid, parameters)
    return tid


def _replace_parameters(conn, task_id: int, parameters: list[Any] | None) -> None:
    if parameters is None:
        return
    conn.execute("DELETE FROM timetable.parameter WHERE task_id = %s", (task_id,))
    for i, p in enumerate(parameters, 1):
        conn.execute("INSERT INTO timetable.parameter (task_id, order_id, value) VALUES (%s, %s, %s)",
                     (task_id, i, None if p is None else json.dumps(p)))


def update_task(conn: psycopg.Connection, task_id: int, *, parameters: list[Any] | None = None,
                settings: ConnSettings | None = None, **fields: Any) -> None:
    _guard(conn, settings, "changing a task")
    unknown = set(fields) - set(TASK_COLUMNS)
    if unknown:
        raise InputError("task", f"unknown field(s): {', '.join(sorted(unknown))}")
    if "kind" in fields:
        fields["kind"] = validate.check_kind(fields["kind"])
    with conn.cursor(row_factory=dict_row) as cur:
        old = cur.execute("SELECT kind::text AS kind, command FROM timetable.task WHERE task_id = %s",
                          (task_id,)).fetchone()
    if old is None:
        raise NotFoundError(f"task {task_id} does not exist")
    _check_task(conn, fields, parameters, old)
    if parameters is None and ("kind" in fields or "command" in fields):
        # the stored rows must fit the new kind / builtin too
        stored = [r[0] for r in conn.execute("SELECT value FROM timetable.parameter WHERE task_id = %s "
                                             "ORDER BY order_id", (task_id,)).fetchall()]
        validate.check_parameters(fields.get("kind", old["kind"]), fields.get("command", old["command"]), stored)
    with conn.transaction():
        if fields:
            query = sql.SQL("UPDATE timetable.task SET {} WHERE task_id = %s").format(
                sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in fields))
            conn.execute(query, [*fields.values(), task_id])
        _replace_parameters(conn, task_id, parameters)


def delete_task(conn: psycopg.Connection, task_id: int, *, settings: ConnSettings | None = None) -> None:
    _guard(conn, settings, "deleting a task")
    if not conn.execute("SELECT timetable.delete_task(%s)", (task_id,)).fetchone()[0]:
        raise NotFoundError(f"task {task_id} does not exist")


def move_task(conn: psycopg.Connection, task_id: int, direction: str, *,
              settings: ConnSettings | None = None) -> bool:
    _guard(conn, settings, "moving a task")
    if direction not in ("up", "down"):
        raise InputError("direction", "must be up or down")
    if conn.execute("SELECT 1 FROM timetable.task WHERE task_id = %s", (task_id,)).fetchone() is None:
        raise NotFoundError(f"task {task_id} does not exist")
    return conn.execute(f"SELECT timetable.move_task_{direction}(%s)", (task_id,)).fetchone()[0]


def live_engines(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT DISTINCT s.client_name FROM timetable.active_session s "
                        "WHERE timetable._backend_alive(s.server_pid, NULL) ORDER BY 1").fetchall()
    return [r[0] for r in rows]


#: the longest start delay notify_chain_start accepts (sql/timetable/0006_chain_control.sql)
MAX_START_DELAY_SECONDS = 30 * 86400.0


def run_chain(conn: psycopg.Connection, ref: int | str, *, worker: str | None = None,
              delay_seconds: float = 0, settings: ConnSettings | None = None) -> dict[str, Any]:
    """Run now (or after a delay) through ``notify_chain_start`` to the right engine."""
    _guard(conn, settings, "running a chain")
    if not math.isfinite(delay_seconds) or delay_seconds < 0 or delay_seconds > MAX_START_DELAY_SECONDS:
        raise InputError("--delay", f"must be a number of seconds from 0 to {MAX_START_DELAY_SECONDS:.0f} (30 days), "
                                    f"got {delay_seconds!r}")
    chain = _chain_row(conn, ref)
    engines = live_engines(conn)
    target = worker or chain["client_name"] or (engines[0] if engines else None)
    if target is None:
        raise InputError("worker", "no engine is running for this database: start `pgtt-tui worker` first")
    if chain["client_name"] and target != chain["client_name"]:
        raise InputError("worker", f"chain {chain['chain_name']!r} runs only on engine {chain['client_name']!r}")
    if target not in engines:
        raise InputError("worker", f"engine {target!r} is not running (running: {', '.join(engines) or 'none'})")
    conn.execute("SELECT timetable.notify_chain_start(%s, %s, %s)",
                 (chain["chain_id"], target, timedelta(seconds=delay_seconds) if delay_seconds else None))
    return {"chain_id": chain["chain_id"], "chain_name": chain["chain_name"], "worker": target,
            "delay_seconds": delay_seconds}


def stop_chain(conn: psycopg.Connection, ref: int | str, *, settings: ConnSettings | None = None) -> dict[str, Any]:
    """STOP every running instance, on whichever engines run it."""
    _guard(conn, settings, "stopping a chain")
    chain = _chain_row(conn, ref)
    engines = [r[0] for r in conn.execute(
        "SELECT DISTINCT client_name FROM timetable.chain_run WHERE chain_id = %s AND status IN ('running', 'claimed')",
        (chain["chain_id"],)).fetchall()]
    for name in engines:
        conn.execute("SELECT timetable.notify_chain_stop(%s, %s)", (chain["chain_id"], name))
    return {"chain_id": chain["chain_id"], "chain_name": chain["chain_name"], "engines": engines}


def set_live(conn: psycopg.Connection, ref: int | str, live: bool, *,
             settings: ConnSettings | None = None) -> dict[str, Any]:
    _guard(conn, settings, "resuming a chain" if live else "pausing a chain")
    chain = _chain_row(conn, ref)
    conn.execute("UPDATE timetable.chain SET live = %s WHERE chain_id = %s", (live, chain["chain_id"]))
    return {"chain_id": chain["chain_id"], "chain_name": chain["chain_name"], "live": live}


def pause_chain(conn, ref, *, settings: ConnSettings | None = None):
    return set_live(conn, ref, False, settings=settings)


def resume_chain(conn, ref, *, settings: ConnSettings | None = None):
    return set_live(conn, ref, True, settings=settings)


def delete_chain(conn: psycopg.Connection, ref: int | str, *, settings: ConnSettings | None = None) -> dict[str, Any]:
    _guard(conn, settings, "deleting a chain")
    chain = _chain_row(conn, ref)
    conn.execute("DELETE FROM timetable.chain WHERE chain_id = %s", (chain["chain_id"],))
    return {"chain_id": chain["chain_id"], "chain_name": chain["chain_name"], "deleted": True}


def chain_history(conn: psycopg.Connection, ref: int | str, *, limit: int = 20) -> list[dict[str, Any]]:
    """Recent runs, newest first, each with its task executions (output, return codes)."""
    chain = _chain_row(conn, ref)
    with conn.cursor(row_factory=dict_row) as cur:
        runs = cur.execute("SELECT run_id, due_at, trigger, client_name, claimed_at, started_at, finished_at, status, "
                           "reason, txid, skipped_firings, last_due_at FROM timetable.chain_run WHERE chain_id = %s "
                           "ORDER BY run_id DESC LIMIT %s",
                           (chain["chain_id"], limit)).fetchall()
        for run in runs:
            run["tasks"] = cur.execute(
                "SELECT task_id, last_run, finished, returncode, output, params, ignore_error FROM "
                "timetable.execution_log WHERE chain_id = %s AND txid = %s AND client_name = %s ORDER BY last_run",
                (chain["chain_id"], run["txid"], run["client_name"])).fetchall() if run["txid"] else []
    return runs


def recent_log(conn: psycopg.Connection, *, limit: int = 100, level: str | None = None,
               chain_id: int | None = None, text: str | None = None) -> list[dict[str, Any]]:
    if level is not None and level.upper() not in ("DEBUG", "NOTICE", "INFO", "ERROR", "PANIC", "USER"):
        raise InputError("level", f"{level!r} is not a log level")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT ts, pid, log_level::text AS level, client_name, message, message_data FROM timetable.log "
            "WHERE (%(lvl)s::text IS NULL OR log_level::text = %(lvl)s) "
            "AND (%(cid)s::bigint IS NULL OR (message_data->>'chain')::bigint = %(cid)s) "
            "AND (%(t)s::text IS NULL OR message ILIKE %(t)s) ORDER BY ts DESC LIMIT %(n)s",
            {"lvl": level.upper() if level else None, "cid": chain_id, "t": f"%{text}%" if text else None,
             "n": limit}).fetchall()
