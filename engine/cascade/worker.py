"""The cascaded worker: one per node and queue (``pgtt-tui worker --modules cascade``).

Each loop (reference/pgq.md §b.4, seeds/004 "cascaded worker flow"):

1. target (this node): ``get_worker_state``; acknowledge flag changes with
   ``set_consumer_uptodate(true)``; if paused, sleep;
2. root: tick the queue if asked to (``root_ticker``) and publish the global watermark
   (``set_global_watermark(q, NULL)``) every ``global_wm_period``; nothing else;
3. provider: ``pgq.next_batch_info``; none → publish the local watermark now and then, sleep;
4. batch already applied (completed tick = batch's tick) → repair a missing local tick
   (crash between the commit and the tick) and ``finish_batch``; completed ≠ prev tick → lost
   position: error;
5. provider: ``get_batch_events``;
6. target, ONE transaction: branch copies every event keeping ``ev_id`` with
   ``pgq.insert_event_raw`` (``session_replication_role = replica``), applies ``pgq.*`` control
   events (locations, global watermark, partition watermark), hands data events to the
   handler (leaf sink), merge-leaf copies data events into the combined queue plus a
   ``pgq.tick-id`` event; then ``set_consumer_completed(cur_tick)``; COMMIT;
7. branch: create the identical tick ``pgq.ticker(q, tick_id, tick_time, event_seq)``;
8. provider: ``set_subscriber_watermark`` every ``wm_publish_period``; ``finish_batch``.

Timing: the watermark periods (``wm_publish_period``, ``global_wm_period``) are measured on
``ctx.clock`` (a FakeClock in tests moves them without waiting), and ``last_batch_at`` is a
clock time.  The idle pause between polls (``loop_delay``, ``provider_retry``) is real time on
purpose: it paces round trips to the databases, it decides nothing, and a FakeClock (whose
``sleep_until`` returns at once) would turn it into a busy loop against the servers.

Crash anywhere: the target commit (7) happens before ``finish_batch``, so the replayed batch
is recognised in step 4.  Provider errors do not stop the loop (pause requests are still
acknowledged while a provider is dead); target errors are raised (the supervisor restarts
the service with back-off).  Works on our schema and on the real extensions.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.clock import Clock, SystemClock
from engine.db import ConnSettings, aconnect, redact, translate_db_error
from engine.errors import ConnectError, InputError

log = logging.getLogger("pgtt.cascade")

SQL_WORKER_STATE = "SELECT * FROM pgq_node.get_worker_state(%s)"
SQL_CONSUMER_STATE = "SELECT * FROM pgq_node.get_consumer_state(%s, %s)"
SQL_NEXT_BATCH = "SELECT * FROM pgq.next_batch_info(%s, %s)"
SQL_BATCH_EVENTS = ("SELECT ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, "
                    "ev_extra4 FROM pgq.get_batch_events(%s)")
SQL_FINISH = "SELECT pgq.finish_batch(%s)"
SQL_COPY_EVENTS = """
SELECT count(pgq.insert_event_raw(%s, e.ev_id, e.ev_time, NULL, NULL, e.ev_type, e.ev_data,
                                  e.ev_extra1, e.ev_extra2, e.ev_extra3, e.ev_extra4))
FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
     AS e(ev_id, ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
"""
SQL_MERGE_EVENTS = """
SELECT count(pgq.insert_event_raw(%s, NULL, e.ev_time, NULL, NULL, e.ev_type, e.ev_data,
                                  e.ev_extra1, e.ev_extra2, e.ev_extra3, e.ev_extra4))
FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
     AS e(ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4)
"""
SQL_TICK = "SELECT pgq.ticker(%s, %s, %s, %s)"
SQL_LOCAL_TOP = "SELECT last_tick_id FROM pgq.get_queue_info(%s)"
# Lag samples for the console's cascade chart (issue 18), into this node's own database: the
# lag behind the root is the age of the tick this node has completed (ticks carry the root's
# tick_time on every node). A root or branch reads it from its own queue (its newest tick is
# the completed one); a leaf has no queue and uses the last batch's tick time.
SQL_HAS_SAMPLES = "SELECT to_regclass('pgtt.cascade_sample') IS NOT NULL"
SQL_LOCAL_LAG = "SELECT last_tick_id, extract(epoch FROM ticker_lag) AS lag FROM pgq.get_queue_info(%s)"
SQL_SAMPLE = """
INSERT INTO pgtt.cascade_sample (queue_name, node_name, sampled_at, tick_id, lag_s)
VALUES (%(queue)s, %(node)s, now(), %(tick)s,
        coalesce(%(lag)s, extract(epoch FROM now() - %(tick_time)s::timestamptz)))
ON CONFLICT DO NOTHING
"""
SQL_PRUNE_SAMPLES = """
DELETE FROM pgtt.cascade_sample
WHERE queue_name = %(queue)s AND node_name = %(node)s AND sampled_at < now() - %(keep)s::interval
"""


@dataclass
class Batch:
    batch_id: int
    prev_tick: int
    tick: int
    tick_time: Any
    tick_event_seq: int
    events: list[dict[str, Any]] = field(default_factory=list)


#: A handler gets the open target connection (inside the batch transaction), the batch and
#: its data events (``pgq.*`` events are applied by the worker); it must not commit.
Handler = Callable[[psycopg.AsyncConnection, Batch, list[dict[str, Any]]], Awaitable[None]]


class TableSink:
    """Leaf handler: store every data event in a table, in the batch transaction."""

    def __init__(self, table: str):
        parts = table.split(".")
        if len(parts) > 2 or not all(parts):
            raise InputError("--cascade-sink-table", f"{table!r} is not table or schema.table")
        self.ident = sql.Identifier(*parts)
        self._ready = False

    async def ensure(self, conn: psycopg.AsyncConnection) -> None:
        if self._ready:
            return
        await conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (ev_id bigint NOT NULL, ev_time timestamptz, ev_type text, ev_data text, "
            "ev_extra1 text, ev_extra2 text, ev_extra3 text, ev_extra4 text, tick_id bigint NOT NULL, "
            "stored_at timestamptz NOT NULL DEFAULT clock_timestamp())").format(self.ident))
        self._ready = True

    async def __call__(self, conn: psycopg.AsyncConnection, batch: Batch, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        cols = _columns(events)
        await conn.execute(sql.SQL(
            "INSERT INTO {} (ev_id, ev_time, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4, tick_id) "
            "SELECT *, %s FROM unnest(%s::bigint[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::text[])").format(self.ident), (batch.tick, *cols))


def _columns(events: list[dict[str, Any]], with_id: bool = True) -> list[list[Any]]:
    names = (["ev_id"] if with_id else []) + ["ev_time", "ev_type", "ev_data", "ev_extra1", "ev_extra2",
                                               "ev_extra3", "ev_extra4"]
    return [[e[n] for e in events] for n in names]


class LostPosition(Exception):
    pass


class CascadedWorker:
    """The worker of one node for one queue (or, with ``consumer``, a plain cascaded consumer)."""

    def __init__(self, queue: str, *, consumer: str | None = None, handler: Handler | None = None,
                 loop_delay: float = 1.0, wm_publish_period: float = 60.0, global_wm_period: float = 60.0,
                 root_ticker: bool = False, provider_retry: float = 2.0, sample_period: float = 10.0,
                 sample_keep: float = 86400.0):
        if not queue:
            raise InputError("--cascade-queue", "is empty")
        self.queue = queue
        self.consumer = consumer
        self.handler = handler
        self.loop_delay = loop_delay
        self.wm_publish_period = wm_publish_period
        self.global_wm_period = global_wm_period
        self.root_ticker = root_ticker
        self.provider_retry = provider_retry
        self.name = f"cascade:{queue}" + (f":{consumer}" if consumer else "")
        self.target: psycopg.AsyncConnection | None = None
        self.provider: psycopg.AsyncConnection | None = None
        self.provider_location: str | None = None
        self.state: dict[str, Any] = {}
        self.batches = 0
        self.events = 0
        self.skipped = 0
        self.repaired_ticks = 0
        self.last_error = ""
        self.clock: Clock = SystemClock()
        self.last_batch_at: datetime | None = None  # clock time of the last applied batch
        self._last_wm_publish: datetime | None = None  # clock times; None = never
        self._last_global_wm: datetime | None = None
        self.wm_publications = 0
        self.global_wm_publications = 0
        self._status = "starting"
        self._settings: ConnSettings | None = None
        self.sample_period = sample_period
        self.sample_keep = sample_keep
        self.samples = 0
        self._last_sample: datetime | None = None  # clock time
        self._has_samples: bool | None = None  # pgtt.cascade_sample in the target database
        self._tick_time: datetime | None = None  # tick time of the last batch applied (leaves)
        self._tick_id: int | None = None

    # -- service protocol ---------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        ok = self._status in ("running", "idle", "paused", "root")
        return {"ok": ok, "detail": f"{self._status}; batches {self.batches}, events {self.events}"
                                    + (f"; last error: {self.last_error}" if self.last_error else "")}

    def metrics(self) -> list:
        from engine.worker import Metric  # noqa: PLC0415 - avoid an import cycle

        labels = {"queue": self.queue, "consumer": self.consumer or str(self.state.get("worker_name") or "")}
        return [Metric("pgtt_cascade_batches_total", self.batches, labels, "counter", "batches applied"),
                Metric("pgtt_cascade_events_total", self.events, labels, "counter", "events applied"),
                Metric("pgtt_cascade_skipped_batches_total", self.skipped, labels, "counter",
                       "replayed batches recognised as done"),
                Metric("pgtt_cascade_repaired_ticks_total", self.repaired_ticks, labels, "counter",
                       "missing local ticks created after a crash"),
                Metric("pgtt_cascade_completed_tick", float(self.state.get("completed_tick") or 0), labels,
                       "gauge", "last tick applied on this node")]

    async def run(self, ctx) -> None:
        self._settings = ctx.settings
        self.clock = getattr(ctx, "clock", None) or self.clock
        try:
            while not ctx.stopping.is_set():
                worked = await self.step()
                if not worked:
                    try:
                        await asyncio.wait_for(ctx.stopping.wait(), timeout=self._idle_delay())
                    except TimeoutError:
                        pass
        finally:
            await self.close()

    def _idle_delay(self) -> float:
        return self.provider_retry if self._status == "provider unreachable" else self.loop_delay

    async def close(self) -> None:
        for conn in (self.target, self.provider):
            if conn is not None and not conn.closed:
                await conn.close()
        self.target = self.provider = None

    # -- one iteration ------------------------------------------------------------------
    async def connect_target(self, settings: ConnSettings) -> None:
        self._settings = settings
        if self.target is None or self.target.closed or self.target.broken:
            self.target = await aconnect(settings.with_app(f"pgtt-tui cascade {self.queue}"))

    async def _row(self, conn: psycopg.AsyncConnection, query: str, params: tuple = ()) -> dict[str, Any] | None:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchone() if cur.description else None

    async def step(self) -> bool:
        """One loop iteration; True when a batch was handled (loop again at once)."""
        assert self._settings is not None
        await self.connect_target(self._settings)
        t = self.target
        if self.consumer:
            st = await self._row(t, SQL_CONSUMER_STATE, (self.queue, self.consumer))
            if st and st["ret_code"] < 400:
                st["worker_name"] = self.consumer
                st["combined_queue"] = None
        else:
            st = await self._row(t, SQL_WORKER_STATE, (self.queue,))
        if st is None or st["ret_code"] >= 400:
            self._status = f"not set up: {st['ret_note'] if st else 'no answer'}"
            return False
        self.state = st
        me = st["worker_name"]
        await self._maybe_sample(st)
        if not st["uptodate"]:
            await t.execute("SELECT * FROM pgq_node.set_consumer_uptodate(%s, %s, true)", (self.queue, me))
        if st["paused"]:
            self._status = "paused"
            return False
        if st["node_type"] == "root" and not self.consumer:
            self._status = "root"
            await self._root_duties()
            return False
        try:
            await self._connect_provider(st["provider_location"])
            batch = await self._next_batch(me)
        except (psycopg.OperationalError, ConnectError) as exc:
            await self._provider_failed(me, exc)
            return False
        if batch is None:
            self._status = "idle"
            await self._maybe_publish_wm(st)
            return False
        try:
            return await self._process(st, batch)
        except (psycopg.OperationalError, ConnectError) as exc:
            if self.target is None or self.target.closed or self.target.broken:
                raise
            await self._provider_failed(me, exc)
            return False

    async def _provider_failed(self, me: str, exc: BaseException) -> None:
        msg = translate_db_error(exc) if isinstance(exc, psycopg.Error) else str(exc)
        self.last_error = f"provider: {msg}"
        self._status = "provider unreachable"
        log.warning("%s: provider %s: %s", self.name, redact(self.provider_location or ""), msg)
        if self.provider is not None:
            try:
                await self.provider.close()
            except psycopg.Error:
                pass
        self.provider = None
        try:
            await self.target.execute("SELECT * FROM pgq_node.set_consumer_error(%s, %s, %s)",
                                      (self.queue, me, self.last_error[:500]))
        except psycopg.Error:
            pass

    async def _connect_provider(self, location: str) -> None:
        if location != self.provider_location or self.provider is None or self.provider.closed \
                or self.provider.broken:
            if self.provider is not None and not self.provider.closed:
                await self.provider.close()
            self.provider = None
            self.provider_location = location
            self.provider = await aconnect(ConnSettings(dsn=location, application_name=f"pgtt-tui cascade "
                                                        f"{self.queue} provider", connect_timeout=5))

    async def _next_batch(self, me: str) -> Batch | None:
        row = await self._row(self.provider, SQL_NEXT_BATCH, (self.queue, me))
        if row is None or row["batch_id"] is None:
            return None
        return Batch(row["batch_id"], row["prev_tick_id"], row["cur_tick_id"], row["cur_tick_time"],
                     row["cur_tick_event_seq"])

    async def _root_duties(self) -> None:
        t = self.target
        if self.root_ticker:
            await t.execute("SELECT pgq.ticker(%s)", (self.queue,))
        now = self.clock.now()
        if _due(self._last_global_wm, now, self.global_wm_period):
            self._last_global_wm = now
            await t.execute("SELECT * FROM pgq_node.set_global_watermark(%s, NULL)", (self.queue,))
            self.global_wm_publications += 1

    async def _maybe_sample(self, st: dict[str, Any]) -> None:
        """At most every ``sample_period`` (on the clock), also while paused: one lag sample of
        this node, and its samples older than ``sample_keep`` pruned (a few rows by the primary
        key each time). Never fails the worker: a sample is not worth a restart."""
        if self.consumer:
            return
        now = self.clock.now()
        if not _due(self._last_sample, now, self.sample_period):
            return
        self._last_sample = now
        t = self.target
        try:
            if self._has_samples is None:
                cur = await t.execute(SQL_HAS_SAMPLES)
                self._has_samples = bool((await cur.fetchone())[0])
            if not self._has_samples:
                return
            tick, lag = st.get("completed_tick"), None
            if st["node_type"] in ("root", "branch"):
                row = await self._row(t, SQL_LOCAL_LAG, (self.queue,))
                if row is not None:
                    tick, lag = row["last_tick_id"], row["lag"]
            tick_time = self._tick_time if self._tick_id is not None and self._tick_id == tick else None
            await t.execute(SQL_SAMPLE, {"queue": self.queue, "node": st["node_name"], "tick": tick, "lag": lag,
                                         "tick_time": tick_time})
            await t.execute(SQL_PRUNE_SAMPLES, {"queue": self.queue, "node": st["node_name"],
                                                "keep": timedelta(seconds=self.sample_keep)})
            self.samples += 1
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.warning("%s: lag sample: %s", self.name, translate_db_error(exc))

    async def _local_top(self) -> int | None:
        row = await self._row(self.target, SQL_LOCAL_TOP, (self.queue,))
        return row["last_tick_id"] if row else None

    async def _create_tick(self, batch: Batch) -> None:
        await self.target.execute(SQL_TICK, (self.queue, batch.tick, batch.tick_time, batch.tick_event_seq))

    async def _process(self, st: dict[str, Any], batch: Batch) -> bool:
        me = st["worker_name"]
        completed = st["completed_tick"]
        is_branch = st["node_type"] == "branch" and not self.consumer
        combined_type = st.get("combined_type")
        if completed is not None and completed >= batch.tick and combined_type == "branch":
            # merge-leaf behind its combined branch: skip without processing
            await self.provider.execute(SQL_FINISH, (batch.batch_id,))
            self.skipped += 1
            return True
        if completed == batch.tick:
            # applied before a crash: make sure the local tick exists, then close the batch
            if is_branch:
                top = await self._local_top()
                if top is None or top < batch.tick:
                    await self._create_tick(batch)
                    self.repaired_ticks += 1
                    log.info("%s: created missing tick %s", self.name, batch.tick)
            await self.provider.execute(SQL_FINISH, (batch.batch_id,))
            self.skipped += 1
            return True
        if combined_type == "branch":
            # merge-leaf on a combined branch waits behind the combined branch's position
            self._status = "waiting behind the combined branch"
            return False
        if completed != batch.prev_tick:
            msg = f"Lost position: batch {batch.prev_tick}..{batch.tick}, dst has {completed}"
            await self.target.execute("SELECT * FROM pgq_node.set_consumer_error(%s, %s, %s)",
                                      (self.queue, me, msg))
            self.last_error = msg
            self._status = "lost position"
            raise LostPosition(msg)
        async with self.provider.cursor(row_factory=dict_row) as cur:
            await cur.execute(SQL_BATCH_EVENTS, (batch.batch_id,))
            batch.events = await cur.fetchall()
        if isinstance(self.handler, TableSink):
            await self.handler.ensure(self.target)
        t = self.target
        async with t.transaction():
            if is_branch and batch.events:
                await t.execute("SET LOCAL session_replication_role = replica")
                await t.execute(SQL_COPY_EVENTS, (self.queue, *_columns(batch.events)))
            data = [e for e in batch.events if not (e["ev_type"] or "").startswith("pgq.")]
            control = [e for e in batch.events if (e["ev_type"] or "").startswith("pgq.")]
            for ev in control:
                await self._apply_control(st, ev)
            if st.get("combined_queue") and combined_type == "root":
                if data:
                    await t.execute(SQL_MERGE_EVENTS, (st["combined_queue"], *_columns(data, with_id=False)))
                await t.execute("SELECT pgq.insert_event(%s, 'pgq.tick-id', %s, %s, NULL, NULL, NULL)",
                                (st["combined_queue"], str(batch.tick), self.queue))
            if self.handler is not None:
                await self.handler(t, batch, data)
            await t.execute("SELECT * FROM pgq_node.set_consumer_completed(%s, %s, %s)",
                            (self.queue, me, batch.tick))
        if is_branch:
            await self._create_tick(batch)
        await self._maybe_publish_wm(st)
        await self.provider.execute(SQL_FINISH, (batch.batch_id,))
        self.batches += 1
        self.events += len(batch.events)
        self.last_batch_at = self.clock.now()
        self.last_error = ""
        self._status = "running"
        st["completed_tick"] = batch.tick
        self._tick_id, self._tick_time = batch.tick, batch.tick_time
        return True

    async def _apply_control(self, st: dict[str, Any], ev: dict[str, Any]) -> None:
        t = self.target
        kind = ev["ev_type"]
        if self.consumer:
            return
        if kind == "pgq.location-info":
            dead = (ev["ev_extra3"] or "false").lower() in ("true", "t", "1")
            await t.execute("SELECT * FROM pgq_node.register_location(%s, %s, %s, %s)",
                            (self.queue, ev["ev_data"], ev["ev_extra2"], dead))
        elif kind == "pgq.unregister-location":
            await t.execute("SELECT * FROM pgq_node.unregister_location(%s, %s)", (self.queue, ev["ev_data"]))
        elif kind == "pgq.global-watermark":
            if st["node_type"] == "branch":
                await t.execute("SELECT * FROM pgq_node.set_global_watermark(%s, %s)",
                                (self.queue, int(ev["ev_data"])))
        elif kind == "pgq.tick-id":
            if st["node_type"] == "branch":
                await t.execute("SELECT * FROM pgq_node.set_partition_watermark(%s, %s, %s)",
                                (self.queue, ev["ev_extra1"], int(ev["ev_data"])))
        else:
            log.warning("%s: unknown control event %s ignored", self.name, kind)

    async def _maybe_publish_wm(self, st: dict[str, Any]) -> None:
        if self.consumer or st["node_type"] == "root" or self.provider is None:
            return
        now = self.clock.now()
        if not _due(self._last_wm_publish, now, self.wm_publish_period):
            return
        wm = st["local_watermark"] if st["node_type"] == "branch" else st.get("completed_tick")
        if wm is None:
            return
        self._last_wm_publish = now
        await self.provider.execute("SELECT * FROM pgq_node.set_subscriber_watermark(%s, %s, %s)",
                                    (self.queue, st["node_name"], wm))
        self.wm_publications += 1


def _due(last: datetime | None, now: datetime, period: float) -> bool:
    """True when ``period`` seconds have passed since ``last`` (or it never happened).  A clock
    that went backwards (wall clock stepped) counts as due, so a publication is never stuck."""
    if last is None or now < last:
        return True
    return (now - last).total_seconds() >= period


def build_services(options) -> list[CascadedWorker]:
    """``SERVICE_FACTORIES["cascade"]``: one worker per ``--cascade-queue``."""
    opts = options.for_module("cascade")
    queues = opts.get("queues") or []
    if isinstance(queues, str):
        queues = [q.strip() for q in queues.split(",") if q.strip()]
    if not queues:
        raise InputError("--cascade-queue", "name at least one cascaded queue for the cascade worker")
    sink = opts.get("sink_table")
    services = []
    for queue in queues:
        services.append(CascadedWorker(
            queue, consumer=opts.get("consumer") or None, handler=TableSink(sink) if sink else None,
            loop_delay=float(opts.get("loop_delay", 1.0)),
            wm_publish_period=float(opts.get("wm_publish_period", 60.0)),
            global_wm_period=float(opts.get("global_wm_period", 60.0)),
            root_ticker=bool(opts.get("root_ticker", False))))
    return services
