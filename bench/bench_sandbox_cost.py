"""What the schedule job sandbox costs per run, now and as it was, against no sandbox.

    python bench/bench_sandbox_cost.py [--runs 2000] [--rounds 3] [--bindir /usr/lib/postgresql/15/bin]

One dedicated server, one connection, runs one after another (no concurrency: this is the
cost of a run, not a latency).  Every variant runs the same job (an INSERT as a run_as
role), records the same outcome row and resets the session after the run; only the way the
job is fenced differs:

- ``bare``: ``SET LOCAL ROLE`` and the job as plain statements: what a run would cost
  without a sandbox (and without its boundary: the job could ``RESET ROLE``);
- ``before``: the sandbox as the engine ran it until 2026-12-04 (commit e4a14db): its
  statements sent one by one in a pipeline (hazard list, CREATE FUNCTION, ALTER OWNER,
  SET LOCAL ROLE, the call, RESET ROLE, search_path pin, DROP, hazard list, the outcome),
  and the session reset including DISCARD PLANS;
- ``now``: ``schedule._run_cron`` (one statement) and ``schedule._reset_session()``.

Prints, per variant, wall time, server (backend) CPU and client CPU per run, medians of the
rounds, and the sandbox's cost = variant - bare.  The variants alternate within each round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import schema  # noqa: E402
from engine.embedded import Cluster  # noqa: E402

ROLE = "bench_sandbox_robot"
JOB = "insert into public.bench_t values (1, clock_timestamp())"
SETTINGS = ("SELECT pg_catalog.set_config('schedule.job_id', %s, false), "
            "pg_catalog.set_config('schedule.job_kind', 'cron', false), "
            "pg_catalog.set_config('schedule.transaction_state', 'running', false)")
FINISH = "UPDATE schedule.cron_run SET state = 'done', finished = clock_timestamp(), pid = NULL WHERE run_id = %s"
RESET = "SELECT schedule._reset_session()"

# the sandbox function as it was created per run before (the job text is an argument)
OLD_BODY = """
DECLARE
    v_sql pg_catalog.text;
    v_result pg_catalog.timestamptz;
    v_cursor pg_catalog.text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', p_path, true);
    FOREACH v_sql IN ARRAY p_sql LOOP
        EXECUTE v_sql;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    SELECT c.name INTO v_cursor FROM pg_catalog.pg_cursors c WHERE c.is_holdable LIMIT 1;
    RETURN v_result;
