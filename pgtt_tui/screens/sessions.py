"""Sessions: engines connected to this database, and chain / job runs in progress."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static

from engine.views import sessions as sessions_api
from engine.views import trends
from pgtt_tui import actions as engine_calls
from pgtt_tui.screens.base import BaseView
from pgtt_tui.screens.modals import ConfirmScreen
from pgtt_tui.widgets.charts import TimelineChart
from pgtt_tui.widgets.common import FilterBar, VimTable
from pgtt_tui.widgets.format import clip, escape, fmt_duration, fmt_relative, fmt_time

KIND_LABEL = {"chain": "chain", "cron": "cron job", "at": "one-time job"}


def running_state(kind: str) -> str:
    return f"▶ {KIND_LABEL.get(kind, kind)}"


class SessionsScreen(BaseView):
    VIEW = "sessions"
    TITLE = "Sessions"
    WRITE_ACTIONS = frozenset({"cancel_run"})
    BINDINGS = [
        Binding("c", "cancel_run", "cancel run"),
        Binding("tab", "focus_next", "next table", show=False),
        Binding("slash", "filter", "filter"),
        Binding("t", "toggle_timeline", "timeline by engine/chain"),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.filter_text = ""

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="panel", id="engines-panel") as panel:
            panel.border_title = "Engines"
            table = VimTable(id="engines")
            table.add_fixed(("client", 16, "flex"), ("state", 10), ("host:pid", 18), ("since", 11, 90), ("heartbeat", 10),
                            ("modules", 20, 110))
            yield table
        with Vertical(classes="panel chart-panel", id="timeline-box") as panel:
            panel.border_title = "Runs of the last 30 minutes, by engine (t: by chain / job)"
            yield TimelineChart(minutes=30, id="timeline")
        with Vertical(classes="panel", id="running-panel") as panel:
            panel.border_title = "Running"
            table = VimTable(id="running")
            table.add_fixed(("kind", 14), ("name", 20, "flex"), ("client", 16), ("started", 11, 90), ("elapsed", 8))
            yield table
        yield Static("", id="sessions-denied", classes="info-line")
        yield FilterBar("filter by name or client", id="filter")

    _timeline_since = None  # read by the worker; set on the UI thread after each show

    def fetch(self, conn) -> Any:
        data = sessions_api.snapshot(conn)
        # what ended since the last poll or still runs: the rest is drawn already (issue 18)
        data["timeline"] = trends.timeline(conn, self.papp.now(), minutes=30, since=self._timeline_since,
                                           parts=data["parts"])
        return data

    def show(self, data: Any) -> None:
        now = self.papp.now()
        if "timeline" in data:
            self.query_one("#timeline", TimelineChart).add_runs(data["timeline"]["runs"], data["timeline"]["now"])
            self._timeline_since = data["timeline"]["now"]
        tz = self.papp.tz
        needle = self.filter_text.lower()
        rows = []
        engines_table = self.query_one("#engines", VimTable)
        for e in data["engines"]:
            if needle and needle not in e["client_name"].lower():
                continue
            state = "alive" if e["alive"] else ("stale" if e["stopped_at"] is None else "dead")
            if e["stopped_at"] is not None:
                state = "stopped"  # a clean stop, not a cancellation
            rows.append((str(e["engine_id"]), (
                clip(e["client_name"], 120), engines_table.state(state), f"{e['host']}:{e['os_pid']}",
                fmt_time(e["started_at"], now, tz), fmt_relative(e["heartbeat_at"], now),
                ",".join(e["modules"] or []))))
        self.query_one("#engines", VimTable).sync_rows(rows)
        run_rows = []
        for r in data["running"]:
            if needle and needle not in (r["name"] or "").lower() and needle not in (r["client"] or "").lower():
                continue
            elapsed = (now - r["started"]) if r["started"] else None
            run_rows.append((f"{r['kind']}:{r['run_key']}", (
                running_state(r["kind"]), clip(r["name"], 120), clip(r["client"], 40),
                fmt_time(r["started"], now, tz), fmt_duration(elapsed))))
        running = self.query_one("#running", VimTable)
        running.sync_rows(run_rows)
        self.query_one("#running-panel").border_title = f"Running ({len(run_rows)})"
        denied = data.get("denied") or {}
        note = self.query_one("#sessions-denied", Static)
        note.display = bool(denied)
        note.update(" · ".join(f"? not shown: {escape(text)}" for text in denied.values()))
        self.query_one("#engines-panel").border_title = (
            f"Engines ({sum(1 for e in data['engines'] if e['alive'])} alive)")

    def action_toggle_timeline(self) -> None:
        by = self.query_one("#timeline", TimelineChart).toggle()
        self.query_one("#timeline-box").border_title = (
            f"Runs of the last 30 minutes, by {'engine' if by == 'engine' else 'chain / job'} (t: toggle)")

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self.filter_text = event.value
        if self.last_data is not None:
            self.show(self.last_data)

    def _selected_run(self) -> dict | None:
        key = self.query_one("#running", VimTable).selected_key()
        if key is None or self.last_data is None:
            return None
        for r in self.last_data["running"]:
            if f"{r['kind']}:{r['run_key']}" == key:
                return r
        return None

    def action_cancel_run(self) -> None:
        run = self._selected_run()
        if run is None:
            self.notify("select a running chain or job in the Running table first", severity="warning")
            return
        label = KIND_LABEL.get(run["kind"], run["kind"])
        body = (f"Cancel the running {label} {run['name']!r} (started {fmt_time(run['started'], self.papp.now(), self.papp.tz)}"
                f" on {run['client']})? The engine stops it and records the run as failed.")

        def done(ok: bool | None) -> None:
            if ok:
                self.engine_act("cancel_run", f"cancel {label} {run['name']}", engine_calls.cancel_run, run,
                         summary=f"cancel requested for {label} {run['name']}")

        self.app.push_screen(ConfirmScreen(f"Cancel {label} run", body), done)
