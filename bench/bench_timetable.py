"""timetable engine benchmarks (issue 3): throughput, start latency, cost of finding due chains.

One throw-away PostgreSQL server (the embedded 18, or ``--bindir`` e.g. PostgreSQL 15),
fsync off as in the tests; the engine runs in this process (engine.timetable.Scheduler).

(a) throughput: N trivial one-task SQL chains (``SELECT 1``, a local task in the chain
    transaction) all due at the same minute, run by the engine; against a baseline in the
    same run that issues the same statements plus the execution_log insert directly with
    psycopg (BEGIN; SELECT 1; COMMIT; INSERT INTO timetable.execution_log …), once with as
    many connections as the engine has cron workers and once on a single connection.
    Target: engine / baseline ≥ 0.5.  --rounds R repeats engine + baseline R times, one
    right after the other, and reports each round's ratio and the median (the machine this
    runs on is shared and noisy; single runs moved the ratio by ±0.1).
(b) latency: 1,000 chains due in the same second (a 6-field cron naming that second), real
    clock; per chain the delay from the due time to the task start (execution_log.last_run).
    Target: p99 < 100 ms.  With W cron workers only W runs can start at the due instant; the
    others wait for a free worker, so the figure is also given for the first W starts (what
    the scheduler adds: wake-up, claim, start) and with more workers (--b-workers).  The floor
    is measured in the same run: the baseline of (a) for 1,000 items due at one instant on W
    connections opened in advance (no scheduler, no bookkeeping), and the engine's p99 is
    printed as a ratio to the baseline's.
(c) scale: 100,000 chains defined; database time of the scheduler's per-tick queries
    (DUE_SQL, NEXT_WAKE_SQL, DIRTY_SQL from engine/timetable/scheduler.py, and DEFS_SQL from
    engine/timetable/executor.py, which reads the due chains' definitions in the claim's
    round trip) by EXPLAIN (ANALYZE, BUFFERS), with 0, 10, 100 and 1,000 chains due, and the
    same with 10,000 chains defined. Target: < 10 ms, growing with chains due, not defined.
(d) three engines (in this process, real clock) sharing 200 chains that fire every second
    ('* * * * * *'), for 10 s: firings claimed and runs completed per second in total
    (the chains' due rate is 200/s).

    python bench/bench_timetable.py [--bindir /usr/lib/postgresql/15/bin] [--n 2000] [--skip a,b,c,d]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import schema  # noqa: E402
from engine.clock import FakeClock, SystemClock  # noqa: E402
from engine.db import ConnSettings  # noqa: E402
from engine.embedded import Cluster, default_bindir  # noqa: E402
from engine.timetable import scheduler as sched_mod  # noqa: E402
from engine.timetable.executor import DEFS_SQL  # noqa: E402
from engine.timetable.options import TimetableOptions  # noqa: E402
from engine.timetable.scheduler import Scheduler  # noqa: E402

CLIENT = "bench"


class StepClock(FakeClock):
    """Fake time moved by the benchmark; sleepers wake when it passes their target."""

    def __init__(self, start: datetime):
        super().__init__(start)
        self._events: set[asyncio.Event] = set()

    def set(self, t: datetime) -> None:
        super().set(t)
        for ev in list(self._events):
            ev.set()

    async def sleep_until(self, t: datetime) -> None:
        while self.now() < t:
            ev = asyncio.Event()
            self._events.add(ev)
            try:
                await ev.wait()
            finally:
                self._events.discard(ev)


def fresh_db(cluster: Cluster, name: str) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    dsn = cluster.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.install(conn, ["pgtt", "timetable"])
    return dsn


def add_chains(dsn: str, n: int, run_at_sql: str, command: str = "SELECT 1") -> None:
    """n live one-task chains; run_at_sql is an SQL expression of g (1..n)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"""
            WITH c AS (
                INSERT INTO timetable.chain (chain_name, run_at, live)
                SELECT 'c' || g, {run_at_sql}, true FROM generate_series(1, %s) g
                RETURNING chain_id)
            INSERT INTO timetable.task (chain_id, task_order, kind, command)
            SELECT chain_id, 10, 'SQL', %s FROM c""", (n, command))
        conn.execute("ANALYZE")


