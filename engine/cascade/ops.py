"""Cascade admin operations, each built as a :class:`~engine.cascade.plan.Plan`.

Every builder reads the current topology (read-only) and returns a plan; nothing changes
until a :class:`~engine.cascade.plan.PlanRunner` runs it.  The step order follows the
pgq cascade admin procedures (reference/pgq.md §b.5):

* ``plan_create_root`` / ``plan_create_branch`` / ``plan_create_leaf``
* ``plan_pause`` / ``plan_resume`` (set the flag, wait until the worker acknowledged)
* ``plan_change_provider``
* ``plan_takeover`` (reads the topology) / ``plan_takeover_from_status`` (for a topology
  already read): switchover from a live root (demote 1, 2, catch up, promote, demote 3);
  takeover of a live branch (NEW takes its place, its subscribers and it move under NEW);
  or, with ``dead_root=True``, failover: tag dead, catch up from the most advanced node,
  move the dead root's other subscribers, promote, gravestone (refused, with what to do,
  when a leaf got further than every branch)
* ``plan_resurrect``: dump what the dead root had that the cascade lost, rejoin as branch
* ``plan_tag(dead=True/False)``, ``plan_drop_node`` (each step verifies the node state)
* ``plan_register_consumer`` / ``plan_unregister_consumer``: plain cascaded consumers
  (run by ``pgtt-tui worker --cascade-consumer NAME``)

Worker names default to ``<node>_worker``.  Waits take ``wait_timeout`` seconds.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from collections.abc import Callable
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from engine.cascade.plan import (Action, Check, CheckResult, NodeRef, Plan, Ref, Statement, Step, StepContext,
                                 Wait)
from engine.cascade.plan_store import status_hook
from engine.cascade.status import CascadeStatus, collect_status, node_info, node_settings, read_locations
from engine.db import connect, redact
from engine.errors import InputError, NotFoundError

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}$")

SQL_REGISTER_LOCATION = "SELECT * FROM pgq_node.register_location(%s, %s, %s, %s)"
SQL_CREATE_NODE = "SELECT * FROM pgq_node.create_node(%s, %s, %s, %s, %s, %s, %s)"
SQL_REGISTER_SUBSCRIBER = "SELECT * FROM pgq_node.register_subscriber(%s, %s, %s, %s)"
SQL_UNREGISTER_SUBSCRIBER = "SELECT * FROM pgq_node.unregister_subscriber(%s, %s)"
SQL_SET_PAUSED = "SELECT * FROM pgq_node.set_consumer_paused(%s, %s, %s)"
SQL_CHANGE_PROVIDER = "SELECT * FROM pgq_node.change_consumer_provider(%s, %s, %s)"
SQL_DEMOTE = "SELECT * FROM pgq_node.demote_root(%s, %s, %s)"
SQL_PROMOTE = "SELECT * FROM pgq_node.promote_branch(%s)"
SQL_COMPLETED = "SELECT completed_tick FROM pgq_node.get_consumer_state(%s, %s)"
SQL_QUEUE_TOP = "SELECT last_tick_id AS last_tick FROM pgq.get_queue_info(%s)"
SQL_SET_COMPLETED = "SELECT * FROM pgq_node.set_consumer_completed(%s, %s, %s)"
SQL_SET_GLOBAL_WM = "SELECT * FROM pgq_node.set_global_watermark(%s, %s)"
SQL_UNREGISTER_LOCATION = "SELECT * FROM pgq_node.unregister_location(%s, %s)"
SQL_DROP_NODE = "SELECT * FROM pgq_node.drop_node(%s, %s)"


def check_name(field: str, value: str) -> str:
    if not value or not _NAME_RE.match(value):
        raise InputError(field, f"{value!r} is not a valid node/worker name (letters, digits, _ . -; at most 63)")
    return value


def check_location(field: str, location: str) -> str:
    from engine.db import ConnSettings  # noqa: PLC0415

    if not location or not location.strip():
        raise InputError(field, "is empty: give a libpq connection string of the node")
    ConnSettings(dsn=location).conninfo()  # raises InputError('--dsn', ...) on bad syntax
    return location


def default_worker(node: str) -> str:
    return f"{node}_worker"


# -- reusable checks ---------------------------------------------------------------------

def _info(ctx: StepContext, node: NodeRef) -> dict[str, Any] | None:
    row = ctx.one(node, "SELECT * FROM pgq_node.get_node_info(%s)", (ctx.plan.queue,))
    return row if row and row["ret_code"] < 400 else None


def check_node_type(node: NodeRef, *types: str) -> Check:
    def fn(ctx: StepContext) -> CheckResult:
        info = _info(ctx, node)
        if info is None:
            return CheckResult.problem(f"{node.name} has no node for queue {ctx.plan.queue}")
        if info["node_type"] not in types:
            return CheckResult.problem(f"{node.name} is {info['node_type']}, expected {' or '.join(types)}")
        return CheckResult.good(info["node_type"])
    return Check(f"{node.name} is {' or '.join(types)}", fn)


def check_not_member(node: NodeRef, name: str) -> Check:
    def fn(ctx: StepContext) -> CheckResult:
        rows = ctx.query(node, "SELECT node_name FROM pgq_node.get_queue_locations(%s) WHERE node_name = %s",
                         (ctx.plan.queue, name))
        return CheckResult.problem(f"{name} is already a member") if rows else CheckResult.good()
    return Check(f"{name} is not yet a member (as {node.name} sees it)", fn)


def check_pgq_node_installed(node: NodeRef) -> Check:
    def fn(ctx: StepContext) -> CheckResult:
        row = ctx.one(node, "SELECT to_regproc('pgq_node.create_node') IS NOT NULL AS ok")
        return CheckResult.good() if row["ok"] else CheckResult.problem(
            "pgq_node is not installed there (pgtt-tui db init --modules pgq_node, or CREATE EXTENSION pgq_node)")
    return Check(f"pgq and pgq_node are installed on {node.name}", fn)


def check_not_initialized(node: NodeRef) -> Check:
    def fn(ctx: StepContext) -> CheckResult:
        info = _info(ctx, node)
        return CheckResult.good() if info is None else CheckResult.problem(
            f"{node.name} already has a {info['node_type']} node for queue {ctx.plan.queue}")
    return Check(f"{node.name} has no node for the queue yet", fn)


def check_has_tick(node: NodeRef, tick: Ref) -> Check:
    def fn(ctx: StepContext) -> CheckResult:
        want = ctx.value(tick.name)
        row = ctx.one(node, SQL_QUEUE_TOP, (ctx.plan.queue,))
        top = row["last_tick"] if row else None
        if top is None or want is None or top < want:
            return CheckResult.problem(f"{node.name} is at tick {top}, needs {want}")
        return CheckResult.good(f"top tick {top}")
    return Check(f"{node.name} has tick {tick}", fn)


def completed_at_least(node: NodeRef, tick: Ref | int, consumer: str | None = None) -> Wait:
    """Wait until the node's worker (or the named consumer) completed ``tick``."""
    def cond(ctx: StepContext) -> CheckResult:
        want = ctx.value(tick.name) if isinstance(tick, Ref) else tick
        if consumer:
            row = ctx.one(node, SQL_COMPLETED, (ctx.plan.queue, consumer))
            have = row["completed_tick"] if row else None
        else:
            info = _info(ctx, node)
            have = info["worker_last_tick"] if info else None
        if have is not None and want is not None and have >= want:
            return CheckResult.good(f"at tick {have}")
        behind = float(want - have) if have is not None and want is not None else None
        return CheckResult(False, f"at tick {have}, waiting for {want}", behind=behind)
    return Wait(f"wait until {node.name} has completed tick {tick}", node, cond)


