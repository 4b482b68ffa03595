"""Differential tests: the real PgQ 3.5 and pgq_node 3.5 extensions (Debian postgresql-15-pgq3
and postgresql-15-pgq-node, CREATE EXTENSION) in one database, our sql/pgq and sql/pgq_node in
another database of the same server; the same operation sequences run against both in
lockstep and every result row, error (SQLSTATE and message) and notice must be equal, and
so must the queue tables afterwards. Machinery and what is normalised (time values and
transaction ids only): tests/pgq_differential.py.

Sequences: hand-written cases (below, by subject) and generated ones (GENERATED_SEEDS; a
failing seed prints the whole sequence up to the difference; rerun one seed with
PGQ_DIFF_SEED=n). Skipped, with the reason, where the server has no pgq / pgq_node
extension (run with PGTT_TEST_PG_BINDIR=/usr/lib/postgresql/15/bin).
"""

from __future__ import annotations

import os
import random

import psycopg
import pytest

from tests.pgq_differential import PGQ_NODE_STATE, PGQ_STATE, run_both

pytestmark = pytest.mark.realpgq

OPS_RUN: list[int] = []  # operations per test, summed by the last test for the report


@pytest.fixture
def pair(make_db):
    real = make_db(())
    with psycopg.connect(real, autocommit=True) as conn:
        have = {r[0] for r in conn.execute(
            "SELECT name FROM pg_available_extensions WHERE name IN ('pgq', 'pgq_node')")}
        if have != {"pgq", "pgq_node"}:
            pytest.skip("the real pgq and pgq_node extensions are not installable on this server (Debian: "
                        "apt-get install postgresql-15-pgq3 postgresql-15-pgq-node, and run with "
                        "PGTT_TEST_PG_BINDIR=/usr/lib/postgresql/15/bin)")
        conn.execute("CREATE EXTENSION pgq")
        conn.execute("CREATE EXTENSION pgq_node")
    return real, make_db(("pgq_node",))


def check(pair, ops, label, state=PGQ_STATE):
    n = run_both(*pair, list(ops) + list(state), label)
    OPS_RUN.append(n)
    return n


# ---------------------------------------------------------------------------------------
# hand-written: pgq core
# ---------------------------------------------------------------------------------------

def batch_of(q, c):
    return f"(SELECT current_batch FROM pgq.get_consumer_info('{q}', '{c}'))"


def events_of(q, c):
    return ("SELECT ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4 "
            f"FROM pgq.get_batch_events({batch_of(q, c)})")


def consume(q, c, custom=None):
    nb = (f"SELECT * FROM pgq.next_batch_custom('{q}', '{c}', {custom})" if custom
          else f"SELECT * FROM pgq.next_batch_info('{q}', '{c}')")
    return [nb, events_of(q, c), f"SELECT * FROM pgq.get_batch_info({batch_of(q, c)})",
            f"SELECT pgq.finish_batch({batch_of(q, c)})"]


INFO = ["SELECT * FROM pgq.get_queue_info()", "SELECT * FROM pgq.get_consumer_info()"]

BASICS = [
    "SELECT pgq.create_queue('q')", "SELECT pgq.create_queue('q')", "SELECT pgq.create_queue(NULL)",
    "SELECT pgq.register_consumer('q', 'a')", "SELECT pgq.register_consumer('q', 'a')",
    "SELECT pgq.register_consumer('nosuch', 'a')", "SELECT pgq.next_batch('q', 'a')",
    "SELECT pgq.next_batch('q', 'zz')", "SELECT pgq.next_batch(NULL, NULL)",
    "SELECT pgq.insert_event('q', 't1', 'd1')", "SELECT pgq.insert_event('q', 't2', 'd2', 'e1', 'e2', 'e3', 'e4')",
    "SELECT pgq.insert_event('q', NULL, NULL)", "SELECT pgq.insert_event('nosuch', 't', 'd')",
    "SELECT pgq.insert_event(NULL, 't', 'd')",
    "SELECT pgq.insert_event_raw('q', NULL, NULL, NULL, NULL, 'raw', 'x', NULL, NULL, NULL, NULL)",
    "SELECT pgq.insert_event_raw('q', 500, now(), 3, 2, 'raw', 'y', 'a', NULL, NULL, NULL)",
    "SELECT pgq.current_event_table('q')", "SELECT pgq.current_event_table('nosuch')",
    "SELECT pgq.ticker('q')", "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')", "SELECT pgq.ticker('q')",
    "SELECT pgq.ticker('nosuch')", "SELECT pgq.ticker()",
    *consume("q", "a"), *consume("q", "a"),
    "SELECT pgq.finish_batch(12345)", "SELECT * FROM pgq.get_batch_info(12345)",
    "SELECT * FROM pgq.get_batch_events(12345)",
    *INFO, "SELECT * FROM pgq.get_queue_info('q')", "SELECT * FROM pgq.get_queue_info('nosuch')",
    "SELECT * FROM pgq.get_consumer_info('q')", "SELECT * FROM pgq.get_consumer_info('q', 'a')",
    "SELECT * FROM pgq.get_consumer_info('q', 'nosuch')",
    "SELECT pgq.version()", "SELECT pgq.quote_fqname('a.b'), pgq.quote_fqname('x'), pgq.quote_fqname('A.\"b\"')",
    "SELECT pgq.seq_getval('pgq.event_1_id_seq')", "SELECT pgq.seq_setval('pgq.event_1_id_seq', 3)",
    "SELECT pgq.seq_setval('pgq.event_1_id_seq', 900)",
    "SELECT pgq.set_queue_config('q', 'ticker_max_count', '7')",
    "SELECT pgq.set_queue_config('q', 'queue_ticker_max_lag', '5 seconds')",
    "SELECT pgq.set_queue_config('q', 'ntables', '5')", "SELECT pgq.set_queue_config('nosuch', 'ticker_paused', 'on')",
    "SELECT pgq.set_queue_config('q', 'ticker_paused', 'on')", "SELECT pgq.ticker('q')", "SELECT pgq.ticker()",
    "SELECT pgq.set_queue_config('q', 'ticker_paused', 'off')",
    "SELECT pgq.register_consumer_at('q', 'b', 1)", "SELECT pgq.register_consumer_at('q', 'b', 999)",
    "SELECT pgq.register_consumer_at('q', 'b', 2)", "SELECT pgq.register_consumer_at('q', 'c', 999)",
    "SELECT pgq.unregister_consumer('q', 'b')", "SELECT pgq.unregister_consumer('q', 'b')",
    "SELECT pgq.unregister_consumer('nosuch', 'b')",
    "SELECT pgq.drop_queue('q')", "SELECT pgq.drop_queue('nosuch')", "SELECT pgq.drop_queue('q', true)",
    "SELECT pgq.create_queue('q2')", *INFO,
]