async def start_engine(dsn: str, clock, **opts) -> tuple[Scheduler, asyncio.Event, asyncio.Task]:
    options = TimetableOptions(client_name=CLIENT, **opts).validate()
    sched = Scheduler(ConnSettings(dsn=dsn, application_name="bench engine"), options, clock)
    stopping = asyncio.Event()
    task = asyncio.create_task(sched.run(stopping))
    while not sched.ready:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return sched, stopping, task


async def wait_for(dsn: str, query: str, target: int, timeout: float = 600) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await (await conn.execute(query)).fetchone())[0] >= target:
                return
            await asyncio.sleep(0.01)
    raise TimeoutError(query)


# ---- (a) throughput --------------------------------------------------------------------------------

def server_cpu_seconds(cluster: Cluster) -> float:
    """CPU time of this benchmark's server: its postmaster (with the backends that exited)
    and its running children, from /proc; other servers on the machine are not counted."""
    postmaster = cluster.pid()
    if postmaster is None:
        return 0.0
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: CPU per run of the last engine_throughput() (server, engine process), in ms
LAST_CPU: dict[str, float] = {}


async def engine_throughput(cluster: Cluster, n: int, workers: int) -> float:
    dsn = fresh_db(cluster, "tt_a")
    add_chains(dsn, n, "'* * * * *'")
    clock = StepClock(datetime(2030, 1, 1, 0, 0, 30, tzinfo=timezone.utc))
    sched, stopping, task = await start_engine(dsn, clock, cron_workers=workers, poll_seconds=0.5)
    await wait_for(dsn, "SELECT count(*) FROM timetable.chain_state WHERE next_due_at IS NOT NULL", n)
    cpu0, own0 = server_cpu_seconds(cluster), own_cpu_seconds()
    t0 = time.perf_counter()
    clock.set(datetime(2030, 1, 1, 0, 1, 0, tzinfo=timezone.utc))
    await wait_for(dsn, "SELECT count(*) FROM timetable.chain_run WHERE status = 'succeeded'", n)
    elapsed = time.perf_counter() - t0
    LAST_CPU.update(server=(server_cpu_seconds(cluster) - cpu0) / n * 1000, engine=(own_cpu_seconds() - own0) / n * 1000)
    stopping.set()
    await task
    with psycopg.connect(dsn, autocommit=True) as conn:
        runs, logs = conn.execute("SELECT (SELECT count(*) FROM timetable.chain_run), "
                                  "(SELECT count(*) FROM timetable.execution_log)").fetchone()
    assert runs == n and logs == n, (runs, logs)
    return n / elapsed


#: the baseline's execution_log row (a, b): what the engine writes per one-task run
BASELINE_INSERT = ("INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, pid, returncode, "
                   "ignore_error, kind, command, output, client_name, params) "
                   "VALUES (%s, %s, %s, %s, clock_timestamp(), 1, 0, false, 'SQL', 'SELECT 1', %s, 'bench', NULL)")


def _numbers(n: int) -> asyncio.Queue[int]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    return queue


async def baseline_throughput(cluster: Cluster, n: int, conns: int) -> float:
    dsn = fresh_db(cluster, "tt_base")
    insert, queue = BASELINE_INSERT, _numbers(n)

    async def worker() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while not queue.empty():
                i = queue.get_nowait()
                started = datetime.now(timezone.utc)
                await conn.execute("BEGIN")
                cur = await conn.execute("SELECT 1")
                tag = cur.statusmessage
                await conn.execute("COMMIT")
                await conn.execute(insert, (i, i, i, started, tag))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return n / (time.perf_counter() - t0)


# ---- (b) latency -------------------------------------------------------------------------------------

