"""Editors for chains, tasks and schedule jobs, validated as you type.

Schedules are checked by the engine's one evaluator (engine.schedules) and the next five
firings are shown; every other field by the engine's own checks (engine.timetable.validate:
names, numbers, commands, builtin names, parameter shapes, the @every / @after floor of this
database, fetched when the editor opens). Saving is one engine call (pgtt_tui.actions); the
engine validates again (and checks that run_as names a role) and its message, naming the
field, is shown if it refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, Select, Static, TextArea

from engine.errors import InputError
from engine.schedules import ScheduleError, parse_schedule, resolve_zone, upcoming
from engine.timetable import validate
from pgtt_tui import actions
from pgtt_tui.screens.base import BaseView
from pgtt_tui.widgets.format import escape, fmt_stamp
from pgtt_tui.widgets.common import TextCheckbox

KINDS = [("SQL", "SQL"), ("PROGRAM", "PROGRAM"), ("BUILTIN", "BUILTIN")]


def preview_schedule(text: str, now: Any, tz_name: str, display_tz: Any, n: int = 5,
                     min_interval: timedelta | None = None) -> tuple[bool, str]:
    """(ok, text): the next n firings, or the evaluator's error naming the field (for a chain,
    an @every / @after interval below ``min_interval`` too, as the engine refuses it)."""
    text = text.strip()
    if not text:
        text = "* * * * *"
    try:
        zone = resolve_zone(tz_name.strip() or None)
        schedule = parse_schedule(text)
        if min_interval is not None:
            validate.check_run_at(text, min_interval, field="schedule")
        if schedule.kind in ("reboot", "after"):
            what = "at every engine start" if schedule.kind == "reboot" else "after the previous run ends"
            return True, f"✓ {schedule.kind}: runs {what}"
        fires = upcoming(schedule, now, n, zone)
    except ScheduleError as exc:
        return False, f"✗ {exc}"
    except InputError as exc:
        return False, f"✗ {exc}"
    if not fires:
        return True, "✓ valid, but it never fires again"
    return True, "✓ next: " + ", ".join(fmt_stamp(f, display_tz)[5:16] for f in fires)


def parse_parameters(text: str, kind: str = "SQL", command: str | None = None) -> tuple[list[Any] | None, str]:
    """One JSON value per non-empty line → (values, message); values None on error.

    Each row is checked as the engine checks it (engine.timetable.validate.check_parameters):
    SQL a JSON array (bound to $1..$n), PROGRAM an array of strings, a BUILTIN the shape
    that builtin reads (``command`` names it)."""
    values: list[Any] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            return None, f"✗ parameters line {number}: not JSON: {exc.msg} (column {exc.colno})"
        lines.append(number)
    try:
        validate.check_parameters(kind, (command or "").strip(), values)
    except InputError as exc:
        index, _, rest = exc.field[len("parameters["):].partition("]")
        where = f"line {lines[int(index)]}{rest}" if exc.field.startswith("parameters[") else exc.field
        return None, f"✗ parameters {where}: {exc.problem}"
    if not values:
        return [], "✓ no parameters: the task runs once"
    return values, f"✓ {len(values)} parameter row{'s' if len(values) != 1 else ''}: the task runs once per row"


def check_int(text: str, field: str, low: int = 0) -> tuple[int | None, str]:
    text = text.strip()
    if not text:
        return None, ""
    try:
        value = int(text)
    except ValueError:
        return None, f"✗ {field}: {text!r} is not a whole number"
    if value < low:
        return None, f"✗ {field}: must be ≥ {low}"
    return value, ""


def engine_check(check: Any, *args: Any, **kw: Any) -> str:
    """Run one of engine.timetable.validate's checks: "" or "✗ field: problem"."""
    try:
        check(*args, **kw)
    except InputError as exc:
        return f"✗ {exc}"
    return ""


def check_number(text: str, field: str, check: Any, **kw: Any) -> tuple[int | None, str]:
    """A whole number typed into ``field``, then the engine's check of it."""
    value, err = check_int(text, field, low=-(2**63))
    if err or value is None:
        return value, err
    err = engine_check(check, value, field, **kw)
    return (None, err) if err else (value, "")


@dataclass
class FloorLoaded(Message):
    """The database's @every / @after floor, fetched by a worker when an editor opens."""

    floor: timedelta