def acknowledged(node: NodeRef, consumer: str, paused: bool) -> Wait:
    """The consumer saw the flag: paused matches and uptodate is set again."""
    def cond(ctx: StepContext) -> CheckResult:
        row = ctx.one(node, "SELECT paused, uptodate FROM pgq_node.get_consumer_state(%s, %s)",
                      (ctx.plan.queue, consumer))
        if row is None or row["paused"] is None:
            return CheckResult.problem("consumer not found")
        if row["paused"] != paused:
            return CheckResult.problem("operation canceled? the paused flag was changed by someone else")
        return CheckResult.good() if row["uptodate"] else CheckResult.problem("worker has not seen it yet")
    word = "paused" if paused else "resumed"
    return Wait(f"wait until {consumer} on {node.name} acknowledged it is {word} (is the worker running?)",
                node, cond)


# -- reusable step groups -----------------------------------------------------------------

def _pause_steps(queue: str, node: NodeRef, worker: str, paused: bool, timeout: float,
                 capture_completed: str | None = None, ack_warn_only: bool = False) -> list[Step]:
    word = "pause" if paused else "resume"
    steps = [Step(f"{word} worker {worker} on {node.name}", node,
                  [Statement(SQL_SET_PAUSED, (queue, worker, paused))],
                  undo=f"{'resume' if paused else 'pause'} {worker} on {node.name}")]
    wait = acknowledged(node, worker, paused)
    wait.timeout = timeout
    stmts = []
    if capture_completed:
        stmts.append(Statement(SQL_COMPLETED, (queue, worker), capture={capture_completed: "completed_tick"}))
    steps.append(Step(f"worker {worker} on {node.name} acknowledged", node, stmts, wait=wait,
                      warn_only=ack_warn_only))
    return steps


def provider_has_tick(node: NodeRef, tick: Ref) -> Wait:
    """Wait until ``node``'s queue has tick ``tick`` (a provider that is still catching up)."""
    def cond(ctx: StepContext) -> CheckResult:
        want = ctx.value(tick.name)
        row = ctx.one(node, SQL_QUEUE_TOP, (ctx.plan.queue,))
        top = row["last_tick"] if row else None
        if top is None or want is None or top < want:
            behind = float(want - top) if top is not None and want is not None else None
            return CheckResult(False, f"{node.name} is at tick {top}, needs {want}", behind=behind)
        return CheckResult.good(f"top tick {top}")
    return Wait(f"wait until {node.name} has tick {tick}", node, cond)


def _subscribe_steps(queue: str, provider: NodeRef, sub: NodeRef, worker: str, tick: Ref | None,
                     capture_wm: str | None = None, timeout: float = 120.0) -> list[Step]:
    capture = {capture_wm: "global_watermark"} if capture_wm else {}
    wait = None
    if tick is not None:
        wait = provider_has_tick(provider, tick)
        wait.timeout = timeout
    return [Step(f"register {sub.name} as subscriber on {provider.name}", provider,
                 [Statement(SQL_REGISTER_LOCATION, (queue, sub.name, sub.location, False)),
                  Statement(SQL_REGISTER_SUBSCRIBER, (queue, sub.name, worker, tick), capture=capture)],
                 checks=[check_node_type(provider, "root", "branch")], wait=wait,
                 undo=f"on {provider.name}: SELECT * FROM pgq_node.unregister_subscriber('{queue}', '{sub.name}')")]


def _move_steps(queue: str, node: NodeRef, worker: str, new_provider: NodeRef, old_provider: NodeRef | None,
                timeout: float, tag: str, keep_paused: bool = False) -> list[Step]:
    """change-provider of one node: pause, subscribe at its completed tick (waiting until the
    new provider has it), switch, resume (unless it was paused before), unsubscribe."""
    completed = Ref(f"completed_{tag}")
    steps = _pause_steps(queue, node, worker, True, timeout, capture_completed=completed.name)
    steps += _subscribe_steps(queue, new_provider, node, worker, completed, timeout=timeout)
    steps.append(Step(f"switch {node.name} to provider {new_provider.name}", node,
                      [Statement(SQL_CHANGE_PROVIDER, (queue, worker, new_provider.name))],
                      undo=(f"on {node.name}: change_consumer_provider back to "
                            f"{old_provider.name if old_provider else 'the old provider'}")))
    if not keep_paused:
        steps += _pause_steps(queue, node, worker, False, timeout)
    if old_provider is not None and not old_provider.dead and old_provider.name != new_provider.name:
        steps.append(Step(f"unregister {node.name} from its old provider {old_provider.name}", old_provider,
                          [Statement(SQL_UNREGISTER_SUBSCRIBER, (queue, node.name))], warn_only=True))
    return steps


# -- topology helpers -----------------------------------------------------------------------

