"""pgq throughput: our PL/pgSQL implementation against the real PgQ extension (C insert).

One PostgreSQL 15 server, two databases in the same run: ``ours`` (sql/pgq installed by
the migrator) and ``real`` (``CREATE EXTENSION pgq``, Debian's postgresql-15-pgq3). Inserts
are measured in pairs of 1,000-event transactions, ours and real back to back (the order
alternating), and the ratio printed is the median of the pairs' ratios, so that load from
elsewhere on a shared machine hits both sides alike; consumption in alternating rounds.
Ratios are ours / real (higher is better for us).

- insert, per call, prepared: 1,000 ``select pgq.insert_event(q, type, data)`` statements
  per transaction, one client round trip each, server-side parameters (psycopg 3 prepares
  the statement after five runs);
- insert, per call, unprepared: the same with the values written into the SQL text by the
  client and no prepared statement (psycopg 3's ClientCursor: what psycopg2 does, so how
  SkyTools' own tools and most PgQ producers call it): every call is parsed and planned;
- insert, per statement: ``select pgq.insert_event(...) from generate_series(1, 1000)``,
  one round trip per 1,000 events (server-side cost only);
- consume: ``next_batch`` + ``get_batch_events`` + ``finish_batch`` over batches of
  about 1,000 events.

Targets: inserts ≥ 0.9× (issue 16), consumption ≥ 1.0×.

    python bench/bench_pgq.py [--bindir /usr/lib/postgresql/15/bin] [--rounds 5] [--tx 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import schema  # noqa: E402
from engine.embedded import Cluster  # noqa: E402

PER_TX = 1000
PAYLOAD = "x" * 100


def setup(cluster: Cluster) -> dict[str, str]:
    dsns = {}
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        for name in ("ours", "real"):
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
            dsns[name] = cluster.dsn(name)
    with psycopg.connect(dsns["ours"], autocommit=True) as conn:
        schema.install(conn, ["pgtt", "pgq"])
    with psycopg.connect(dsns["real"], autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgq")
    for dsn in dsns.values():
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pgq.create_queue('bench')")
            conn.execute("SELECT pgq.register_consumer('bench', 'c')")
    return dsns


INSERT_KINDS = {
    # name: (client-side binding?, SQL of one transaction's statement, how many statements)
    "insert (1 call/event, 1000/tx, prepared)":
        (False, "SELECT pgq.insert_event('bench', 'bench', %s)", PER_TX),
    "insert (1 call/event, 1000/tx, unprepared)":
        (True, "SELECT pgq.insert_event('bench', 'bench', %s)", PER_TX),
    "insert (1000 events/statement)":
        (False, f"SELECT count(pgq.insert_event('bench', 'bench', %s || i)) FROM generate_series(1, {PER_TX}) i", 1),
}


def insert_pairs(dsns: dict[str, str], kind: str, n_tx: int) -> list[float]:
    """n_tx pairs of 1,000-event transactions, ours and real one after the other (the order
    alternating), each side on its own warm connection; returns the ratio of each pair, so
    that load from elsewhere on the machine hits both sides of a pair alike."""
    client_side, text, statements = INSERT_KINDS[kind]
    conns = {impl: psycopg.connect(dsn) for impl, dsn in dsns.items()}
    try:
        curs = {impl: psycopg.ClientCursor(c) if client_side else c.cursor() for impl, c in conns.items()}
        for impl, cur in curs.items():  # warm-up: plans, catalog caches, psycopg's prepare threshold
            for _ in range(10):
                cur.execute("SELECT pgq.insert_event('bench', 'warm', %s)", (PAYLOAD,))
            conns[impl].commit()

        def one_tx(impl: str) -> float:
            start = time.perf_counter()
            for _ in range(statements):
                curs[impl].execute(text, (PAYLOAD,))
            conns[impl].commit()
            return PER_TX / (time.perf_counter() - start)

        ratios = []
        for i in range(n_tx):
            if i % 2 == 0:
                ours = one_tx("ours")
                real = one_tx("real")
            else:
                real = one_tx("real")
                ours = one_tx("ours")
            ratios.append(ours / real)
        return ratios
    finally:
        for c in conns.values():
            c.close()


def fill_batches(dsn: str, n_batches: int) -> None:
    """n_batches ticks of PER_TX events each, ready for consumer c."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(n_batches):
            conn.execute("SELECT count(pgq.insert_event('bench', 'bench', %s || i)) "
                         "FROM generate_series(1, %s) i", (PAYLOAD, PER_TX))
            conn.execute("SELECT pgq.force_tick('bench')")
            conn.execute("SELECT pgq.ticker('bench')")


def drain(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            batch = conn.execute("SELECT pgq.next_batch('bench', 'c')").fetchone()[0]
            if batch is None:
                return
            conn.execute("SELECT pgq.finish_batch(%s)", (batch,))


def consume_rate(dsn: str) -> float:
    events = 0
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        start = time.perf_counter()
        while True:
            cur.execute("SELECT pgq.next_batch('bench', 'c')")
            batch = cur.fetchone()[0]
            if batch is None:
                conn.commit()
                break
            cur.execute("SELECT * FROM pgq.get_batch_events(%s)", (batch,))
            events += len(cur.fetchall())
            cur.execute("SELECT pgq.finish_batch(%s)", (batch,))
            conn.commit()
        elapsed = time.perf_counter() - start
    return events / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bindir", default="/usr/lib/postgresql/15/bin", help="PostgreSQL 15 server binaries")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tx", type=int, default=6, help="pairs of 1,000-event transactions per insert round")
    ap.add_argument("--batches", type=int, default=20, help="batches of 1,000 events per consume round")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="pgtt-bench-pgq-"))
    cluster = Cluster(base=base, bindir=Path(args.bindir), fast=False)
    cluster.init()
    cluster.start()
    try:
        dsns = setup(cluster)
        with psycopg.connect(dsns["real"]) as conn:
            lang = conn.execute("SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
                                "WHERE p.oid = 'pgq.insert_event_raw'::regproc").fetchone()[0]
            server = conn.execute("SHOW server_version").fetchone()[0]
        print(f"server {server}; real pgq.insert_event_raw is language {lang}; fsync on")
        insert_ratios: dict[str, list[float]] = {}
        consume: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for kind in INSERT_KINDS:
                insert_ratios.setdefault(kind, []).extend(insert_pairs(dsns, kind, args.tx))
            for impl in (("ours", "real") if r % 2 == 0 else ("real", "ours")):
                drain(dsns[impl])
                fill_batches(dsns[impl], args.batches)
                consume.setdefault(impl, []).append(consume_rate(dsns[impl]))
        print(f"{'test':<52} {'ratio (median)':>14} {'quartiles':>12}  target")
        for kind, ratios in insert_ratios.items():
            q1, _, q3 = statistics.quantiles(ratios, n=4)
            med = statistics.median(ratios)
            print(f"{kind:<52} {med:>14.2f} {q1:>5.2f}-{q3:<5.2f}  >=0.9 {'ok' if med >= 0.9 else 'MISSED'}"
                  f"   ({len(ratios)} pairs of 1,000-event transactions)")
        ours = statistics.median(consume["ours"])
        real = statistics.median(consume["real"])
        print(f"{'consume (next_batch+get_batch_events+finish_batch)':<52} {ours / real:>14.2f} {'':>12}  "
              f">=1.0 {'ok' if ours >= real else 'MISSED'}   (ours {ours:,.0f} ev/s, real {real:,.0f} ev/s)")
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
