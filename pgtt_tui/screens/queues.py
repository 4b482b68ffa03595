"""Queues: every PgQ queue with its ticker, lag, throughput, pending events, table
rotation; the consumers of the selected queue; register / unregister a consumer; pause
the ticker; peek at recent events (paged from the database, never all loaded); the
selected queue's events per second and each consumer's lag over the last 30 minutes (issue
18), from the samples our ticker stores (``pgtt.queue_sample``), or, where the ticker is not
ours (pgqd), sampled by the console itself while the view is open (the chart says which).

All database work runs in workers (``BaseView.fetch`` / ``act`` and the peek loader
below) that call engine functions and report back with messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from engine.views import queues as queue_views
from engine.views import trends
from engine.errors import PgttError
from engine.pgq import api as pgq_api
from pgtt_tui.dbaccess import ConnectionLost
from pgtt_tui.screens.base import BaseView, describe_error, needs_access
from pgtt_tui.screens.modals import ConfirmScreen, TextScreen
from pgtt_tui.screens.prompts import PromptScreen
from pgtt_tui.widgets.charts import TrendChart, TrendRow
from pgtt_tui.widgets.common import FilterBar, VimTable
from pgtt_tui.widgets.format import clip, escape, fmt_duration, fmt_time

PEEK_PAGE = 50


def _secs(delta: timedelta | None) -> float | None:
    return delta.total_seconds() if delta is not None else None


def ticker_state(q: pgq_api.QueueInfo) -> str:
    """Text + glyph for the ticker (never colour alone)."""
    if q.queue_external_ticker:
        return "⇄ external"
    if q.queue_ticker_paused:
        return "‖ paused"
    lag = _secs(q.ticker_lag)
    idle = _secs(q.queue_ticker_idle_period) or 60.0
    if lag is not None and lag > 2 * idle + 10:
        return "! stalled"
    return "▶ ticking"


def rotation_text(q: pgq_api.QueueInfo, now: Any) -> str:
    """``t1/3 ↻1h59m``: current event table of n, time until the next rotation."""
    text = f"t{q.queue_cur_table + 1}/{q.queue_ntables}"  # queue_cur_table counts from 0
    if q.queue_switch_time is not None and q.queue_rotation_period is not None:
        due = q.queue_switch_time + q.queue_rotation_period - now
        text += f" ↻{fmt_duration(max(due.total_seconds(), 0.0))}"
    return text


def queue_cells(q: pgq_api.QueueInfo, now: Any) -> tuple:
    eps = "" if q.ev_per_sec is None else f"{q.ev_per_sec:.1f}"
    return (clip(q.queue_name, 18), ticker_state(q), fmt_duration(q.ticker_lag), eps,
            "" if q.ev_new is None else str(q.ev_new), "" if q.last_tick_id is None else str(q.last_tick_id),
            rotation_text(q, now))


def consumer_cells(c: pgq_api.ConsumerInfo) -> tuple:
    batch = f"#{c.current_batch} ▶" if c.current_batch is not None else "· idle"
    return (clip(c.consumer_name, 22), fmt_duration(c.lag), fmt_duration(c.last_seen),
            "" if c.last_tick is None else str(c.last_tick), batch,
            "" if c.pending_events is None else str(c.pending_events))


def feeders_text(tables: list[str], limit: int = 3) -> str:
    """'fed by a, b, c +2' for the tables whose capture triggers write into the queue."""
    if not tables:
        return "no capture triggers"
    shown = ", ".join(escape(t) for t in tables[:limit])
    more = f" +{len(tables) - limit}" if len(tables) > limit else ""
    return f"fed by {shown}{more}"


class QueuesScreen(BaseView):
    VIEW = "queues"
    TITLE = "Queues"
    ACCESS_PART = "pgq"
    WRITE_ACTIONS = frozenset({"register", "unregister", "ticker"})
    BINDINGS = [
        Binding("e", "peek", "events"),
        Binding("t", "ticker", "pause ticker"),
        Binding("a", "register", "add consumer"),
        Binding("u", "unregister", "unregister"),
        Binding("tab", "focus_next", "next table", show=False),
        Binding("slash", "filter", "filter"),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.selected_queue: str | None = None
        self.filter_text = ""
        self.stored_queues: set[str] = set()  # queues with samples in pgtt.queue_sample
        self.live_since: Any = None  # when the console began sampling queues without stored samples

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="panel", id="queues-panel") as panel:
            panel.border_title = "Queues"
            table = VimTable(id="queues")
            # fixed widths: a cell updated in place never widens an auto-sized column, so a
            # ticker that turned "⇄ external" after the first poll read "⇄ extern…"
            table.add_fixed(("queue", 10, "flex"), ("ticker", 11), ("lag", 6), ("ev/s", 6), ("pending", 7),
                            ("tick", 6), ("rotation", 11))
            yield table
        with Vertical(classes="panel", id="consumers-panel") as panel:
            panel.border_title = "Consumers"
            table = VimTable(id="consumers")
            table.add_fixed(("consumer", 18, "flex"), ("lag", 7), ("last seen", 9), ("tick", 8), ("batch", 9),
                            ("pending", 8))
            yield table
        with Vertical(classes="panel chart-panel", id="trend-panel") as panel:
            panel.border_title = "Trend"
            yield TrendChart(id="trend")
        yield FilterBar("filter by queue or consumer name", id="filter")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#queues", VimTable).focus()

    # ---- polling ------------------------------------------------------------------------
    _chart_since = None  # read by the worker; set on the UI thread after each show

    def fetch(self, conn: psycopg.Connection) -> queue_views.QueuesSnapshot:  # worker thread
        snap = queue_views.queues_snapshot(conn)
        if snap.installed:
            # the chart's newest bucket on: the buckets before it are drawn already (issue 18)
            snap.trends = trends.queue_trends(conn, self.papp.now(), since=self._chart_since)
        return snap

    def show(self, data: queue_views.QueuesSnapshot) -> None:
        now = self.papp.now()
        table = self.query_one("#queues", VimTable)
        panel = self.query_one("#queues-panel")
        if not data.installed:
            panel.border_title = "Queues (pgq is not installed in this database)"
            table.sync_rows([])
            self._show_consumers()
            return
        shown = [q for q in data.queues if self._queue_matches(data, q.queue_name)]
        table.sync_rows([(q.queue_name, queue_cells(q, now)) for q in shown])
        paused = sum(1 for q in data.queues if q.queue_ticker_paused)
        count = f"{len(shown)} of {len(data.queues)} match /{escape(self.filter_text)}" if self.filter_text \
            else str(len(data.queues))
        panel.border_title = f"Queues ({count}{f', {paused} ticker paused' if paused else ''})"
        names = {q.queue_name for q in shown}
        if self.selected_queue is None or self.selected_queue not in names:
            self.selected_queue = table.selected_key()
        self._add_samples(data, now)
        self._show_consumers()

    # ---- trend chart ----------------------------------------------------------------------
    def _add_samples(self, data: queue_views.QueuesSnapshot, now: Any) -> None:
        """Stored samples as read; for queues without any, this poll's numbers as the
        console's own sample of the current bucket."""
        chart = self.query_one("#trend", TrendChart)
        read = data.trends or {}
        series = dict(read.get("series") or {})
        for (queue, consumer), buckets in series.items():
            if consumer == "" and any(b["ev_per_sec"] is not None or b["lag"] is not None for b in buckets):
                self.stored_queues.add(queue)
        for q in data.queues:
            if q.queue_name in self.stored_queues:
                continue
            if self.live_since is None:
                self.live_since = now
            series[(q.queue_name, "")] = [trends.live_bucket(now, ev_per_sec=q.ev_per_sec, lag=_secs(q.ticker_lag))]
            for c in data.consumers.get(q.queue_name, []):
                series[(q.queue_name, c.consumer_name)] = [
                    trends.live_bucket(now, lag=_secs(c.lag), pending=c.pending_events)]
        chart.add_series(series)
        if read.get("stored"):
            self._chart_since = chart.since

    def _show_trend(self) -> None:
        data: queue_views.QueuesSnapshot | None = self.last_data
        chart = self.query_one("#trend", TrendChart)
        panel = self.query_one("#trend-panel")
        queue = self.selected_queue
        if data is None or queue is None:
            chart.show_rows([])
            panel.border_title = "Trend"
            return
        rows = [TrendRow((queue, ""), "ev/s", "ev_per_sec", "ev/s", watch=False)]
        rows += [TrendRow((queue, c.consumer_name), c.consumer_name, "lag")
                 for c in data.consumers.get(queue, []) if self._consumer_matches(queue, c.consumer_name)]
        if queue in self.stored_queues:
            note = "stored: sampled by the ticker every 10 s"
        else:
            since = fmt_time(self.live_since, self.papp.now(), self.papp.tz) if self.live_since is not None else "now"
            note = f"live: no stored samples (ticker not ours), sampled here since {since}"
        chart.show_rows(rows, "events/s · consumer lag · 30 min", note)
        panel.border_title = f"Trend of {escape(queue)}"
        panel.border_subtitle = "stored" if queue in self.stored_queues else "live since opened"

    # ---- filter (``/``, as in the other views: FilterBar, filtered as you type) ------------
    def _queue_matches(self, data: queue_views.QueuesSnapshot, queue: str) -> bool:
        """A queue is listed when its name or one of its consumers' names contains the text."""
        needle = self.filter_text.lower()
        if not needle or needle in queue.lower():
            return True
        return any(needle in c.consumer_name.lower() for c in data.consumers.get(queue, []))

    def _consumer_matches(self, queue: str, consumer: str) -> bool:
        """Consumers of a queue that matched by its own name are all shown; otherwise only the
        consumers whose name contains the text."""
        needle = self.filter_text.lower()
        return not needle or needle in queue.lower() or needle in consumer.lower()

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self.filter_text = event.value.strip()
        if self.last_data is not None:
            self.show(self.last_data)

    def _show_consumers(self) -> None:
        data: queue_views.QueuesSnapshot | None = self.last_data
        table = self.query_one("#consumers", VimTable)
        panel = self.query_one("#consumers-panel")
        queue = self.selected_queue
        if data is None or queue is None:
            table.sync_rows([])
            panel.border_title = "Consumers"
            panel.border_subtitle = ""
            self._show_trend()
            return
        rows = [(f"{queue}\x1f{c.consumer_name}", consumer_cells(c)) for c in data.consumers.get(queue, [])
                if self._consumer_matches(queue, c.consumer_name)]
        table.sync_rows(rows)
        panel.border_title = f"Consumers of {escape(queue)} ({len(rows)})"
        panel.border_subtitle = feeders_text(data.feeders.get(queue, []))
        self._show_trend()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "queues":
            return
        key = event.row_key.value if event.row_key is not None else None
        if key != self.selected_queue:
            self.selected_queue = key
            self._show_consumers()

    # ---- helpers ------------------------------------------------------------------------
    def _queue(self) -> pgq_api.QueueInfo | None:
        data: queue_views.QueuesSnapshot | None = self.last_data
        if data is None or self.selected_queue is None:
            return None
        return next((q for q in data.queues if q.queue_name == self.selected_queue), None)

    def _consumer(self) -> str | None:
        key = self.query_one("#consumers", VimTable).selected_key()
        if key is None or "\x1f" not in key:
            return None
        queue, consumer = key.split("\x1f", 1)
        return consumer if queue == self.selected_queue else None

    # ---- actions --------------------------------------------------------------------------
    @needs_access
    def action_ticker(self) -> None:
        q = self._queue()
        if q is None:
            self.notify("select a queue first", severity="warning")
            return
        if q.queue_external_ticker:
            self.notify(f"{q.queue_name} is ticked by its cascade worker (external ticker); "
                        "pause the node's worker in the Cascade view instead", severity="warning", timeout=8)
            return
        pause = not q.queue_ticker_paused
        verb = "pause" if pause else "resume"
        body = (f"{verb.capitalize()} the ticker of queue {q.queue_name}? "
                + ("No new ticks (batches) until resumed; events are still accepted." if pause
                   else "Ticks start again at the next ticker run."))

        def done(ok: bool | None) -> None:
            if ok:
                self.act("ticker", f"{verb} ticker of {q.queue_name}", queue_views.set_ticker_paused,
                         q.queue_name, pause, summary=f"ticker of {q.queue_name} {verb}d")

        self.app.push_screen(ConfirmScreen(f"{verb.capitalize()} ticker", body, danger=pause), done)

    @needs_access
    def action_register(self) -> None:
        q = self._queue()
        if q is None:
            self.notify("select a queue first", severity="warning")
            return

        def done(name: str | None) -> None:
            if name:
                self.act("register", f"register {name} on {q.queue_name}", pgq_api.register, q.queue_name, name,
                         summary=lambda new: (f"consumer {name} registered on {q.queue_name}" if new
                                              else f"consumer {name} was already registered on {q.queue_name}"))

        self.app.push_screen(PromptScreen(f"Register a consumer on {q.queue_name}",
                                          "It starts at the newest tick: only events after it are delivered.",
                                          placeholder="consumer name"), done)

    @needs_access
    def action_unregister(self) -> None:
        q = self._queue()
        consumer = self._consumer()
        if q is None or consumer is None:
            self.notify("select a consumer (Tab to the Consumers table) first", severity="warning")
            return
        body = (f"Unregister consumer {consumer} from queue {q.queue_name}? Its position is lost; "
                f"events it has not processed are no longer kept for it.")

        def done(ok: bool | None) -> None:
            if ok:
                self.act("unregister", f"unregister {consumer} from {q.queue_name}", pgq_api.unregister,
                         q.queue_name, consumer, summary=f"consumer {consumer} unregistered from {q.queue_name}")

        self.app.push_screen(ConfirmScreen("Unregister consumer", body, type_to_confirm=consumer), done)

    @needs_access
    def action_peek(self) -> None:
        q = self._queue()
        if q is None:
            self.notify("select a queue first", severity="warning")
            return
        self.app.push_screen(EventsScreen(q.queue_name))


