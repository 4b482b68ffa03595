"""``pgtt-tui node …``: cascade (pgq_node) status and admin operations as step plans.

Every changing command builds a plan (engine.cascade.ops), prints it with ``--dry-run``,
otherwise runs it step by step, printing each step, its SQL, server messages and results.
On failure the command stops and says what state every node is in and how to go on
(``--from-step N``) or back.  Node locations are libpq connection strings.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from engine.cascade import ops
from engine.cascade.plan import EventKind, Plan, PlanError, PlanEvent, PlanRunner
from engine.cascade.plan_store import PlanRecord, Recipe, build_plan, rebuild_plan, unfinished_plans
from engine.cascade.status import collect_status
from engine.db import guard_write
from engine.errors import InputError
from pgtt_tui.cli.common import DsnOpt, SafeStdout, JsonOpt, emit, say, settings_from, to_json, want_json
from pgtt_tui.cli.progress import behind_bar

app = typer.Typer(help="Cascaded queues (pgq_node): status, create nodes, pause, change provider, switchover, "
                       "failover, resurrect.", no_args_is_help=True)

QueueOpt = Annotated[str, typer.Option("--queue", "-q", help="cascaded queue name")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="print the plan (steps, checks, SQL, node) and stop")]
FromStepOpt = Annotated[int, typer.Option("--from-step", min=1, help="resume a stopped plan at this step (1-based)")]
JournalOpt = Annotated[Path | None, typer.Option("--journal", help="write the journal (time, node, SQL, result) "
                                                                     "to this JSON file")]
WorkerOpt = Annotated[str | None, typer.Option("--worker", help="worker (consumer) name; default <node>_worker")]
TimeoutOpt = Annotated[float, typer.Option("--wait-timeout", min=1.0, help="seconds to wait for catch-up / acks")]


def _dsn(ctx: typer.Context, dsn: str | None) -> str:
    return settings_from(ctx, dsn).dsn


_last_wait: list[str] = [""]


def progress_bar(data: dict, width: int = 20) -> str:
    """A wait's bar (a terminal only: a pipe gets one line per change)."""
    return behind_bar(data.get("behind"), data.get("most_behind"), width)


def _print_event(ev: PlanEvent) -> None:
    out = SafeStdout()
    if ev.kind == EventKind.WAITING and not out.isatty():
        # a log file or a pipe gets one line per change of what is awaited, not a \r per poll
        detail = str(ev.data.get("detail"))
        if detail != _last_wait[0]:
            _last_wait[0] = detail
            out.write(f"   waiting: {detail}\n")
            out.flush()
        return
    _last_wait[0] = ""
    if ev.kind == EventKind.STEP_STARTED:
        out.write(f"\n== step {ev.step + 1}: {ev.message}  [node {ev.node}]\n")
    elif ev.kind == EventKind.CHECK_OK:
        out.write(f"   check ok: {ev.message}\n")
    elif ev.kind == EventKind.CHECK_FAILED:
        out.write(f"   CHECK FAILED: {ev.message}: {ev.data.get('problem')}\n")
    elif ev.kind == EventKind.WAITING:
        out.write(f"   waiting: {ev.data.get('detail')}{progress_bar(ev.data)} ({ev.data.get('elapsed', 0):.0f}s)\x1b[K\r")
    elif ev.kind == EventKind.WAIT_DONE:
        out.write(f"   done waiting: {ev.message} ({ev.data.get('detail')})\n")
    elif ev.kind == EventKind.STATEMENT:
        out.write(f"   sql: {ev.message};\n")
    elif ev.kind == EventKind.ACTION:
        out.write(f"   run: {ev.message}\n")
    elif ev.kind == EventKind.NOTICE:
        out.write(f"   {ev.data.get('severity', 'NOTICE')}: {ev.message}\n")
    elif ev.kind == EventKind.RESULT:
        out.write(f"   -> {ev.message}\n")
    elif ev.kind == EventKind.VERIFIED:
        out.write(f"   verified: {ev.message}\n")
    elif ev.kind == EventKind.STEP_WARNING:
        out.write(f"   WARNING: {ev.message}\n")
    elif ev.kind == EventKind.STEP_FAILED:
        out.write(f"\nFAILED: {ev.message}\n")
    elif ev.kind == EventKind.STOPPED:
        out.write(f"\n{ev.message}\n")
    out.flush()