async def latency(cluster: Cluster, n: int, workers: int) -> dict[str, float]:
    dsn = fresh_db(cluster, "tt_b")
    due = (datetime.now(timezone.utc) + timedelta(seconds=20)).replace(microsecond=0)
    cron = f"{due.second} {due.minute} {due.hour} {due.day} {due.month} *"
    add_chains(dsn, n, f"'{cron}'")
    with psycopg.connect(dsn, autocommit=True) as conn:  # the cron text is in UTC
        conn.execute("INSERT INTO timetable.chain_option (chain_id, time_zone) SELECT chain_id, 'UTC' "
                     "FROM timetable.chain")
    sched, stopping, task = await start_engine(dsn, SystemClock(), cron_workers=workers)
    await wait_for(dsn, "SELECT count(*) FROM timetable.chain_state WHERE next_due_at IS NOT NULL", n)
    with psycopg.connect(dsn, autocommit=True) as conn:
        nexts = conn.execute("SELECT DISTINCT next_due_at FROM timetable.chain_state").fetchall()
    assert nexts == [(due,)], (nexts, due)
    if datetime.now(timezone.utc) >= due:
        raise RuntimeError("set-up took longer than 20 s; the firing passed")
    await wait_for(dsn, "SELECT count(*) FROM timetable.execution_log", n, timeout=300)
    stopping.set()
    await task
    with psycopg.connect(dsn, autocommit=True) as conn:
        lags = [r[0] for r in conn.execute(
            "SELECT extract(epoch FROM e.last_run - r.due_at) * 1000 FROM timetable.execution_log e "
            "JOIN timetable.chain_run r ON r.chain_id = e.chain_id ORDER BY 1").fetchall()]
    lags = [float(x) for x in lags]
    q = statistics.quantiles(lags, n=100)
    first = lags[:workers]  # the starts that found a free worker at the due instant
    return {"p50": statistics.median(lags), "p99": q[98], "max": max(lags), "min": min(lags),
            "first_p50": statistics.median(first), "first_max": max(first), "per_s": n / (max(lags) / 1000.0)}


async def baseline_latency(cluster: Cluster, n: int, conns: int) -> dict[str, float]:
    """(b)'s floor: the baseline of (a) (BEGIN; SELECT 1; COMMIT; INSERT execution_log, bare
    psycopg, no bookkeeping) for n "chains" due at the same instant on ``conns`` connections
    opened in advance; per item the delay from the due instant to the start of its statement."""
    dsn = fresh_db(cluster, "tt_bb")
    insert, queue = BASELINE_INSERT, _numbers(n)
    lags: list[float] = []
    connections = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(conns)]
    due = time.time() + 1.0

    async def worker(conn: psycopg.AsyncConnection) -> None:
        await asyncio.sleep(max(0.0, due - time.time()))
        while not queue.empty():
            i = queue.get_nowait()
            started = datetime.now(timezone.utc)
            lags.append((started.timestamp() - due) * 1000.0)
            await conn.execute("BEGIN")
            cur = await conn.execute("SELECT 1")
            tag = cur.statusmessage
            await conn.execute("COMMIT")
            await conn.execute(insert, (i, i, i, started, tag))

    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        for c in connections:
            await c.close()
    lags.sort()
    return {"p50": statistics.median(lags), "p99": statistics.quantiles(lags, n=100)[98], "max": lags[-1]}


# ---- (c) scale of the due query ------------------------------------------------------------------------

def explain_ms(conn: psycopg.Connection, query: str, params) -> float:
    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, params).fetchone()[0][0]
    return float(plan["Execution Time"]) + float(plan.get("Planning Time", 0.0))


