"""``pgtt-tui demo``'s loader and engine: on fresh databases it builds the sample chains, jobs
and the three-node cascade (main → mirror → reports) with the engine's plans; the engine
thread (one supervisor per node) produces chain runs, job runs and events that arrive at the
leaf, also after a switchover to the mirror; loading again reuses everything (and repairs a
stale node location)."""

from __future__ import annotations

import os
import time

import psycopg
import pytest
from psycopg import sql

from engine import demo
from engine.cascade import ops
from engine.cascade.status import collect_status

pytestmark = pytest.mark.timeout(120)


def q(dsn: str, text: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(text, params)
        return cur.fetchall() if cur.description else []


def wait_until(fn, timeout: float = 25.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture
def demo_db(pg_cluster):
    name = f"demo_{os.getpid()}_{time.monotonic_ns() % 1_000_000}"
    yield pg_cluster.dsn(), name
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        for db in (name, name + "_mirror", name + "_reports"):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def shape(setup: demo.DemoSetup) -> dict:
    """Everything the loader creates, counted per node database."""
    out = {}
    for node in setup.cascade.nodes:
        dsn = node.settings.dsn
        row = {"locations": q(dsn, "SELECT node_name, node_location, dead FROM pgq_node.get_queue_locations('orders') "
                                   "ORDER BY 1"),
               "node": q(dsn, "SELECT node_type, provider_node, worker_name FROM pgq_node.get_node_info('orders')"),
               "queues": q(dsn, "SELECT queue_name FROM pgq.queue ORDER BY 1"),
               "consumers": q(dsn, "SELECT co_name FROM pgq.consumer ORDER BY 1"),
               "triggers": q(dsn, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1")}
        if "timetable" in node.services:
            row["chains"] = q(dsn, "SELECT chain_name, run_at, (SELECT count(*) FROM timetable.task t "
                                   "WHERE t.chain_id = c.chain_id) FROM timetable.chain c ORDER BY 1")
        if "schedule" in node.services:
            row["cron"] = q(dsn, "SELECT name, rule->>'crontab' FROM schedule.cron ORDER BY 1")
            row["at_jobs"] = q(dsn, "SELECT name FROM schedule.at_job ORDER BY 1")
        out[node.name] = row
    return out


def test_demo_loads_runs_and_reloads(demo_db):
    dsn, name = demo_db
    setup = demo.prepare(dsn=dsn, dbname=name)
    main, mirror, reports = (setup.cascade.node(n).settings.dsn for n in ("main", "mirror", "reports"))
    assert setup.settings.dsn == main
    assert setup.cascade.built == ["main", "mirror", "reports"]

    # chains and jobs of the samples, plus the producer chain on both queue-carrying nodes
    chains = {r[0] for r in q(main, "SELECT chain_name FROM timetable.chain")}
    assert {c[0] for c in demo.SAMPLE_CHAINS} | {demo.FEED_CHAIN} == chains
    assert {r[0] for r in q(mirror, "SELECT chain_name FROM timetable.chain")} == {demo.FEED_CHAIN}
    assert {r[0] for r in q(main, "SELECT name FROM schedule.cron")} == {j[0] for j in demo.SAMPLE_JOBS}

    # the cascade, as the console's cascade view reads it from the demo database
    st = collect_status(main, "orders")
    assert st.root == "main"
    assert (st.nodes["mirror"].node_type, st.nodes["mirror"].provider) == ("branch", "main")
    assert (st.nodes["reports"].node_type, st.nodes["reports"].provider) == ("leaf", "mirror")
    assert all(n.reachable and not n.dead for n in st.nodes.values())
    assert q(main, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'demo.orders'::regclass ORDER BY 1")

    engine = demo.EngineThread(setup.settings, cascade=setup.cascade)
    engine.start()
    try:
        assert len(engine.supervisors) == 3
        wait_until(lambda: q(main, "SELECT count(*) FROM timetable.chain_run r JOIN timetable.chain c USING (chain_id)"
                                   " WHERE c.chain_name = %s AND r.status = 'succeeded'", (demo.FEED_CHAIN,))[0][0] >= 2,
                   what="order-feed runs")
        wait_until(lambda: q(main, "SELECT count(*) FROM timetable.chain_run r JOIN timetable.chain c USING (chain_id)"
                                   " WHERE c.chain_name = 'heartbeat' AND r.status = 'succeeded'")[0][0] >= 1,
                   what="heartbeat runs")
        wait_until(lambda: q(main, "SELECT count(*) FROM schedule.at_job WHERE status = 'done' "
                                   "AND name IN ('count-beats', 'doomed-once')")[0][0] == 2,
                   what="one-time job runs")
        wait_until(lambda: q(reports, "SELECT to_regclass('public.order_events') IS NOT NULL")[0][0]
                   and q(reports, "SELECT count(*) FROM public.order_events")[0][0] >= 3, what="events at the leaf")
        for dsn_ in (main, mirror, reports):
            wait_until(lambda d=dsn_: q(d, "SELECT count(*) FROM pgtt.engine_status WHERE alive")[0][0] == 1,
                       what="an alive engine row on every node")
        assert q(mirror, "SELECT count(*) FROM timetable.chain_run")[0][0] >= 1  # runs, inserts nothing (branch)
        assert q(mirror, "SELECT count(*) FROM demo.orders")[0][0] == 0

        # a switchover (what the console's cascade view runs) with the demo's engine: the
        # producer follows the root, the leaf keeps receiving
        demo._run_plan(ops.plan_takeover(main, "orders", "main", "mirror", wait_timeout=30))
        st = collect_status(main, "orders")
        assert st.root == "mirror" and (st.nodes["main"].node_type, st.nodes["main"].provider) == ("branch", "mirror")
        wait_until(lambda: q(reports, "SELECT count(*) FROM public.order_events "
                                      "WHERE (ev_data::json->>'order_id')::bigint > 1000000")[0][0] >= 2,
                   what="orders from the new root at the leaf")
    finally:
        engine.stop()
    assert not engine.alive and engine.error is None
    assert q(main, "SELECT count(*) FROM pgtt.engine WHERE stopped_at IS NULL")[0][0] == 0

    # what arrived at the leaf: orders captured at the root, each at most once, in order
    rows = q(reports, "SELECT ev_id, ev_type::json->>'op', ev_data::json->>'order_id' FROM public.order_events "
                      "ORDER BY ev_id")
    assert {r[1] for r in rows} == {"INSERT"}
    order_ids = [int(r[2]) for r in rows]
    assert order_ids == sorted(set(order_ids))
    assert set(order_ids) <= {r[0] for r in q(main, "SELECT order_id FROM demo.orders")
                              + q(mirror, "SELECT order_id FROM demo.orders")}

    # loading again reuses everything (the switchover stays); a stale stored location is put right
    before = shape(setup)
    q(main, "UPDATE pgq_node.node_location SET node_location = 'host=/nonexistent dbname=gone' "
            "WHERE node_name = 'reports'")
    again = demo.prepare(dsn=dsn, dbname=name)
    assert again.cascade.built == []
    assert shape(again) == before
    assert collect_status(main, "orders").root == "mirror"


def test_demo_cli_stops_its_engine_on_ctrl_c(pg_cluster):
    """``pgtt-tui demo --no-console`` then Ctrl+C: every engine (one per node) is marked stopped
    (a clean shutdown, not a thread cut off at exit), and the command exits 0."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    base = pg_cluster.dsn()
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.Popen([sys.executable, "-m", "pgtt_tui", "--dsn", base, "demo", "--no-console"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(repo))
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("engine running"):
                break
        assert any(line.startswith("cascade orders (built): main = pgtt_demo, mirror = pgtt_demo_mirror")
                   for line in lines), lines
        assert "  main (root, tick" in "".join(lines), lines
        assert any("pgtt-tui --dsn" in line and "chain list" in line for line in lines), lines
        main = pg_cluster.dsn("pgtt_demo")
        wait_until(lambda: q(main, "SELECT count(*) FROM pgtt.engine_status WHERE alive")[0][0] == 1,
                   what="the engine's row")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(lines) + out
        for db in ("pgtt_demo", "pgtt_demo_mirror", "pgtt_demo_reports"):
            rows = q(pg_cluster.dsn(db), "SELECT client_name, stopped_at IS NOT NULL FROM pgtt.engine")
            assert rows and all(stopped for _, stopped in rows), (db, rows)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with psycopg.connect(base, autocommit=True) as admin:
            for db in ("pgtt_demo", "pgtt_demo_mirror", "pgtt_demo_reports"):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def test_flaky_sample_fails_only_sometimes(pg_cluster):
    """PostgreSQL folds ``1 / 0`` at plan time: the sample must fail by chance, not always."""
    outcomes = []
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        for _ in range(80):
            try:
                conn.execute(demo.FLAKY_FETCH)
                outcomes.append("ok")
            except psycopg.errors.DivisionByZero:
                outcomes.append("failed")
    assert 0 < outcomes.count("failed") < 80, outcomes.count("failed")


def test_cli_without_dsn_finds_the_demo_database_on_the_embedded_server(pg_cluster):
    from engine.db import DEMO_DATABASE, _embedded_working_database

    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DATABASE)))
        assert _embedded_working_database(pg_cluster.dsn()) == "postgres"
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DATABASE)))
        try:
            assert _embedded_working_database(pg_cluster.dsn()) == DEMO_DATABASE
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(DEMO_DATABASE)))
    hint = demo.how_to_reach(demo.demo_settings(demo.ConnSettings(dsn=pg_cluster.dsn())), embedded=True)
    assert "without --dsn" in hint and DEMO_DATABASE in hint
