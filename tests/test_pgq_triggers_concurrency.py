"""A captured table under concurrent writers: every committed change arrives exactly once, in a
batch fetched after its commit; rolled-back changes never arrive; a transaction's changes come
in one batch. Writers are threads with their own connections; the consumer is
engine.pgq.consumer.Consumer; a ticker thread ticks all the time."""

from __future__ import annotations

import json
import random
import threading
import time

import psycopg

from engine.pgq.consumer import Consumer

WRITERS = 4
TX_PER_WRITER = 30


def test_concurrent_writers_and_consumer(make_db):
    dsn = make_db(("pgq",))
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("select pgq.create_queue('cq')")
        admin.execute("select pgq.set_queue_config('cq', 'ticker_max_lag', '0')")
        admin.execute("create table cdc (id int primary key, v text, n int)")
        admin.execute("create trigger cap after insert or update or delete on cdc for each row "
                      "execute function pgq.jsontriga('cq')")
        consumer = Consumer("cq", "c1", idle_sleep=0.02)
        consumer.register(admin)

    committed: dict[int, dict] = {}  # txid -> {"changes": [...], "commit_started": t}
    rolled_back: set[int] = set()
    lock = threading.Lock()
    writers_done = threading.Event()
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        rnd = random.Random(w)
        try:
            with psycopg.connect(dsn) as conn:
                for i in range(TX_PER_WRITER):
                    changes = []
                    txid = conn.execute("select txid_current()").fetchone()[0]
                    base = w * 100000 + i * 10
                    for k in range(rnd.randint(1, 3)):
                        conn.execute("insert into cdc values (%s, %s, %s)", (base + k, f"w{w} é'\"{i}", k))
                        changes.append(("INSERT", {"id": base + k, "v": f"w{w} é'\"{i}", "n": k}))
                    updated = rnd.random() < 0.5
                    if updated:
                        conn.execute("update cdc set n = n + 10 where id = %s", (base,))
                        changes.append(("UPDATE", {"id": base, "v": f"w{w} é'\"{i}", "n": 10}))
                    if rnd.random() < 0.3:
                        conn.execute("delete from cdc where id = %s", (base,))
                        changes.append(("DELETE", {"id": base, "v": f"w{w} é'\"{i}", "n": 10 if updated else 0}))
                    time.sleep(rnd.random() * 0.01)
                    if rnd.random() < 0.25:
                        conn.rollback()
                        with lock:
                            rolled_back.add(txid)
                    else:
                        started = time.monotonic()
                        conn.commit()
                        with lock:
                            committed[txid] = {"changes": changes, "commit_started": started}
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def ticker() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop_ticker.is_set():
                    conn.execute("select pgq.ticker('cq')")
                    time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    got: list[tuple[int, int, str, dict, float]] = []  # (batch, txid, op, row, fetched_at)

    def handler(batch) -> None:
        fetched = time.monotonic()
        for ev in batch.events:
            got.append((batch.batch_id, ev.ev_txid, json.loads(ev.ev_type)["op"], json.loads(ev.ev_data), fetched))

    stop_ticker = threading.Event()
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    tick_thread = threading.Thread(target=ticker)
    tick_thread.start()
    for t in threads:
        t.start()

    expected_total = None
    deadline = time.monotonic() + 120
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            consumer.process_one(conn, handler)
            if expected_total is None and not any(t.is_alive() for t in threads):
                writers_done.set()
                expected_total = sum(len(c["changes"]) for c in committed.values())
            if expected_total is not None and len(got) >= expected_total:
                # one more round: nothing further may arrive
                time.sleep(0.1)
                consumer.process_one(conn, handler)
                break
            time.sleep(0.005)
    stop_ticker.set()
    tick_thread.join()
    for t in threads:
        t.join()
    assert not errors, errors
    assert committed and rolled_back

    by_tx: dict[int, list] = {}
    for batch_id, txid, op, row, fetched in got:
        by_tx.setdefault(txid, []).append((batch_id, op, row, fetched))
    assert not (set(by_tx) & rolled_back), "a rolled-back change arrived"
    assert set(by_tx) == set(committed), "a committed transaction is missing or unknown"
    for txid, evs in by_tx.items():
        assert [(op, row) for _, op, row, _ in evs] == committed[txid]["changes"], txid  # once each, in order
        assert len({b for b, *_ in evs}) == 1, "a transaction's changes were split over batches"
        assert all(fetched > committed[txid]["commit_started"] for *_, fetched in evs)
    assert len(got) == expected_total