async def scale(cluster: Cluster, defined: int) -> list[tuple[int, float, float, float, float]]:
    dsn = fresh_db(cluster, f"tt_c{defined}")
    t0 = time.perf_counter()
    # spread over the day: one chain per (minute, hour) slot, round-robin
    add_chains(dsn, defined, "((g %% 60)::text || ' ' || ((g / 60) %% 24)::text || ' * * *')")
    print(f"  ({defined} chains inserted in {time.perf_counter() - t0:.1f} s)", flush=True)
    clock = StepClock(datetime(2030, 1, 1, 0, 0, 30, tzinfo=timezone.utc))
    t0 = time.perf_counter()
    sched, stopping, task = await start_engine(dsn, clock, poll_seconds=3600)
    await wait_for(dsn, "SELECT count(*) FROM timetable.chain_state WHERE next_due_at IS NOT NULL", defined)
    print(f"  (next due times of {defined} chains computed in {time.perf_counter() - t0:.1f} s)", flush=True)
    stopping.set()
    await task
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE timetable.chain_state")
        nexts = [r[0] for r in conn.execute("SELECT next_due_at FROM timetable.chain_state "
                                            "ORDER BY next_due_at").fetchall()]
        for due in (0, 10, 100, 1000):
            now = nexts[0] - timedelta(seconds=1) if due == 0 else nexts[due - 1]
            # ties: count what is really due at this 'now'
            really = sum(1 for t in nexts if t <= now)
            params = {"me": CLIENT, "now": now, "n": 1000}
            ids = [r[0] for r in conn.execute("SELECT chain_id FROM timetable.chain_state WHERE next_due_at <= %s "
                                              "ORDER BY next_due_at LIMIT 1000", (now,)).fetchall()]
            runs = []
            for _ in range(7):
                runs.append((explain_ms(conn, sched_mod.DUE_SQL, params),
                             explain_ms(conn, sched_mod.NEXT_WAKE_SQL, {"me": CLIENT}),
                             explain_ms(conn, sched_mod.DIRTY_SQL, (1000,)),
                             explain_ms(conn, DEFS_SQL, (ids,))))
            med = [statistics.median(col) for col in zip(*runs)]
            out.append((really, *med))
    return out


# ---- (d) three engines ------------------------------------------------------------------------------

