"""The scheduler's per-tick queries keep plans whose cost grows with the chains due, not the
chains defined (issue 3, bench/bench_timetable.py (c)).  Plan shapes, not timings: with
20,000 chains defined and 1,000 due, no query of a tick scans a whole table, and "when is
the next firing" is one index probe per client."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from engine.timetable import scheduler as sch
from engine.timetable.executor import DEFS_SQL

ME = "plan-engine"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
TABLES = {"chain", "chain_state", "chain_run", "task", "parameter", "chain_option"}


@pytest.fixture(scope="module")
def big_dsn(pg_cluster, _templates, server_version_num):
    from conftest import create_database_from

    name = create_database_from(pg_cluster, _templates.get(("timetable",)), server_version_num)
    dsn = pg_cluster.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as c:
        # run_at NULL (every minute) keeps the insert cheap; the scheduler's copy says the same
        c.execute("""
            WITH c AS (
                INSERT INTO timetable.chain (chain_name, run_at, live, client_name)
                SELECT 'c' || g, NULL, true, CASE WHEN g %% 100 = 0 THEN %s END FROM generate_series(1, 20000) g
                RETURNING chain_id)
            INSERT INTO timetable.task (chain_id, task_order, command) SELECT chain_id, 10, 'SELECT 1' FROM c""",
                  (ME,))
        # some history and options, so that the planner knows these tables are not empty
        c.execute("INSERT INTO timetable.chain_run (chain_id, due_at, trigger, client_name, session_id, status, "
                  "finished_at) SELECT chain_id, %s - o * interval '1 minute', 'cron', 'x', 1, 'succeeded', %s "
                  "FROM timetable.chain, generate_series(1, 3) o", (NOW, NOW))
        c.execute("INSERT INTO timetable.chain_option (chain_id, time_zone) "
                  "SELECT chain_id, 'UTC' FROM timetable.chain WHERE chain_id % 10 = 0")
        c.execute("INSERT INTO timetable.parameter (task_id, order_id, value) "
                  "SELECT task_id, o, '[1]' FROM timetable.task, generate_series(1, 2) o WHERE task_id % 2 = 0")
        # 1,000 due (<= NOW), the rest spread over the next day (the chain_option trigger
        # marked some dirty again: settle all)
        c.execute("""
            UPDATE timetable.chain_state SET dirty = false, run_at = '* * * * *',
                   next_due_at = CASE WHEN chain_id %% 20 = 0 THEN %(now)s - interval '1 second'
                                      ELSE %(now)s + (chain_id %% 1440) * interval '1 minute' END""", {"now": NOW})
        c.execute("VACUUM ANALYZE")
    yield dsn
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _explain(conn, query: str, params, analyze: bool = False) -> dict:
    opts = "ANALYZE, COSTS OFF, TIMING OFF, FORMAT JSON" if analyze else "FORMAT JSON"
    return conn.execute(f"EXPLAIN ({opts}) {query}", params).fetchone()[0][0]["Plan"]


def _assert_no_table_scans(plan: dict, what: str) -> None:
    scans = [(n["Node Type"], n.get("Relation Name")) for n in _nodes(plan)
             if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in TABLES]
    shape = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in _nodes(plan)]
    assert not scans, f"{what}: sequential scan(s) {scans}; plan: {shape}"


def _due_ids(conn) -> list[int]:
    return [r[0] for r in conn.execute("SELECT chain_id FROM timetable.chain_state WHERE next_due_at <= %s",
                                       (NOW,)).fetchall()]


def test_due_and_definitions_use_indexes_with_many_chains(big_dsn):
    with psycopg.connect(big_dsn) as conn:  # a transaction: DUE_SQL locks what it reads
        plan = _explain(conn, sch.DUE_SQL, {"me": ME, "now": NOW, "n": 1000})
        _assert_no_table_scans(plan, "DUE_SQL")
        used = {n.get("Index Name") for n in _nodes(plan) if "Index" in n["Node Type"]}
        assert {"chain_state_due_idx", "chain_state_due_anyone_idx"} <= used, used
        # only chain_state: what the scheduler needs is kept there, no join to chain per tick
        assert {n.get("Relation Name") for n in _nodes(plan) if n.get("Relation Name")} == {"chain_state"}

        ids = _due_ids(conn)
        assert len(ids) == 1000
        plan = _explain(conn, DEFS_SQL, (ids,))
        _assert_no_table_scans(plan, "DEFS_SQL")
        assert any(n.get("Relation Name") == "chain" and "Index" in n["Node Type"] for n in _nodes(plan))

        plan = _explain(conn, sch.DIRTY_SQL, (1000,))
        _assert_no_table_scans(plan, "DIRTY_SQL")
        conn.rollback()


def test_next_wake_up_is_one_index_probe_per_client(big_dsn):
    with psycopg.connect(big_dsn, autocommit=True) as conn:
        plan = _explain(conn, sch.NEXT_WAKE_SQL, {"me": ME}, analyze=True)
        _assert_no_table_scans(plan, "NEXT_WAKE_SQL")
        probes = [n for n in _nodes(plan) if n["Node Type"] in ("Index Scan", "Index Only Scan")]
        assert len(probes) == 2, json.dumps(plan, indent=1)
        # each stops at the first entry: O(1), however many chains are defined
        assert all(n["Actual Rows"] <= 1 for n in probes), json.dumps(plan, indent=1)
        assert {n["Index Name"] for n in probes} == {"chain_state_due_idx", "chain_state_due_anyone_idx"}


def test_claim_and_start_functions_use_indexes(big_dsn):
    """The statements inside claim_due / close_runs / finish_run (auto_explain, nested)."""
    with psycopg.connect(big_dsn) as conn:
        rows = conn.execute("SELECT chain_id, next_due_at, version FROM timetable.chain_state "
                            "WHERE next_due_at <= %s ORDER BY chain_id", (NOW,)).fetchall()
        ids = [r[0] for r in rows]
        try:
            conn.execute("LOAD 'auto_explain'")
        except psycopg.Error:
            pytest.skip("auto_explain is not available on this server")
        notes: list[str] = []
        conn.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
        for setting, value in (("auto_explain.log_min_duration", "0"), ("auto_explain.log_nested_statements", "on"),
                               ("auto_explain.log_format", "json"), ("client_min_messages", "log")):
            conn.execute("SELECT set_config(%s, %s, true)", (setting, value))
        notes.clear()  # only the engine's statements from here on
        claimed = conn.execute(sch.CLAIM_SQL, (ME, 1, NOW, 16, ids, [r[1] for r in rows], ["cron"] * len(ids),
                                               [r[1] for r in rows], [NOW + timedelta(minutes=1)] * len(ids),
                                               [r[2] for r in rows])).fetchall()
        assert len(claimed) == 1000
        assert {c[3] for c in claimed} == {"running"}  # the claim starts the runs
        ends = [c[0] for c in claimed[:500]]
        conn.execute("SELECT timetable.close_runs(%s, %s, %s, %s, %s, %s, %s)",
                     (ends, ["succeeded"] * 500, [None] * 500, [NOW] * 500, [NOW] * 500, [None] * 500,
                      [None] * 500))
        conn.execute("SELECT timetable.finish_run(%s, 'failed', 'x', %s, NULL, NULL, %s)",
                     (claimed[600][0], NOW, NOW))
        conn.rollback()
        plans = [json.loads(n[n.index("{"):]) for n in notes if "plan:" in n]
        assert len(plans) >= 5, notes[:3]
        for p in plans:
            _assert_no_table_scans(p["Plan"], p.get("Query Text", "?")[:200])
