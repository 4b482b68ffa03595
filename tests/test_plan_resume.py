"""A half-run plan is never lost: the CLI's plan runner writes its record after every step,
so when the process dies between steps (SIGKILL, or SIGHUP when the SSH session drops) the
next `pgtt-tui node …` finds the unfinished plan, refuses to run over it, and `node resume`
goes on from the next step with the same steps (rebuilt from the recorded status, although
the cascade has changed since).  Two real servers, real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.cascade import ops
from engine.cascade.plan_store import PlanRecord, unfinished_plans
from engine.cascade.status import collect_status
from tests.test_cascade_helpers import QUEUE, REPO, WorkerProc, fast_ticks, prepare_db, run_plan, wait_until

pytestmark = pytest.mark.timeout(240)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pgtt_tui", *args], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=timeout)


def start_cli(log, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "pgtt_tui", *args], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=env, cwd=str(REPO))


def waiting_record(title_part: str) -> PlanRecord:
    """The record of a running plan whose next step is the catch-up wait."""
    def find():
        for record in unfinished_plans(QUEUE) + _held():
            if title_part in record.title and record.next_step < len(record.steps) \
                    and "catches up" in record.steps[record.next_step] and record.state == "running":
                return record
        return None
    return wait_until(find, timeout=60, what="the plan to reach the catch-up wait")


def _held() -> list[PlanRecord]:
    from engine.cascade.plan_store import state_dir  # noqa: PLC0415

    return [PlanRecord.load(p) for p in state_dir().glob("*.json")]


def kill_between_steps(sig: int, old: str, new: str, contact: str, worker_new: WorkerProc, tmp_path):
    worker_new.stop()  # the new root cannot catch up: the plan waits there
    proc = start_cli(tmp_path / f"cli-{sig}.log", "node", "takeover", old, "-q", QUEUE, "--node", new,
                     "--dsn", contact, "--wait-timeout", "90")
    record = waiting_record(f"{new} takes over")
    assert record.held_elsewhere(), "the walking process holds its record"
    time.sleep(1.5)  # some polls of the wait: a log file gets one line per change, not one per poll
    proc.send_signal(sig)
    proc.wait(20)
    assert proc.returncode != 0
    printed = (tmp_path / f"cli-{sig}.log").read_text()
    assert "\r" not in printed
    waits = [line for line in printed.splitlines() if line.strip().startswith("waiting:")]
    assert 1 <= len(waits) <= 3, printed

    # the record survived: unfinished, nobody holds it, journal and captured tick on disk
    found = {r.id: r for r in unfinished_plans(QUEUE)}
    assert record.id in found
    saved = found[record.id]
    assert saved.done and "last_tick" in saved.vars
    assert any("demote" in e["statement"] or "pgq_node" in e["statement"] for e in saved.journal)
    assert "password" not in json.dumps(saved.as_dict())
    listed = json.loads(cli("node", "plans", "--json").stdout)
    assert [p["id"] for p in listed] == [record.id]

    # a new plan on the same queue is refused (exit 2), naming the three ways on
    again = cli("node", "takeover", old, "-q", QUEUE, "--node", new, "--dsn", contact)
    assert again.returncode == 2, again.stderr
    assert f"node resume {record.id}" in again.stderr and f"node forget {record.id}" in again.stderr

    shown = cli("node", "plans", "--show", record.id)
    assert shown.returncode == 0 and "[NEXT]" in shown.stdout and "catches up" in shown.stdout

    worker_new.start()
    resumed = cli("node", "resume", record.id, "--dsn", contact)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"step {saved.next_step + 1}" in resumed.stdout
    assert "step 1:" not in resumed.stdout.lower().replace("== step 1", "")  # earlier steps do not run again
    assert PlanRecord.get(record.id).state == "done"
    assert unfinished_plans(QUEUE) == []


def test_cli_plan_survives_sigkill_and_sighup_and_resumes(make_servers, tmp_path):
    sa, sb = make_servers(2)
    a, b = prepare_db(sa), prepare_db(sb)
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    fast_ticks(a)
    workers = {"A": WorkerProc(a, tmp_path / "wA.log"), "B": WorkerProc(b, tmp_path / "wB.log")}
    for w in workers.values():
        w.start()
    try:
        kill_between_steps(signal.SIGKILL, "A", "B", a, workers["B"], tmp_path)
        st = collect_status(a, QUEUE)
        assert st.root == "B" and st.nodes["A"].node_type == "branch"
        fast_ticks(b)
        kill_between_steps(signal.SIGHUP, "B", "A", b, workers["A"], tmp_path)
        st = collect_status(b, QUEUE)
        assert st.root == "A" and st.nodes["B"].node_type == "branch"
    finally:
        for w in workers.values():
            w.stop()


def test_forget_leaves_the_plan_and_dry_run_writes_nothing(make_servers, tmp_path):
    sa, sb = make_servers(2)
    a, b = prepare_db(sa), prepare_db(sb)
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    dry = cli("node", "takeover", "A", "-q", QUEUE, "--node", "B", "--dsn", a, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert _held() == []
    # no workers: B never catches up, the wait times out and the plan fails half-way
    failed = cli("node", "takeover", "A", "-q", QUEUE, "--node", "B", "--dsn", a, "--wait-timeout", "1")
    assert failed.returncode != 0
    (record,) = unfinished_plans(QUEUE)
    assert record.state == "failed" and record.done and "timed out" in record.error
    left = cli("node", "forget", record.id)
    assert left.returncode == 0, left.stderr
    assert unfinished_plans(QUEUE) == [] and PlanRecord.get(record.id).state == "left"
    bad = cli("node", "resume", "../etc")
    assert bad.returncode == 2 and "PLAN" in bad.stderr


def test_preview_fills_captured_value_placeholders(make_servers):
    sa, sb = make_servers(2)
    a, b = prepare_db(sa), prepare_db(sb)
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    out = cli("node", "takeover", "A", "-q", QUEUE, "--node", "B", "--dsn", a, "--dry-run")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for line in text.splitlines():
        if line.strip().startswith(("check:", "wait:", "verify:")):
            assert ":last_tick" not in line, line
    assert "the last tick step" in text
    plan = ops.plan_takeover(a, QUEUE, "A", "B")
    catch_up = next(s for s in plan.steps if "catches up" in s.title)
    assert plan.fill(catch_up.wait.description, {"last_tick": 77}).endswith("tick 77")


def test_node_status_without_queue_uses_the_only_cascaded_queue(make_servers):
    (sa,) = make_servers(1)
    a = prepare_db(sa)
    none = cli("node", "status", "--dsn", a)
    assert none.returncode == 2 and none.stderr.startswith("pgtt-tui: error: --queue:"), none.stderr
    assert "Missing option" not in none.stderr
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    one = cli("node", "status", "--dsn", a)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith(f"queue {QUEUE}\n") and "A (root" in one.stdout
    run_plan(ops.plan_create_root("other", "A2", a))
    two = cli("node", "status", "--dsn", a)
    assert two.returncode == 2 and f"{QUEUE}, other" in two.stderr


def test_help_lists_every_summary_in_full():
    out = cli("--help").stdout
    listing = out.split("Commands:")[1]
    assert "..." not in listing and "…" not in listing
    assert "for this database." in listing  # worker's whole summary, wrapped rather than cut
    node = cli("node", "--help").stdout.split("Commands:")[1]
    assert "..." not in node and "most advanced node" in node


def test_a_record_read_before_another_process_walked_the_plan_is_not_resumed_or_left_stale():
    """A console offers an unfinished plan (its record read then); meanwhile `node resume`
    elsewhere walks the plan to its end.  "continue" must not run the done steps again from
    the stale record, and "leave" must not overwrite the finished record with the stale one."""
    from engine.cascade.plan import NodeRef, Plan, Step
    from engine.cascade.plan_store import DONE, LEFT, STOPPED
    from engine.errors import InputError

    node = NodeRef("n1", "dbname=x")
    plan = Plan("three steps", "qstale", [node], [Step(f"step {i}", node) for i in range(1, 4)])
    record = PlanRecord.start(plan)
    record.next_step, record.done, record.state = 1, [0], STOPPED
    record.save()
    record.release()  # its process ended after step 1
    offered = unfinished_plans("qstale")[0]  # the console reads it and offers it
    assert offered.id == record.id and offered.next_step == 1
    walker = PlanRecord.get(record.id)  # `node resume` in another process walks it to its end
    assert walker.acquire()
    walker.next_step, walker.done, walker.state = 3, [0, 1, 2], DONE
    walker.journal = [{"time": "2030-01-01T00:00:00+00:00", "node": "n1", "statement": "SELECT 2",
                       "result": "ok", "ok": True}]
    walker.save()
    walker.release()
    with pytest.raises(InputError, match="changed since"):
        offered.resume_runner(plan)
    assert not offered.held_elsewhere() and offered._lock_fd is None
    offered.leave()
    on_disk = PlanRecord.get(record.id)
    assert on_disk.state == DONE and on_disk.next_step == 3 and len(on_disk.journal) == 1
    # a record nobody changed meanwhile is resumed (and left) as before
    again = PlanRecord.start(plan)
    again.next_step, again.done, again.state = 1, [0], STOPPED
    again.save()
    again.release()
    stale_free = unfinished_plans("qstale")[0]
    runner = stale_free.resume_runner(plan)
    assert runner.next_step == 1
    stale_free.leave()
    assert PlanRecord.get(again.id).state == LEFT