def load(dsn: str, queue: str) -> CascadeStatus:
    """The one place plans read the cascade: a resumed plan is rebuilt from the status
    recorded when it was first built (``plan_store``), not from today's topology."""
    hook = status_hook()
    if hook is not None and hook["mode"] == "replay":
        return hook["status"]
    check_location("--dsn", dsn)
    st = collect_status(dsn, queue)
    if hook is not None:
        hook["status"] = st
    return st


def _alive(st: CascadeStatus, *exclude: str) -> list[NodeRef]:
    return [n.ref for n in st.nodes.values() if n.reachable and not n.dead and n.name not in exclude]


# -- create ------------------------------------------------------------------------------------

def plan_create_root(queue: str, name: str, location: str, worker: str | None = None) -> Plan:
    check_name("--queue", queue)
    check_name("NAME", name)
    check_location("LOCATION", location)
    worker = check_name("--worker", worker or default_worker(name))
    node = NodeRef(name, location)
    steps = [
        Step(f"register the location of {name}", node,
             [Statement(SQL_REGISTER_LOCATION, (queue, name, location, False))],
             checks=[check_pgq_node_installed(node), check_not_initialized(node)],
             undo=f"on {name}: SELECT * FROM pgq_node.unregister_location('{queue}', '{name}')"),
        Step(f"create root node {name}", node,
             [Statement(SQL_CREATE_NODE, (queue, "root", name, worker, None, None, None))],
             verify=_verify_type(node, "root"),
             undo=f"on {name}: SELECT * FROM pgq_node.drop_node('{queue}', '{name}')"),
    ]
    return Plan(f"create root {name} for queue {queue}", queue, [node], steps,
                notes=[f"then run the worker: pgtt-tui worker --dsn '{redact(location)}' --modules cascade "
                       f"--cascade-queue {queue}"])


def _verify_type(node: NodeRef, node_type: str) -> Check:
    check = check_node_type(node, node_type)
    check.description = f"{node.name} is now {node_type}"
    return check


def _find_root(provider_location: str, queue: str) -> tuple[NodeRef, dict[str, Any], list[tuple[str, str, bool]]]:
    seen: set[str] = set()
    location = provider_location
    while True:
        if location in seen:
            raise InputError("--provider", "the provider chain loops back on itself")
        seen.add(location)
        with connect(node_settings(location)) as conn:
            info = node_info(conn, queue)
            if info is None:
                raise NotFoundError(f"no node for queue {queue!r} at {redact(location)}")
            if info["node_type"] == "root":
                return NodeRef(info["node_name"], location), info, read_locations(conn, queue)
            location = info["provider_location"]


def plan_create_branch(queue: str, name: str, location: str, provider_location: str, *,
                       worker: str | None = None, node_type: str = "branch", merge: str | None = None) -> Plan:
    check_name("--queue", queue)
    check_name("NAME", name)
    check_location("LOCATION", location)
    check_location("--provider", provider_location)
    worker = check_name("--worker", worker or default_worker(name))
    if node_type not in ("branch", "leaf"):
        raise InputError("node_type", f"{node_type!r} must be branch or leaf")
    if merge is not None and node_type != "leaf":
        raise InputError("--merge", "only a leaf can merge into a combined queue")
    root, _, members = _find_root(provider_location, queue)
    if any(m[0] == name for m in members):
        raise InputError("NAME", f"node {name!r} is already a member of queue {queue!r}")
    with connect(node_settings(provider_location)) as conn:
        pinfo = node_info(conn, queue)
    provider = NodeRef(pinfo["node_name"], provider_location)
    if pinfo["node_type"] == "leaf":
        raise InputError("--provider", f"{provider.name} is a leaf: a leaf cannot be a provider")
    node = NodeRef(name, location)
    wm = Ref("global_wm")
    steps = [Step(f"register the location of {name} on the root {root.name}", root,
                  [Statement(SQL_REGISTER_LOCATION, (queue, name, location, False))],
                  checks=[check_not_member(root, name)],
                  undo=f"on {root.name}: SELECT * FROM pgq_node.unregister_location('{queue}', '{name}')")]
    steps += _subscribe_steps(queue, provider, node, worker, None, capture_wm=wm.name)
    local = [Statement(SQL_REGISTER_LOCATION, (queue, n, loc, dead)) for n, loc, dead in members if n != name]
    local.append(Statement(SQL_REGISTER_LOCATION, (queue, name, location, False)))
    steps.append(Step(f"register every member's location on {name}", node, local,
                      checks=[check_pgq_node_installed(node), check_not_initialized(node)]))
    steps.append(Step(f"create {node_type} node {name} reading from {provider.name}", node,
                      [Statement(SQL_CREATE_NODE, (queue, node_type, name, worker, provider.name, wm, merge))],
                      verify=_verify_type(node, node_type),
                      undo=f"on {name}: SELECT * FROM pgq_node.drop_node('{queue}', '{name}')"))
    nodes = [root] + ([provider] if provider.name != root.name else []) + [node]
    plan = Plan(f"create {node_type} {name} under {provider.name} for queue {queue}", queue, nodes, steps,
                notes=[f"then run the worker: pgtt-tui worker --dsn '{redact(location)}' --modules cascade "
                       f"--cascade-queue {queue}"])

    def fallback(ctx: StepContext) -> Any:
        row = ctx.one(provider, "SELECT last_tick FROM pgq.get_consumer_info(%s, %s)", (queue, worker))
        return row["last_tick"] if row else None
    plan.fallbacks[wm.name] = fallback
    return plan


def plan_create_leaf(queue: str, name: str, location: str, provider_location: str, *,
                     worker: str | None = None, merge: str | None = None) -> Plan:
    return plan_create_branch(queue, name, location, provider_location, worker=worker, node_type="leaf",
                              merge=merge)


# -- pause / resume / change provider ---------------------------------------------------------

def plan_pause(dsn: str, queue: str, node_name: str, paused: bool = True, consumer: str | None = None,
               wait_timeout: float = 60.0) -> Plan:
    st = load(dsn, queue)
    n = st.node(node_name)
    worker = consumer or n.worker
    if worker is None:
        raise NotFoundError(f"node {node_name} has no worker for queue {queue}")
    steps = _pause_steps(queue, n.ref, worker, paused, wait_timeout, ack_warn_only=True)
    word = "pause" if paused else "resume"
    return Plan(f"{word} {worker} on {node_name}", queue, [n.ref], steps,
                notes=["the acknowledgement wait only warns: a stopped worker sees the flag when it starts"])


