"""Cost of capturing a table's changes with pgq.jsontriga (our PL/pgSQL trigger) against the same
writes without a trigger, measured in the same run; and, where the real PgQ extension is
installable on the server (Debian postgresql-NN-pgq3; run with --bindir
/usr/lib/postgresql/15/bin), the same ratio with PgQ's C trigger.

Usage: python bench/bench_triggers.py [--rows 20000] [--rounds 5] [--bindir DIR] [--all-formats]

Workloads (rows per second, median of interleaved rounds):
- insert-batch: INSERT … SELECT of 1000 rows per statement;
- insert-single: one row per INSERT statement (a server-side loop, no client round trips);
- update-batch: UPDATE of 1000 rows per statement (one column).
Table: (id int primary key, owner text, balance numeric(10,2), active bool, opened timestamptz, note text).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import schema  # noqa: E402
from engine.embedded import Cluster, default_bindir  # noqa: E402

TABLE = ("create table bt (id int primary key, owner text, balance numeric(10,2), active bool, "
         "opened timestamptz, note text)")
WORKLOADS = {
    "insert-batch": ["insert into bt select g, 'owner ' || g, g / 7.0, g % 2 = 0, now(), null "
                     "from generate_series({lo}, {hi}) g"],
    "insert-single": ["do $$ begin for g in {lo} .. {hi} loop "
                      "insert into bt values (g, 'owner ' || g, g / 7.0, g % 2 = 0, now(), null); end loop; end $$"],
    "update-batch": ["update bt set note = 'n' || id where id between {lo} and {hi}"],
}


def run(conn: psycopg.Connection, workload: str, rows: int) -> float:
    conn.execute("truncate bt")
    if workload.startswith("update"):
        conn.execute("alter table bt disable trigger user")
        conn.execute(WORKLOADS["insert-batch"][0].format(lo=1, hi=rows))
        conn.execute("alter table bt enable trigger user")
    t0 = time.perf_counter()
    with conn.transaction():
        for lo in range(1, rows + 1, 1000):
            for stmt in WORKLOADS[workload]:
                conn.execute(stmt.format(lo=lo, hi=min(rows, lo + 999)))
    return rows / (time.perf_counter() - t0)


def setup(conn: psycopg.Connection, trigger: str | None) -> None:
    conn.execute(TABLE)
    conn.execute("select pgq.create_queue('bq')")
    if trigger:
        conn.execute(f"create trigger cap after insert or update or delete on bt for each row "
                     f"execute function pgq.{trigger}('bq')")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bindir", default=None)
    parser.add_argument("--all-formats", action="store_true", help="also logutriga and sqltriga")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pgtt-bench-"))
    root.chmod(0o755)
    cluster = Cluster(base=root / "c", bindir=Path(args.bindir) if args.bindir else default_bindir(), fast=True)
    cluster.init()
    cluster.start()
    triggers = ["jsontriga"] + (["logutriga", "sqltriga"] if args.all_formats else [])
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            version = admin.info.server_version
            has_ext = admin.execute("select 1 from pg_available_extensions where name = 'pgq'").fetchone() is not None
            dbs: dict[str, psycopg.Connection] = {}
            variants: list[tuple[str, str | None, str]] = [("plain", None, "pgtt")]
            variants += [(f"ours {t}", t, "pgtt") for t in triggers]
            if has_ext:
                variants += [(f"C {t}", t, "ext") for t in triggers]
            for label, trig, impl in variants:
                name = "b" + str(len(dbs))
                admin.execute(f"create database {name}")
                conn = psycopg.connect(cluster.dsn(name), autocommit=True)
                if impl == "ext":
                    conn.execute("create extension pgq")
                else:
                    schema.install(conn, ["pgtt", "pgq"])
                setup(conn, trig)
                dbs[label] = conn
        print(f"PostgreSQL {version}; rows {args.rows}; rounds {args.rounds}; "
              f"real pgq extension: {'yes' if has_ext else 'not available on this server'}")
        for workload in WORKLOADS:
            results: dict[str, list[float]] = {label: [] for label in dbs}
            for label, conn in dbs.items():  # warm-up (session caches, plans)
                run(conn, workload, min(2000, args.rows))
            for _ in range(args.rounds):
                for label, conn in dbs.items():
                    results[label].append(run(conn, workload, args.rows))
            base = statistics.median(results["plain"])
            print(f"\n{workload}: plain {base:,.0f} rows/s")
            for label in dbs:
                if label == "plain":
                    continue
                med = statistics.median(results[label])
                print(f"  {label:15s} {med:10,.0f} rows/s   ratio to plain {med / base:.3f}   "
                      f"slowdown x{base / med:.1f}")
        for conn in dbs.values():
            conn.close()
    finally:
        cluster.stop(mode="immediate")
        cluster.destroy()


if __name__ == "__main__":
    main()
