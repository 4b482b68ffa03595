"""Compatibility with the real PgQ, both ways:

- a consumer written with the Python PgQ client library (Debian ``python3-pgq``, run by
  the system ``/usr/bin/python3`` in a subprocess) consumes OUR queues, retries included;
- our engine (api, consumer helper, ticker) drives a database with the real ``pgq``
  extension (Debian ``postgresql-15-pgq3``), through the same public API;
- our function signatures / table columns equal the real extension's, and a scripted
  session gives the same results on both.

They skip, with the reason, where the packages are missing (CI installs them: see
.ci/run). The extension needs the OS PostgreSQL 15 server (PGTT_TEST_PG_BINDIR).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import textwrap
from pathlib import Path

import psycopg
import pytest

from engine.db import ConnSettings
from engine.pgq import api
from engine.pgq.consumer import Consumer
from engine.pgq.ticker import DatabaseTicker, TickerOptions, maintain, retry_events, tick

SYSTEM_PYTHON = "/usr/bin/python3"
TRIGGER_FUNCS = {"jsontriga", "logutriga", "sqltriga"}  # sql/pgq/0004_triggers.sql, not ours here


def _python_pgq_missing() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import pgq, skytools, psycopg2"], capture_output=True, text=True)
    if probe.returncode != 0:
        return ("the Python PgQ library is not installed for the system python "
                "(Debian: apt-get install python3-pgq)")
    return None


@pytest.fixture
def real_dsn(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pgq'").fetchone()[0] == 0:
            pytest.skip("the real pgq extension is not installable on this server (Debian: apt-get install "
                        "postgresql-15-pgq3, and run with PGTT_TEST_PG_BINDIR=/usr/lib/postgresql/15/bin)")
        conn.execute("CREATE EXTENSION pgq")
    return empty_dsn


@pytest.fixture
def ours_dsn(make_db):
    return make_db(("pgq",))


def signature_rows(conn):
    return conn.execute(
        "SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), p.prosecdef, "
        "p.proisstrict FROM pg_proc p WHERE p.pronamespace = 'pgq'::regnamespace ORDER BY 1, 2").fetchall()


def column_rows(conn):
    return conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = 'pgq' AND table_name IN ('queue', 'tick', 'subscription', 'consumer', "
        "'event_template', 'retry_queue', 'event_1', 'event_1_0', 'event_1_1', 'event_1_2') "
        "ORDER BY 1, ordinal_position").fetchall()


def acl_rows(conn):
    return conn.execute(
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid), a.privilege_type, "
        "coalesce(r.rolname, 'public') FROM pg_proc p CROSS JOIN LATERAL aclexplode(p.proacl) a "
        "LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE p.pronamespace = 'pgq'::regnamespace "
        "AND a.grantee <> p.proowner ORDER BY 1, 2, 4").fetchall()


@pytest.mark.realpgq
def test_public_api_matches_real_extension(real_dsn, ours_dsn):
    with psycopg.connect(real_dsn, autocommit=True) as real, psycopg.connect(ours_dsn, autocommit=True) as ours:
        for conn in (real, ours):
            conn.execute("SELECT pgq.create_queue('q')")
        real_sigs = [r for r in signature_rows(real) if r[0] not in TRIGGER_FUNCS]
        real_names = {r[0] for r in real_sigs}
        # our own helpers are private (leading underscore); PgQ's one such helper is compared
        our_sigs = [r for r in signature_rows(ours) if r[0] not in TRIGGER_FUNCS
                    and (not r[0].startswith("_") or r[0] in real_names)]
        assert our_sigs == real_sigs
        assert column_rows(ours) == column_rows(real)
        real_acl = [r for r in acl_rows(real) if r[0] not in TRIGGER_FUNCS]
        assert [r for r in acl_rows(ours) if r[0] not in TRIGGER_FUNCS] == real_acl


SCRIPT = [
    "SELECT pgq.create_queue('q')",
    "SELECT pgq.create_queue('q')",
    "SELECT pgq.register_consumer('q', 'a')",
    "SELECT pgq.register_consumer('q', 'b')",
    "SELECT pgq.next_batch('q', 'a')",
    "SELECT pgq.insert_event('q', 't1', 'd1')",
    "SELECT pgq.insert_event('q', 't2', 'd2', 'e1', 'e2', 'e3', 'e4')",
    "SELECT pgq.current_event_table('q')",
    "SELECT pgq.force_tick('q')",
    "SELECT pgq.seq_getval('pgq.event_1_id_seq')",
    "SELECT pgq.ticker('q')",
    "SELECT pgq.ticker('q')",
    "SELECT batch_id, cur_tick_id, prev_tick_id, cur_tick_event_seq, prev_tick_event_seq "
    "FROM pgq.next_batch_info('q', 'a')",
    "SELECT pgq.next_batch('q', 'a')",
    "SELECT ev_id, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4 "
    "FROM pgq.get_batch_events(1)",
    "SELECT queue_name, consumer_name, prev_tick_id, tick_id, seq_start, seq_end FROM pgq.get_batch_info(1)",
    "SELECT * FROM pgq.batch_event_tables(1)",
    "SELECT pgq.event_retry(1, 2::bigint, 0)",
    "SELECT pgq.event_retry(1, 2::bigint, 0)",
    "SELECT pgq.batch_retry(1, 0)",
    "SELECT pgq.finish_batch(1)",
    "SELECT pgq.finish_batch(1)",
    "SELECT queue_name, consumer_name, last_tick, current_batch, next_tick, pending_events "
    "FROM pgq.get_consumer_info()",
    "SELECT queue_name, queue_ntables, queue_cur_table, queue_rotation_period, queue_external_ticker, "
    "queue_ticker_paused, queue_ticker_max_count, queue_ticker_max_lag, queue_ticker_idle_period, ev_new, "
    "last_tick_id FROM pgq.get_queue_info()",
    "SELECT pgq.maint_retry_events()",
    "SELECT pgq.maint_retry_events()",
    "SELECT pgq.force_tick('q')",
    "SELECT pgq.ticker('q')",
    "SELECT pgq.next_batch('q', 'a')",
    "SELECT ev_id, ev_retry, ev_data FROM pgq.get_batch_events(3)",
    "SELECT pgq.event_retry_raw('q', 'a', now(), 666, now(), 0, 'x', 'y', NULL, NULL, NULL, NULL)",
    "SELECT pgq.set_queue_config('q', 'ticker_max_count', '7')",
    "SELECT pgq.set_queue_config('q', 'bogus', '7')",
    "SELECT pgq.register_consumer_at('q', 'a', 99)",
    "SELECT * FROM pgq.next_batch_info('q', 'zz')",
    "SELECT * FROM pgq.get_batch_events(99)",
    "SELECT pgq.drop_queue('q')",
    "SELECT pgq.unregister_consumer('q', 'b')",
    "SELECT pgq.unregister_consumer('q', 'b')",
    "SELECT pgq.drop_queue('q', true)",
    "SELECT count(*) FROM pgq.consumer",
    "SELECT pgq.ticker('nope')",
    "SELECT pgq.insert_event('nope', 'a', 'b')",
    "SELECT pgq.create_queue(NULL)",
]


def run_script(dsn: str) -> list:
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        notes: list[str] = []
        conn.add_notice_handler(lambda d: notes.append(f"{d.severity}: {d.message_primary}"))
        for stmt in SCRIPT:
            try:
                rows = conn.execute(stmt).fetchall()
                out.append((stmt, [tuple(str(v) for v in r) for r in rows], list(notes)))
            except psycopg.Error as exc:
                out.append((stmt, f"ERROR: {exc.diag.message_primary}", list(notes)))
            notes.clear()
    return out


@pytest.mark.realpgq
def test_same_results_as_real_extension(real_dsn, ours_dsn):
    real, ours = run_script(real_dsn), run_script(ours_dsn)
    for r, o in zip(real, ours):
        assert o == r


def _consumer_script(tmp_path: Path, dsn: str, queue: str) -> list[str]:
    ini = tmp_path / "consumer.ini"
    ini.write_text(textwrap.dedent(f"""\
        [pytest_consumer]
        job_name = pytest_consumer
        src_db = {dsn}
        pgq_queue_name = {queue}
        logfile = {tmp_path}/consumer.log
        pidfile = {tmp_path}/consumer.pid
        """))
    script = tmp_path / "consumer.py"
    script.write_text(textwrap.dedent("""\
        import json, sys
        import pgq

        seen = []

        class Collect(pgq.Consumer):
            def process_event(self, db, ev):
                seen.append([ev.ev_id, ev.ev_type, ev.ev_data, ev.ev_extra1, ev.retry])
                if ev.ev_data == "retry-me" and not ev.retry:
                    ev.tag_retry(0)
                else:
                    ev.tag_done()

        c = Collect("pytest_consumer", "src_db", [sys.argv[1], "-q"])
        if sys.argv[2] == "register":
            c.register_consumer()
        else:
            while c.work():
                pass
        print(json.dumps(seen))
        """))
    return [SYSTEM_PYTHON, str(script), str(ini)]


def _run(cmd: list[str], what: str) -> list:
    # the system python's own dist-packages (python3-pgq, psycopg2), not our venv's
    res = subprocess.run([*cmd, what], capture_output=True, text=True, timeout=60, cwd="/",
                         env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_python_pgq_consumer_reads_our_queue(ours_dsn, tmp_path):
    missing = _python_pgq_missing()
    if missing:
        pytest.skip(missing)
    cmd = _consumer_script(tmp_path, ours_dsn, "q")
    with psycopg.connect(ours_dsn, autocommit=True) as conn:
        api.create_queue(conn, "q")
        assert _run(cmd, "register") == []
        a = api.insert_event(conn, "q", "a", "retry-me")
        b = api.insert_event(conn, "q", "b", "x", "e1")
        conn.execute("SELECT pgq.force_tick('q'), pgq.ticker('q')")
        assert _run(cmd, "work") == [[a, "a", "retry-me", None, None], [b, "b", "x", "e1", None]]
        assert asyncio.run(_retry_and_tick(ours_dsn)) == 1
        assert _run(cmd, "work") == [[a, "a", "retry-me", None, 1]]  # its retry, once
        assert _run(cmd, "work") == []
        assert [c.consumer_name for c in api.consumers(conn, "q")] == ["pytest_consumer"]


async def _retry_and_tick(dsn: str) -> int:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        moved = await retry_events(conn)
        await conn.execute("SELECT pgq.force_tick('q')")
        await tick(conn)
        return moved
    finally:
        await conn.close()


@pytest.mark.realpgq
def test_our_engine_drives_the_real_extension(real_dsn):
    with psycopg.connect(real_dsn, autocommit=True) as conn:
        assert api.implementation(conn).startswith("extension ")
        assert api.create_queue(conn, "rq") is True
        consumer = Consumer("rq", "engine")
        assert consumer.register(conn) is True
        ids = [api.insert_event(conn, "rq", "t", f"d{i}") for i in range(5)]
        conn.execute("SELECT pgq.force_tick('rq')")

        async def cycle():
            aconn = await psycopg.AsyncConnection.connect(real_dsn, autocommit=True)
            try:
                ticked = await tick(aconn)
                ops = await maintain(aconn)
                return ticked, ops
            finally:
                await aconn.close()

        ticked, _ops = asyncio.run(cycle())
        assert ticked == 1

        def handler(batch):
            for ev in batch.events:
                if ev.ev_data == "d2" and not ev.ev_retry:
                    ev.retry(0)

        batch = consumer.process_one(conn, handler)
        assert [e.ev_id for e in batch.events] == ids
        assert asyncio.run(_retry_and_tick_q(real_dsn, "rq")) == 1
        batch = consumer.process_one(conn, handler)
        assert [(e.ev_id, e.ev_retry) for e in batch.events] == [(ids[2], 1)]
        infos = api.list_queues(conn)
        assert [q.queue_name for q in infos] == ["rq"]
        assert api.consumers(conn, "rq")[0].consumer_name == "engine"
        page = api.recent_events(conn, "rq", limit=3)
        assert len(page.events) == 3 and page.next_cursor is not None


async def _retry_and_tick_q(dsn: str, queue: str) -> int:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        moved = await retry_events(conn)
        await conn.execute("SELECT pgq.force_tick(%s)", (queue,))
        await tick(conn)
        return moved
    finally:
        await conn.close()


@pytest.mark.realpgq
async def test_ticker_service_ticks_the_real_extension(real_dsn):
    with psycopg.connect(real_dsn, autocommit=True) as conn:
        conn.execute("SELECT pgq.create_queue('rq')")
        conn.execute("SELECT pgq.insert_event('rq', 't', 'd')")
        conn.execute("SELECT pgq.force_tick('rq')")
    svc = DatabaseTicker(ConnSettings(dsn=real_dsn), TickerOptions(ticker_period=0.1))
    stopping = asyncio.Event()

    class Ctx:
        pass

    ctx = Ctx()
    ctx.stopping = stopping
    task = asyncio.create_task(svc.run(ctx))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if svc.ticker_calls >= 2:
            break
    stopping.set()
    await task
    assert svc.health()["ok"] or not svc.connected
    with psycopg.connect(real_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT max(tick_id) FROM pgq.tick").fetchone()[0] >= 2