def _descendants(st: CascadeStatus, name: str) -> set[str]:
    out: set[str] = set()
    todo = [name]
    while todo:
        cur = todo.pop()
        for n in st.nodes.values():
            if n.provider == cur and n.name != cur and n.name not in out:
                out.add(n.name)
                todo.append(n.name)
    return out


def plan_change_provider(dsn: str, queue: str, node_name: str, provider_name: str,
                         wait_timeout: float = 120.0) -> Plan:
    st = load(dsn, queue)
    n = st.node(node_name)
    p = st.node(provider_name)
    if node_name == provider_name:
        raise InputError("--provider", "a node cannot be its own provider")
    if n.node_type == "root":
        raise InputError("--node", f"{node_name} is the root: it has no provider (use takeover)")
    if p.node_type == "leaf":
        raise InputError("--provider", f"{provider_name} is a leaf and cannot be a provider")
    if provider_name in _descendants(st, node_name):
        raise InputError("--provider", f"{provider_name} reads (indirectly) from {node_name}: that would be a loop")
    if n.provider == provider_name:
        return Plan(f"{node_name} already reads from {provider_name}", queue, [n.ref], [],
                    notes=["nothing to do"])
    old = st.nodes.get(n.provider) if n.provider else None
    steps = _move_steps(queue, n.ref, n.worker, p.ref, old.ref if old else None, wait_timeout, "node")
    nodes = [n.ref, p.ref] + ([old.ref] if old else [])
    return Plan(f"change provider of {node_name} to {provider_name}", queue, nodes, steps)


# -- takeover: switchover and failover ------------------------------------------------------------

def plan_takeover(dsn: str, queue: str, old_name: str, new_name: str, *, dead_root: bool = False,
                  wait_timeout: float = 120.0) -> Plan:
    """Takeover read from the member at ``dsn``: see :func:`plan_takeover_from_status`."""
    return plan_takeover_from_status(load(dsn, queue), old_name, new_name, dead_root=dead_root,
                                     wait_timeout=wait_timeout)


def plan_takeover_from_status(st: CascadeStatus, old_name: str, new_name: str, *, dead_root: bool = False,
                              wait_timeout: float = 120.0) -> Plan:
    """NEW takes over from OLD, for a topology already read (``collect_status``):

    * OLD is a live root: switchover (demote 1, 2, NEW catches up, promote, demote 3);
    * OLD is a live branch: branch takeover (NEW takes OLD's place, OLD's subscribers and OLD
      itself read from NEW);
    * ``dead_root``: failover (tag dead, catch up from the most advanced node, move OLD's other
      subscribers, promote, gravestone).
    """
    old = st.node(old_name)
    new = st.node(new_name)
    if old_name == new_name:
        raise InputError("--node", "the new node must differ from the old one")
    if not new.reachable:
        raise InputError("--node", f"{new_name} is unreachable: {new.error}")
    if new.node_type != "branch":
        raise InputError("--node", f"{new_name} is {new.node_type or 'unknown'}: only a branch can take over")
    if dead_root:
        return _plan_failover(st, old, new, wait_timeout)
    if not old.reachable:
        raise InputError("OLD", f"{old_name} is unreachable ({old.error}); if it is gone, use --dead-root")
    if old.node_type == "leaf":
        raise InputError("OLD", f"{old_name} is a leaf: nobody reads from it, there is nothing to take over "
                                "(use change-provider or drop)")
    if old.node_type != "root":
        if old_name in _descendants(st, new_name):
            raise InputError("--node", f"{old_name} reads (indirectly) from {new_name}: that would be a loop")
        return _plan_takeover_branch(st, old, new, wait_timeout)
    return _plan_switchover(st, old, new, wait_timeout)


def _plan_switchover(st: CascadeStatus, old, new, timeout: float) -> Plan:
    q = st.queue
    last = Ref("last_tick")
    o, n = old.ref, new.ref
    steps = _pause_steps(q, o, old.worker, True, timeout)
    steps.append(Step(f"demote step 1 on {old.name}: disable inserts", o,
                      [Statement(SQL_DEMOTE, (q, 1, new.name))], checks=[check_node_type(o, "root"),
                                                                          check_node_type(n, "branch")],
                      undo=f"on {old.name}: UPDATE pgq.queue SET queue_disable_insert = false, "
                           f"queue_external_ticker = false WHERE queue_name = '{q}'"))
    steps.append(Step(f"demote step 2 on {old.name}: wait for writers, last tick", o,
                      [Statement(SQL_DEMOTE, (q, 2, new.name), capture={"last_tick": "last_tick"})]))
    wait = completed_at_least(n, last)
    wait.timeout = timeout
    steps.append(Step(f"{new.name} catches up to the last tick", n, wait=wait))
    steps += _pause_steps(q, n, new.worker, True, timeout)
    steps.append(Step(f"promote {new.name} to root", n, [Statement(SQL_PROMOTE, (q,))],
                      checks=[check_has_tick(n, last)], verify=_verify_type(n, "root"), irreversible=True,
                      undo=f"a switchover back: pgtt-tui node takeover {new.name} --node {old.name}"))
    steps.append(Step(f"subscribe {old.name} to {new.name} at the last tick", n,
                      [Statement(SQL_REGISTER_LOCATION, (q, old.name, old.location, False)),
                       Statement(SQL_REGISTER_SUBSCRIBER, (q, old.name, old.worker, last))]))
    if new.provider and new.provider in st.nodes:
        prov = st.nodes[new.provider]
        steps.append(Step(f"unregister {new.name} from its old provider {prov.name}", prov.ref,
                          [Statement(SQL_UNREGISTER_SUBSCRIBER, (q, new.name))], warn_only=prov.name != old.name))
    steps += _pause_steps(q, n, new.worker, False, timeout)
    steps.append(Step(f"demote step 3 on {old.name}: become a branch of {new.name}", o,
                      [Statement(SQL_DEMOTE, (q, 3, new.name))], verify=_verify_type(o, "branch")))
    steps += _pause_steps(q, o, old.worker, False, timeout)
    plan = Plan(f"switchover: {new.name} takes over the root role from {old.name}", q,
                [o, n] + [x.ref for x in st.nodes.values() if x.name not in (old.name, new.name)], steps,
                notes=[f"subscribers of {old.name} stay on {old.name} (now a branch)"])

    def fallback(ctx: StepContext) -> Any:
        row = ctx.one(o, SQL_QUEUE_TOP, (q,))
        return row["last_tick"] if row else None
    plan.fallbacks["last_tick"] = fallback
    return plan


