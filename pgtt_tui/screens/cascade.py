"""Cascade: the topology tree of one cascaded queue across every node the locations table
names, refreshed live, with the admin operations as step plans.

Polling: a worker calls ``engine.cascade.status.collect_status`` (one connection per
member, in parallel, unreachable nodes reported, never fatal).  It asks the console's own
database first and, when that does not answer (the root just died), any member that
answered before, so the view keeps working through a failover.  Each poll is compared
with the previous one (:func:`pgtt_tui.widgets.topology.diff_status`); a node whose role
changed or that stopped answering is marked with text + glyph for a while and announced.

Lag chart (issue 18): each node's lag behind the root over the last 30 minutes, so during a
switchover or a catch-up the operator sees the curve go to zero. The cascade worker of each
node samples it into the node's own database (``pgtt.cascade_sample``: the age of the tick
the node has completed, every 10 s, also while paused); the poll reads each member's samples
with its status (``collect_status(lag_now=...)``), from the newest bucket on. A node without
stored samples (its worker is not ours) is sampled by the console while the view is open:
its ticker lag (root, branch) or, for a leaf, the ticks it is behind.

Operations (single keys, or Enter for a menu): each builds the engine's plan in a worker
(``engine.cascade.ops.plan_*``, exactly what ``pgtt-tui node …`` runs) and opens the plan
walker (:class:`pgtt_tui.screens.plan.PlanScreen`).  Building a plan changes nothing, so
plans can be opened in read-only mode too; the walker refuses to run them there.

A role that may not read pgq_node on the console's database (schema USAGE, SELECT on
pgq_node.node_info, EXECUTE on the status functions) gets the no-access panel of the other
views (``ACCESS_PART = "cascade"``, engine.access), not "not a cascade node"; the
operations are refused with one line meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static, Tree

from engine.views import queues as queue_views
from engine.views import trends
from engine.cascade import ops
from engine.cascade.plan import Plan, PlanRunner
from engine.cascade.plan_store import PlanRecord, Recipe, build_plan, rebuild_plan, unfinished_plans
from engine.cascade.status import CascadeStatus, NodeStatus, collect_status
from engine.db import redact
from engine.errors import PgttError
from pgtt_tui.dbaccess import ConnectionLost
from pgtt_tui.messages import PollDenied, PollDone, PollFailed
from pgtt_tui.screens.base import BaseView, describe_error, needs_access
from pgtt_tui.screens.modals import TextScreen
from pgtt_tui.screens.plan import PlanScreen
from pgtt_tui.screens.prompts import PickScreen, PromptScreen
from pgtt_tui.widgets.charts import TrendChart, TrendRow
from pgtt_tui.widgets.format import escape, fmt_duration, fmt_time
from pgtt_tui.widgets.topology import Change, TopologyTree, diff_status, worker_state

#: (action, key, label) of every operation, in menu order
OPERATIONS = (
    ("pause", "p", "pause / resume the worker"),
    ("provider", "c", "change provider (pick the new one)"),
    ("switchover", "s", "switchover: this node becomes the root (root alive)"),
    ("takeover", "t", "takeover: this branch takes the place of a live branch (its provider)"),
    ("failover", "f", "failover: the root is dead, this node becomes root"),
    ("resurrect", "e", "resurrect: bring this dead old root back as a branch"),
    ("tag_dead", "d", "tag this node dead"),
    ("tag_alive", "a", "tag this node alive"),
    ("drop", "x", "drop this node from the cascade"),
)
HIGHLIGHT_POLLS = 10


def is_live_branch(n: NodeStatus) -> bool:
    return n.reachable and not n.dead and n.node_type == "branch"


def takeover_refusal(st: CascadeStatus, new: NodeStatus, old: str) -> str | None:
    """Why a branch takeover of ``old`` by ``new`` is not even asked of the engine, or None.

    Only what the engine would not say in the console's words: a takeover of the root is
    the engine's switchover, which has its own key; everything else is the engine's to judge."""
    if old == new.name:
        return f"{new.name} cannot take over from itself: select the branch that should take its place"
    target = st.nodes.get(old)
    if target is not None and target.node_type == "root" and new.node_type == "branch":
        return f"{old} is the root: to make {new.name} the root use s (switchover)"
    return None


@dataclass
class PlanReady(Message):
    plan: Plan
    what: str
    runner: PlanRunner | None = None  # a resumed plan's runner (plan_store.PlanRecord.resume_runner)


@dataclass
class PlanBuildFailed(Message):
    what: str
    error: str


@dataclass
class CascadeData:
    status: CascadeStatus | None
    queues: list[str]
    dsn: str  # the member that answered
    note: str = ""
    unfinished: list[PlanRecord] = field(default_factory=list)  # half-run plans for this queue on disk


class CascadeScreen(BaseView):
    VIEW = "cascade"
    TITLE = "Cascade"
    ACCESS_PART = "cascade"
    BINDINGS = [
        Binding("enter", "menu", "operations"),
        Binding("p", "op('pause')", "pause/resume"),
        Binding("c", "op('provider')", "provider"),
        Binding("s", "op('switchover')", "switchover"),
        Binding("t", "op('takeover')", "takeover"),
        Binding("f", "op('failover')", "failover"),
        Binding("e", "op('resurrect')", "resurrect", show=False),
        Binding("d", "op('tag_dead')", "tag dead", show=False),
        Binding("a", "op('tag_alive')", "tag alive", show=False),
        Binding("x", "op('drop')", "drop", show=False),
        Binding("Q", "pick_queue", "queue", show=False),
    ]

    DEFAULT_CSS = """
    CascadeScreen #tree-panel { height: 1fr; }
    CascadeScreen #node-panel { height: 7; }
    CascadeScreen #lag-panel { height: 5; max-height: 25%; min-height: 3; }
    CascadeScreen #node-detail { padding: 0 1; }
    CascadeScreen #cascade-keys { height: auto; padding: 0 1; background: $boost; color: $text-muted; }
    """

    def __init__(self, queue: str | None = None, *, journal_dir: str | Path | None = None,
                 wait_timeout: float = 120.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.queue = queue
        self.journal_dir = journal_dir
        self.wait_timeout = wait_timeout
        self.status: CascadeStatus | None = None
        self.member_dsn: str | None = None
        self.queues: list[str] = []
        self.changes: dict[str, list[Change]] = {}
        self.known_roles: dict[str, str] = {}
        self.plan_screen: PlanScreen | None = None
        self.stored_nodes: set[str] = set()  # nodes whose worker stores lag samples
        self.live_since: datetime | None = None
        self._chart_since: datetime | None = None  # read by the poll worker; set after each show

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="panel", id="tree-panel") as panel:
            panel.border_title = "Cascade"
            yield TopologyTree(id="topology")
        with Vertical(classes="panel", id="node-panel") as panel:
            panel.border_title = "Node"
            yield Static("", id="node-detail")
        with Vertical(classes="panel", id="lag-panel") as panel:
            panel.border_title = "Lag behind the root"
            yield TrendChart(id="lag")
        yield Static("Enter: operations · p pause/resume · c provider · s switchover · t takeover · f failover · "
                     "e resurrect · d/a tag dead/alive · x drop", id="cascade-keys")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(TopologyTree).focus()

    # ---- polling (worker thread) --------------------------------------------------------
    def _candidates(self) -> list[str]:
        out: list[str] = []
        own = self.papp.settings.dsn
        out.append(own)
        if self.member_dsn and self.member_dsn not in out:
            out.append(self.member_dsn)
        if self.status is not None:
            for n in sorted(self.status.nodes.values(), key=lambda n: (not n.reachable, n.name)):
                if n.location not in out and not n.dead:
                    out.append(n.location)
        return out

    def _poll_body(self, generation: int) -> None:  # worker thread: no widgets here
        own = self.papp.settings.dsn
        queues = list(self.queues)
        installed = True
        try:
            listed = self.papp.db.run("poll", queue_views.cascade_queues)
        except ConnectionLost:
            pass  # the console's database may be the dead root: ask the other members
        except (PgttError, psycopg.Error) as exc:
            if self._posted_denial(exc):
                return
        else:
            installed = listed is not None
            queues = listed or []
        queue = self.queue or (queues[0] if queues else None)
        if queue is None:
            note = ("this database is not a cascade node: pgq_node is not installed here (pgtt-tui db init "
                    "--modules pgq_node, or CREATE EXTENSION pgq_node)" if not installed
                    else "this database is not a cascade node (pgq_node has no queue here)")
            self.post_message(PollDone(self.VIEW, CascadeData(None, queues, own, note), generation))
            return
        errors = []
        for dsn in self._candidates():
            try:
                status = collect_status(dsn, queue, timeout=3, lag_now=self.papp.now(), lag_since=self._chart_since)
            except (PgttError, psycopg.Error) as exc:
                # this role refused on its own database is no reason to ask the other members
                if dsn == own and self._posted_denial(exc):
                    return
                errors.append(describe_error(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the refresh loop
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            unfinished = self._unfinished(status.queue)
            self.post_message(PollDone(self.VIEW, CascadeData(status, queues, dsn, unfinished=unfinished),
                                       generation))
            return
        self.post_message(PollFailed(self.VIEW, "no member of the cascade answers: " + "; ".join(errors[:2]),
                                     lost=True))

    def _unfinished(self, queue: str) -> list[PlanRecord]:  # worker thread (reads files)
        try:
            return [r for r in unfinished_plans(queue) if r.id not in self.papp.offered_plans]
        except OSError:
            return []

    def _posted_denial(self, exc: BaseException) -> bool:  # worker thread
        """The no-access panel's message when ``exc`` is this role lacking a grant on pgq_node."""
        denied = self._explain_denial(exc)
        if denied is not None:
            self.post_message(PollDenied(self.VIEW, denied))
        return denied is not None

    # ---- showing (UI thread) ---------------------------------------------------------------
    def show(self, data: CascadeData) -> None:
        self.queues = data.queues
        tree = self.query_one(TopologyTree)
        panel = self.query_one("#tree-panel")
        if data.status is None:
            panel.border_title = "Cascade"
            tree.clear()
            tree.root.set_label(data.note or "no cascade")
            self.query_one("#node-detail", Static).update(escape(data.note))
            return
        status = data.status
        self.member_dsn = data.dsn
        if self.queue is None:
            self.queue = status.queue
        for change_list in self.changes.values():
            for c in change_list:
                c.polls_left -= 1
        self.changes = {k: [c for c in v if c.polls_left > 0] for k, v in self.changes.items()}
        fresh = diff_status(self.status, status)
        for c in fresh:
            c.polls_left = HIGHLIGHT_POLLS
            self.changes.setdefault(c.node, []).append(c)
        if fresh:
            self.notify("\n".join(f"{c.node}: {c.text}" for c in fresh), title=f"cascade {status.queue}",
                        severity="warning", timeout=8)
        for n in status.nodes.values():
            if n.reachable and n.node_type:
                self.known_roles[n.name] = n.node_type
        self.status = status
        tree.show_status(status, self.changes)
        self._show_lag(status)
        down = sum(1 for n in status.nodes.values() if not n.reachable)
        root = status.root or "none alive"
        extra = f" · {down} unreachable" if down else ""
        other = f" · Q: {len(self.queues)} queues" if len(self.queues) > 1 else ""
        panel.border_title = f"Cascade {escape(status.queue)} · root {escape(root)}{extra}{other}"
        self._show_node()
        fresh_plans = [r for r in data.unfinished if r.id not in self.papp.offered_plans]
        if fresh_plans and self.plan_screen is None and self.app.screen is self:
            self.offer_unfinished(fresh_plans[0])

    def _show_lag(self, status: CascadeStatus) -> None:
        """Each member's stored samples as read; for a member without any, this poll's own
        sample (ticker lag on a root or branch, ticks behind on a leaf)."""
        now = self.papp.now()
        chart = self.query_one("#lag", TrendChart)
        series: dict[Any, list[dict[str, Any]]] = {}
        for name, read in status.lag.items():
            for node, buckets in read["series"].items():
                series[node] = buckets
                if any(b["lag"] is not None for b in buckets):
                    self.stored_nodes.add(node)
        rows: list[TrendRow] = []
        order = sorted(status.nodes.values(), key=lambda n: ({"root": 0, "branch": 1}.get(n.node_type or "", 2), n.name))
        for n in order:
            if n.name not in self.stored_nodes and n.reachable:
                if self.live_since is None:
                    self.live_since = now
                series[n.name] = [trends.live_bucket(now, lag=n.ticker_lag if n.node_type != "leaf" else None,
                                                     ticks=n.lag_ticks)]
            live_leaf = n.name not in self.stored_nodes and n.node_type == "leaf"
            label = f"{n.name}{' ✗' if not n.reachable or n.dead else ''}"
            rows.append(TrendRow(n.name, label, "ticks" if live_leaf else "lag", "ticks" if live_leaf else "s"))
        chart.add_series(series)
        if status.lag:
            self._chart_since = chart.since
        missing = [n.name for n in order if n.name not in self.stored_nodes]
        if not missing:
            note = "stored: sampled by each node's worker every 10 s"
        else:
            since = fmt_time(self.live_since, now, self.papp.tz) if self.live_since is not None else "now"
            note = f"live for {', '.join(missing)} (no stored samples), sampled here since {since}"
        chart.show_rows(rows, "seconds behind the root · 30 min", note)
        panel = self.query_one("#lag-panel")
        panel.styles.height = len(rows) + 4  # heading, one row per node, a spare line, borders; at most 25%
        panel.border_subtitle = "stored" if not missing else "live since opened" if len(missing) == len(order) \
            else "stored + live"

    # ---- half-run plans left on disk -------------------------------------------------------
    def offer_unfinished(self, record: PlanRecord) -> None:
        """A plan this or another console left half-way: show it, go on, or leave it."""
        self.papp.offered_plans.add(record.id)
        choices = [("show", "show what ran (the journal)"),
                   ("continue", f"continue with step {record.next_step + 1} (its pre-checks run first)"),
                   ("leave", "leave it: do not offer it again"),
                   ("later", "not now (Esc)")]

        def done(choice: str | None) -> None:
            if choice == "show":
                self.papp.offered_plans.discard(record.id)  # offered again on the next refresh
                self.app.push_screen(TextScreen(f"Unfinished plan {record.id}",
                                                record.summary() + "\n\n" + record.journal_text()))
            elif choice == "continue":
                self._resume(record)
            elif choice == "leave":
                try:
                    record.leave()
                except PgttError as exc:  # another process took it meanwhile
                    self.notify(describe_error(exc), severity="error", timeout=8)
                    return
                self.notify(f"left as it is: {record.title}", timeout=4)

        self.app.push_screen(PickScreen(f"Unfinished plan on queue {record.queue}", choices,
                                        hint=record.summary()), done)

    def _resume(self, record: PlanRecord) -> None:
        if self.papp.read_only:
            self.notify("read-only mode: a plan cannot be resumed", severity="error")
            return
        if record.recipe is None:
            self.notify(f"this plan cannot be rebuilt: run its command again with --from-step "
                        f"{record.next_step + 1}", severity="error", timeout=8)
            return
        contact = self._dsn()
        if record.recipe["op"] == "plan_resurrect" and self.status is not None:
            old = record.recipe["args"][1] if len(record.recipe["args"]) > 1 else None
            node = self.status.nodes.get(old) if old else None
            contact = node.location if node is not None else contact

        def body() -> None:  # worker thread
            try:
                plan = rebuild_plan(Recipe(**record.recipe), contact)
                runner = record.resume_runner(plan)
            except (PgttError, psycopg.Error) as exc:
                self.post_message(PlanBuildFailed(f"resume {record.title}", describe_error(exc)))
            except Exception as exc:  # noqa: BLE001
                self.post_message(PlanBuildFailed(f"resume {record.title}", f"{type(exc).__name__}: {exc}"))
            else:
                self.post_message(PlanReady(plan, record.title, runner))

        self.run_worker(body, thread=True, group="plan-build", exclusive=True, exit_on_error=False,
                        description="resume a plan")

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        self._show_node()

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        event.stop()
        if event.node.data is not None:
            self.action_menu()

    def node_text(self, n: NodeStatus) -> str:
        state, _ = worker_state(n)
        lines = []
        role = n.node_type or "?"
        prov = f" of {n.provider}" if n.provider and n.node_type != "root" else ""
        lines.append(f"[b]{escape(n.name)}[/b] · {escape(role)}{escape(prov)}"
                     f"{' · ✗ tagged DEAD' if n.dead else ''} · worker {escape(n.worker or '-')} {state}")
        if not n.reachable:
            lines.append(f"✗ not answering: {escape(n.error)}")
            was = self.known_roles.get(n.name)
            if was:
                lines.append(f"last seen as {escape(was)}")
        else:
            behind = f" ({n.lag_ticks} behind the root)" if n.lag_ticks else ""
            lines.append(f"completed tick {n.last_tick if n.last_tick is not None else '-'}{behind}"
                         + (f" · queue top {n.queue_top}" if n.queue_top is not None else "")
                         + (f" · ticker lag {fmt_duration(n.ticker_lag)}" if n.ticker_lag is not None else ""))
            if n.node_type != "leaf":
                lines.append(f"watermark local {n.local_watermark} · global {n.global_watermark}"
                             + (f" · subscribers {', '.join(n.subscribers)}" if n.subscribers else ""))
            if n.cur_error:
                lines.append(f"✗ error: {escape(n.cur_error)}")
        for c in self.changes.get(n.name, []):
            lines.append(escape(c.text))
        return "\n".join(lines)

    def _show_node(self) -> None:
        detail = self.query_one("#node-detail", Static)
        n = self.selected()
        if n is None:
            detail.update("select a node (j/k)")
            return
        detail.update(self.node_text(n))
        self.query_one("#node-panel").border_title = f"Node {escape(n.name)} · {escape(redact(n.location))}"

    def selected(self) -> NodeStatus | None:
        name = self.query_one(TopologyTree).selected_name()
        if self.status is None or name is None:
            return None
        return self.status.nodes.get(name)

    # ---- operations ------------------------------------------------------------------------
    @needs_access
    def action_menu(self) -> None:
        n = self.selected()
        if n is None:
            self.notify("select a node first (j/k)", severity="warning")
            return
        choices = [(action, f"{key}  {label}") for action, key, label in OPERATIONS]

        def done(action: str | None) -> None:
            if action:
                self.action_op(action)

        self.app.push_screen(PickScreen(f"Operations on {n.name}", choices), done)

    @needs_access
    def action_pick_queue(self) -> None:
        if len(self.queues) < 2:
            self.notify("this database takes part in one cascaded queue only", timeout=3)
            return

        def done(queue: str | None) -> None:
            if queue and queue != self.queue:
                self.queue = queue
                self.status = None
                self.changes = {}
                self.request_poll()

        self.app.push_screen(PickScreen("Cascaded queue", [(q, q) for q in self.queues]), done)

    @needs_access
    def action_op(self, action: str) -> None:
        n = self.selected()
        st = self.status
        if n is None or st is None:
            self.notify("select a node first (j/k)", severity="warning")
            return
        getattr(self, f"_op_{action}")(st, n)

    def _build(self, what: str, fn: Callable[..., Plan], *args: Any, **kw: Any) -> None:
        """Build a plan in a worker (it reads the topology); PlanReady opens the walker."""
        self.notify(f"building the plan: {what}…", timeout=2)

        def body() -> None:  # worker thread
            try:
                plan = build_plan(fn, *args, **kw) if fn.__name__ in ops.REBUILDABLE else fn(*args, **kw)
            except (PgttError, psycopg.Error) as exc:
                self.post_message(PlanBuildFailed(what, describe_error(exc)))
            except Exception as exc:  # noqa: BLE001
                self.post_message(PlanBuildFailed(what, f"{type(exc).__name__}: {exc}"))
            else:
                self.post_message(PlanReady(plan, what))

        self.run_worker(body, thread=True, group="plan-build", exclusive=True, exit_on_error=False,
                        description=f"plan {what}")

    def on_plan_build_failed(self, message: PlanBuildFailed) -> None:
        message.stop()
        self.notify(message.error, title=f"cannot {message.what}", severity="error", timeout=10)

    def on_plan_ready(self, message: PlanReady) -> None:
        message.stop()
        if not message.plan.steps:
            self.notify("; ".join(message.plan.notes) or "nothing to do", title=message.plan.title, timeout=5)
            return
        screen = PlanScreen(message.plan, journal_dir=self.journal_dir, runner=message.runner)
        self.plan_screen = screen

        def done(_: Any) -> None:
            self.plan_screen = None
            self.request_poll()

        self.app.push_screen(screen, done)

    def _dsn(self) -> str:
        return self.member_dsn or self.papp.settings.dsn

    def _op_pause(self, st: CascadeStatus, n: NodeStatus) -> None:
        if not n.reachable:
            self.notify(f"{n.name} does not answer: its worker flag cannot be changed", severity="error")
            return
        pause = not n.paused
        self._build(f"{'pause' if pause else 'resume'} {n.name}", ops.plan_pause, self._dsn(), st.queue, n.name,
                    pause, wait_timeout=self.wait_timeout)

    def _op_provider(self, st: CascadeStatus, n: NodeStatus) -> None:
        if n.node_type == "root":
            self.notify(f"{n.name} is the root: it has no provider (use switchover)", severity="warning")
            return
        choices = [(x.name, f"{x.name}  ({x.node_type}, tick {x.last_tick})")
                   for x in sorted(st.nodes.values(), key=lambda x: x.name)
                   if x.name != n.name and x.reachable and not x.dead and x.node_type in ("root", "branch")
                   and x.name != n.provider]
        if not choices:
            self.notify("no other root or branch can serve this node", severity="warning")
            return

        def done(provider: str | None) -> None:
            if provider:
                self._build(f"change provider of {n.name} to {provider}", ops.plan_change_provider, self._dsn(),
                            st.queue, n.name, provider, wait_timeout=self.wait_timeout)

        self.app.push_screen(PickScreen(f"New provider for {n.name} (now {n.provider})", choices), done)

    def _op_switchover(self, st: CascadeStatus, n: NodeStatus) -> None:
        if n.node_type == "root":
            self.notify(f"{n.name} is already the root: select the branch that should take over",
                        severity="warning")
            return
        if st.root is None:
            self.notify("no live root: use f (failover) instead", severity="error")
            return
        self._build(f"switchover {st.root} → {n.name}", ops.plan_takeover, self._dsn(), st.queue, st.root, n.name,
                    wait_timeout=self.wait_timeout)

    def _op_takeover(self, st: CascadeStatus, n: NodeStatus) -> None:
        if not n.reachable:
            self.notify(f"{n.name} does not answer: it cannot take over", severity="error")
            return
        if not n.provider:
            self.notify(f"{n.name} has no provider: only a branch can take over", severity="warning")
            return
        others = [x for x in sorted(st.nodes.values(), key=lambda x: x.name)
                  if x.name not in (n.name, n.provider) and is_live_branch(x)]
        if n.node_type != "branch" or not others:
            # nothing to choose: its provider, or the refusal that names it
            self._takeover(st, n, n.provider)
            return
        provider = st.nodes.get(n.provider)
        mine = [provider] if provider is not None and is_live_branch(provider) else []
        choices = [(x.name, f"{x.name}  ({'its provider, ' if x is provider else ''}branch of {x.provider}, "
                            f"tick {x.last_tick})") for x in mine + others]
        hint = (f"its provider {n.provider} is the root: s (switchover) makes {n.name} the root"
                if provider is not None and provider.node_type == "root" else "")

        def go(old: str | None) -> None:
            if old:
                self._takeover(st, n, old)

        self.app.push_screen(PickScreen(f"Which branch should {n.name} take over?", choices, hint=hint), go)

    def _takeover(self, st: CascadeStatus, n: NodeStatus, old: str) -> None:
        refusal = takeover_refusal(st, n, old)
        if refusal:
            self.notify(refusal, severity="warning", timeout=8)
            return
        self._build(f"takeover {old} → {n.name}", ops.plan_takeover, self._dsn(), st.queue, old, n.name,
                    wait_timeout=self.wait_timeout)

    def dead_root_candidates(self, st: CascadeStatus, new: str) -> list[str]:
        down = [x.name for x in st.nodes.values() if x.name != new and (not x.reachable or x.dead)]
        roots = [x for x in down if self.known_roles.get(x) == "root"]
        return roots or down

    def _op_failover(self, st: CascadeStatus, n: NodeStatus) -> None:
        if st.root is not None and st.root != n.name and st.nodes[st.root].reachable:
            self.notify(f"the root {st.root} answers: use s (switchover), failover is for a dead root",
                        severity="error", timeout=8)
            return
        candidates = self.dead_root_candidates(st, n.name)
        if not candidates:
            self.notify("no unreachable or dead node to fail over from", severity="warning")
            return

        def go(old: str | None) -> None:
            if old:
                self._build(f"failover {old} → {n.name}", ops.plan_takeover, self._dsn(), st.queue, old, n.name,
                            dead_root=True, wait_timeout=self.wait_timeout)

        if len(candidates) == 1:
            go(candidates[0])
        else:
            self.app.push_screen(PickScreen("Which node is the dead root?",
                                            [(c, f"{c} (last seen as {self.known_roles.get(c, '?')})")
                                             for c in candidates]), go)

    def _op_resurrect(self, st: CascadeStatus, n: NodeStatus) -> None:
        if not n.reachable:
            self.notify(f"{n.name} does not answer yet: start its server first", severity="error")
            return
        base = Path(self.journal_dir) if self.journal_dir else Path.cwd()
        default = base / f"resurrect-{n.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"

        def done(path: str | None) -> None:
            if path:
                self._build(f"resurrect {n.name}", ops.plan_resurrect, n.location, st.queue, n.name, path,
                            wait_timeout=min(self.wait_timeout, 60.0))

        self.app.push_screen(PromptScreen(f"Resurrect {n.name}: file for the events it had that were lost",
                                          "JSON; must not exist yet", value=str(default)), done)

    def _op_tag_dead(self, st: CascadeStatus, n: NodeStatus) -> None:
        self._build(f"tag {n.name} dead", ops.plan_tag, self._dsn(), st.queue, n.name, True)

    def _op_tag_alive(self, st: CascadeStatus, n: NodeStatus) -> None:
        self._build(f"tag {n.name} alive", ops.plan_tag, self._dsn(), st.queue, n.name, False)

    def _op_drop(self, st: CascadeStatus, n: NodeStatus) -> None:
        self._build(f"drop {n.name}", ops.plan_drop_node, self._dsn(), st.queue, n.name)
