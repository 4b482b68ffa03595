"""Scenarios for the pgq capture-trigger tests (tests/test_pgq_triggers*.py).

Each scenario is a list of SQL statements run one by one in autocommit mode on a database
with the pgq module (ours, or the real extension for the parity test). A scenario's result is
what each statement did ("ok" or the primary error message) and the events of every queue,
as [ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4] in ev_id order.
"""

from __future__ import annotations

import psycopg

SESSION = ("SET DateStyle = 'ISO, YMD'", "SET TimeZone = 'UTC'", "SET lc_messages = 'C'",
           "SET bytea_output = 'hex'", "SET IntervalStyle = 'postgres'", "SET extra_float_digits = 1",
           "SET client_min_messages = warning")

ALL3 = """
create trigger a_json after insert or update or delete on {t} for each row execute function pgq.jsontriga('q_json'{o});
create trigger b_urlenc after insert or update or delete on {t} for each row execute function pgq.logutriga('q_url'{o});
create trigger c_sql after insert or update or delete on {t} for each row execute function pgq.sqltriga('q_sql'{o});
"""


def all3(table: str, *options: str) -> str:
    extra = "".join(", " + psycopg.sql.quote(o) for o in options) if options else ""
    return ALL3.format(t=table, o=extra)


def queues(*names: str) -> str:
    return "select " + ", ".join(f"pgq.create_queue('{n}')" for n in names)


Q3 = queues("q_json", "q_url", "q_sql")