def _plan_takeover_branch(st: CascadeStatus, old, new, timeout: float) -> Plan:
    """NEW takes OLD's place (both branches), §b.5 takeover_nonroot: if NEW reads (directly or
    not) from OLD it first moves to OLD's provider; then OLD's other subscribers and finally
    OLD itself read from NEW.  Each move waits until NEW has the mover's completed tick."""
    q = st.queue
    steps: list[Step] = []
    old_provider = st.node(old.provider).ref if old.provider in st.nodes else None
    if old_provider is None:
        raise InputError("OLD", f"{old.name} has no known provider ({old.provider})")
    if new.provider == old.name or new.name in _descendants(st, old.name):
        prev = st.nodes.get(new.provider)
        steps += _move_steps(q, new.ref, new.worker, old_provider, prev.ref if prev else None, timeout, "new",
                             keep_paused=bool(new.paused))
    for i, sub in enumerate(x for x in sorted(st.nodes.values(), key=lambda x: x.name)
                            if x.provider == old.name and x.name != new.name):
        if not sub.reachable:
            raise InputError("OLD", f"{old.name}'s subscriber {sub.name} does not answer: it cannot be moved "
                                    "(start it, or drop it first)")
        steps += _move_steps(q, sub.ref, sub.worker, new.ref, old.ref, timeout, f"sub{i}",
                             keep_paused=bool(sub.paused))
    steps += _move_steps(q, old.ref, old.worker, new.ref, old_provider, timeout, "old",
                         keep_paused=bool(old.paused))
    return Plan(f"takeover: {new.name} takes the place of branch {old.name}", q, st.refs(), steps,
                notes=[f"afterwards {old.name} is a branch under {new.name} without subscribers; "
                       f"`pgtt-tui node drop {old.name}` removes it"])


def _plan_failover(st: CascadeStatus, old, new, timeout: float) -> Plan:
    """Failover from a dead root, §b.5 takeover_root with --dead-root.

    Order: tag OLD dead on every reachable member; NEW catches up from the most advanced
    live subscriber of OLD (change NEW's provider to it, wait until NEW completed its tick);
    OLD's other live subscribers move to NEW; pause NEW, promote it, gravestone at the
    failover tick, unregister NEW from its provider, resume NEW.  Deliberate difference to
    python-pgq: the subscribers move *after* the catch-up (python-pgq moves them first), so
    every subscriber is registered on NEW at a tick NEW already has.
    """
    q = st.queue
    alive = _alive(st, old.name)
    n = new.ref
    dead_old = NodeRef(old.name, old.location, True)
    steps: list[Step] = []
    subs = [x for x in sorted(st.nodes.values(), key=lambda x: x.name)
            if x.provider == old.name and x.name not in (new.name, old.name)]
    gone = [x.name for x in subs if not x.reachable or x.dead]
    subs = [x for x in subs if x.reachable and not x.dead]
    # who is ahead of NEW?  Only a branch (or NEW's own live provider) can serve missing batches.
    candidates = [x for x in subs if x.node_type == "branch"]
    if new.provider and new.provider != old.name and new.provider in st.nodes and \
            st.nodes[new.provider].reachable and st.nodes[new.provider] not in candidates:
        candidates.append(st.nodes[new.provider])
    best = max(candidates, key=lambda x: x.last_tick or 0, default=None)
    if best is not None and (best.last_tick or 0) <= (new.last_tick or 0):
        best = None
    reach = max(new.last_tick or 0, best.last_tick or 0 if best else 0)
    leaves_ahead = [x for x in subs if x.node_type == "leaf" and (x.last_tick or 0) > reach]
    if leaves_ahead:
        who = ", ".join(f"{x.name} (tick {x.last_tick})" for x in leaves_ahead)
        most = best.name if best else new.name
        raise InputError("--node", (
            f"leaf {who} got further than every branch (the most advanced branch, {most}, is at tick {reach}): "
            f"ticks after {reach} exist only on the dead root {old.name} and on the leaf, so no branch can serve "
            f"that leaf after a failover and the new root would reuse those tick ids for other events. "
            f"What to do: (1) best: start {old.name}'s server again, let the branches catch up, then switch over "
            f"(pgtt-tui node takeover {old.name} --node {new.name}) instead of failing over; (2) if {old.name} is "
            f"gone for good: stop the leaf's worker, drop the leaf (pgtt-tui node drop {leaves_ahead[0].name}), "
            f"fail over, create the leaf again under the new root (pgtt-tui node create-leaf ... --provider "
            f"<{new.name}>) and reconcile the events the leaf has after tick {reach} in the application"))
    # 1. tag the old root dead everywhere we can reach (the new root first)
    for ref in sorted(alive, key=lambda r: r.name != new.name):
        steps.append(Step(f"tag {old.name} dead on {ref.name}", ref,
                          [Statement(SQL_REGISTER_LOCATION, (q, old.name, None, True))],
                          undo=f"on {ref.name}: SELECT * FROM pgq_node.register_location('{q}', '{old.name}', "
                               f"NULL, false)"))
    # 2. NEW's worker must run to catch up
    if new.paused:
        steps += _pause_steps(q, n, new.worker, False, timeout)
    provider_after = new.provider
    if best is not None:
        # 3. catch up from the most advanced node
        if best.name != new.provider:
            prev = st.nodes.get(new.provider) if new.provider else None
            prev_ref = dead_old if new.provider == old.name else (prev.ref if prev else None)
            steps += _move_steps(q, n, new.worker, best.ref, prev_ref, timeout, "new")
            provider_after = best.name
        steps.append(Step(f"how far is {best.name} (the most advanced node)?", best.ref,
                          [Statement("SELECT worker_last_tick AS best_tick FROM pgq_node.get_node_info(%s)", (q,),
                                     capture={"best_tick": "best_tick"})]))
        wait = completed_at_least(n, Ref("best_tick"))
        wait.timeout = timeout
        steps.append(Step(f"{new.name} catches up from {best.name} to its tick", n, wait=wait))
    # 4. move every other live subscriber of the dead root to the new node
    for i, sub in enumerate(subs):
        steps += _move_steps(q, sub.ref, sub.worker, n, dead_old, timeout, f"sub{i}", keep_paused=bool(sub.paused))
    # 5. promote, gravestone, leave the provider
    steps += _pause_steps(q, n, new.worker, True, timeout)
    steps.append(Step(f"promote {new.name} to root", n,
                      [Statement(SQL_PROMOTE, (q,)),
                       Statement(SQL_QUEUE_TOP, (q,), capture={"failover_tick": "last_tick"})],
                      checks=[check_node_type(n, "branch")], verify=_verify_type(n, "root"), irreversible=True,
                      undo="none: the old root is dead; once it is back, pgtt-tui node resurrect it"))
    steps.append(Step(f"gravestone: remember where {old.name} was cut off", n,
                      [Statement(SQL_REGISTER_SUBSCRIBER, (q, old.name, f"{old.name}.gravestone",
                                                           Ref("failover_tick")))]))
    if provider_after and provider_after != old.name and provider_after in st.nodes:
        steps.append(Step(f"unregister {new.name} from its former provider {provider_after}",
                          st.nodes[provider_after].ref, [Statement(SQL_UNREGISTER_SUBSCRIBER, (q, new.name))],
                          warn_only=True))
    steps += _pause_steps(q, n, new.worker, False, timeout)
    notes = [f"{old.name} is never contacted", "events the dead root had not passed on are lost "
             f"until `pgtt-tui node resurrect {old.name}` dumps them"]
    if best is not None:
        notes.append(f"{new.name} (tick {new.last_tick}) first catches up from {best.name} (tick {best.last_tick})")
    if gone:
        notes.append(f"not moved (not answering): {', '.join(gone)}; change their provider to {new.name} "
                     "once they are back")
    if any(x.paused for x in subs):
        notes.append("subscribers that were paused stay paused")
    plan = Plan(f"failover: {new.name} becomes root, {old.name} is dead", q,
                [dead_old] + alive, steps, notes=notes)

    def fallback(ctx: StepContext) -> Any:
        row = ctx.one(n, "SELECT last_tick FROM pgq.get_consumer_info(%s, %s)", (q, f"{old.name}.gravestone"))
        if row:
            return row["last_tick"]
        row = ctx.one(n, SQL_QUEUE_TOP, (q,))
        return row["last_tick"] if row else None
    plan.fallbacks["failover_tick"] = fallback
    if best is not None:
        plan.fallbacks["best_tick"] = lambda ctx: (ctx.one(best.ref, "SELECT worker_last_tick AS t FROM "
                                                           "pgq_node.get_node_info(%s)", (q,)) or {}).get("t")
    return plan