# three ticks of 10 events each, then next_batch_custom with minimum counts (issue 16 item 2)
FIND_TICK = [
    "SELECT pgq.create_queue('q')", "SELECT pgq.register_consumer('q', 'c')",
    "SELECT pgq.set_queue_config('q', 'ticker_max_count', '9')",
    *[s for _ in range(3) for s in ("SELECT count(pgq.insert_event('q', 't', i::text)) FROM generate_series(1, 10) i",
                                    "SELECT pgq.ticker('q')")],
    "SELECT * FROM pgq.find_tick_helper(1, 1, now(), 0, 15, NULL)",
    "SELECT * FROM pgq.find_tick_helper(1, 1, now(), 0, 5, NULL)",
    "SELECT * FROM pgq.find_tick_helper(1, 1, now(), 0, 100, NULL)",
    "SELECT * FROM pgq.find_tick_helper(1, 4, now(), 0, 1, NULL)",
    "SELECT * FROM pgq.find_tick_helper(1, 1, now(), 0, NULL, NULL)",
    *consume("q", "c", "NULL, 15, NULL"),
    "SELECT pgq.register_consumer_at('q', 'c', 1)",
    *consume("q", "c", "NULL, 5, NULL"), *consume("q", "c", "NULL, 5, NULL"),
    "SELECT pgq.register_consumer_at('q', 'c', 1)",
    *consume("q", "c", "NULL, 1000, NULL"), *consume("q", "c", "NULL, 30, NULL"),
    # tick times fixed 10 s apart: intervals
    "UPDATE pgq.tick SET tick_time = '2020-01-01 00:00:00+00'::timestamptz + tick_id * interval '10 seconds'",
    "SELECT pgq.register_consumer_at('q', 'c', 1)",
    *consume("q", "c", "NULL, NULL, '15 seconds'"),
    "SELECT pgq.register_consumer_at('q', 'c', 1)",
    *consume("q", "c", "NULL, NULL, '5 seconds'"), *consume("q", "c", "NULL, NULL, '1 hour'"),
    "SELECT pgq.register_consumer_at('q', 'c', 1)",
    *consume("q", "c", "NULL, 25, '25 seconds'"), *consume("q", "c", "'1 hour', NULL, NULL"),
    *consume("q", "c", "'1 second', NULL, NULL"),
    # 200 external ticks of 1,000 events each: min_count 100,000 on 200,000 waiting events
    "SELECT pgq.create_queue('big')", "SELECT pgq.register_consumer('big', 'c')",
    "SELECT pgq.set_queue_config('big', 'external_ticker', 'on')",
    "SELECT pgq.ticker('big')", "SELECT pgq.ticker('q', 100, now(), 1)",
    "SELECT count(pgq.ticker('big', i, now(), (i - 1) * 1000)) FROM generate_series(2, 201) i",
    "SELECT pgq.ticker('big', 201, now(), 1)",
    "SELECT * FROM pgq.next_batch_custom('big', 'c', NULL, 100000, NULL)", "SELECT pgq.finish_batch(9)",
    "SELECT pgq.register_consumer_at('big', 'c', 1)",
    "SELECT * FROM pgq.next_batch_custom('big', 'c', NULL, 60000, NULL)", "SELECT pgq.finish_batch(10)",
    "SELECT * FROM pgq.next_batch_custom('big', 'c', NULL, 60000, NULL)",
    *INFO,
]

RETRIES = [
    "SELECT pgq.create_queue('q')", "SELECT pgq.register_consumer('q', 'a')", "SELECT pgq.register_consumer('q', 'b')",
    "SELECT count(pgq.insert_event('q', 't', i::text)) FROM generate_series(1, 5) i",
    "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')",
    "SELECT pgq.next_batch('q', 'a')", "SELECT pgq.next_batch('q', 'b')",
    "SELECT pgq.event_retry(1, 2::bigint, 0)", "SELECT pgq.event_retry(1, 2::bigint, 0)",
    "SELECT pgq.event_retry(1, 3::bigint, '2000-01-01'::timestamptz)", "SELECT pgq.event_retry(1, 77::bigint, 0)",
    "SELECT pgq.event_retry(999, 2::bigint, 0)", "SELECT pgq.batch_retry(2, 3600)", "SELECT pgq.batch_retry(2, 0)",
    "SELECT pgq.batch_retry(999, 0)",
    "SELECT pgq.finish_batch(1)", "SELECT pgq.finish_batch(2)", "SELECT pgq.finish_batch(2)",
    "SELECT pgq.maint_retry_events()",
    "UPDATE pgq.retry_queue SET ev_retry_after = ev_retry_after - interval '2 hours'",
    "SELECT pgq.maint_retry_events()", "SELECT pgq.maint_retry_events()",
    "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')",
    *consume("q", "a"), *consume("q", "b"),
    "SELECT pgq.event_retry_raw('q', 'a', now() - interval '1 hour', NULL, now(), 4, 'rt', 'rd', 'x1', NULL, NULL, 'x4')",
    "SELECT pgq.event_retry_raw('q', 'a', now() - interval '1 hour', 42, now(), NULL, 'rt', 'rd', NULL, NULL, NULL, NULL)",
    "SELECT pgq.event_retry_raw('q', 'nosuch', now(), 43, now(), NULL, 'rt', 'rd', NULL, NULL, NULL, NULL)",
    "SELECT pgq.event_retry_raw('nosuch', 'a', now(), 43, now(), NULL, 'rt', 'rd', NULL, NULL, NULL, NULL)",
    "SELECT pgq.maint_retry_events()", "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')",
    *consume("q", "a"),
    "SELECT pgq.next_batch('q', 'b')", "SELECT pgq.batch_retry(6, 0)",
    "SELECT pgq.unregister_consumer('q', 'b')",
    "SELECT count(*) FROM pgq.retry_queue",
]

