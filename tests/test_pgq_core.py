"""pgq (our PL/pgSQL PgQ 3.5): every public function against a real server — results,
return values, error texts — plus the batch semantics that matter: snapshots, long
transactions, private retries, crash re-delivery, rotation under a slow consumer."""

from __future__ import annotations

import threading

import psycopg
import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def db(make_db):
    return make_db(("pgq",))


@pytest.fixture
def c(db):
    with psycopg.connect(db, autocommit=True) as conn:
        yield conn


def one(conn, query, *args):
    return conn.execute(query, args).fetchone()[0]


def error_of(conn, query, *args) -> str:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(query, args)
    return info.value.diag.message_primary


def tick(conn, queue="q"):
    """Force a tick now, whatever the ticker thresholds say."""
    conn.execute("SELECT pgq.force_tick(%s)", (queue,))
    return one(conn, "SELECT pgq.ticker(%s)", queue)


def drain(conn, queue, consumer):
    """All events a consumer gets until no batch is left: list of ev_id (sorted per batch)."""
    seen = []
    while True:
        batch = one(conn, "SELECT pgq.next_batch(%s, %s)", queue, consumer)
        if batch is None:
            return seen
        seen += [r[0] for r in conn.execute("SELECT ev_id FROM pgq.get_batch_events(%s)", (batch,))]
        assert one(conn, "SELECT pgq.finish_batch(%s)", batch) == 1


