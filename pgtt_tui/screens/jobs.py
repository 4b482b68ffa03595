"""Schedule jobs (pgpro_scheduler-style): cron jobs, one-time jobs, the timetable calendar."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import psycopg
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Checkbox, Input, Static, TabbedContent, TabPane, TextArea

from engine.views import sessions as sessions_api
from engine.views import trends
from engine.errors import PgttError
from pgtt_tui import actions
from pgtt_tui.screens.base import BaseView, describe_error, needs_access
from pgtt_tui.screens.editors import _Editor, check_int, preview_schedule
from pgtt_tui.screens.modals import ConfirmScreen
from pgtt_tui.widgets.charts import RunChart
from pgtt_tui.widgets.common import FilterBar, TextCheckbox, VimTable
from pgtt_tui.widgets.format import clip, escape, fmt_relative, fmt_stamp, fmt_time

JOB_WRITES = frozenset({"new_job", "submit_job", "edit_job", "toggle_active", "cancel_job", "resubmit_job",
                        "drop_job"})
CALENDAR_ROWS = 1000  # one calendar page; > pages on while the window has more, then moves the window
CAL_STATE = {"submitted": "submitted", "inprogress": "running", "done": "done", "error": "failed"}


class JobsScreen(BaseView):
    VIEW = "jobs"
    TITLE = "Schedule jobs"
    ACCESS_PART = "schedule"
    WRITE_ACTIONS = JOB_WRITES
    BINDINGS = [
        Binding("enter", "open", "open"),
        Binding("slash", "filter", "filter"),
        Binding("n", "new_job", "new cron job"),
        Binding("o", "submit_job", "one-time job"),
        Binding("e", "edit_job", "edit"),
        Binding("a", "toggle_active", "(de)activate"),
        Binding("c", "cancel_job", "cancel"),
        Binding("R", "resubmit_job", "resubmit"),
        Binding("d", "drop_job", "delete"),
        Binding("t", "tab('calendar')", "calendar", show=False),
        # [ and ] switch tabs (every tabbed view, base.py); < and > move the calendar window
        Binding("less_than_sign", "shift(-1)", "earlier", show=False),
        Binding("greater_than_sign", "shift(1)", "later", show=False),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.filter_text = ""
        self.window_offset = 0  # calendar window: hours from now (steps of 12h)
        self.cal_pages: list[tuple] = []  # cursors of the calendar pages shown after the first
        self._said_not_installed = False

    def compose_body(self) -> ComposeResult:
        with TabbedContent(id="job-tabs", initial="cron"):
            with TabPane("Cron jobs", id="cron"):
                table = VimTable(id="cron-table")
                table.help_topic = "cron"
                table.add_fixed(("id", 4), ("name", 16, "flex"), ("schedule", 14), ("state", 10), ("next run", 10),
                                ("last run", 11, 100), ("last", 8), ("run as", 10, 110))
                yield table
            with TabPane("One-time jobs", id="onetime"):
                table = VimTable(id="at-table")
                table.help_topic = "onetime"
                table.add_fixed(("id", 5), ("name", 14), ("state", 10), ("run after", 11), ("attempt", 7, 100), ("done", 11, 90),
                                ("query / error", 20, "flex"))
                yield table
            with TabPane("Calendar", id="calendar"):
                yield Static("", id="cal-info", classes="info-line")
                table = VimTable(id="cal-table")
                table.help_topic = "calendar"
                table.add_fixed(("when", 11), ("kind", 5), ("id", 5, 90), ("name", 18), ("state", 10), ("error", 20, "flex"))
                yield table
        yield FilterBar("name or id", id="filter")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#cron-table", VimTable).focus()

    # ---- data ---------------------------------------------------------------------------------
    def window(self) -> tuple[datetime, datetime]:
        now = self.papp.now().replace(minute=0, second=0, microsecond=0)
        start = now - timedelta(hours=6) + timedelta(hours=12 * self.window_offset)
        return start, start + timedelta(hours=30)

    def fetch(self, conn) -> Any:
        if not sessions_api.access(conn)["schedule"]:
            return {"installed": False, "cron": [], "onetime": [], "calendar": [], "window": self.window()}
        needle = self.filter_text.lower()

        def keep(row: dict[str, Any]) -> bool:
            return not needle or needle in (row.get("name") or "").lower() or needle == str(row["id"])

        start, end = self.window()
        try:
            after = self.cal_pages[-1] if self.cal_pages else None
            calendar, calendar_error = actions.job_calendar(conn, start, end, now=self.papp.now(),
                                                            limit=CALENDAR_ROWS + 1, after=after), ""
        except (PgttError, psycopg.Error) as exc:  # the lists still show if the calendar fails
            calendar, calendar_error = [], describe_error(exc)
        more = len(calendar) > CALENDAR_ROWS
        return {"installed": True, "calendar_more": more,
                "cron": [r for r in actions.list_jobs(conn) if keep(r)],
                "onetime": sorted((r for r in actions.list_onetime(conn) if keep(r)),
                                  key=lambda r: (r["status"] == "done", -r["id"])),
                "calendar": calendar[:CALENDAR_ROWS], "calendar_error": calendar_error, "window": (start, end)}

    def show(self, data: Any) -> None:
        now, tz = self.papp.now(), self.papp.tz
        cron = self.query_one("#cron-table", VimTable)
        cron.sync_rows([(str(r["id"]), (
            str(r["id"]), clip(r["name"] or "", 120), clip(_rule_text(r["schedule"]), 40),
            cron.state(job_state(r)),
            fmt_relative(r["next_run"], now) if r["active"] and not r["broken"] else "",
            fmt_time(r["last_finished"], now, tz),
            cron.state({"done": "ok", "error": "failed", "working": "running"}.get(r["last_state"] or "", "never")),
            clip(r["run_as"], 10))) for r in data["cron"]])
        at = self.query_one("#at-table", VimTable)
        at.sync_rows([(str(r["id"]), (
            str(r["id"]), clip(r["name"] or "", 16), at.state(job_state(r)),
            fmt_time(r["run_after"], now, tz) if r["run_after"] else ("after deps" if r["depends_on"] else "now"),
            f"{r['attempt']}/{r['resubmit_limit']}", fmt_time(r["done_time"], now, tz),
            clip(r["error"] or r["query"], 300))) for r in data["onetime"]])
        cal = self.query_one("#cal-table", VimTable)
        cal.sync_rows([(f"{r['type']}:{r['id']}:{r['scheduled_at'].isoformat()}", (
            fmt_stamp(r["scheduled_at"], tz)[5:16], "cron" if r["type"] == "periodical" else "once", str(r["id"]),
            clip(r["name"] or "", 20), cal.state(CAL_STATE.get(r["status"], r["status"])), clip(r["error"], 300)))
            for r in data["calendar"]])
        start, end = data["window"]
        error = data.get("calendar_error")
        summary = f"{len(data['calendar'])} runs, past and planned"
        if self.cal_pages or data.get("calendar_more"):  # the window has more than one page
            summary = f"page {len(self.cal_pages) + 1}: {summary}" + (
                ", more on the next page" if data.get("calendar_more") else "")
        self.query_one("#cal-info", Static).update(
            f"{fmt_stamp(start, tz)[5:16]} → {fmt_stamp(end, tz)[5:16]} · "
            + (f"[$error]✗ {escape(error)}[/]" if error else summary)
            + " · < earlier  > later · \\[ ] tabs")
        if not data["installed"] and not self._said_not_installed:  # once, not on every poll
            self.notify("the schedule module is not installed here (pgtt-tui db init)", severity="warning")
        self._said_not_installed = not data["installed"]
        tabs = self.query_one(TabbedContent)
        tabs.get_tab("cron").label = f"Cron jobs ({len(data['cron'])})"
        tabs.get_tab("onetime").label = f"One-time jobs ({len(data['onetime'])})"

    # ---- selection --------------------------------------------------------------------------
    def current_tab(self) -> str:
        return self.query_one(TabbedContent).active or "cron"

    def selected(self) -> tuple[str, dict[str, Any]] | None:
        if self.last_data is None:
            return None
        tab = self.current_tab()
        if tab == "cron":
            key = self.query_one("#cron-table", VimTable).selected_key()
            row = next((r for r in self.last_data["cron"] if str(r["id"]) == key), None)
            return ("cron", row) if row else None
        if tab == "onetime":
            key = self.query_one("#at-table", VimTable).selected_key()
            row = next((r for r in self.last_data["onetime"] if str(r["id"]) == key), None)
            return ("at", row) if row else None
        return None

    def _need(self, kind: str | None = None) -> dict[str, Any] | None:
        sel = self.selected()
        if sel is None or (kind and sel[0] != kind):
            what = {"cron": "a cron job", "at": "a one-time job"}.get(kind or "", "a job")
            self.notify(f"select {what} first", severity="warning")
            return None
        return sel[1]

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        table = {"cron": "#cron-table", "onetime": "#at-table", "calendar": "#cal-table"}.get(event.pane.id or "")
        if table:
            self.query_one(table, VimTable).focus()
        self.refresh_bindings()

    #: keys that act on one tab's rows: shown (and allowed) only on that tab
    TAB_ACTIONS = {"edit_job": "cron", "toggle_active": "cron", "drop_job": "cron",
                   "cancel_job": "onetime", "resubmit_job": "onetime"}

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = super().check_action(action, parameters)
        if allowed and action in self.TAB_ACTIONS:
            try:
                return self.current_tab() == self.TAB_ACTIONS[action]
            except Exception:  # noqa: BLE001 - not composed yet
                return True
        return allowed

    def action_tab(self, name: str) -> None:
        self.query_one(TabbedContent).active = name

    def action_shift(self, step: int) -> None:
        data = self.last_data or {}
        if step > 0 and data.get("calendar_more") and data.get("calendar"):
            last = data["calendar"][-1]  # the next page of this window
            self.cal_pages.append((last["scheduled_at"], last["type"], last["id"]))
        elif step < 0 and self.cal_pages:
            self.cal_pages.pop()
        else:
            self.cal_pages.clear()
            self.window_offset += step
        self.query_one(TabbedContent).active = "calendar"
        self.request_poll()

    def action_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_filter_bar_changed(self, event: FilterBar.Changed) -> None:
        self.filter_text = event.value.strip()
        self.request_poll()

    # ---- actions ------------------------------------------------------------------------------
    @needs_access
    def action_open(self) -> None:
        sel = self.selected()
        if sel is None:
            return
        kind, row = sel
        self.app.push_screen(JobDetailScreen(row["id"] if kind == "cron" else f"at:{row['id']}"))

    @needs_access
    def action_new_job(self) -> None:
        self.app.push_screen(CronJobEditor(None), lambda _: self.request_poll())

    @needs_access
    def action_edit_job(self) -> None:
        """Read the whole job (commands, time zone, limits) first, then open the editor on it."""
        row = self._need("cron")
        if row:
            self.act("load_job", f"read job {row['id']}", actions.job_info, row["id"], write=False,
                     summary=f"editing job {row['id']}", then=self._open_editor)

    def _open_editor(self, job: dict[str, Any]) -> None:
        self.app.push_screen(CronJobEditor(job), lambda _: self.request_poll())

    @needs_access
    def action_submit_job(self) -> None:
        self.app.push_screen(OneTimeJobEditor(), lambda _: self.request_poll())

    @needs_access
    def action_toggle_active(self) -> None:
        row = self._need("cron")
        if row is None:
            return
        label = row["name"] or f"job {row['id']}"
        if row["active"]:
            self.engine_act("toggle_active", f"deactivate {label}", actions.deactivate_job, row["id"],
                     summary=f"{label} deactivated")
        else:
            self.engine_act("toggle_active", f"activate {label}", actions.activate_job, row["id"],
                     summary=f"{label} activated")

    @needs_access
    def action_cancel_job(self) -> None:
        row = self._need("at")
        if row is None:
            return
        label = row["name"] or f"one-time job {row['id']}"

        def done(ok: bool | None) -> None:
            if ok:
                self.engine_act("cancel_job", f"cancel {label}", actions.cancel_onetime, row["id"],
                         summary=f"{label} canceled")

        self.app.push_screen(ConfirmScreen("Cancel one-time job", f"Cancel {label} (id {row['id']})? A queued job "
                                           "will not run; a running one is not resubmitted."), done)

    @needs_access
    def action_resubmit_job(self) -> None:
        row = self._need("at")
        if row:
            label = row["name"] or f"one-time job {row['id']}"
            self.engine_act("resubmit_job", f"resubmit {label}", actions.resubmit_onetime, row["id"],
                     summary=f"{label} resubmitted")

    @needs_access
    def action_drop_job(self) -> None:
        row = self._need("cron")
        if row is None:
            return
        label = row["name"] or f"job {row['id']}"

        def done(ok: bool | None) -> None:
            if ok:
                self.engine_act("drop_job", f"delete {label}", actions.drop_job, row["id"], summary=f"{label} deleted")

        self.app.push_screen(ConfirmScreen(f"Delete cron job {label!r}", f"Delete the cron job {label!r} "
                                           f"(id {row['id']})? Its run log stays.", type_to_confirm=label), done)


def schedule_text(rule: Any) -> str:
    """A job's schedule as the editor shows it: the cron string, or the rule as JSON."""
    if not rule:
        return ""
    if isinstance(rule, dict) and set(rule) == {"crontab"}:
        return str(rule["crontab"])
    return json.dumps(rule, ensure_ascii=False, sort_keys=True)