def _refuse_if_unfinished(queue: str, from_step: int) -> None:
    """A half-run plan on this queue is resumed or left on purpose, never run over by accident.
    ``--from-step`` is a resume by hand: it supersedes the queue's recorded plans."""
    found = unfinished_plans(queue)
    if not found:
        return
    if from_step > 1:
        for record in found:
            record.leave()
        return
    record = found[0]
    raise InputError("plan", f"an unfinished plan on queue {queue}: {record.summary()} — show it with "
                             f"`pgtt-tui node plans --show {record.id}`, go on with `pgtt-tui node resume "
                             f"{record.id}`, or leave it with `pgtt-tui node forget {record.id}`")


def execute(ctx: typer.Context, plan: Plan, *, dry_run: bool, as_json: bool, from_step: int = 1,
            journal: Path | None = None, runner: PlanRunner | None = None) -> None:
    as_json = want_json(ctx, as_json)
    if dry_run:
        if as_json:
            sys.stdout.write(to_json(plan.as_dict()) + "\n")
        else:
            say(plan.render())
        return
    guard_write(_ro(ctx), plan.title)
    if from_step > len(plan.steps) and plan.steps:
        raise InputError("--from-step", f"the plan has only {len(plan.steps)} steps")
    if runner is None:
        _refuse_if_unfinished(plan.queue, from_step)
        runner = PlanRunner(plan, record=PlanRecord.start(plan) if plan.steps else None)
        start = from_step - 1
    else:
        start = runner.next_step
    runner.on_event = None if as_json else _print_event
    events: list[dict] = []
    with runner:
        outcome = None
        gen = runner.iter_run(start=start)
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                outcome = stop.value
                break
            if as_json:
                events.append(ev.as_dict())
        if journal is not None:
            runner.journal.save(journal)
        if as_json:
            sys.stdout.write(to_json({"plan": plan.as_dict(runner.vars), "ok": outcome.ok, "events": events,
                                      "journal": runner.journal.as_dict()["entries"],
                                      "next_step": outcome.next_step + 1}) + "\n")
        elif outcome.ok:
            say(f"\ndone: {plan.title}")
        if runner.record is not None:
            runner.record.release()
        if not outcome.ok:
            msg = outcome.report.message() if outcome.report else "stopped"
            raise PlanError(msg.splitlines()[0] if not as_json else msg, outcome.report)


def _ro(ctx: typer.Context):
    from pgtt_tui.cli.common import global_options  # noqa: PLC0415
    from engine.db import ConnSettings  # noqa: PLC0415

    return ConnSettings(read_only=global_options(ctx).read_only)


def _only_cascaded_queue(dsn: str) -> str:
    """--queue left out: the database's one cascaded queue, else a message that lists them."""
    from engine.views import queues as queue_views  # noqa: PLC0415
    from engine.db import ConnSettings, connect  # noqa: PLC0415

    with connect(ConnSettings(dsn=dsn, application_name="pgtt-tui node")) as conn:
        queues = queue_views.cascade_queues(conn)
    if queues is None:
        raise InputError("--queue", "not given, and pgq_node is not installed in this database")
    if len(queues) == 1:
        return queues[0]
    if not queues:
        raise InputError("--queue", "not given, and this database takes part in no cascaded queue")
    raise InputError("--queue", f"not given; this database takes part in {len(queues)} cascaded queues: "
                                f"{', '.join(queues)} (name one with -q)")


