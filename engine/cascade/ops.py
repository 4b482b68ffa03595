"""Cascade admin operations, each built as a :class:`~engine.cascade.plan.Plan`.

Every builder reads the current topology (read-only) and returns a plan; nothing changes
until a :class:`~engine.cascade.plan.PlanRunner` runs it.  The step order follows the
pgq cascade admin procedures (reference/pgq.md §b.5):

* ``plan_create_root`` / ``plan_create_branch`` / ``plan_create_leaf``
* ``plan_pause`` / ``plan_resume`` (set the flag, wait until the worker acknowledged)
* ``plan_change_provider``
* ``plan_takeover``: switchover from a live root (demote 1, 2, catch up, promote, demote 3)
  or, with ``dead_root=True``, failover: tag dead, catch up from the most advanced node,
  promote, gravestone, move the dead root's subscribers
* ``plan_resurrect``: dump what the dead root had that the cascade lost, rejoin as branch
* ``plan_tag_dead`` / ``plan_tag_alive``, ``plan_drop_node``

Worker names default to ``<node>_worker``.  Waits take ``wait_timeout`` seconds.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.cascade.plan import (Action, Check, CheckResult, NodeRef, Plan, Ref, Statement, Step, StepContext,
                                 Wait)
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
        return CheckResult.problem(f"at tick {have}, waiting for {want}")
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


def _subscribe_steps(queue: str, provider: NodeRef, sub: NodeRef, worker: str, tick: Ref | None,
                     capture_wm: str | None = None) -> list[Step]:
    capture = {capture_wm: "global_watermark"} if capture_wm else {}
    return [Step(f"register {sub.name} as subscriber on {provider.name}", provider,
                 [Statement(SQL_REGISTER_LOCATION, (queue, sub.name, sub.location, False)),
                  Statement(SQL_REGISTER_SUBSCRIBER, (queue, sub.name, worker, tick), capture=capture)],
                 checks=[check_node_type(provider, "root", "branch")] + ([check_has_tick(provider, tick)]
                                                                          if tick is not None else []),
                 undo=f"on {provider.name}: SELECT * FROM pgq_node.unregister_subscriber('{queue}', '{sub.name}')")]


def _move_steps(queue: str, node: NodeRef, worker: str, new_provider: NodeRef, old_provider: NodeRef | None,
                timeout: float, tag: str) -> list[Step]:
    """change-provider of one node: pause, subscribe at its completed tick, switch, resume, unsubscribe."""
    completed = Ref(f"completed_{tag}")
    steps = _pause_steps(queue, node, worker, True, timeout, capture_completed=completed.name)
    steps += _subscribe_steps(queue, new_provider, node, worker, completed)
    steps.append(Step(f"switch {node.name} to provider {new_provider.name}", node,
                      [Statement(SQL_CHANGE_PROVIDER, (queue, worker, new_provider.name))],
                      undo=(f"on {node.name}: change_consumer_provider back to "
                            f"{old_provider.name if old_provider else 'the old provider'}")))
    steps += _pause_steps(queue, node, worker, False, timeout)
    if old_provider is not None and not old_provider.dead:
        steps.append(Step(f"unregister {node.name} from its old provider {old_provider.name}", old_provider,
                          [Statement(SQL_UNREGISTER_SUBSCRIBER, (queue, node.name))], warn_only=True))
    return steps


# -- topology helpers -----------------------------------------------------------------------

def load(dsn: str, queue: str) -> CascadeStatus:
    check_location("--dsn", dsn)
    return collect_status(dsn, queue)


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
    st = load(dsn, queue)
    old = st.node(old_name)
    new = st.node(new_name)
    if old_name == new_name:
        raise InputError("--node", "the new node must differ from the old one")
    if new.node_type != "branch" and not (new.node_type is None and not new.reachable):
        if new.node_type != "branch":
            raise InputError("--node", f"{new_name} is {new.node_type or 'unknown'}: only a branch can take over")
    if not new.reachable:
        raise InputError("--node", f"{new_name} is unreachable: {new.error}")
    if dead_root:
        return _plan_failover(st, old, new, wait_timeout)
    if not old.reachable:
        raise InputError("OLD", f"{old_name} is unreachable ({old.error}); if it is gone, use --dead-root")
    if old.node_type != "root":
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
    """NEW takes OLD's place (both branches): NEW reads from OLD's provider, OLD's subscribers
    and OLD itself read from NEW."""
    q = st.queue
    steps: list[Step] = []
    if new.provider == old.name:
        steps += _move_steps(q, new.ref, new.worker, st.node(old.provider).ref, old.ref, timeout, "new")
    for i, sub in enumerate(n for n in st.nodes.values() if n.provider == old.name and n.name != new.name):
        steps += _move_steps(q, sub.ref, sub.worker, new.ref, old.ref, timeout, f"sub{i}")
    steps += _move_steps(q, old.ref, old.worker, new.ref, st.node(old.provider).ref, timeout, "old")
    return Plan(f"takeover: {new.name} takes the place of branch {old.name}", q, st.refs(), steps)


def _plan_failover(st: CascadeStatus, old, new, timeout: float) -> Plan:
    q = st.queue
    alive = _alive(st, old.name)
    n = new.ref
    steps: list[Step] = []
    # 1. tag the old root dead everywhere we can reach (the new root first)
    for ref in sorted(alive, key=lambda r: r.name != new.name):
        steps.append(Step(f"tag {old.name} dead on {ref.name}", ref,
                          [Statement(SQL_REGISTER_LOCATION, (q, old.name, None, True))],
                          undo=f"on {ref.name}: SELECT * FROM pgq_node.register_location('{q}', '{old.name}', "
                               f"NULL, false)"))
    # 2. catch up from the most advanced direct subscriber of the dead root
    subs = [x for x in st.nodes.values() if x.provider == old.name and x.reachable and x.name != new.name]
    ahead = [x for x in subs if x.node_type == "branch" and (x.last_tick or 0) > (new.last_tick or 0)]
    leaves_ahead = [x.name for x in subs if x.node_type == "leaf" and (x.last_tick or 0) >
                    max([new.last_tick or 0] + [a.last_tick or 0 for a in ahead])]
    if leaves_ahead:
        raise InputError("--node", f"leaf node(s) {', '.join(leaves_ahead)} are ahead of every branch: "
                                   "no branch can serve them; promote a branch that is at least as far")
    if ahead:
        best = max(ahead, key=lambda x: x.last_tick or 0)
        steps += _move_steps(q, n, new.worker, best.ref, None, timeout, "new")
        wait = completed_at_least(n, best.last_tick or 0)
        wait.timeout = timeout
        steps.append(Step(f"{new.name} catches up from {best.name} (the most advanced node)", n, wait=wait))
    # 3. promote, gravestone
    steps += _pause_steps(q, n, new.worker, True, timeout)
    steps.append(Step(f"promote {new.name} to root", n,
                      [Statement(SQL_PROMOTE, (q,)),
                       Statement(SQL_QUEUE_TOP, (q,), capture={"failover_tick": "last_tick"})],
                      checks=[check_node_type(n, "branch")], verify=_verify_type(n, "root"), irreversible=True,
                      undo="none: the old root is dead; once it is back, pgtt-tui node resurrect it"))
    steps.append(Step(f"gravestone: remember where {old.name} was cut off", n,
                      [Statement(SQL_REGISTER_SUBSCRIBER, (q, old.name, f"{old.name}.gravestone",
                                                           Ref("failover_tick")))]))
    if new.provider and new.provider != old.name and new.provider in st.nodes and not ahead:
        steps.append(Step(f"unregister {new.name} from its old provider {new.provider}",
                          st.nodes[new.provider].ref, [Statement(SQL_UNREGISTER_SUBSCRIBER, (q, new.name))],
                          warn_only=True))
    if ahead:
        steps.append(Step(f"unregister {new.name} from {ahead[0].name}", max(ahead, key=lambda x: x.last_tick).ref,
                          [Statement(SQL_UNREGISTER_SUBSCRIBER, (q, new.name))], warn_only=True))
    steps += _pause_steps(q, n, new.worker, False, timeout)
    # 4. move every other subscriber of the dead root to the new root
    for i, sub in enumerate(subs):
        steps += _move_steps(q, sub.ref, sub.worker, n, old.ref, timeout, f"sub{i}")
    plan = Plan(f"failover: {new.name} becomes root, {old.name} is dead", q,
                [old.ref.__class__(old.name, old.location, True)] + alive, steps,
                notes=[f"{old.name} is never contacted", "events the dead root had not passed on are lost "
                       f"until `pgtt-tui node resurrect {old.name}` dumps them"])

    def fallback(ctx: StepContext) -> Any:
        row = ctx.one(n, "SELECT last_tick FROM pgq.get_consumer_info(%s, %s)", (q, f"{old.name}.gravestone"))
        if row:
            return row["last_tick"]
        row = ctx.one(n, SQL_QUEUE_TOP, (q,))
        return row["last_tick"] if row else None
    plan.fallbacks["failover_tick"] = fallback
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

def plan_tag(dsn: str, queue: str, node_name: str, dead: bool) -> Plan:
    st = load(dsn, queue)
    st.node(node_name)
    targets = _alive(st, node_name)
    if not targets:
        raise NotFoundError("no reachable member to record the flag on")
    word = "dead" if dead else "alive"
    steps = [Step(f"tag {node_name} {word} on {ref.name}", ref,
                  [Statement(SQL_REGISTER_LOCATION, (queue, node_name, None, dead))],
                  undo=f"tag it {'alive' if dead else 'dead'} again")
             for ref in sorted(targets, key=lambda r: st.nodes[r.name].node_type != "root")]
    return Plan(f"tag {node_name} {word}", queue, targets, steps)


def plan_drop_node(dsn: str, queue: str, node_name: str) -> Plan:
    st = load(dsn, queue)
    target = st.node(node_name)
    if target.subscribers:
        raise InputError("NAME", f"{node_name} still has subscribers ({', '.join(target.subscribers)}): "
                                 "move them first (change-provider)")
    others = _alive(st, node_name)
    steps: list[Step] = []
    root = next((x for x in st.nodes.values() if x.node_type == "root" and x.name != node_name), None)
    if root is not None and root.reachable:
        steps.append(Step(f"unregister {node_name} on the root {root.name}", root.ref,
                          [Statement(SQL_UNREGISTER_LOCATION, (queue, node_name))], warn_only=True))
    if target.reachable:
        steps.append(Step(f"drop the node on {node_name} itself (queue and state)", target.ref,
                          [Statement(SQL_DROP_NODE, (queue, node_name))], irreversible=True))
    for ref in others:
        steps.append(Step(f"forget {node_name} on {ref.name}", ref, [Statement(SQL_DROP_NODE, (queue, node_name))]))
    return Plan(f"drop node {node_name}", queue, ([target.ref] if target.reachable else []) + others, steps,
                notes=[f"stop the worker of {node_name} first"])
