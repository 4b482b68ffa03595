"""SIGKILL of a worker process and of a branch server in the middle of batches: nothing lost,
nothing duplicated, the branch keeps the root's tick ids."""

from __future__ import annotations

import random
import time

import pytest

from engine.cascade import ops
from tests.test_cascade_helpers import (QUEUE, Producer, WorkerProc, completed, fast_ticks, final_tick,
                                        prepare_db, q, run_plan, sink_rows, wait_until)

pytestmark = pytest.mark.timeout(180)

TICKS_SQL = ("SELECT t.tick_id, t.tick_event_seq FROM pgq.tick t JOIN pgq.queue qq ON qq.queue_id = t.tick_queue "
             "WHERE qq.queue_name = %s AND t.tick_id > %s AND t.tick_id <= %s ORDER BY 1")


def test_kill_worker_and_branch_server_mid_batch(make_servers, tmp_path):
    servers = make_servers(3, synchronous_commit="on")
    a, b, c = (prepare_db(s) for s in servers)
    run_plan(ops.plan_create_root(QUEUE, "A", a))
    run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
    run_plan(ops.plan_create_leaf(QUEUE, "C", c, b))
    fast_ticks(a)
    start_tick = q(b, "SELECT completed_tick FROM pgq_node.get_worker_state(%s)", (QUEUE,))[0][0]
    workers = {"A": WorkerProc(a, tmp_path / "wA.log"), "B": WorkerProc(b, tmp_path / "wB.log"),
               "C": WorkerProc(c, tmp_path / "wC.log", sink=True)}
    for w in workers.values():
        w.start()
    producer = Producer(a, rate=400)
    producer.start()
    rng = random.Random(5)
    try:
        wait_until(lambda: (completed(c) or 0) > start_tick + 5, timeout=60, what="the leaf to move")
        # the branch worker: SIGKILL at random moments, restart
        for _ in range(4):
            time.sleep(rng.uniform(0.2, 0.8))
            workers["B"].kill()
            time.sleep(0.2)
            workers["B"].start()
        # the leaf worker too
        for _ in range(2):
            time.sleep(rng.uniform(0.2, 0.6))
            workers["C"].kill()
            workers["C"].start()
        # the branch server itself (its worker and the leaf's worker reconnect)
        time.sleep(0.5)
        servers[1].kill()
        time.sleep(0.5)
        servers[1].start()
        time.sleep(1.5)
        servers[1].kill()
        servers[1].start()
        time.sleep(1.0)
        for w in workers.values():
            w.ensure_running()
    finally:
        producer.stop()
    try:
        top = final_tick(a)
        try:
            wait_until(lambda: (completed(c) or 0) >= top, timeout=60, what="the leaf to reach the final tick")
        except AssertionError:
            from engine.cascade.status import collect_status  # noqa: PLC0415
            print("\n".join(collect_status(a, QUEUE).tree_lines()))
            print({k: w.proc.poll() for k, w in workers.items()})
            for name in "ABC":
                print(name, (tmp_path / f"w{name}.log").read_text()[-3000:])
            raise
        rows = sink_rows(c)
        ids = [r[0] for r in rows]
        payloads = {int(r[1]) for r in rows}
        assert len(ids) == len(set(ids)), "duplicate events at the leaf"
        assert set(producer.acked) <= payloads, "acknowledged events lost"
        assert payloads <= set(producer.acked) | producer.uncertain
        # ev_id kept end to end
        assert {int(d): i for i, d in rows} == {n: producer.acked[n] for n in payloads if n in producer.acked}
        # the branch has exactly the root's ticks
        assert q(b, TICKS_SQL, (QUEUE, start_tick, top)) == q(a, TICKS_SQL, (QUEUE, start_tick, top))
    finally:
        for w in workers.values():
            w.stop()