@app.command("status")
def status(ctx: typer.Context,
           queue: Annotated[str | None, typer.Option("--queue", "-q", help="cascaded queue name (default: the "
                                                     "database's only one)")] = None,
           dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """The cascade as a tree, from any member's node map."""
    contact = _dsn(ctx, dsn)
    queue = queue or _only_cascaded_queue(contact)
    st = collect_status(contact, queue)
    if want_json(ctx, as_json):
        emit(st.as_dict(), True)
        return
    say(f"queue {queue}\n" + "\n".join(st.tree_lines()) + "\n")
    emit([{"node": n.name, "type": n.node_type, "provider": n.provider, "paused": n.paused,
           "last_tick": n.last_tick, "behind": n.lag_ticks, "dead": n.dead, "error": n.error or n.cur_error}
          for n in st.nodes.values()], False)


@app.command("create-root")
def create_root(ctx: typer.Context, name: Annotated[str, typer.Argument(help="node name")],
                location: Annotated[str, typer.Argument(help="connection string of the node")],
                queue: QueueOpt, worker: WorkerOpt = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
                from_step: FromStepOpt = 1, journal: JournalOpt = None) -> None:
    """Make the database at LOCATION the root of a new cascaded queue."""
    execute(ctx, ops.plan_create_root(queue, name, location, worker), dry_run=dry_run, as_json=as_json,
            from_step=from_step, journal=journal)


def _create_sub(ctx, node_type, name, location, queue, provider, worker, merge, dry_run, as_json, from_step,
                journal) -> None:
    plan = ops.plan_create_branch(queue, name, location, provider, worker=worker, node_type=node_type, merge=merge)
    execute(ctx, plan, dry_run=dry_run, as_json=as_json, from_step=from_step, journal=journal)


ProviderOpt = Annotated[str, typer.Option("--provider", help="connection string of the provider node")]


@app.command("create-branch")
def create_branch(ctx: typer.Context, name: Annotated[str, typer.Argument(help="node name")],
                  location: Annotated[str, typer.Argument(help="connection string of the new node")],
                  queue: QueueOpt, provider: ProviderOpt, worker: WorkerOpt = None, dry_run: DryRunOpt = False,
                  as_json: JsonOpt = False, from_step: FromStepOpt = 1, journal: JournalOpt = None) -> None:
    """Add a branch (a node that carries the queue and can serve others)."""
    _create_sub(ctx, "branch", name, location, queue, provider, worker, None, dry_run, as_json, from_step, journal)


@app.command("create-leaf")
def create_leaf(ctx: typer.Context, name: Annotated[str, typer.Argument(help="node name")],
                location: Annotated[str, typer.Argument(help="connection string of the new node")],
                queue: QueueOpt, provider: ProviderOpt, worker: WorkerOpt = None,
                merge: Annotated[str | None, typer.Option("--merge", help="merge-leaf: local combined queue")] = None,
                dry_run: DryRunOpt = False, as_json: JsonOpt = False, from_step: FromStepOpt = 1,
                journal: JournalOpt = None) -> None:
    """Add a leaf (consumes the queue, serves nobody)."""
    _create_sub(ctx, "leaf", name, location, queue, provider, worker, merge, dry_run, as_json, from_step, journal)


NodeArg = Annotated[str, typer.Argument(help="node name")]


@app.command("pause")
def pause(ctx: typer.Context, node: NodeArg, queue: QueueOpt, dsn: DsnOpt = None,
          consumer: Annotated[str | None, typer.Option("--consumer", help="a plain cascaded consumer")] = None,
          wait_timeout: TimeoutOpt = 60.0, dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Pause a node's worker (it acknowledges within one loop)."""
    execute(ctx, build_plan(ops.plan_pause, _dsn(ctx, dsn), queue, node, True, consumer, wait_timeout), dry_run=dry_run,
            as_json=as_json)


@app.command("resume")
def resume(ctx: typer.Context, node: NodeArg, queue: QueueOpt, dsn: DsnOpt = None,
           consumer: Annotated[str | None, typer.Option("--consumer", help="a plain cascaded consumer")] = None,
           wait_timeout: TimeoutOpt = 60.0, dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Resume a paused worker."""
    execute(ctx, build_plan(ops.plan_pause, _dsn(ctx, dsn), queue, node, False, consumer, wait_timeout), dry_run=dry_run,
            as_json=as_json)


@app.command("change-provider")
def change_provider(ctx: typer.Context, node: NodeArg, queue: QueueOpt,
                    provider: Annotated[str, typer.Option("--provider", help="name of the new provider node")],
                    dsn: DsnOpt = None, wait_timeout: TimeoutOpt = 120.0, dry_run: DryRunOpt = False,
                    as_json: JsonOpt = False, from_step: FromStepOpt = 1, journal: JournalOpt = None) -> None:
    """Make NODE read from another provider, without loss or duplicates."""
    execute(ctx, build_plan(ops.plan_change_provider, _dsn(ctx, dsn), queue, node, provider, wait_timeout), dry_run=dry_run,
            as_json=as_json, from_step=from_step, journal=journal)


@app.command("takeover")
def takeover(ctx: typer.Context, old: Annotated[str, typer.Argument(help="node to take over from")],
             queue: QueueOpt, node: Annotated[str, typer.Option("--node", help="the node that takes over")],
             dsn: DsnOpt = None,
             dead_root: Annotated[bool, typer.Option("--dead-root", help="OLD is a dead root: failover")] = False,
             wait_timeout: TimeoutOpt = 120.0, dry_run: DryRunOpt = False, as_json: JsonOpt = False,
             from_step: FromStepOpt = 1, journal: JournalOpt = None) -> None:
    """NODE takes over from OLD: switchover (OLD is a live root), branch takeover (OLD is a live
    branch: NODE takes its place, OLD's subscribers and OLD move under NODE) or, with
    --dead-root, failover (catch up from the most advanced node, move OLD's subscribers, promote)."""
    execute(ctx, build_plan(ops.plan_takeover, _dsn(ctx, dsn), queue, old, node, dead_root=dead_root, wait_timeout=wait_timeout),
            dry_run=dry_run, as_json=as_json, from_step=from_step, journal=journal)


@app.command("failover")
def failover(ctx: typer.Context, old: Annotated[str, typer.Argument(help="the dead root")], queue: QueueOpt,
             node: Annotated[str, typer.Option("--node", help="the branch that becomes root")],
             dsn: DsnOpt = None, wait_timeout: TimeoutOpt = 120.0, dry_run: DryRunOpt = False,
             as_json: JsonOpt = False, from_step: FromStepOpt = 1, journal: JournalOpt = None) -> None:
    """Failover from a dead root (same as takeover --dead-root)."""
    execute(ctx, build_plan(ops.plan_takeover, _dsn(ctx, dsn), queue, old, node, dead_root=True, wait_timeout=wait_timeout),
            dry_run=dry_run, as_json=as_json, from_step=from_step, journal=journal)


@app.command("resurrect")
def resurrect(ctx: typer.Context, old: Annotated[str, typer.Argument(help="the old, dead root")], queue: QueueOpt,
              dsn: DsnOpt = None,
              dump_file: Annotated[Path, typer.Option("--dump-file", help="where the lost events go (JSON)")] =
              Path("resurrect-lost-events.json"),
              dry_run: DryRunOpt = False, as_json: JsonOpt = False, from_step: FromStepOpt = 1,
              journal: JournalOpt = None) -> None:
    """Bring a failed-over old root back as a branch; dump the events the cascade lost."""
    execute(ctx, build_plan(ops.plan_resurrect, _dsn(ctx, dsn), queue, old, dump_file), dry_run=dry_run, as_json=as_json,
            from_step=from_step, journal=journal)


@app.command("tag-dead")
def tag_dead(ctx: typer.Context, node: NodeArg, queue: QueueOpt, dsn: DsnOpt = None, dry_run: DryRunOpt = False,
             as_json: JsonOpt = False) -> None:
    """Mark NODE dead on every reachable member."""
    execute(ctx, build_plan(ops.plan_tag, _dsn(ctx, dsn), queue, node, True), dry_run=dry_run, as_json=as_json)


@app.command("tag-alive")
def tag_alive(ctx: typer.Context, node: NodeArg, queue: QueueOpt, dsn: DsnOpt = None, dry_run: DryRunOpt = False,
              as_json: JsonOpt = False) -> None:
    """Mark NODE alive again on every reachable member."""
    execute(ctx, build_plan(ops.plan_tag, _dsn(ctx, dsn), queue, node, False), dry_run=dry_run, as_json=as_json)


@app.command("drop")
def drop(ctx: typer.Context, node: NodeArg, queue: QueueOpt, dsn: DsnOpt = None, dry_run: DryRunOpt = False,
         as_json: JsonOpt = False) -> None:
    """Remove NODE from the cascade (it must have no subscribers)."""
    execute(ctx, build_plan(ops.plan_drop_node, _dsn(ctx, dsn), queue, node), dry_run=dry_run, as_json=as_json)


ConsumerArg = Annotated[str, typer.Argument(help="name of the plain cascaded consumer")]


@app.command("register-consumer")
def register_consumer(ctx: typer.Context, consumer: ConsumerArg, queue: QueueOpt, dsn: DsnOpt = None,
                      provider: Annotated[str | None, typer.Option(
                          "--provider", help="node to read from (default: the node's provider; itself on the root)")]
                      = None, dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Register a plain cascaded consumer whose target is the node at --dsn (then run it with
    `pgtt-tui worker --cascade-queue Q --cascade-consumer NAME`)."""
    execute(ctx, build_plan(ops.plan_register_consumer, _dsn(ctx, dsn), queue, consumer, provider), dry_run=dry_run,
            as_json=as_json)


@app.command("unregister-consumer")
def unregister_consumer(ctx: typer.Context, consumer: ConsumerArg, queue: QueueOpt, dsn: DsnOpt = None,
                        dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Remove a plain cascaded consumer from its target node and its provider."""
    execute(ctx, build_plan(ops.plan_unregister_consumer, _dsn(ctx, dsn), queue, consumer), dry_run=dry_run, as_json=as_json)


# -- half-run plans ----------------------------------------------------------------------------

PlanIdArg = Annotated[str, typer.Argument(help="plan record id (see `pgtt-tui node plans`)")]


@app.command("plans")
def plans(ctx: typer.Context, queue: Annotated[str | None, typer.Option("--queue", "-q", help="only this queue")]
          = None, show: Annotated[str | None, typer.Option("--show", help="print this plan's record in full")]
          = None, as_json: JsonOpt = False) -> None:
    """Unfinished plans (a walk stopped, failed or cut off half-way) that can be resumed or left."""
    as_json = want_json(ctx, as_json)
    if show is not None:
        record = PlanRecord.get(show)
        if as_json:
            emit(record.as_dict(), True)
            return
        sys.stdout.write(f"{record.id}  {record.summary()}\n\nsteps:\n")
        for i, title in enumerate(record.steps):
            mark = "done" if i in record.done else ("NEXT" if i == record.next_step else "todo")
            sys.stdout.write(f"  {i + 1:>2}. [{mark}] {title}\n")
        sys.stdout.write(f"\njournal:\n{record.journal_text()}\n")
        return
    found = unfinished_plans(queue)
    emit([{"id": r.id, "queue": r.queue, "plan": r.title, "state": r.state,
           "done": f"{len(r.done)}/{len(r.steps)}", "next_step": r.next_step + 1, "started": r.started_at,
           "pid": r.pid, "host": r.host} for r in found], as_json)


@app.command("resume")
def resume_plan(ctx: typer.Context, plan_id: PlanIdArg, dsn: DsnOpt = None, as_json: JsonOpt = False) -> None:
    """Go on with an unfinished plan from its next step (that step's pre-checks run first).
    The plan is rebuilt from the cascade status recorded when it was made, so its steps are
    the same ones; --dsn names a member to connect to (default: the one it was started with)."""
    record = PlanRecord.get(plan_id)
    if not record.unfinished:
        raise InputError("PLAN", f"plan {plan_id} is {record.state}: there is nothing to resume")
    if record.recipe is None:
        raise InputError("PLAN", f"plan {plan_id} cannot be rebuilt: run its command again with --from-step "
                                 f"{record.next_step + 1}")
    guard_write(_ro(ctx), record.title)
    contact = _dsn(ctx, dsn) if (dsn or "***" in record.recipe["contact"]) else None
    plan = rebuild_plan(Recipe(**record.recipe), contact)
    runner = record.resume_runner(plan)
    if not want_json(ctx, as_json):
        sys.stdout.write(f"resuming {record.id}: {record.summary()}\n")
    execute(ctx, plan, dry_run=False, as_json=as_json, runner=runner)


@app.command("forget")
def forget_plan(ctx: typer.Context, plan_id: PlanIdArg) -> None:
    """Leave an unfinished plan as it is: it is no longer offered (its record stays on disk)."""
    record = PlanRecord.get(plan_id)
    if record.held_elsewhere():
        raise InputError("PLAN", f"plan {plan_id} is being walked by pid {record.pid} on {record.host}")
    record.leave()
    sys.stdout.write(f"left: {record.summary()}\n")