class _Editor(BaseView):
    POLLS = False
    BINDINGS = [
        Binding("escape", "cancel", "cancel"),
        Binding("f2", "save", "save"),
    ]

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        # no blinking cursors: nothing redraws twice a second over SSH (and frames are stable)
        for widget in self.query("Input, TextArea"):
            widget.cursor_blink = False

    #: the @every / @after floor the schedule is checked against (the database's, once fetched)
    min_interval: timedelta = validate.DEFAULT_MIN_INTERVAL

    def load_floor(self) -> None:
        """Fetch this database's floor in a worker (no widgets there); re-check when it comes."""
        def body() -> None:  # worker thread
            try:
                floor = self.papp.db.run("action", actions.timetable_min_interval)
            except Exception:  # noqa: BLE001 - keep the default floor; the engine checks on save
                return
            self.post_message(FloorLoaded(floor))

        self.run_worker(body, thread=True, group="editor-floor", exit_on_error=False, description="min interval")

    def on_floor_loaded(self, message: FloorLoaded) -> None:
        message.stop()
        self.min_interval = message.floor
        self.validate_all()

    def field(self, label: str, widget: Any) -> Horizontal:
        return Horizontal(Label(label, classes="field-label"), widget, classes="field")

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "save" and self.papp.read_only:
            return False
        return True

    def set_msg(self, ident: str, ok: bool, text: str) -> None:
        widget = self.query_one(f"#{ident}", Static)
        widget.update(escape(text))
        widget.set_class(not ok, "field-error")
        widget.set_class(ok and bool(text), "field-ok")

    def buttons(self, save_label: str = "save") -> Horizontal:
        """The save / cancel row every editor ends with (F2 and Esc do the same)."""
        return Horizontal(Button(f"{save_label} (F2)", id="save", variant="primary"),
                          Button("cancel (Esc)", id="cancel"), classes="buttons")

    def validate_all(self) -> bool:
        """Check every field, show the messages, enable save; each editor defines it."""
        raise NotImplementedError

    # validation as you type: any field change re-checks the whole form
    def on_input_changed(self, event: Input.Changed) -> None:
        self.validate_all()

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self.validate_all()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.validate_all()


