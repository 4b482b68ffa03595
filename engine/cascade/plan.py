"""Step plans: the one model for cascade admin operations (CLI now, console later).

An admin operation (create a node, switchover, failover, ...) is built as a :class:`Plan`
by a function in :mod:`engine.cascade.ops`, shown (``--dry-run``, the console's preview),
and executed one step at a time by a :class:`PlanRunner`.  Plans are data plus engine
calls; nothing here prints.

Data model
----------
``Plan(title, queue, nodes, steps, notes)``
    ``nodes`` is a list of :class:`NodeRef` (``name``, ``location`` = libpq connect string,
    ``dead``); ``steps`` is the ordered list of :class:`Step`.
``Step(title, node, statements, checks, wait, verify, irreversible, undo, warn_only)``
    * ``node``: the :class:`NodeRef` the step runs on;
    * ``checks``: pre-checks, each a :class:`Check` (``description``, ``fn(ctx) -> CheckResult``);
    * ``wait``: optional :class:`Wait` (``description``, ``node``, ``condition(ctx) -> CheckResult``,
      ``timeout``, ``interval``): polled *before* the statements until ``ok`` or timeout,
      e.g. "wait until node B has completed tick :last_tick";
    * ``statements``: :class:`Statement` list (``text`` with ``%s`` placeholders, ``params``,
      ``capture`` = {variable: result column}, ``ok_codes``), run in ONE transaction on
      ``node``.  A param may be a :class:`Ref` to a value captured by an earlier step
      (e.g. ``Ref("last_tick")``); ``Statement.render(vars)`` shows the exact SQL with the
      parameters inlined for display (unresolved refs show as ``:name``);
    * ``action``: optional :class:`Action` (``description``, ``fn(ctx) -> dict``), an engine call
      that is not one SQL statement (resurrect's event dump), run after the statements;
    * ``verify``: optional :class:`Check` run after the statements committed;
    * ``irreversible``: the console asks the operator to type the node name first;
    * ``undo``: how to go back after this step (text for humans; shown on failure);
    * ``warn_only``: a failure of this step is reported as a warning and the plan goes on.

Running
-------
``runner = PlanRunner(plan, on_event=callback)``; then either
``runner.run_step(i) -> StepOutcome`` (one step), ``for ev in runner.iter_run(start=i): ...``
(all remaining steps, yielding :class:`PlanEvent` objects), or ``runner.run(start=i) -> PlanOutcome``.
``runner.request_stop()`` stops between steps; ``runner.next_step`` is where to resume;
``runner.vars`` holds captured values (pass ``vars=`` to a new runner to resume a plan in a
later process); ``runner.journal`` records (time, node, statement, result) and
``runner.journal.save(path)`` writes it as JSON; ``runner.close()`` closes connections.

Every event is delivered to ``on_event`` the moment it happens (server NOTICEs while the
statement is still running) and is also yielded by ``iter_run`` at the next safe point (right
after the statement for NOTICEs).  ``PlanEvent.kind`` is one of :class:`EventKind`:

``plan_started``, ``step_started``, ``check_ok``, ``check_failed``, ``waiting`` (repeated while
polling, ``data["elapsed"]``), ``wait_done``, ``statement`` (SQL about to run, ``data["sql"]``),
``action`` (an engine call such as the event dump starts), ``notice`` (server message, ``data["severity"]``), ``result`` (``data["row"]`` as dict),
``verified``, ``step_done``, ``step_warning``, ``step_failed`` (``data["report"]`` is a
:class:`FailureReport` as dict: state of every node and how to go on or back), ``stopped``
(``data["next_step"]``), ``plan_done`` (``data["ok"]``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from engine.db import ConnSettings, connect, redact, translate_db_error
from engine.errors import ConnectError, PgttError


class PlanError(PgttError):
    """A plan step failed; ``report`` says what state the nodes are in and how to go on."""

    def __init__(self, message: str, report: FailureReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class NodeRef:
    name: str
    location: str
    dead: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "location": redact(self.location), "dead": self.dead}


@dataclass(frozen=True)
class Ref:
    """A value captured by an earlier step (``Statement.capture``)."""

    name: str

    def __str__(self) -> str:
        return f":{self.name}"


@dataclass
class CheckResult:
    ok: bool
    detail: str = ""
    #: for a wait: how far behind (e.g. ticks), so a waiting step can show progress
    behind: float | None = None

    @classmethod
    def good(cls, detail: str = "") -> CheckResult:
        return cls(True, detail)

    @classmethod
    def problem(cls, detail: str) -> CheckResult:
        return cls(False, detail)


@dataclass
class Check:
    description: str
    fn: Callable[[StepContext], CheckResult]

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description}


@dataclass
class Wait:
    description: str
    node: NodeRef
    condition: Callable[[StepContext], CheckResult]
    timeout: float = 120.0
    interval: float = 0.1

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "node": self.node.name, "timeout": self.timeout}


@dataclass
class Action:
    """An engine call that is not one SQL statement (shown by its description)."""

    description: str
    fn: Callable[[StepContext], dict[str, Any]]


def render_value(value: Any, variables: dict[str, Any] | None = None) -> str:
    """A parameter as an SQL literal for display (not for execution)."""
    if isinstance(value, Ref):
        if variables is not None and value.name in variables:
            return render_value(variables[value.name])
        return str(value)
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class Statement:
    text: str
    params: tuple[Any, ...] = ()
    capture: dict[str, str] = field(default_factory=dict)
    ok_codes: tuple[int, ...] | None = None  # None: any ret_code < 400 is fine

    def render(self, variables: dict[str, Any] | None = None) -> str:
        parts = self.text.split("%s")
        if len(parts) - 1 != len(self.params):
            raise ValueError(f"statement has {len(parts) - 1} placeholders, {len(self.params)} params")
        out = [parts[0]]
        for value, rest in zip(self.params, parts[1:]):
            out.append(render_value(value, variables))
            out.append(rest)
        return redact("".join(out))

    def resolve(self, variables: dict[str, Any]) -> tuple[Any, ...]:
        resolved = []
        for value in self.params:
            if isinstance(value, Ref):
                if value.name not in variables:
                    raise PlanError(f"value :{value.name} is not known yet (the step that sets it has not run)")
                value = variables[value.name]
            resolved.append(value)
        return tuple(resolved)


@dataclass
class Step:
    title: str
    node: NodeRef
    statements: list[Statement] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    wait: Wait | None = None
    verify: Check | None = None
    irreversible: bool = False
    undo: str = ""
    warn_only: bool = False
    action: Action | None = None  # an engine call run after the statements (e.g. dump events)

    def sql(self, variables: dict[str, Any] | None = None) -> str:
        return ";\n".join(s.render(variables) for s in self.statements)

    def unresolved(self, variables: dict[str, Any] | None = None) -> list[str]:
        """Names of captured values its SQL still shows as ``:name`` (not known yet)."""
        names: list[str] = []
        for stmt in self.statements:
            for value in stmt.params:
                if isinstance(value, Ref) and (variables is None or value.name not in variables) \
                        and value.name not in names:
                    names.append(value.name)
        return names

    def as_dict(self, variables: dict[str, Any] | None = None,
                fill: Callable[[str, dict[str, Any] | None], str] | None = None) -> dict[str, Any]:
        def text(value: str) -> str:
            return fill(value, variables) if fill is not None else value
        wait = self.wait.as_dict() if self.wait else None
        if wait is not None:
            wait["description"] = text(wait["description"])
        return {"title": self.title, "node": self.node.name, "location": redact(self.node.location),
                "checks": [text(c.description) for c in self.checks],
                "wait": wait,
                "sql": [s.render(variables) for s in self.statements],
                "verify": text(self.verify.description) if self.verify else None,
                "action": self.action.description if self.action else None,
                "irreversible": self.irreversible, "undo": self.undo, "warn_only": self.warn_only}


@dataclass
class Plan:
    title: str
    queue: str
    nodes: list[NodeRef]
    steps: list[Step]
    notes: list[str] = field(default_factory=list)
    #: how to recompute a captured value when a plan is resumed in a new process
    fallbacks: dict[str, Callable[[StepContext], Any]] = field(default_factory=dict)
    #: how to build this plan again (``engine.cascade.plan_store.Recipe``), set by ``build_plan``
    recipe: Any = None

    def captures(self) -> dict[str, int]:
        """Captured value name -> the (1-based) step whose statement captures it."""
        found: dict[str, int] = {}
        for i, step in enumerate(self.steps, 1):
            for stmt in step.statements:
                for name in stmt.capture:
                    found.setdefault(name, i)
        return found

    def fill(self, text: str, variables: dict[str, Any] | None = None) -> str:
        """A check's or wait's description with its ``:name`` placeholders filled in: the value
        once known, else where it will come from ("the last tick step 3 captures")."""
        if ":" not in text:
            return text
        captures = self.captures()

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if variables is not None and name in variables and variables[name] is not None:
                return str(variables[name])
            words = name.replace("_", " ")
            if name in captures:
                return f"the {words} step {captures[name]} captures"
            if name in self.fallbacks:
                return f"the {words} (read when the step runs)"
            return match.group(0)
        return _PLACEHOLDER_RE.sub(sub, text)

    def node(self, name: str) -> NodeRef:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def as_dict(self, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"title": self.title, "queue": self.queue, "nodes": [n.as_dict() for n in self.nodes],
                "notes": list(self.notes),
                "steps": [dict(index=i + 1, **s.as_dict(variables, self.fill)) for i, s in enumerate(self.steps)]}

    def render(self, variables: dict[str, Any] | None = None) -> str:
        """The plan as text (``--dry-run``); steps are numbered from 1."""
        lines = [f"Plan: {self.title}", f"Queue: {self.queue}",
                 "Nodes: " + ", ".join(f"{n.name}{' (dead)' if n.dead else ''}" for n in self.nodes)]
        lines += [f"Note: {note}" for note in self.notes]
        for i, step in enumerate(self.steps, 1):
            flag = "  [IRREVERSIBLE]" if step.irreversible else ""
            lines.append("")
            lines.append(f"Step {i}: {step.title}{flag}")
            lines.append(f"  on node {step.node.name} ({redact(step.node.location)})")
            for check in step.checks:
                lines.append(f"  check: {self.fill(check.description, variables)}")
            if step.wait:
                lines.append(f"  wait:  {self.fill(step.wait.description, variables)} "
                             f"(timeout {step.wait.timeout:g}s)")
            for stmt in step.statements:
                lines.append(f"  sql:   {stmt.render(variables)};")
            for name in step.unresolved(variables):
                lines.append(f"         (:{name} = {self.fill(':' + name)})")
            if step.action:
                lines.append(f"  run:   {step.action.description}")
            if step.verify:
                lines.append(f"  verify: {self.fill(step.verify.description, variables)}")
            if step.warn_only:
                lines.append("  (a failure here is only a warning)")
        return "\n".join(lines)


_PLACEHOLDER_RE = re.compile(r"(?<![\w:]):([a-z_][a-z0-9_]*)\b")


class EventKind:
    PLAN_STARTED = "plan_started"
    STEP_STARTED = "step_started"
    CHECK_OK = "check_ok"
    CHECK_FAILED = "check_failed"
    WAITING = "waiting"
    WAIT_DONE = "wait_done"
    STATEMENT = "statement"
    ACTION = "action"
    NOTICE = "notice"
    RESULT = "result"
    VERIFIED = "verified"
    STEP_DONE = "step_done"
    STEP_WARNING = "step_warning"
    STEP_FAILED = "step_failed"
    STOPPED = "stopped"
    PLAN_DONE = "plan_done"


@dataclass
class PlanEvent:
    kind: str
    step: int | None  # 0-based index, None for plan-level events
    node: str | None
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step, "node": self.node, "message": self.message,
                "data": self.data, "time": self.time.isoformat()}


@dataclass
class JournalEntry:
    time: dt.datetime
    node: str
    statement: str
    result: str
    ok: bool

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "node": self.node, "statement": self.statement,
                "result": self.result, "ok": self.ok}


@dataclass
class Journal:
    plan_title: str
    entries: list[JournalEntry] = field(default_factory=list)

    def add(self, node: str, statement: str, result: str, ok: bool) -> None:
        self.entries.append(JournalEntry(dt.datetime.now(dt.timezone.utc), node, statement, result, ok))

    def as_dict(self) -> dict[str, Any]:
        return {"plan": self.plan_title, "entries": [e.as_dict() for e in self.entries]}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return path


@dataclass
class FailureReport:
    step: int  # 0-based
    step_title: str
    node: str
    error: str
    node_states: dict[str, str]
    resume_hint: str
    back_hint: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def message(self) -> str:
        lines = [f"step {self.step + 1} ({self.step_title}) on node {self.node} failed: {self.error}",
                 "state of the nodes now:"]
        lines += [f"  {name}: {state}" for name, state in self.node_states.items()]
        lines.append(f"to go on: {self.resume_hint}")
        lines.append(f"to go back: {self.back_hint}")
        return "\n".join(lines)


@dataclass
class StepOutcome:
    index: int
    ok: bool
    warning: bool = False
    error: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    report: FailureReport | None = None


@dataclass
class PlanOutcome:
    ok: bool
    steps: list[StepOutcome]
    next_step: int
    stopped: bool = False
    report: FailureReport | None = None


class StepContext:
    """What check, wait and verify functions get: queries on plan nodes and captured values."""

    def __init__(self, runner: PlanRunner, index: int):
        self.runner = runner
        self.index = index
        self.plan = runner.plan
        self.vars = runner.vars

    def query(self, node: NodeRef, text: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        conn = self.runner.connection(node)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(text, self.runner.resolve_params(params))
            return cur.fetchall() if cur.description else []

    def one(self, node: NodeRef, text: str, params: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = self.query(node, text, params)
        return rows[0] if rows else None

    def value(self, name: str) -> Any:
        return self.runner.variable(name, self.index)


class PlanRunner:
    """Runs a plan step by step; see the module docstring for the API."""

    def __init__(self, plan: Plan, *, on_event: Callable[[PlanEvent], None] | None = None,
                 variables: dict[str, Any] | None = None, application_name: str = "pgtt-tui plan",
                 connect_timeout: int = 5, sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic, record: Any = None):
        self.plan = plan
        self.on_event = on_event
        #: a ``plan_store.PlanRecord`` written after every event that changes what was done
        self.record = record
        self.vars: dict[str, Any] = dict(variables or {})
        self.journal = Journal(plan.title)
        self.next_step = 0
        self.done: set[int] = set()
        self.application_name = application_name
        self.connect_timeout = connect_timeout
        self._sleep = sleep
        self._monotonic = monotonic
        self._conns: dict[str, psycopg.Connection] = {}
        self._pending: list[PlanEvent] = []
        self._stop = False
        self._current: tuple[int, str] | None = None

    # -- connections --------------------------------------------------------------------
    def connection(self, node: NodeRef) -> psycopg.Connection:
        conn = self._conns.get(node.name)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        settings = ConnSettings(dsn=node.location, application_name=self.application_name,
                                connect_timeout=self.connect_timeout)
        conn = connect(settings)
        conn.add_notice_handler(self._on_notice)
        self._conns[node.name] = conn
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            try:
                conn.close()
            except psycopg.Error:
                pass
        self._conns.clear()

    def __enter__(self) -> PlanRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def variable(self, name: str, index: int = 0) -> Any:
        """A captured value; recomputed from ``plan.fallbacks`` when missing (resumed plan)."""
        if name not in self.vars and name in self.plan.fallbacks:
            self.vars[name] = self.plan.fallbacks[name](StepContext(self, index))
        return self.vars.get(name)

    def _fill_refs(self, step: Step, index: int) -> None:
        for stmt in step.statements:
            for value in stmt.params:
                if isinstance(value, Ref):
                    self.variable(value.name, index)

    def resolve_params(self, params: tuple[Any, ...]) -> tuple[Any, ...]:
        for value in params:
            if isinstance(value, Ref):
                self.variable(value.name)
        return Statement("%s" * len(params), tuple(params)).resolve(self.vars)

    # -- events -------------------------------------------------------------------------
    def _emit(self, kind: str, step: int | None, node: str | None, message: str, **data: Any) -> None:
        event = PlanEvent(kind, step, node, message, data)
        self._pending.append(event)
        if self.record is not None:
            self.record.observe(self, event)
        if self.on_event is not None:
            self.on_event(event)

    def _drain(self) -> Iterator[PlanEvent]:
        while self._pending:
            yield self._pending.pop(0)

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        step, node = self._current if self._current else (None, None)
        self._emit(EventKind.NOTICE, step, node, diag.message_primary or "", severity=diag.severity or "NOTICE")

    def precheck(self, index: int) -> bool:
        """Run only the pre-checks of step ``index`` (a resumed plan shows where it stands
        before anything runs); events as in a run.  True when all pass."""
        step = self.plan.steps[index]
        ctx = StepContext(self, index)
        ok = True
        for check in step.checks:
            result = self._call_check(check.fn, ctx)
            described = self.plan.fill(check.description, self.vars)
            if result.ok:
                self._emit(EventKind.CHECK_OK, index, step.node.name, described, detail=result.detail)
            else:
                ok = False
                self._emit(EventKind.CHECK_FAILED, index, step.node.name, described, problem=result.detail)
        self._pending.clear()
        return ok

    def request_stop(self) -> None:
        """Stop before the next step starts (the current one finishes)."""
        self._stop = True

    # -- running ------------------------------------------------------------------------
    def run_step(self, index: int) -> StepOutcome:
        """Run one step (0-based), delivering events to ``on_event``; never raises for step failures."""
        gen = self._step(index)
        outcome: StepOutcome | None = None
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                outcome = stop.value
                break
        self._pending.clear()
        return outcome

    def iter_run(self, start: int | None = None, stop_at: int | None = None) -> Iterator[PlanEvent]:
        """Run the steps from ``start`` (default: ``next_step``) until the end, a failure or a
        stop request, yielding events.  The return value (``StopIteration.value``) is a PlanOutcome."""
        index = self.next_step if start is None else start
        end = len(self.plan.steps) if stop_at is None else min(stop_at, len(self.plan.steps))
        outcomes: list[StepOutcome] = []
        self._stop = False
        self._emit(EventKind.PLAN_STARTED, None, None, self.plan.title, first_step=index,
                   steps=len(self.plan.steps))
        yield from self._drain()
        while index < end:
            if self._stop:
                self._emit(EventKind.STOPPED, None, None, f"stopped before step {index + 1}", next_step=index)
                yield from self._drain()
                return PlanOutcome(False, outcomes, index, stopped=True)
            outcome = yield from self._step(index)
            outcomes.append(outcome)
            if not outcome.ok:
                self._emit(EventKind.PLAN_DONE, None, None, "plan stopped at a failed step", ok=False)
                yield from self._drain()
                return PlanOutcome(False, outcomes, index, report=outcome.report)
            index += 1
        self._emit(EventKind.PLAN_DONE, None, None, "plan finished", ok=True)
        yield from self._drain()
        return PlanOutcome(True, outcomes, index)

    def run(self, start: int | None = None, stop_at: int | None = None) -> PlanOutcome:
        gen = self.iter_run(start, stop_at)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    def _step(self, index: int) -> Iterator[PlanEvent]:
        step = self.plan.steps[index]
        node = step.node.name
        ctx = StepContext(self, index)
        self._current = (index, node)
        self._emit(EventKind.STEP_STARTED, index, node, step.title, irreversible=step.irreversible,
                   sql=step.sql(self.vars))
        yield from self._drain()
        rows: list[dict[str, Any]] = []
        try:
            for check in step.checks:
                result = self._call_check(check.fn, ctx)
                described = self.plan.fill(check.description, self.vars)
                if not result.ok:
                    self._emit(EventKind.CHECK_FAILED, index, node, described, problem=result.detail)
                    yield from self._drain()
                    raise _StepFailed(f"pre-check failed: {described}: {result.detail}")
                self._emit(EventKind.CHECK_OK, index, node, described, detail=result.detail)
                yield from self._drain()
            if step.wait is not None:
                yield from self._wait(step.wait, ctx, index)
            if step.statements:
                self._fill_refs(step, index)
                rows = yield from self._execute(step, index)
            if step.action is not None:
                self._emit(EventKind.ACTION, index, node, step.action.description)
                yield from self._drain()
                result = step.action.fn(ctx)
                self.journal.add(node, step.action.description, json.dumps(result, default=str), True)
                self._emit(EventKind.RESULT, index, node, json.dumps(result, default=str), row=result)
                yield from self._drain()
            if step.verify is not None:
                result = self._call_check(step.verify.fn, ctx)
                verified = self.plan.fill(step.verify.description, self.vars)
                if not result.ok:
                    raise _StepFailed(f"verification failed: {verified}: {result.detail}")
                self._emit(EventKind.VERIFIED, index, node, verified, detail=result.detail)
                yield from self._drain()
        except (_StepFailed, PgttError, psycopg.Error) as exc:
            error = translate_db_error(exc) if isinstance(exc, psycopg.Error) else str(exc)
            self._current = None
            if step.warn_only:
                self.done.add(index)
                self.next_step = index + 1
                self._emit(EventKind.STEP_WARNING, index, node, f"{step.title}: {error} (going on)", error=error)
                yield from self._drain()
                return StepOutcome(index, True, warning=True, error=error, rows=rows)
            report = self.failure_report(index, error)
            self.next_step = index
            self._emit(EventKind.STEP_FAILED, index, node, report.message(), error=error, report=report.as_dict())
            yield from self._drain()
            return StepOutcome(index, False, error=error, report=report)
        self._current = None
        self.done.add(index)
        self.next_step = index + 1
        self._emit(EventKind.STEP_DONE, index, node, step.title)
        yield from self._drain()
        return StepOutcome(index, True, rows=rows)

    def _call_check(self, fn: Callable[[StepContext], CheckResult], ctx: StepContext) -> CheckResult:
        try:
            result = fn(ctx)
        except (PgttError, psycopg.Error) as exc:
            msg = translate_db_error(exc) if isinstance(exc, psycopg.Error) else str(exc)
            return CheckResult(False, msg)
        if result is None:
            return CheckResult(True)
        if isinstance(result, str):
            return CheckResult(not result, result)
        return result

    def _wait(self, wait: Wait, ctx: StepContext, index: int) -> Iterator[PlanEvent]:
        started = self._monotonic()
        described = self.plan.fill(wait.description, self.vars)
        most_behind: float | None = None  # the progress of a wait: behind now against the most seen
        while True:
            result = self._call_check(wait.condition, ctx)
            elapsed = self._monotonic() - started
            if result.ok:
                self._emit(EventKind.WAIT_DONE, index, wait.node.name, described, elapsed=elapsed,
                           detail=result.detail)
                yield from self._drain()
                return
            if elapsed >= wait.timeout:
                raise _StepFailed(f"timed out after {wait.timeout:g}s: {described} ({result.detail})")
            if result.behind is not None:
                most_behind = max(most_behind or 0.0, result.behind)
            self._emit(EventKind.WAITING, index, wait.node.name, described, elapsed=elapsed,
                       detail=result.detail, behind=result.behind, most_behind=most_behind)
            yield from self._drain()
            self._sleep(wait.interval)

    def _execute(self, step: Step, index: int) -> Iterator[PlanEvent]:
        node = step.node.name
        conn = self.connection(step.node)
        rows: list[dict[str, Any]] = []
        captured: dict[str, Any] = {}
        with conn.transaction():
            for stmt in step.statements:
                shown = stmt.render(self.vars)
                self._emit(EventKind.STATEMENT, index, node, shown, sql=shown)
                yield from self._drain()
                try:
                    with conn.cursor(row_factory=dict_row) as cur:
                        cur.execute(stmt.text, stmt.resolve(self.vars))
                        row = cur.fetchone() if cur.description else None
                except psycopg.Error as exc:
                    self.journal.add(node, shown, "ERROR: " + translate_db_error(exc), False)
                    yield from self._drain()
                    raise
                yield from self._drain()  # notices raised by the statement
                row = dict(row) if row is not None else None
                code = row.get("ret_code") if row else None
                ok = code is None or (code in stmt.ok_codes if stmt.ok_codes is not None else code < 400)
                result_text = json.dumps(row, default=str) if row is not None else "ok"
                self.journal.add(node, shown, result_text, ok)
                self._emit(EventKind.RESULT, index, node, result_text, row=row)
                yield from self._drain()
                if not ok:
                    raise _StepFailed(f"{code} {row.get('ret_note')}")
                if row is not None:
                    rows.append(row)
                    for var, column in stmt.capture.items():
                        captured[var] = row.get(column)
        self.vars.update(captured)
        return rows

    # -- failure reporting --------------------------------------------------------------
    def node_states(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for node in self.plan.nodes:
            try:
                conn = self.connection(node)
                with conn.cursor(row_factory=dict_row) as cur:
                    cur.execute("SELECT * FROM pgq_node.get_node_info(%s)", (self.plan.queue,))
                    info = cur.fetchone()
            except (ConnectError, psycopg.Error) as exc:
                msg = str(exc) if isinstance(exc, ConnectError) else translate_db_error(exc)
                states[node.name] = f"unreachable ({msg.splitlines()[0][:120]})"
                continue
            if info is None or info["ret_code"] >= 400:
                states[node.name] = "not a member of the queue here" if info is None else info["ret_note"]
                continue
            text = f"{info['node_type']}, provider {info['provider_node']}, " \
                   f"worker {info['worker_name']} {'PAUSED' if info['worker_paused'] else 'running'}, " \
                   f"last tick {info['worker_last_tick']}"
            states[node.name] = text
        return states

    def failure_report(self, index: int, error: str) -> FailureReport:
        step = self.plan.steps[index]
        undo = [f"step {i + 1}: {self.plan.steps[i].undo}" for i in sorted(self.done, reverse=True)
                if self.plan.steps[i].undo]
        back = "; then ".join(undo) if undo else "nothing to undo (no earlier step changed anything)"
        resume = (f"fix the cause, then resume from step {index + 1} "
                  f"(CLI: the same command with --from-step {index + 1})")
        return FailureReport(index, step.title, step.node.name, error, self.node_states(), resume, back)


class _StepFailed(Exception):
    pass