def test_create_register_batch_cycle(c):
    assert one(c, "SELECT pgq.create_queue('q')") == 1
    assert one(c, "SELECT pgq.create_queue('q')") == 0
    assert one(c, "SELECT pgq.version()") == "3.5"
    # create_queue ticks once immediately (tick 1), consumers start there
    assert c.execute("SELECT tick_id FROM pgq.tick").fetchall() == [(1,)]
    assert one(c, "SELECT pgq.register_consumer('q', 'c1')") == 1
    assert one(c, "SELECT pgq.register_consumer('q', 'c1')") == 0
    assert one(c, "SELECT pgq.next_batch('q', 'c1')") is None
    assert one(c, "SELECT pgq.insert_event('q', 't1', 'd1')") == 1
    assert one(c, "SELECT pgq.insert_event('q', 't2', 'd2', 'e1', 'e2', 'e3', 'e4')") == 2
    assert one(c, "SELECT pgq.current_event_table('q')") == "pgq.event_1_0"
    assert tick(c) == 2
    row = c.execute("SELECT * FROM pgq.next_batch_info('q', 'c1')").fetchone()
    batch, cur_tick, prev_tick = row[0], row[1], row[2]
    assert (cur_tick, prev_tick) == (2, 1)
    events = c.execute("SELECT ev_id, ev_type, ev_data, ev_extra1, ev_extra4, ev_retry "
                       "FROM pgq.get_batch_events(%s)", (batch,)).fetchall()
    assert events == [(1, "t1", "d1", None, None, None), (2, "t2", "d2", "e1", "e4", None)]
    info = c.execute("SELECT queue_name, consumer_name, prev_tick_id, tick_id FROM pgq.get_batch_info(%s)",
                     (batch,)).fetchone()
    assert info == ("q", "c1", 1, 2)
    cinfo = c.execute("SELECT queue_name, consumer_name, last_tick, current_batch, next_tick "
                      "FROM pgq.get_consumer_info()").fetchall()
    assert cinfo == [("q", "c1", 1, batch, 2)]
    # open batch is handed out again (consumer crash before finish_batch)
    assert one(c, "SELECT pgq.next_batch('q', 'c1')") == batch
    assert one(c, "SELECT pgq.finish_batch(%s)", batch) == 1
    notices = []
    c.add_notice_handler(lambda d: notices.append((d.severity, d.message_primary)))
    assert one(c, "SELECT pgq.finish_batch(%s)", batch) == 0
    assert notices == [("WARNING", f"finish_batch: batch {batch} not found")]
    assert one(c, "SELECT pgq.next_batch('q', 'c1')") is None
    qi = c.execute("SELECT queue_name, queue_ntables, queue_cur_table, last_tick_id, ev_new "
                   "FROM pgq.get_queue_info('q')").fetchone()
    assert qi[:4] == ("q", 3, 0, 2)
    assert one(c, "SELECT pgq.unregister_consumer('q', 'c1')") == 1
    assert one(c, "SELECT pgq.unregister_consumer('q', 'c1')") == 0
    assert one(c, "SELECT count(*) FROM pgq.consumer") == 0
    assert one(c, "SELECT pgq.drop_queue('q')") == 1
    assert one(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgq' AND tablename LIKE 'event_1%%'") == 0


ERRORS = [
    ("SELECT pgq.create_queue(NULL)", "Invalid NULL value"),
    ("SELECT pgq.drop_queue('nope', false)", "No such event queue"),
    ("SELECT pgq.set_queue_config('nope', 'ticker_max_count', '1')", "No such event queue"),
    ("SELECT pgq.set_queue_config('q', 'foo', '1')", 'cannot change parameter "foos"'),
    ("SELECT pgq.insert_event_raw('nope', NULL, now(), NULL, NULL, 'a', 'b', NULL, NULL, NULL, NULL)",
     "No such queue"),
    ("SELECT pgq.insert_event('nope', 'a', 'b')", "No such queue"),
    ("SELECT pgq.current_event_table('nope')", "Event queue not found"),
    ("SELECT pgq.register_consumer('nope', 'c')", "Event queue not created yet"),
    ("SELECT pgq.register_consumer_at('q', 'c', 999)", "cannot reposition, tick not found: 999"),
    ("SELECT * FROM pgq.next_batch_info('q', 'zz')", "Not subscriber to queue: q/zz"),
    ("SELECT pgq.next_batch(NULL, NULL)", "Not subscriber to queue: NULL/NULL"),
    ("SELECT * FROM pgq.get_batch_events(77)", "batch not found"),
    ("SELECT pgq.event_retry(77, 1, 5)", "event not found"),
    ("SELECT pgq.batch_retry(77, 5)", "batch_retry: batch 77 not found"),
    ("SELECT pgq.event_retry_raw('q', 'zz', now(), NULL, now(), 0, 'a', 'b', NULL, NULL, NULL, NULL)",
     "consumer not registered"),
    ("SELECT pgq.ticker('nope')", "no such queue"),
    ("SELECT pgq.ticker('nope', 1, now(), 1)", "queue not found or ticker disabled: nope"),
    ("SELECT pgq.ticker('q', 5, now(), 1)", "queue not found or ticker disabled: q"),
]


@pytest.mark.parametrize("query,message", ERRORS, ids=[e[1][:30] for e in ERRORS])
def test_error_texts(c, query, message):
    c.execute("SELECT pgq.create_queue('q')")
    assert error_of(c, query) == message


def test_null_and_empty_results(c):
    c.execute("SELECT pgq.create_queue('q')")
    assert one(c, "SELECT pgq.unregister_consumer('nope', 'c')") == 0
    assert c.execute("SELECT * FROM pgq.get_batch_info(77)").fetchone() == (None,) * 9
    assert one(c, "SELECT pgq.force_tick('nope')") is None
    assert one(c, "SELECT pgq.maint_rotate_tables_step1('nope')") == 0
    assert c.execute("SELECT * FROM pgq.get_queue_info('nope')").fetchall() == []
    assert c.execute("SELECT * FROM pgq.get_consumer_info('nope')").fetchall() == []
    assert one(c, "SELECT pgq.drop_queue(NULL)") is None
    assert c.execute("SELECT * FROM pgq.get_batch_cursor(NULL, 'x', 10)").fetchall() == []
    assert one(c, "SELECT pgq.quote_fqname('a.b.c')") == 'a."b.c"'
    assert one(c, "SELECT pgq.quote_fqname('A b')") == 'public."A b"'
    assert one(c, "SELECT pgq.seq_setval('pgq.event_1_id_seq', 10)") == 10
    assert one(c, "SELECT pgq.seq_setval('pgq.event_1_id_seq', 5)") == 10  # never backwards
    assert one(c, "SELECT pgq.seq_getval('pgq.event_1_id_seq')") == 10


def test_set_queue_config_and_ticker_rules(c):
    c.execute("SELECT pgq.create_queue('q')")
    assert one(c, "SELECT pgq.set_queue_config('q', 'ticker_max_count', '3')") == 1
    assert one(c, "SELECT pgq.set_queue_config('q', 'ticker_max_lag', '1 hour')") == 1
    assert one(c, "SELECT pgq.set_queue_config('q', 'ticker_idle_period', '1 hour')") == 1
    # a second tick right away: only one tick exists, so no idle back-off applies yet
    assert one(c, "SELECT pgq.ticker('q')") == 2
    # now idle: lag < max_lag/2 → no tick
    assert one(c, "SELECT pgq.ticker('q')") is None
    c.execute("SELECT pgq.insert_event('q', 't', 'd') FROM generate_series(1, 2)")
    assert one(c, "SELECT pgq.ticker('q')") is None  # 2 new < max_count 3, lag < max_lag
    c.execute("SELECT pgq.insert_event('q', 't', 'd') FROM generate_series(1, 2)")
    assert one(c, "SELECT pgq.ticker('q')") == 3  # 4 new ≥ 3
    # force_tick bumps the event sequence by max_count*2+1000 past nextval
    before = one(c, "SELECT pgq.seq_getval('pgq.event_1_id_seq')")
    assert one(c, "SELECT pgq.force_tick('q')") == 3
    assert one(c, "SELECT pgq.seq_getval('pgq.event_1_id_seq')") == before + 1 + 3 * 2 + 1000
    assert one(c, "SELECT pgq.ticker('q')") == 4
    assert one(c, "SELECT pgq.set_queue_config('q', 'ticker_paused', 'true')") == 1
    assert error_of(c, "SELECT pgq.ticker('q')") == "Ticker has been paused for this queue"
    assert one(c, "SELECT pgq.ticker()") == 0
    c.execute("SELECT pgq.set_queue_config('q', 'ticker_paused', 'false')")
    c.execute("SELECT pgq.set_queue_config('q', 'external_ticker', 'true')")
    assert error_of(c, "SELECT pgq.ticker('q')") == "This queue has external tick source."
    # external ticker: tick id, time and event position from outside; sequences follow
    assert one(c, "SELECT pgq.ticker('q', 10, now(), 5000)") == 10
    assert one(c, "SELECT pgq.seq_getval('pgq.event_1_tick_seq')") == 10
    assert one(c, "SELECT pgq.seq_getval('pgq.event_1_id_seq')") == 5000


def test_disable_insert_and_replica_role(c):
    c.execute("SELECT pgq.create_queue('q')")
    c.execute("UPDATE pgq.queue SET queue_disable_insert = true")
    assert error_of(c, "SELECT pgq.insert_event('q', 'a', 'b')") == "Insert into queue disallowed"
    assert error_of(c, "SELECT pgq.current_event_table('q')") == "Writing to queue disabled"
    for role in ("local", "origin"):
        c.execute(f"SET session_replication_role = {role}")
        assert error_of(c, "SELECT pgq.insert_event('q', 'a', 'b')") == "Insert into queue disallowed"
    c.execute("SET session_replication_role = replica")
    # the three refused inserts used up ids 1..3, as PgQ's C insert does (issue 16)
    assert one(c, "SELECT pgq.insert_event('q', 'a', 'b')") == 4
    assert one(c, "SELECT pgq.current_event_table('q')") == "pgq.event_1_0"


def test_per_tx_limit(c):
    c.execute("SELECT pgq.create_queue('queue_tx_limit')")
    c.execute("UPDATE pgq.queue SET queue_per_tx_limit = 2")
    with c.transaction():
        c.execute("SELECT pgq.insert_event('queue_tx_limit', 'a', 'b')")
        c.execute("SELECT pgq.insert_event('queue_tx_limit', 'a', 'b')")
        assert error_of(c, "SELECT pgq.insert_event('queue_tx_limit', 'a', 'b')") == \
            "Queue 'queue_tx_limit' allows max 2 events from one TX"
        raise psycopg.Rollback()
    # a new transaction starts counting again
    c.execute("SELECT pgq.insert_event('queue_tx_limit', 'a', 'b')")
    c.execute("UPDATE pgq.queue SET queue_per_tx_limit = 0")
    assert error_of(c, "SELECT pgq.insert_event('queue_tx_limit', 'a', 'b')") == \
        "Queue 'queue_tx_limit' allows max 0 events from one TX"


def test_long_transaction_lands_in_the_batch_that_first_sees_it(db, c):
    c.execute("SELECT pgq.create_queue('q')")
    c.execute("SELECT pgq.register_consumer('q', 'c')")
    with psycopg.connect(db) as long_tx:
        long_tx.execute("SELECT pgq.insert_event('q', 'long', 'first')")  # txid older than what follows
        short = one(c, "SELECT pgq.insert_event('q', 'short', 'x')")
        tick(c)  # the long transaction is still open: not in this batch
        assert drain(c, "q", "c") == [short]
        tick(c)
        long_tx.commit()
    assert drain(c, "q", "c") == []  # not yet: the tick after its commit delivers it
    tick(c)
    got = drain(c, "q", "c")
    assert len(got) == 1
    assert one(c, "SELECT ev_type FROM pgq.event_1 WHERE ev_id = %s", got[0]) == "long"


def test_batch_cursor_and_extra_where(c):
    c.execute("SELECT pgq.create_queue('q')")
    c.execute("SELECT pgq.register_consumer('q', 'c')")
    c.execute("SELECT pgq.insert_event('q', 't' || i % 2, 'd' || i) FROM generate_series(1, 10) i")
    tick(c)
    batch = one(c, "SELECT pgq.next_batch('q', 'c')")
    with c.transaction():
        first = c.execute("SELECT ev_id FROM pgq.get_batch_cursor(%s, 'cur', 3)", (batch,)).fetchall()
        rest = c.execute("FETCH ALL FROM cur").fetchall()
    assert [r[0] for r in first + rest] == list(range(1, 11))
    with c.transaction():
        odd = c.execute("SELECT ev_id FROM pgq.get_batch_cursor(%s, 'cur2', 100, 'ev_type = ''t1''')",
                        (batch,)).fetchall()
    assert [r[0] for r in odd] == [1, 3, 5, 7, 9]
    sql_text = one(c, "SELECT pgq.batch_event_sql(%s)", batch)
    assert sql_text.endswith(" order by 1")
    assert c.execute("SELECT * FROM pgq.batch_event_tables(%s)", (batch,)).fetchall()


def test_retries_are_private_to_their_consumer(c):
    c.execute("SELECT pgq.create_queue('q')")
    c.execute("SELECT pgq.register_consumer('q', 'a')")
    c.execute("SELECT pgq.register_consumer('q', 'b')")
    c.execute("SELECT pgq.insert_event('q', 't', 'd' || i) FROM generate_series(1, 3) i")
    tick(c)
    batch = one(c, "SELECT pgq.next_batch('q', 'a')")
    assert one(c, "SELECT pgq.event_retry(%s, 2::bigint, 0)", batch) == 1
    assert one(c, "SELECT pgq.event_retry(%s, 2::bigint, 0)", batch) == 0  # already queued
    assert error_of(c, "SELECT pgq.event_retry(%s, 99::bigint, 0)", batch) == "event not found"
    c.execute("SELECT pgq.finish_batch(%s)", (batch,))
    assert drain(c, "q", "b") == [1, 2, 3]
    assert one(c, "SELECT count(*) FROM pgq.retry_queue") == 1
    assert one(c, "SELECT pgq.maint_retry_events()") == 1
    assert one(c, "SELECT pgq.maint_retry_events()") == 0
    tick(c)
    batch = one(c, "SELECT pgq.next_batch('q', 'a')")
    rows = c.execute("SELECT ev_id, ev_retry, ev_data FROM pgq.get_batch_events(%s)", (batch,)).fetchall()
    assert rows == [(2, 1, "d2")]
    # batch_retry: the whole batch, skipping what is queued already
    assert one(c, "SELECT pgq.batch_retry(%s, 60)", batch) == 1
    assert one(c, "SELECT pgq.batch_retry(%s, 60)", batch) == 0
    c.execute("SELECT pgq.finish_batch(%s)", (batch,))
    assert drain(c, "q", "b") == []  # b never sees a's retries
    # event_retry_raw: straight into the retry queue; unregister drops the consumer's retries
    assert one(c, "SELECT pgq.event_retry_raw('q', 'a', now(), 666, now(), 0, 'x', 'y', "
                  "NULL, NULL, NULL, NULL)") == 666
    assert one(c, "SELECT pgq.unregister_consumer('q', 'a')") == 1
    assert one(c, "SELECT count(*) FROM pgq.retry_queue") == 0


def test_register_at_repositions(c):
    c.execute("SELECT pgq.create_queue('q')")
    c.execute("SELECT pgq.register_consumer('q', 'c')")
    first = one(c, "SELECT pgq.insert_event('q', 't', 'd')")
    tick(c)
    assert drain(c, "q", "c") == [first]
    assert one(c, "SELECT pgq.register_consumer_at('q', 'c', 1)") == 0  # rewind to tick 1
    assert drain(c, "q", "c") == [first]
    assert one(c, "SELECT pgq.register_consumer_at('q', 'new', 1)") == 1
    assert drain(c, "q", "new") == [first]
    c.execute("DELETE FROM pgq.tick")
    assert error_of(c, "SELECT pgq.register_consumer('q', 'other')") == \
        "No ticks for this queue.  Please run ticker on database."


def test_next_batch_custom_thresholds(c):
    c.execute("SELECT pgq.create_queue('q')")
    c.execute("SELECT pgq.register_consumer('q', 'c')")
    c.execute("SELECT pgq.insert_event('q', 't', 'd')")
    tick(c)
    for args in (("1 hour", None, None), (None, 100000, None), (None, None, "1 hour")):
        row = c.execute("SELECT * FROM pgq.next_batch_custom('q', 'c', %s, %s, %s)", args).fetchone()
        assert row == (None,) * 7
    row = c.execute("SELECT * FROM pgq.next_batch_custom('q', 'c', NULL, 1, NULL)").fetchone()
    assert row[0] is not None and row[1] == 2


def test_rotation_waits_for_the_slowest_consumer(c):
    c.execute("SELECT pgq.create_queue('q')")
    c.execute("SELECT pgq.register_consumer('q', 'fast')")
    c.execute("SELECT pgq.register_consumer('q', 'slow')")
    c.execute("UPDATE pgq.queue SET queue_rotation_period = '0'")
    expected = []
    for round_ in range(4):
        expected += [one(c, "SELECT pgq.insert_event('q', 't', %s)", str(round_))]
        tick(c)
        assert drain(c, "q", "fast") == [expected[-1]]
        ops = c.execute("SELECT func_name FROM pgq.maint_operations()").fetchall()
        assert ("pgq.maint_rotate_tables_step1",) in ops or ("pgq.maint_rotate_tables_step2",) in ops
        c.execute("SELECT pgq.maint_rotate_tables_step1('q')")
        c.execute("SELECT pgq.maint_rotate_tables_step2()")
    # the slow consumer, still at tick 1, pins the tables: no rotation, every event still there
    assert one(c, "SELECT queue_cur_table FROM pgq.queue") == 0
    assert drain(c, "q", "slow") == expected
    step1_before = one(c, "SELECT queue_switch_step1 FROM pgq.queue")
    for _ in range(3):
        c.execute("SELECT pgq.insert_event('q', 't', 'later')")
        tick(c)
        drain(c, "q", "fast")
        drain(c, "q", "slow")
        c.execute("SELECT pgq.maint_rotate_tables_step1('q')")
        c.execute("SELECT pgq.maint_rotate_tables_step2()")
    assert one(c, "SELECT queue_switch_step1 FROM pgq.queue") > step1_before  # rotation resumed
    # the slow consumer falls behind again, mid-rotation: still loses nothing
    behind = []
    for _ in range(5):
        behind.append(one(c, "SELECT pgq.insert_event('q', 't', 'behind')"))
        tick(c)
        assert drain(c, "q", "fast") == [behind[-1]]
        c.execute("SELECT pgq.maint_rotate_tables_step1('q')")
        c.execute("SELECT pgq.maint_rotate_tables_step2()")
    assert drain(c, "q", "slow") == behind
    assert one(c, "SELECT min(tick_id) FROM pgq.tick") > 1  # old ticks pruned


def test_maint_operations_lists_extra_maint_and_step2(c):
    c.execute("SELECT pgq.create_queue('q')")
    c.execute("UPDATE pgq.queue SET queue_extra_maint = '{x.y,z.w}', queue_rotation_period = '0'")
    ops = c.execute("SELECT func_name, func_arg FROM pgq.maint_operations()").fetchall()
    assert ops[:4] == [("pgq.maint_rotate_tables_step1", "q"), ("pgq.maint_rotate_tables_step2", None),
                       ("x.y", "q"), ("z.w", "q")]
    assert c.execute("SELECT * FROM pgq.maint_tables_to_vacuum()").fetchall() == []  # autovacuum on


@pytest.mark.slow
def test_concurrent_producers_exactly_once(db, c):
    """Short and long producer transactions interleaved with ticks: each consumer gets
    every committed event exactly once; rolled-back ones never."""
    c.execute("SELECT pgq.create_queue('q')")
    for name in ("c1", "c2"):
        c.execute("SELECT pgq.register_consumer('q', %s)", (name,))
    stop = threading.Event()
    committed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def producer(long: bool, seed: int):
        try:
            with psycopg.connect(db) as p:
                n = 0
                while not stop.is_set():
                    ids = [one(p, "SELECT pgq.insert_event('q', 't', %s)", f"{seed}-{n}-{i}")
                           for i in range(20 if long else 2)]
                    if long:
                        stop.wait(0.15)
                    n += 1
                    if n % 7 == 0:
                        p.rollback()
                        continue
                    p.commit()
                    with lock:
                        committed.extend(ids)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(i % 2 == 0, i)) for i in range(4)]
    for t in threads:
        t.start()
    got = {"c1": [], "c2": []}
    with psycopg.connect(db, autocommit=True) as ticker:
        for _ in range(40):
            tick(ticker)
            got["c1"] += drain(c, "q", "c1")
            stop.wait(0.03)
        stop.set()
        for t in threads:
            t.join()
        tick(ticker)
    got["c1"] += drain(c, "q", "c1")
    got["c2"] += drain(c, "q", "c2")
    assert not errors
    assert len(committed) > 100
    for name, ids in got.items():
        assert len(ids) == len(set(ids)), f"{name} got duplicates"
        assert sorted(ids) == sorted(committed), f"{name} lost or invented events"