class ChainEditor(_Editor):
    """New chain (with its first task) or edit an existing chain's fields."""

    VIEW = "editor"
    TITLE = "Chain editor"
    HELP = "editor"

    def __init__(self, chain: dict[str, Any] | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.chain = chain or {}
        self.is_new = chain is None
        self.errors: dict[str, str] = {}

    def compose_body(self) -> ComposeResult:
        c = self.chain
        with VerticalScroll(classes="editor"):
            yield Static(f"[b]{'New chain' if self.is_new else 'Edit chain ' + escape(c.get('chain_name', ''))}[/b]"
                         "  (F2 save · Esc cancel)", classes="title-line")
            yield self.field("name", Input(c.get("chain_name", ""), id="name", placeholder="unique chain name"))
            yield Static("", id="name-msg")
            yield self.field("schedule", Input(c.get("run_at") or "", id="run_at",
                                               placeholder="cron, @every 5 minutes, @after 1 hour, @reboot"))
            yield Static("", id="run_at-msg", classes="preview")
            yield self.field("time zone", Input(c.get("time_zone") or "", id="tz",
                                                placeholder="IANA zone, e.g. Europe/Berlin (empty: server)"))
            yield self.field("max instances", Input(str(c.get("max_instances") or ""), id="max_instances",
                                                    placeholder="empty: default (16)"))
            yield self.field("timeout ms", Input(str(c.get("timeout") or 0), id="timeout"))
            yield self.field("client", Input(c.get("client_name") or "", id="client_name",
                                             placeholder="empty: any engine"))
            yield self.field("on error SQL", Input(c.get("on_error") or "", id="on_error"))
            yield Static("", id="num-msg")
            with Horizontal(classes="check-row"):
                yield TextCheckbox("live", c.get("live", True) if not self.is_new else True, id="live")
                yield TextCheckbox("self-destruct", bool(c.get("self_destruct")), id="self_destruct")
                yield TextCheckbox("exclusive", bool(c.get("exclusive_execution")), id="exclusive")
            if self.is_new:
                yield Static("[b]first task[/b]", classes="title-line")
                yield self.field("kind", Select(KINDS, value="SQL", allow_blank=False, id="kind"))
                yield self.field("command", TextArea("", id="command", language=None))
                yield Static("", id="command-msg")
                yield self.field("parameters", TextArea("", id="params"))
                yield Static("one JSON value per line, e.g. [1, \"a\"]", id="params-msg", classes="preview")
        yield self.buttons()  # outside the scroll: always on screen, also at 80x24

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#name", Input).focus()
        self.validate_all()
        self.load_floor()

    def validate_all(self) -> bool:
        self.errors.clear()
        name = self.query_one("#name", Input).value.strip()
        err = engine_check(validate.check_name, "name", name)
        if err:
            self.errors["name"] = err
        self.set_msg("name-msg", "name" not in self.errors, self.errors.get("name", ""))
        ok, text = preview_schedule(self.query_one("#run_at", Input).value, self.papp.now(),
                                    self.query_one("#tz", Input).value, self.papp.tz,
                                    min_interval=self.min_interval)
        if not ok:
            self.errors["run_at"] = text
        self.set_msg("run_at-msg", ok, text)
        nums = []
        for ident, label, check in (("max_instances", "max instances", validate.check_max_instances),
                                    ("timeout", "timeout", validate.check_timeout)):
            _, err = check_number(self.query_one(f"#{ident}", Input).value, label, check)
            if err:
                self.errors[ident] = err
                nums.append(err)
        err = engine_check(validate.check_name, "client", self.query_one("#client_name", Input).value.strip() or None)
        if err:
            self.errors["client_name"] = err
            nums.append(err)
        self.set_msg("num-msg", not nums, "; ".join(nums))
        if self.is_new:
            command = self.query_one("#command", TextArea).text
            err = engine_check(validate.check_command, self._kind(), command.strip()) if command.strip() else \
                "✗ command: the first task needs a command"
            if err:
                self.errors["command"] = err
            self.set_msg("command-msg", "command" not in self.errors, self.errors.get("command", ""))
            values, text = parse_parameters(self.query_one("#params", TextArea).text, self._kind(), command)
            if values is None:
                self.errors["parameters"] = text
            self.set_msg("params-msg", values is not None, text)
        self.query_one("#save", Button).disabled = bool(self.errors) or self.papp.read_only
        return not self.errors

    def _kind(self) -> str:
        return str(self.query_one("#kind", Select).value)

    def values(self) -> dict[str, Any]:
        get = lambda ident: self.query_one(f"#{ident}", Input).value.strip()  # noqa: E731
        out = {
            "chain_name": get("name"),
            "run_at": get("run_at") or None,
            "time_zone": get("tz") or None,
            "max_instances": check_int(get("max_instances"), "max instances", low=-(2**63))[0],
            "timeout": check_int(get("timeout"), "timeout")[0] or 0,
            "client_name": get("client_name") or None,
            "on_error": get("on_error") or None,
            "live": self.query_one("#live", Checkbox).value,
            "self_destruct": self.query_one("#self_destruct", Checkbox).value,
            "exclusive_execution": self.query_one("#exclusive", Checkbox).value,
        }
        if self.is_new:
            out["task"] = {
                "kind": self.query_one("#kind", Select).value,
                "command": self.query_one("#command", TextArea).text.strip(),
                "parameters": parse_parameters(self.query_one("#params", TextArea).text, self._kind(),
                                               self.query_one("#command", TextArea).text)[0] or [],
            }
        return out

    def action_save(self) -> None:
        if not self.validate_all():
            self.notify(next(iter(self.errors.values())), severity="error")
            return
        values = self.values()
        name = values["chain_name"]
        if self.is_new:
            self.engine_act("save_chain", f"create chain {name}", actions.create_chain, values,
                     summary=f"chain {name!r} created", then=lambda _: self.dismiss(name))
        else:
            self.engine_act("save_chain", f"update chain {name}", actions.update_chain, self.chain["chain_name"], values,
                     summary=f"chain {name!r} saved", then=lambda _: self.dismiss(name))


class TaskEditor(_Editor):
    """Add a task to a chain or edit one."""

    VIEW = "task-editor"
    TITLE = "Task editor"
    HELP = "editor"

    def __init__(self, chain_name: str, task: dict[str, Any] | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.chain_name = chain_name
        self.task_data = task or {}
        self.is_new = task is None
        self.errors: dict[str, str] = {}

    def compose_body(self) -> ComposeResult:
        t = self.task_data
        params = "\n".join(json.dumps(v, ensure_ascii=False) for v in (t.get("parameters") or []))
        title = "New task in " if self.is_new else f"Edit task {t.get('task_name') or t.get('task_id')} of "
        with VerticalScroll(classes="editor"):
            yield Static(f"[b]{escape(title + self.chain_name)}[/b]  (F2 save · Esc cancel)", classes="title-line")
            yield self.field("name", Input(t.get("task_name") or "", id="task_name", placeholder="optional"))
            yield self.field("kind", Select(KINDS, value=str(t.get("kind") or "SQL"), allow_blank=False, id="kind"))
            yield self.field("command", TextArea(t.get("command") or "", id="command"))
            yield Static("", id="command-msg")
            yield self.field("parameters", TextArea(params, id="params"))
            yield Static("", id="params-msg", classes="preview")
            yield self.field("run as", Input(t.get("run_as") or "", id="run_as", placeholder="role (SET ROLE)"))
            yield self.field("connection", Input(t.get("database_connection") or "", id="database_connection",
                                                 placeholder="empty: this database"))
            yield self.field("timeout ms", Input(str(t.get("timeout") or 0), id="timeout"))
            yield Static("", id="num-msg")
            with Horizontal(classes="check-row"):
                yield TextCheckbox("ignore error", bool(t.get("ignore_error")), id="ignore_error")
                yield TextCheckbox("autonomous", bool(t.get("autonomous")), id="autonomous")
                yield TextCheckbox("live", bool(t.get("live", True)), id="live")
        yield self.buttons()  # outside the scroll: always on screen, also at 80x24

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#command", TextArea).focus()
        self.validate_all()

    def validate_all(self) -> bool:
        self.errors.clear()
        kind = str(self.query_one("#kind", Select).value)
        command = self.query_one("#command", TextArea).text
        err = engine_check(validate.check_command, kind, command.strip())
        if err:
            self.errors["command"] = err
        self.set_msg("command-msg", "command" not in self.errors, self.errors.get("command", ""))
        values, text = parse_parameters(self.query_one("#params", TextArea).text, kind, command)
        if values is None:
            self.errors["parameters"] = text
        self.set_msg("params-msg", values is not None, text)
        nums = []
        _, err = check_number(self.query_one("#timeout", Input).value, "timeout", validate.check_timeout,
                              default_flag="--task-timeout")
        if err:
            self.errors["timeout"] = err
            nums.append(err)
        for ident, label in (("task_name", "name"), ("run_as", "run as")):
            err = engine_check(validate.check_name, label, self.query_one(f"#{ident}", Input).value.strip() or None,
                               empty_ok=True)
            if err:
                self.errors[ident] = err
                nums.append(err)
        self.set_msg("num-msg", not nums, "; ".join(nums))
        self.query_one("#save", Button).disabled = bool(self.errors) or self.papp.read_only
        return not self.errors

    def values(self) -> dict[str, Any]:
        get = lambda ident: self.query_one(f"#{ident}", Input).value.strip()  # noqa: E731
        return {
            "task_name": get("task_name") or None,
            "kind": self.query_one("#kind", Select).value,
            "command": self.query_one("#command", TextArea).text.strip(),
            "parameters": parse_parameters(self.query_one("#params", TextArea).text,
                                           str(self.query_one("#kind", Select).value),
                                           self.query_one("#command", TextArea).text)[0] or [],
            "run_as": get("run_as") or None,
            "database_connection": get("database_connection") or None,
            "timeout": check_int(get("timeout"), "timeout")[0] or 0,
            "ignore_error": self.query_one("#ignore_error", Checkbox).value,
            "autonomous": self.query_one("#autonomous", Checkbox).value,
            "live": self.query_one("#live", Checkbox).value,
        }

    def action_save(self) -> None:
        if not self.validate_all():
            self.notify(next(iter(self.errors.values())), severity="error")
            return
        values = self.values()
        if self.is_new:
            self.engine_act("save_task", f"add task to {self.chain_name}", actions.add_task, self.chain_name, values,
                     summary="task added", then=lambda r: self.dismiss(r))
        else:
            self.engine_act("save_task", "update task", actions.update_task, self.task_data["task_id"], values,
                     summary="task saved", then=lambda r: self.dismiss(r))
