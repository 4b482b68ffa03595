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
    *[s for _ in range(3) for s in ("SELECT count(pgq.insert_event('q', 't', i::text)) FROM generate_series(1, 10) i",
                                    "SELECT pgq.force_tick('q')", "SELECT pgq.ticker('q')")],
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
