"""Read models for the console's queue and cascade views (engine side, no UI).

Thin compositions of :mod:`engine.pgq.api` and the pgq_node SQL API, so that the console
fetches one snapshot per poll in a worker and the CLI could print the same data.  Every
value is a query parameter; nothing here writes except :func:`set_ticker_paused`, which
is ``pgq.set_queue_config(queue, 'ticker_paused', ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from engine.pgq import api as pgq_api
from engine.pgq import capture

Q_CASCADE_QUEUES = """
SELECT queue_name FROM pgq_node.node_info ORDER BY queue_name
"""
# from the catalog, which every role may read: a role that may not use schema pgq_node
# then gets the permission error of the SELECT, not an empty list (engine.access explains it)
Q_HAS_PGQ_NODE = """
SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'pgq_node' AND c.relname = 'node_info')
"""
Q_HAS_PGQ = "SELECT to_regclass('pgq.queue') IS NOT NULL"


@dataclass
class QueuesSnapshot:
    """Every queue of this database with its consumers (``consumers[queue_name]``) and the
    tables whose capture triggers feed it (``feeders[queue_name]``)."""

    queues: list[pgq_api.QueueInfo]
    consumers: dict[str, list[pgq_api.ConsumerInfo]] = field(default_factory=dict)
    installed: bool = True
    feeders: dict[str, list[str]] = field(default_factory=dict)
    trends: dict[str, Any] | None = None  # engine.views.trends.queue_trends, when the console asked

    def as_dict(self) -> dict[str, Any]:
        return {"installed": self.installed, "queues": [q.as_dict() for q in self.queues],
                "consumers": {k: [c.as_dict() for c in v] for k, v in self.consumers.items()},
                "feeders": self.feeders}


def queues_snapshot(conn: psycopg.Connection) -> QueuesSnapshot:
    """All queues, consumers and capture triggers in three statements (cheap enough for a 1 s poll)."""
    if not conn.execute(Q_HAS_PGQ).fetchone()[0]:
        return QueuesSnapshot([], {}, installed=False)
    queues = pgq_api.list_queues(conn)
    by_queue: dict[str, list[pgq_api.ConsumerInfo]] = {q.queue_name: [] for q in queues}
    for c in pgq_api.consumers(conn):
        by_queue.setdefault(c.queue_name, []).append(c)
    return QueuesSnapshot(queues, by_queue, feeders=capture.tables_by_queue(conn))


def set_ticker_paused(conn: psycopg.Connection, queue: str, paused: bool) -> bool:
    """Pause (True) or resume (False) the ticker of ``queue``; returns the new state."""
    pgq_api.set_queue_config(conn, queue, "ticker_paused", "true" if paused else "false")
    return paused


def cascade_queues(conn: psycopg.Connection) -> list[str] | None:
    """The queues this database takes part in as a cascade node: empty when it is none, None
    when pgq_node (ours or the real extension) is not installed; a role that may not read
    pgq_node.node_info gets the server's permission error."""
    if not conn.execute(Q_HAS_PGQ_NODE).fetchone()[0]:
        return None
    return [r[0] for r in conn.execute(Q_CASCADE_QUEUES).fetchall()]
