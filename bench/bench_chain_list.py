"""The chain list at 100,000 chains: engine.timetable.api.chain_page (keyset on the name, what
``pgtt-tui chain list`` and the console run) against the OFFSET query it replaced, in the
same run on the same data (ratio = OFFSET / keyset; > 1 means the keyset page is faster).

Pages: the first, one in the middle (after the 50,000th name) and the last; each with and
without the counts the console shows ("50,001–50,200 of 100,000").

    python bench/bench_chain_list.py [--dsn DSN] [--chains 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from engine import demo, schema  # noqa: E402
from engine.db import connect, resolve_settings  # noqa: E402
from engine.timetable import api  # noqa: E402

# the list query before the keyset rewrite (same columns), paged with OFFSET
OFFSET_SQL = api.PAGE_SELECT + " ORDER BY c.chain_name OFFSET %(offset)s LIMIT %(n)s"


def offset_page(conn, offset: int, n: int) -> list:
    """What list_chains did before: the OFFSET query plus the same next-run fill-in."""
    from datetime import datetime, timezone  # noqa: PLC0415

    from psycopg.rows import dict_row  # noqa: PLC0415

    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(OFFSET_SQL, {"offset": offset, "n": n}).fetchall()
    tz, now = api._server_tz(conn), datetime.now(timezone.utc)
    for row in rows:
        api._next_run(row, tz, now)
    return rows


def timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--chains", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    base = resolve_settings(args.dsn, application_name="pgtt-tui bench")
    dbname = "pgtt_bench_chain_list"
    demo.create_database(base, dbname, reset=True)
    settings = demo.demo_settings(base, dbname)
    with connect(settings) as conn:
        schema.install(conn, ["pgtt", "timetable"])
        conn.execute("INSERT INTO timetable.chain (chain_name, run_at, live) "
                     "SELECT format('bench-%%s', lpad(g::text, 7, '0')), '0 4 * * *', g %% 3 = 0 "
                     "FROM generate_series(1, %s) g", (args.chains,))
        conn.execute("ANALYZE timetable.chain")
        middle = f"bench-{args.chains // 2:07d}"
        n = 200
        rows = []
        for label, keyset, offset in (
                ("first page", lambda c: api.chain_page(conn, limit=n, count=c), 0),
                ("middle page", lambda c: api.chain_page(conn, after=middle, limit=n, count=c), args.chains // 2),
                ("last page", lambda c: api.chain_page(conn, last=True, limit=n, count=c), args.chains - n)):
            fast = timed(lambda: keyset(False), args.repeat)
            counted = timed(lambda: keyset(True), args.repeat)
            old = timed(lambda: offset_page(conn, offset, n), args.repeat)
            rows.append((label, fast, counted, old))
    with psycopg.connect(base.conninfo(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    print(f"{args.chains:,} chains, 200 rows per page, median of {args.repeat}")
    print(f"{'page':<12} {'keyset':>10} {'+counts':>10} {'OFFSET':>10} {'OFFSET/keyset':>14}")
    for label, fast, counted, old in rows:
        print(f"{label:<12} {fast * 1000:>8.1f}ms {counted * 1000:>8.1f}ms {old * 1000:>8.1f}ms {old / fast:>13.1f}x")


if __name__ == "__main__":
    main()
