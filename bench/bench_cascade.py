"""Cascade benchmark: propagation latency root → branch → leaf and switchover duration.

Three separate servers, a producer inserting at a steady rate at the root, our cascaded
workers (``pgtt-tui worker --modules cascade``) with a sink table on the branch and the leaf
(``stored_at - ev_time`` = latency; all servers share the host clock).  Runs:

1. our pgq + pgq_node schema (PL/pgSQL);
2. the real pgq + pgq_node extensions driven by our engine (where installed);
3. the Python PgQ cascade tools (python3-pgq CascadedWorker / CascadedConsumer) on the real
   extensions (where installed; run with /usr/bin/python3), latency only: their
   ``takeover`` command crashes standalone (reference/pgq.md §b.6).

Switchover = ``plan_takeover`` from its first step to its last.  Prints p50/p99 and the
ratios ours/python-pgq measured in the same run.

    PYTHONPATH=. /tmp/venv/bin/python bench/bench_cascade.py [--seconds 20] [--rate 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.cascade import ops  # noqa: E402
from engine.cascade.plan import PlanRunner  # noqa: E402
from engine.embedded import Cluster, default_bindir  # noqa: E402
from tests.test_cascade_helpers import QUEUE, fast_ticks, prepare_db, run_plan  # noqa: E402

PG15 = Path("/usr/lib/postgresql/15/bin")
SINK_SQL = ("SELECT extract(epoch FROM stored_at - ev_time) * 1000 FROM cascade_sink WHERE ev_type = 'data' "
            "AND ev_data::bigint > %s")


def has_ext(bindir: Path) -> bool:
    try:
        share = subprocess.run([str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True).stdout
    except OSError:
        return False
    ext = Path(share.strip()) / "extension"
    return (ext / "pgq.control").exists() and (ext / "pgq_node.control").exists()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def produce(dsn: str, rate: float, seconds: float, start_n: int = 0) -> int:
    n = start_n
    with psycopg.connect(dsn, autocommit=True) as conn:
        t_end = time.monotonic() + seconds
        nxt = time.monotonic()
        while time.monotonic() < t_end:
            n += 1
            conn.execute("SELECT pgq.insert_event(%s, 'data', %s)", (QUEUE, str(n)))
            nxt += 1.0 / rate
            time.sleep(max(0.0, nxt - time.monotonic()))
    return n


def start_worker(dsn: str, log: Path, sink: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "pgtt_tui", "worker", "--dsn", dsn, "--modules", "cascade", "--cascade-queue",
            QUEUE, "--cascade-loop-delay", "0.02", "--cascade-wm-period", "5", "--cascade-root-ticker",
            "--log-level", "warn"]
    if sink:
        args += ["--cascade-sink-table", "cascade_sink"]
    return subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def wait_drained(dsn: str, upto: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('cascade_sink') IS NOT NULL").fetchone()[0] and conn.execute(
                    "SELECT count(*) FROM cascade_sink WHERE ev_type = 'data' AND ev_data::bigint <= %s",
                    (upto,)).fetchone()[0] >= upto:
                return
        time.sleep(0.2)
    raise SystemExit(f"the sink at {dsn} did not receive {upto} events in {timeout}s")


def latencies(dsn: str, after: int) -> list[float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [float(r[0]) for r in conn.execute(SINK_SQL, (after,)).fetchall()]


def servers(bindir: Path, root: Path, n: int = 3) -> list[Cluster]:
    out = []
    for i in range(n):
        c = Cluster(base=root / f"s{i}", bindir=bindir, fast=True, settings={"synchronous_commit": "on"})
        c.init()
        c.start()
        out.append(c)
    return out


def run_ours(bindir: Path, root: Path, real: bool, seconds: float, rate: float) -> dict:
    cl = servers(bindir, root)
    procs = []
    try:
        a, b, c = (prepare_db(s, real_extensions=real) for s in cl)
        run_plan(ops.plan_create_root(QUEUE, "A", a))
        run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
        run_plan(ops.plan_create_leaf(QUEUE, "C", c, b))
        fast_ticks(a)
        fast_ticks(b)
        procs = [start_worker(a, root / "wA.log", False), start_worker(b, root / "wB.log", True),
                 start_worker(c, root / "wC.log", True)]
        warm = produce(a, rate, 3.0)
        wait_drained(c, warm)
        n = produce(a, rate, seconds, warm)
        wait_drained(c, n)
        res = {"branch": latencies(b, warm), "leaf": latencies(c, warm), "events": n - warm}
        # switchover A -> B, first step to last
        plan = ops.plan_takeover(a, QUEUE, "A", "B")
        t0 = time.monotonic()
        with PlanRunner(plan) as runner:
            out = runner.run()
        res["switchover_s"] = time.monotonic() - t0
        res["switchover_ok"] = out.ok
        res["switchover_steps"] = len(plan.steps)
        return res
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for s in cl:
            s.destroy()


PYPGQ_SCRIPT = textwrap.dedent('''
    import sys, pgq
    from pgq.cascade.worker import CascadedWorker
    from pgq.cascade.consumer import CascadedConsumer

    class Branch(CascadedWorker):
        def connection_hook(self, dbname, conn):
            if dbname == "db":
                conn.cursor().execute("set session_replication_role = 'replica'")
                conn.commit()
        def process_remote_event(self, src_curs, dst_curs, ev):
            if ev.type.startswith("pgq."):
                return CascadedWorker.process_remote_event(self, src_curs, dst_curs, ev)
            dst_curs.execute("insert into cascade_sink (ev_id, ev_time, ev_type, ev_data, tick_id) "
                             "values (%s, %s, %s, %s, 0)", [ev.id, ev.time, ev.type, ev.data])
            ev.tag_done()

    kind, ini = sys.argv[1], sys.argv[2]
    cls = Branch
    cls(kind, "db", [ini]).start()
''')


def run_python_pgq(bindir: Path, root: Path, seconds: float, rate: float) -> dict | None:
    py = "/usr/bin/python3"
    if subprocess.run([py, "-c", "import pgq, skytools, psycopg2"], capture_output=True).returncode != 0:
        return None
    cl = servers(bindir, root)
    procs = []
    try:
        a, b, c = (prepare_db(s, real_extensions=True) for s in cl)
        run_plan(ops.plan_create_root(QUEUE, "A", a))
        run_plan(ops.plan_create_branch(QUEUE, "B", b, a))
        run_plan(ops.plan_create_leaf(QUEUE, "C", c, b))
        fast_ticks(a)
        fast_ticks(b)
        for dsn in (b, c):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE cascade_sink (ev_id bigint, ev_time timestamptz, ev_type text, "
                             "ev_data text, tick_id bigint, stored_at timestamptz DEFAULT clock_timestamp())")
        script = root / "pypgq_worker.py"
        script.write_text(PYPGQ_SCRIPT)
        for name, dsn, worker in (("B", b, "B_worker"), ("C", c, "C_worker")):
            ini = root / f"{name}.ini"
            ini.write_text(f"[pypgq]\njob_name = {worker}\nqueue_name = {QUEUE}\ndb = {dsn}\n"
                           f"logfile = {root}/{name}.pylog\npidfile = {root}/{name}.pid\nloop_delay = 0.02\n")
            procs.append(subprocess.Popen([py, str(script), "pypgq", str(ini)], stdout=open(root / f"{name}.out", "ab"),
                                          stderr=subprocess.STDOUT))
        stop = threading.Event()

        def ticker():
            with psycopg.connect(a, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute("SELECT pgq.ticker(%s)", (QUEUE,))
                    time.sleep(0.02)
        t = threading.Thread(target=ticker, daemon=True)
        t.start()
        try:
            warm = produce(a, rate, 3.0)
            wait_drained(c, warm)
            n = produce(a, rate, seconds, warm)
            wait_drained(c, n)
        finally:
            stop.set()
            t.join(5)
        return {"branch": latencies(b, warm), "leaf": latencies(c, warm), "events": n - warm}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for s in cl:
            s.destroy()


def show(name: str, res: dict | None) -> None:
    if res is None:
        print(f"{name:44s} not available")
        return
    line = (f"{name:44s} events {res['events']:5d}  branch p50 {pct(res['branch'], 50):7.1f} ms p99 "
            f"{pct(res['branch'], 99):7.1f} ms  leaf p50 {pct(res['leaf'], 50):7.1f} ms p99 "
            f"{pct(res['leaf'], 99):7.1f} ms")
    if "switchover_s" in res:
        line += f"  switchover {res['switchover_s']:.2f} s ({res['switchover_steps']} steps, ok={res['switchover_ok']})"
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=200.0)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-cascade-"))
    os.chmod(root, 0o755)
    bindir = PG15 if has_ext(PG15) else default_bindir()
    print(f"servers: {bindir}; {args.rate:g} events/s for {args.seconds:g} s; root ticks every ~20 ms")
    ours = run_ours(bindir, root / "ours", False, args.seconds, args.rate)
    show("pgtt-tui engine, our pgq/pgq_node schema", ours)
    real = run_ours(bindir, root / "real", True, args.seconds, args.rate) if has_ext(bindir) else None
    show("pgtt-tui engine, real pgq/pgq_node extensions", real)
    py = run_python_pgq(bindir, root / "py", args.seconds, args.rate) if has_ext(bindir) else None
    show("python3-pgq cascade workers, real extensions", py)
    if py:
        for label, res in (("ours/python-pgq (our schema)", ours), ("ours/python-pgq (real ext)", real)):
            if res:
                print(f"{label:44s} leaf p50 ratio {pct(res['leaf'], 50) / pct(py['leaf'], 50):.2f}  "
                      f"p99 ratio {pct(res['leaf'], 99) / pct(py['leaf'], 99):.2f}")


if __name__ == "__main__":
    main()
