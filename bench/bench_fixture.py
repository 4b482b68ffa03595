"""Cost of the per-test database fixture (template clone), against installing the schema.

Usage: python bench/bench_fixture.py [--n 40] [--bindir DIR]

Prints the median and p90 of ``CREATE DATABASE … TEMPLATE <all modules>`` (what the
``make_db`` fixture does), and as the baseline measured in the same run, the median of
creating an empty database and running ``schema.install`` for all modules into it (what
each test would pay without templates). Target: fixture median < 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import schema  # noqa: E402
from engine.embedded import Cluster, default_bindir  # noqa: E402


STRATEGY = "WAL_LOG"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--bindir", default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pgtt-bench-"))
    root.chmod(0o755)
    cluster = Cluster(base=root / "c", bindir=Path(args.bindir) if args.bindir else default_bindir(), fast=True)
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            version = admin.info.server_version
            admin.execute("CREATE DATABASE tpl")
            with psycopg.connect(cluster.dsn("tpl"), autocommit=True) as conn:
                schema.install(conn, schema.parse_modules(None))
            strategy = sql.SQL(" STRATEGY = " + STRATEGY) if version >= 150000 else sql.SQL("")
            clone, install = [], []
            for i in range(args.n):
                t0 = time.perf_counter()
                admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE tpl{}").format(sql.Identifier(f"c{i}"), strategy))
                clone.append(time.perf_counter() - t0)
                admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(f"c{i}")))
            for i in range(max(5, args.n // 8)):
                t0 = time.perf_counter()
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"i{i}")))
                with psycopg.connect(cluster.dsn(f"i{i}"), autocommit=True) as conn:
                    schema.install(conn, schema.parse_modules(None))
                install.append(time.perf_counter() - t0)
                admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(f"i{i}")))
        med_clone = statistics.median(clone) * 1000
        p90 = sorted(clone)[int(len(clone) * 0.9) - 1] * 1000
        med_install = statistics.median(install) * 1000
        print(f"server {version}: fixture clone median {med_clone:.1f} ms, p90 {p90:.1f} ms (n={len(clone)}); "
              f"baseline create+install median {med_install:.1f} ms; ratio clone/install {med_clone / med_install:.3f}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
