"""``pgtt-tui queue``: PgQ queues and consumers; ``pgtt-tui ticker``: the standalone ticker.

Thin shell over engine.pgq.api / engine.pgq.ticker (the console calls the same functions).
Works on our pgq schema and on a real pgq extension alike.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Annotated

import typer

from engine.db import connect, guard_write
from engine.safetext import visible
from engine.pgq import api
from engine.pgq import ticker as pgq_ticker
from pgtt_tui.cli.common import DsnOpt, JsonOpt, emit, say, settings_from, to_json, want_json, warn_password_in_argv
from pgtt_tui.cli.progress import Progress

app = typer.Typer(help="PgQ queues: list, create, drop, inspect, register consumers, insert and tail events.",
                  no_args_is_help=True)

QueueArg = Annotated[str, typer.Argument(help="queue name")]
ConsumerArg = Annotated[str, typer.Argument(help="consumer name")]
QUEUE_COLUMNS = ["queue_name", "last_tick_id", "ticker_lag", "ev_per_sec", "ev_new", "queue_cur_table",
                 "queue_ticker_paused", "queue_external_ticker"]
CONSUMER_COLUMNS = ["queue_name", "consumer_name", "lag", "last_seen", "last_tick", "current_batch",
                    "pending_events"]
EVENT_COLUMNS = ["ev_id", "ev_time", "ev_txid", "ev_type", "ev_data", "ev_extra1", "ev_retry"]


def _conn(ctx: typer.Context, dsn: str | None, write: str | None = None):
    settings = settings_from(ctx, dsn, read_only=write is None, application_name="pgtt-tui queue")
    if write:
        guard_write(settings_from(ctx, dsn), write)
    return connect(settings)


@app.command("list")
def list_cmd(ctx: typer.Context, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Queues with their ticker state (pgq.get_queue_info)."""
    with _conn(ctx, dsn) as conn:
        rows = [q.as_dict() for q in api.list_queues(conn)]
    emit(rows, want_json(ctx, as_json), QUEUE_COLUMNS)


