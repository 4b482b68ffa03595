"""Issue 16: what the real PgQ 3.5 / pgq_node 3.5 extensions answer, asserted on our modules
alone (so they also run where the real extensions are missing, e.g. PostgreSQL 18; the
values were read from the extensions by tests/test_pgq_differential.py)."""

from __future__ import annotations

import json

import psycopg
import pytest


@pytest.fixture
def db(make_db):
    with psycopg.connect(make_db(("pgq_node",)), autocommit=True) as conn:
        yield conn


def one(conn, text):
    return conn.execute(text).fetchone()


def error(conn, text):
    with pytest.raises(psycopg.Error) as exc:
        conn.execute(text)
    return exc.value.sqlstate, exc.value.diag.message_primary


def test_jsontriga_null_numbers_are_json_null(db):
    db.execute("SELECT pgq.create_queue('q')")
    db.execute("CREATE TABLE t (id int PRIMARY KEY, txt text, val numeric, f4 float4, f8 float8)")
    db.execute("CREATE TRIGGER tg AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW "
               "EXECUTE FUNCTION pgq.jsontriga('q', 'backup')")
    db.execute("INSERT INTO t VALUES (1, 'text1', NULL, NULL, NULL)")
    db.execute("UPDATE t SET val = 2.5 WHERE id = 1")
    db.execute("DELETE FROM t")
    rows = db.execute("SELECT ev_data, ev_extra2 FROM pgq.event_template ORDER BY ev_id").fetchall()
    assert rows[0][0] == '{"id":1,"txt":"text1","val":null,"f4":null,"f8":null}'
    assert rows[1] == ('{"id":1,"txt":"text1","val":"2.5","f4":null,"f8":null}', rows[0][0])
    assert json.loads(rows[2][0])["val"] == "2.5"


def three_ticks_of_ten(db, queue="q"):
    db.execute(f"SELECT pgq.create_queue('{queue}')")
    db.execute(f"SELECT pgq.register_consumer('{queue}', 'c')")
    db.execute(f"SELECT pgq.set_queue_config('{queue}', 'ticker_max_count', '9')")
    for _ in range(3):
        db.execute(f"SELECT count(pgq.insert_event('{queue}', 't', i::text)) FROM generate_series(1, 10) i")
        assert one(db, f"SELECT pgq.ticker('{queue}')")[0] is not None


def test_next_batch_custom_takes_the_newest_tick_within_twice_the_minimum(db):
    three_ticks_of_ten(db)
    row = one(db, "SELECT batch_id, prev_tick_id, cur_tick_id, cur_tick_event_seq - prev_tick_event_seq "
                  "FROM pgq.next_batch_custom('q', 'c', NULL, 15, NULL)")
    assert row[1:3] == (1, 4)  # all three ticks; the earliest reaching 15 would be tick 3
    assert one(db, f"SELECT count(*) FROM pgq.get_batch_events({row[0]})")[0] == 30
    db.execute(f"SELECT pgq.finish_batch({row[0]})")
    db.execute("SELECT pgq.register_consumer_at('q', 'c', 1)")
    # 30 events are more than twice 5: the first tick that reaches 5
    assert one(db, "SELECT cur_tick_id FROM pgq.next_batch_custom('q', 'c', NULL, 5, NULL)")[0] == 2


def test_min_count_100000_on_200000_events_is_one_batch(db):
    db.execute("SELECT pgq.create_queue('big')")
    db.execute("SELECT pgq.register_consumer('big', 'c')")
    db.execute("SELECT pgq.set_queue_config('big', 'external_ticker', 'on')")
    db.execute("SELECT count(pgq.ticker('big', i, now(), (i - 1) * 1000)) FROM generate_series(2, 201) i")
    row = one(db, "SELECT prev_tick_id, cur_tick_id, cur_tick_event_seq FROM "
                  "pgq.next_batch_custom('big', 'c', NULL, 100000, NULL)")
    assert row == (1, 201, 200000)


def test_refused_inserts_use_up_an_event_id(db):
    db.execute("SELECT pgq.create_queue('q')")
    assert one(db, "SELECT pgq.insert_event('q', 'a', 'b')")[0] == 1
    db.execute("UPDATE pgq.queue SET queue_disable_insert = true")
    assert error(db, "SELECT pgq.insert_event('q', 'a', 'b')") == ("XX000", "Insert into queue disallowed")
    db.execute("UPDATE pgq.queue SET queue_disable_insert = false, queue_per_tx_limit = 1")
    assert error(db, "DO $$ BEGIN PERFORM pgq.insert_event('q', 'a', '1'); PERFORM pgq.insert_event('q', 'a', '2');"
                     " END $$") == ("XX000", "Queue 'q' allows max 1 events from one TX")
    db.execute("UPDATE pgq.queue SET queue_per_tx_limit = NULL")
    assert one(db, "SELECT pgq.insert_event('q', 'a', 'b')")[0] == 5
    assert error(db, "SELECT pgq.insert_event(NULL, 'a', 'b')") == ("XX000", "Queue name must not be NULL")
    assert error(db, "SELECT pgq.insert_event('nosuch', 'a', 'b')") == ("XX000", "No such queue")


def test_get_node_info_target_for_is_null(db):
    db.execute("SELECT * FROM pgq_node.register_location('aq', 'n1', 'dbname=n1', false)")
    db.execute("SELECT * FROM pgq_node.create_node('aq', 'root', 'n1', 'w1', NULL, NULL, NULL)")
    db.execute("SELECT * FROM pgq_node.register_location('lq', 'n0', 'dbname=n0', false)")
    db.execute("SELECT * FROM pgq_node.register_location('lq', 'n1', 'dbname=n1', false)")
    db.execute("SELECT * FROM pgq_node.register_location('pq', 'n1', 'dbname=n1', false)")
    db.execute("SELECT * FROM pgq_node.create_node('lq', 'leaf', 'n1', 'wl', 'n0', 1, 'aq')")
    db.execute("SELECT * FROM pgq_node.register_location('pq', 'n0', 'dbname=n0', false)")
    db.execute("SELECT * FROM pgq_node.create_node('pq', 'leaf', 'n1', 'wp', 'n0', 1, NULL)")
    assert one(db, "SELECT target_for FROM pgq_node.get_node_info('aq')")[0] == ["lq"]
    db.execute("SELECT * FROM pgq_node.drop_node('lq', 'n1')")
    assert one(db, "SELECT target_for FROM pgq_node.get_node_info('aq')")[0] is None
    assert one(db, "SELECT target_for FROM pgq_node.get_node_info('pq')")[0] is None
    assert one(db, "SELECT ret_code, ret_note FROM pgq_node.get_node_info(NULL)") == (404, None)
