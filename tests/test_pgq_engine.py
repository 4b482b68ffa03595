"""engine.pgq: the ticker service (health of unreachable databases, maintenance), the
consumer helper (retries, crash re-delivery, same-transaction mode), the api wrappers
and the ``pgtt-tui queue`` / ``pgtt-tui ticker`` commands."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from engine.db import ConnSettings
from engine.embedded import free_port
from engine.errors import InputError, NotFoundError
from engine.pgq import api
from engine.pgq.consumer import Consumer
from engine.pgq.ticker import (DatabaseTicker, TickerOptions, build_services, maint_statement, maintain,
                               run_once, run_standalone, tickers_for)

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def db(make_db):
    return make_db(("pgq",))


@pytest.fixture
def c(db):
    with psycopg.connect(db, autocommit=True) as conn:
        yield conn


class Ctx:
    def __init__(self):
        self.stopping = asyncio.Event()


def force_tick(conn, queue="q"):
    conn.execute("SELECT pgq.force_tick(%s)", (queue,))
    return conn.execute("SELECT pgq.ticker(%s)", (queue,)).fetchone()[0]


# -- ticker ----------------------------------------------------------------------------------------

async def test_ticker_service_ticks_retries_and_maintains(db, c):
    api.create_queue(c, "q")
    consumer = Consumer("q", "c")
    consumer.register(c)
    c.execute("UPDATE pgq.queue SET queue_ticker_max_lag = '0', queue_rotation_period = '0'")
    api.insert_event(c, "q", "t", "d")
    svc = DatabaseTicker(ConnSettings(dsn=db), TickerOptions(ticker_period=0.05, maint_period=0.2, retry_period=0.1))
    ctx = Ctx()
    task = asyncio.create_task(svc.run(ctx))
    for _ in range(200):
        await asyncio.sleep(0.05)
        if svc.maint_runs >= 2 and svc.ticks >= 1:
            break
    health = svc.health()
    ctx.stopping.set()
    await asyncio.wait_for(task, 10)
    assert health["ok"], health
    assert svc.ticks >= 1 and svc.maint_runs >= 2
    # maintenance rotated the tables (rotation_period 0): step1 and step2 both ran
    assert c.execute("SELECT queue_switch_step2 IS NOT NULL FROM pgq.queue").fetchone()[0]
    names = {m.name for m in svc.metrics()}
    assert "pgtt_pgq_ticker_calls_total" in names and "pgtt_pgq_database_up" in names


async def test_unreachable_database_is_reported_not_retried_silently(db):
    dead = f"host=127.0.0.1 port={free_port()} dbname=nowhere user=postgres connect_timeout=2"
    live, gone = tickers_for(ConnSettings(dsn=db), [dead], TickerOptions(ticker_period=0.1))
    assert gone.database == "nowhere"
    code = await asyncio.wait_for(run_standalone([live, gone], fail_after=0.5), 30)
    assert code == 3
    health = gone.health()
    assert health["ok"] is False and "nowhere unreachable" in health["detail"]
    assert live.ticker_calls >= 1


async def test_database_without_pgq_is_idle_not_failing(empty_dsn):
    svc = DatabaseTicker(ConnSettings(dsn=empty_dsn), TickerOptions(ticker_period=0.1))
    ctx = Ctx()
    task = asyncio.create_task(svc.run(ctx))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if svc.pgq_present is False:
            break
    ctx.stopping.set()
    await asyncio.wait_for(task, 10)
    assert svc.health()["ok"] and "no pgq" in svc.health()["detail"]


async def test_run_once_and_maint_statements(db, c):
    api.create_queue(c, "q")
    c.execute("UPDATE pgq.queue SET queue_rotation_period = '0'")
    result = await run_once(ConnSettings(dsn=db))
    assert result["pgq"] is True and result["queues_ticked"] == 1
    assert [m["func_name"] for m in result["maintenance"]][:2] == ["pgq.maint_rotate_tables_step1",
                                                                   "pgq.maint_rotate_tables_step2"]
    assert maint_statement("vacuum", "pgq.tick").as_string(c) == 'VACUUM "pgq"."tick"'
    assert maint_statement("pgq.maint_rotate_tables_step2", None).as_string(c) == \
        'SELECT "pgq"."maint_rotate_tables_step2"()'
    assert maint_statement("x.y", "it's").as_string(c) == "SELECT \"x\".\"y\"('it''s')"
    with pytest.raises(InputError):
        maint_statement("drop table x; --", None)
    # extra maintenance functions repeat while they return non-zero
    c.execute("CREATE TABLE public.counter (n int); INSERT INTO public.counter VALUES (3)")
    c.execute("CREATE FUNCTION public.countdown(q text) RETURNS int LANGUAGE sql AS "
              "$$ UPDATE public.counter SET n = n - 1 RETURNING n $$")
    c.execute("UPDATE pgq.queue SET queue_extra_maint = '{public.countdown}'")
    aconn = await psycopg.AsyncConnection.connect(db, autocommit=True)
    try:
        ops = await maintain(aconn)
    finally:
        await aconn.close()
    assert ("public.countdown", "q", 3) in ops


def test_build_services_for_worker(db):
    from engine.worker import WorkerOptions

    opts = WorkerOptions(settings=ConnSettings(dsn=db), modules=["pgq"],
                         module_options={"pgq": {"databases": [db + " application_name=x"], "ticker_period": 0.5}})
    services = build_services(opts)
    assert len(services) == 2 and services[0].options.ticker_period == 0.5
    with pytest.raises(InputError):
        TickerOptions(ticker_period=0)


# -- consumer helper -------------------------------------------------------------------------------

def test_consumer_helper_retry_and_crash_redelivery(c):
    api.create_queue(c, "q")
    consumer = Consumer("q", "c")
    assert consumer.register(c) is True
    ids = [api.insert_event(c, "q", "t", f"d{i}") for i in range(3)]
    force_tick(c)

    def crash(batch):
        raise RuntimeError("consumer died")

    with pytest.raises(RuntimeError):
        consumer.process_one(c, crash)
    seen = []

    def handler(batch):
        for ev in batch.events:
            seen.append(ev.ev_id)
            if ev.ev_id == ids[1] and ev.ev_retry is None:
                ev.retry(0)

    batch = consumer.process_one(c, handler)  # the same batch again after the "crash"
    assert seen == ids and len(batch.retried) == 1
    assert consumer.process_one(c, handler) is None
    c.execute("SELECT pgq.maint_retry_events()")
    force_tick(c)
    batch = consumer.process_one(c, handler)
    assert [(e.ev_id, e.ev_retry) for e in batch.events] == [(ids[1], 1)]
    assert (consumer.batches, consumer.events, consumer.retries) == (2, 4, 1)
    assert consumer.unregister(c) is True


def test_consumer_same_tx_is_exactly_once(c):
    api.create_queue(c, "q")
    c.execute("CREATE TABLE public.sink (ev_id bigint PRIMARY KEY)")
    consumer = Consumer("q", "c")
    consumer.register(c)
    ids = [api.insert_event(c, "q", "t", str(i)) for i in range(4)]
    force_tick(c)

    def store(fail):
        def handler(batch):
            for ev in batch.events:
                c.execute("INSERT INTO public.sink VALUES (%s)", (ev.ev_id,))
            if fail:
                raise RuntimeError("boom after writing")
        return handler

    with pytest.raises(RuntimeError):
        consumer.process_one(c, store(True), same_tx=True)
    assert c.execute("SELECT count(*) FROM public.sink").fetchone()[0] == 0  # rolled back with the finish
    consumer.process_one(c, store(False), same_tx=True)
    assert [r[0] for r in c.execute("SELECT ev_id FROM public.sink ORDER BY 1")] == ids


async def test_async_consumer_loop(db, c):
    api.create_queue(c, "q")
    consumer = Consumer("q", "c", idle_sleep=0.05)
    consumer.register(c)
    ids = [api.insert_event(c, "q", "t", str(i)) for i in range(5)]
    force_tick(c)
    got = []
    stopping = asyncio.Event()

    async def handler(batch):
        got.extend(e.ev_id for e in batch.events)
        if len(got) >= len(ids):
            stopping.set()

    aconn = await psycopg.AsyncConnection.connect(db, autocommit=True)
    try:
        await asyncio.wait_for(consumer.arun(aconn, handler, stopping), 10)
    finally:
        await aconn.close()
    assert got == ids


# -- api ---------------------------------------------------------------------------------------------

def test_api_wrappers(c):
    assert api.implementation(c) == "pgtt"
    assert api.create_queue(c, "q") is True and api.create_queue(c, "q") is False
    with pytest.raises(InputError) as err:
        api.create_queue(c, " ")
    assert err.value.field == "queue"
    with pytest.raises(NotFoundError):
        api.queue_info(c, "nope")
    with pytest.raises(NotFoundError):
        api.insert_event(c, "nope", "t", "d")
    with pytest.raises(InputError):
        api.set_queue_config(c, "q", "disable_insert", "true")
    api.set_queue_config(c, "q", "ticker_max_count", "10")
    assert api.queue_info(c, "q").queue_ticker_max_count == 10
    assert api.register(c, "q", "c1") is True
    assert api.register(c, "q", "c1") is False
    assert [x.consumer_name for x in api.consumers(c)] == ["c1"]
    ids = [api.insert_event(c, "q", "t", f"d{i}", extra1="x") for i in range(7)]
    page = api.recent_events(c, "q", limit=3)
    assert [e.ev_id for e in page.events] == ids[::-1][:3]
    page2 = api.recent_events(c, "q", limit=3, before=page.next_cursor)
    assert [e.ev_id for e in page2.events] == ids[::-1][3:6]
    events, snap = api.events_since(c, "q", None)
    assert events == []
    new = api.insert_event(c, "q", "t", "later")
    events, snap = api.events_since(c, "q", snap)
    assert [e.ev_id for e in events] == [new]
    events, _ = api.events_since(c, "q", snap)
    assert events == []
    with pytest.raises(NotFoundError):
        api.unregister(c, "q", "nobody")
    assert api.unregister(c, "q", "c1") is True
    api.drop_queue(c, "q")
    assert api.list_queues(c) == []


# -- CLI ---------------------------------------------------------------------------------------------

def cli(*args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run([sys.executable, "-m", "pgtt_tui", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def cli_json(*args: str):
    res = cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_cli_queue_commands(db):
    assert cli_json("queue", "create", "cq", "--dsn", db) == {"queue": "cq", "created": True}
    assert cli_json("queue", "register", "cq", "worker1", "--dsn", db)["registered"] is True
    ev = cli_json("queue", "insert", "cq", "t", "hello", "--extra1", "e", "--dsn", db)["ev_id"]
    assert ev == 1
    queues = cli_json("queue", "list", "--dsn", db)
    assert [q["queue_name"] for q in queues] == ["cq"]
    info = cli_json("queue", "info", "cq", "--dsn", db)
    assert info["implementation"] == "pgtt" and info["consumers"][0]["consumer_name"] == "worker1"
    assert cli_json("queue", "consumers", "--dsn", db)[0]["queue_name"] == "cq"
    tail = cli_json("queue", "tail", "cq", "--dsn", db)
    assert [(e["ev_id"], e["ev_data"], e["ev_extra1"]) for e in tail] == [(1, "hello", "e")]
    once = cli_json("ticker", "--once", "--dsn", db)
    assert once[0]["pgq"] is True
    res = cli("queue", "drop", "cq", "--dsn", db)
    assert res.returncode == 1 and "consumers still attached" in res.stderr
    res = cli("queue", "info", "nope", "--dsn", db)
    assert res.returncode == 6 and 'queue "nope" does not exist' in res.stderr
    res = cli("--read-only", "queue", "create", "x", "--dsn", db)
    assert res.returncode == 5 and "read-only" in res.stderr
    assert cli_json("queue", "unregister", "cq", "worker1", "--dsn", db)["unregistered"] is True
    assert cli_json("queue", "drop", "cq", "--dsn", db)["dropped"] is True
    plain = cli("queue", "list", "--dsn", db)
    assert plain.returncode == 0 and "(none)" in plain.stdout


def test_cli_ticker_exits_when_database_unreachable(db):
    dead = f"host=127.0.0.1 port={free_port()} dbname=gone user=postgres connect_timeout=2"
    res = cli("ticker", "--dsn", db, "--database", dead, "--fail-after", "1", "--ticker-period", "0.2")
    assert res.returncode == 3
    assert "gone unreachable" in res.stderr
