"""Every pgq_node function's return codes and notes (reference/pgq.md §b.2), on one database;
modelled on the upstream pgq_node_test walk."""

from __future__ import annotations

import psycopg
import pytest


@pytest.fixture
def db(make_db):
    with psycopg.connect(make_db(("pgq_node",)), autocommit=True) as conn:
        yield conn


def one(conn, text, params=()):
    return conn.execute(text, params).fetchone()


def rc(conn, text, params=()):
    row = one(conn, text, params)
    return row[0], row[1]


def test_locations(db):
    assert rc(db, "select * from pgq_node.register_location('aqueue', 'node1', 'dbname=node1', false)") == \
        (200, "Location registered")
    assert rc(db, "select * from pgq_node.register_location('aqueue', 'node2', 'dbname=node2', false)")[0] == 200
    # update keeps the location when NULL is given
    rc(db, "select * from pgq_node.register_location('aqueue', 'node2', null, true)")
    rows = db.execute("select * from pgq_node.get_queue_locations('aqueue') order by 1").fetchall()
    assert rows == [("node1", "dbname=node1", False), ("node2", "dbname=node2", True)]
    assert rc(db, "select * from pgq_node.unregister_location('aqueue', 'node2')") == (200, "Ok")
    assert rc(db, "select * from pgq_node.unregister_location('aqueue', 'node2')") == \
        (301, "Location not found: aqueue/node2")


def test_root_node_and_subscribers(db):
    rc(db, "select * from pgq_node.register_location('aqueue', 'node1', 'dbname=node1', false)")
    assert rc(db, "select * from pgq_node.create_node('aqueue', 'root', 'node1', 'node1_worker', "
                  "null, null, null)") == (200, 'Node "node1" initialized for queue "aqueue" with type "root"')
    assert rc(db, "select * from pgq_node.create_node('aqueue', 'root', 'node1', 'node1_worker', "
                  "null, null, null)") == (401, "Node already initialized")
    assert rc(db, "select * from pgq_node.create_node('bqueue', 'root', 'node1', 'w', 'x', null, null)") == \
        (401, "unexpected args for root")
    assert rc(db, "select * from pgq_node.create_node('bqueue', 'branch', 'node1', 'w', null, 1, null)") == \
        (401, "provider not set for branch")
    assert rc(db, "select * from pgq_node.create_node('bqueue', 'branch', 'node1', 'w', 'p', null, null)") == \
        (401, "global watermark not set for branch")
    assert rc(db, "select * from pgq_node.create_node('bqueue', 'leaf', 'node1', 'w', 'p', 1, 'nosuch')") == \
        (401, "non-existing queue on leaf side: nosuch")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("select * from pgq_node.create_node('cqueue', 'weird', 'node1', 'w', null, null, null)")
    # registering on the root emits location events
    rc(db, "select * from pgq_node.register_location('aqueue', 'node2', 'dbname=node2', false)")
    assert one(db, "select count(*) from pgq.event_template")[0] >= 0
    assert one(db, "select * from pgq_node.register_subscriber('aqueue', 'node2', 'node2_worker', null)") == \
        (200, "Subscriber registered: node2", 1)
    rc(db, "select * from pgq_node.register_location('aqueue', 'node3', 'dbname=node3', false)")
    assert one(db, "select * from pgq_node.register_subscriber('aqueue', 'node3', 'node3_worker', null)")[0] == 200
    assert one(db, "select pgq_node.maint_watermark('aqueue')")[0] == 0
    assert one(db, "select pgq_node.maint_watermark('nosuch')")[0] == 0
    assert db.execute("select * from pgq_node.get_subscriber_info('aqueue')").fetchall() == \
        [("node2", "node2_worker", 1), ("node3", "node3_worker", 1)]
    assert rc(db, "select * from pgq_node.unregister_subscriber('aqueue', 'node3')") == \
        (200, "Subscriber unregistered: node3")
    assert rc(db, "select * from pgq_node.unregister_subscriber('aqueue', 'node3')") == (304, "Subscriber not found")
    names = [r[0] for r in db.execute("select consumer_name from pgq.get_consumer_info('aqueue') order by 1")]
    assert names == [".global_watermark", ".node2.watermark", "node2_worker"]
    st = one(db, "select ret_code, node_type, node_name, completed_tick, provider_node, worker_name, "
                 "local_queue_top from pgq_node.get_worker_state('aqueue')")
    assert st == (100, "root", "node1", 1, "node1", "node1_worker", 1)
    one(db, "select pgq.force_tick('aqueue')")
    assert one(db, "select pgq.ticker('aqueue')")[0] == 2
    assert rc(db, "select * from pgq_node.set_subscriber_watermark('aqueue', 'node2', 2)") == \
        (200, ".node2.watermark set to 2")
    assert rc(db, "select * from pgq_node.set_subscriber_watermark('aqueue', 'node2', 2)") == \
        (100, "watermark already set")
    assert rc(db, "select * from pgq_node.set_subscriber_watermark('aqueue', 'node2', 1)") == \
        (405, "watermark must not be moved backwards")
    assert rc(db, "select * from pgq_node.set_subscriber_watermark('aqueue', 'nodex', 1)")[0] == 404
    assert rc(db, "select * from pgq_node.set_node_attrs('aqueue', 'test=1')") == (200, "Node attributes updated")
    assert rc(db, "select * from pgq_node.set_node_attrs('nosuch', 'test=1')") == (404, "Node not found")
    info = one(db, "select ret_code, node_type, worker_last_tick, node_attrs, global_watermark "
                   "from pgq_node.get_node_info('aqueue')")
    assert info == (100, "root", 2, "test=1", 1)
    assert rc(db, "select * from pgq_node.get_node_info('nosuch')") == (404, "Unknown queue: nosuch")
    assert rc(db, "select * from pgq_node.get_worker_state('nosuch')") == (404, "Unknown queue: nosuch")
    assert one(db, "select pgq_node.is_root_node('aqueue'), pgq_node.is_leaf_node('aqueue')") == (True, False)
    with pytest.raises(psycopg.errors.RaiseException, match="queue does not exist: nosuch"):
        db.execute("select pgq_node.is_root_node('nosuch')")
    # global watermark on the root is published as an event
    assert rc(db, "select * from pgq_node.set_global_watermark('aqueue', null)") == (200, "Global watermark set to 1")
    assert rc(db, "select * from pgq_node.set_global_watermark('nosuch', null)") == (404, "Queuenosuch not found")
    # locations: own and unknown
    assert rc(db, "select * from pgq_node.unregister_location('aqueue', 'node1')") == \
        (403, "Cannot drop node's own location")
    # version
    assert one(db, "select pgq_node.version()")[0] == "3.5"


