"""Chains: the paged list, the detail (tasks + parameters), run history, and actions.

The list never loads every chain: it shows one page (keyset on the name, from
engine.timetable.api.chain_page, the query ``pgtt-tui chain list`` runs too) and moves to the next / previous page when the cursor runs
past an edge, so 100,000 chains cost what 200 do. Every action is one engine call
(pgtt_tui.actions → engine.timetable.api), the same the CLI makes.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from engine.views import trends
from engine.timetable.api import ChainPage
from pgtt_tui import actions
from pgtt_tui.screens.base import BaseView, needs_access
from pgtt_tui.screens.modals import ConfirmScreen, TextScreen
from pgtt_tui.widgets.charts import RunChart
from pgtt_tui.widgets.common import FilterBar, VimTable
from pgtt_tui.widgets.format import clip, escape, fmt_duration, fmt_relative, fmt_stamp, fmt_time

PAGE_SIZE = 200
CHAIN_WRITES = frozenset({"new_chain", "run_now", "stop", "toggle_pause", "delete", "edit_chain", "add_task",
                          "edit_task", "delete_task", "move_up", "move_down"})


def result_state(row: dict[str, Any]) -> str:
    if row.get("running"):
        return "running"
    return {"succeeded": "ok", "failed": "failed", "skipped": "canceled"}.get(row.get("last_status") or "", "never")


class PagedTable(VimTable):
    """A VimTable that asks for the next / previous page when the cursor runs off an edge."""

    SORTABLE = False  # keyset-paged by name on the server: a page sorted on its own would mislead

    class PageRequest(Message):
        def __init__(self, where: str) -> None:
            super().__init__()
            self.where = where  # "next" | "prev" | "first" | "last"

    BINDINGS = [
        Binding("j,down", "down", "down", show=False),
        Binding("k,up", "up", "up", show=False),
        Binding("pagedown", "page_next", "next page", show=False),
        Binding("pageup", "page_prev", "previous page", show=False),
        Binding("g,home", "first", "first", show=False),
        Binding("G,end", "last", "last", show=False),
    ]

    def action_down(self) -> None:
        if self.row_count and self.cursor_row >= self.row_count - 1:
            self.post_message(self.PageRequest("next"))
        else:
            self.action_cursor_down()

    def action_up(self) -> None:
        if self.cursor_row <= 0:
            self.post_message(self.PageRequest("prev"))
        else:
            self.action_cursor_up()

    def action_page_next(self) -> None:
        if self.row_count and self.cursor_row >= self.row_count - 1:
            self.post_message(self.PageRequest("next"))
        else:
            self.action_page_down()

    def action_page_prev(self) -> None:
        if self.cursor_row <= 0:
            self.post_message(self.PageRequest("prev"))
        else:
            self.action_page_up()

    def action_first(self) -> None:
        self.post_message(self.PageRequest("first"))

    def action_last(self) -> None:
        self.post_message(self.PageRequest("last"))


class ChainsScreen(BaseView):
    VIEW = "chains"
    TITLE = "Chains"
    ACCESS_PART = "timetable"
    WRITE_ACTIONS = CHAIN_WRITES
    BINDINGS = [
        Binding("enter", "open", "open"),
        Binding("slash", "filter", "filter"),
        Binding("n", "new_chain", "new"),
        Binding("x", "run_now", "run now"),
        Binding("s", "stop", "stop", show=False),
        Binding("p", "toggle_pause", "pause/resume"),
        Binding("d", "delete", "delete"),
        Binding("h", "history", "history", show=False),
        Binding("y", "copy", "copy name", show=False),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.anchor: tuple[str, str | None] = ("first", None)
        self.filter_text = ""
        self.cursor_to: str = "keep"  # "top" | "bottom" | "keep" after the next page arrives
        self.page: ChainPage | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="panel", id="chains-panel") as panel:
            panel.border_title = "Chains"
            table = PagedTable(id="chains")
            table.add_fixed(("name", 20, "flex"), ("schedule", 16), ("next run", 10), ("last run", 11, 100), ("result", 10),
                            ("state", 9, 70), ("client", 12, 110))
            yield table
        yield Static("", id="chains-info", classes="info-line")
        yield FilterBar("words in the name · state:live|paused|running|failed · client:NAME", id="filter")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(PagedTable).focus()

    # ---- data ---------------------------------------------------------------------------------
    def fetch(self, conn) -> Any:
        kind, name = self.anchor
        kw: dict[str, Any] = {"limit": PAGE_SIZE, "filter": self.filter_text, "now": self.papp.now()}
        if kind == "after":
            kw["after"] = name
        elif kind == "before":
            kw["before"] = name
        elif kind == "last":
            kw["last"] = True
        return actions.chain_page(conn, **kw)

    def show(self, page: ChainPage) -> None:
        self.page = page
        now, tz = self.papp.now(), self.papp.tz
        table = self.query_one(PagedTable)
        rows = []
        for r in page.rows:
            state = "live" if r["live"] else "paused"
            rows.append((r["chain_name"], (
                clip(r["chain_name"], 120), clip(r["run_at"] or "* * * * *", 16),
                fmt_relative(r["next_run"], now) if r["live"] and r["next_run"] else "",
                fmt_time(r["last_started_at"], now, tz), table.state(result_state(r)), table.state(state),
                clip(r["client_name"] or "any", 12))))
        table.sync_rows(rows)
        if self.cursor_to == "top" and table.row_count:
            table.move_cursor(row=0)
        elif self.cursor_to == "bottom" and table.row_count:
            table.move_cursor(row=table.row_count - 1)
        self.cursor_to = "keep"
        if page.rows:
            first, last = page.first_index + 1, page.first_index + len(page.rows)
            where = f"{first:,}–{last:,} of {page.total:,}"
        else:
            where = f"none of {page.total:,}" if not page.filter else "no chain matches the filter"
        flt = f" · filter: {escape(page.filter)}" if page.filter else ""
        more = " · PgDn/j past the end: next page" if page.has_next else ""
        self.query_one("#chains-info", Static).update(f"chains {where}{flt}{more}")
        self.query_one("#chains-panel").border_title = f"Chains ({page.total:,})"

    def on_paged_table_page_request(self, event: PagedTable.PageRequest) -> None:
        event.stop()
        page = self.page
        if event.where == "next":
            if page is None or not page.has_next:
                return
            self.anchor, self.cursor_to = ("after", page.last_name), "top"
        elif event.where == "prev":
            if page is None or not page.has_prev:
                return
            self.anchor, self.cursor_to = ("before", page.first_name), "bottom"
        elif event.where == "first":
            self.anchor, self.cursor_to = ("first", None), "top"
        else:
            self.anchor, self.cursor_to = ("last", None), "bottom"
        self.request_poll()

    # ---- filter --------------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self.filter_text = event.value.strip()
        self.anchor, self.cursor_to = ("first", None), "top"
        self.request_poll()

    # ---- actions -------------------------------------------------------------------------------
    def selected(self) -> dict[str, Any] | None:
        key = self.query_one(PagedTable).selected_key()
        if key is None or self.page is None:
            return None
        return next((r for r in self.page.rows if r["chain_name"] == key), None)

    def _need(self) -> dict[str, Any] | None:
        row = self.selected()
        if row is None:
            self.notify("no chain selected", severity="warning")
        return row

    @needs_access
    def action_open(self) -> None:
        row = self._need()
        if row:
            self.app.push_screen(ChainDetailScreen(row["chain_name"]))

    @needs_access
    def action_history(self) -> None:
        row = self._need()
        if row:
            self.app.push_screen(RunHistoryScreen(row["chain_name"]))

    @needs_access
    def action_new_chain(self) -> None:
        from pgtt_tui.screens.editors import ChainEditor  # noqa: PLC0415

        self.app.push_screen(ChainEditor(None))

    @needs_access
    def action_copy(self) -> None:
        row = self._need()
        if row:
            self.app.copy_to_clipboard(row["chain_name"])
            self.notify(f"copied {row['chain_name']!r} (OSC 52)", timeout=2)

    @needs_access
    def action_run_now(self) -> None:
        row = self._need()
        if row:
            chain_actions_run(self, row["chain_name"])

    @needs_access
    def action_stop(self) -> None:
        row = self._need()
        if row:
            chain_actions_stop(self, row["chain_name"])

    @needs_access
    def action_toggle_pause(self) -> None:
        row = self._need()
        if row:
            chain_actions_pause(self, row["chain_name"], bool(row["live"]))

    @needs_access
    def action_delete(self) -> None:
        row = self._need()
        if row:
            chain_actions_delete(self, row["chain_name"])


# ---- shared chain actions (list and detail) ---------------------------------------------------

def chain_actions_run(view: BaseView, name: str) -> None:
    view.engine_act("run_now", f"run chain {name}", actions.run_chain_now, name,
             summary=f"chain {name!r} queued to run now")


def chain_actions_stop(view: BaseView, name: str) -> None:
    def done(ok: bool | None) -> None:
        if ok:
            view.engine_act("stop", f"stop chain {name}", actions.stop_chain, name,
                     summary=f"stop requested for chain {name!r}")

    view.app.push_screen(ConfirmScreen("Stop chain", f"Stop the running chain {name!r}? Its current run is "
                                       "cancelled and recorded as failed."), done)


def chain_actions_pause(view: BaseView, name: str, live: bool) -> None:
    if live:
        view.engine_act("toggle_pause", f"pause chain {name}", actions.pause_chain, name,
                 summary=f"chain {name!r} paused")
    else:
        view.engine_act("toggle_pause", f"resume chain {name}", actions.resume_chain, name,
                 summary=f"chain {name!r} resumed")


def chain_actions_delete(view: BaseView, name: str, then: Any = None) -> None:
    def done(ok: bool | None) -> None:
        if ok:
            view.engine_act("delete", f"delete chain {name}", actions.delete_chain, name,
                     summary=f"chain {name!r} deleted", then=then)

    view.app.push_screen(ConfirmScreen(
        f"Delete chain {name!r}", f"Delete the chain {name!r} with all its tasks and parameters? "
        "Its run history stays. This cannot be undone.", type_to_confirm=name), done)


# ---- detail ----------------------------------------------------------------------------------

class ChainDetailScreen(BaseView):
    VIEW = "chain"
    TITLE = "Chain"
    ACCESS_PART = "timetable"
    HELP = "chain"
    WRITE_ACTIONS = CHAIN_WRITES
    ENTER_ACTION = "edit_task"  # Enter on the task table (the table's own enter key selects the row)
    BINDINGS = [
        Binding("escape", "back", "back"),
        Binding("e", "edit_chain", "edit"),
        Binding("a", "add_task", "add task"),
        Binding("enter", "edit_task", "edit task"),
        Binding("D", "delete_task", "delete task", show=False),
        Binding("K", "move_up", "task up", show=False),
        Binding("J", "move_down", "task down", show=False),
        Binding("x", "run_now", "run now"),
        Binding("s", "stop", "stop", show=False),
        Binding("p", "toggle_pause", "pause/resume"),
        Binding("d", "delete", "delete", show=False),
        Binding("h", "history", "history"),
        Binding("y", "copy", "copy command", show=False),
    ]

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.chain_name = name
        self.detail: dict[str, Any] | None = None

    def compose_body(self) -> ComposeResult:
        fields = Static("", id="chain-fields")
        fields.can_focus = True  # Tab: settings ⇄ tasks; `?` explains the focused part
        yield fields
        with Vertical(classes="panel chart-panel", id="runs-chart-box") as panel:
            panel.border_title = "Last runs: duration (bars) · due→start lag"
            yield RunChart(id="runs-chart")
        with Vertical(classes="panel", id="tasks-panel") as panel:
            panel.border_title = "Tasks (in order)"
            table = VimTable(id="tasks")
            table.help_topic = "tasks"
            # tasks are named by their id everywhere (failures, `chain task edit ID`), in chain order
            table.add_fixed(("id", 5), ("name", 14), ("kind", 7), ("command", 26, "flex"), ("flags", 5), ("timeout", 8, 100),
                            ("params", 6))
            yield table
        with Vertical(classes="panel", id="task-params") as panel:
            panel.border_title = "Parameters of the selected task"
            yield Static("", id="params")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#tasks", VimTable).focus()

    def fetch(self, conn) -> Any:
        detail = actions.chain_detail(conn, self.chain_name, now=self.papp.now())
        # from the oldest run still open on: the others are drawn already (issue 18)
        detail["run_stats"] = trends.run_stats(conn, "chain", self.chain_name, now=self.papp.now(),
                                               since_id=self._runs_since)
        return detail

    _runs_since = 0  # read by the worker; set on the UI thread after each show

    def show(self, detail: dict[str, Any]) -> None:
        self.detail = detail
        chart = self.query_one("#runs-chart", RunChart)
        chart.add_runs(detail["run_stats"]["runs"])
        self._runs_since = chart.since_id
        chain = detail["chain"]
        now, tz = self.papp.now(), self.papp.tz
        table = self.query_one("#tasks", VimTable)
        nxt = detail.get("next_runs") or []
        next_text = ", ".join(fmt_time(t, now, tz) for t in nxt[:3]) if chain.get("live") else "(paused)"
        flags = [f for f, on in (("self-destruct", chain.get("self_destruct")),
                                 ("exclusive", chain.get("exclusive_execution"))) if on]
        last = detail.get("last_run") or {}
        last_text = ""
        if last:
            last_text = (f"{fmt_time(last.get('started_at'), now, tz)} {escape(str(last.get('status', '')))}"
                         f"{' — ' + escape(clip(last.get('reason'), 40)) if last.get('reason') else ''}")
        state = ("[$success]● live[/]" if chain.get("live") else "[$warning]‖ paused[/]")
        settings = [f"client {escape(chain.get('client_name') or 'any')}",
                    f"max instances {chain.get('max_instances') or 'default'}",
                    f"timeout {chain.get('timeout') or 0} ms", *flags]
        lines = [f"[b]{escape(chain['chain_name'])}[/b]  {escape(chain.get('run_at') or '* * * * *')}  {state}",
                 f"[$text-muted]{'runs':<6}[/]" + " · ".join(settings),
                 f"[$text-muted]{'next':<6}[/]{next_text}",
                 f"[$text-muted]{'last':<6}[/]{last_text or 'never run'}"]
        if chain.get("on_error"):
            lines.append(f"[$text-muted]{'error':<6}[/]on error: {escape(clip(chain.get('on_error'), 60))}")
        self.query_one("#chain-fields", Static).update("\n".join(lines))
        rows = []
        for t in detail["tasks"]:
            flags = "".join(f for f, on in (("I", t.get("ignore_error")), ("A", t.get("autonomous")),
                                            ("-", not t.get("live", True))) if on)
            rows.append((str(t["task_id"]), (
                str(t["task_id"]), clip(t.get("task_name") or "", 40), str(t.get("kind") or "SQL"), clip(t.get("command"), 200),
                flags, str(t.get("timeout") or 0), str(len(t.get("parameters") or [])))))
        table.sync_rows(rows)
        self.query_one("#tasks-panel").border_title = (
            f"Tasks of {escape(chain['chain_name'])} ({len(rows)}) · flags: I ignore error, A autonomous, - skipped")
        self._show_params()

    def selected_task(self) -> dict[str, Any] | None:
        key = self.query_one("#tasks", VimTable).selected_key()
        if key is None or self.detail is None:
            return None
        return next((t for t in self.detail["tasks"] if str(t["task_id"]) == key), None)

    def on_data_table_row_highlighted(self, event: VimTable.RowHighlighted) -> None:
        self._show_params()

    def _show_params(self) -> None:
        task = self.selected_task()
        params = self.query_one("#params", Static)
        if task is None:
            params.update("(no task)")
            return
        import json  # noqa: PLC0415

        values = task.get("parameters") or []
        lines = [f"{i}: {escape(json.dumps(v, ensure_ascii=False))}" for i, v in enumerate(values, 1)]
        params.update("\n".join(lines) if lines else "(none: the task runs once without parameters)")

    @needs_access
    def action_edit_chain(self) -> None:
        from pgtt_tui.screens.editors import ChainEditor  # noqa: PLC0415

        if self.detail:
            self.app.push_screen(ChainEditor(self.detail["chain"]), self._edited)

    def _edited(self, new_name: str | None) -> None:
        if new_name and new_name != self.chain_name:
            self.chain_name = new_name
        self.request_poll()

    @needs_access
    def action_add_task(self) -> None:
        from pgtt_tui.screens.editors import TaskEditor  # noqa: PLC0415

        if self.detail:
            self.app.push_screen(TaskEditor(self.chain_name, None), lambda _: self.request_poll())

    @needs_access
    def action_edit_task(self) -> None:
        from pgtt_tui.screens.editors import TaskEditor  # noqa: PLC0415

        task = self.selected_task()
        if task is None:
            self.action_add_task()
            return
        self.app.push_screen(TaskEditor(self.chain_name, task), lambda _: self.request_poll())

    @needs_access
    def action_delete_task(self) -> None:
        task = self.selected_task()
        if task is None:
            return
        label = task.get("task_name") or f"task {task['task_id']}"

        def done(ok: bool | None) -> None:
            if ok:
                self.engine_act("delete_task", f"delete task {label}", actions.delete_task, task["task_id"],
                         summary=f"task {label!r} deleted")

        self.app.push_screen(ConfirmScreen("Delete task", f"Delete {label!r} from chain {self.chain_name!r}?"),
                             done)

    @needs_access
    def action_move_up(self) -> None:
        task = self.selected_task()
        if task:
            self.engine_act("move_up", "move task up", actions.move_task, task["task_id"], -1, summary="task moved up")

    @needs_access
    def action_move_down(self) -> None:
        task = self.selected_task()
        if task:
            self.engine_act("move_down", "move task down", actions.move_task, task["task_id"], 1,
                     summary="task moved down")

    @needs_access
    def action_run_now(self) -> None:
        chain_actions_run(self, self.chain_name)

    @needs_access
    def action_stop(self) -> None:
        chain_actions_stop(self, self.chain_name)

    @needs_access
    def action_toggle_pause(self) -> None:
        if self.detail:
            chain_actions_pause(self, self.chain_name, bool(self.detail["chain"].get("live")))

    @needs_access
    def action_delete(self) -> None:
        chain_actions_delete(self, self.chain_name, then=lambda _: self.app.pop_screen())

    @needs_access
    def action_history(self) -> None:
        self.app.push_screen(RunHistoryScreen(self.chain_name))

    @needs_access
    def action_copy(self) -> None:
        task = self.selected_task()
        if task:
            self.app.copy_to_clipboard(task.get("command") or "")
            self.notify("copied the task command (OSC 52)", timeout=2)


# ---- run history --------------------------------------------------------------------------------

class RunHistoryScreen(BaseView):
    VIEW = "history"
    TITLE = "Run history"
    ACCESS_PART = "timetable"
    HELP = "history"
    ENTER_ACTION = "show_output"
    BINDINGS = [
        Binding("escape", "back", "back"),
        Binding("enter", "show_output", "output"),
        Binding("tab", "focus_next", "next table", show=False),
    ]

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.chain_name = name
        self.history: dict[str, Any] | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="panel", id="runs-panel") as panel:
            panel.border_title = f"Runs of {escape(self.chain_name)}"
            table = VimTable(id="runs")
            table.add_fixed(("run", 6), ("started", 11), ("took", 7), ("trigger", 8, 90), ("result", 10), ("client", 12, 100),
                            ("reason", 20, "flex"))
            yield table
        with Vertical(classes="panel", id="steps-panel") as panel:
            panel.border_title = "Tasks of the selected run"
            table = VimTable(id="steps")
            table.add_fixed(("task", 16), ("kind", 8, 90), ("rc", 8), ("took", 7), ("output", 20, "flex"))
            yield table

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#runs", VimTable).focus()

    def fetch(self, conn) -> Any:
        return actions.run_history(conn, self.chain_name)

    def show(self, data: dict[str, Any]) -> None:
        self.history = data
        now, tz = self.papp.now(), self.papp.tz
        runs = self.query_one("#runs", VimTable)
        rows = []
        for r in data["runs"]:
            took = (r["finished_at"] - r["started_at"]) if r.get("finished_at") and r.get("started_at") else None
            state = {"succeeded": "ok", "failed": "failed", "running": "running", "claimed": "running",
                     "skipped": "canceled"}.get(r.get("status") or "", r.get("status"))
            rows.append((str(r["run_id"]), (
                str(r["run_id"]), fmt_time(r.get("started_at") or r.get("claimed_at"), now, tz), fmt_duration(took),
                str(r.get("trigger") or ""), runs.state(state), clip(r.get("client_name"), 12),
                clip(r.get("reason"), 300))))
        runs.sync_rows(rows)
        self._show_steps()

    def selected_run(self) -> dict[str, Any] | None:
        key = self.query_one("#runs", VimTable).selected_key()
        if key is None or self.history is None:
            return None
        return next((r for r in self.history["runs"] if str(r["run_id"]) == key), None)

    def on_data_table_row_highlighted(self, event: VimTable.RowHighlighted) -> None:
        if event.data_table.id == "runs":
            self._show_steps()

    def _show_steps(self) -> None:
        run = self.selected_run()
        steps = self.query_one("#steps", VimTable)
        if run is None:
            steps.sync_rows([])
            return
        rows = []
        for i, s in enumerate(run.get("tasks") or []):
            took = (s["finished"] - s["last_run"]) if s.get("finished") and s.get("last_run") else None
            rc = s.get("returncode")
            rows.append((f"{run['run_id']}:{i}", (
                clip(s.get("task_name") or f"task {s.get('task_id')}", 18), str(s.get("kind") or ""),
                steps.state("ok") if rc == 0 else steps.state("failed") if rc is not None else "",
                fmt_duration(took), clip(s.get("output"), 300))))
        steps.sync_rows(rows)
        self.query_one("#steps-panel").border_title = f"Tasks of run {run['run_id']} (Enter: full output)"

    def action_show_output(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        steps = self.query_one("#steps", VimTable)
        tasks = run.get("tasks") or []
        if self.focused is steps and steps.row_count:
            s = tasks[steps.cursor_row]
            text = (f"task: {s.get('task_name') or s.get('task_id')}\nreturn code: {s.get('returncode')}\n"
                    f"started: {fmt_stamp(s.get('last_run'), self.papp.tz)}\n"
                    f"finished: {fmt_stamp(s.get('finished'), self.papp.tz)}\n\n{s.get('output') or ''}")
            self.app.push_screen(TextScreen(f"output of {s.get('task_name') or 'task'}", text))
        else:
            lines = [f"run {run['run_id']} {run.get('status')} {run.get('reason') or ''}"]
            for s in tasks:
                lines.append(f"- {s.get('task_name') or s.get('task_id')} rc={s.get('returncode')}: "
                             f"{s.get('output') or ''}")
            self.app.push_screen(TextScreen(f"run {run['run_id']}", "\n".join(lines)))
