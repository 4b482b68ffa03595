"""The plan walker: run an engine plan (engine.cascade.plan) one step per keypress.

What the operator sees before anything runs: every step with its pre-checks, the wait it
does, the exact SQL (values inlined, captured values filled in as they become known) and
the node it runs on; the irreversible step is marked and needs the node name typed.

How it runs: ``n`` (or Enter) runs the next step in a worker thread through
``PlanRunner.run_step``; the runner's ``on_event`` callback is called *in that thread*, so
it only posts :class:`PlanEventPosted` messages, and the UI thread turns them into lines of
the output panel (results, NOTICEs, waits, failures with the state of every node).
``s`` stops: between steps it ends the walk and shows the state of every node (read from
the nodes, in a worker); during a wait it cancels the wait (the step fails with "canceled
by the operator" and the runner's failure report says how to go on or back).
``w`` saves the journal (every statement run, with time and result) as JSON; ``J`` shows it.
In read-only mode the plan can be viewed but not run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, RichLog, Static

from engine.cascade.plan import EventKind, Plan, PlanError, PlanEvent, PlanRunner, Step, StepOutcome
from engine.cascade.plan_store import PlanRecord
from engine.db import redact
from pgtt_tui.screens.base import BaseView
from pgtt_tui.screens.modals import ConfirmScreen, TextScreen
from pgtt_tui.screens.prompts import PromptScreen
from pgtt_tui.widgets.common import VimTable
from pgtt_tui.widgets.format import behind_bar, clip, escape, fmt_stamp

# step state -> (glyph, word)
STEP_STATES = {
    "pending": ("·", "todo"),
    "next": ("→", "NEXT"),
    "running": ("▶", "RUN"),
    "done": ("✓", "done"),
    "warning": ("!", "warn"),
    "failed": ("✗", "FAIL"),
    "stopped": ("■", "stop"),
}


def location_label(location: str) -> str:
    """How a node's connect string is shown (passwords removed)."""
    return redact(location)


@dataclass
class PlanEventPosted(Message):
    """One runner event, posted from the worker thread."""

    event: PlanEvent


@dataclass
class StepFinished(Message):
    index: int
    outcome: StepOutcome
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrechecksDone(Message):
    index: int
    ok: bool


@dataclass
class NodeStatesRead(Message):
    states: dict[str, str]
    reason: str


class _Canceled(PlanError):
    pass