def preview_rule(text: str, now: datetime, tz_text: str, display_tz: Any) -> tuple[bool, str]:
    """Check a rule object with the engine's evaluator and show the next firings."""
    from engine.schedule.manager import job_schedule  # noqa: PLC0415
    from engine.schedules import ScheduleError, upcoming  # noqa: PLC0415

    try:
        rule = json.loads(text)
    except ValueError as exc:
        return False, f"✗ rule: not JSON: {exc}"
    if not isinstance(rule, dict):
        return False, "✗ rule: expected a JSON object such as {\"hours\": [3], \"minutes\": [0]}"
    try:
        fires = upcoming(job_schedule(rule), now, 5, tz_text.strip() or "UTC")
    except (ScheduleError, ValueError, TypeError) as exc:
        return False, f"✗ {exc}"
    if not fires:
        return True, "✓ valid, but it never fires again"
    return True, "✓ next: " + ", ".join(fmt_stamp(f, display_tz)[5:16] for f in fires)


def _rule_text(rule: Any) -> str:
    if not rule:
        return ""
    if isinstance(rule, dict):
        if rule.get("crontab"):
            return str(rule["crontab"])
        if rule.get("dates"):
            return f"{len(rule['dates'])} dates"
    return "rule"


def job_state(row: dict[str, Any]) -> str:
    """One word for a cron job (list_jobs row) or a one-time job (job_status row)."""
    if "schedule" in row:
        if row.get("running"):
            return "running"
        if row["broken"]:
            return "broken"
        return "active" if row["active"] else "inactive"
    if row["status"] == "done":
        if row.get("canceled"):
            return "canceled"
        return "done" if row["is_success"] else "failed"
    if row["status"] == "processing":
        return "running"
    return "canceled" if row.get("canceled") else "submitted"


