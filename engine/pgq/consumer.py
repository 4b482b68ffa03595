"""The PgQ consumer batch loop: next_batch → get_batch_events → process → finish_batch.

Used by the cascade worker and by tests; works against our ``pgq`` and the real extension.

- ``next_batch`` is committed on its own, so after a crash between it and
  ``finish_batch`` PgQ hands out the same batch again (the handler must tolerate seeing
  a batch twice unless it commits its work atomically with the finish, see ``same_tx``);
- an event the handler tags with ``retry(seconds)`` goes to PgQ's retry queue
  (``event_retry``) in the same transaction as ``finish_batch``; it comes back, to this
  consumer only, after the delay (once the ticker's maintenance has moved it back);
- ``same_tx=True`` runs the handler, the retries and ``finish_batch`` in ONE transaction
  on the queue's connection: for consumers whose work is in the same database, exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

Q_NEXT = "SELECT * FROM pgq.next_batch_custom(%s, %s, %s, %s, %s)"
Q_EVENTS = "SELECT * FROM pgq.get_batch_events(%s)"
Q_RETRY = "SELECT pgq.event_retry(%s, %s, %s::integer)"
Q_FINISH = "SELECT pgq.finish_batch(%s)"
Q_REGISTER = "SELECT pgq.register_consumer(%s, %s)"
Q_REGISTER_AT = "SELECT pgq.register_consumer_at(%s, %s, %s)"
Q_UNREGISTER = "SELECT pgq.unregister_consumer(%s, %s)"


@dataclass
class Event:
    ev_id: int
    ev_time: datetime
    ev_txid: int
    ev_retry: int | None
    ev_type: str | None
    ev_data: str | None
    ev_extra1: str | None = None
    ev_extra2: str | None = None
    ev_extra3: str | None = None
    ev_extra4: str | None = None
    retry_seconds: int | None = field(default=None, compare=False)

    def retry(self, seconds: int = 60) -> None:
        """Process this event again later (for this consumer only)."""
        self.retry_seconds = max(0, int(seconds))


@dataclass
class Batch:
    batch_id: int
    cur_tick_id: int
    prev_tick_id: int
    cur_tick_time: datetime
    prev_tick_time: datetime
    cur_tick_event_seq: int
    prev_tick_event_seq: int
    events: list[Event] = field(default_factory=list)

    @property
    def retried(self) -> list[Event]:
        return [e for e in self.events if e.retry_seconds is not None]


Handler = Callable[[Batch], Any]
AsyncHandler = Callable[[Batch], Awaitable[Any]]


@dataclass
class Consumer:
    queue: str
    name: str
    min_lag: timedelta | None = None
    min_count: int | None = None
    min_interval: timedelta | None = None
    idle_sleep: float = 1.0
    batches: int = field(default=0, init=False)
    events: int = field(default=0, init=False)
    retries: int = field(default=0, init=False)

    @property
    def _next_args(self) -> tuple:
        return (self.queue, self.name, self.min_lag, self.min_count, self.min_interval)

    def _batch(self, row: dict[str, Any] | None) -> Batch | None:
        if row is None or row["batch_id"] is None:
            return None
        return Batch(**row)

    def _count(self, batch: Batch) -> None:
        self.batches += 1
        self.events += len(batch.events)
        self.retries += len(batch.retried)

    # -- synchronous ------------------------------------------------------------------------
    def register(self, conn: psycopg.Connection, tick_id: int | None = None) -> bool:
        if tick_id is None:
            return conn.execute(Q_REGISTER, (self.queue, self.name)).fetchone()[0] == 1
        return conn.execute(Q_REGISTER_AT, (self.queue, self.name, tick_id)).fetchone()[0] == 1

    def unregister(self, conn: psycopg.Connection) -> bool:
        return conn.execute(Q_UNREGISTER, (self.queue, self.name)).fetchone()[0] > 0

    def next_batch(self, conn: psycopg.Connection) -> Batch | None:
        """Open (or re-open after a crash) the next batch and load its events."""
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            batch = self._batch(cur.execute(Q_NEXT, self._next_args).fetchone())
        if batch is not None:
            with conn.cursor(row_factory=dict_row) as cur:
                batch.events = [Event(**r) for r in cur.execute(Q_EVENTS, (batch.batch_id,)).fetchall()]
        return batch

    def finish(self, conn: psycopg.Connection, batch: Batch) -> None:
        """Queue the retried events and close the batch, in one transaction."""
        with conn.transaction():
            self._finish_statements(conn, batch)

    def _finish_statements(self, conn: psycopg.Connection, batch: Batch) -> None:
        for ev in batch.retried:
            conn.execute(Q_RETRY, (batch.batch_id, ev.ev_id, ev.retry_seconds))
        conn.execute(Q_FINISH, (batch.batch_id,))

    def process_one(self, conn: psycopg.Connection, handler: Handler, *, same_tx: bool = False) -> Batch | None:
        """One batch through ``handler``; None when there is no batch yet."""
        batch = self.next_batch(conn)
        if batch is None:
            return None
        if same_tx:
            with conn.transaction():
                handler(batch)
                self._finish_statements(conn, batch)
        else:
            handler(batch)
            self.finish(conn, batch)
        self._count(batch)
        return batch

    def run(self, conn: psycopg.Connection, handler: Handler, *, same_tx: bool = False,
            should_stop: Callable[[], bool] = lambda: False, sleep=time.sleep) -> None:
        while not should_stop():
            if self.process_one(conn, handler, same_tx=same_tx) is None:
                sleep(self.idle_sleep)

    # -- asyncio ----------------------------------------------------------------------------
    async def anext_batch(self, conn: psycopg.AsyncConnection) -> Batch | None:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(Q_NEXT, self._next_args)
            batch = self._batch(await cur.fetchone())
        if batch is not None:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(Q_EVENTS, (batch.batch_id,))
                batch.events = [Event(**r) for r in await cur.fetchall()]
        return batch

    async def _afinish_statements(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        for ev in batch.retried:
            await conn.execute(Q_RETRY, (batch.batch_id, ev.ev_id, ev.retry_seconds))
        await conn.execute(Q_FINISH, (batch.batch_id,))

    async def afinish(self, conn: psycopg.AsyncConnection, batch: Batch) -> None:
        async with conn.transaction():
            await self._afinish_statements(conn, batch)

    async def aprocess_one(self, conn: psycopg.AsyncConnection, handler: AsyncHandler, *,
                           same_tx: bool = False) -> Batch | None:
        batch = await self.anext_batch(conn)
        if batch is None:
            return None
        if same_tx:
            async with conn.transaction():
                await handler(batch)
                await self._afinish_statements(conn, batch)
        else:
            await handler(batch)
            await self.afinish(conn, batch)
        self._count(batch)
        return batch

    async def arun(self, conn: psycopg.AsyncConnection, handler: AsyncHandler, stopping: asyncio.Event, *,
                   same_tx: bool = False) -> None:
        while not stopping.is_set():
            if await self.aprocess_one(conn, handler, same_tx=same_tx) is None:
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=self.idle_sleep)
                except TimeoutError:
                    pass
