"""Durable plan records: a half-run admin plan survives the terminal, the SSH session and
the process that walked it.

Why: a switchover stopped half-way leaves the old root paused.  If the console dies between
two steps (SSH drops, SIGHUP, kill -9), the operator must still see what ran and be able to
go on.  So a :class:`PlanRunner` given a :class:`PlanRecord` writes the record after every
event that changes what has been done (a statement's result, a step's end or failure, a
stop, the end of the plan).

What a record holds: how the plan was built (the operation, its arguments, and the cascade
status it was built from, so a rebuilt plan has the very same steps even though the
cascade has changed since), the step titles, the step reached, the values captured so far
and the journal (statements as shown, results).  No secrets: statements are stored as
rendered for display (passwords redacted) and a node location with a password is stored
redacted and read again from the cascade when the plan is resumed.

Where: one JSON file per plan in ``$PGTT_TUI_STATE_DIR/plans`` (default: the user's state
folder), written atomically (temporary file, fsync, rename), mode 0600.  While a process
walks a plan it holds an exclusive ``flock`` on the record's lock file; the kernel drops
the lock when that process dies, by any signal, so "unfinished and nobody holds it" is
exactly "abandoned" and another console may offer to resume it.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import fcntl
import json
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.cascade.plan import JournalEntry, Plan, PlanEvent, PlanRunner, EventKind
from engine.db import redact
from engine.errors import InputError

STATE_ENV = "PGTT_TUI_STATE_DIR"
#: record states; the first three are "unfinished"
RUNNING, STOPPED, FAILED, DONE, LEFT = "running", "stopped", "failed", "done", "left"
UNFINISHED = (RUNNING, STOPPED, FAILED)
_SAVE_ON = frozenset({EventKind.STEP_STARTED, EventKind.RESULT, EventKind.STEP_DONE, EventKind.STEP_WARNING,
                      EventKind.STEP_FAILED, EventKind.STOPPED, EventKind.PLAN_DONE, EventKind.ACTION})


def state_dir() -> Path:
    """Where plan records live (created 0700 on first use)."""
    base = os.environ.get(STATE_ENV)
    if base:
        root = Path(base)
    else:
        import platformdirs  # noqa: PLC0415 - only needed here

        root = Path(platformdirs.user_state_dir("pgtt-tui"))
    folder = root / "plans"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


# -- recording and replaying the cascade status a plan was built from ------------------------

_status_hook: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("plan_status_hook",
                                                                                     default=None)


@contextmanager
def recording_status() -> Iterator[dict[str, Any]]:
    """Within the block, :func:`engine.cascade.ops.load` stores the status it reads in the
    yielded dict (key ``status``)."""
    box: dict[str, Any] = {"mode": "record"}
    token = _status_hook.set(box)
    try:
        yield box
    finally:
        _status_hook.reset(token)


@contextmanager
def replaying_status(status: Any) -> Iterator[None]:
    """Within the block, :func:`engine.cascade.ops.load` returns ``status`` instead of reading."""
    token = _status_hook.set({"mode": "replay", "status": status})
    try:
        yield
    finally:
        _status_hook.reset(token)


def status_hook() -> dict[str, Any] | None:
    return _status_hook.get()


# -- the recipe: how a plan is built again -----------------------------------------------------

@dataclass
class Recipe:
    """``op`` is an ``engine.cascade.ops`` function name; ``args`` and ``kwargs`` follow the
    first argument (the contact DSN, never stored); ``status`` is the cascade as it was read."""

    op: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    status: dict[str, Any] | None
    contact: str  # redacted, for display and for the plans that need it back

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return value
    return value


def build_plan(fn: Callable[..., Plan], contact: str, *args: Any, **kwargs: Any) -> Plan:
    """Build a plan with ``fn(contact, *args, **kwargs)`` and attach its :class:`Recipe`."""
    from engine.cascade.status import status_to_dict  # noqa: PLC0415 - status imports plan

    with recording_status() as box:
        plan = fn(contact, *args, **kwargs)
    st = box.get("status")
    queue = args[0] if args and isinstance(args[0], str) else plan.queue
    plan.recipe = Recipe(fn.__name__, queue, [_jsonable(a) for a in args],
                         {k: _jsonable(v) for k, v in kwargs.items()},
                         status_to_dict(st) if st is not None else None, redact(contact))
    return plan


def rebuild_plan(recipe: Recipe, contact: str | None) -> Plan:
    """The same plan again, from the stored status (node locations with passwords are filled
    in from a fresh read of the cascade through ``contact``)."""
    from engine.cascade import ops  # noqa: PLC0415
    from engine.cascade.status import collect_status, status_from_dict  # noqa: PLC0415

    fn = ops.REBUILDABLE.get(recipe.op)
    if fn is None:
        raise InputError("plan", f"{recipe.op} plans cannot be resumed from a record: run the command again "
                                 "with --from-step")
    first = contact if contact else recipe.contact
    if "***" in first:
        raise InputError("--dsn", "the plan was started with a connection string that has a password; give it "
                                  "again with --dsn (or use a password file)")
    if recipe.status is None:
        return fn(first, *recipe.args, **recipe.kwargs)
    st = status_from_dict(recipe.status)
    hidden = [n for n in st.nodes.values() if "***" in n.location]
    if hidden:
        fresh = collect_status(first, recipe.queue)
        for n in hidden:
            now = fresh.nodes.get(n.name)
            if now is None or "***" in now.location:
                raise InputError("plan", f"node {n.name}'s location is not known any more: resume by hand")
            n.location = now.location
    with replaying_status(st):
        return fn(first, *recipe.args, **recipe.kwargs)


# -- the record ------------------------------------------------------------------------------

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class PlanRecord:
    id: str
    title: str
    queue: str
    nodes: list[str]
    steps: list[str]
    recipe: dict[str, Any] | None
    state: str = RUNNING
    next_step: int = 0
    done: list[int] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    journal: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    started_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    _lock_fd: int | None = field(default=None, repr=False, compare=False)

    # -- files ------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return state_dir() / f"{self.id}.json"

    @property
    def lock_path(self) -> Path:
        return state_dir() / f"{self.id}.lock"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_lock_fd", None)
        return d

    def save(self) -> None:
        self.updated_at = _now()
        data = json.dumps(self.as_dict(), indent=1, default=str) + "\n"
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: Path) -> PlanRecord:
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("_lock_fd", None)
        return cls(**data)

    @classmethod
    def get(cls, ident: str) -> PlanRecord:
        if not ident or any(ch in ident for ch in "/\\.\0") or not (state_dir() / f"{ident}.json").exists():
            raise InputError("PLAN", f"no plan record {ident!r} (pgtt-tui node plans lists them)")
        return cls.load(state_dir() / f"{ident}.json")

    # -- ownership --------------------------------------------------------------------------
    def acquire(self) -> bool:
        """Take the record's lock for this process; False when another live process holds it."""
        if self._lock_fd is not None:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        self.pid = os.getpid()
        self.host = socket.gethostname()
        return True

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def held_elsewhere(self) -> bool:
        if self._lock_fd is not None:
            return False
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    # -- life cycle -------------------------------------------------------------------------
    @classmethod
    def start(cls, plan: Plan) -> PlanRecord:
        """A new record for ``plan`` (written at once, locked by this process)."""
        recipe = plan.recipe.as_dict() if getattr(plan, "recipe", None) is not None else None
        ident = dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        record = cls(ident, plan.title, plan.queue, [n.name for n in plan.nodes], [s.title for s in plan.steps],
                     recipe)
        record.acquire()
        record.save()
        return record

    def observe(self, runner: PlanRunner, event: PlanEvent) -> None:
        """Called by the runner for every event; writes when something was done."""
        if event.kind not in _SAVE_ON:
            return
        self.next_step = runner.next_step
        self.done = sorted(runner.done)
        self.vars = {k: v for k, v in runner.vars.items() if isinstance(v, (int, float, str, bool, type(None)))}
        self.journal = [e.as_dict() for e in runner.journal.entries]
        if event.kind == EventKind.STEP_STARTED:
            self.state = RUNNING
        elif event.kind == EventKind.STEP_FAILED:
            self.state = FAILED
            self.error = redact(str(event.data.get("error", "")))
        elif event.kind == EventKind.STOPPED:
            self.state = STOPPED
        elif event.kind == EventKind.STEP_DONE:
            self.state = DONE if runner.next_step >= len(self.steps) else STOPPED
            self.error = ""
        elif event.kind == EventKind.PLAN_DONE and event.data.get("ok"):
            self.state = DONE
        self.save()
        if self.state == DONE:
            self.release()

    def _changed_on_disk(self) -> PlanRecord | None:
        """The record as another process wrote it since this one was read, else None."""
        try:
            disk = PlanRecord.load(self.path)
        except (OSError, ValueError, TypeError):
            return None
        mine = (self.state, self.next_step, sorted(self.done), self.updated_at, len(self.journal))
        theirs = (disk.state, disk.next_step, sorted(disk.done), disk.updated_at, len(disk.journal))
        return disk if mine != theirs else None

    def leave(self) -> None:
        """The operator chose to leave the plan as it is: no longer offered.  Done under the
        record's lock and on what is on disk, so a record read before another process walked
        the plan on never overwrites what that process wrote."""
        if not self.acquire():
            raise InputError("plan", f"plan {self.id} is being walked by another process (pid {self.pid})")
        try:
            disk = self._changed_on_disk()
            if disk is not None:
                for name in ("state", "next_step", "done", "vars", "journal", "error", "updated_at", "pid", "host"):
                    setattr(self, name, getattr(disk, name))
            if self.state in UNFINISHED:
                self.state = LEFT
                self.save()
        finally:
            self.release()

    @property
    def unfinished(self) -> bool:
        return self.state in UNFINISHED and (bool(self.done) or self.state == RUNNING)

    def summary(self) -> str:
        reached = f"{len(self.done)} of {len(self.steps)} steps done"
        nxt = f", next: step {self.next_step + 1} ({self.steps[self.next_step]})" \
            if self.next_step < len(self.steps) else ""
        how = {RUNNING: "was running when its process ended", STOPPED: "stopped", FAILED: "failed"}.get(
            self.state, self.state)
        err = f" — {self.error}" if self.error and self.state == FAILED else ""
        return f"{self.title}: {how}, {reached}{nxt}{err} (started {self.started_at} by pid {self.pid} on " \
               f"{self.host})"

    def journal_text(self) -> str:
        if not self.journal:
            return "no statement ran"
        return "\n".join(f"{e['time']} [{e['node']}] {'ok' if e['ok'] else 'FAILED'}\n  {e['statement']}\n"
                         f"  -> {e['result']}" for e in self.journal)

    def resume_runner(self, plan: Plan, **runner_kw: Any) -> PlanRunner:
        """A runner for the rebuilt ``plan`` that continues where this record ended."""
        if [s.title for s in plan.steps] != self.steps:
            raise InputError("plan", "the rebuilt plan's steps differ from the recorded ones; resume by hand "
                                     "(the journal shows what ran)")
        if not self.acquire():
            raise InputError("plan", f"plan {self.id} is being walked by another process (pid {self.pid})")
        disk = self._changed_on_disk()  # read before the lock was ours: another process may have walked it on
        if disk is not None:
            self.release()
            raise InputError("plan", f"plan {self.id} changed since it was read ({disk.summary()}): look at it "
                                     "again before going on")
        runner = PlanRunner(plan, variables=dict(self.vars), record=self, **runner_kw)
        runner.next_step = self.next_step
        runner.done = set(self.done)
        runner.journal.entries = [JournalEntry(dt.datetime.fromisoformat(e["time"]), e["node"], e["statement"],
                                               e["result"], e["ok"]) for e in self.journal]
        return runner


def unfinished_plans(queue: str | None = None) -> list[PlanRecord]:
    """Half-run plans nobody is walking now, newest first (for ``queue`` if given)."""
    found = []
    for path in sorted(state_dir().glob("*.json"), reverse=True):
        try:
            record = PlanRecord.load(path)
        except (OSError, ValueError, TypeError):
            continue
        if queue is not None and record.queue != queue:
            continue
        if record.unfinished and not record.held_elsewhere():
            found.append(record)
    return found
