"""Overview: engines connected, chains and jobs by state, recent failures, next runs."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Static

from engine.views import overview as overview_api
from engine.views import trends
from pgtt_tui.screens.base import BaseView
from pgtt_tui.widgets.charts import ActivityChart
from pgtt_tui.widgets.common import VimTable
from pgtt_tui.widgets.format import clip, escape, fmt_relative, fmt_time

KIND = {"chain": "chain", "cron": "cron", "at": "once"}
LABEL_WIDTH = 11  # labels up to 10 characters, one space
SUMMARY_WIDTH = 42  # the summary panel's text width (app.tcss #engines-box: 46 wide)


def summary_rows(data: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The left panel as (label, items) rows; ``layout_summary`` packs the items of a row
    into lines under its value column (an item never breaks inside)."""
    rows: list[tuple[str, list[str]]] = []
    denied = data.get("denied") or {}
    engines = data["engines"]
    if "pgtt" in denied:
        rows.append(("engines", _denied_items(data)))
    elif engines is None:
        rows.append(("engines", ["[$text-muted]pgtt schema not installed[/]"]))
    else:
        items = [f"[$success]● {engines['alive']} alive[/]"]
        if engines["lost"]:
            items.append(f"[$error]✗ {engines['lost']} lost[/]")
        if not engines["alive"]:
            items.append("[$warning]! none running[/]")
        rows.append(("engines", items))
    chains = data["chains"]
    if "timetable" in denied:
        rows.append(("chains", _denied_items(data)))
    elif chains is None:
        rows.append(("chains", ["[$text-muted]timetable not installed[/]"]))
    else:
        rows.append(("chains", [f"{chains['total']} total", f"[$success]● {chains['live']} live[/]",
                                f"[$warning]‖ {chains['paused']} paused[/]"]))
        rows.append(("", [f"[$accent]▶ {chains['running']} running[/]",
                          f"[$error]✗ {chains['failed']} failed[/]"]))  # last run failed (help page)
    jobs = data["jobs"]
    if jobs is None:
        rows.append(("jobs", ["[$text-muted]schedule not installed[/]"]))
    else:
        own = data.get("jobs_scope") == "own"
        rows.append(("your cron" if own else "cron jobs", [
            f"[$success]● {jobs['active']} active[/]", f"[$warning]‖ {jobs['inactive']} inactive[/]"]))
        rows.append(("", [f"[$error]! {jobs['broken']} broken[/]", f"[$accent]▶ {jobs['running']} running[/]"]))
        rows.append(("your once" if own else "one-time", [
            f"◷ {jobs['queued']} queued", f"[$success]✓ {jobs['done']} done[/]", f"[$error]✗ {jobs['failed']} failed[/]"]))
    return rows


def _denied_items(data: dict[str, Any]) -> list[str]:
    """``? no access for role NAME`` in word-sized items (packed one space apart); the grant
    that is missing is in the help page and on the sessions view."""
    role = getattr(data.get("parts"), "role", "") or "this role"
    return ["[$warning]? no access[/]", "for", "role", f"[b]{escape(role)}[/b]"]


def layout_summary(rows: list[tuple[str, list[str]]], width: int) -> str:
    """Label column of LABEL_WIDTH, items packed greedily (two spaces apart) into the rest;
    continuation lines are indented, so nothing runs into the label column."""
    room = max(12, width - LABEL_WIDTH - 1)  # 1: room for the panel's scrollbar on a short terminal
    lines: list[str] = []
    for label, items in rows:
        current: list[str] = []
        used = 0
        head = label
        sep = " " if items and items[0].startswith("[$warning]? no access") else "  "
        for item in items:
            size = Content.from_markup(item).cell_length
            gap = len(sep) if current else 0
            if current and used + gap + size > room:
                lines.append(f"[b]{head:<{LABEL_WIDTH - 1}}[/b] " + sep.join(current))
                head, current, used, gap = "", [], 0, 0
            current.append(item)
            used += gap + size
        lines.append(f"[b]{head:<{LABEL_WIDTH - 1}}[/b] " + sep.join(current))
    return "\n".join(lines)


class OverviewScreen(BaseView):
    VIEW = "overview"
    TITLE = "Overview"
    BINDINGS = [
        Binding("enter", "open", "open", show=False),
        Binding("tab", "focus_next", "next panel", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="overview-top"):
            with VerticalScroll(classes="panel", id="engines-box") as box:
                box.border_title = "Engines · Chains · Jobs"
                box.can_focus = False
                yield Static("…", id="summary")
            with Vertical(classes="panel", id="next-box") as box:
                box.border_title = "Next runs"
                table = VimTable(id="next")
                table.add_fixed(("when", 11, 50), ("in", 8), ("kind", 5), ("name", 10, "flex"))
                yield table
        with Vertical(classes="panel chart-panel", id="activity-box") as box:
            box.border_title = "Runs per minute · slot use · last hour"
            yield ActivityChart(id="activity")
        with Vertical(classes="panel", id="failures-box") as box:
            box.border_title = "Recent failures"
            table = VimTable(id="failures")
            table.add_fixed(("at", 11), ("kind", 7), ("name", 20), ("message", 20, "flex"))
            yield table

    def fetch(self, conn) -> Any:
        data = overview_api.overview(conn)
        # the chart's newest bucket on: the buckets before it are drawn already (issue 18)
        data["activity"] = trends.activity(conn, self.papp.now(), since=self._chart_since, parts=data["parts"])
        return data

    _chart_since = None  # read by the worker; set on the UI thread after each show

    def show(self, data: Any) -> None:
        now, tz = self.papp.now(), self.papp.tz
        chart = self.query_one("#activity", ActivityChart)
        chart.add_buckets(data["activity"]["buckets"])
        self._chart_since = chart.since
        self._summary = summary_rows(data)
        self._layout_summary()
        self.query_one("#next", VimTable).sync_rows([
            (f"{r['kind']}:{r['name']}", (fmt_time(r["at"], now, tz), fmt_relative(r["at"], now),
                                         KIND.get(r["kind"], r["kind"]), clip(r["name"], 120)))
            for r in data["next"]])
        self.query_one("#failures", VimTable).sync_rows([
            (f"{i}", (fmt_time(r["at"], now, tz), f"✗ {KIND.get(r['kind'], r['kind'])}", clip(r["name"], 120),
                      clip(r["message"], 300)))
            for i, r in enumerate(data["failures"])])

    def _layout_summary(self) -> None:
        rows = getattr(self, "_summary", None)
        if rows is None:
            return
        widget = self.query_one("#summary", Static)
        widget.update(layout_summary(rows, SUMMARY_WIDTH))  # the panel has a fixed width (app.tcss)

    def action_open(self) -> None:
        table = self.focused if isinstance(self.focused, VimTable) else None
        if table is None or self.last_data is None:
            return
        key = table.selected_key()
        if table.id == "next" and key:
            kind, _, name = key.partition(":")
            if kind == "chain":
                self.papp.open_chain(name)
            else:
                self.papp.switch_mode("jobs")
        elif table.id == "failures" and key is not None:
            row = self.last_data["failures"][int(key)]
            if row["kind"] == "chain":
                self.papp.open_chain(row["name"])
            else:
                self.papp.switch_mode("jobs")