def test_concurrent_next_batch_same_consumer_gets_one_batch(db, c):
    c.execute("SELECT pgq.create_queue('q')")
    c.execute("SELECT pgq.register_consumer('q', 'c')")
    c.execute("SELECT pgq.insert_event('q', 't', 'd')")
    tick(c)
    with psycopg.connect(db) as a, psycopg.connect(db) as b:
        first = one(a, "SELECT pgq.next_batch('q', 'c')")
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("b", one(b, "SELECT pgq.next_batch('q', 'c')")))
        t.start()
        a.commit()
        t.join(10)
        b.commit()
    assert result["b"] == first


def test_roles_and_grants(db, c):
    c.execute("SELECT pgq.create_queue('q')")
    for role in ("pgq_reader", "pgq_writer", "pgq_admin"):
        assert one(c, "SELECT count(*) FROM pg_roles WHERE rolname = %s", role) == 1
    assert one(c, "SELECT pg_has_role('pgq_admin', 'pgq_reader', 'MEMBER')")
    assert one(c, "SELECT pg_has_role('pgq_admin', 'pgq_writer', 'MEMBER')")
    c.execute("DROP ROLE IF EXISTS pgq_t_prod; DROP ROLE IF EXISTS pgq_t_cons; DROP ROLE IF EXISTS pgq_t_none")
    c.execute("CREATE ROLE pgq_t_prod IN ROLE pgq_writer; CREATE ROLE pgq_t_cons IN ROLE pgq_reader; "
              "CREATE ROLE pgq_t_none")
    try:
        c.execute("SET ROLE pgq_t_prod")
        assert one(c, "SELECT pgq.insert_event('q', 'a', 'b')") == 1
        assert error_of(c, "SELECT pgq.register_consumer('q', 'x')") == \
            "permission denied for function register_consumer"
        c.execute("RESET ROLE; SET ROLE pgq_t_cons")
        assert one(c, "SELECT pgq.register_consumer('q', 'x')") == 1
        assert error_of(c, "SELECT pgq.insert_event('q', 'a', 'b')") == "permission denied for function insert_event"
        assert error_of(c, "SELECT pgq.create_queue('z')") == "permission denied for function create_queue"
        c.execute("RESET ROLE; SET ROLE pgq_t_none")
        assert c.execute("SELECT queue_name FROM pgq.get_queue_info()").fetchall() == [("q",)]
        assert error_of(c, "SELECT pgq.ticker()") == "permission denied for function ticker"
        c.execute("RESET ROLE")
    finally:
        c.execute("RESET ROLE")
        c.execute("SELECT pgq.unregister_consumer('q', 'x')")
        c.execute("DROP ROLE pgq_t_prod; DROP ROLE pgq_t_cons; DROP ROLE pgq_t_none")


def test_two_databases_install_in_one_cluster(empty_dsn, pg_cluster):
    """Roles are cluster-wide: a second database installs without tripping over them."""
    from engine import schema

    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        done = schema.install(conn, ["pgtt", "pgq"])
        assert any(line.startswith("pgq: installed") for line in done)
        assert one(conn, "SELECT pgq.create_queue('x')") == 1
