"""Start latency of 200 jobs due in the same second, max_workers = 8: pgtt-tui's schedule
manager against pg_cron on the same PostgreSQL 15 server, in the same run.

    python bench/bench_schedule.py [--jobs 200] [--workers 8] [--bindir /usr/lib/postgresql/15/bin]

A dedicated server is started with shared_preload_libraries = pg_cron (Debian's
postgresql-15-cron; if it is missing only our side is measured).  Each job inserts
clock_timestamp() into a table; its start latency is that time minus the instant it was
due.  pg_cron schedules to the minute, so its jobs are '* * * * *' and due at the next
minute boundary; ours use a 6-field cron string due at one second.  pg_cron runs jobs as
background workers (cron.use_background_workers = on, cron.max_running_jobs = workers), so
no password set-up is needed.  Prints p50 / p99 / max for both and the ratio ours/pg_cron.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import schema  # noqa: E402
from engine.clock import SystemClock  # noqa: E402
from engine.db import ConnSettings  # noqa: E402
from engine.embedded import Cluster  # noqa: E402
from engine.schedule.manager import DatabaseManager  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def summary(lat: list[float]) -> dict:
    return {"n": len(lat), "min": min(lat), "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat),
            "mean": statistics.fmean(lat)}


async def bench_ours(cluster: Cluster, jobs: int, workers: int) -> dict:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS bench_sched")
        admin.execute("CREATE DATABASE bench_sched")
        admin.execute(f"ALTER DATABASE bench_sched SET schedule.max_workers = {int(workers)}")
    dsn = cluster.dsn("bench_sched")
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.install(conn, ["pgtt", "schedule"])
        conn.execute("CREATE TABLE lat (job int, at timestamptz)")
        conn.execute("SELECT schedule.enable()")
        due = (datetime.now(timezone.utc) + timedelta(seconds=4)).replace(microsecond=0)
        cron = f"{due.second} {due.minute} {due.hour} {due.day} {due.month} *"
        for i in range(jobs):
            conn.execute("SELECT schedule.create_job(%s, %s)",
                         (cron, f"insert into lat values ({i}, clock_timestamp())"))
        stopping = asyncio.Event()
        mgr = DatabaseManager(ConnSettings(dsn=dsn), clock=SystemClock(), engine_name="bench")
        task = asyncio.create_task(mgr.run(stopping))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if conn.execute("SELECT count(*) FROM lat").fetchone()[0] >= jobs:
                break
        stopping.set()
        await task
        lat = [r[0] * 1000 for r in conn.execute(
            "SELECT extract(epoch FROM at - %s) FROM lat", (due,)).fetchall()]
        peak = conn.execute("SELECT count(*) FROM schedule.cron_run WHERE state = 'done'").fetchone()[0]
    return {**summary(lat), "done": peak}


def bench_pg_cron(cluster: Cluster, jobs: int) -> dict | None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        except psycopg.Error as exc:
            print(f"pg_cron not usable here: {exc}", file=sys.stderr)
            return None
        conn.execute("DROP TABLE IF EXISTS lat_cron")
        conn.execute("CREATE TABLE lat_cron (job int, at timestamptz)")
        now = datetime.now(timezone.utc)
        if now.second > 50:  # leave time to create the jobs before the boundary
            time.sleep(61 - now.second)
        for i in range(jobs):
            conn.execute("SELECT cron.schedule(%s, '* * * * *', %s)",
                         (f"b{i}", f"insert into lat_cron values ({i}, clock_timestamp())"))
        due = (datetime.now(timezone.utc) + timedelta(minutes=1)).replace(second=0, microsecond=0)
        deadline = time.monotonic() + (due - datetime.now(timezone.utc)).total_seconds() + 60
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if conn.execute("SELECT count(*) FROM lat_cron WHERE at >= %s", (due,)).fetchone()[0] >= jobs:
                break
        conn.execute("SELECT cron.unschedule(jobid) FROM cron.job")
        lat = [r[0] * 1000 for r in conn.execute(
            "SELECT extract(epoch FROM min(at) - %s) FROM lat_cron WHERE at >= %s GROUP BY job", (due, due)).fetchall()]
    return summary(lat) if lat else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--skip-pg-cron", action="store_true")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pgtt-bench-sched-"))
    base.chmod(0o755)  # the server may run as another OS user (root cannot run PostgreSQL)
    have_cron = (Path(args.bindir).parent / "lib" / "pg_cron.so").exists() and not args.skip_pg_cron
    settings = {"max_connections": "200", "max_worker_processes": str(args.workers + 8)}
    if have_cron:
        settings.update({"shared_preload_libraries": "pg_cron", "cron.database_name": "postgres",
                         "cron.use_background_workers": "on", "cron.max_running_jobs": str(args.workers)})
    cluster = Cluster(base=base / "srv", bindir=Path(args.bindir), fast=True, settings=settings)
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        ours = asyncio.run(bench_ours(cluster, args.jobs, args.workers))
        print(f"pgtt-tui first start after {ours['min']:.1f} ms", file=sys.stderr)
        theirs = bench_pg_cron(cluster, args.jobs) if have_cron else None
    finally:
        cluster.destroy()
    print(f"PostgreSQL {version}; {args.jobs} jobs due at once; max_workers = {args.workers}")
    print(f"{'':10} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'n':>5}")
    print(f"{'pgtt-tui':10} {ours['p50']:9.1f} {ours['p99']:9.1f} {ours['max']:9.1f} {ours['n']:5d}")
    if theirs:
        print(f"{'pg_cron':10} {theirs['p50']:9.1f} {theirs['p99']:9.1f} {theirs['max']:9.1f} {theirs['n']:5d}")
        print(f"ratio pgtt-tui / pg_cron: p50 {ours['p50'] / theirs['p50']:.2f}, p99 {ours['p99'] / theirs['p99']:.2f}")
    else:
        print("pg_cron: not measured (not installed or --skip-pg-cron)")


if __name__ == "__main__":
    main()