def test_consumers_and_demote_promote(db):
    rc(db, "select * from pgq_node.register_location('aqueue', 'node1', 'dbname=node1', false)")
    rc(db, "select * from pgq_node.register_location('aqueue', 'node2', 'dbname=node2', false)")
    rc(db, "select * from pgq_node.create_node('aqueue', 'root', 'node1', 'node1_worker', null, null, null)")
    assert rc(db, "select * from pgq_node.register_consumer('aqueue', 'c1', 'node1', 1)") == \
        (200, "Consumer c1 registered on queue aqueue")
    assert rc(db, "select * from pgq_node.register_consumer('aqueue', 'c1', 'node1', 1)") == \
        (201, "Consumer already registered: aqueue/c1")
    assert rc(db, "select * from pgq_node.register_consumer('nosuch', 'c1', 'node1', 1)") == \
        (404, "Unknown queue: nosuch")
    assert rc(db, "select * from pgq_node.set_consumer_error('aqueue', 'c1', 'oops')") == (100, "Consumer c1 error = oops")
    assert rc(db, "select * from pgq_node.set_consumer_error('aqueue', 'cx', 'oops')") == \
        (101, "Consumer not known, ignoring: aqueue/cx")
    assert rc(db, "select * from pgq_node.set_consumer_completed('aqueue', 'c1', 2)") == \
        (100, "Consumer c1 completed tick = 2")
    assert rc(db, "select * from pgq_node.set_consumer_completed('aqueue', 'cx', 2)") == \
        (404, "Consumer not known: aqueue/cx")
    assert rc(db, "select * from pgq_node.set_consumer_paused('aqueue', 'c1', true)") == \
        (200, "Consumer c1 tagged as paused")
    assert rc(db, "select * from pgq_node.set_consumer_paused('aqueue', 'c1', true)") == \
        (201, "Consumer c1 already paused")
    assert rc(db, "select * from pgq_node.set_consumer_paused('aqueue', 'cx', true)") == (404, "Unknown consumer: cx")
    assert rc(db, "select * from pgq_node.set_consumer_uptodate('aqueue', 'c1', true)") == (200, "Consumer uptodate = 1")
    assert rc(db, "select * from pgq_node.set_consumer_uptodate('aqueue', 'cx', true)") == \
        (404, "Consumer not known: aqueue/cx")
    st = one(db, "select ret_code, completed_tick, provider_node, provider_location, paused, uptodate, cur_error "
                 "from pgq_node.get_consumer_state('aqueue', 'c1')")
    assert st == (100, 2, "node1", "dbname=node1", True, True, None)
    assert rc(db, "select * from pgq_node.get_consumer_state('aqueue', 'cx')") == (404, "Unknown consumer: aqueue/cx")
    assert rc(db, "select * from pgq_node.change_consumer_provider('aqueue', 'c1', 'node2')") == \
        (200, "Consumer provider node set to : node2")
    assert rc(db, "select * from pgq_node.change_consumer_provider('aqueue', 'c1', 'nodex')") == \
        (404, "New node not found: nodex")
    assert rc(db, "select * from pgq_node.change_consumer_provider('aqueue', 'cx', 'node2')") == \
        (404, "Unknown consumer: aqueue/cx")
    rows = db.execute("select consumer_name, provider_node from pgq_node.get_consumer_info('aqueue')").fetchall()
    assert rows == [("c1", "node2"), ("node1_worker", "node1")]
    assert rc(db, "select * from pgq_node.unregister_consumer('aqueue', 'c1')") == (200, "Consumer c1 unregistered from aqueue")
    assert rc(db, "select * from pgq_node.unregister_consumer('nosuch', 'c1')") == (404, "Unknown queue: nosuch")
    # parent location cannot go
    rc(db, "select * from pgq_node.register_consumer('aqueue', 'c2', 'node2', 1)")
    # demote: steps in order, each repeatable as upstream
    assert one(db, "select * from pgq_node.demote_root('aqueue', 1, 'node2')") == \
        (200, "Step 1: Writing disabled for: aqueue", None)
    assert one(db, "select * from pgq_node.demote_root('aqueue', 1, 'node2')")[0] == 200
    r2 = one(db, "select * from pgq_node.demote_root('aqueue', 2, 'node2')")
    assert r2[:2] == (200, "Step 2: Inserted last tick: aqueue") and r2[2] == 2
    assert one(db, "select * from pgq_node.demote_root('aqueue', 2, 'node2')")[2] == 3
    assert one(db, "select * from pgq_node.demote_root('aqueue', 3, 'node2')") == \
        (200, "Step 3: Demoted root to branch: aqueue", 3)
    assert one(db, "select * from pgq_node.demote_root('aqueue', 3, 'node2')")[:2] == (301, "Node not root")
    assert one(db, "select * from pgq_node.demote_root('nosuch', 1, 'node2')")[:2] == \
        (404, "Node not initialized for queue: nosuch")
    # a step number is checked last (a branch answers 301 first)
    assert one(db, "select * from pgq_node.demote_root('aqueue', 4, 'node2')")[:2] == (301, "Node not root")
    assert rc(db, "select * from pgq_node.unregister_location('aqueue', 'node2')") == \
        (403, "Cannot drop location of node's parent")
    info = one(db, "select node_type, provider_node, worker_last_tick from pgq_node.get_node_info('aqueue')")
    assert info == ("branch", "node2", 3)
    assert one(db, "select queue_disable_insert, queue_external_ticker from pgq.queue "
                   "where queue_name = 'aqueue'") == (True, True)
    # branch applies a global watermark only if the tick exists here
    assert rc(db, "select * from pgq_node.set_global_watermark('aqueue', 99)") == \
        (200, "Skipping global watermark update to 99")
    assert rc(db, "select * from pgq_node.set_global_watermark('aqueue', 2)") == (200, "Global watermark set to 2")
    assert rc(db, "select * from pgq_node.set_global_watermark('aqueue', null)") == \
        (500, "bad usage: wm=null on branch node")
    assert rc(db, "select * from pgq_node.promote_branch('aqueue')") == (200, "Branch node promoted to root")
    assert rc(db, "select * from pgq_node.promote_branch('aqueue')") == (301, "Node not branch")
    assert rc(db, "select * from pgq_node.promote_branch('nosuch')") == (404, "Node not initialized for queue: nosuch")
    assert one(db, "select node_type, provider_node from pgq_node.get_node_info('aqueue')") == ("root", "node1")
    # steps out of order after promotion
    with pytest.raises(psycopg.errors.RaiseException, match="steps in wrong order"):
        db.execute("select * from pgq_node.demote_root('aqueue', 2, 'node2')")
    one(db, "select * from pgq_node.demote_root('aqueue', 1, 'node2')")
    with pytest.raises(psycopg.errors.RaiseException, match="incorrect step number"):
        db.execute("select * from pgq_node.demote_root('aqueue', 4, 'node2')")


