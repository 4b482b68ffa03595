"""Streaming replication failover with engines running: the scenario behind
tests/test_faults_standby.py and bench/bench_failover.py.

A primary and a ``pg_basebackup -R`` standby on this machine (Unix sockets only), timetable
chains firing every second, three engine processes (``pgtt-tui worker``): one on the
primary's DSN, one on the standby's, one on a multi-host DSN naming both with
``target_session_attrs=read-write``. The primary is stopped (``fast``: a clean shutdown,
which waits until the standby has every WAL record; ``immediate``: a crash, where commits
not yet streamed are lost), the standby is promoted, and the histories are compared.

What counts as what (per chain and due instant, the unique key of ``timetable.chain_run``):
- an *execution* is a run whose chain transaction committed (its ``execution_log`` rows
  exist) on the old primary or on the new one; the same run seen in both histories (same
  ``run_id`` and ``claimed_at``) is one execution;
- a *duplicate* is a due instant executed more than once (on the old primary, the run was
  lost with the WAL that was not streamed, then run again after the promotion);
- *lost from the history* is an execution on the old primary that the new primary's
  history does not show as succeeded;
- a *lost firing* is a due instant between the start and the end of the window with no
  execution anywhere and no ``skipped`` row (``max_instances``) in the new history.

The old primary's full history is read at the end by starting it again privately after
every engine has stopped (it is never a member of the cluster again).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from engine.embedded import Cluster

REPO = Path(__file__).resolve().parents[1]
DB = "tt"
HISTORY_SQL = """
SELECT r.chain_id, r.due_at, r.run_id, r.claimed_at, r.status, r.client_name, r.trigger, r.started_at,
       EXISTS (SELECT 1 FROM timetable.execution_log l WHERE l.run_id = r.run_id) AS executed, r.reason,
       coalesce(r.last_due_at, r.due_at) AS last_due
FROM timetable.chain_run r WHERE r.due_at IS NOT NULL
"""


def basebackup_available(bindir: Path) -> bool:
    return (Path(bindir) / "pg_basebackup").exists()


def make_primary(base: Path, bindir: Path) -> Cluster:
    # durable commits on the primary, as in production: with synchronous_commit off (the
    # test clusters' default) a crash also loses commits the primary had acknowledged
    primary = Cluster(base=base / "primary", bindir=bindir, fast=True,
                      settings={"max_connections": "100", "synchronous_commit": "on", "wal_writer_delay": "10ms"})
    primary.init()
    primary.start()
    return primary


def make_standby(primary: Cluster, base: Path) -> Cluster:
    standby = Cluster(base=base / "standby", bindir=primary.bindir, fast=True,
                      settings={"max_connections": "100", "synchronous_commit": "on"})
    standby.base.mkdir(parents=True, exist_ok=True)
    standby._own(standby.datadir, 0o700)
    standby._own(standby.sockdir, 0o700)
    result = standby._run([str(primary.bindir / "pg_basebackup"), "-h", str(primary.sockdir), "-p",
                           str(primary.port), "-U", "postgres", "-D", str(standby.datadir), "-R", "-X", "stream", "-c", "fast",
                           "--no-sync"])
    if result.returncode != 0:
        raise RuntimeError(f"pg_basebackup failed: {result.stderr.strip()}")
    standby.start()
    return standby


def multi_host_dsn(a: Cluster, b: Cluster, db: str = DB) -> str:
    return (f"host={a.sockdir},{b.sockdir} port={a.port},{b.port} dbname={db} user=postgres "
            f"target_session_attrs=read-write")


def setup_chains(primary: Cluster, n_chains: int) -> None:
    from engine import schema  # noqa: PLC0415

    with psycopg.connect(primary.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{DB}"')
    with psycopg.connect(primary.dsn(DB), autocommit=True) as conn:
        schema.install(conn, schema.parse_modules("timetable"))
        for i in range(n_chains):
            conn.execute("SELECT timetable.add_job(%s, '* * * * * *', 'SELECT 1')", (f"tick{i:03d}",))


def wait_replayed(primary: Cluster, standby: Cluster, timeout: float = 30.0) -> None:
    with psycopg.connect(primary.dsn(), autocommit=True) as p:
        target = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    deadline = time.monotonic() + timeout
    with psycopg.connect(standby.dsn(), autocommit=True) as s:
        while time.monotonic() < deadline:
            if s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                return
            time.sleep(0.05)
    raise TimeoutError("the standby did not catch up")


@dataclass
class Engine:
    name: str
    dsn: str
    log: Path
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgtt_tui", "worker", "--dsn", self.dsn, "--clientname", self.name,
             "--modules", "timetable", "--log-level", "info", *self.extra],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))  # noqa: SIM115

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@dataclass
class Result:
    mode: str
    chains: int
    promote_s: float = 0.0            # pg_ctl promote, until it returned
    client_write_s: float = 0.0       # baseline: promote started -> a plain client's first write
    first_fire_s: float = 0.0         # promotion done -> first run started on the new primary
    fire_from_promote_s: float = 0.0  # promote started -> first run started (vs client_write_s)
    all_fire_s: float = 0.0           # promotion done -> every chain has run again
    stop_to_fire_s: float = 0.0       # primary stopped -> first run on the new primary
    due_instants: int = 0             # (chain, due second) in the window
    executions: int = 0
    duplicates: int = 0
    lost_from_history: int = 0        # executed on the old primary, not succeeded in the new history
    lost_firings: int = 0             # due, never executed, not skipped, not in the outage
    missed_by_policy: int = 0         # due during the outage, not run: missed_runs run_once (one catch-up)
    skipped: int = 0                  # max_instances during the catch-up after the outage
    claimed_not_run: int = 0          # claimed on the old primary, its engine lost before running it
    old_only_rows: int = 0            # chain_run rows (any status) the standby never received
    standby_engine_idled: bool = False
    logs: dict[str, str] = field(default_factory=dict)  # engine name -> its log
    engine_back_s: dict[str, float] = field(default_factory=dict)  # promotion -> its scheduler connected
    engine_exit_codes: dict[str, int | None] = field(default_factory=dict)
    outage_s: float = 0.0
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.mode:9s} promote {self.promote_s:5.2f}s  first firing {self.first_fire_s:5.2f}s after "
                f"promotion ({self.stop_to_fire_s:5.2f}s after the stop), all {self.chains} chains "
                f"{self.all_fire_s:5.2f}s; {self.due_instants} due instants, {self.executions} executions, "
                f"{self.duplicates} duplicates, {self.lost_from_history} lost from history, "
                f"{self.lost_firings} lost firings, {self.missed_by_policy} missed in the outage (policy run_once), {self.claimed_not_run} claimed but never run, {self.skipped} skipped (max_instances), "
                f"{self.old_only_rows} runs not replicated; engines back after promotion: "
                + ", ".join(f"{k} {'-' if v is None else f'{v:.2f}s'}" for k, v in self.engine_back_s.items()))


def _history(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(HISTORY_SQL).fetchall()


def _wait_engines(primary: Cluster, standby_log: Path, n_chains: int, timeout: float = 60.0) -> None:
    """Until every chain has run on the primary and the standby's engine said it idles."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(primary.dsn(DB), autocommit=True) as p:
        while time.monotonic() < deadline:
            fired = p.execute("SELECT count(DISTINCT chain_id) FROM timetable.chain_run "
                              "WHERE status = 'succeeded'").fetchone()[0]
            if fired >= n_chains and _is_standby_state(standby_log):
                return
            time.sleep(0.1)
    raise TimeoutError("the engines did not start firing within 60 s")


