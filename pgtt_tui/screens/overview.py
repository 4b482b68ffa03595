"""Overview: engines connected, chains and jobs by state, recent failures, next runs."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from engine import overview as overview_api
from pgtt_tui.screens.base import BaseView
from pgtt_tui.widgets.common import VimTable
from pgtt_tui.widgets.format import clip, escape, fmt_relative, fmt_time

KIND = {"chain": "chain", "cron": "cron", "at": "once"}


class OverviewScreen(BaseView):
    VIEW = "overview"
    TITLE = "Overview"
    BINDINGS = [
        Binding("enter", "open", "open", show=False),
        Binding("tab", "focus_next", "next panel", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="overview-top"):
            with Vertical(classes="panel", id="engines-box") as box:
                box.border_title = "Engines · Chains · Jobs"
                yield Static("…", id="summary-engines")
                yield Static("", id="summary-chains")
                yield Static("", id="summary-jobs")
            with Vertical(classes="panel", id="next-box") as box:
                box.border_title = "Next runs"
                table = VimTable(id="next")
                table.add_fixed(("when", 11), ("in", 10), ("kind", 5), ("name", 28))
                yield table
        with Vertical(classes="panel", id="failures-box") as box:
            box.border_title = "Recent failures"
            table = VimTable(id="failures")
            table.add_fixed(("at", 11), ("kind", 7), ("name", 24), ("message", 60))
            yield table

    def fetch(self, conn) -> Any:
        return overview_api.overview(conn)

    def show(self, data: Any) -> None:
        now, tz = self.papp.now(), self.papp.tz
        engines = data["engines"]
        if engines is None:
            text = "engines: [$text-muted]pgtt schema not installed (pgtt-tui db init)[/]"
        else:
            lost = f"  [$error]✗ {engines['lost']} lost[/]" if engines["lost"] else ""
            none = "  [$warning]! none running: start `pgtt-tui worker`[/]" if not engines["alive"] else ""
            text = f"[b]engines[/b]  [$success]● {engines['alive']} alive[/]{lost}{none}"
        self.query_one("#summary-engines", Static).update(text)
        chains = data["chains"]
        if chains is None:
            text = "[b]chains[/b]  [$text-muted]timetable not installed[/]"
        else:
            text = (f"[b]chains[/b]   {chains['total']} total  [$success]● {chains['live']} live[/]  "
                    f"[$warning]‖ {chains['paused']} paused[/]  [$accent]▶ {chains['running']} running[/]  "
                    f"[$error]✗ {chains['failed']} failed last run[/]")
        self.query_one("#summary-chains", Static).update(text)
        jobs = data["jobs"]
        if jobs is None:
            text = "[b]jobs[/b]  [$text-muted]schedule not installed[/]"
        else:
            text = (f"[b]jobs[/b]     cron: [$success]● {jobs['active']} active[/]  "
                    f"[$warning]‖ {jobs['inactive']} inactive[/]  [$error]! {jobs['broken']} broken[/]\n"
                    f"         [$accent]▶ {jobs['running']} running[/]  one-time: ◷ {jobs['queued']} queued  "
                    f"[$success]✓ {jobs['done']} done[/]  [$error]✗ {jobs['failed']} failed[/]")
        self.query_one("#summary-jobs", Static).update(text)
        self.query_one("#next", VimTable).sync_rows([
            (f"{r['kind']}:{r['name']}", (fmt_time(r["at"], now, tz), fmt_relative(r["at"], now),
                                         KIND.get(r["kind"], r["kind"]), clip(r["name"], 28)))
            for r in data["next"]])
        self.query_one("#failures", VimTable).sync_rows([
            (f"{i}", (fmt_time(r["at"], now, tz), f"✗ {KIND.get(r['kind'], r['kind'])}", clip(r["name"], 24),
                      clip(r["message"], 60)))
            for i, r in enumerate(data["failures"])])

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