DISABLED = [
    "SELECT pgq.create_queue('q')", "SELECT pgq.register_consumer('q', 'a')",
    "SELECT pgq.insert_event('q', 'a', 'b')",
    "UPDATE pgq.queue SET queue_disable_insert = true",
    "SELECT pgq.insert_event('q', 'a', 'b')", "SELECT pgq.insert_event('q', 'a', 'b', 'x', NULL, NULL, NULL)",
    "SELECT pgq.current_event_table('q')",
    "SET session_replication_role = replica", "SELECT pgq.insert_event('q', 'replica', 'ok')",
    "SELECT pgq.current_event_table('q')", "SET session_replication_role = origin",
    "UPDATE pgq.queue SET queue_disable_insert = false, queue_per_tx_limit = 2",
    "BEGIN", "SELECT pgq.insert_event('q', 'a', '1')", "SELECT pgq.insert_event('q', 'a', '2')",
    "SELECT pgq.insert_event('q', 'a', '3')", "ROLLBACK",
    "DO $$ BEGIN PERFORM pgq.insert_event('q', 'a', '1'); PERFORM pgq.insert_event('q', 'a', '2'); END $$",
    "DO $$ BEGIN PERFORM pgq.insert_event('q', 'a', i::text) FROM generate_series(1, 3) i; END $$",
    "UPDATE pgq.queue SET queue_per_tx_limit = NULL",
    "SELECT pgq.insert_event('q', 'after', 'refusals')",
    "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')", *consume("q", "a"),
]

TICKER = [
    "SELECT pgq.create_queue('q')",
    "SELECT pgq.set_queue_config('q', 'ticker_max_count', '3')",
    "SELECT pgq.ticker('q')",
    "SELECT pgq.insert_event('q', 'a', '1')", "SELECT pgq.insert_event('q', 'a', '2')", "SELECT pgq.ticker('q')",
    "SELECT pgq.insert_event('q', 'a', '3')", "SELECT pgq.ticker('q')", "SELECT pgq.ticker('q')",
    # max_lag: an event waits, the last tick is made older than max_lag
    "SELECT pgq.insert_event('q', 'a', '4')", "SELECT pgq.ticker('q')",
    "UPDATE pgq.tick SET tick_time = tick_time - interval '2 seconds'", "SELECT pgq.ticker('q')",
    "UPDATE pgq.tick SET tick_time = tick_time - interval '2 seconds'", "SELECT pgq.ticker('q')",
    # idle: no events; the tick interval backs off up to the idle period
    "SELECT pgq.ticker('q')",
    "UPDATE pgq.tick SET tick_time = tick_time - interval '1 second'", "SELECT pgq.ticker('q')",
    "UPDATE pgq.tick SET tick_time = tick_time - interval '2 seconds'", "SELECT pgq.ticker('q')",
    "UPDATE pgq.tick SET tick_time = '2020-01-01'::timestamptz + tick_id * interval '1 second'",
    "UPDATE pgq.tick SET tick_time = now() - interval '10 seconds' "
    "WHERE tick_id = (SELECT max(tick_id) FROM pgq.tick)", "SELECT pgq.ticker('q')",
    "UPDATE pgq.tick SET tick_time = now() - interval '30 seconds' "
    "WHERE tick_id = (SELECT max(tick_id) FROM pgq.tick)",
    "UPDATE pgq.tick SET tick_time = now() - interval '40 seconds' "
    "WHERE tick_id = (SELECT max(tick_id) - 1 FROM pgq.tick)", "SELECT pgq.ticker('q')",
    "SELECT pgq.set_queue_config('q', 'ticker_idle_period', '20 seconds')",
    "UPDATE pgq.tick SET tick_time = now() - interval '25 seconds' "
    "WHERE tick_id = (SELECT max(tick_id) FROM pgq.tick)", "SELECT pgq.ticker('q')",
    "SELECT pgq.set_queue_config('q', 'ticker_max_lag', '0')", "SELECT pgq.ticker('q')", "SELECT pgq.ticker('q')",
    # external ticker
    "SELECT pgq.set_queue_config('q', 'external_ticker', 'true')", "SELECT pgq.ticker('q')", "SELECT pgq.ticker()",
    "SELECT pgq.ticker('q', 50, '2021-01-01', 40)", "SELECT pgq.ticker('q', 50, '2021-01-01', 40)",
    "SELECT pgq.ticker('nosuch', 51, now(), 40)",
    "SELECT pgq.set_queue_config('q', 'ticker_paused', 'true')", "SELECT pgq.ticker('q', 51, now(), 41)",
    "SELECT pgq.set_queue_config('q', 'external_ticker', 'false')",
    "SELECT pgq.ticker('q')", "SELECT pgq.set_queue_config('q', 'ticker_paused', 'false')", "SELECT pgq.ticker('q')",
    "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')", "SELECT pgq.force_tick('nosuch')",
    *INFO,
]

ROTATION = [
    "SELECT pgq.create_queue('q')", "SELECT pgq.register_consumer('q', 'a')",
    "SELECT pgq.insert_event('q', 'before', '1')",
    "SELECT pgq.maint_rotate_tables_step1('q')",
    "SELECT pgq.set_queue_config('q', 'rotation_period', '0')",
    "SELECT * FROM pgq.maint_operations()",
    "SELECT pgq.maint_rotate_tables_step1('q')",  # a consumer still on the first table
    "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')", *consume("q", "a"),
    "SELECT pgq.maint_rotate_tables_step1('q')", "SELECT * FROM pgq.maint_operations()",
    "SELECT pgq.maint_rotate_tables_step2()",
    "SELECT pgq.maint_rotate_tables_step1('q')", "SELECT pgq.current_event_table('q')",
    "SELECT pgq.insert_event('q', 'after', '2')", "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')",
    *consume("q", "a"),
    "SELECT pgq.maint_rotate_tables_step2()",
    "SELECT pgq.maint_rotate_tables_step1('q')", "SELECT pgq.maint_rotate_tables_step2()",
    "SELECT pgq.insert_event('q', 'third', '3')", "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')",
    *consume("q", "a"),
    "SELECT pgq.maint_rotate_tables_step1('q')", "SELECT pgq.maint_rotate_tables_step2()",
    "SELECT pgq.maint_rotate_tables_step1('q')", "SELECT pgq.maint_rotate_tables_step2()",
    "SELECT pgq.maint_rotate_tables_step1('q')", "SELECT pgq.maint_rotate_tables_step2()",
    "SELECT pgq.maint_rotate_tables_step1('nosuch')",
    "SELECT * FROM pgq.maint_tables_to_vacuum()",
    "UPDATE pgq.queue SET queue_extra_maint = '{pgq.version}'", "SELECT * FROM pgq.maint_operations()",
    *INFO,
]