def test_branch_leaf_merge_and_drop(db):
    rc(db, "select * from pgq_node.register_location('pq', 'root1', 'dbname=r', false)")
    rc(db, "select * from pgq_node.register_location('pq', 'b1', 'dbname=b', false)")
    assert rc(db, "select * from pgq_node.create_node('pq', 'branch', 'b1', 'b1_worker', 'root1', 5, null)")[0] == 200
    assert one(db, "select queue_external_ticker, queue_disable_insert from pgq.queue where queue_name = 'pq'") == \
        (True, True)
    st = one(db, "select ret_code, node_type, completed_tick, provider_node, global_watermark, local_queue_top "
                 "from pgq_node.get_worker_state('pq')")
    assert st == (100, "branch", 5, "root1", 5, 5)
    # merge-leaf of another queue into pq
    rc(db, "select * from pgq_node.register_location('part', 'b1', 'dbname=b', false)")
    rc(db, "select * from pgq_node.register_location('part', 'proot', 'dbname=p', false)")
    assert rc(db, "select * from pgq_node.create_node('part', 'leaf', 'b1', 'part_worker', 'proot', 7, 'pq')")[0] == 200
    st = one(db, "select combined_queue, combined_type, local_watermark from pgq_node.get_worker_state('part')")
    assert st == ("pq", "branch", 7)
    assert one(db, "select target_for from pgq_node.get_node_info('pq')")[0] == ["part"]
    assert rc(db, "select * from pgq_node.set_partition_watermark('pq', 'part', 9)") == (200, "Ok")
    assert one(db, "select completed_tick from pgq_node.get_worker_state('part')")[0] == 9
    assert rc(db, "select * from pgq_node.set_partition_watermark('pq', 'nopart', 9)") == \
        (201, "Part-queue does not exist")
    assert rc(db, "select * from pgq_node.set_global_watermark('part', 3)") == (100, "Ignoring global watermark in leaf")
    assert one(db, "select pgq_node.is_leaf_node('part')")[0] is True
    assert one(db, "select * from pgq_node.register_subscriber('part', 'x', 'xw', null)")[:2] == \
        (401, "Cannot subscribe to leaf node")
    # drop: provider refused, local node removes everything
    assert rc(db, "select * from pgq_node.drop_node('pq', 'root1')") == (405, "Cannot drop provider node: root1")
    assert rc(db, "select * from pgq_node.drop_node('part', 'b1')") == (200, "Node dropped: b1")
    assert rc(db, "select * from pgq_node.drop_node('pq', 'b1')") == (200, "Node dropped: b1")
    assert one(db, "select count(*) from pgq.queue where queue_name = 'pq'")[0] == 0
    assert db.execute("select * from pgq_node.get_queue_locations('pq')").fetchall() == []
