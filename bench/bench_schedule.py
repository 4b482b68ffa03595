"""Start latency of jobs due at once, and sustained throughput: pgtt-tui's schedule manager
against pg_cron on the same PostgreSQL server, in the same run.

    python bench/bench_schedule.py [--configs 200x8,200x32,1000x8,1000x32] [--roles 3]
                                   [--rounds 1] [--throughput 60] [--throughput-jobs 1000]
                                   [--bindir /usr/lib/postgresql/15/bin]

For each workers value a dedicated server is started with shared_preload_libraries =
pg_cron (Debian's postgresql-15-cron; if it is not installed nothing is installed and only
our side is measured), cron.use_background_workers = on, cron.max_running_jobs = workers;
ours uses schedule.max_workers = workers and one in-process DatabaseManager (one engine).

Latency (JOBSxWORKERS): JOBS jobs owned by --roles run_as roles (pg_cron: the same roles as
the jobs' username) insert clock_timestamp() into a table; the start latency is that time
minus the instant the job was due.  pg_cron schedules to the minute, so its jobs are
'* * * * *' and due at the next minute boundary; ours use a 6-field cron string due at one
second.  Prints p50 / p99 / max and the ratios ours / pg_cron.

Throughput (--throughput SECONDS, 0 = skip; --rounds 0 runs it alone): --throughput-jobs
(1,000) jobs every second (ours '* * * * * *',
pg_cron '1 seconds') with the largest workers value, for that many seconds after a 5 s
warm-up: runs started per second, each side, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import schema  # noqa: E402
from engine.clock import SystemClock  # noqa: E402
from engine.db import ConnSettings  # noqa: E402
from engine.embedded import Cluster  # noqa: E402
from engine.schedule.manager import DatabaseManager  # noqa: E402

ROLE = "bench_run_as_{}"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def summary(lat: list[float]) -> dict:
    return {"n": len(lat), "min": min(lat), "p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat),
            "mean": statistics.fmean(lat)}


def roles_setup(conn: psycopg.Connection, n: int, table: str) -> list[str]:
    names = [ROLE.format(i) for i in range(n)]
    for name in names:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT INSERT ON {} TO {}").format(sql.Identifier(table), sql.Identifier(name)))
    return names


def fresh_db(cluster: Cluster, workers: int) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS bench_sched WITH (FORCE)")
        admin.execute("CREATE DATABASE bench_sched")
        admin.execute(f"ALTER DATABASE bench_sched SET schedule.max_workers = {int(workers)}")
    dsn = cluster.dsn("bench_sched")
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.install(conn, ["pgtt", "schedule"])
        conn.execute("SELECT schedule.enable()")
    return dsn


async def run_manager(dsn: str, until) -> None:
    stopping = asyncio.Event()
    mgr = DatabaseManager(ConnSettings(dsn=dsn), clock=SystemClock(), engine_name="bench")
    task = asyncio.create_task(mgr.run(stopping))
    try:
        await until()
    finally:
        stopping.set()
        await task


async def bench_ours(cluster: Cluster, jobs: int, workers: int, n_roles: int) -> dict:
    dsn = fresh_db(cluster, workers)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE lat (job int, at timestamptz)")
        roles = roles_setup(conn, n_roles, "lat")
        due = (datetime.now(timezone.utc) + timedelta(seconds=3 + jobs // 150)).replace(microsecond=0)
        cron = f"{due.second} {due.minute} {due.hour} {due.day} {due.month} *"
        with conn.transaction():
            for i in range(jobs):
                conn.execute("SELECT schedule.create_job(%s::jsonb)", (psycopg.types.json.Json(
                    {"cron": cron, "commands": f"insert into public.lat values ({i}, clock_timestamp())",
                     "run_as": roles[i % len(roles)]}),))

        async def until():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                if conn.execute("SELECT count(*) FROM lat").fetchone()[0] >= jobs:
                    return

        await run_manager(dsn, until)
        lat = [r[0] * 1000 for r in conn.execute("SELECT extract(epoch FROM at - %s) FROM lat", (due,)).fetchall()]
    return summary(lat)


def bench_pg_cron(cluster: Cluster, jobs: int, n_roles: int) -> dict | None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        conn.execute("DROP TABLE IF EXISTS lat_cron")
        conn.execute("CREATE TABLE lat_cron (job int, at timestamptz)")
        roles = roles_setup(conn, n_roles, "lat_cron")
        now = datetime.now(timezone.utc)
        if now.second > 45:  # leave time to create the jobs before the boundary
            time.sleep(61 - now.second)
        with conn.transaction():
            for i in range(jobs):
                conn.execute("SELECT cron.schedule_in_database(%s, '* * * * *', %s, 'postgres', %s)",
                             (f"b{i}", f"insert into public.lat_cron values ({i}, clock_timestamp())",
                              roles[i % len(roles)]))
        due = (datetime.now(timezone.utc) + timedelta(minutes=1)).replace(second=0, microsecond=0)
        deadline = time.monotonic() + (due - datetime.now(timezone.utc)).total_seconds() + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if conn.execute("SELECT count(DISTINCT job) FROM lat_cron WHERE at >= %s", (due,)).fetchone()[0] >= jobs:
                break
        conn.execute("SELECT cron.unschedule(jobid) FROM cron.job")
        lat = [r[0] * 1000 for r in conn.execute(
            "SELECT extract(epoch FROM min(at) - %s) FROM lat_cron WHERE at >= %s GROUP BY job", (due, due)).fetchall()]
        conn.execute("DELETE FROM cron.job_run_details")
    return summary(lat) if lat else None


async def throughput_ours(cluster: Cluster, workers: int, seconds: int, jobs: int = 1000) -> float:
    dsn = fresh_db(cluster, workers)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tp (job int, at timestamptz DEFAULT clock_timestamp())")
        with conn.transaction():
            for i in range(jobs):
                conn.execute("SELECT schedule.create_job('* * * * * *', %s)", (f"insert into public.tp values ({i})",))
        t0 = datetime.now(timezone.utc) + timedelta(seconds=5)

        async def until():
            await asyncio.sleep(5 + seconds)

        await run_manager(dsn, until)
        n = conn.execute("SELECT count(*) FROM tp WHERE at >= %s AND at < %s",
                         (t0, t0 + timedelta(seconds=seconds))).fetchone()[0]
    return n / seconds


def throughput_pg_cron(cluster: Cluster, seconds: int, jobs: int = 1000) -> float | None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        conn.execute("DROP TABLE IF EXISTS tp_cron")
        conn.execute("CREATE TABLE tp_cron (job int, at timestamptz DEFAULT clock_timestamp())")
        try:
            with conn.transaction():
                for i in range(jobs):
                    conn.execute("SELECT cron.schedule(%s, '1 seconds', %s)",
                                 (f"tp{i}", f"insert into public.tp_cron values ({i})"))
        except psycopg.errors.InvalidParameterValue:
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]
            print(f"pg_cron {version} has no schedules in seconds (1.5 and later have): its sustained throughput "
                  "is not measured; see the burst start rates below", file=sys.stderr)
            return None
        t0 = datetime.now(timezone.utc) + timedelta(seconds=5)
        time.sleep(5 + seconds)
        conn.execute("SELECT cron.unschedule(jobid) FROM cron.job")
        n = conn.execute("SELECT count(*) FROM tp_cron WHERE at >= %s AND at < %s",
                         (t0, t0 + timedelta(seconds=seconds))).fetchone()[0]
        conn.execute("DELETE FROM cron.job_run_details")
    return n / seconds


def start_cluster(base: Path, bindir: Path, workers: int, have_cron: bool) -> Cluster:
    settings = {"max_connections": "300", "max_worker_processes": str(workers + 16)}
    if have_cron:
        settings.update({"shared_preload_libraries": "pg_cron", "cron.database_name": "postgres",
                         "cron.use_background_workers": "on", "cron.max_running_jobs": str(workers)})
    cluster = Cluster(base=base / f"srv{workers}", bindir=bindir, fast=True, settings=settings)
    cluster.init()
    cluster.start()
    return cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="200x8,200x32,1000x8,1000x32", help="JOBSxWORKERS, comma-separated")
    ap.add_argument("--roles", type=int, default=3, help="run_as roles the jobs are spread over")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--throughput", type=int, default=60, help="seconds of the throughput test (0: skip)")
    ap.add_argument("--throughput-jobs", type=int, default=1000, help="every-second jobs of the throughput test")
    ap.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--skip-pg-cron", action="store_true")
    args = ap.parse_args()
    configs = [tuple(int(x) for x in c.split("x")) for c in args.configs.split(",")]
    base = Path(tempfile.mkdtemp(prefix="pgtt-bench-sched-"))
    base.chmod(0o755)  # the server may run as another OS user (root cannot run PostgreSQL)
    have_cron = (Path(args.bindir).parent / "lib" / "pg_cron.so").exists() and not args.skip_pg_cron
    if not have_cron and not args.skip_pg_cron:
        print(f"pg_cron is not installed for {args.bindir} (Debian: postgresql-15-cron); nothing was installed, "
              "only pgtt-tui is measured", file=sys.stderr)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    for workers in sorted({w for _, w in configs}):
        cluster = start_cluster(base, Path(args.bindir), workers, have_cron)
        try:
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
            for rnd in range(args.rounds):
                for jobs in [j for j, w in configs if w == workers]:
                    load = os.getloadavg()[0]
                    ours = asyncio.run(bench_ours(cluster, jobs, workers, args.roles))
                    theirs = bench_pg_cron(cluster, jobs, args.roles) if have_cron else None
                    rows.append((jobs, workers, rnd, load, ours, theirs))
                    line = (f"{jobs}x{workers} round {rnd + 1} (load {load:.1f}): pgtt-tui p50 {ours['p50']:.0f} "
                            f"p99 {ours['p99']:.0f} ms")
                    if theirs:
                        line += (f"; pg_cron p50 {theirs['p50']:.0f} p99 {theirs['p99']:.0f} ms; ratio p50 "
                                 f"{ours['p50'] / theirs['p50']:.2f} p99 {ours['p99'] / theirs['p99']:.2f}")
                    print(line, flush=True)
            if args.throughput and workers == max(w for _, w in configs):
                load = os.getloadavg()[0]
                ours_tp = asyncio.run(throughput_ours(cluster, workers, args.throughput, args.throughput_jobs))
                theirs_tp = throughput_pg_cron(cluster, args.throughput, args.throughput_jobs) if have_cron else None
                line = (f"throughput, {args.throughput_jobs} every-second jobs, {workers} workers, {args.throughput} s "
                        f"(load {load:.1f}): "
                        f"pgtt-tui {ours_tp:.0f} runs/s")
                if have_cron and theirs_tp is None:
                    line += "; pg_cron: not measured (no seconds schedules)"
                if theirs_tp:
                    line += f"; pg_cron {theirs_tp:.0f} runs/s; ratio {ours_tp / theirs_tp:.2f}"
                print(line, flush=True)
        finally:
            cluster.destroy()
    print(f"\nPostgreSQL {version}; jobs spread over {args.roles} run_as roles; medians of {args.rounds} round(s)")
    print("burst start rate = jobs / (due -> last start), median over rounds")
    print(f"{'config':>9} {'ours p50':>9} {'ours p99':>9} {'cron p50':>9} {'cron p99':>9} {'ratio p50':>9} {'ratio p99':>9}"
          f" {'ours /s':>8} {'cron /s':>8}")
    for jobs, workers in configs:
        rs = [r for r in rows if r[0] == jobs and r[1] == workers]
        if not rs:  # --rounds 0: the throughput test only
            continue
        o50 = statistics.median(r[4]["p50"] for r in rs)
        o99 = statistics.median(r[4]["p99"] for r in rs)
        if all(r[5] for r in rs):
            c50 = statistics.median(r[5]["p50"] for r in rs)
            c99 = statistics.median(r[5]["p99"] for r in rs)
            r50 = statistics.median(r[4]["p50"] / r[5]["p50"] for r in rs)
            r99 = statistics.median(r[4]["p99"] / r[5]["p99"] for r in rs)
            orate = statistics.median(jobs / (r[4]["max"] / 1000) for r in rs)
            crate = statistics.median(jobs / (r[5]["max"] / 1000) for r in rs)
            print(f"{jobs:>4}x{workers:<4} {o50:9.0f} {o99:9.0f} {c50:9.0f} {c99:9.0f} {r50:9.2f} {r99:9.2f}"
                  f" {orate:8.0f} {crate:8.0f}")
        else:
            print(f"{jobs:>4}x{workers:<4} {o50:9.0f} {o99:9.0f} {'-':>9} {'-':>9} {'-':>9} {'-':>9}")


if __name__ == "__main__":
    main()
