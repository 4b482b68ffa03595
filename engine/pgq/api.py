"""Typed wrappers over PgQ's public SQL API, used by the CLI and the console.

Every function takes an open psycopg connection (autocommit is fine: each call is one
statement or its own transaction) and passes every value as a parameter. The same calls
work against our ``pgq`` schema and against the real ``pgq`` extension.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.errors import InputError, NotFoundError

MAX_NAME = 200
QUEUE_PARAMS = ("ticker_max_count", "ticker_max_lag", "ticker_idle_period", "ticker_paused",
                "rotation_period", "external_ticker")
_PFX_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")

Q_QUEUE_INFO = "SELECT * FROM pgq.get_queue_info()"
Q_ONE_QUEUE_INFO = "SELECT * FROM pgq.get_queue_info(%s)"
Q_CONSUMER_INFO = "SELECT * FROM pgq.get_consumer_info(%s, %s)"
Q_QUEUE_ROW = ("SELECT queue_id, queue_data_pfx, queue_ntables, queue_cur_table, queue_disable_insert, "
               "queue_per_tx_limit FROM pgq.queue WHERE queue_name = %s")
Q_IMPL = ("SELECT (SELECT extversion FROM pg_extension WHERE extname = 'pgq'), "
          "to_regnamespace('pgq') IS NOT NULL")
Q_EVENTS_PAGE = """
SELECT ev_id, ev_time, ev_txid, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4
  FROM {table}
 WHERE %(before_txid)s::bigint IS NULL OR (ev_txid, ev_id) < (%(before_txid)s, %(before_id)s)
 ORDER BY ev_txid DESC, ev_id DESC
 LIMIT %(limit)s