@dataclass
class EventsLoaded(Message):
    page: pgq_api.EventPage
    page_no: int


@dataclass
class EventsFailed(Message):
    error: str


class EventsScreen(BaseView):
    """Recent events of one queue, newest first, one page at a time from the database."""

    VIEW = "queue-events"
    TITLE = "Events"
    HELP = "queues"
    POLLS = False
    BINDINGS = [
        Binding("n,pagedown", "older", "older"),
        Binding("p,pageup", "newer", "newer"),
        Binding("home", "newest", "newest", show=False),
        Binding("enter", "open", "show"),
        Binding("escape", "back", "back"),
    ]

    def __init__(self, queue: str, page_size: int = PEEK_PAGE, **kw: Any) -> None:
        super().__init__(**kw)
        self.queue = queue
        self.page_size = page_size
        self.cursors: list[tuple[int, int] | None] = [None]  # cursors[i] = ``before`` of page i
        self.page_no = 0
        self.page: pgq_api.EventPage | None = None
        self.loading = False

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="panel", id="events-panel") as panel:
            panel.border_title = f"Events of {escape(self.queue)}"
            table = VimTable(id="events")
            table.add_columns("ev_id", "time", "txid", "type", "data")
            yield table
        yield Static("", id="events-info", classes="info-line")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#events", VimTable).focus()
        self._load(0)

    def _load(self, page_no: int) -> None:
        if self.loading:
            return
        self.loading = True
        before = self.cursors[page_no]
        self.query_one("#events-info", Static).update("loading…")

        def body() -> None:  # worker thread: no widgets
            try:
                page = self.papp.db.run("peek", pgq_api.recent_events, self.queue, self.page_size, before)
            except ConnectionLost as exc:
                self.post_message(EventsFailed(f"connection lost: {exc}"))
            except (PgttError, psycopg.Error) as exc:
                self.post_message(EventsFailed(describe_error(exc)))
            else:
                self.post_message(EventsLoaded(page, page_no))

        self.run_worker(body, thread=True, group="peek", exit_on_error=False, description="peek events")

    def on_events_loaded(self, message: EventsLoaded) -> None:
        self.loading = False
        self.page = message.page
        self.page_no = message.page_no
        if message.page.next_cursor is not None and len(self.cursors) == self.page_no + 1:
            self.cursors.append(message.page.next_cursor)
        now = self.papp.now()
        rows = [(str(e.ev_id), (str(e.ev_id), fmt_time(e.ev_time, now, self.papp.tz), str(e.ev_txid),
                                clip(e.ev_type, 14), clip(e.ev_data, 40)))
                for e in message.page.events]
        table = self.query_one("#events", VimTable)
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        more = "n: older" if message.page.next_cursor is not None else "oldest page"
        newer = " · p: newer" if self.page_no > 0 else ""
        self.query_one("#events-info", Static).update(
            f"page {self.page_no + 1} · {len(rows)} events, newest first · {more}{newer} · Enter: full event")

    def on_events_failed(self, message: EventsFailed) -> None:
        self.loading = False
        self.query_one("#events-info", Static).update(f"✗ {escape(message.error)}")
        self.notify(message.error, title="events", severity="error")

    def action_older(self) -> None:
        if self.page is not None and self.page.next_cursor is not None:
            self._load(self.page_no + 1)
        else:
            self.notify("this is the oldest page", timeout=2)

    def action_newer(self) -> None:
        if self.page_no > 0:
            self._load(self.page_no - 1)
        else:
            self.notify("this is the newest page", timeout=2)

    def action_newest(self) -> None:
        self._load(0)

    def action_open(self) -> None:
        key = self.query_one("#events", VimTable).selected_key()
        if key is None or self.page is None:
            return
        ev = next((e for e in self.page.events if str(e.ev_id) == key), None)
        if ev is None:
            return
        lines = [f"{name}: {value}" for name, value in ev.as_dict().items()]
        self.app.push_screen(TextScreen(f"event {ev.ev_id} of {self.queue}", "\n".join(lines)))