# a transaction open across ticks: its events belong to the batch whose end tick sees it
LONG_TX = [
    "SELECT pgq.create_queue('q')", "SELECT pgq.register_consumer('q', 'a')",
    (1, "BEGIN"), (1, "SELECT pgq.insert_event('q', 'long', '1')"),
    "SELECT pgq.insert_event('q', 'short', '2')", "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')",
    (2, "BEGIN"), (2, "SELECT pgq.insert_event('q', 'mid', '3')"),
    *consume("q", "a"),
    (1, "SELECT pgq.insert_event('q', 'long', '4')"), (1, "COMMIT"),
    "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')", *consume("q", "a"),
    (2, "COMMIT"), "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')", *consume("q", "a"),
    (1, "BEGIN"), (1, "SELECT pgq.insert_event('q', 'aborted', '5')"), (1, "ROLLBACK"),
    "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')", *consume("q", "a"),
    # the open batch is handed out again
    "SELECT * FROM pgq.next_batch_info('q', 'a')", "SELECT * FROM pgq.next_batch_info('q', 'a')",
    "SELECT pgq.insert_event('q', 'x', '6')", "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')",
    "SELECT * FROM pgq.next_batch_info('q', 'a')", "SELECT * FROM pgq.next_batch_info('q', 'a')",
    "BEGIN", "SELECT * FROM pgq.get_batch_cursor(" + batch_of("q", "a") + ", 'cur', 0)",
    "FETCH ALL FROM cur", "CLOSE cur",
    "SELECT * FROM pgq.get_batch_cursor(" + batch_of("q", "a") + ", 'cur2', 1, 'ev_type = ''x''')",
    "FETCH ALL FROM cur2", "COMMIT",
    "SELECT * FROM pgq.batch_event_tables(" + batch_of("q", "a") + ")",
    "SELECT pgq.finish_batch(" + batch_of("q", "a") + ")",
    # a consumer whose position tick was deleted
    "SELECT pgq.register_consumer('q', 'z')", "UPDATE pgq.subscription SET sub_last_tick = 999 "
    "WHERE sub_consumer = (SELECT co_id FROM pgq.consumer WHERE co_name = 'z')",
    "SELECT * FROM pgq.next_batch_info('q', 'z')", *INFO,
]

CASES = {"basics": BASICS, "find_tick": FIND_TICK, "retries": RETRIES, "disabled": DISABLED,
         "ticker": TICKER, "rotation": ROTATION, "long_tx": LONG_TX}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_written_pgq(pair, name):
    check(pair, CASES[name], name)


# ---------------------------------------------------------------------------------------
# generated: pgq core
# ---------------------------------------------------------------------------------------

QUEUES = ("qa", "qb", "qc")
CONSUMERS = ("c1", "c2", "c3")


def generate_pgq(seed: int, length: int) -> list:
    rnd = random.Random(seed)
    ops: list = [f"SELECT pgq.create_queue('{q}')" for q in QUEUES[:2]]
    # ticks by count only: a max_lag / idle period decision depends on how long an operation
    # took on each side (the hand-written TICKER case sets tick times explicitly instead)
    ops.append("ALTER TABLE pgq.queue ALTER queue_ticker_max_lag SET DEFAULT '1 hour', "
               "ALTER queue_ticker_idle_period SET DEFAULT '1 hour'")
    ops.append("UPDATE pgq.queue SET queue_ticker_max_lag = '1 hour', queue_ticker_idle_period = '1 hour'")
    ops += [f"SELECT pgq.register_consumer('{q}', '{c}')" for q, c in (("qa", "c1"), ("qa", "c2"), ("qb", "c1"))]
    open_tx = False

    def q():
        return rnd.choices(QUEUES, (5, 3, 1))[0]

    def c():
        return rnd.choices(CONSUMERS, (5, 3, 1))[0]

    choices = [
        (3, lambda: f"SELECT pgq.insert_event('{q()}', 't{rnd.randint(1, 3)}', 'd{rnd.randint(1, 99)}')"),
        (2, lambda: f"SELECT count(pgq.insert_event('{q()}', 'bulk', i::text, 'e' || i, NULL, NULL, 'x')) "
                    f"FROM generate_series(1, {rnd.randint(1, 30)}) i"),
        (3, lambda: f"SELECT pgq.ticker('{q()}')"),
        (1, lambda: "SELECT pgq.ticker()"),
        (2, lambda: f"SELECT pgq.force_tick('{q()}')"),
        (5, lambda: [f"SELECT pgq.force_tick('{qq}')", f"SELECT pgq.ticker('{qq}')"] if (qq := q()) else []),
        (1, lambda: f"SELECT pgq.create_queue('{q()}')"),
        (1, lambda: f"SELECT pgq.drop_queue('{q()}'{rnd.choice(['', ', true', ', false'])})"),
        (2, lambda: f"SELECT pgq.register_consumer('{q()}', '{c()}')"),
        (1, lambda: f"SELECT pgq.register_consumer_at('{q()}', '{c()}', {rnd.randint(1, 8)})"),
        (1, lambda: f"SELECT pgq.unregister_consumer('{q()}', '{c()}')"),
        (4, lambda: f"SELECT * FROM pgq.next_batch_info('{q()}', '{c()}')"),
        (2, lambda: f"SELECT * FROM pgq.next_batch_custom('{q()}', '{c()}', NULL, {rnd.choice(['NULL', 1, 5, 20])}, "
                    f"{rnd.choice(['NULL', chr(39) + '1 hour' + chr(39)])})"),
        (3, lambda: events_of(q(), c())),
        (2, lambda: f"SELECT * FROM pgq.get_batch_info({batch_of(q(), c())})"),
        (4, lambda: f"SELECT pgq.finish_batch({batch_of(q(), c())})"),
        (2, lambda: f"SELECT pgq.event_retry({batch_of(qq := q(), cc := c())}, "
                    f"(SELECT min(ev_id) FROM pgq.get_batch_events({batch_of(qq, cc)})), {rnd.choice([0, 60])})"),
        (1, lambda: f"SELECT pgq.batch_retry({batch_of(q(), c())}, {rnd.choice([0, 60])})"),
        (2, lambda: "SELECT pgq.maint_retry_events()"),
        (1, lambda: "UPDATE pgq.retry_queue SET ev_retry_after = ev_retry_after - interval '2 minutes'"),
        (1, lambda: f"SELECT pgq.set_queue_config('{q()}', "
                    f"{rnd.choice(['%sticker_max_count%s, %s2%s', '%sticker_max_count%s, %s500%s', '%srotation_period%s, %s0%s', '%sticker_paused%s, %sfalse%s', '%sexternal_ticker%s, %sfalse%s', '%sbogus%s, %s1%s']).replace('%s', chr(39))})"),
        (1, lambda: f"UPDATE pgq.queue SET queue_disable_insert = {rnd.choice(['true', 'false', 'false'])} "
                    f"WHERE queue_name = '{q()}'"),
        (1, lambda: f"UPDATE pgq.queue SET queue_per_tx_limit = {rnd.choice(['NULL', 'NULL', '1', '5'])} "
                    f"WHERE queue_name = '{q()}'"),
        (1, lambda: f"SELECT pgq.maint_rotate_tables_step1('{q()}')"),
        (1, lambda: "SELECT pgq.maint_rotate_tables_step2()"),
        (1, lambda: "SELECT * FROM pgq.maint_operations()"),
        (1, lambda: "UPDATE pgq.tick SET tick_time = tick_time - interval '5 seconds'"),
        (1, lambda: "SELECT * FROM pgq.get_queue_info()"),
        (1, lambda: "SELECT * FROM pgq.get_consumer_info()"),
    ]
    weights = [w for w, _ in choices]
    while len(ops) < length:
        r = rnd.random()
        if r < 0.04 and not open_tx:
            ops.append((1, "BEGIN"))
            open_tx = True
        elif r < 0.10 and open_tx:
            ops.append((1, rnd.choice(["COMMIT", "COMMIT", "ROLLBACK"])))
            open_tx = False
        elif r < 0.18 and open_tx:
            ops.append((1, f"SELECT pgq.insert_event('{q()}', 'tx', 'd{rnd.randint(1, 99)}')"))
        else:
            op = rnd.choices(choices, weights)[0][1]()
            ops += op if isinstance(op, list) else [op]
    if open_tx:
        ops.append((1, "COMMIT"))
    return ops


