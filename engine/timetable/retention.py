"""Retention for ``timetable.log`` and ``timetable.execution_log`` (pg_timetable has none, #680).

Two limits, either or both (``pgtt-tui worker --log-retention-days N --log-max-rows N``):

- age: rows older than ``older_than`` go (``log.ts``; ``execution_log.finished``, or
  ``last_run`` for a row that never finished);
- size: at most ``max_rows`` rows stay in each table: the newest by the same time column
  (rows sharing the cut-off timestamp go together, so slightly fewer may stay).

Deletes run in batches of ``batch`` rows, each its own short statement in autocommit, so
a large backlog never holds locks for long nor bloats one transaction; the BRIN indexes
on ``log.ts`` and ``execution_log.finished`` find the old rows. ``RetentionService`` runs
:func:`prune_logs` every ``interval`` seconds inside ``pgtt-tui worker``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

from engine.db import aconnect
from engine.errors import InputError

log = logging.getLogger("pgtt.timetable.retention")

DEFAULT_BATCH = 10_000
DEFAULT_INTERVAL = 600.0  # seconds between passes in the worker


@dataclass(frozen=True)
class _Table:
    name: str
    when: sql.Composable  # the time expression that orders and ages rows
    older: sql.Composable  # predicate "older than %(cutoff)s" that the BRIN index can use


LOG = _Table("log", sql.SQL("ts"), sql.SQL("(ts < %(cutoff)s OR ts IS NULL)"))
EXEC = _Table("execution_log", sql.SQL("coalesce(finished, last_run)"),
              sql.SQL("(finished < %(cutoff)s OR (finished IS NULL AND (last_run < %(cutoff)s OR last_run IS NULL)))"))
# the cut-off timestamp of the max_rows-th newest row is deleted too ("<="), hence the inclusive form
_INCLUSIVE = {
    "log": sql.SQL("(ts <= %(cutoff)s OR ts IS NULL)"),
    "execution_log": sql.SQL("(finished <= %(cutoff)s OR (finished IS NULL AND (last_run <= %(cutoff)s "
                             "OR last_run IS NULL)))"),
}


def _check(older_than: timedelta | None, max_rows: int | None, batch: int) -> None:
    if older_than is not None and older_than <= timedelta(0):
        raise InputError("--log-retention-days", "must be more than 0 (or unset: keep everything)")
    if max_rows is not None and (isinstance(max_rows, bool) or max_rows < 0):
        raise InputError("--log-max-rows", "must be 0 or more (or unset: no row limit)")
    if batch < 1:
        raise InputError("batch", "must be 1 or more")


async def _delete_batches(conn: psycopg.AsyncConnection, table: _Table, predicate: sql.Composable,
                          cutoff: datetime, batch: int) -> int:
    stmt = sql.SQL("DELETE FROM timetable.{t} WHERE ctid = ANY (ARRAY("
                   "SELECT ctid FROM timetable.{t} WHERE {p} LIMIT %(batch)s))").format(
        t=sql.Identifier(table.name), p=predicate)
    total = 0
    while True:
        cur = await conn.execute(stmt, {"cutoff": cutoff, "batch": batch})
        total += max(cur.rowcount, 0)
        if cur.rowcount < batch:
            return total


async def _cutoff_for_rows(conn: psycopg.AsyncConnection, table: _Table, max_rows: int) -> datetime | None:
    """The time of the newest row that must go so that at most max_rows stay, or None."""
    count_stmt = sql.SQL("SELECT count(*) FROM timetable.{t}").format(t=sql.Identifier(table.name))
    total = (await (await conn.execute(count_stmt)).fetchone())[0]
    if total <= max_rows:
        return None
    stmt = sql.SQL("SELECT {w} FROM timetable.{t} ORDER BY {w} DESC NULLS LAST OFFSET %s LIMIT 1").format(
        w=table.when, t=sql.Identifier(table.name))
    row = await (await conn.execute(stmt, (max_rows,))).fetchone()
    return row[0] if row else None


async def prune_logs(conn: psycopg.AsyncConnection, older_than: timedelta | None, max_rows: int | None,
                     *, batch: int = DEFAULT_BATCH, now: datetime | None = None) -> tuple[int, int]:
    """Apply the limits to timetable.log and timetable.execution_log.

    ``conn`` must be in autocommit mode (each batch commits on its own). Returns
    ``(deleted_log, deleted_exec)``.
    """
    _check(older_than, max_rows, batch)
    if not conn.autocommit:
        raise InputError("conn", "prune_logs needs an autocommit connection (it commits every batch)")
    now = now or datetime.now(timezone.utc)
    deleted = []
    for table in (LOG, EXEC):
        n = 0
        if older_than is not None:
            n += await _delete_batches(conn, table, table.older, now - older_than, batch)
        if max_rows is not None:
            cutoff = await _cutoff_for_rows(conn, table, max_rows)
            if cutoff is not None:
                n += await _delete_batches(conn, table, _INCLUSIVE[table.name], cutoff, batch)
        deleted.append(n)
    return deleted[0], deleted[1]


class RetentionService:
    """Worker service: prunes the timetable logs periodically (nothing to do without limits)."""

    name = "timetable-retention"

    def __init__(self, older_than: timedelta | None, max_rows: int | None, interval: float = DEFAULT_INTERVAL,
                 batch: int = DEFAULT_BATCH):
        _check(older_than, max_rows, batch)
        self.older_than = older_than
        self.max_rows = max_rows
        self.interval = interval
        self.batch = batch
        self.passes = 0
        self.deleted = {"log": 0, "execution_log": 0}
        self.last_error = ""
        self.last_pass_at: datetime | None = None

    async def run(self, ctx) -> None:
        conn = await aconnect(ctx.settings.with_app(f"pgtt-tui timetable {ctx.client_name} retention"))
        try:
            while not ctx.stopping.is_set():
                d_log, d_exec = await prune_logs(conn, self.older_than, self.max_rows, batch=self.batch,
                                                 now=ctx.clock.now())
                self.passes += 1
                self.deleted["log"] += d_log
                self.deleted["execution_log"] += d_exec
                self.last_pass_at = ctx.clock.now()
                if d_log or d_exec:
                    ctx.log.info("retention: deleted %s timetable.log and %s timetable.execution_log rows",
                                 d_log, d_exec)
                try:
                    await asyncio.wait_for(ctx.stopping.wait(), timeout=self.interval)
                except TimeoutError:
                    pass
        finally:
            await conn.close()

    def health(self) -> dict[str, Any]:
        return {"ok": True, "detail": f"{self.passes} pass(es); deleted {self.deleted['log']} log and "
                                      f"{self.deleted['execution_log']} execution_log rows"}

    def metrics(self) -> list:
        from engine.worker import Metric  # noqa: PLC0415

        return [Metric("pgtt_timetable_log_rows_pruned_total", float(v), {"table": k}, "counter",
                       "rows deleted by log retention") for k, v in self.deleted.items()]


def build_services(options) -> list[RetentionService]:
    """Services for the worker from ``module_options["timetable"]``: log_retention_days, log_max_rows."""
    values = options.for_module("timetable_retention") if hasattr(options, "for_module") else {}
    days = values.get("log_retention_days")
    rows = values.get("log_max_rows")
    if not days and rows is None:
        return []
    return [RetentionService(timedelta(days=float(days)) if days else None, rows,
                             float(values.get("interval", DEFAULT_INTERVAL)))]