# -- resurrect -----------------------------------------------------------------------------------

def dump_lost_events(location: str, queue: str, node: str, from_tick: int, path: Path) -> dict[str, Any]:
    """Read every event of the node's queue after ``from_tick`` with a temporary consumer, write
    them to ``path`` (JSON, refused if it exists), then delete them and the ticks after
    ``from_tick`` from this node's queue.  Returns counts."""
    if path.exists():
        raise InputError("--dump-file", f"{path} exists already: move it away (it may hold an earlier dump)")
    dumper = f"{node}.dumper"
    events: list[dict[str, Any]] = []
    with connect(node_settings(location, app="pgtt-tui resurrect")) as conn:
        conn.execute("SELECT pgq.register_consumer_at(%s, %s, %s)", (queue, dumper, from_tick))
        while True:
            with conn.cursor(row_factory=dict_row) as cur:
                batch = cur.execute("SELECT * FROM pgq.next_batch_info(%s, %s)", (queue, dumper)).fetchone()
                if batch["batch_id"] is None:
                    break
                for ev in cur.execute("SELECT * FROM pgq.get_batch_events(%s)", (batch["batch_id"],)).fetchall():
                    ev = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in ev.items()}
                    ev["tick_id"] = batch["cur_tick_id"]
                    events.append(ev)
                cur.execute("SELECT pgq.finish_batch(%s)", (batch["batch_id"],))
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps({"queue": queue, "node": node, "from_tick": from_tick, "events": events},
                                  indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        with conn.transaction():
            conn.execute("SELECT pgq.unregister_consumer(%s, %s)", (queue, dumper))
            pfx = conn.execute("SELECT queue_data_pfx, queue_id FROM pgq.queue WHERE queue_name = %s",
                               (queue,)).fetchone()
            schema_name, _, table = pfx[0].partition(".")
            ids = [e["ev_id"] for e in events]
            deleted = 0
            if ids:
                deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE ev_id = ANY(%s)").format(
                    sql.Identifier(schema_name, table)), (ids,)).rowcount
            ticks = conn.execute("DELETE FROM pgq.tick WHERE tick_queue = %s AND tick_id > %s",
                                 (pfx[1], from_tick)).rowcount
    return {"file": str(path), "events": len(events), "deleted_events": deleted, "deleted_ticks": ticks}