GENERATED_SEEDS = [int(os.environ["PGQ_DIFF_SEED"])] if os.environ.get("PGQ_DIFF_SEED") else list(range(1, 11))
GENERATED_LENGTH = int(os.environ.get("PGQ_DIFF_LENGTH", "250"))


@pytest.mark.parametrize("seed", GENERATED_SEEDS)
def test_generated_pgq(pair, seed):
    check(pair, generate_pgq(seed, GENERATED_LENGTH), f"pgq seed {seed}")


# ---------------------------------------------------------------------------------------
# capture triggers: every variant, every common column type, NULLs and arrays
# ---------------------------------------------------------------------------------------

COLUMNS = [  # name, type, value generators (SQL literals)
    ("i2", "int2", ["0", "-32768", "7"]), ("i8", "int8", ["9223372036854775807", "-1"]),
    ("num", "numeric", ["0", "-12.50", "'NaN'", "1e20", "0.000001"]), ("nm", "numeric(10,2)", ["3.14159", "-0"]),
    ("f4", "float4", ["1.5", "'Infinity'", "'-Infinity'", "'NaN'", "-0.1"]), ("f8", "float8", ["1e-300", "2.5", "'NaN'"]),
    ("b", "bool", ["true", "false"]), ("t", "text", ["''", "'plain'", "'a b&c=d%e+f'", "'quo\"te\\\\back'",
                                                      "'tab\tnl\nend'", "'\u00e4\u00f6\u20ac\U0001F600'", "'null'"]),
    ("vc", "varchar(20)", ["'x'", "'NULL'"]), ("ch", "char(3)", ["'a'"]), ("by", "bytea", ["'\\x00ff'", "''"]),
    ("d", "date", ["'2024-02-29'", "'infinity'"]), ("ts", "timestamp", ["'2024-01-02 03:04:05.678'"]),
    ("tz", "timestamptz", ["'2024-01-02 03:04:05+02'", "'-infinity'"]), ("tm", "time", ["'12:34:56'"]),
    ("iv", "interval", ["'1 day 2 hours'", "'-3 mons'"]), ("js", "json", ["'{\"a\": [1, null]}'", "'null'"]),
    ("jb", "jsonb", ["'{\"b\": \"x\", \"a\": 1.50}'", "'[]'"]), ("u", "uuid", ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"]),
    ("ip", "inet", ["'10.0.0.1/8'"]), ("ai", "int[]", ["'{1,NULL,3}'", "'{}'", "'{{1,2},{3,4}}'"]),
    ("at", "text[]", ["'{\"a b\",\"NULL\",NULL,\"q\\\\\"x\"}'"]), ("an", "numeric[]", ["'{1.5,NULL}'"]),
    ("pt", "point", ["'(1,2)'"]), ("e", "mood", ["'ok'"]), ("c", "pair", ["ROW(1, 'x')::pair"]),
]

TRIGGER_OPTIONS = [(), ("backup",), ("ignore=t,by",), ("pkey=i2",), ("SKIP",), ("when=i2 > 0",),
                   ("ev_extra3=t", "ev_type='custom'"), ("deny",), ("ev_extra4=i2::text", "backup")]


def trigger_case(kind: str, options: tuple, seed: int, rows: int = 6) -> list:
    rnd = random.Random(seed)
    cols = ", ".join(f"{n} {t}" for n, t, _ in COLUMNS)
    opt = "".join(", " + psycopg.sql.quote(o) for o in options)
    when = "BEFORE" if "SKIP" in options else "AFTER"
    ops = ["CREATE TYPE mood AS ENUM ('ok', 'sad')", "CREATE TYPE pair AS (n int, s text)",
           "SELECT pgq.create_queue('tq')", "CREATE SCHEMA s",
           f"CREATE TABLE s.\"T x\" (id int PRIMARY KEY, {cols})",
           f"CREATE TRIGGER tg {when} INSERT OR UPDATE OR DELETE ON s.\"T x\" FOR EACH ROW "
           f"EXECUTE FUNCTION pgq.{kind}('tq'{opt})"]

    def value(gen):
        return "NULL" if rnd.random() < 0.25 else rnd.choice(gen)

    for i in range(1, rows + 1):
        names = ", ".join(n for n, _, _ in COLUMNS)
        vals = ", ".join(value(g) for _, _, g in COLUMNS)
        ops.append(f"INSERT INTO s.\"T x\" (id, {names}) VALUES ({i}, {vals})")
    for _ in range(rows):
        n, _, g = rnd.choice(COLUMNS)
        ops.append(f"UPDATE s.\"T x\" SET {n} = {value(g)} WHERE id = {rnd.randint(1, rows)}")
    ops.append("UPDATE s.\"T x\" SET i2 = i2 WHERE id = 1")
    ops.append(f"UPDATE s.\"T x\" SET id = 100 + id WHERE id = {rows}")
    ops.append(f"DELETE FROM s.\"T x\" WHERE id IN (1, 2, {100 + rows})")
    ops.append("SELECT ev_id, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4 "
               "FROM pgq.event_template ORDER BY ev_id")
    ops.append("SELECT count(*) FROM s.\"T x\"")
    return ops


@pytest.mark.parametrize("kind", ["logutriga", "sqltriga", "jsontriga"])
def test_triggers(pair, kind):
    total = 0
    for n, options in enumerate(TRIGGER_OPTIONS):
        ops = trigger_case(kind, options, seed=n)
        # each option set on a fresh table: drop the previous one
        ops = ["DROP SCHEMA IF EXISTS s CASCADE", "DROP TYPE IF EXISTS mood, pair CASCADE",
               "SELECT pgq.drop_queue('tq', true) FROM pgq.queue WHERE queue_name = 'tq'", *ops]
        total += run_both(*pair, ops, f"{kind} {options}")
    OPS_RUN.append(total)


# ---------------------------------------------------------------------------------------
# pgq_node: root, branch and leaf through create, register, subscribe, set provider,
# takeover, tag dead / alive and drop (one database holds one node per queue)
# ---------------------------------------------------------------------------------------

def node_views(q):
    return [f"SELECT * FROM pgq_node.get_node_info('{q}')", f"SELECT * FROM pgq_node.get_worker_state('{q}')",
            f"SELECT * FROM pgq_node.get_subscriber_info('{q}')", f"SELECT * FROM pgq_node.get_consumer_info('{q}')",
            f"SELECT * FROM pgq_node.get_queue_locations('{q}')",
            f"SELECT pgq_node.is_root_node('{q}'), pgq_node.is_leaf_node('{q}')"]


NODE_ROOT = [
    *node_views("aq"),
    "SELECT * FROM pgq_node.register_location('aq', 'n1', 'dbname=n1', false)",
    "SELECT * FROM pgq_node.register_location('aq', 'n2', 'dbname=n2', false)",
    "SELECT * FROM pgq_node.register_location('aq', 'n2', NULL, true)",
    "SELECT * FROM pgq_node.register_location('aq', 'n2', 'dbname=n2b', false)",
    "SELECT * FROM pgq_node.register_location('aq', 'n3', 'dbname=n3', false)",
    "SELECT * FROM pgq_node.create_node('aq', 'root', 'n1', 'w1', NULL, NULL, NULL)",
    "SELECT * FROM pgq_node.create_node('aq', 'root', 'n1', 'w1', NULL, NULL, NULL)",
    "SELECT * FROM pgq_node.create_node('xq', 'root', 'n1', 'w1', 'p', NULL, NULL)",
    "SELECT * FROM pgq_node.create_node('xq', 'root', 'n1', 'w1', NULL, 5, NULL)",
    "SELECT * FROM pgq_node.create_node('xq', 'bogus', 'n1', 'w1', NULL, NULL, NULL)",
    *node_views("aq"),
    "SELECT * FROM pgq_node.register_subscriber('aq', 'n2', 'w2', NULL)",
    "SELECT * FROM pgq_node.register_subscriber('aq', 'n2', 'w2', NULL)",
    "SELECT * FROM pgq_node.register_subscriber('aq', 'n3', 'w3', 1)",
    "SELECT * FROM pgq_node.register_subscriber('aq', 'n4', 'w4', 999)",
    "SELECT pgq.insert_event('aq', 't', 'd')", "SELECT pgq.force_tick('aq')", "SELECT pgq.ticker('aq')",
    "SELECT pgq.insert_event('aq', 't', 'd')", "SELECT pgq.force_tick('aq')", "SELECT pgq.ticker('aq')",
    "SELECT * FROM pgq_node.set_subscriber_watermark('aq', 'n2', 2)",
    "SELECT * FROM pgq_node.set_subscriber_watermark('aq', 'n3', 3)",
    "SELECT * FROM pgq_node.set_subscriber_watermark('aq', 'nosuch', 3)",
    "SELECT * FROM pgq_node.set_subscriber_watermark('nq', 'n2', 3)",
    "SELECT pgq_node.maint_watermark('aq')", "SELECT pgq_node.maint_watermark('nq')",
    "SELECT * FROM pgq.get_consumer_info('aq')",
    "SELECT * FROM pgq_node.set_global_watermark('aq', 2)", "SELECT * FROM pgq_node.set_global_watermark('aq', 1)",
    "SELECT * FROM pgq_node.set_global_watermark('aq', NULL)", "SELECT * FROM pgq_node.set_global_watermark('nq', 2)",
    "SELECT * FROM pgq_node.set_node_attrs('aq', 'a=1&b=2')", "SELECT * FROM pgq_node.set_node_attrs('nq', 'a=1')",
    # consumers of the root queue
    "SELECT * FROM pgq_node.register_consumer('aq', 'cons', 'n1', NULL)",
    "SELECT * FROM pgq_node.register_consumer('aq', 'cons', 'n1', NULL)",
    "SELECT * FROM pgq_node.register_consumer('aq', 'cons2', 'n1', 2)",
    "SELECT * FROM pgq_node.get_consumer_state('aq', 'cons')", "SELECT * FROM pgq_node.get_consumer_state('aq', 'zz')",
    "SELECT * FROM pgq_node.set_consumer_uptodate('aq', 'cons', true)",
    "SELECT * FROM pgq_node.set_consumer_paused('aq', 'cons', true)",
    "SELECT * FROM pgq_node.set_consumer_paused('aq', 'cons', true)",
    "SELECT * FROM pgq_node.set_consumer_completed('aq', 'cons', 3)",
    "SELECT * FROM pgq_node.set_consumer_error('aq', 'cons', 'boom')",
    "SELECT * FROM pgq_node.set_consumer_error('aq', 'zz', 'boom')",
    "SELECT * FROM pgq_node.set_consumer_completed('aq', 'zz', 3)",
    "SELECT * FROM pgq_node.set_consumer_paused('aq', 'zz', false)",
    "SELECT * FROM pgq_node.set_consumer_uptodate('aq', 'zz', false)",
    "SELECT * FROM pgq_node.change_consumer_provider('aq', 'cons', 'n2')",
    "SELECT * FROM pgq_node.change_consumer_provider('aq', 'zz', 'n2')",
    "SELECT * FROM pgq_node.get_consumer_state('aq', 'cons')",
    *node_views("aq"),
    "SELECT * FROM pgq_node.unregister_consumer('aq', 'cons2')",
    "SELECT * FROM pgq_node.unregister_consumer('aq', 'cons2')",
    # tag dead / alive, unsubscribe
    "SELECT * FROM pgq_node.register_location('aq', 'n3', NULL, true)", *node_views("aq"),
    "SELECT * FROM pgq_node.register_location('aq', 'n3', NULL, false)",
    "SELECT * FROM pgq_node.unregister_subscriber('aq', 'n3')",
    "SELECT * FROM pgq_node.unregister_subscriber('aq', 'n3')",
    "SELECT * FROM pgq_node.unregister_location('aq', 'n3')",
    "SELECT * FROM pgq_node.unregister_location('aq', 'n3')",
    "SELECT * FROM pgq_node.unregister_location('aq', 'n1')",
    # switchover: the root steps down to a branch under n2
    "SELECT * FROM pgq_node.demote_root('aq', 1, 'n2')", "SELECT pgq.insert_event('aq', 't', 'x')",
    "SELECT * FROM pgq_node.demote_root('aq', 2, 'n2')", "SELECT * FROM pgq_node.demote_root('aq', 3, 'n2')",
    "SELECT * FROM pgq_node.demote_root('aq', 3, 'n2')", "SELECT * FROM pgq_node.demote_root('aq', 4, 'n2')",
    "SELECT * FROM pgq_node.demote_root('nq', 1, 'n2')",
    *node_views("aq"), "SELECT * FROM pgq.get_queue_info('aq')",
    "SELECT * FROM pgq_node.promote_branch('aq')", "SELECT * FROM pgq_node.promote_branch('aq')",
    "SELECT * FROM pgq_node.promote_branch('nq')", *node_views("aq"),
    "SELECT * FROM pgq_node.drop_node('aq', 'n2')", "SELECT * FROM pgq_node.drop_node('aq', 'n1')",
    "SELECT * FROM pgq_node.drop_node('aq', 'n1')", *node_views("aq"),
]

NODE_BRANCH_LEAF = [
    "SELECT * FROM pgq_node.register_location('bq', 'root', 'dbname=r', false)",
    "SELECT * FROM pgq_node.register_location('bq', 'br', 'dbname=b', false)",
    "SELECT * FROM pgq_node.create_node('bq', 'branch', 'br', 'wb', NULL, 1, NULL)",
    "SELECT * FROM pgq_node.create_node('bq', 'branch', 'br', 'wb', 'root', NULL, NULL)",
    "SELECT * FROM pgq_node.create_node('bq', 'branch', 'br', 'wb', 'root', 1, NULL)",
    *node_views("bq"), "SELECT * FROM pgq.get_queue_info('bq')",
    "SELECT pgq.insert_event('bq', 't', 'd')", "SELECT pgq.ticker('bq')",
    "SELECT pgq.ticker('bq', 2, '2022-01-01', 10)", "SELECT pgq.ticker('bq', 3, '2022-01-02', 20)",
    "SELECT * FROM pgq_node.set_consumer_completed('bq', 'wb', 2)",
    "SELECT * FROM pgq_node.set_consumer_uptodate('bq', 'wb', true)",
    "SELECT * FROM pgq_node.register_subscriber('bq', 'lf', 'wl', NULL)",
    "SELECT * FROM pgq_node.register_location('bq', 'lf', 'dbname=lf', false)",
    "SELECT * FROM pgq_node.register_subscriber('bq', 'lf', 'wl', NULL)",
    "SELECT * FROM pgq_node.set_subscriber_watermark('bq', 'lf', 3)",
    "SELECT * FROM pgq_node.set_global_watermark('bq', 2)", "SELECT pgq_node.maint_watermark('bq')",
    *node_views("bq"),
    "SELECT * FROM pgq_node.change_consumer_provider('bq', 'wb', 'other')",
    "SELECT * FROM pgq_node.register_location('bq', 'other', 'dbname=o', false)",
    "SELECT * FROM pgq_node.change_consumer_provider('bq', 'wb', 'other')", *node_views("bq"),
    # takeover of the dead root: the branch becomes the root
    "SELECT * FROM pgq_node.register_location('bq', 'root', NULL, true)",
    "SELECT * FROM pgq_node.promote_branch('bq')", *node_views("bq"),
    "SELECT pgq.insert_event('bq', 't', 'after promote')", "SELECT pgq.force_tick('bq')", "SELECT pgq.ticker('bq')",
    # a leaf merging into the branch's queue
    "SELECT * FROM pgq_node.register_location('lq', 'lroot', 'dbname=lr', false)",
    "SELECT * FROM pgq_node.create_node('lq', 'leaf', 'br', 'wl', 'lroot', 1, 'nosuch')",
    "SELECT * FROM pgq_node.create_node('lq', 'leaf', 'br', 'wl', 'lroot', 1, 'bq')",
    *node_views("lq"), *node_views("bq"),
    "SELECT * FROM pgq_node.set_partition_watermark('bq', 'lq', 2)",
    "SELECT * FROM pgq_node.set_partition_watermark('bq', 'nosuch', 2)",
    "SELECT * FROM pgq_node.set_consumer_completed('lq', 'wl', 5)",
    "SELECT * FROM pgq_node.set_consumer_paused('lq', 'wl', true)", *node_views("lq"),
    "SELECT * FROM pgq_node.register_subscriber('lq', 'x', 'wx', NULL)",
    "SELECT * FROM pgq_node.demote_root('lq', 1, 'x')",
    "SELECT * FROM pgq_node.promote_branch('lq')",
    # a plain leaf with no queue of its own
    "SELECT * FROM pgq_node.register_location('pq', 'p0', 'dbname=p0', false)",
    "SELECT * FROM pgq_node.create_node('pq', 'leaf', 'p1', 'wp', 'p0', 7, NULL)", *node_views("pq"),
    "SELECT * FROM pgq_node.set_global_watermark('pq', 9)", "SELECT pgq_node.maint_watermark('pq')",
    "SELECT * FROM pgq_node.register_consumer('pq', 'pc', 'p0', 3)",
    "SELECT * FROM pgq_node.get_consumer_state('pq', 'pc')",
    "SELECT * FROM pgq_node.drop_node('lq', 'br')", "SELECT * FROM pgq_node.drop_node('bq', 'br')",
    "SELECT * FROM pgq_node.drop_node('pq', 'p1')", *node_views("bq"), *node_views("pq"),
    "SELECT pgq_node.version() IS NOT NULL, pgq_node.upgrade_schema()",
]

NODE_CASES = {"root_switchover": NODE_ROOT, "branch_leaf_takeover": NODE_BRANCH_LEAF}


@pytest.mark.parametrize("name", sorted(NODE_CASES))
def test_hand_written_pgq_node(pair, name):
    check(pair, NODE_CASES[name], name, state=PGQ_NODE_STATE + PGQ_STATE)


def generate_pgq_node(seed: int, length: int) -> list:
    rnd = random.Random(seed)
    nq = ("aq", "bq", "lq")
    nodes = ("n1", "n2", "n3", "n4")

    def q():
        return rnd.choices(nq, (4, 3, 2))[0]

    def n():
        return rnd.choice(nodes)

    def tick():
        return rnd.choice(["NULL", "1", "2", "3", "5", "50"])

    ops: list = [f"SELECT * FROM pgq_node.register_location('{a}', '{b}', 'dbname={b}', false)"
                 for a in nq for b in nodes[:3]]
    ops += ["SELECT * FROM pgq_node.create_node('aq', 'root', 'n1', 'w1', NULL, NULL, NULL)",
            "SELECT * FROM pgq_node.create_node('bq', 'branch', 'n2', 'w2', 'n1', 1, NULL)",
            "SELECT * FROM pgq_node.create_node('lq', 'leaf', 'n3', 'w3', 'n2', 1, 'bq')"]
    choices = [
        (2, lambda: f"SELECT * FROM pgq_node.register_location('{q()}', '{n()}', "
                    f"{rnd.choice(['NULL', chr(39) + 'dbname=x' + chr(39)])}, {rnd.choice(['true', 'false'])})"),
        (1, lambda: f"SELECT * FROM pgq_node.unregister_location('{q()}', '{n()}')"),
        (1, lambda: f"SELECT * FROM pgq_node.create_node('{q()}', '{rnd.choice(['root', 'branch', 'leaf'])}', "
                    f"'{n()}', 'w', {rnd.choice(['NULL', chr(39) + 'n1' + chr(39)])}, {tick()}, NULL)"),
        (2, lambda: f"SELECT * FROM pgq_node.register_subscriber('{q()}', '{n()}', 'w{rnd.randint(1, 4)}', {tick()})"),
        (1, lambda: f"SELECT * FROM pgq_node.unregister_subscriber('{q()}', '{n()}')"),
        (2, lambda: f"SELECT * FROM pgq_node.set_subscriber_watermark('{q()}', '{n()}', {tick()})"),
        (1, lambda: f"SELECT * FROM pgq_node.set_global_watermark('{q()}', {tick()})"),
        (1, lambda: f"SELECT * FROM pgq_node.set_partition_watermark('bq', '{q()}', {tick()})"),
        (1, lambda: f"SELECT pgq_node.maint_watermark('{q()}')"),
        (2, lambda: f"SELECT * FROM pgq_node.register_consumer('{q()}', 'c{rnd.randint(1, 2)}', '{n()}', {tick()})"),
        (1, lambda: f"SELECT * FROM pgq_node.unregister_consumer('{q()}', 'c{rnd.randint(1, 2)}')"),
        (1, lambda: f"SELECT * FROM pgq_node.change_consumer_provider('{q()}', "
                    f"'{rnd.choice(['c1', 'w1', 'w2', 'w3'])}', '{n()}')"),
        (1, lambda: f"SELECT * FROM pgq_node.set_consumer_uptodate('{q()}', '{rnd.choice(['c1', 'w2'])}', "
                    f"{rnd.choice(['true', 'false'])})"),
        (1, lambda: f"SELECT * FROM pgq_node.set_consumer_paused('{q()}', '{rnd.choice(['c1', 'w2', 'w3'])}', "
                    f"{rnd.choice(['true', 'false'])})"),
        (1, lambda: f"SELECT * FROM pgq_node.set_consumer_completed('{q()}', '{rnd.choice(['c1', 'w2', 'w3'])}', "
                    f"{tick()})"),
        (1, lambda: f"SELECT * FROM pgq_node.set_consumer_error('{q()}', '{rnd.choice(['c1', 'w2'])}', "
                    f"{rnd.choice(['NULL', chr(39) + 'err' + chr(39)])})"),
        (1, lambda: f"SELECT * FROM pgq_node.demote_root('{q()}', {rnd.randint(1, 3)}, '{n()}')"),
        (1, lambda: f"SELECT * FROM pgq_node.promote_branch('{q()}')"),
        (1, lambda: f"SELECT * FROM pgq_node.set_node_attrs('{q()}', 'k={rnd.randint(1, 9)}')"),
        (1, lambda: f"SELECT * FROM pgq_node.drop_node('{q()}', '{n()}')"),
        (1, lambda: f"SELECT pgq.ticker('{q()}', (SELECT coalesce(max(tick_id), 0) + 1 FROM pgq.tick), now(), "
                    f"{rnd.randint(1, 99)})"),
        (1, lambda: (qq := q()) and [f"SELECT pgq.insert_event('{qq}', 't', 'd')", f"SELECT pgq.force_tick('{qq}')",
                                     f"SELECT pgq.ticker('{qq}')"]),
        (5, lambda: rnd.choice([f"SELECT * FROM pgq_node.get_node_info('{q()}')",
                                f"SELECT * FROM pgq_node.get_worker_state('{q()}')",
                                f"SELECT * FROM pgq_node.get_subscriber_info('{q()}')",
                                f"SELECT * FROM pgq_node.get_consumer_info('{q()}')",
                                f"SELECT * FROM pgq_node.get_consumer_state('{q()}', 'c1')",
                                f"SELECT * FROM pgq_node.get_queue_locations('{q()}')",
                                "SELECT * FROM pgq.get_consumer_info()",
                                f"SELECT pgq_node.is_root_node('{q()}'), pgq_node.is_leaf_node('{q()}')"])),
    ]
    weights = [w for w, _ in choices]
    while len(ops) < length:
        op = rnd.choices(choices, weights)[0][1]()
        ops += op if isinstance(op, list) else [op]
    return ops


NODE_SEEDS = [int(os.environ["PGQ_DIFF_SEED"])] if os.environ.get("PGQ_DIFF_SEED") else list(range(1, 9))


@pytest.mark.parametrize("seed", NODE_SEEDS)
def test_generated_pgq_node(pair, seed):
    check(pair, generate_pgq_node(seed, GENERATED_LENGTH), f"pgq_node seed {seed}",
          state=PGQ_NODE_STATE + PGQ_STATE)
