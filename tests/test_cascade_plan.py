"""The plan model and runner (what the CLI and the console use), and the node CLI.
Two databases on the test server stand in for two nodes."""

from __future__ import annotations

import json

import psycopg
import pytest
from typer.testing import CliRunner

from engine.cascade import ops
from engine.cascade.plan import (Check, CheckResult, EventKind, NodeRef, Plan, PlanRunner, Ref, Statement, Step,
                                 Wait)
from engine.cascade.status import collect_status
from engine.errors import InputError
from pgtt_tui.cli import app

QUEUE = "pq"


@pytest.fixture
def two(make_db):
    return make_db(("pgq_node",)), make_db(("pgq_node",))


def test_statement_rendering_and_refs():
    st = Statement("SELECT * FROM pgq_node.register_subscriber(%s, %s, %s, %s)", ("q", "it's", None, Ref("tick")))
    assert st.render() == "SELECT * FROM pgq_node.register_subscriber('q', 'it''s', NULL, :tick)"
    assert st.render({"tick": 42}).endswith("NULL, 42)")
    assert Statement("SELECT %s, %s", (True, 1.5)).render() == "SELECT true, 1.5"
    assert "password=***" in Statement("SELECT %s", ("host=x password=secret",)).render()


def test_create_plans_dry_run_and_run(two):
    a, b = two
    plan = ops.plan_create_root(QUEUE, "n1", a)
    text = plan.render()
    assert "Step 1: register the location of n1" in text
    assert "SELECT * FROM pgq_node.create_node('pq', 'root', 'n1', 'n1_worker', NULL, NULL, NULL);" in text
    assert "check: n1 has no node for the queue yet" in text
    json.dumps(plan.as_dict())
    events = []
    with PlanRunner(plan, on_event=events.append) as runner:
        outcome = runner.run()
        assert outcome.ok and runner.next_step == 2
        kinds = [e.kind for e in events]
        assert kinds[0] == EventKind.PLAN_STARTED and kinds[-1] == EventKind.PLAN_DONE
        assert kinds.count(EventKind.STEP_DONE) == 2 and EventKind.VERIFIED in kinds
        assert [e.kind for e in events if e.step == 0][:2] == [EventKind.STEP_STARTED, EventKind.CHECK_OK]
        assert len(runner.journal.entries) == 2 and all(e.ok for e in runner.journal.entries)
    # the branch plan captures the global watermark from the provider and uses it on the node
    plan = ops.plan_create_branch(QUEUE, "n2", b, a)
    assert ":global_wm" in plan.render()
    outcome, events = _run(plan)
    assert outcome.ok
    created = [e for e in events if e.kind == EventKind.STATEMENT and "create_node" in e.message]
    assert created and "'branch', 'n2', 'n2_worker', 'n1', 1, NULL" in created[0].message
    st = collect_status(b, QUEUE)
    assert st.root == "n1" and st.nodes["n2"].provider == "n1" and st.tree_lines()[0].startswith("n1 (root")


def _run(plan, start=None):
    events = []
    with PlanRunner(plan, on_event=events.append) as runner:
        outcome = runner.run(start)
    return outcome, events


def test_failure_report_resume_and_stop(two, tmp_path):
    a, _ = two
    _run(ops.plan_create_root(QUEUE, "n1", a))
    plan = ops.plan_create_root(QUEUE, "n1", a)
    outcome, events = _run(plan)
    assert not outcome.ok and outcome.next_step == 0
    rep = outcome.report
    assert "pre-check failed" in rep.error and "already has a root node" in rep.error
    assert rep.node_states["n1"].startswith("root")
    assert "resume from step 1" in rep.resume_hint
    assert events[-2].kind == EventKind.STEP_FAILED and "state of the nodes now" in events[-2].message

    # a statement whose ret_code >= 400 fails the step; the journal records it
    node = NodeRef("n1", a)
    bad = Plan("bad", QUEUE, [node], [
        Step("ok step", node, [Statement("SELECT 1 AS x", capture={"x": "x"})], undo="nothing"),
        Step("fails", node, [Statement("SELECT * FROM pgq_node.unregister_location(%s, %s)", (QUEUE, "n1"))]),
        Step("never", node, [Statement("SELECT %s", (Ref("x"),))])])
    with PlanRunner(bad) as runner:
        out = runner.run()
        assert not out.ok and out.next_step == 1
        assert "403 Cannot drop node's own location" in out.report.error
        assert "step 1: nothing" in out.report.back_hint
        path = runner.journal.save(tmp_path / "j.json")
        saved = json.loads(path.read_text())
        assert [e["ok"] for e in saved["entries"]] == [True, False]
        assert runner.vars == {"x": 1}
        # run a single step by index
        assert runner.run_step(2).ok

    # stop between steps, resume later from next_step with the captured values
    with PlanRunner(bad) as runner:
        gen = runner.iter_run()
        for ev in gen:
            if ev.kind == EventKind.STEP_DONE:
                runner.request_stop()
        assert runner.next_step == 1
        assert runner.run(start=2).ok

    # waits poll until ok or time out
    calls = []

    def cond(ctx):
        calls.append(1)
        return CheckResult(len(calls) >= 3, f"call {len(calls)}")
    waiting = Plan("w", QUEUE, [node], [Step("wait", node, wait=Wait("three polls", node, cond, interval=0.01))])
    outcome, events = _run(waiting)
    assert outcome.ok and [e.kind for e in events].count(EventKind.WAITING) == 2

    # a wait that says how far behind it is shows progress: behind now against the most seen
    behind = iter([4, 5, 2])
    shrinking = Plan("w", QUEUE, [node], [Step("wait", node, wait=Wait("catch up", node, lambda ctx: (
        lambda b: CheckResult(b is None, "", behind=b))(next(behind, None)), interval=0.01))])
    outcome, events = _run(shrinking)
    progress = [(e.data["behind"], e.data["most_behind"]) for e in events if e.kind == EventKind.WAITING]
    assert outcome.ok and progress == [(4, 4), (5, 5), (2, 5)]
    from pgtt_tui.cli.node import progress_bar
    assert progress_bar({"behind": 2, "most_behind": 5}, width=10) == " [######----] 2 behind (of 5)"
    assert progress_bar({"behind": None}) == ""
    never = Plan("w", QUEUE, [node], [Step("wait", node, wait=Wait("never", node,
                                                                   lambda ctx: CheckResult(False, "no"),
                                                                   timeout=0.05, interval=0.01))])
    outcome, _ = _run(never)
    assert not outcome.ok and "timed out" in outcome.report.error
    # warn_only steps go on
    warn = Plan("w", QUEUE, [node], [Step("may fail", node, checks=[Check("no", lambda ctx: "broken")],
                                          warn_only=True), Step("after", node, [Statement("SELECT 1")])])
    outcome, events = _run(warn)
    assert outcome.ok and outcome.steps[0].warning
    assert EventKind.STEP_WARNING in [e.kind for e in events]