def plan_resurrect(dsn_of_member: str, queue: str, old_name: str, dump_file: str | Path,
                   wait_timeout: float = 15.0) -> Plan:
    """Bring a dead old root back as a branch of the new root.

    ``dsn_of_member`` is any node that can reach the others (usually the old node itself).
    """
    st = load(dsn_of_member, queue)
    old = st.node(old_name)
    if not old.reachable:
        raise InputError("OLD", f"{old_name} is still unreachable: {old.error}")
    new = next((x for x in st.nodes.values() if x.node_type == "root" and x.name != old_name and x.reachable), None)
    if new is None:
        raise NotFoundError(f"no other live root for queue {queue}: was there a failover away from {old_name}?")
    path = Path(dump_file).expanduser().resolve()
    if path.exists():
        raise InputError("--dump-file", f"{path} exists already")
    o, n, q = old.ref, new.ref, queue
    o_live = NodeRef(o.name, o.location, False)
    ftick = Ref("failover_tick")
    gravestone = f"{old_name}.gravestone"
    steps: list[Step] = [Step(f"find where {old_name} was cut off (gravestone on {new.name})", n,
                              [Statement("SELECT last_tick FROM pgq.get_consumer_info(%s, %s)", (q, gravestone),
                                         capture={"failover_tick": "last_tick"})],
                              checks=[Check(f"{new.name} holds the gravestone {gravestone}",
                                            lambda ctx: CheckResult.good() if ctx.one(
                                                n, "SELECT 1 FROM pgq.get_consumer_info(%s, %s)", (q, gravestone))
                                            else CheckResult.problem("no gravestone: not failed over from here?"))])]
    steps += _pause_steps(q, o_live, old.worker, True, wait_timeout, ack_warn_only=True)
    if old.node_type == "root":
        steps.append(Step(f"demote step 1 on {old_name}", o_live, [Statement(SQL_DEMOTE, (q, 1, new.name))]))
        steps.append(Step(f"demote step 2 on {old_name}: final tick", o_live,
                          [Statement(SQL_DEMOTE, (q, 2, new.name), capture={"final_tick": "last_tick"})]))
        steps.append(Step(f"demote step 3 on {old_name}", o_live, [Statement(SQL_DEMOTE, (q, 3, new.name))]))
    if old.subscribers:
        steps.append(Step(f"forget the old subscribers of {old_name}", o_live,
                          [Statement(SQL_UNREGISTER_SUBSCRIBER, (q, s)) for s in old.subscribers]))
    steps.append(Step(f"dump the events {old_name} had after the failover tick, then drop them there", o_live,
                      action=Action(f"dump events after tick :failover_tick of {old_name} to {path}, "
                                    "delete them and those ticks on " + old_name,
                                    lambda ctx: dump_lost_events(o.location, q, old_name,
                                                                 ctx.value("failover_tick"), path)),
                      irreversible=True, undo=f"the dumped events are in {path}"))
    steps.append(Step(f"{old_name} continues from the failover tick", o_live,
                      [Statement(SQL_SET_COMPLETED, (q, old.worker, ftick))]))
    steps.append(Step(f"replace the gravestone by {old_name}'s worker on {new.name}", n,
                      [Statement(SQL_UNREGISTER_SUBSCRIBER, (q, old_name)),
                       Statement(SQL_REGISTER_SUBSCRIBER, (q, old_name, old.worker, ftick),
                                 capture={"global_wm": "global_watermark"})]))
    steps.append(Step(f"take over the global watermark on {old_name}", o_live,
                      [Statement(SQL_SET_GLOBAL_WM, (q, Ref("global_wm")))]))
    for ref in [n] + [x for x in _alive(st, old_name, new.name)] + [o_live]:
        steps.append(Step(f"tag {old_name} alive on {ref.name}", ref,
                          [Statement(SQL_REGISTER_LOCATION, (q, old_name, None, False))]))
    steps += _pause_steps(q, o_live, old.worker, False, wait_timeout, ack_warn_only=True)
    plan = Plan(f"resurrect {old_name} as a branch of {new.name}", q, [o_live] + _alive(st, old_name), steps,
                notes=[f"lost events go to {path}"])

    def fallback(ctx: StepContext) -> Any:
        row = ctx.one(n, "SELECT last_tick FROM pgq.get_consumer_info(%s, %s)", (q, gravestone))
        return row["last_tick"] if row else None
    plan.fallbacks["failover_tick"] = fallback
    return plan


# -- tag dead / alive, drop ------------------------------------------------------------------------

def _verify_location(node: NodeRef, name: str, dead: bool | None) -> Check:
    """``name`` is in ``node``'s node map with that dead flag (``dead=None``: it is gone)."""
    def fn(ctx: StepContext) -> CheckResult:
        row = ctx.one(node, "SELECT dead FROM pgq_node.get_queue_locations(%s) WHERE node_name = %s",
                      (ctx.plan.queue, name))
        if dead is None:
            return CheckResult.problem(f"{node.name} still lists {name}") if row else CheckResult.good()
        if row is None:
            return CheckResult.problem(f"{node.name} does not know {name}")
        return CheckResult.good() if row["dead"] == dead else CheckResult.problem(
            f"{node.name} has dead = {row['dead']} for {name}")
    what = "is gone from" if dead is None else f"is tagged {'dead' if dead else 'alive'} on"
    return Check(f"{name} {what} {node.name}'s node map", fn)


def plan_tag(dsn: str, queue: str, node_name: str, dead: bool) -> Plan:
    st = load(dsn, queue)
    st.node(node_name)
    targets = _alive(st, node_name)
    if not targets:
        raise NotFoundError("no reachable member to record the flag on")
    word = "dead" if dead else "alive"
    steps = [Step(f"tag {node_name} {word} on {ref.name}", ref,
                  [Statement(SQL_REGISTER_LOCATION, (queue, node_name, None, dead))],
                  verify=_verify_location(ref, node_name, dead),
                  undo=f"tag it {'alive' if dead else 'dead'} again")
             for ref in sorted(targets, key=lambda r: st.nodes[r.name].node_type != "root")]
    return Plan(f"tag {node_name} {word}", queue, targets, steps,
                notes=["the flag only informs operators and admin plans; workers keep running"])


def _verify_dropped(node: NodeRef) -> Check:
    def fn(ctx: StepContext) -> CheckResult:
        row = ctx.one(node, "SELECT ret_code, node_type FROM pgq_node.get_node_info(%s)", (ctx.plan.queue,))
        if row and row["ret_code"] < 400:
            return CheckResult.problem(f"{node.name} is still a {row['node_type']} node")
        q = ctx.one(node, "SELECT 1 AS x FROM pgq.queue WHERE queue_name = %s", (ctx.plan.queue,))
        return CheckResult.problem("the queue is still there") if q else CheckResult.good()
    return Check(f"{node.name} has no node and no queue any more", fn)


def _verify_forgotten(node: NodeRef, name: str) -> Check:
    def fn(ctx: StepContext) -> CheckResult:
        loc = ctx.one(node, "SELECT 1 AS x FROM pgq_node.get_queue_locations(%s) WHERE node_name = %s",
                      (ctx.plan.queue, name))
        sub = ctx.one(node, "SELECT 1 AS x FROM pgq_node.get_subscriber_info(%s) WHERE node_name = %s",
                      (ctx.plan.queue, name))
        if loc or sub:
            return CheckResult.problem(f"{node.name} still has {name} as {'subscriber' if sub else 'location'}")
        return CheckResult.good()
    return Check(f"{node.name} has neither a location nor a subscription of {name}", fn)