def _is_standby_state(engine_log: Path) -> bool:
    return "server is a standby" in engine_log.read_text(errors="replace")


def run_failover(base: Path, bindir: Path, *, mode: str = "immediate", n_chains: int = 20,
                 warmup_s: float = 4.0, outage_s: float = 1.0, after_s: float = 4.0) -> Result:
    """One promotion, start to end; every server and engine started here is stopped here."""
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    res = Result(mode=mode, chains=n_chains, outage_s=outage_s)
    t_setup = time.monotonic()
    primary = make_primary(base, bindir)
    res.details.append(f"primary up in {time.monotonic() - t_setup:.2f}s")
    standby: Cluster | None = None
    engines: list[Engine] = []
    try:
        setup_chains(primary, n_chains)
        res.details.append(f"chains set up at {time.monotonic() - t_setup:.2f}s")
        standby = make_standby(primary, base)
        wait_replayed(primary, standby)
        res.details.append(f"standby up at {time.monotonic() - t_setup:.2f}s")
        engines = [Engine("on-primary", primary.dsn(DB), base / "e-primary.log"),
                   Engine("on-standby", standby.dsn(DB), base / "e-standby.log"),
                   Engine("multi-host", multi_host_dsn(primary, standby), base / "e-multi.log")]
        for e in engines:
            e.start()
        _wait_engines(primary, engines[1].log, n_chains)
        res.details.append(f"engines firing at {time.monotonic() - t_setup:.2f}s")
        time.sleep(warmup_s)
        res.standby_engine_idled = _is_standby_state(engines[1].log)
        t_stop = datetime.now(timezone.utc)
        primary.stop(mode=mode)
        # an engine started while only the standby answers its multi-host DSN
        late = Engine("late-multi", multi_host_dsn(primary, standby), base / "e-late.log", ("--startup-wait", "0"))
        engines.append(late)
        late.start()
        time.sleep(outage_s)
        t0 = time.monotonic()
        promote = standby._run([str(bindir / "pg_ctl"), "-D", str(standby.datadir), "-w", "-s", "promote"])
        if promote.returncode != 0:
            raise RuntimeError(f"promote failed: {promote.stderr.strip()}")
        res.promote_s = time.monotonic() - t0
        t_promoted = datetime.now(timezone.utc)
        # baseline: a plain client on the multi-host read-write DSN, retrying every 10 ms
        while res.client_write_s == 0.0 and time.monotonic() - t0 < 30:
            try:
                with psycopg.connect(multi_host_dsn(primary, standby), autocommit=True, connect_timeout=2) as c:
                    c.execute("CREATE TEMP TABLE w (x int); INSERT INTO w VALUES (1)")
                    res.client_write_s = time.monotonic() - t0
            except psycopg.OperationalError:
                time.sleep(0.01)
        first = everyone = None
        names = [e.name for e in engines if e.name != "on-primary"]
        with psycopg.connect(standby.dsn(DB), autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (everyone is None or len(res.engine_back_s) < len(names)):
                row = conn.execute(
                    "SELECT min(started_at), count(DISTINCT chain_id) FROM timetable.chain_run "
                    "WHERE claimed_at >= %s AND status <> 'skipped'", (t_promoted,)).fetchone()
                if row[0] is not None and first is None:
                    first = row[0]
                if row[1] >= n_chains and everyone is None:
                    everyone = datetime.now(timezone.utc)
                for (app,) in conn.execute("SELECT application_name FROM pg_stat_activity "
                                           "WHERE application_name LIKE 'pgtt-tui timetable %'").fetchall():
                    name = app.split()[2]
                    if name in names and name not in res.engine_back_s:
                        res.engine_back_s[name] = (datetime.now(timezone.utc) - t_promoted).total_seconds()
                time.sleep(0.02)
        if first is None or everyone is None:
            raise AssertionError("the chains did not fire again within 60 s of the promotion")
        res.first_fire_s = (first - t_promoted).total_seconds()
        res.fire_from_promote_s = res.first_fire_s + res.promote_s
        res.stop_to_fire_s = (first - t_stop).total_seconds()
        res.all_fire_s = (everyone - t_promoted).total_seconds()
        time.sleep(after_s)
        t_end = datetime.now(timezone.utc)
        for e in engines:
            t1 = time.monotonic()
            res.engine_exit_codes[e.name] = e.stop()
            res.details.append(f"engine {e.name} stopped in {time.monotonic() - t1:.2f}s")
            res.logs[e.name] = e.log.read_text(errors="replace")
        new_rows = _history(standby.dsn(DB))
        t1 = time.monotonic()
        standby.stop()
        primary.start()  # privately: every engine has stopped
        old_rows = _history(primary.dsn(DB))
        primary.stop()
        res.details.append(f"old primary's history read in {time.monotonic() - t1:.2f}s")
        _count(res, old_rows, new_rows, t_stop - timedelta(seconds=warmup_s - 1), t_end - timedelta(seconds=2),
               (t_stop, first))
        return res
    finally:
        for e in engines:
            e.stop()
        for cluster in (standby, primary):
            if cluster is not None:
                cluster.stop(mode="immediate")


def _count(res: Result, old_rows: list[tuple], new_rows: list[tuple], w_start: datetime, w_end: datetime,
           outage: tuple[datetime, datetime]) -> None:
    ident = lambda r: (r[2], r[3])  # noqa: E731 - run_id, claimed_at
    new_ids = {ident(r) for r in new_rows}
    res.old_only_rows = sum(1 for r in old_rows if ident(r) not in new_ids)
    executions: dict[tuple, set] = {}
    new_succeeded = {ident(r) for r in new_rows if r[4] == "succeeded"}
    skipped = set()
    claimed_new = {(r[0], r[1]): f"{r[4]} ({r[5]}: {r[9]})" for r in new_rows if not r[8] and r[4] != "skipped"}
    for rows in (old_rows, new_rows):
        for r in rows:
            if r[4] == "skipped":  # one row may stand for several firings (due_at .. last_due_at)
                t = r[1]
                while t <= r[10]:
                    skipped.add((r[0], t))
                    t += timedelta(seconds=1)
            if not (w_start <= r[1] <= w_end):
                continue
            if r[8]:
                executions.setdefault((r[0], r[1]), set()).add(ident(r))
    for r in old_rows:
        if w_start <= r[1] <= w_end and r[8] and ident(r) not in new_succeeded:
            res.lost_from_history += 1
            res.details.append(f"lost from history: chain {r[0]} due {r[1]:%H:%M:%S} run {r[2]} ({r[5]})")
    chains = {r[0] for r in old_rows} | {r[0] for r in new_rows}
    first_second = w_start.replace(microsecond=0) + timedelta(seconds=1)
    for chain in chains:
        t = first_second
        while t <= w_end:
            res.due_instants += 1
            runs = executions.get((chain, t), set())
            res.executions += len(runs)
            if len(runs) > 1:
                res.duplicates += 1
                res.details.append(f"duplicate: chain {chain} due {t:%H:%M:%S} ran {len(runs)}x")
            elif not runs and (chain, t) in skipped:
                res.skipped += 1
            elif not runs and (chain, t) in claimed_new:
                res.claimed_not_run += 1
                res.details.append(f"claimed, never run: chain {chain} due {t:%H:%M:%S}: {claimed_new[(chain, t)]}")
            elif not runs and outage[0] - timedelta(seconds=1) <= t <= outage[1]:
                res.missed_by_policy += 1
            elif not runs:
                res.lost_firings += 1
                res.details.append(f"lost firing: chain {chain} due {t:%H:%M:%S}")
            t += timedelta(seconds=1)
