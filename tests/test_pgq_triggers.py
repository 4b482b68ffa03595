"""pgq capture triggers (sql/pgq/0004_triggers.sql): the exact events, against a real server.

- the worked examples of reference/pgq_triggers.md §15, byte for byte, written out here;
- every scenario of tests/pgq_trigger_cases.py against tests/pgq_trigger_golden.json: what
  PgQ 3.5's C triggers (Debian postgresql-15-pgq3) produced for the same statements
  (every trigger, option, data type, error text, DDL change, session role);
- the session cache: ALTER TABLE and re-created triggers are picked up.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.pgq_trigger_cases import SCENARIOS, SESSION, run_scenario

GOLDEN = json.loads((Path(__file__).parent / "pgq_trigger_golden.json").read_text(encoding="utf-8"))


@pytest.fixture
def pgq_dsn(make_db) -> str:
    return make_db(("pgq",))


@pytest.fixture
def db(pgq_dsn):
    with psycopg.connect(pgq_dsn, autocommit=True) as conn:
        for s in SESSION:
            conn.execute(s)
        yield conn


def events(conn, queue: str) -> list[tuple]:
    pfx = conn.execute("SELECT queue_data_pfx FROM pgq.queue WHERE queue_name = %s", (queue,)).fetchone()[0]
    return conn.execute(psycopg.sql.SQL(
        "SELECT ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4 FROM {} ORDER BY ev_id").format(
        psycopg.sql.SQL(pfx))).fetchall()


def error_of(conn, statement: str) -> str:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement)
    return info.value.diag.message_primary


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_matches_pgq_c_triggers(pgq_dsn, name):
    got = run_scenario(pgq_dsn, SCENARIOS[name])
    want = GOLDEN[name]
    assert got["steps"] == want["steps"]
    for queue, evs in want["events"].items():
        assert got["events"][queue] == evs, queue


def test_reference_examples_1_to_5(db):
    db.execute("select pgq.create_queue('q_json'), pgq.create_queue('q_url'), pgq.create_queue('q_sql')")
    db.execute("create schema shop")
    db.execute("create table shop.account (id serial primary key, owner text, balance numeric(10,2), "
               "active bool, opened timestamptz)")
    for name, fn, q in (("a_json", "jsontriga", "q_json"), ("b_urlenc", "logutriga", "q_url"),
                        ("c_sql", "sqltriga", "q_sql")):
        db.execute(f"create trigger {name} after insert or update or delete on shop.account "
                   f"for each row execute function pgq.{fn}('{q}')")
    db.execute("insert into shop.account (owner, balance, active, opened) "
               "values ('Ann Lee', 12.5, true, '2024-05-06 07:08:09.5+00')")
    db.execute("update shop.account set balance = 20, active = null where id = 1")
    db.execute("update shop.account set owner = owner where id = 1")
    db.execute("delete from shop.account where id = 1")
    jt = '{"op":"%s","table":["shop","account"],"pkey":["id"]}'
    row1 = '{"id":1,"owner":"Ann Lee","balance":"12.50","active":true,"opened":"2024-05-06T07:08:09.5+00:00"}'
    row2 = '{"id":1,"owner":"Ann Lee","balance":"20.00","active":null,"opened":"2024-05-06T07:08:09.5+00:00"}'
    x = "shop.account"
    assert events(db, "q_json") == [
        (jt % "INSERT", row1, x, None, None, None), (jt % "UPDATE", row2, x, None, None, None),
        (jt % "UPDATE", row2, x, None, None, None), (jt % "DELETE", row2, x, None, None, None)]
    u1 = "id=1&owner=Ann+Lee&balance=12.50&active=t&opened=2024-05-06+07%3a08%3a09.5%2b00"
    u2 = "id=1&owner=Ann+Lee&balance=20.00&active&opened=2024-05-06+07%3a08%3a09.5%2b00"
    assert events(db, "q_url") == [("I:id", u1, x, None, None, None), ("U:id", u2, x, None, None, None),
                                   ("U:id", u2, x, None, None, None), ("D:id", u2, x, None, None, None)]
    assert events(db, "q_sql") == [
        ("I", "(id,owner,balance,active,opened) values ('1','Ann Lee','12.50','t','2024-05-06 07:08:09.5+00')",
         x, None, None, None),
        ("U", "balance='20.00',active=NULL where id='1'", x, None, None, None),
        ("U", "id='1' where id='1'", x, None, None, None),
        ("D", "id='1'", x, None, None, None)]
    # Ex 5: no primary key
    db.execute("create table shop.log (msg text)")
    db.execute("create trigger a after insert or update on shop.log for each row execute function pgq.jsontriga('q_json')")
    db.execute("create trigger b after insert or update on shop.log for each row execute function pgq.logutriga('q_url')")
    db.execute("create trigger c after insert or update on shop.log for each row execute function pgq.sqltriga('q_sql')")
    db.execute("insert into shop.log values ('hi')")
    assert events(db, "q_json")[-1][:3] == ('{"op":"INSERT","table":["shop","log"],"pkey":[]}', '{"msg":"hi"}', "shop.log")
    assert events(db, "q_url")[-1][:3] == ("I:", "msg=hi", "shop.log")
    assert events(db, "q_sql")[-1][:3] == ("I", "(msg) values ('hi')", "shop.log")
    assert error_of(db, "update shop.log set msg = 'ho'") == "Update/Delete on table without pkey"


def test_reference_examples_6_to_12(db):
    db.execute("select pgq.create_queue('q_json'), pgq.create_queue('q_url'), pgq.create_queue('q_sql')")
    db.execute("create schema shop")
    # Ex 6
    db.execute("create table shop.stock (store int, sku text, qty int, note text, primary key (sku, store))")
    db.execute("create trigger b after insert or update or delete on shop.stock for each row "
               "execute function pgq.logutriga('q_url')")
    db.execute("create trigger c after insert or update or delete on shop.stock for each row "
               "execute function pgq.sqltriga('q_sql')")
    db.execute("insert into shop.stock values (7, 'X-1', 3, null)")
    db.execute("update shop.stock set qty = 4, note = 'recount' where sku = 'X-1'")
    assert error_of(db, "update shop.stock set store = 8") == "primary key update not allowed"
    db.execute("delete from shop.stock")
    assert [e[:2] for e in events(db, "q_url")] == [
        ("I:sku,store", "store=7&sku=X-1&qty=3&note"), ("U:sku,store", "store=7&sku=X-1&qty=4&note=recount"),
        ("D:sku,store", "store=7&sku=X-1&qty=4&note=recount")]
    assert [e[:2] for e in events(db, "q_sql")] == [
        ("I", "(store,sku,qty,note) values ('7','X-1','3',null)"),
        ("U", "qty='4',note='recount' where store='7' and sku='X-1'"), ("D", "store='7' and sku='X-1'")]
    # Ex 8
    db.execute('create table shop."Odd Table" (code text, "Label" text, "order" int, raw bytea)')
    for name, fn, q in (("a", "jsontriga", "q_json"), ("b", "logutriga", "q_url"), ("c", "sqltriga", "q_sql")):
        db.execute(f'create trigger {name} after insert on shop."Odd Table" for each row '
                   f"execute function pgq.{fn}('{q}', 'pkey=code')")
    db.execute("insert into shop.\"Odd Table\" values ('k1', E'O''Neil & Co\\\\50% é', 2, '\\xdead')")
    assert events(db, "q_json")[-1][:3] == (
        '{"op":"INSERT","table":["shop","Odd Table"],"pkey":["code"]}',
        '{"code":"k1","Label":"O\'Neil & Co\\\\50% é","order":2,"raw":"\\\\xdead"}', "shop.Odd Table")
    assert events(db, "q_url")[-1][:2] == ("I:code", "code=k1&Label=O%27Neil+%26+Co%5c50%25+%c3%a9&order=2&raw=%5cxdead")
    assert events(db, "q_sql")[-1][:2] == ("I", "(code,\"Label\",\"order\",raw) values ('k1',E'O''Neil & Co\\\\50% é','2',E'\\\\xdead')")
    # Ex 9
    db.execute("create table shop.tmp (id int primary key)")
    for name, fn, q in (("a", "jsontriga", "q_json"), ("b", "logutriga", "q_url"), ("c", "sqltriga", "q_sql")):
        db.execute(f"create trigger {name} after truncate on shop.tmp for each statement execute function pgq.{fn}('{q}')")
    db.execute("truncate shop.tmp")
    assert events(db, "q_json")[-1] == ('{"op":"TRUNCATE","table":["shop","tmp"],"pkey":["id"]}', "{}", "shop.tmp",
                                        None, None, None)
    assert events(db, "q_url")[-1] == ("R", "", "shop.tmp", None, None, None)
    assert events(db, "q_sql")[-1] == ("R", "", "shop.tmp", None, None, None)
    # Ex 10
    db.execute("create table shop.price (id int primary key, amount int, valid date)")
    db.execute("insert into shop.price values (1, 100, '2024-01-31')")
    db.execute("create trigger a after update on shop.price for each row execute function pgq.jsontriga('q_json','backup')")
    db.execute("create trigger b after update on shop.price for each row execute function pgq.logutriga('q_url','backup')")
    db.execute("update shop.price set amount = 90")
    assert events(db, "q_json")[-1][1:4] == ('{"id":1,"amount":90,"valid":"2024-01-31"}', "shop.price",
                                             '{"id":1,"amount":100,"valid":"2024-01-31"}')
    assert events(db, "q_url")[-1][1:4] == ("id=1&amount=90&valid=2024-01-31", "shop.price",
                                            "id=1&amount=100&valid=2024-01-31")
    # Ex 11
    db.execute("create table shop.orders (id int primary key, status text, _pgq_ev_extra3 text)")
    db.execute("create trigger b after insert or update on shop.orders for each row execute function pgq.logutriga("
               "'q_url', 'when=status <> $$draft$$', 'ev_type=$$order.$$ || status', 'ev_extra1=$$orders$$', "
               "'ev_extra4=id * 10')")
    before = len(events(db, "q_url"))
    db.execute("insert into shop.orders values (1, 'draft', 'tag')")
    assert len(events(db, "q_url")) == before
    db.execute("insert into shop.orders values (2, 'paid', 'tag')")
    db.execute("insert into shop.orders values (3, 'paid', null)")
    assert events(db, "q_url")[-2:] == [("order.paid", "id=2&status=paid", "orders", None, "tag", "20"),
                                        ("order.paid", "id=3&status=paid", "orders", None, None, "30")]
    # Ex 12
    db.execute("create table shop.outbox (id int primary key, body text)")
    db.execute("create trigger b before insert on shop.outbox for each row execute function pgq.logutriga('q_url','SKIP')")
    cur = db.execute("insert into shop.outbox values (1, 'hello world')")
    assert cur.rowcount == 0
    assert events(db, "q_url")[-1][:3] == ("I:id", "id=1&body=hello+world", "shop.outbox")
    assert db.execute("select count(*) from shop.outbox").fetchone()[0] == 0
    db.execute("create table shop.frozen (id int primary key)")
    db.execute("create trigger c after insert or update or delete on shop.frozen for each row "
               "execute function pgq.sqltriga('q_sql','deny')")
    assert error_of(db, "insert into shop.frozen values (1)") == \
        "Table 'shop.frozen' to queue 'q_sql': change not allowed (INSERT)"


def test_disabled_queue_and_session_roles(db):
    db.execute("select pgq.create_queue('q')")
    db.execute("create table t (id int primary key)")
    db.execute("create trigger x after insert on t for each row execute function pgq.jsontriga('q')")
    db.execute("update pgq.queue set queue_disable_insert = true where queue_name = 'q'")
    assert error_of(db, "insert into t values (1)") == "Insert into queue disallowed"
    db.execute("set session_replication_role = local")
    db.execute("insert into t values (2)")  # passes through, no event, no error
    db.execute("set session_replication_role = replica")
    db.execute("insert into t values (3)")  # trigger not fired at all
    db.execute("alter table t enable always trigger x")
    db.execute("insert into t values (4)")  # fired; replica role may write to a disabled queue
    db.execute("set session_replication_role = origin")
    assert [e[1] for e in events(db, "q")] == ['{"id":4}']


def test_cache_follows_ddl_and_trigger_changes(db):
    db.execute("select pgq.create_queue('q')")
    db.execute("create table t (id int primary key, a text)")
    db.execute("create trigger x after insert or update on t for each row execute function pgq.logutriga('q')")
    db.execute("insert into t values (1, 'a')")
    db.execute("alter table t add column b int default 7")
    db.execute("insert into t values (2, 'b')")
    db.execute("drop trigger x on t")
    db.execute("create trigger x after insert or update on t for each row execute function pgq.logutriga('q', 'ignore=a')")
    db.execute("insert into t values (3, 'c')")
    db.execute("alter table t drop constraint t_pkey, add primary key (a)")
    db.execute("insert into t values (4, 'd')")
    assert [e[:2] for e in events(db, "q")] == [("I:id", "id=1&a=a"), ("I:id", "id=2&a=b&b=7"), ("I:id", "id=3&b=7"),
                                                ("I:a", "id=4&b=7")]
    # a second session builds its own cache and agrees
    with psycopg.connect(db.info.dsn, autocommit=True) as other:
        other.execute("insert into t values (5, 'e')")
    assert events(db, "q")[-1][:2] == ("I:a", "id=5&b=7")


def test_urlencode_helper(db):
    got = db.execute("select pgq._urlencode(%s)", ("a-Z_0.9 ~*',{\\:+é",)).fetchone()[0]
    assert got == "a-Z_0.9+%7e%2a%27%2c%7b%5c%3a%2b%c3%a9"
    assert db.execute("select pgq._urlencode('')").fetchone()[0] == ""