async def three_engines(cluster: Cluster, chains: int, seconds: float) -> tuple[float, float]:
    dsn = fresh_db(cluster, "tt_d")
    add_chains(dsn, chains, "'* * * * * *'")
    engines = []
    for name in ("e1", "e2", "e3"):
        options = TimetableOptions(client_name=name).validate()
        sched = Scheduler(ConnSettings(dsn=dsn, application_name=f"bench {name}"), options, SystemClock())
        stopping = asyncio.Event()
        engines.append((sched, stopping, asyncio.create_task(sched.run(stopping))))
    while not all(s.ready for s, _, _ in engines):
        for _, _, t in engines:
            if t.done():
                t.result()
        await asyncio.sleep(0.01)
    await asyncio.sleep(2.0)  # warm-up: connections, first firings
    count = ("SELECT count(*) FILTER (WHERE claimed_at >= %(t0)s), "
             "count(*) FILTER (WHERE status = 'succeeded' AND finished_at >= %(t0)s) FROM timetable.chain_run")
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        await asyncio.sleep(seconds)
        t1 = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        claimed, done = conn.execute(count.replace(">= %(t0)s", "BETWEEN %(t0)s AND %(t1)s"),
                                     {"t0": t0, "t1": t1}).fetchone()
    for _, stopping, _ in engines:
        stopping.set()
    await asyncio.gather(*(t for _, _, t in engines))
    span = (t1 - t0).total_seconds()
    return claimed / span, done / span


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindir", default=None)
    ap.add_argument("--n", type=int, default=2000, help="chains for the throughput test")
    ap.add_argument("--workers", type=int, default=16, help="engine cron workers")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c,d")
    ap.add_argument("--b-workers", default="16,64", help="cron worker counts for (b), comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (a): engine then baseline, each round")
    args = ap.parse_args()
    skip = set(args.skip.split(",")) if args.skip else set()
    base = Path(tempfile.mkdtemp(prefix="pgtt-bench-"))
    base.chmod(0o755)  # the server may run as another OS user (root cannot run PostgreSQL)
    cluster = Cluster(base=base / "pg", bindir=Path(args.bindir) if args.bindir else default_bindir(), fast=True,
                      settings={"max_connections": "200"})
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as c:
            print(f"server: {c.execute('SHOW server_version').fetchone()[0]}", flush=True)
        if "a" not in skip:
            print(f"(a) throughput, {args.n} one-task chains, {args.workers} cron workers, {args.rounds} round(s)",
                  flush=True)
            ratios, ratios_one = [], []
            for rnd in range(1, args.rounds + 1):
                eng = await engine_throughput(cluster, args.n, args.workers)
                base_par = await baseline_throughput(cluster, args.n, args.workers)
                base_one = await baseline_throughput(cluster, args.n, 1)
                ratios.append(eng / base_par)
                ratios_one.append(eng / base_one)
                print(f"  round {rnd}: CPU per run in the timed window: server {LAST_CPU['server']:.2f} ms, "
                      f"engine process {LAST_CPU['engine']:.2f} ms (includes this benchmark's polling)", flush=True)
                print(f"  round {rnd}: engine {eng:6.0f} chains/s   baseline, {args.workers} connections {base_par:6.0f} "
                      f"runs/s (ratio {eng / base_par:.2f})   baseline, 1 connection {base_one:6.0f} runs/s "
                      f"(ratio {eng / base_one:.2f})", flush=True)
            print(f"  median ratio: {statistics.median(ratios):.2f} ({args.workers} connections), "
                  f"{statistics.median(ratios_one):.2f} (1 connection)", flush=True)
        if "b" not in skip:
            for workers in (int(w) for w in args.b_workers.split(",")):
                print(f"(b) latency, 1000 chains due in the same second (real clock), {workers} cron workers",
                      flush=True)
                res = await latency(cluster, 1000, workers)
                print("  due -> task start: p50 {p50:.1f} ms  p99 {p99:.1f} ms  min {min:.1f} ms  max {max:.1f} ms"
                      .format(**res), flush=True)
                print(f"  the first {workers} starts (a free worker each): p50 {res['first_p50']:.1f} ms  "
                      f"max {res['first_max']:.1f} ms;  all 1000 started at {res['per_s']:.0f} starts/s",
                      flush=True)
                base = await baseline_latency(cluster, 1000, workers)
                print(f"  floor: the baseline of (a) on {workers} connections, 1000 due at once: p50 {base['p50']:.1f} ms"
                      f"  p99 {base['p99']:.1f} ms  max {base['max']:.1f} ms   (engine p99 / baseline p99: "
                      f"{res['p99'] / base['p99']:.2f})", flush=True)
        if "c" not in skip:
            for defined in (10_000, 100_000):
                print(f"(c) per-tick query time with {defined} chains defined (median of 7, ms)", flush=True)
                for due, due_ms, wake_ms, dirty_ms, defs_ms in await scale(cluster, defined):
                    print(f"  due {due:5d}: DUE_SQL {due_ms:7.3f}  NEXT_WAKE_SQL {wake_ms:6.3f}  "
                          f"DIRTY_SQL {dirty_ms:6.3f}  total {due_ms + wake_ms + dirty_ms:7.3f}  "
                          f"(+ DEFS_SQL {defs_ms:7.3f} = {due_ms + wake_ms + dirty_ms + defs_ms:7.3f})", flush=True)
        if "d" not in skip:
            print("(d) three engines, 200 chains firing every second, 10 s (real clock)", flush=True)
            claimed, done = await three_engines(cluster, 200, 10.0)
            print(f"  firings claimed {claimed:6.1f}/s   runs completed {done:6.1f}/s   (due: 200/s)", flush=True)
    finally:
        cluster.stop(mode="immediate")


if __name__ == "__main__":
    asyncio.run(main())
