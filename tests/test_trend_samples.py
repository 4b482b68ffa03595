"""Queue and cascade samples for the charts (issue 18): the ticker writes them at a bounded
rate and prunes old ones; engine.trends reads them bucketed and incrementally."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from engine.views import trends
from engine.db import ConnSettings
from engine.pgq import api
from engine.pgq.consumer import Consumer
from engine.pgq.ticker import DatabaseTicker, TickerOptions, prune_samples, sample_queues

pytestmark = pytest.mark.timeout(120)
T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def db(make_db):
    return make_db(("pgq",))


@pytest.fixture
def c(db):
    with psycopg.connect(db, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def ac(db):
    conn = await psycopg.AsyncConnection.connect(db, autocommit=True)
    yield conn
    await conn.close()


def counts(c) -> dict[tuple[str, str], int]:
    return {(q, k): n for q, k, n in c.execute(
        "SELECT queue_name, consumer_name, count(*) FROM pgtt.queue_sample GROUP BY 1, 2").fetchall()}


async def test_sample_rate_is_bounded_per_queue_and_old_samples_are_pruned(c, ac):
    api.create_queue(c, "orders")
    api.create_queue(c, "audit")
    Consumer("orders", "billing").register(c)
    assert await sample_queues(ac, period=10, at=T0) == 3  # two queues and one consumer
    assert await sample_queues(ac, period=10, at=T0 + timedelta(seconds=4)) == 0  # within the period
    assert await sample_queues(ac, period=10, at=T0 + timedelta(seconds=11)) == 3
    assert counts(c) == {("orders", ""): 2, ("orders", "billing"): 2, ("audit", ""): 2}
    lag = c.execute("SELECT lag_s FROM pgtt.queue_sample WHERE consumer_name = 'billing' LIMIT 1").fetchone()[0]
    assert lag is not None
    # 24 h later the first round is gone, the second stays until its own 24 h are up
    assert await prune_samples(ac, keep=86400, at=T0 + timedelta(hours=24, seconds=5)) == 3
    assert counts(c) == {("orders", ""): 1, ("orders", "billing"): 1, ("audit", ""): 1}


async def test_ticker_service_samples_at_its_period_and_prunes_in_maintenance(db, c):
    api.create_queue(c, "q")
    Consumer("q", "c1").register(c)
    options = TickerOptions(ticker_period=0.05, maint_period=0.5, retry_period=5, sample_period=0.3, sample_keep=3600)
    # a sample two hours old: the maintenance prunes it
    c.execute("INSERT INTO pgtt.queue_sample (queue_name, sampled_at, ev_per_sec) VALUES ('q', now() - '2h'::interval, 1)")
    svc = DatabaseTicker(ConnSettings(dsn=db), options)

    class Ctx:
        stopping = asyncio.Event()

    start = time.monotonic()
    task = asyncio.create_task(svc.run(Ctx))
    for _ in range(200):
        await asyncio.sleep(0.05)
        if svc.samples_pruned >= 1 and time.monotonic() - start > 1.2:
            break
    Ctx.stopping.set()
    await asyncio.wait_for(task, 10)
    elapsed = time.monotonic() - start
    assert svc.sampling and svc.samples_pruned >= 1
    rows = counts(c)
    # at most one round per period (the database keeps them at least 0.8 periods apart)
    assert 2 <= rows[("q", "")] <= elapsed / (0.3 * 0.8) + 1
    assert rows[("q", "c1")] == rows[("q", "")]
    assert c.execute("SELECT count(*) FROM pgtt.queue_sample WHERE sampled_at < now() - '1h'::interval"
                     ).fetchone()[0] == 0


async def test_ticker_without_samples_option_writes_none(db, c):
    api.create_queue(c, "q")
    svc = DatabaseTicker(ConnSettings(dsn=db), TickerOptions(ticker_period=0.05, samples=False, sample_period=0.1))

    class Ctx:
        stopping = asyncio.Event()

    task = asyncio.create_task(svc.run(Ctx))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if svc.ticker_calls >= 5:
            break
    Ctx.stopping.set()
    await asyncio.wait_for(task, 10)
    assert not svc.sampling and counts(c) == {}


def insert_samples(c, rows) -> None:
    with c.cursor() as cur:
        cur.executemany("INSERT INTO pgtt.queue_sample (queue_name, consumer_name, sampled_at, ev_per_sec, lag_s, "
                        "pending) VALUES (%s, %s, %s, %s, %s, %s)", rows)


def test_queue_trends_buckets_incremental_and_trend(c):
    now = T0
    rows = []
    for i in range(60):  # ten minutes, every 10 s: the queue at 5 ev/s, one consumer falling behind
        at = now - timedelta(seconds=600 - i * 10)
        rows.append(("orders", "", at, 5.0, 1.0, None))
        rows.append(("orders", "billing", at, None, float(i), i * 10))
        rows.append(("orders", "mailer", at, None, 2.0, 0))
    insert_samples(c, rows)
    data = trends.queue_trends(c, now)
    assert data["stored"]
    series = data["series"]
    assert set(series) == {("orders", ""), ("orders", "billing"), ("orders", "mailer")}
    q = series[("orders", "")]
    assert len(q) == 60  # 30 minutes of 30 s buckets
    assert q[0]["ev_per_sec"] is None and q[-2]["ev_per_sec"] == 5.0
    billing = [b["lag"] for b in series[("orders", "billing")]]
    assert trends.trend(billing) == "up" and trends.trend([b["lag"] for b in series[("orders", "mailer")]]) == "flat"
    assert trends.trend([9.0, 5.0, 1.0]) == "down" and trends.trend([None, 3.0]) is None
    # incremental: from the newest bucket on; merged, the older buckets stay as they were
    insert_samples(c, [("orders", "billing", now, None, 99.0, 0)])
    newer = trends.queue_trends(c, now, since=q[-1]["at"])
    assert all(len(v) == 1 for v in newer["series"].values())
    merged = trends.merge_series(series, newer["series"], keep=60)
    assert merged[("orders", "billing")][-1]["lag"] == 99.0
    assert merged[("orders", "billing")][:-1] == series[("orders", "billing")][:-1]


def test_queue_trends_without_the_table_or_the_grant(empty_dsn, c):
    with psycopg.connect(empty_dsn, autocommit=True) as bare:
        assert trends.queue_trends(bare, T0) == {**trends.queue_trends(bare, T0), "stored": False, "series": {}}
    c.execute("CREATE ROLE sample_nobody LOGIN")
    try:
        c.execute("SET ROLE sample_nobody")
        assert not trends.queue_trends(c, T0)["stored"]
    finally:
        c.execute("RESET ROLE")
        c.execute("DROP ROLE sample_nobody")