class PlanScreen(BaseView):
    """Walks one plan; pushed by the cascade view (or anything else that has a Plan)."""

    VIEW = "plan"
    TITLE = "Plan"
    HELP = "plan"
    POLLS = False
    WRITE_ACTIONS = frozenset({"next_step"})
    BINDINGS = [
        Binding("n", "next_step", "run next step"),
        Binding("enter", "next_step", "run next step", show=False, priority=True),
        Binding("s", "stop", "stop"),
        Binding("w", "save_journal", "save journal"),
        Binding("J", "show_journal", "journal", show=False),
        Binding("escape", "leave", "back"),
    ]

    DEFAULT_CSS = """
    PlanScreen #plan-title { height: 1; padding: 0 1; text-style: bold; text-wrap: nowrap; text-overflow: ellipsis; }
    PlanScreen #plan-main { height: 1fr; }
    PlanScreen #steps-panel { width: 34; }
    PlanScreen #steps { overflow-x: hidden; }
    PlanScreen #detail-panel { width: 1fr; }
    PlanScreen #step-detail { height: auto; padding: 0 1; }
    PlanScreen #output-panel { height: 7; }
    PlanScreen #plan-output { height: 1fr; background: $surface; }
    PlanScreen #plan-hint { height: auto; padding: 0 1; background: $boost; }
    PlanScreen #wait-progress { height: auto; padding: 0 1; display: none; }
    PlanScreen #wait-progress.-waiting { display: block; }
    PlanScreen.-readonly #plan-hint { background: $warning 30%; }
    """

    def __init__(self, plan: Plan, *, journal_dir: str | Path | None = None,
                 runner: PlanRunner | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.plan = plan
        self._cancel = threading.Event()
        self.runner = runner or PlanRunner(plan, on_event=self._on_runner_event, sleep=self._sleep)
        if runner is not None:
            runner.on_event = self._on_runner_event
        self.journal_dir = Path(journal_dir) if journal_dir else Path.cwd()
        self.states: list[str] = ["pending"] * len(plan.steps)
        self.variables: dict[str, Any] = dict(self.runner.vars)
        self.running: int | None = None
        self.stopped = False
        self.finished = False
        self.failed_at: int | None = None
        self.node_states: dict[str, str] = {}
        self.output: list[str] = []  # plain text of every output line (tests read it)
        self.saved_to: Path | None = None
        self.started_at: datetime | None = None
        self.wait_line: Any = None  # what the live wait line shows (tests read it)
        self.resumed = bool(self.runner.done)
        for i in self.runner.done:
            self.states[i] = "done"

    # ---- layout -------------------------------------------------------------------------
    def compose_body(self) -> ComposeResult:
        yield Static(self._title_text(), id="plan-title")
        with Horizontal(id="plan-main"):
            with Vertical(classes="panel", id="steps-panel") as panel:
                panel.border_title = f"Steps ({len(self.plan.steps)})"
                table = VimTable(id="steps", show_header=False)
                table.add_columns("state", "#", "step")
                yield table
            with VerticalScroll(classes="panel", id="detail-panel") as panel:
                panel.border_title = "Step"
                yield Static("", id="step-detail")
        with Vertical(classes="panel", id="output-panel") as panel:
            panel.border_title = "Output"
            yield RichLog(id="plan-output", markup=True, wrap=True, highlight=False, max_lines=2000, min_width=20)
        yield Static("", id="wait-progress")
        yield Static("", id="plan-hint")

    def on_mount(self) -> None:
        super().on_mount()
        self.set_class(self.papp.read_only, "-readonly")
        self._refresh_steps()
        table = self.query_one("#steps", VimTable)
        table.focus()
        table.move_cursor(row=self.runner.next_step)
        self._show_detail(self.runner.next_step)
        for note in self.plan.notes:
            self._out(f"[$text-muted]note:[/] {escape(note)}", f"note: {note}")
        self.papp.plan_walkers.add(self)
        if self.resumed:
            self._show_resumed()
        self._refresh_hint()

    # ---- a plan resumed from its record ----------------------------------------------------
    def _show_resumed(self) -> None:
        record = self.runner.record
        self._out(f"[b]resumed:[/b] {escape(record.summary() if record else self.plan.title)}",
                  f"resumed: {record.summary() if record else self.plan.title}")
        for e in self.runner.journal.entries:
            self._out(f"  [$text-muted]{escape(fmt_stamp(e.time, self.papp.tz))} [{escape(e.node)}] "
                      f"{escape(e.statement)} → {escape(e.result)}[/]", f"  [{e.node}] {e.statement} → {e.result}")
        nxt = self.runner.next_step
        if nxt < len(self.plan.steps) and not self.plan.steps[nxt].checks:
            self._out(f"step {nxt + 1} has no pre-checks: n runs it", f"step {nxt + 1} has no pre-checks")
        elif nxt < len(self.plan.steps):
            self._out(f"pre-checks of step {nxt + 1} (nothing runs until you press n):",
                      f"pre-checks of step {nxt + 1}:")
            self.run_worker(lambda: self._precheck_body(nxt), thread=True, group="plan-precheck",
                            exit_on_error=False, description="pre-checks")

    def _precheck_body(self, index: int) -> None:  # worker thread
        try:
            ok = self.runner.precheck(index)
        except Exception as exc:  # noqa: BLE001 - shown, never a crash
            self.post_message(PlanEventPosted(PlanEvent(EventKind.CHECK_FAILED, index, None, "pre-checks",
                                                        {"problem": f"{type(exc).__name__}: {exc}"})))
            ok = False
        self.post_message(PrechecksDone(index, ok))

    def on_prechecks_done(self, message: PrechecksDone) -> None:
        message.stop()
        if message.ok:
            self._out(f"[$success]✓ step {message.index + 1}'s pre-checks pass: n runs it[/]",
                      f"✓ step {message.index + 1}'s pre-checks pass")
        else:
            self._out(f"[$error]✗ step {message.index + 1}'s pre-checks fail: see above before pressing n[/]",
                      f"✗ step {message.index + 1}'s pre-checks fail")

    # ---- asked by the app before quitting ------------------------------------------------
    def half_run(self) -> bool:
        return self.running is not None or (bool(self.runner.done) and not self.finished)

    def record_id(self) -> str | None:
        return self.runner.record.id if self.runner.record is not None else None

    def progress_text(self) -> str:
        if self.running is not None:
            return f"step {self.running + 1} of {len(self.plan.steps)} is running"
        return f"{len(self.runner.done)} of {len(self.plan.steps)} steps done, step {self.runner.next_step + 1} next"

    def _title_text(self) -> str:
        nodes = ", ".join(f"{n.name}{' ✗dead' if n.dead else ''}" for n in self.plan.nodes)
        return f"{escape(self.plan.title)}  [$text-muted]queue {escape(self.plan.queue)} · nodes {escape(nodes)}[/]"

    # ---- rendering ----------------------------------------------------------------------
    def _state_of(self, i: int) -> str:
        state = self.states[i]
        if state == "pending" and i == self.runner.next_step and not self.finished and self.running is None:
            return "next"
        return state

    def _refresh_steps(self) -> None:
        rows = []
        for i, step in enumerate(self.plan.steps):
            glyph, word = STEP_STATES[self._state_of(i)]
            flag = "⚠ " if step.irreversible else ""
            rows.append((str(i), (f"{glyph}{word}", str(i + 1), clip(f"{flag}{step.title}", 19))))
        self.query_one("#steps", VimTable).sync_rows(rows)

    def step_text(self, i: int) -> str:
        """The detail of step ``i`` as content markup (also used by the CLI-like preview)."""
        step: Step = self.plan.steps[i]
        glyph, word = STEP_STATES[self._state_of(i)]
        lines = [f"[b]Step {i + 1} of {len(self.plan.steps)}: {escape(step.title)}[/b]  {glyph} {word}"]
        if step.irreversible:
            lines.append("[reverse $error] ⚠ IRREVERSIBLE [/] you will type the node name to run it")
        lines.append(f"[b]on node {escape(step.node.name)}[/b]{' (tagged dead)' if step.node.dead else ''}")
        lines.append(f"[$text-muted]{escape(location_label(step.node.location))}[/]")
        if step.checks:
            lines.append("[b]pre-checks:[/b]")
            lines += [f"  • {escape(self.plan.fill(c.description, self.variables))}" for c in step.checks]
        if step.wait is not None:
            lines.append(f"[b]wait:[/b] {escape(self.plan.fill(step.wait.description, self.variables))} "
                         f"on {escape(step.wait.node.name)} "
                         f"(up to {step.wait.timeout:g}s; s cancels)")
        if step.statements:
            lines.append("[b]SQL (one transaction):[/b]")
            lines += [f"  {escape(s.render(self.variables))};" for s in step.statements]
            lines += [f"  [$text-muted](:{escape(name)} = {escape(self.plan.fill(':' + name))})[/]"
                      for name in step.unresolved(self.variables)]
        if step.action is not None:
            lines.append(f"[b]runs:[/b] {escape(step.action.description)}")
        if step.verify is not None:
            lines.append(f"[b]verify:[/b] {escape(self.plan.fill(step.verify.description, self.variables))}")
        if step.undo:
            lines.append(f"[b]to undo:[/b] {escape(step.undo)}")
        if step.warn_only:
            lines.append("[$text-muted](a failure of this step is only a warning)[/]")
        return "\n".join(lines)

    def view_row(self, table: Any, key: str) -> bool:
        """v on a step: the step in full (every check and the whole SQL), scrollable: what an
        operator must read before pressing n, whatever the terminal's size."""
        if table.id != "steps":
            return False
        from textual.content import Content  # noqa: PLC0415

        i = int(key)
        self.app.push_screen(TextScreen(f"Step {i + 1}: {self.plan.steps[i].title}",
                                        Content.from_markup(self.step_text(i)).plain))
        return True

    def _show_detail(self, i: int) -> None:
        if not self.plan.steps:
            self.query_one("#step-detail", Static).update("this plan has no steps")
            return
        i = max(0, min(i, len(self.plan.steps) - 1))
        self.query_one("#step-detail", Static).update(self.step_text(i))
        self.query_one("#detail-panel").border_title = f"Step {i + 1}"

    def _viewed(self) -> int:
        key = self.query_one("#steps", VimTable).selected_key()
        return int(key) if key is not None else self.runner.next_step

    def hint_text(self) -> str:
        nxt = self.runner.next_step
        if self.papp.read_only:
            return "READ-ONLY: this plan can be viewed, not run · j/k: steps · w: save · Esc: back"
        if self.running is not None:
            return f"▶ running step {self.running + 1}… · s: cancel the wait / stop after this step"
        if self.finished:
            return "✓ plan finished · w: save the journal · Esc: back"
        if self.stopped:
            return f"■ stopped before step {nxt + 1} · n: go on with step {nxt + 1} · w: save · Esc: back"
        if self.failed_at is not None:
            return f"✗ step {self.failed_at + 1} failed · n: retry it · w: save · Esc: back"
        irreversible = " (⚠ type the node name)" if self.plan.steps[nxt].irreversible else ""
        return f"n/Enter: run step {nxt + 1}{irreversible} · v: step in full · s: stop · w: save · Esc: back"

    def _refresh_hint(self) -> None:
        self.query_one("#plan-hint", Static).update(escape(self.hint_text()))

    def _rich(self, markup: str) -> str:
        """Our markup uses theme variables (``[$error]``); RichLog speaks Rich markup: put the
        current theme's colours in (``$text-muted`` becomes ``dim``)."""
        if "[$" not in markup:
            return markup
        variables = self.app.get_css_variables()
        out = markup.replace("[$text-muted]", "[dim]")
        for name in ("success", "error", "warning", "accent"):
            value = variables.get(name, "")
            out = out.replace(f"[${name}]", f"[{value}]" if value.startswith("#") else "[bold]")
        return out

    def _out(self, markup: str, plain: str) -> None:
        self.output.append(plain)
        self.query_one("#plan-output", RichLog).write(self._rich(markup))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "steps" and event.row_key is not None:
            self._show_detail(int(event.row_key.value))

    # ---- worker side ----------------------------------------------------------------------
    def _on_runner_event(self, event: PlanEvent) -> None:  # worker thread: post only
        self.post_message(PlanEventPosted(event))

    def _sleep(self, seconds: float) -> None:  # worker thread (PlanRunner's wait loop)
        if self._cancel.wait(seconds):
            raise _Canceled("canceled by the operator while waiting")

    def _run_step_body(self, index: int) -> None:  # worker thread
        try:
            if self.runner.record is None:  # written from the first step on, never for a preview
                self.runner.record = PlanRecord.start(self.plan)
            outcome = self.runner.run_step(index)
        except Exception as exc:  # noqa: BLE001 - a bug must be shown, not crash the console
            outcome = StepOutcome(index, False, error=f"{type(exc).__name__}: {exc}")
        self.post_message(StepFinished(index, outcome, dict(self.runner.vars)))

    def _read_states_body(self, reason: str) -> None:  # worker thread
        try:
            states = self.runner.node_states()
        except Exception as exc:  # noqa: BLE001
            states = {"?": f"could not read the nodes: {exc}"}
        self.post_message(NodeStatesRead(states, reason))

    # ---- UI side --------------------------------------------------------------------------
    def on_plan_event_posted(self, message: PlanEventPosted) -> None:
        message.stop()
        ev = message.event
        at = f"[{ev.node}] " if ev.node else ""
        text = ev.message
        kind = ev.kind
        if kind == EventKind.STEP_STARTED:
            self._out(f"[b]▶ step {ev.step + 1} \\[{escape(ev.node or '')}]: {escape(text)}[/b]",
                      f"▶ step {ev.step + 1} [{ev.node}]: {text}")
        elif kind == EventKind.CHECK_OK:
            detail = f" ({ev.data.get('detail')})" if ev.data.get("detail") else ""
            self._out(f"  [$success]✓[/] check {escape(text + detail)}", f"  ✓ check {text}{detail}")
        elif kind == EventKind.CHECK_FAILED:
            self._out(f"  [$error]✗ check {escape(text)}: {escape(str(ev.data.get('problem')))}[/]",
                      f"  ✗ check {text}: {ev.data.get('problem')}")
        elif kind == EventKind.WAITING:
            detail = ev.data.get("detail") or ""
            line = f"  … waiting {ev.data.get('elapsed', 0):.0f}s: {text} {detail}".rstrip()
            if not self.output or not self.output[-1].startswith("  … waiting"):
                self._out(f"[$text-muted]{escape(line)}[/]", line)
            else:
                self.output[-1] = line  # one line per wait in the log, not one per poll
            self._show_wait(ev)
        elif kind == EventKind.WAIT_DONE:
            self._hide_wait()
            self._out(f"  [$success]✓[/] {escape(text)} ({ev.data.get('elapsed', 0):.0f}s)",
                      f"  ✓ {text}")
        elif kind == EventKind.STATEMENT:
            self._out(f"  {escape(at)}[$accent]{escape(text)}[/]", f"  {at}{text}")
        elif kind == EventKind.NOTICE:
            sev = ev.data.get("severity", "NOTICE")
            self._out(f"  [$warning]{escape(sev)}:[/] {escape(text)}", f"  {sev}: {text}")
        elif kind == EventKind.RESULT:
            self._out(f"  → {escape(text)}", f"  → {text}")
        elif kind == EventKind.ACTION:
            self._out(f"  ▶ {escape(text)}", f"  ▶ {text}")
        elif kind == EventKind.VERIFIED:
            self._out(f"  [$success]✓[/] verified: {escape(text)}", f"  ✓ verified: {text}")
        elif kind == EventKind.STEP_DONE:
            self._out(f"[$success]✓ step {ev.step + 1} done[/]", f"✓ step {ev.step + 1} done")
        elif kind == EventKind.STEP_WARNING:
            self._out(f"[$warning]! {escape(text)}[/]", f"! {text}")
        elif kind == EventKind.STEP_FAILED:
            for i, line in enumerate(text.splitlines()):
                mark = "✗ " if i == 0 else "  "
                self._out(f"[$error]{escape(mark + line)}[/]", mark + line)

    def _show_wait(self, ev: PlanEvent) -> None:
        """The live line of a waiting step: how long, what for, and how far behind (shrinking)."""
        progress = self.query_one("#wait-progress", Static)
        behind = behind_bar(ev.data.get("behind"), ev.data.get("most_behind"))
        detail = ev.data.get("detail") or ""
        progress.update(escape(f"⏳ {ev.data.get('elapsed', 0):.0f}s {ev.message}{behind} · {detail}"))
        progress.add_class("-waiting")
        self.wait_line = progress.render()

    def _hide_wait(self) -> None:
        self.query_one("#wait-progress", Static).remove_class("-waiting")
        self.wait_line = None

    def on_step_finished(self, message: StepFinished) -> None:
        message.stop()
        self._hide_wait()
        i = message.index
        self.running = None
        self.variables = message.variables
        outcome = message.outcome
        if outcome.ok:
            self.states[i] = "warning" if outcome.warning else "done"
            self.failed_at = None
            if self.runner.next_step >= len(self.plan.steps):
                self.finished = True
                self._out("[b][$success]✓ plan finished[/][/b]", "✓ plan finished")
                self.papp.last_action = ("plan", "ok", self.plan.title)
        else:
            self.states[i] = "failed"
            self.failed_at = i
            if outcome.report is None:
                self._out(f"[$error]✗ {escape(outcome.error)}[/]", f"✗ {outcome.error}")
            else:
                self.node_states = dict(outcome.report.node_states)
        self._cancel.clear()
        if self.stopped and not self.finished:
            self.run_worker(lambda: self._read_states_body("stopped"), thread=True, group="plan-states",
                            exit_on_error=False)
        self._refresh_steps()
        table = self.query_one("#steps", VimTable)
        nxt = min(self.runner.next_step, len(self.plan.steps) - 1)
        table.move_cursor(row=nxt)
        self._show_detail(nxt)
        self._refresh_hint()

    def on_node_states_read(self, message: NodeStatesRead) -> None:
        message.stop()
        self.node_states = message.states
        nxt = self.runner.next_step
        self._out(f"[b]■ stopped before step {nxt + 1}. The nodes now:[/b]", f"■ stopped before step {nxt + 1}. The nodes now:")
        for name, state in message.states.items():
            self._out(f"  {escape(name)}: {escape(state)}", f"  {name}: {state}")
        undo = [f"step {i + 1}: {self.plan.steps[i].undo}" for i in sorted(self.runner.done, reverse=True)
                if self.plan.steps[i].undo]
        if undo:
            self._out(f"  to go back: {escape('; then '.join(undo))}", "  to go back: " + "; then ".join(undo))
        self._out(f"  to go on: n (step {nxt + 1})", f"  to go on: n (step {nxt + 1})")

    # ---- actions --------------------------------------------------------------------------
    def action_next_step(self) -> None:
        if self.papp.read_only:
            self.notify("read-only mode: the plan can be viewed, not run", severity="error")
            return
        if self.running is not None:
            self.notify(f"step {self.running + 1} is still running", severity="warning")
            return
        if self.finished:
            self.notify("the plan is finished", timeout=3)
            return
        index = self.runner.next_step
        step = self.plan.steps[index]
        if step.irreversible:
            body = (f"Step {index + 1}: {step.title}\non node {step.node.name}\n\n"
                    + "\n".join(s.render(self.variables) + ";" for s in step.statements)
                    + "\n\nThis cannot be undone.")

            def done(ok: bool | None) -> None:
                if ok:
                    self._start_step(index)

            self.app.push_screen(ConfirmScreen(f"Irreversible: step {index + 1}", body,
                                               type_to_confirm=step.node.name), done)
            return
        self._start_step(index)

    def _start_step(self, index: int) -> None:
        if self.running is not None or self.papp.read_only:
            return
        self.stopped = False
        self.running = index
        self.states[index] = "running"
        self._cancel.clear()
        self._refresh_steps()
        self._refresh_hint()
        self.run_worker(lambda: self._run_step_body(index), thread=True, group="plan-step", exit_on_error=False,
                        description=f"plan step {index + 1}")

    def action_stop(self) -> None:
        if self.finished:
            self.notify("the plan is finished; nothing to stop", timeout=3)
            return
        if self.running is not None:
            self.stopped = True
            self.runner.request_stop()
            self._cancel.set()  # ends a wait at once; a running statement finishes first
            self._out("[$warning]■ stop requested: the running step finishes (a wait is canceled)[/]",
                      "■ stop requested")
            self._refresh_hint()
            return
        if self.papp.read_only:
            return
        self.stopped = True
        self._refresh_steps()
        self._refresh_hint()
        self.run_worker(lambda: self._read_states_body("stopped"), thread=True, group="plan-states",
                        exit_on_error=False)

    def journal_path(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        slug = "".join(ch if ch.isalnum() else "-" for ch in self.plan.title.lower()).strip("-")[:40]
        return self.journal_dir / f"pgtt-journal-{slug}-{stamp}.json"

    def save_journal(self, path: str | Path) -> Path:
        saved = self.runner.journal.save(path)
        self.saved_to = saved
        self._out(f"journal saved to {escape(str(saved))}", f"journal saved to {saved}")
        return saved

    def action_save_journal(self) -> None:
        def done(value: str | None) -> None:
            if not value:
                return
            try:
                self.save_journal(Path(value).expanduser())
            except OSError as exc:
                self.notify(f"could not save the journal: {exc}", severity="error")
            else:
                self.notify(f"journal saved ({len(self.runner.journal.entries)} statements)", timeout=4)

        self.app.push_screen(PromptScreen("Save the journal", "JSON: every statement run, with time and result",
                                          value=str(self.journal_path())), done)

    def journal_text(self) -> str:
        entries = self.runner.journal.entries
        if not entries:
            return "nothing has run yet"
        return "\n".join(f"{fmt_stamp(e.time, self.papp.tz)} [{e.node}] {'ok' if e.ok else 'FAILED'}\n"
                         f"  {e.statement}\n  → {e.result}" for e in entries)

    def action_show_journal(self) -> None:
        self.app.push_screen(TextScreen(f"Journal: {self.plan.title}", self.journal_text()))

    def action_leave(self) -> None:
        if self.running is not None:
            self.notify("a step is running: press s to stop after it, then Esc", severity="warning")
            return
        half_done = bool(self.runner.done) and not self.finished
        if not half_done:
            self._close()
            return
        nxt = self.runner.next_step
        saved = (f" Its record {self.record_id()} stays on disk: the cascade view offers to continue it."
                 if self.record_id() else "")
        body = (f"Steps 1–{nxt} ran, step {nxt + 1} of {len(self.plan.steps)} did not. The cascade is left "
                f"half-way.{saved} Leave the plan anyway?")

        def done(ok: bool | None) -> None:
            if ok:
                self._close()

        self.app.push_screen(ConfirmScreen("Leave a half-run plan", body), done)

    def on_unmount(self) -> None:
        self.papp.plan_walkers.discard(self)
        if self.runner.record is not None:
            self.papp.offered_plans.add(self.runner.record.id)  # not offered back to who just left it
            self.runner.record.release()
        if self.running is None:
            self.runner.close()  # the app quit with the plan open: do not leave connections behind

    def _close(self) -> None:
        self.runner.close()
        self.dismiss(self.finished)