def plan_drop_node(dsn: str, queue: str, node_name: str) -> Plan:
    st = load(dsn, queue)
    target = st.node(node_name)
    if target.subscribers:
        raise InputError("NAME", f"{node_name} still has subscribers ({', '.join(target.subscribers)}): "
                                 "move them first (change-provider)")
    if target.node_type == "root":
        raise InputError("NAME", f"{node_name} is the root: switch over to another node first")
    others = _alive(st, node_name)
    readers = [x.name for x in st.nodes.values() if x.provider == node_name and x.name != node_name]
    if readers:
        raise InputError("NAME", f"{', '.join(readers)} still read(s) from {node_name}: move them first "
                                 "(change-provider)")
    steps: list[Step] = []
    root = next((x for x in st.nodes.values() if x.node_type == "root" and x.name != node_name), None)
    if root is not None and root.reachable:
        steps.append(Step(f"unregister {node_name} on the root {root.name}", root.ref,
                          [Statement(SQL_UNREGISTER_LOCATION, (queue, node_name))], warn_only=True))
    if target.reachable:
        steps.append(Step(f"drop the node on {node_name} itself (queue and state)", target.ref,
                          [Statement(SQL_DROP_NODE, (queue, node_name))], irreversible=True,
                          verify=_verify_dropped(target.ref),
                          undo=f"none: create the node again (pgtt-tui node create-{target.node_type or 'leaf'})"))
    for ref in others:
        steps.append(Step(f"forget {node_name} on {ref.name}", ref, [Statement(SQL_DROP_NODE, (queue, node_name))],
                          verify=_verify_forgotten(ref, node_name)))
    return Plan(f"drop node {node_name}", queue, ([target.ref] if target.reachable else []) + others, steps,
                notes=[f"stop the worker of {node_name} first"])


# -- plain cascaded consumers ------------------------------------------------------------------------

def plan_register_consumer(dsn: str, queue: str, consumer: str, provider: str | None = None) -> Plan:
    """A plain cascaded consumer (``pgtt-tui worker --cascade-consumer NAME``) whose target is
    the node at ``dsn``: its pgq consumer on the provider (default: the node's provider, the
    node itself on the root) at the provider's newest tick, and its position on the target."""
    check_name("CONSUMER", consumer)
    st = load(dsn, queue)
    with connect(node_settings(dsn)) as conn:
        info = node_info(conn, queue)
    if info is None:
        raise NotFoundError(f"no node for queue {queue!r} at the target")
    target = st.node(info["node_name"])
    prov = st.node(provider or (target.name if target.node_type == "root" else target.provider))
    if prov.node_type == "leaf":
        raise InputError("--provider", f"{prov.name} is a leaf: it has no queue to read from")
    if consumer == target.worker:
        raise InputError("CONSUMER", f"{consumer} is the node's own worker")
    tick = Ref("start_tick")
    steps = [Step(f"register pgq consumer {consumer} on {prov.name}", prov.ref,
                  [Statement("SELECT pgq.register_consumer(%s, %s) AS registered", (queue, consumer)),
                   Statement("SELECT last_tick AS start_tick FROM pgq.get_consumer_info(%s, %s)", (queue, consumer),
                             capture={"start_tick": "start_tick"})],
                  checks=[check_node_type(prov.ref, "root", "branch")],
                  undo=f"on {prov.name}: SELECT pgq.unregister_consumer('{queue}', '{consumer}')"),
             Step(f"register {consumer} on the target {target.name}", target.ref,
                  [Statement("SELECT * FROM pgq_node.register_consumer(%s, %s, %s, %s)",
                             (queue, consumer, prov.name, tick))],
                  undo=f"on {target.name}: SELECT * FROM pgq_node.unregister_consumer('{queue}', '{consumer}')")]
    plan = Plan(f"register cascaded consumer {consumer} on {target.name} reading from {prov.name}", queue,
                [target.ref] + ([prov.ref] if prov.name != target.name else []), steps,
                notes=[f"then run it: pgtt-tui worker --dsn <{target.name}> --modules cascade --cascade-queue {queue} "
                       f"--cascade-consumer {consumer}"])

    def fallback(ctx: StepContext) -> Any:
        row = ctx.one(prov.ref, "SELECT last_tick FROM pgq.get_consumer_info(%s, %s)", (queue, consumer))
        return row["last_tick"] if row else None
    plan.fallbacks["start_tick"] = fallback
    return plan


def plan_unregister_consumer(dsn: str, queue: str, consumer: str) -> Plan:
    check_name("CONSUMER", consumer)
    st = load(dsn, queue)
    with connect(node_settings(dsn)) as conn:
        info = node_info(conn, queue)
        row = conn.execute("SELECT provider_node FROM pgq_node.get_consumer_state(%s, %s)",
                           (queue, consumer)).fetchone()
    if info is None or row is None or row[0] is None:
        raise NotFoundError(f"{consumer} is not a cascaded consumer of queue {queue!r} at the target")
    target = st.node(info["node_name"])
    prov = st.node(row[0])
    steps = [Step(f"unregister {consumer} on the target {target.name}", target.ref,
                  [Statement("SELECT * FROM pgq_node.unregister_consumer(%s, %s)", (queue, consumer))]),
             Step(f"unregister pgq consumer {consumer} on {prov.name}", prov.ref,
                  [Statement("SELECT pgq.unregister_consumer(%s, %s) AS unregistered", (queue, consumer))],
                  warn_only=True)]
    return Plan(f"unregister cascaded consumer {consumer} from {target.name}", queue,
                [target.ref] + ([prov.ref] if prov.name != target.name else []), steps,
                notes=["stop its worker first"])


#: plans a record can rebuild (their first argument is the contact DSN; they read the cascade
#: through :func:`load`)
REBUILDABLE: dict[str, Callable[..., Plan]] = {fn.__name__: fn for fn in (
    plan_pause, plan_change_provider, plan_takeover, plan_resurrect, plan_tag, plan_drop_node,
    plan_register_consumer, plan_unregister_consumer)}
