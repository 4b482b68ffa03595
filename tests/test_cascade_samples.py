"""The cascade worker samples its node's lag behind the root into the node's own database
(pgtt.cascade_sample, issue 18): at most every ``sample_period`` on the worker's clock (also
while paused), pruned after ``sample_keep``; engine.trends.cascade_lag reads them back.
Two or three databases on the test server are the nodes (as test_cascade_worker_clock)."""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg

from engine.views import trends
from engine.cascade import ops
from engine.cascade.worker import CascadedWorker
from engine.clock import FakeClock
from engine.db import ConnSettings
from tests.test_cascade_helpers import q, run_plan

Q = "sq"


def samples(dsn: str) -> list[tuple]:
    return q(dsn, "SELECT node_name, tick_id, lag_s FROM pgtt.cascade_sample ORDER BY sampled_at")


async def test_nodes_sample_their_lag_at_the_period_and_prune_old_samples(make_db):
    a, b, c = make_db(("pgq_node",)), make_db(("pgq_node",)), make_db(("pgq_node",))
    run_plan(ops.plan_create_root(Q, "A", a))
    run_plan(ops.plan_create_branch(Q, "B", b, a))
    run_plan(ops.plan_create_leaf(Q, "C", c, b))
    clock = FakeClock()
    q(b, "INSERT INTO pgtt.cascade_sample (queue_name, node_name, sampled_at, lag_s) "
         "VALUES (%s, 'B', now() - '25 hours'::interval, 1)", (Q,))
    workers = {}
    for name, dsn in (("A", a), ("B", b), ("C", c)):
        w = CascadedWorker(Q, sample_period=10)
        w.clock = clock
        await w.connect_target(ConnSettings(dsn=dsn))
        workers[name] = w
    try:
        await workers["A"].step()
        assert [s[0] for s in samples(a)] == ["A"]
        await workers["A"].step()
        clock.advance(9)
        await workers["A"].step()
        assert len(samples(a)) == 1  # within the period: no second sample
        for _ in range(3):  # the root makes ticks; B and C copy them
            q(a, "SELECT pgq.force_tick(%s)", (Q,))
            q(a, "SELECT pgq.ticker(%s)", (Q,))
            while await workers["B"].step():
                pass
            while await workers["C"].step():
                pass
        top = q(a, "SELECT last_tick_id FROM pgq.get_queue_info(%s)", (Q,))[0][0]
        clock.advance(10)
        for name in ("A", "B", "C"):
            await workers[name].step()
        assert len(samples(a)) == 2 and samples(a)[-1][1] == top and len(samples(b)) == 2
        # B's 25-hour-old sample was pruned when B sampled; B and C caught up with the root
        assert samples(b)[-1][:2] == ("B", top)
        assert all(s[2] is not None and s[2] >= 0 for s in samples(b))
        assert q(b, "SELECT count(*) FROM pgtt.cascade_sample WHERE sampled_at < now() - '1 day'::interval")[0][0] == 0
        assert samples(c)[-1][0] == "C" and samples(c)[-1][1] == top and samples(c)[-1][2] is not None
        # a paused node still samples (its lag grows while it waits)
        q(b, "SELECT * FROM pgq_node.set_consumer_paused(%s, %s, true)", (Q, workers["B"].state["worker_name"]))
        clock.advance(10)
        before = len(samples(b))
        await workers["B"].step()
        assert workers["B"]._status == "paused" and len(samples(b)) == before + 1
    finally:
        for w in workers.values():
            await w.close()
    now = datetime.now(timezone.utc)
    with psycopg.connect(b) as conn:
        read = trends.cascade_lag(conn, Q, now)
    assert read["stored"] and set(read["series"]) == {"B"}
    assert any(x["lag"] is not None for x in read["series"]["B"])