"""


@dataclass
class QueueInfo:
    queue_name: str
    queue_ntables: int
    queue_cur_table: int
    queue_rotation_period: timedelta
    queue_switch_time: datetime
    queue_external_ticker: bool
    queue_ticker_paused: bool
    queue_ticker_max_count: int
    queue_ticker_max_lag: timedelta
    queue_ticker_idle_period: timedelta
    ticker_lag: timedelta | None
    ev_per_sec: float | None
    ev_new: int | None
    last_tick_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ConsumerInfo:
    queue_name: str
    consumer_name: str
    lag: timedelta | None
    last_seen: timedelta | None
    last_tick: int | None
    current_batch: int | None
    next_tick: int | None
    pending_events: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EventRow:
    ev_id: int
    ev_time: datetime
    ev_txid: int
    ev_owner: int | None
    ev_retry: int | None
    ev_type: str | None
    ev_data: str | None
    ev_extra1: str | None
    ev_extra2: str | None
    ev_extra3: str | None
    ev_extra4: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EventPage:
    events: list[EventRow]
    next_cursor: tuple[int, int] | None  # pass as ``before`` for the next (older) page

    def as_dict(self) -> dict[str, Any]:
        return {"events": [e.as_dict() for e in self.events], "next_cursor": self.next_cursor}


def check_name(field: str, value: str | None) -> str:
    if value is None or not value.strip():
        raise InputError(field, "must not be empty")
    if len(value) > MAX_NAME:
        raise InputError(field, f"is longer than {MAX_NAME} characters")
    if value != value.strip():
        raise InputError(field, "must not start or end with spaces")
    return value


def implementation(conn: psycopg.Connection) -> str:
    """'extension <version>' for a real PgQ, 'pgtt' for ours, '' if there is no pgq."""
    ext, has_schema = conn.execute(Q_IMPL).fetchone()
    if ext:
        return f"extension {ext}"
    return "pgtt" if has_schema else ""


def _queue_row(conn: psycopg.Connection, queue: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(Q_QUEUE_ROW, (queue,)).fetchone()
    if row is None:
        raise NotFoundError(f'queue "{queue}" does not exist')
    return row


def list_queues(conn: psycopg.Connection) -> list[QueueInfo]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [QueueInfo(**row) for row in cur.execute(Q_QUEUE_INFO).fetchall()]


def queue_info(conn: psycopg.Connection, queue: str) -> QueueInfo:
    check_name("queue", queue)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(Q_ONE_QUEUE_INFO, (queue,)).fetchone()
    if row is None:
        raise NotFoundError(f'queue "{queue}" does not exist')
    return QueueInfo(**row)


def consumers(conn: psycopg.Connection, queue: str | None = None, consumer: str | None = None) -> list[ConsumerInfo]:
    if queue is not None:
        check_name("queue", queue)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(Q_CONSUMER_INFO, (queue, consumer)).fetchall()
    return [ConsumerInfo(**row) for row in rows]


def create_queue(conn: psycopg.Connection, queue: str) -> bool:
    """True if created, False if it existed already."""
    check_name("queue", queue)
    return conn.execute("SELECT pgq.create_queue(%s)", (queue,)).fetchone()[0] == 1


def drop_queue(conn: psycopg.Connection, queue: str, force: bool = False) -> None:
    """force: unregister the consumers first (otherwise a queue with consumers stays)."""
    check_name("queue", queue)
    _queue_row(conn, queue)
    conn.execute("SELECT pgq.drop_queue(%s, %s)", (queue, force))


def set_queue_config(conn: psycopg.Connection, queue: str, param: str, value: str) -> None:
    check_name("queue", queue)
    if param not in QUEUE_PARAMS:
        raise InputError("param", f"{param!r} cannot be changed (choose from {', '.join(QUEUE_PARAMS)})")
    if value is None:
        raise InputError("value", "must not be empty")
    _queue_row(conn, queue)
    conn.execute("SELECT pgq.set_queue_config(%s, %s, %s)", (queue, param, value))


def register(conn: psycopg.Connection, queue: str, consumer: str, tick_id: int | None = None) -> bool:
    """True if newly registered; with tick_id an existing consumer is repositioned there."""
    check_name("queue", queue)
    check_name("consumer", consumer)
    _queue_row(conn, queue)
    if tick_id is None:
        res = conn.execute("SELECT pgq.register_consumer(%s, %s)", (queue, consumer)).fetchone()[0]
    else:
        res = conn.execute("SELECT pgq.register_consumer_at(%s, %s, %s)", (queue, consumer, tick_id)).fetchone()[0]
    return res == 1


def unregister(conn: psycopg.Connection, queue: str, consumer: str) -> bool:
    check_name("queue", queue)
    check_name("consumer", consumer)
    _queue_row(conn, queue)
    res = conn.execute("SELECT pgq.unregister_consumer(%s, %s)", (queue, consumer)).fetchone()[0]
    if not res:
        raise NotFoundError(f'consumer "{consumer}" is not registered on queue "{queue}"')
    return True


def insert_event(conn: psycopg.Connection, queue: str, ev_type: str | None, ev_data: str | None,
                 extra1: str | None = None, extra2: str | None = None, extra3: str | None = None,
                 extra4: str | None = None) -> int:
    check_name("queue", queue)
    _queue_row(conn, queue)
    return conn.execute("SELECT pgq.insert_event(%s, %s, %s, %s, %s, %s, %s)",
                        (queue, ev_type, ev_data, extra1, extra2, extra3, extra4)).fetchone()[0]


def recent_events(conn: psycopg.Connection, queue: str, limit: int = 50,
                  before: tuple[int, int] | None = None) -> EventPage:
    """Newest events first (by inserting transaction, then id), one page; for tails and peeks.

    Reads the queue's event tables directly (retry copies included, ev_owner set), using
    the ev_txid index, so a page costs the same however long the queue is.
    """
    check_name("queue", queue)
    if not 1 <= limit <= 10_000:
        raise InputError("limit", "must be between 1 and 10000")
    row = _queue_row(conn, queue)
    match = _PFX_RE.match(row["queue_data_pfx"])
    if not match:
        raise InputError("queue", f"unexpected event table name {row['queue_data_pfx']!r}")
    query = sql.SQL(Q_EVENTS_PAGE).format(table=sql.Identifier(match.group(1), match.group(2)))
    params = {"before_txid": before[0] if before else None, "before_id": before[1] if before else None,
              "limit": limit}
    with conn.cursor(row_factory=dict_row) as cur:
        events = [EventRow(**r) for r in cur.execute(query, params).fetchall()]
    cursor = (events[-1].ev_txid, events[-1].ev_id) if len(events) == limit else None
    return EventPage(events, cursor)


Q_EVENTS_SINCE = """
SELECT ev_id, ev_time, ev_txid, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4
  FROM {table}
 WHERE ev_txid >= txid_snapshot_xmin(%(prev)s::txid_snapshot)
   AND txid_visible_in_snapshot(ev_txid, %(cur)s::txid_snapshot)
   AND NOT txid_visible_in_snapshot(ev_txid, %(prev)s::txid_snapshot)
 ORDER BY ev_id
"""


def events_since(conn: psycopg.Connection, queue: str, since: str | None) -> tuple[list[EventRow], str]:
    """Events committed after the snapshot ``since`` (text of a txid_snapshot), and the new
    snapshot to pass next time. The same snapshot rule as batches: every event shows up
    exactly once, also from long transactions. ``since=None`` starts from now.
    """
    check_name("queue", queue)
    row = _queue_row(conn, queue)
    match = _PFX_RE.match(row["queue_data_pfx"])
    if not match:
        raise InputError("queue", f"unexpected event table name {row['queue_data_pfx']!r}")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        now = cur.execute("SELECT txid_current_snapshot()::text AS snap").fetchone()["snap"]
        if since is None:
            return [], now
        query = sql.SQL(Q_EVENTS_SINCE).format(table=sql.Identifier(match.group(1), match.group(2)))
        rows = cur.execute(query, {"prev": since, "cur": now}).fetchall()
    return [EventRow(**r) for r in rows], now
