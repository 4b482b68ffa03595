"""Shared pieces of the cascade tests (no tests here): node setup on separate servers,
worker processes (the real ``pgtt-tui worker`` CLI), a producer thread, waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from engine import schema
from engine.cascade.plan import PlanRunner

REPO = Path(__file__).resolve().parent.parent
QUEUE = "cq"
SINK = "cascade_sink"


def q(dsn: str, text: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(text, params)
        return cur.fetchall() if cur.description else []


def prepare_db(cluster, db: str = "casc", real_extensions: bool = False) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    dsn = cluster.dsn(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if real_extensions:
            conn.execute("CREATE EXTENSION pgq")
            conn.execute("CREATE EXTENSION pgq_node")
            schema.install(conn, ["pgtt"])
        else:
            schema.install(conn, ["pgtt", "pgq", "pgq_node"])
    return dsn


def run_plan(plan):
    events = []
    with PlanRunner(plan, on_event=events.append) as runner:
        outcome = runner.run()
    if not outcome.ok:
        raise AssertionError(outcome.report.message() if outcome.report else "plan stopped")
    return outcome, events, runner


def fast_ticks(dsn: str, queue: str = QUEUE) -> None:
    q(dsn, "UPDATE pgq.queue SET queue_ticker_max_lag = '20 ms', queue_ticker_idle_period = '200 ms', "
           "queue_ticker_max_count = 200 WHERE queue_name = %s", (queue,))


@dataclass
class WorkerProc:
    dsn: str
    log: Path
    sink: bool | str = False  # True: the default sink table; a str: that table
    proc: subprocess.Popen | None = None
    queues: tuple[str, ...] = (QUEUE,)
    consumer: str | None = None  # run as this plain cascaded consumer

    def start(self) -> None:
        args = [sys.executable, "-m", "pgtt_tui", "worker", "--dsn", self.dsn, "--modules", "cascade",
                "--cascade-loop-delay", "0.05", "--cascade-wm-period", "0.5",
                "--cascade-root-ticker", "--log-level", "info", "--clientname", self.log.stem]
        for queue in self.queues:
            args += ["--cascade-queue", queue]
        if self.sink:
            args += ["--cascade-sink-table", SINK if self.sink is True else self.sink]
        if self.consumer:
            args += ["--cascade-consumer", self.consumer]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env,
                                     cwd=str(REPO))

    def ensure_running(self) -> None:
        """Like systemd's Restart=always: the worker CLI exits if its server is down at start-up."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Producer:
    """Inserts numbered events at whatever node ``root_dsn`` names; remembers what was
    acknowledged (committed), what failed for sure, and what is uncertain (connection lost)."""

    root_dsn: str
    rate: float = 200.0
    queue: str = QUEUE
    prefix: str = ""  # payload = prefix + number
    acked: dict[int, int] = field(default_factory=dict)  # payload -> ev_id
    uncertain: set[int] = field(default_factory=set)
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _n: int = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        conn = None
        conn_dsn = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed or conn_dsn != self.root_dsn:
                    if conn is not None:
                        conn.close()
                    conn_dsn = self.root_dsn
                    conn = psycopg.connect(conn_dsn, autocommit=True, connect_timeout=2)
            except psycopg.Error:
                conn = None
                time.sleep(0.05)
                continue
            self._n += 1
            n = self._n
            try:
                ev_id = conn.execute("SELECT pgq.insert_event(%s, 'data', %s)",
                                     (self.queue, f"{self.prefix}{n}")).fetchone()[0]
                self.acked[n] = ev_id
            except psycopg.OperationalError:
                self.uncertain.add(n)
                conn = None
                time.sleep(0.05)
                continue
            except psycopg.Error:
                self.failed += 1  # refused (e.g. writing disabled during switchover): not committed
                time.sleep(0.02)
                continue
            time.sleep(1.0 / self.rate)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)


def wait_until(fn, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except psycopg.Error as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def completed(dsn: str, queue: str = QUEUE) -> int | None:
    return q(dsn, "SELECT worker_last_tick FROM pgq_node.get_node_info(%s)", (queue,))[0][0]


def root_top(dsn: str, queue: str = QUEUE) -> int:
    return q(dsn, "SELECT last_tick_id FROM pgq.get_queue_info(%s)", (queue,))[0][0]


def final_tick(root_dsn: str, queue: str = QUEUE) -> int:
    """Force a tick that covers everything committed so far at the root; returns its id."""
    q(root_dsn, "SELECT pgq.force_tick(%s)", (queue,))
    before = root_top(root_dsn, queue)
    return wait_until(lambda: (t := root_top(root_dsn, queue)) > before and t, what="a final root tick")


def sink_rows(dsn: str, table: str = SINK) -> list[tuple[int, str]]:
    if not q(dsn, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]:
        return []
    return q(dsn, sql.SQL("SELECT ev_id, ev_data FROM {} WHERE ev_type = 'data' ORDER BY ev_id").format(
        sql.Identifier(table)))


def paused(dsn: str, queue: str = QUEUE) -> bool:
    return q(dsn, "SELECT worker_paused FROM pgq_node.get_node_info(%s)", (queue,))[0][0]


def assert_exactly_once(rows: list[tuple[int, str]], acked: set[str], uncertain: set[str] = frozenset(),
                        lost: set[str] = frozenset()) -> set[str]:
    """Every acknowledged payload exactly once (except ``lost`` ones, which must be absent),
    no ev_id twice, nothing that nobody committed.  Returns the payloads seen."""
    ids = [r[0] for r in rows]
    payloads = [r[1] for r in rows]
    assert len(ids) == len(set(ids)), "an ev_id arrived twice"
    dup = {p for p in payloads if payloads.count(p) > 1} if len(payloads) != len(set(payloads)) else set()
    assert not dup, f"duplicate events: {sorted(dup)[:20]}"
    got = set(payloads)
    assert not (got & set(lost)), f"events both delivered and lost: {sorted(got & set(lost))[:20]}"
    missing = set(acked) - got - set(lost)
    assert not missing, f"lost acknowledged events: {sorted(missing)[:20]}"
    unexpected = got - set(acked) - set(uncertain)
    assert not unexpected, f"events nobody committed: {sorted(unexpected)[:20]}"
    return got