SCENARIOS: dict[str, list[str]] = {
    # reference §15 Ex 1-4
    "ex1_4_account": [
        Q3, "create schema shop",
        "create table shop.account (id serial primary key, owner text, balance numeric(10,2), active bool, opened timestamptz)",
        all3("shop.account"),
        "insert into shop.account (owner, balance, active, opened) values ('Ann Lee', 12.5, true, '2024-05-06 07:08:09.5+00')",
        "update shop.account set balance = 20, active = null where id = 1",
        "update shop.account set owner = owner where id = 1",
        "delete from shop.account where id = 1",
    ],
    # Ex 5: no primary key
    "ex5_no_pkey": [
        Q3, "create schema shop", "create table shop.log (msg text)", all3("shop.log"),
        "insert into shop.log values ('hi')",
        "update shop.log set msg = 'ho'",
        "delete from shop.log",
    ],
    # Ex 6: composite key declared in another order
    "ex6_composite_key": [
        Q3, "create schema shop",
        "create table shop.stock (store int, sku text, qty int, note text, primary key (sku, store))",
        all3("shop.stock"),
        "insert into shop.stock values (7, 'X-1', 3, null)",
        "update shop.stock set qty = 4, note = 'recount' where sku = 'X-1'",
        "update shop.stock set store = 8",
        "delete from shop.stock",
    ],
    # Ex 7: ignore=
    "ex7_ignore": [
        Q3, "create schema shop", "create table shop.item (id int primary key, name text, hits int)",
        all3("shop.item", "ignore=hits"),
        "insert into shop.item values (1, 'pen', 0)",
        "update shop.item set hits = hits + 1",
        "update shop.item set hits = hits + 1, name = 'red pen'",
        "update shop.item set name = name",
        "delete from shop.item",
    ],
    # Ex 8: pkey=, names needing quotes, special characters
    "ex8_odd_names": [
        Q3, "create schema shop",
        'create table shop."Odd Table" (code text, "Label" text, "order" int, raw bytea)',
        all3('shop."Odd Table"', "pkey=code"),
        "insert into shop.\"Odd Table\" values ('k1', E'O''Neil & Co\\\\50% é', 2, '\\xdead')",
        'update shop."Odd Table" set "order" = 3',
        'delete from shop."Odd Table"',
    ],
    # Ex 9: truncate, and deny on truncate
    "ex9_truncate": [
        Q3, "create schema shop", "create table shop.tmp (id int primary key)",
        "create trigger a_json after truncate on shop.tmp for each statement execute function pgq.jsontriga('q_json')",
        "create trigger b_urlenc after truncate on shop.tmp for each statement execute function pgq.logutriga('q_url')",
        "create trigger c_sql after truncate on shop.tmp for each statement execute function pgq.sqltriga('q_sql')",
        "truncate shop.tmp",
        "create table shop.tmp2 (id int)",
        "create trigger d after truncate on shop.tmp2 for each statement execute function pgq.sqltriga('q_sql', 'deny')",
        "truncate shop.tmp2",
        "create table shop.tmp3 (id int)",
        "create trigger d after truncate on shop.tmp3 for each statement execute function pgq.logutriga('q_url', 'ignore=id')",
        "truncate shop.tmp3",
        "drop trigger d on shop.tmp3",
        "create trigger d after truncate on shop.tmp3 for each statement execute function pgq.logutriga('q_url', 'pkey=id')",
        "truncate shop.tmp3",
        "drop trigger d on shop.tmp3",
        "create trigger d after truncate on shop.tmp3 for each statement execute function pgq.logutriga('q_url', 'backup')",
        "truncate shop.tmp3",
        "drop trigger d on shop.tmp3",
        "create trigger d after truncate on shop.tmp3 for each statement execute function pgq.logutriga('q_url', 'when=true')",
        "truncate shop.tmp3",
        "drop trigger d on shop.tmp3",
        "create trigger d before truncate on shop.tmp3 for each statement execute function pgq.jsontriga('q_json', 'SKIP')",
        "insert into shop.tmp3 values (1)",
        "truncate shop.tmp3",
        "select count(*) = 0 from shop.tmp3",
    ],
    # Ex 10: backup
    "ex10_backup": [
        Q3, "create schema shop", "create table shop.price (id int primary key, amount int, valid date)",
        "insert into shop.price values (1, 100, '2024-01-31')",
        all3("shop.price", "backup"),
        "update shop.price set amount = 90",
        "insert into shop.price values (2, 5, null)",
        "delete from shop.price where id = 2",
    ],
    # Ex 11: when=, expression overrides, magic column
    "ex11_when_overrides": [
        Q3, "create schema shop", "create table shop.orders (id int primary key, status text, _pgq_ev_extra3 text)",
        "create trigger b after insert or update on shop.orders for each row execute function pgq.logutriga('q_url', "
        "'when=status <> $$draft$$', 'ev_type=$$order.$$ || status', 'ev_extra1=$$orders$$', 'ev_extra4=id * 10')",
        "insert into shop.orders values (1, 'draft', 'tag')",
        "insert into shop.orders values (2, 'paid', 'tag')",
        "insert into shop.orders values (3, 'paid', null)",
    ],
    # Ex 12: SKIP and deny
    "ex12_skip_deny": [
        Q3, "create schema shop", "create table shop.outbox (id int primary key, body text)",
        "create trigger b before insert on shop.outbox for each row execute function pgq.logutriga('q_url', 'SKIP')",
        "insert into shop.outbox values (1, 'hello world')",
        "select count(*) = 0 from shop.outbox",
        "create table shop.frozen (id int primary key)",
        "create trigger c after insert or update or delete on shop.frozen for each row execute function pgq.sqltriga('q_sql', 'deny')",
        "insert into shop.frozen values (1)",
        "alter table shop.frozen disable trigger c",
        "insert into shop.frozen values (1)",
        "alter table shop.frozen enable trigger c",
        "update shop.frozen set id = 2",
        "delete from shop.frozen",
    ],
    # every data type the upstream trigger_types test covers, scalar and as arrays
    "types": [
        Q3,
        """create table ty (id int primary key,
            t text default E'a\\tb\\u0001"\\\\é ''q'' $%,@~*{}', n text,
            by bytea default '\\x00ff01', b bool default true, tz timestamptz default '2009-09-19 11:59:48.599+02',
            ts timestamp default '2009-09-19 11:59:48.599', d date default '2009-09-19', tm time default '11:59:48.599',
            iv interval default '2 minutes', i2 int2 default 32767, i4 int4 default -2147483648,
            i8a int8 default 9223372036854775807, i8b int8 default -9223372036854775808, o oid default 123,
            x xid default '12345', r real default 100100.666, f float8 default 1.0e-300, nm numeric(40,15) default 100100.600500566501811,
            nan numeric default 'NaN', bx box default '((1.1,2.1),(5.6,5.7))', u uuid default 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            j json default '{"a": [false, null, true]}', jb jsonb default '[1, "x"]', c char(4) default 'ab', vc varchar(10) default 'v c',
            ip inet default '1.2.3.4', inf timestamptz default 'infinity', bc date default '0044-03-15 BC', e text default '',
            at text[] default '{a,"b c",NULL}', ab bool[] default '{t,t}', ai int4[] default '{10010,10010}', an numeric[] default '{NULL,NULL}',
            ats timestamptz[] default '{"2009-09-19 11:59:48+00","2009-09-19 11:59:48+00"}', aj json[] default array['{"k":1}'::json],
            rng int4range default '[1,5)', pt point default '(1,2)')""",
        all3("ty"),
        "insert into ty (id) values (1)",
        "update ty set n = 'x', f = 'Infinity', r = '-Infinity'",
        "update ty set j = '{\"a\":1}'",
        "update ty set pt = '(1,2)', bx = '((1.1,2.1),(5.6,5.7))', ab = '{t,t}'",
        "delete from ty",
    ],
    "types_domain_enum_composite": [
        Q3, "create domain dint as int4", "create type mood as enum ('ok', 'sad')", "create type pair as (a int, b text)",
        "create table tc (id dint primary key, m mood, p pair, pn pair, ps pair[])",
        all3("tc"),
        "insert into tc values (1, 'ok', '(1,x)', '(,)', array['(2,\"y z\")'::pair])",
        "update tc set m = 'sad', pn = null",
        "update tc set p = '(1,x)'",
        "delete from tc",
    ],
    "session_role_disabled_queue": [
        Q3, "create table sr (id int primary key, v text)", all3("sr"),
        "update pgq.queue set queue_disable_insert = true where queue_name in ('q_json', 'q_url', 'q_sql')",
        "insert into sr values (1, 'a')",
        "set session_replication_role = local",
        "insert into sr values (2, 'b')",
        "set session_replication_role = replica",
        "insert into sr values (3, 'c')",
        "alter table sr enable always trigger b_urlenc",
        "insert into sr values (4, 'd')",
        "set session_replication_role = origin",
        "select array_agg(id order by id) = '{2,3,4}' from sr",
        "update pgq.queue set queue_disable_insert = false",
        "insert into sr values (5, 'e')",
    ],
    "local_role_passthrough": [
        Q3, "create table lp (v text)",
        "create trigger a before insert or update or delete on lp for each row execute function pgq.logutriga('q_url', 'SKIP', 'deny')",
        "set session_replication_role = local",
        "insert into lp values ('x')",
        "update lp set v = 'y'",
        "delete from lp where v = 'nothing'",
        "set session_replication_role = origin",
        "select count(*) = 1 from lp",
        "insert into lp values ('z')",
    ],
    "errors": [
        Q3, "create table er (id int primary key, v text, _pgq_ev_foo text)",
        "create table er2 (id int primary key, v text)",
        "create trigger a after insert on er2 for each row execute function pgq.logutriga()",
        "insert into er2 values (1, 'a')",
        "drop trigger a on er2",
        "create trigger a after insert on er2 for each row execute function pgq.logutriga('q_url', 'bogus')",
        "insert into er2 values (1, 'a')",
        "drop trigger a on er2",
        "create trigger a after insert on er2 for each row execute function pgq.logutriga('q_url', 'skip')",
        "insert into er2 values (1, 'a')",
        "drop trigger a on er2",
        "create trigger a after insert on er2 for each row execute function pgq.jsontriga('q_json', 'SKIP')",
        "insert into er2 values (1, 'a')",
        "drop trigger a on er2",
        "create trigger a after insert on er2 for each statement execute function pgq.sqltriga('q_sql')",
        "insert into er2 values (1, 'a')",
        "drop trigger a on er2",
        "create trigger a after insert on er for each row execute function pgq.sqltriga('q_sql')",
        "insert into er values (1, 'a', 'f')",
        "drop trigger a on er",
        "create trigger a after insert on er2 for each row execute function pgq.logutriga('q_url', 'when=id')",
        "insert into er2 values (1, 'a')",
        "drop trigger a on er2",
        "create trigger a after insert on er2 for each row execute function pgq.logutriga('q_url', 'when=v = $$a$$')",
        "insert into er2 values (1, null)",
        "drop trigger a on er2",
        "create trigger a after insert on er2 for each row execute function pgq.logutriga('q_url', 'ev_extra1=generate_series(1,2)')",
        "insert into er2 values (1, 'a')",
        "drop trigger a on er2",
        "create trigger a after insert or update or delete on er2 for each row execute function pgq.sqltriga('q_sql', 'pkey=v')",
        "insert into er2 values (1, null)",
        "update er2 set id = 5",
        "delete from er2",
        "insert into er2 values (2, 'k')",
        "update er2 set id = 6",
        "delete from er2",
        "drop trigger a on er2",
        "create trigger a after insert on er2 for each row execute function pgq.jsontriga('q_nosuch')",
        "insert into er2 values (1, 'a')",
    ],
    "extra_args_and_cols": [
        Q3,
        "create table ea (nr int primary key, col1 text, col2 text)",
        all3("ea", "ev_extra1=(nr+3)::text", "ev_extra2=col1||col2", "ev_extra3=$$333$$", "ev_extra4=$$444$$", "ev_type=$$badidea$$"),
        "insert into ea values (1, 'c1', 'c2')",
        "update ea set col1 = 'x1'",
        "delete from ea",
        "create table ec (nr int primary key, col1 text, col2 text, _pgq_ev_type text default 'xt', "
        "_pgq_ev_extra1 text default 'E1', _pgq_ev_extra2 text default 'e2', _pgq_ev_extra3 text default 'e3', "
        "_pgq_ev_extra4 text default 'e4')",
        all3("ec"),
        "insert into ec (nr, col1, col2) values (1, 'a', 'b')",
        "update ec set col1 = 'aa', _pgq_ev_extra1 = 'X1'",
        "update ec set _pgq_ev_extra1 = 'X2'",
        "delete from ec",
        "create table ed (id int primary key, v text, _pgq_ev_data text, _pgq_ev_type text)",
        all3("ed", "ev_type=$$over$$"),
        "insert into ed values (1, 'a', 'DATA', 'T')",
        "update ed set _pgq_ev_data = null",
    ],
    "options_misc": [
        Q3,
        "create table om (v text, id int primary key, w text)",
        all3("om", "ignore=w"),
        "insert into om values ('a', 1, 'x')",
        "update om set v = 'b', id = 2",
        "update om set w = 'y', id = 3",
        "create table om2 (id int primary key, v text)",
        "create trigger a after insert on om2 for each row execute function pgq.logutriga('q_url', 'ev_extra1=v', 'ev_extra1=id')",
        "insert into om2 values (10, 'a')",
        "create table om3 (a int, b text, c text)",
        all3("om3", "pkey=a, b", "ignore=c ,x"),
        "insert into om3 values (1, 'x', 'y')",
        "update om3 set c = 'z'",
        "update om3 set b = 'q'",
        "create table om4 (id int primary key, v text)",
        "create trigger a before insert or update or delete on om4 for each row execute function pgq.jsontriga('q_json')",
        "insert into om4 values (1, 'kept')",
        "update om4 set v = 'kept2'",
        "select v = 'kept2' from om4",
        "delete from om4",
        "select count(*) = 0 from om4",
        "create table om5 (id int, v text, primary key (id) include (v))",
        all3("om5"),
        "insert into om5 values (1, 'a')",
        "create table om6 (id int primary key, v numeric)",
        all3("om6", "ignore=v"),
        "insert into om6 values (1, 1.0)",
        "update om6 set v = 1.00",
        "create table om7 (id int primary key, j json)",
        all3("om7", "ignore=j"),
        "insert into om7 values (1, '{\"a\":1}')",
        "update om7 set j = '{\"a\": 1}'",
        "create table om8 (id int primary key, v text)",
        "create trigger a before insert on om8 for each row execute function pgq.sqltriga('q_sql', 'SKIP', 'when=v = $$go$$')",
        "insert into om8 values (1, 'stop')",
        "insert into om8 values (2, 'go')",
        "select count(*) = 0 from om8",
        "create table om9 (id int primary key, v text)",
        "create trigger a after insert on om9 for each row execute function pgq.jsontriga('q_json', 'pkey=')",
        "insert into om9 values (1, 'a')",
    ],
    "ddl_changes": [
        Q3, "create table dd (id int primary key, a text, b int)", all3("dd"),
        "insert into dd values (1, 'x', 2)",
        "alter table dd add column c numeric default 1.5",
        "insert into dd values (2, 'y', 3)",
        "alter table dd drop column a",
        "insert into dd values (3, 4)",
        "alter table dd rename column b to bb",
        "update dd set bb = 5 where id = 3",
        "alter table dd alter column bb type text",
        "update dd set bb = 'six' where id = 3",
        "alter table dd drop constraint dd_pkey",
        "update dd set bb = 'seven' where id = 3",
        "alter table dd add primary key (bb)",
        "update dd set c = 2 where id = 3",
        "begin; alter table dd add column z int default 9; insert into dd values (4, 'eight', 1, 9); rollback",
        "insert into dd values (5, 'nine', 1)",
        "do $$ begin insert into dd values (6, 'ten', 1); alter table dd add column zz text default 'Z'; "
        "insert into dd values (7, 'eleven', 1); end $$",
    ],
    "partitioned_and_temp_names": [
        Q3, 'create schema "My Sch"', 'create table "My Sch"."Tab\'1" (id int primary key, "select" text, "Id" int)',
        all3('"My Sch"."Tab\'1"'),
        'insert into "My Sch"."Tab\'1" values (1, \'s\', 2)',
        "create table pt (id int, v text, primary key (id)) partition by range (id)",
        "create table pt1 partition of pt for values from (0) to (100)",
        all3("pt"),
        "insert into pt values (5, 'p')",
        "update pt set v = 'q'",
    ],
}


def run_scenario(dsn: str, statements: list[str]) -> dict:
    steps: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in SESSION:
            conn.execute(s)
        for stmt in statements:
            try:
                cur = conn.execute(stmt)
                row = cur.fetchone() if cur.description else None
                steps.append("ok" if row is None or row[0] is not False else "false")
            except psycopg.Error as exc:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.rollback()
                steps.append("ERROR: " + (exc.diag.message_primary or str(exc)))
        conn.execute("SET session_replication_role = origin")
        events: dict[str, list[list]] = {}
        for (name, pfx) in conn.execute(
                "SELECT queue_name, queue_data_pfx FROM pgq.queue ORDER BY queue_name").fetchall():
            rows = conn.execute(psycopg.sql.SQL(
                "SELECT ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4 FROM {} ORDER BY ev_id").format(
                psycopg.sql.SQL(pfx))).fetchall()
            events[name] = [list(r) for r in rows]
    return {"steps": steps, "events": events}