@app.command("info")
def info_cmd(ctx: typer.Context, queue: QueueArg, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """One queue in detail, with its consumers."""
    with _conn(ctx, dsn) as conn:
        data = api.queue_info(conn, queue).as_dict()
        data["implementation"] = api.implementation(conn)
        data["consumers"] = [c.as_dict() for c in api.consumers(conn, queue)]
    if want_json(ctx, as_json):
        emit(data, True)
    else:
        consumers = data.pop("consumers")
        emit(data, False)
        typer.echo("")
        emit(consumers, False, CONSUMER_COLUMNS)


@app.command("consumers")
def consumers_cmd(ctx: typer.Context,
                  queue: Annotated[str | None, typer.Argument(help="queue name (default: all queues)")] = None,
                  dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Consumers with lag and pending events (pgq.get_consumer_info)."""
    with _conn(ctx, dsn) as conn:
        rows = [c.as_dict() for c in api.consumers(conn, queue)]
    emit(rows, want_json(ctx, as_json), CONSUMER_COLUMNS)


@app.command("create")
def create_cmd(ctx: typer.Context, queue: QueueArg, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Create a queue (no-op if it exists)."""
    with _conn(ctx, dsn, write="queue create") as conn:
        created = api.create_queue(conn, queue)
    emit({"queue": queue, "created": created} if want_json(ctx, as_json) else
         (f"queue {queue} created" if created else f"queue {queue} exists already"), want_json(ctx, as_json))


@app.command("drop")
def drop_cmd(ctx: typer.Context, queue: QueueArg,
             force: Annotated[bool, typer.Option("--force", help="unregister its consumers first")] = False,
             dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Drop a queue and its events (refused while consumers are registered, unless --force)."""
    with _conn(ctx, dsn, write="queue drop") as conn:
        api.drop_queue(conn, queue, force=force)
    emit({"queue": queue, "dropped": True} if want_json(ctx, as_json) else f"queue {queue} dropped",
         want_json(ctx, as_json))


@app.command("register")
def register_cmd(ctx: typer.Context, queue: QueueArg, consumer: ConsumerArg,
                 tick: Annotated[int | None, typer.Option("--tick", help="start at (or move to) this tick id")] = None,
                 dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Register a consumer (from the newest tick, or --tick)."""
    with _conn(ctx, dsn, write="queue register") as conn:
        new = api.register(conn, queue, consumer, tick)
    text = f"consumer {consumer} registered on {queue}" if new else \
        (f"consumer {consumer} moved to tick {tick}" if tick is not None else f"consumer {consumer} was registered already")
    emit({"queue": queue, "consumer": consumer, "registered": new} if want_json(ctx, as_json) else text,
         want_json(ctx, as_json))


@app.command("unregister")
def unregister_cmd(ctx: typer.Context, queue: QueueArg, consumer: ConsumerArg, dsn: DsnOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Unregister a consumer (its pending retries go too)."""
    with _conn(ctx, dsn, write="queue unregister") as conn:
        api.unregister(conn, queue, consumer)
    emit({"queue": queue, "consumer": consumer, "unregistered": True} if want_json(ctx, as_json) else
         f"consumer {consumer} unregistered from {queue}", want_json(ctx, as_json))


@app.command("insert")
def insert_cmd(ctx: typer.Context, queue: QueueArg,
               ev_type: Annotated[str, typer.Argument(help="event type")],
               ev_data: Annotated[str, typer.Argument(help="event data")],
               extra1: Annotated[str | None, typer.Option("--extra1")] = None,
               extra2: Annotated[str | None, typer.Option("--extra2")] = None,
               extra3: Annotated[str | None, typer.Option("--extra3")] = None,
               extra4: Annotated[str | None, typer.Option("--extra4")] = None,
               dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Insert one event (pgq.insert_event); prints its ev_id."""
    with _conn(ctx, dsn, write="queue insert") as conn:
        ev_id = api.insert_event(conn, queue, ev_type, ev_data, extra1, extra2, extra3, extra4)
    emit({"queue": queue, "ev_id": ev_id} if want_json(ctx, as_json) else ev_id, want_json(ctx, as_json))


@app.command("tail")
def tail_cmd(ctx: typer.Context, queue: QueueArg,
             limit: Annotated[int, typer.Option("--limit", "-n", help="recent events to show first")] = 20,
             follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events")] = False,
             interval: Annotated[float, typer.Option("--interval", help="poll interval with --follow", min=0.1)] = 1.0,
             dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """The newest events of a queue (read-only; registers no consumer). --follow prints each
    newly committed event once, in commit-snapshot order, like a batch would."""
    as_json = want_json(ctx, as_json)
    with _conn(ctx, dsn) as conn:
        _, snapshot = api.events_since(conn, queue, None)
        page = api.recent_events(conn, queue, limit=limit)
        recent = list(reversed(page.events))
        if not follow:
            emit([e.as_dict() for e in recent], as_json, EVENT_COLUMNS)
            return
        for ev in recent:
            say(_json_line(ev) if as_json else _event_line(ev))
        try:
            while True:
                time.sleep(interval)
                events, snapshot = api.events_since(conn, queue, snapshot)
                _print_events(events, as_json)
        except KeyboardInterrupt:
            return


#: a poll that brings more events than this is a backlog: its printing shows progress
CATCH_UP_EVENTS = 1000


def _print_events(events: list, as_json: bool) -> None:
    """Print what one poll brought; a backlog (a burst, a slow terminal) shows how far the
    catch-up is, on stderr, every thousand events."""
    progress = Progress("catching up", total=len(events)) if len(events) > CATCH_UP_EVENTS else None
    try:
        for number, ev in enumerate(events, 1):
            # counted before the event is printed: whoever has read the last event has the
            # last progress line too
            if progress is not None and (number % CATCH_UP_EVENTS == 0 or number == len(events)):
                progress.update(number, "events")
            say(_json_line(ev) if as_json else _event_line(ev))
    finally:
        if progress is not None:
            progress.close()


def _event_line(ev: api.EventRow) -> str:
    # tab-separated: the payload's own tabs and newlines are shown, not kept
    fields = (visible(ev.ev_type or "", newlines=False), visible(ev.ev_data or "", newlines=False))
    return f"{ev.ev_id}\t{ev.ev_time:%Y-%m-%d %H:%M:%S}\t{fields[0]}\t{fields[1]}"


def _json_line(ev: api.EventRow) -> str:
    return to_json(ev.as_dict(), indent=None)


# ---- pgtt-tui ticker -----------------------------------------------------------------------------

def ticker_cmd(
    ctx: typer.Context,
    dsn: DsnOpt = None,
    database: Annotated[list[str] | None, typer.Option(
        "--database", "-D", help="another DSN to tick as well (repeatable)")] = None,
    ticker_period: Annotated[float, typer.Option("--ticker-period", help="seconds between ticker rounds")] = 1.0,
    maint_period: Annotated[float, typer.Option("--maint-period", help="seconds between maintenance runs")] = 120.0,
    retry_period: Annotated[float, typer.Option("--retry-period", help="seconds between retry-queue runs")] = 30.0,
    fail_after: Annotated[float, typer.Option(
        "--fail-after", help="exit with code 3 once a database has been unreachable this long (0: never)")] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="one round of tick, retries and maintenance, then exit")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The PgQ ticker and maintenance daemon (what pgqd does), for one or more databases."""
    settings = settings_from(ctx, dsn, application_name="pgtt-tui ticker")
    guard_write(settings, "the ticker")
    options = pgq_ticker.TickerOptions(ticker_period=ticker_period, maint_period=maint_period,
                                       retry_period=retry_period)
    for extra in database or []:
        warn_password_in_argv(extra)
    tickers = pgq_ticker.tickers_for(settings, database or [], options)
    if once:
        results = [asyncio.run(pgq_ticker.run_once(t.settings)) for t in tickers]
        emit(results, want_json(ctx, as_json))
        return

    async def main() -> int:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stopping.set)
            except (NotImplementedError, RuntimeError):
                pass
        return await pgq_ticker.run_standalone(tickers, fail_after=fail_after or None, stopping=stopping)

    code = asyncio.run(main())
    if code:
        for t in tickers:
            if not t.health()["ok"]:
                say(f"pgtt-tui: error: {t.health()['detail']}", err=True)
    raise typer.Exit(code)


def register(root: typer.Typer) -> None:
    root.command("ticker")(ticker_cmd)


# --- pgq triggers (issue 8): `queue capture` / `queue captures`, in pgtt_tui/cli/queue_capture.py ---
from pgtt_tui.cli import queue_capture as _queue_capture  # noqa: E402

_queue_capture.register(app)
