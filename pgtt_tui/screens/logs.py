"""Logs: live tail of timetable.log, timetable.execution_log and the schedule job runs.

A tail worker (one thread, its own ``tail`` connection) asks the engine for what is new
every quarter second and posts it as one LogBatch message, however many lines; the
LogView appends a batch at once and renders only the visible lines. Pausing stops the
worker; resuming continues from the same cursor, so nothing is skipped.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from engine.views import logs as logs_api
from pgtt_tui.dbaccess import ConnectionLost
from pgtt_tui.messages import LogBatch, LogHistory, PollFailed
from pgtt_tui.screens.base import BaseView, describe_error
from pgtt_tui.screens.modals import TextScreen
from pgtt_tui.widgets.common import FilterBar
from pgtt_tui.widgets.logview import LEVEL_CHOICES, LogFilter, LogView

TAIL_INTERVAL = 0.25  # seconds between tail polls while following
INITIAL_LINES = 500
HISTORY_PAGE = 500


class LogsScreen(BaseView):
    VIEW = "logs"
    TITLE = "Logs"
    POLLS = False  # the tail worker replaces the generic poll
    BINDINGS = [
        Binding("slash", "filter", "filter"),
        Binding("l", "cycle_level", "level"),
        Binding("w", "toggle_wrap", "wrap"),
        Binding("f", "follow", "follow"),
        Binding("o", "older", "older"),
        Binding("y", "copy", "copy line", show=False),
        Binding("enter", "show_line", "full line", show=False),
        Binding("g", "top", "top", show=False),
        Binding("G", "follow", "bottom", show=False),
        Binding("j", "down", show=False),
        Binding("k", "up", show=False),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.level = "all"
        self.query_text = ""
        self._stop = threading.Event()
        self._tail_running = False
        self.tail: logs_api.Tail | None = None
        self.lag_seconds = 0.0
        self.history_done = False
        self.total_received = 0
        self.denied: dict[str, str] = {}  # log sources this role may not read (set by the tail worker)

    def compose_body(self) -> ComposeResult:
        yield LogView(max_lines=self.papp.log_lines, tz=self.papp.tz, id="log")
        yield Static("", id="log-status")
        yield FilterBar("level:error chain:NAME client:NAME words…", id="filter")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(LogView).focus()
        self._update_status()

    # ---- the tail worker ------------------------------------------------------------------
    def on_screen_resume(self) -> None:
        self.papp.sync_status(self)
        self._start_tail()

    def on_screen_suspend(self) -> None:
        self._stop.set()

    def on_unmount(self) -> None:
        self._stop.set()

    def request_poll(self) -> None:  # `r`: restart the tail now
        self._start_tail()

    def on_pause_changed(self, paused: bool) -> None:
        if paused:
            self._stop.set()
        else:
            self._start_tail()
        self._update_status()

    def _start_tail(self) -> None:
        if self.papp.paused or self._tail_running:
            return
        self._stop = threading.Event()
        self._tail_running = True
        stop = self._stop
        self.run_worker(lambda: self._tail_body(stop), thread=True, group="tail", exit_on_error=False,
                        description="log tail")

    def _tail_body(self, stop: threading.Event) -> None:  # worker thread: no widgets here
        db = self.papp.db
        try:
            while not stop.is_set() and not db.closed:
                started = time.monotonic()
                try:
                    if self.tail is None:
                        self.denied = db.run("tail", logs_api.denied_sources)
                        tail = logs_api.Tail()
                        entries = db.run("tail", tail.start, INITIAL_LINES)
                        self.tail = tail
                    else:
                        entries = db.run("tail", self.tail.poll)
                    now = self.papp.now()
                    lag = (now - entries[-1].ts).total_seconds() if entries else 0.0
                    self.post_message(LogBatch(entries, lag))
                except ConnectionLost as exc:
                    self.post_message(PollFailed(self.VIEW, str(exc), lost=True))
                    stop.wait(2.0)
                    continue
                except Exception as exc:  # noqa: BLE001 - reported, the tail keeps going
                    self.post_message(PollFailed(self.VIEW, describe_error(exc)))
                    stop.wait(2.0)
                    continue
                spent = time.monotonic() - started
                if spent < TAIL_INTERVAL:
                    stop.wait(TAIL_INTERVAL - spent)
        finally:
            self._tail_running = False

    def on_log_batch(self, message: LogBatch) -> None:
        message.stop()
        self.papp.mark_ok()
        view = self.query_one(LogView)
        if message.entries:
            self.total_received += len(message.entries)
            view.append(message.entries)
        self.lag_seconds = message.lag_seconds
        self._update_status()

    def on_poll_failed(self, message: PollFailed) -> None:
        message.stop()
        if message.lost:
            self.papp.mark_lost(message.error)
        else:
            self.notify(message.error, title="log tail", severity="error", timeout=6)

    # ---- history ---------------------------------------------------------------------------
    def action_older(self) -> None:
        """Page older lines in from the database (above what is held)."""
        view = self.query_one(LogView)
        if self.history_done:
            self.notify("no older lines in the database", timeout=3)
            return
        oldest = view.entries[0] if view.entries else None
        flt = view.filter

        def body() -> None:
            try:
                page = self.papp.db.run("action", logs_api.history, before=oldest, limit=HISTORY_PAGE,
                                        level=flt.min_level, chain=flt.chain, client=flt.client, text=flt.text)
            except Exception as exc:  # noqa: BLE001
                self.post_message(PollFailed(self.VIEW, describe_error(exc)))
                return
            self.post_message(LogHistory(page, exhausted=len(page) < HISTORY_PAGE))

        self.run_worker(body, thread=True, group="history", exit_on_error=False, description="log history")

    def on_log_history(self, message: LogHistory) -> None:
        message.stop()
        view = self.query_one(LogView)
        added = view.prepend(message.entries)
        self.history_done = message.exhausted
        if message.entries and not added:
            self.notify(f"the view holds {view.max_lines} lines; filter to see older ones", timeout=4)
        else:
            self.notify(f"{added} older lines loaded", timeout=2)
        self._update_status()

    # ---- keys ------------------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self.query_text = event.value
        self._apply_filter()

    def _apply_filter(self) -> None:
        view = self.query_one(LogView)
        view.set_filter(LogFilter.parse(self.query_text, self.level))
        self.history_done = False
        self._update_status()

    def action_cycle_level(self) -> None:
        self.level = LEVEL_CHOICES[(LEVEL_CHOICES.index(self.level) + 1) % len(LEVEL_CHOICES)]
        self._apply_filter()

    def action_toggle_wrap(self) -> None:
        view = self.query_one(LogView)
        view.wrap = not view.wrap
        self._update_status()

    def action_follow(self) -> None:
        self.query_one(LogView).follow = True
        self._update_status()

    def action_top(self) -> None:
        view = self.query_one(LogView)
        view.follow = False
        view.scroll_home(animate=False)

    def action_down(self) -> None:
        self.query_one(LogView).scroll_down(animate=False)

    def action_up(self) -> None:
        self.query_one(LogView).scroll_up(animate=False)

    def action_copy(self) -> None:
        text = self.query_one(LogView).entry_text_at_cursor()
        if text:
            self.app.copy_to_clipboard(text)
            self.notify("copied the last visible line (OSC 52)", timeout=2)

    def action_show_line(self) -> None:
        text = self.query_one(LogView).entry_text_at_cursor()
        if text:
            self.app.push_screen(TextScreen("log line", text))

    def on_log_view_status(self, message: LogView.Status) -> None:
        message.stop()
        self._update_status()

    def _update_status(self) -> None:
        try:
            view = self.query_one(LogView)
            status = self.query_one("#log-status", Static)
        except Exception:  # noqa: BLE001 - not mounted yet
            return
        if self.papp.paused:
            mode = "[reverse $warning] PAUSED [/]"
        elif view.follow:
            mode = "[reverse $success] FOLLOW [/]"
        else:
            mode = f"[reverse $accent] SCROLLED [/] [b]+{view.pending} new[/b] (f: follow)"
        flt = view.filter.describe()
        hidden = f" · [$warning]not shown: {', '.join(self.denied)} (no access)[/]" if self.denied else ""
        status.update(f"{mode} filter: {flt} · wrap {'on' if view.wrap else 'off'} · "
                      f"{view.shown}/{len(view.entries)} lines · lag {self.lag_seconds:.1f}s{hidden}")
