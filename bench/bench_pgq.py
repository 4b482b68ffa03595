"""pgq throughput: our PL/pgSQL implementation against the real PgQ extension (C insert).

One PostgreSQL 15 server, two databases in the same run: ``ours`` (sql/pgq installed by
the migrator) and ``real`` (``CREATE EXTENSION pgq``, Debian's postgresql-15-pgq3). The
two are measured in alternating rounds so that noise hits both alike; the ratio is
ours / real (higher is better for us).

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


def insert_per_call(dsn: str, n_tx: int) -> float:
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        # warm-up: plans, catalog caches
        cur.execute("SELECT pgq.insert_event('bench', 'warm', %s)", (PAYLOAD,))
        conn.commit()
        start = time.perf_counter()
        for _ in range(n_tx):
            for i in range(PER_TX):
                cur.execute("SELECT pgq.insert_event('bench', 'bench', %s)", (PAYLOAD,))
            conn.commit()
        return n_tx * PER_TX / (time.perf_counter() - start)


def insert_per_call_unprepared(dsn: str, n_tx: int) -> float:
    with psycopg.connect(dsn) as conn:
        cur = psycopg.ClientCursor(conn)
        cur.execute("SELECT pgq.insert_event('bench', 'warm', %s)", (PAYLOAD,))
        conn.commit()
        start = time.perf_counter()
        for _ in range(n_tx):
            for i in range(PER_TX):
                cur.execute("SELECT pgq.insert_event('bench', 'bench', %s)", (PAYLOAD,))
            conn.commit()
        return n_tx * PER_TX / (time.perf_counter() - start)


def insert_per_statement(dsn: str, n_tx: int) -> float:
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        cur.execute("SELECT pgq.insert_event('bench', 'warm', %s)", (PAYLOAD,))
        conn.commit()
        start = time.perf_counter()
        for _ in range(n_tx):
            cur.execute("SELECT count(pgq.insert_event('bench', 'bench', %s || i)) "
                        "FROM generate_series(1, %s) i", (PAYLOAD, PER_TX))
            conn.commit()
        return n_tx * PER_TX / (time.perf_counter() - start)


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


def consume(dsn: str) -> float:
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
    ap.add_argument("--tx", type=int, default=5, help="transactions of 1,000 events per insert round")
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
        results: dict[str, dict[str, list[float]]] = {}
        tests = [("insert (1 call/event, 1000/tx, prepared)", lambda d: insert_per_call(d, args.tx)),
                 ("insert (1 call/event, 1000/tx, unprepared)", lambda d: insert_per_call_unprepared(d, args.tx)),
                 ("insert (1000 events/statement)", lambda d: insert_per_statement(d, args.tx))]
        for r in range(args.rounds):
            for name, fn in tests:
                for impl in (("ours", "real") if r % 2 == 0 else ("real", "ours")):
                    results.setdefault(name, {}).setdefault(impl, []).append(fn(dsns[impl]))
            name = "consume (next_batch+get_batch_events+finish_batch)"
            for impl in (("ours", "real") if r % 2 == 0 else ("real", "ours")):
                drain(dsns[impl])
                fill_batches(dsns[impl], args.batches)
                results.setdefault(name, {}).setdefault(impl, []).append(consume(dsns[impl]))
        targets = {"insert": 0.9, "consume": 1.0}
        print(f"{'test':<52} {'ours ev/s':>11} {'real ev/s':>11} {'ratio':>6}  target")
        for name, by_impl in results.items():
            ours = statistics.median(by_impl["ours"])
            real = statistics.median(by_impl["real"])
            target = targets[name.split()[0]]
            ratio = ours / real
            print(f"{name:<52} {ours:>11,.0f} {real:>11,.0f} {ratio:>6.2f}  ≥{target} "
                  f"{'ok' if ratio >= target else 'MISSED'}")
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
