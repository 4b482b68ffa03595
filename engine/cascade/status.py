"""Cascade topology and status across every node named in the locations table.

``collect_status(dsn, queue)`` connects to one member, reads its node map
(``pgq_node.get_queue_locations``), then asks every member for ``get_node_info``,
``get_worker_state``-like numbers and ``pgq.get_queue_info`` and builds a tree rooted at the
root node.  Unreachable and dead nodes are reported, never fatal.  Works on our schema
and on the real pgq / pgq_node extensions (same API).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from engine.views import trends
from engine.cascade.plan import NodeRef
from engine.db import ConnSettings, connect, redact, translate_db_error
from engine.errors import ConnectError, InputError, NotFoundError

NODE_INFO_SQL = "SELECT * FROM pgq_node.get_node_info(%s)"
LOCATIONS_SQL = "SELECT node_name, node_location, dead FROM pgq_node.get_queue_locations(%s) ORDER BY node_name"
QUEUE_INFO_SQL = "SELECT last_tick_id, ticker_lag, ev_new FROM pgq.get_queue_info(%s)"
CONSUMERS_SQL = "SELECT * FROM pgq_node.get_consumer_info(%s)"
SUBSCRIBERS_SQL = "SELECT * FROM pgq_node.get_subscriber_info(%s)"


@dataclass
class NodeStatus:
    name: str
    location: str
    dead: bool = False
    reachable: bool = True
    error: str = ""
    node_type: str | None = None
    provider: str | None = None
    worker: str | None = None
    paused: bool | None = None
    uptodate: bool | None = None
    last_tick: int | None = None  # completed tick (newest tick on the root)
    queue_top: int | None = None
    global_watermark: int | None = None
    local_watermark: int | None = None
    ticker_lag: float | None = None  # seconds since the newest tick (queue nodes)
    lag_ticks: int | None = None  # ticks behind the root
    cur_error: str | None = None
    combined_queue: str | None = None
    subscribers: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["location"] = redact(self.location)
        return d

    @property
    def ref(self) -> NodeRef:
        return NodeRef(self.name, self.location, self.dead)


@dataclass
class CascadeStatus:
    queue: str
    nodes: dict[str, NodeStatus]
    root: str | None
    #: per node, its sampled lag behind the root (engine.trends.cascade_lag, read on the node's
    #: own database) when collect_status was asked for it (``lag_now``); not part of as_dict
    lag: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "root": self.root, "nodes": [n.as_dict() for n in self.nodes.values()],
                "tree": self.tree_lines()}

    def tree_lines(self) -> list[str]:
        """The topology as indented lines, root first; orphans (no reachable provider) after."""
        lines: list[str] = []
        seen: set[str] = set()

        def describe(n: NodeStatus) -> str:
            if not n.reachable:
                return f"{n.name} ({'dead, ' if n.dead else ''}unreachable: {n.error})"
            bits = [n.node_type or "?"]
            if n.dead:
                bits.append("DEAD")
            if n.paused:
                bits.append("PAUSED")
            bits.append(f"tick {n.last_tick}")
            if n.lag_ticks:
                bits.append(f"behind {n.lag_ticks}")
            if n.cur_error:
                bits.append(f"error: {n.cur_error}")
            return f"{n.name} ({', '.join(bits)})"

        def walk(name: str, depth: int) -> None:
            if name in seen:
                return
            seen.add(name)
            node = self.nodes[name]
            lines.append("  " * depth + ("+-- " if depth else "") + describe(node))
            for child in sorted(node.children):
                walk(child, depth + 1)

        if self.root:
            walk(self.root, 0)
        for name in sorted(self.nodes):
            if name not in seen:
                walk(name, 0)
        return lines

    def node(self, name: str) -> NodeStatus:
        if name not in self.nodes:
            raise NotFoundError(f"node {name!r} is not a member of queue {self.queue!r} "
                                f"(members: {', '.join(sorted(self.nodes))})")
        return self.nodes[name]

    def refs(self) -> list[NodeRef]:
        return [n.ref for n in self.nodes.values()]


def status_to_dict(st: CascadeStatus) -> dict[str, Any]:
    """The status as plain data for a plan record (locations redacted, as everywhere on disk)."""
    return {"queue": st.queue, "root": st.root, "nodes": [n.as_dict() for n in st.nodes.values()]}


def status_from_dict(data: dict[str, Any]) -> CascadeStatus:
    nodes = {n["name"]: NodeStatus(**n) for n in data["nodes"]}
    return CascadeStatus(data["queue"], nodes, data["root"])


def node_settings(location: str, app: str = "pgtt-tui cascade", timeout: int = 5) -> ConnSettings:
    return ConnSettings(dsn=location, application_name=app, connect_timeout=timeout)


def read_locations(conn: psycopg.Connection, queue: str) -> list[tuple[str, str, bool]]:
    return [tuple(r) for r in conn.execute(LOCATIONS_SQL, (queue,)).fetchall()]


def node_info(conn: psycopg.Connection, queue: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(NODE_INFO_SQL, (queue,))
        row = cur.fetchone()
    return row if row and row["ret_code"] < 400 else None


def _probe(queue: str, name: str, location: str, dead: bool, timeout: int, lag_now: Any = None,
           lag_since: Any = None) -> tuple[NodeStatus, list[tuple[str, str, bool]], dict[str, Any] | None]:
    """One member's status, the member locations it knows (see collect_status) and, when
    ``lag_now`` is given, its sampled lag (engine.trends.cascade_lag)."""
    st = NodeStatus(name=name, location=location, dead=dead)
    known: list[tuple[str, str, bool]] = []
    samples: dict[str, Any] | None = None
    try:
        with connect(node_settings(location, timeout=timeout)) as conn:
            known = read_locations(conn, queue)
            if lag_now is not None:
                samples = trends.cascade_lag(conn, queue, lag_now, since=lag_since)
            info = node_info(conn, queue)
            if info is None:
                st.error = f"queue {queue} not set up on this node"
                return st, known, samples
            st.node_type = info["node_type"]
            st.provider = info["provider_node"]
            st.worker = info["worker_name"]
            st.paused = info["worker_paused"]
            st.uptodate = info["worker_uptodate"]
            st.last_tick = info["worker_last_tick"]
            st.global_watermark = info["global_watermark"]
            st.local_watermark = info["local_watermark"]
            st.combined_queue = info["combined_queue"]
            with conn.cursor(row_factory=dict_row) as cur:
                for row in cur.execute(CONSUMERS_SQL, (queue,)).fetchall():
                    if row["consumer_name"] == st.worker:
                        st.cur_error = row["cur_error"]
                st.subscribers = [r["node_name"] for r in cur.execute(SUBSCRIBERS_SQL, (queue,)).fetchall()]
                if st.node_type in ("root", "branch"):
                    q = cur.execute(QUEUE_INFO_SQL, (queue,)).fetchone()
                    if q:
                        st.queue_top = q["last_tick_id"]
                        lag = q["ticker_lag"]
                        st.ticker_lag = lag.total_seconds() if lag is not None else None
    except ConnectError as exc:
        st.reachable = False
        st.error = str(exc).split(": ", 1)[-1][:160]
    except psycopg.Error as exc:
        st.reachable = False
        st.error = translate_db_error(exc)
    return st, known, samples


def collect_status(dsn: str, queue: str, *, timeout: int = 5, lag_now: Any = None,
                   lag_since: Any = None) -> CascadeStatus:
    """Status of every member of ``queue`` as seen from the node at ``dsn``; with ``lag_now``
    also each member's sampled lag behind the root up to then (from ``lag_since`` on: the
    console's incremental read), in ``CascadeStatus.lag``."""
    if not queue:
        raise InputError("--queue", "is empty")
    with connect(node_settings(dsn, timeout=timeout)) as conn:
        if conn.execute("SELECT to_regproc('pgq_node.get_node_info') IS NULL").fetchone()[0]:
            raise NotFoundError("pgq_node is not installed in this database (pgtt-tui db init --modules pgq_node, "
                                "or CREATE EXTENSION pgq_node)")
        locations = read_locations(conn, queue)
        local = node_info(conn, queue)
    if not locations and local is None:
        raise NotFoundError(f"queue {queue!r} has no cascade on this node")
    # Members learn each other's locations from their provider through their worker, so a
    # node whose worker was paused (or is behind) may not know a member added since: every
    # member answering tells the locations it knows, and unknown ones are probed too, until
    # nobody names a new member.  A failover planned from such a node must still see the
    # most advanced branch.
    nodes: dict[str, NodeStatus] = {}
    lags: dict[str, dict[str, Any]] = {}
    wanted = list(locations)
    with ThreadPoolExecutor(max_workers=8) as pool:
        while wanted:
            futures = [pool.submit(_probe, queue, name, loc, dead, timeout, lag_now, lag_since)
                       for name, loc, dead in wanted]
            wanted = []
            for future in futures:
                st, known, lag = future.result()
                nodes[st.name] = st
                if lag is not None:
                    lags[st.name] = lag
                for name, loc, dead in known:
                    if name not in nodes and all(name != w[0] for w in wanted):
                        wanted.append((name, loc, dead))
    root = next((n.name for n in nodes.values() if n.node_type == "root" and not n.dead), None)
    top = nodes[root].last_tick if root else None
    for n in nodes.values():
        if n.provider and n.provider in nodes and n.provider != n.name:
            nodes[n.provider].children.append(n.name)
        if top is not None and n.last_tick is not None:
            n.lag_ticks = max(0, top - n.last_tick)
    return CascadeStatus(queue, nodes, root, lag=lags)
