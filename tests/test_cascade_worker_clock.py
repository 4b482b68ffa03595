"""The cascaded worker takes its watermark timing from ``ctx.clock``: with a FakeClock the
global watermark (root) and the local watermark publication (branch) happen exactly when the
fake time passes the period, without waiting.  (The idle pause between polls stays real
time: see the worker's module docstring.)  Two databases on the test server are the nodes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from engine.cascade import ops
from engine.cascade.worker import CascadedWorker
from engine.clock import FakeClock
from engine.db import ConnSettings
from tests.test_cascade_helpers import q, run_plan

Q = "wq"


def global_wm_events(dsn: str) -> int:
    pfx = q(dsn, "SELECT queue_data_pfx FROM pgq.queue WHERE queue_name = %s", (Q,))[0][0]
    return q(dsn, f"SELECT count(*) FROM {pfx} WHERE ev_type = 'pgq.global-watermark'")[0][0]


async def test_watermark_periods_follow_the_worker_clock(make_db):
    a, b = make_db(("pgq_node",)), make_db(("pgq_node",))
    run_plan(ops.plan_create_root(Q, "A", a))
    run_plan(ops.plan_create_branch(Q, "B", b, a))
    clock = FakeClock()

    root = CascadedWorker(Q, global_wm_period=300, wm_publish_period=300)
    root.clock = clock
    await root.connect_target(ConnSettings(dsn=a))
    try:
        await root.step()
        assert root.global_wm_publications == 1 and global_wm_events(a) == 1  # never published: now
        await root.step()
        clock.advance(299)
        await root.step()
        assert root.global_wm_publications == 1 and global_wm_events(a) == 1
        clock.advance(1)
        await root.step()
        assert root.global_wm_publications == 2 and global_wm_events(a) == 2
    finally:
        await root.close()

    q(a, "SELECT pgq.force_tick(%s)", (Q,))
    q(a, "SELECT pgq.ticker(%s)", (Q,))
    branch = CascadedWorker(Q, wm_publish_period=300)
    branch.clock = clock
    await branch.connect_target(ConnSettings(dsn=b))
    try:
        assert await branch.step() is True  # one batch copied
        assert branch.last_batch_at == clock.now()
        assert branch.wm_publications == 1
        assert await branch.step() is False  # idle: not due yet
        clock.advance(200)
        await branch.step()
        assert branch.wm_publications == 1
        clock.advance(100)
        await branch.step()
        assert branch.wm_publications == 2
        wm = q(a, "SELECT node_watermark FROM pgq_node.get_subscriber_info(%s) WHERE node_name = 'B'", (Q,))
        assert wm[0][0] is not None
    finally:
        await branch.close()

    # run() takes the context's clock
    worker = CascadedWorker(Q, loop_delay=0.02)
    ctx = SimpleNamespace(settings=ConnSettings(dsn=b), clock=clock, stopping=asyncio.Event())
    task = asyncio.create_task(worker.run(ctx))
    await asyncio.sleep(0.3)
    ctx.stopping.set()
    await asyncio.wait_for(task, 10)
    assert worker.clock is clock and worker.wm_publications >= 1