class JobDetailScreen(BaseView):
    """A job's definition and its latest runs (cron) or its state (one-time)."""

    VIEW = "job"
    TITLE = "Job"
    ACCESS_PART = "schedule"
    HELP = "jobs"
    BINDINGS = [Binding("escape", "back", "back"), Binding("y", "copy", "copy")]

    def __init__(self, job_id: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.job_id = job_id
        self.text = ""

    def compose_body(self) -> ComposeResult:
        if not isinstance(self.job_id, str):  # a cron job: its runs as a chart (issue 18)
            with Vertical(classes="panel chart-panel", id="runs-chart-box") as panel:
                panel.border_title = "Last runs: duration (bars) · due→start lag"
                yield RunChart(id="runs-chart")
        with VerticalScroll(classes="panel"):
            yield Static("…", id="job-text")

    _runs_since = 0  # read by the worker; set on the UI thread after each show

    def fetch(self, conn) -> Any:
        info = actions.job_info(conn, self.job_id)
        stats = None
        if not isinstance(self.job_id, str) and trends.access(conn).readable("schedule"):
            stats = trends.run_stats(conn, "job", self.job_id, now=self.papp.now(), since_id=self._runs_since)
        return info, stats

    def show(self, data: Any) -> None:
        import json  # noqa: PLC0415

        data, stats = data
        if stats is not None:
            chart = self.query_one("#runs-chart", RunChart)
            chart.add_runs(stats["runs"])
            self._runs_since = chart.since_id

        self.text = json.dumps(data, indent=2, default=str, ensure_ascii=False)
        self.query_one("#job-text", Static).update(escape(self.text))

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.notify("copied (OSC 52)", timeout=2)


class CronJobEditor(_Editor):
    VIEW = "job-editor"
    TITLE = "Cron job editor"
    HELP = "editor"

    def __init__(self, job: dict[str, Any] | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.job = job or {}
        self.is_new = job is None
        self.errors: dict[str, str] = {}

    def compose_body(self) -> ComposeResult:
        j = self.job
        with VerticalScroll(classes="editor"):
            title = "New cron job" if self.is_new else f"Edit cron job {j.get('id')} {j.get('name') or ''}"
            yield Static(f"[b]{escape(title)}[/b]  (F2 save · Esc cancel)", classes="title-line")
            yield self.field("name", Input(j.get("name") or "", id="name"))
            yield self.field("schedule", Input(schedule_text(j.get("rule")) if j else "", id="cron",
                                               placeholder='cron (*/5 * * * *) or a rule {"hours": [3]}'))
            yield Static("", id="cron-msg", classes="preview")
            yield self.field("time zone", Input(j.get("tz") or "", id="tz", placeholder="IANA zone (empty: UTC)"))
            yield self.field("commands", TextArea("\n".join(j.get("commands") or []), id="commands"))
            yield Static("one SQL command per line", id="commands-msg", classes="preview")
            yield self.field("run as", Input(j.get("run_as") or "", id="run_as", placeholder="empty: you"))
            yield self.field("max instances", Input(str(j.get("max_instances") or 1), id="max_instances"))
            yield self.field("comments", Input(j.get("comments") or "", id="comments"))
            yield Static("", id="num-msg")
            with Horizontal(classes="check-row"):
                yield TextCheckbox("active", bool(j.get("active", True)), id="active")
        yield self.buttons()  # outside the scroll: always on screen, also at 80x24

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#name", Input).focus()
        self.validate_all()

    def validate_all(self) -> bool:
        self.errors.clear()
        text = self.query_one("#cron", Input).value
        if not text.strip():
            ok, msg = False, "✗ cron: give a cron string (e.g. 0 3 * * *) or a rule object"
        elif text.strip().startswith("{"):
            ok, msg = preview_rule(text, self.papp.now(), self.query_one("#tz", Input).value, self.papp.tz)
        elif text.strip().startswith("@") and text.strip().split()[0].lower() in ("@every", "@after", "@reboot"):
            ok, msg = False, f"✗ cron: {text.split()[0]} is a timetable-chain schedule, not a cron job's"
        else:
            ok, msg = preview_schedule(text, self.papp.now(), self.query_one("#tz", Input).value, self.papp.tz)
        if not ok:
            self.errors["cron"] = msg
        self.set_msg("cron-msg", ok, msg)
        commands = [c for c in self.query_one("#commands", TextArea).text.splitlines() if c.strip()]
        if not commands:
            self.errors["commands"] = "✗ commands: at least one SQL command"
        self.set_msg("commands-msg", bool(commands), self.errors.get("commands", f"✓ {len(commands)} command(s)"))
        _, err = check_int(self.query_one("#max_instances", Input).value, "max instances", 1)
        if err:
            self.errors["max_instances"] = err
        self.set_msg("num-msg", not err, err)
        self.query_one("#save", Button).disabled = bool(self.errors) or self.papp.read_only
        return not self.errors

    def values(self) -> dict[str, Any]:
        """create_job / set_job_attributes keys; for an edit only those that changed."""
        get = lambda ident: self.query_one(f"#{ident}", Input).value.strip()  # noqa: E731
        sched = get("cron")
        out: dict[str, Any] = {
            "name": get("name") or None,
            "tz": get("tz") or None,
            "commands": [c.strip() for c in self.query_one("#commands", TextArea).text.splitlines() if c.strip()],
            "run_as": get("run_as") or None,
            "max_instances": check_int(get("max_instances"), "max instances", 1)[0] or 1,
            "comments": get("comments") or None,
            "active": self.query_one("#active", Checkbox).value,
        }
        if sched.startswith("{"):
            rule = json.loads(sched)
            dates = rule.pop("dates", None)
            cron = rule.pop("crontab", None)
            out["rule"] = rule or None
            out["cron"] = cron
            out["dates"] = dates
        else:
            out["cron"] = sched
            if not self.is_new:  # a cron string replaces a rule and dates
                out["rule"] = None
                out["dates"] = None
        if self.is_new:
            return {k: v for k, v in out.items() if v is not None}
        j = self.job
        before = {"name": j.get("name"), "tz": j.get("tz"), "commands": j.get("commands") or [],
                  "run_as": j.get("run_as"), "max_instances": j.get("max_instances") or 1,
                  "comments": j.get("comments"), "active": bool(j.get("active", True))}
        changed = {k: v for k, v in out.items() if k in before and v != before[k]}
        if sched != schedule_text(j.get("rule")):
            changed.update({k: out[k] for k in ("cron", "rule", "dates")})
        if "run_as" in changed and changed["run_as"] is None:
            changed["run_as"] = ""  # back to the job's owner
        return changed

    def action_save(self) -> None:
        if not self.validate_all():
            self.notify(next(iter(self.errors.values())), severity="error")
            return
        values = self.values()
        if self.is_new:
            self.engine_act("save_job", "create cron job", actions.create_job, values,
                     summary=lambda r: f"cron job {r} created", then=lambda r: self.dismiss(r))
        else:
            self.engine_act("save_job", f"update cron job {self.job['id']}", actions.update_job, self.job["id"], values,
                     summary="cron job saved", then=lambda r: self.dismiss(r))


class OneTimeJobEditor(_Editor):
    VIEW = "job-editor"
    TITLE = "One-time job"
    HELP = "editor"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.errors: dict[str, str] = {}

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(classes="editor"):
            yield Static("[b]Submit a one-time job[/b]  (F2 save · Esc cancel)", classes="title-line")
            yield self.field("name", Input("", id="name"))
            yield self.field("query", TextArea("", id="query"))
            yield Static("", id="query-msg")
            yield self.field("params", TextArea("", id="params"))
            yield Static("one value per line, bound as $1, $2, …", id="params-msg", classes="preview")
            yield self.field("run after", Input("", id="run_after", placeholder="YYYY-MM-DD HH:MM[+zone] (empty: now)"))
            yield self.field("depends on", Input("", id="depends_on", placeholder="job ids, comma-separated"))
            yield Static("", id="when-msg")
            yield self.field("run as", Input("", id="run_as", placeholder="empty: you"))
            yield self.field("resubmit limit", Input("100", id="resubmit_limit"))
        yield self.buttons('submit')  # outside the scroll: always on screen, also at 80x24

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#query", TextArea).focus()
        self.validate_all()

    def _when(self) -> tuple[datetime | None, list[int] | None, str]:
        text = self.query_one("#run_after", Input).value.strip()
        deps_text = self.query_one("#depends_on", Input).value.strip()
        run_after = deps = None
        if text:
            try:
                run_after = datetime.fromisoformat(text)
            except ValueError:
                return None, None, f"✗ run after: {text!r} is not a date and time (YYYY-MM-DD HH:MM)"
            if run_after.tzinfo is None:
                run_after = run_after.replace(tzinfo=self.papp.tz) if self.papp.tz else run_after.astimezone()
        if deps_text:
            try:
                deps = [int(x) for x in deps_text.replace(" ", "").split(",") if x]
            except ValueError:
                return None, None, "✗ depends on: give job ids separated by commas"
        if run_after is not None and deps:
            return None, None, "✗ run after / depends on: give one or the other, not both"
        if run_after is not None:
            return run_after, None, f"✓ runs at {fmt_stamp(run_after, self.papp.tz)}"
        if deps:
            return None, deps, f"✓ runs when jobs {', '.join(map(str, deps))} have succeeded"
        return None, None, "✓ runs now"

    def validate_all(self) -> bool:
        self.errors.clear()
        if not self.query_one("#query", TextArea).text.strip():
            self.errors["query"] = "✗ query: must not be empty"
        self.set_msg("query-msg", "query" not in self.errors, self.errors.get("query", ""))
        _, _, msg = self._when()
        if msg.startswith("✗"):
            self.errors["when"] = msg
        self.set_msg("when-msg", not msg.startswith("✗"), msg)
        _, err = check_int(self.query_one("#resubmit_limit", Input).value, "resubmit limit", 1)
        if err:
            self.errors["resubmit_limit"] = err
        self.query_one("#save", Button).disabled = bool(self.errors) or self.papp.read_only
        return not self.errors

    def action_save(self) -> None:
        if not self.validate_all():
            self.notify(next(iter(self.errors.values())), severity="error")
            return
        run_after, deps, _ = self._when()
        get = lambda ident: self.query_one(f"#{ident}", Input).value.strip()  # noqa: E731
        params = [p for p in self.query_one("#params", TextArea).text.splitlines() if p.strip()]
        values = {"name": get("name") or None, "query": self.query_one("#query", TextArea).text.strip(),
                  "params": params or None, "run_after": run_after, "depends_on": deps,
                  "run_as": get("run_as") or None,
                  "resubmit_limit": check_int(get("resubmit_limit"), "resubmit limit", 1)[0] or 100}
        self.engine_act("submit_job", "submit one-time job", actions.submit_onetime, values,
                 summary=lambda r: f"one-time job {r} submitted", then=lambda r: self.dismiss(r))