def test_pause_plan_and_bad_input(two):
    a, b = two
    _run(ops.plan_create_root(QUEUE, "n1", a))
    _run(ops.plan_create_branch(QUEUE, "n2", b, a))
    plan = ops.plan_pause(a, QUEUE, "n2", True, wait_timeout=0.2)
    outcome, _ = _run(plan)
    assert outcome.ok and outcome.steps[1].warning  # no worker runs: the ack wait only warns
    assert collect_status(a, QUEUE).nodes["n2"].paused is True
    with pytest.raises(InputError, match="NAME"):
        ops.plan_create_root(QUEUE, "bad name!", a)
    with pytest.raises(InputError, match="LOCATION"):
        ops.plan_create_root(QUEUE, "n9", " ")
    with pytest.raises(InputError, match="own provider"):
        ops.plan_change_provider(a, QUEUE, "n2", "n2")
    with pytest.raises(InputError, match="root"):
        ops.plan_change_provider(a, QUEUE, "n1", "n2")
    with pytest.raises(InputError, match="only a branch"):
        ops.plan_takeover(a, QUEUE, "n2", "n1")
    with pytest.raises(InputError, match="subscribers"):
        ops.plan_drop_node(a, QUEUE, "n1")


def test_cli_dry_run_status_and_run(two, tmp_path):
    a, b = two
    runner = CliRunner()
    res = runner.invoke(app, ["node", "create-root", "n1", a, "--queue", QUEUE, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "Step 2: create root node n1" in res.output and "pgq_node.create_node(" in res.output
    res = runner.invoke(app, ["node", "create-root", "n1", a, "--queue", QUEUE, "--journal",
                              str(tmp_path / "j.json")])
    assert res.exit_code == 0, res.output
    assert "done: create root n1" in res.output and (tmp_path / "j.json").exists()
    res = runner.invoke(app, ["node", "create-branch", "n2", b, "--queue", QUEUE, "--provider", a, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["ok"] is True
    res = runner.invoke(app, ["node", "status", "--queue", QUEUE, "--dsn", b, "--json"])
    data = json.loads(res.output)
    assert data["root"] == "n1" and {n["name"] for n in data["nodes"]} == {"n1", "n2"}
    res = runner.invoke(app, ["node", "takeover", "n1", "--node", "n2", "--queue", QUEUE, "--dsn", a, "--dry-run",
                              "--json"])
    steps = json.loads(res.output)["steps"]
    titles = [s["title"] for s in steps]
    assert titles.index("demote step 1 on n1: disable inserts") < titles.index("promote n2 to root") < \
        titles.index("demote step 3 on n1: become a branch of n2")
    assert [s["irreversible"] for s in steps if s["title"] == "promote n2 to root"] == [True]
    res = runner.invoke(app, ["node", "failover", "n1", "--node", "n2", "--queue", QUEUE, "--dsn", b, "--dry-run"])
    assert res.exit_code == 0 and "gravestone" in res.output and "tag n1 dead on n2" in res.output


def test_plain_consumer_registration_cli(two):
    a, b = two
    _run(ops.plan_create_root(QUEUE, "n1", a))
    _run(ops.plan_create_leaf(QUEUE, "n2", b, a))
    runner = CliRunner()
    res = runner.invoke(app, ["node", "register-consumer", "c1", "--queue", QUEUE, "--dsn", b, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "pgq.register_consumer('pq', 'c1')" in res.output and "on node n1" in res.output
    res = runner.invoke(app, ["node", "register-consumer", "c1", "--queue", QUEUE, "--dsn", b, "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["ok"] is True, res.output
    with psycopg.connect(b, autocommit=True) as conn:
        row = conn.execute("SELECT ret_code, provider_node, completed_tick FROM pgq_node.get_consumer_state(%s, 'c1')",
                           (QUEUE,)).fetchone()
    assert row[0] == 100 and row[1] == "n1" and row[2] is not None
    with pytest.raises(InputError, match="own worker"):
        ops.plan_register_consumer(b, QUEUE, "n2_worker")
    res = runner.invoke(app, ["node", "unregister-consumer", "c1", "--queue", QUEUE, "--dsn", b])
    assert res.exit_code == 0, res.output
    with psycopg.connect(a, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pgq.get_consumer_info(%s) WHERE consumer_name = 'c1'",
                            (QUEUE,)).fetchone()[0] == 0
