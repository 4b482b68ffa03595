"""engine.pgq.capture and `pgtt-tui queue capture` / `queue captures`: add, list, remove capture
triggers; bad input names the field and changes nothing."""

from __future__ import annotations

import json

import psycopg
import pytest
from typer.testing import CliRunner

from engine.errors import InputError, NotFoundError
from engine.pgq import capture
from pgtt_tui.cli import app


@pytest.fixture
def cdb(make_db):
    dsn = make_db(("pgq",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select pgq.create_queue('orders_q'), pgq.create_queue('other')")
        conn.execute("create schema shop")
        conn.execute("create table shop.orders (id int primary key, status text, note text)")
        yield dsn, conn


def _events(conn, queue):
    pfx = conn.execute("select queue_data_pfx from pgq.queue where queue_name = %s", (queue,)).fetchone()[0]
    return conn.execute(f"select ev_type, ev_data, ev_extra1 from {pfx} order by ev_id").fetchall()


def test_add_list_remove(cdb):
    dsn, conn = cdb
    made = capture.add_capture(conn, "shop.orders", "orders_q", "url", ["ignore=note"])
    assert [(c.trigger, c.events, c.options) for c in made] == [
        ("pgq_url_orders_q", ["INSERT", "UPDATE", "DELETE"], ["ignore=note"]),
        ("pgq_url_orders_q_truncate", ["TRUNCATE"], [])]
    capture.add_capture(conn, "shop.orders", "other", "json", ["backup"], truncate=False)
    conn.execute("insert into shop.orders values (1, 'new', 'x')")
    conn.execute("update shop.orders set note = 'y'")  # ignored column only: nothing for orders_q
    conn.execute("truncate shop.orders")
    assert _events(conn, "orders_q") == [("I:id", "id=1&status=new", "shop.orders"), ("R", "", "shop.orders")]
    assert [e[0] for e in _events(conn, "other")] == [
        '{"op":"INSERT","table":["shop","orders"],"pkey":["id"]}', '{"op":"UPDATE","table":["shop","orders"],"pkey":["id"]}']
    assert capture.tables_by_queue(conn) == {"orders_q": ["shop.orders"], "other": ["shop.orders"]}
    assert [c.trigger for c in capture.list_captures(conn, queue="other")] == ["pgq_json_other"]
    assert capture.remove_capture(conn, "shop.orders", "orders_q") == ["pgq_url_orders_q", "pgq_url_orders_q_truncate"]
    assert capture.tables_by_queue(conn) == {"other": ["shop.orders"]}


def test_bad_input_changes_nothing(cdb):
    _, conn = cdb
    with pytest.raises(InputError, match="--format"):
        capture.add_capture(conn, "shop.orders", "orders_q", "xml")
    with pytest.raises(NotFoundError, match="nosuch"):
        capture.add_capture(conn, "shop.nosuch", "orders_q")
    with pytest.raises(NotFoundError, match='queue "nope"'):
        capture.add_capture(conn, "shop.orders", "nope")
    with pytest.raises(InputError, match="SKIP"):
        capture.add_capture(conn, "shop.orders", "orders_q", options=["SKIP"])
    with pytest.raises(InputError, match="unknown trigger option"):
        capture.add_capture(conn, "shop.orders", "orders_q", options=["colname=x"])
    with pytest.raises(InputError, match="TABLE"):
        capture.add_capture(conn, " ", "orders_q")
    with pytest.raises((InputError, NotFoundError), match="oops"):
        capture.add_capture(conn, '"oops', "orders_q")
    capture.add_capture(conn, "shop.orders", "orders_q")
    with pytest.raises(InputError, match="already has the trigger"):
        capture.add_capture(conn, "shop.orders", "orders_q")
    with pytest.raises(NotFoundError):
        capture.remove_capture(conn, "shop.orders", "other")
    assert [c.trigger for c in capture.list_captures(conn)] == ["pgq_json_orders_q", "pgq_json_orders_q_truncate"]


def test_skip_before_trigger_redirects(cdb):
    _, conn = cdb
    capture.add_capture(conn, "shop.orders", "orders_q", "sql", ["SKIP"], before=True, truncate=False)
    conn.execute("insert into shop.orders values (1, 'a', null)")
    assert conn.execute("select count(*) from shop.orders").fetchone()[0] == 0
    assert _events(conn, "orders_q") == [("I", "(id,status,note) values ('1','a',null)", "shop.orders")]


def test_cli_capture_and_list(cdb):
    dsn, conn = cdb
    runner = CliRunner()
    res = runner.invoke(app, ["queue", "capture", "shop.orders", "--queue", "orders_q", "--format", "json",
                              "--ignore", "note", "--when", "status <> 'draft'", "--dsn", dsn, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["options"] == ["ignore=note", "when=status <> 'draft'"]
    conn.execute("insert into shop.orders values (1, 'draft', null), (2, 'paid', 'n')")
    assert [e[1] for e in _events(conn, "orders_q")] == ['{"id":2,"status":"paid"}']
    res = runner.invoke(app, ["queue", "captures", "--dsn", dsn])
    assert res.exit_code == 0 and "pgq_json_orders_q" in res.output and "shop.orders" in res.output
    res = runner.invoke(app, ["queue", "capture", "shop.orders", "--remove", "--dsn", dsn])
    assert res.exit_code == 0, res.output
    assert capture.list_captures(conn) == []
    res = runner.invoke(app, ["queue", "capture", "shop.orders", "--dsn", dsn])
    assert res.exit_code != 0
