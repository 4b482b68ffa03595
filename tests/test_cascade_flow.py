"""The cascade on three separate servers, with a producer inserting at the root throughout:
build root → branch → leaf, switchover and back, change provider, failover after SIGKILL of
the root server, resurrect the old root.  At the leaf every committed event arrives exactly
once (by ev_id), and what the dead root lost is exactly what resurrect dumped."""

from __future__ import annotations

import json
import time

import pytest

from engine.cascade import ops
from engine.cascade.status import collect_status
from tests.test_cascade_helpers import (QUEUE, Producer, WorkerProc, completed, fast_ticks, final_tick,
                                        prepare_db, q, root_top, run_plan, sink_rows, wait_until)

pytestmark = pytest.mark.timeout(240)


def build_cascade(servers, tmp_path, real_extensions=False):
    a, b, c = (prepare_db(s, real_extensions=real_extensions) for s in servers)
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    run_plan(ops.plan_create_leaf(QUEUE, "C", c, b))
    fast_ticks(a)
    fast_ticks(b)
    workers = {"A": WorkerProc(a, tmp_path / "wA.log"), "B": WorkerProc(b, tmp_path / "wB.log"),
               "C": WorkerProc(c, tmp_path / "wC.log", sink=True)}
    for w in workers.values():
        w.start()
    return a, b, c, workers


def wait_leaf_has(c, producer, upto=None, timeout=60):
    want = set(producer.acked) if upto is None else {n for n in producer.acked if n <= upto}

    def ok():
        got = {int(d) for _, d in sink_rows(c)} if _sink_exists(c) else set()
        return want <= got
    wait_until(ok, timeout=timeout, what="the leaf to receive every acknowledged event")


def _sink_exists(dsn):
    return q(dsn, "SELECT to_regclass('cascade_sink') IS NOT NULL")[0][0]


def check_exactly_once(c, producer, dumped=frozenset()):
    rows = sink_rows(c)
    ids = [r[0] for r in rows]
    payloads = [int(r[1]) for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ev_id at the leaf"
    assert len(payloads) == len(set(payloads)), "duplicate event at the leaf"
    got = set(payloads)
    acked = set(producer.acked)
    assert not (got & set(dumped)), "an event both reached the leaf and was dumped"
    missing = acked - got - set(dumped)
    assert not missing, f"lost acknowledged events: {sorted(missing)[:20]}"
    unexpected = (got | set(dumped)) - acked - producer.uncertain
    assert not unexpected, f"events nobody committed: {sorted(unexpected)[:20]}"
    return got


T0 = [0.0]


def mark(what):
    print(f"{time.monotonic() - T0[0]:7.2f}s {what}", flush=True)


def test_cascade_switchover_change_provider_failover_resurrect(make_servers, tmp_path):
    scenario(make_servers(3, synchronous_commit="on"), tmp_path)


def scenario(servers, tmp_path, real_extensions=False):
    """The whole walk; also run on the real pgq / pgq_node extensions (test_cascade_real_ext)."""
    T0[0] = time.monotonic()
    a, b, c, workers = build_cascade(servers, tmp_path, real_extensions)
    producer = Producer(a)
    producer.start()
    try:
        wait_until(lambda: len(producer.acked) > 50 and _sink_exists(c) and len(sink_rows(c)) > 20, timeout=60,
                   what="events flowing to the leaf")
        st = collect_status(a, QUEUE)
        assert st.root == "A" and st.nodes["B"].provider == "A" and st.nodes["C"].provider == "B"

        # switchover A -> B, the producer follows the root
        mark('switchover A -> B, the producer follows the root')
        t0 = time.monotonic()
        plan = ops.plan_takeover(a, QUEUE, "A", "B")
        run_plan(plan)
        producer.root_dsn = b
        assert time.monotonic() - t0 < 60
        st = collect_status(a, QUEUE)
        assert st.root == "B" and st.nodes["A"].node_type == "branch" and st.nodes["A"].provider == "B"
        n_mark = max(producer.acked)
        wait_until(lambda: max(producer.acked) > n_mark + 30, what="inserts at the new root")

        # and back B -> A
        mark('and back B -> A')
        run_plan(ops.plan_takeover(b, QUEUE, "B", "A"))
        producer.root_dsn = a
        st = collect_status(a, QUEUE)
        assert st.root == "A" and st.nodes["B"].provider == "A"
        n_mark = max(producer.acked)
        wait_until(lambda: max(producer.acked) > n_mark + 30, what="inserts at A again")

        # change provider C: B -> A -> B
        mark('change provider C: B -> A -> B')
        run_plan(ops.plan_change_provider(a, QUEUE, "C", "A"))
        assert collect_status(a, QUEUE).nodes["C"].provider == "A"
        n_mark = max(producer.acked)
        wait_leaf_has(c, producer, upto=n_mark)
        run_plan(ops.plan_change_provider(a, QUEUE, "C", "B"))
        assert collect_status(a, QUEUE).nodes["C"].provider == "B"
        n_mark = max(producer.acked)
        wait_leaf_has(c, producer, upto=n_mark)

        # failover: SIGKILL the root server (and its worker host)
        mark('failover: SIGKILL the root server (and its worker host)')
        time.sleep(0.5)
        workers["A"].kill()
        servers[0].kill()
        plan = ops.plan_takeover(b, QUEUE, "A", "B", dead_root=True, wait_timeout=30)
        assert any(s.irreversible for s in plan.steps)
        run_plan(plan)
        producer.root_dsn = b
        st = collect_status(b, QUEUE)
        assert st.root == "B" and st.nodes["A"].dead
        n_mark = max(producer.acked)
        wait_until(lambda: max(producer.acked) > n_mark + 30, what="inserts at the failover root")

        # resurrect the old root
        mark('resurrect the old root')
        servers[0].start()
        workers["A"].start()  # the old root's host is back, with its worker
        dump = tmp_path / "lost.json"
        plan = ops.plan_resurrect(a, QUEUE, "A", dump)
        run_plan(plan)
        st = collect_status(b, QUEUE)
        assert st.nodes["A"].node_type == "branch" and st.nodes["A"].provider == "B" and not st.nodes["A"].dead
        time.sleep(1.0)
    finally:
        producer.stop()
    try:
        mark('final')
        top = final_tick(b)
        wait_until(lambda: (completed(c) or 0) >= top, timeout=60, what="the leaf to reach the final tick")
        wait_until(lambda: (completed(a) or 0) >= top, timeout=60, what="the resurrected node to catch up")
        mark('checks')
        data = json.loads(dump.read_text())
        dumped = {int(e["ev_data"]) for e in data["events"] if e["ev_type"] == "data"}
        got = check_exactly_once(c, producer, dumped)
        lost = set(producer.acked) - got
        assert lost == dumped & set(producer.acked)
        # the resurrected node has the same ticks as the new root after the failover tick
        ftick = data["from_tick"]
        ticks_sql = ("SELECT t.tick_id FROM pgq.tick t JOIN pgq.queue qq ON qq.queue_id = t.tick_queue "
                     "WHERE qq.queue_name = %s AND t.tick_id > %s AND t.tick_id <= %s ORDER BY 1")
        assert q(a, ticks_sql, (QUEUE, ftick, top)) == q(b, ticks_sql, (QUEUE, ftick, top))
    finally:
        for w in workers.values():
            w.stop()