END"""
OLD_ARGS = "pg_catalog.text[], pg_catalog.text[], pg_catalog.text"
OLD_PATH = """(SELECT coalesce(
    (SELECT pg_catalog.substr(cfg, 13)
       FROM pg_catalog.pg_db_role_setting s CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) AS cfg
      WHERE s.setrole IN (0, (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user))
        AND s.setdatabase IN (0, (SELECT d.oid FROM pg_catalog.pg_database d
                                   WHERE d.datname = pg_catalog.current_database()))
        AND (s.setrole <> 0 OR s.setdatabase <> 0)
        AND pg_catalog.split_part(cfg, '=', 1) = 'search_path'
      ORDER BY CASE WHEN s.setrole <> 0 AND s.setdatabase <> 0 THEN 0 WHEN s.setrole <> 0 THEN 1 ELSE 2 END
      LIMIT 1),
    %s::pg_catalog.text))"""


def run_bare(conn: psycopg.Connection, run_id: int, n: int) -> None:
    with conn.pipeline():
        conn.execute(SETTINGS, (str(n),))
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(ROLE)))
            conn.execute(JOB)
            conn.execute("RESET ROLE")
            conn.execute(FINISH, (run_id,))
        conn.execute(RESET)


def run_before(conn: psycopg.Connection, run_id: int, n: int) -> None:
    name = sql.Identifier(f"pgtt_job_{n:024x}")
    sig = sql.SQL("pg_temp.{}(" + OLD_ARGS + ")").format(name)
    with conn.pipeline():
        conn.execute(SETTINGS, (str(n),))
        with conn.transaction():
            before = conn.execute("SELECT key, item, changes FROM schedule._commit_hazards()")
            conn.execute(sql.SQL(
                "CREATE FUNCTION pg_temp.{}(p_sql pg_catalog.text[], p_params pg_catalog.text[], p_path pg_catalog.text) "
                "RETURNS pg_catalog.timestamptz LANGUAGE plpgsql SECURITY DEFINER "
                "SET search_path = pg_catalog, pg_temp AS {}").format(name, sql.Literal(OLD_BODY)))
            conn.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sig, sql.Identifier(ROLE)))
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(ROLE)))
            cur = conn.execute(sql.SQL("SELECT pg_temp.{}(%s::pg_catalog.text[], %s::pg_catalog.text[], "
                                       + OLD_PATH + ")").format(name), ([JOB], None, "public"))
            conn.execute("RESET ROLE")
            conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
            conn.execute(sql.SQL("DROP FUNCTION {}").format(sig))
            after = conn.execute("SELECT key, item, changes FROM schedule._commit_hazards()")
            cur.fetchone(), before.fetchall(), after.fetchall()  # the old engine waited here
            conn.execute(FINISH, (run_id,))
        conn.execute(RESET)
        conn.execute("DISCARD PLANS")


def run_now(conn: psycopg.Connection, run_id: int, n: int) -> None:
    conn.execute("SELECT schedule._run_cron(%s, %s, %s, %s::pg_catalog.text[], %s, NULL)",
                 (run_id, n, ROLE, [JOB], "public"))
    conn.execute(RESET)


VARIANTS = {"bare": run_bare, "before": run_before, "now": run_now}


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(conn: psycopg.Connection, fn, run_id: int, runs: int) -> tuple[float, float, float]:
    pid = conn.info.backend_pid
    for i in range(20):  # warm the session's caches
        fn(conn, run_id, i)
    w0, s0, c0 = time.perf_counter(), backend_cpu(pid), time.process_time()
    for i in range(runs):
        fn(conn, run_id, i)
    w1, s1, c1 = time.perf_counter(), backend_cpu(pid), time.process_time()
    return (w1 - w0) / runs * 1000, (s1 - s0) / runs * 1000, (c1 - c0) / runs * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bindir", default="/usr/lib/postgresql/15/bin")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pgtt-bench-sandbox-"))
    base.chmod(0o755)
    cluster = Cluster(base=base / "srv", bindir=Path(args.bindir), fast=True)
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            schema.install(conn, ["pgtt", "schedule"])
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(ROLE)))
            conn.execute("CREATE TABLE public.bench_t (x int, at timestamptz)")
            conn.execute(sql.SQL("GRANT INSERT ON public.bench_t TO {}").format(sql.Identifier(ROLE)))
            job = conn.execute("SELECT schedule.create_job('0 0 1 1 *', 'select 1')").fetchone()[0]
            run_id = conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at, state, started) "
                                  "VALUES (%s, 'primary', now(), 'working', now()) RETURNING run_id",
                                  (job,)).fetchone()[0]
        print(f"PostgreSQL {version}; {args.runs} runs per variant and round; load average "
              f"{os.getloadavg()[0]:.2f}")
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in VARIANTS}
        for rnd in range(args.rounds):
            for name, fn in VARIANTS.items():
                with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                    conn.prepare_threshold = None  # the session reset deallocates prepared statements
                    conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
                    got = measure(conn, fn, run_id, args.runs)
                results[name].append(got)
                print(f"round {rnd + 1} {name:>6}: wall {got[0]:.3f} ms, server CPU {got[1]:.3f} ms, "
                      f"client CPU {got[2]:.3f} ms per run", flush=True)
        med = {k: tuple(statistics.median(r[i] for r in v) for i in range(3)) for k, v in results.items()}
        print(f"\nmedians of {args.rounds} rounds, ms per run   wall   server CPU   client CPU   "
              "sandbox cost (wall / server / client)")
        for name in VARIANTS:
            w, s, c = med[name]
            extra = "" if name == "bare" else (f"   +{w - med['bare'][0]:.3f} / +{s - med['bare'][1]:.3f} / "
                                               f"+{c - med['bare'][2]:.3f}")
            print(f"{name:>8} {w:14.3f} {s:12.3f} {c:12.3f}{extra}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
