"""``pgtt-tui demo``: a database with sample chains and jobs, and the engine in this process.

- ``prepare(dsn)``: on the embedded server (or ``dsn``), (re)create the ``pgtt_demo``
  database, install every module, load the samples (chains and jobs that give a steady
  flow of runs and some failures) and enable the job manager. Returns its ConnSettings.
- ``EngineThread(settings)``: the engine supervisor with every available service, in a
  thread with its own asyncio loop, so the console's event loop and the engine's never
  wait on each other; ``stop()`` shuts it down cleanly.
- ``load_history(conn, now)``: a fixed, made-up history (runs, logs, engines) at fixed
  times, for deterministic screenshots and snapshot tests; no engine needed.
- ``CASCADE_HOOK``: where the three-node cascade sample will plug in (not built yet).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from engine import schema
from engine.db import ConnSettings, connect, resolve_settings

log = logging.getLogger("pgtt.demo")

DEMO_DB = "pgtt_demo"
#: set by the cascade module: a function (settings) -> None that builds the three-node sample
CASCADE_HOOK: Callable[[ConnSettings], None] | None = None

# name, schedule, tasks [(name, kind, command, ignore_error, autonomous)], live
SAMPLE_CHAINS: list[tuple[str, str, list[tuple[str, str, str, bool, bool]], bool]] = [
    ("heartbeat", "@every 5 seconds",
     [("beat", "SQL", "INSERT INTO demo.beat (at) VALUES (now())", False, False)], True),
    ("flaky-import", "@every 10 seconds",
     [("fetch", "SQL", "SELECT CASE WHEN random() < 0.3 THEN 1 / 0 ELSE 1 END", False, False),
      ("load", "SQL", "INSERT INTO demo.imported (n) SELECT g FROM generate_series(1, 10) g", False, False)], True),
    ("hourly-report", "* * * * *",
     [("count", "SQL", "SELECT count(*) FROM demo.beat", False, False),
      ("summarise", "SQL", "INSERT INTO demo.report (beats) SELECT count(*) FROM demo.beat", False, False),
      ("log it", "BUILTIN", "Log", True, False)], True),
    ("broken-etl", "@every 30 seconds",
     [("extract", "SQL", "SELECT * FROM demo.no_such_table", False, False)], True),
    ("slow-rollup", "@every 20 seconds",
     [("sleep", "SQL", "SELECT pg_sleep(6)", False, False),
      ("rollup", "SQL", "DELETE FROM demo.beat WHERE at < now() - interval '1 hour'", False, False)], True),
    ("nightly-vacuum", "0 3 * * *",
     [("vacuum", "SQL", "VACUUM (ANALYZE) demo.beat", False, True)], True),
    ("month-end-close", "0 2 L * *",
     [("close", "SQL", "SELECT 'closing the month'", False, False)], False),
]

# name, cron, commands
SAMPLE_JOBS: list[tuple[str, str, list[str]]] = [
    ("cleanup-reports", "* * * * *", ["DELETE FROM demo.report WHERE at < now() - interval '10 minutes'"]),
    ("stats-refresh", "*/2 * * * *", ["ANALYZE demo.imported"]),
    ("bad-cron-job", "*/3 * * * *", ["SELECT 1 / 0"]),
]

DEMO_TABLES = """
CREATE SCHEMA IF NOT EXISTS demo;
CREATE TABLE IF NOT EXISTS demo.beat (at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS demo.imported (n int, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS demo.report (beats bigint, at timestamptz NOT NULL DEFAULT now());
"""

INSERT_CHAIN = """
INSERT INTO timetable.chain (chain_name, run_at, live, max_instances) VALUES (%s, %s, %s, 1) RETURNING chain_id
"""
INSERT_TASK = """
INSERT INTO timetable.task (chain_id, task_order, task_name, kind, command, ignore_error, autonomous)
VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING task_id
"""
INSERT_PARAM = "INSERT INTO timetable.parameter (task_id, order_id, value) VALUES (%s, 1, %s)"
GENERATE_CHAINS = """
INSERT INTO timetable.chain (chain_name, run_at, live)
SELECT format('generated-%%s', lpad(g::text, 7, '0')), '0 4 * * *', false
FROM generate_series(1, %s) g
ON CONFLICT (chain_name) DO NOTHING
"""


def demo_settings(base: ConnSettings, dbname: str = DEMO_DB) -> ConnSettings:
    params = pg_conninfo.conninfo_to_dict(base.dsn) if base.dsn else {}
    params["dbname"] = dbname
    params.pop("application_name", None)
    return ConnSettings(dsn=pg_conninfo.make_conninfo(**params), application_name=base.application_name,
                        read_only=base.read_only)


def create_database(base: ConnSettings, dbname: str = DEMO_DB, reset: bool = False) -> bool:
    """Create the demo database if missing (drop it first with reset); True if created."""
    with connect(base) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None
        if exists and reset:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
            exists = False
        if not exists:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            return True
    return False


def load_samples(conn: psycopg.Connection, extra_chains: int = 0) -> None:
    """Sample chains and jobs (once: skipped when the first sample chain exists)."""
    conn.execute(DEMO_TABLES)
    present = conn.execute("SELECT 1 FROM timetable.chain WHERE chain_name = %s",
                           (SAMPLE_CHAINS[0][0],)).fetchone()
    if present is None:
        with conn.transaction():
            for name, run_at, tasks, live in SAMPLE_CHAINS:
                chain_id = conn.execute(INSERT_CHAIN, (name, run_at, live)).fetchone()[0]
                for order, (task_name, kind, command, ignore, autonomous) in enumerate(tasks, 1):
                    task_id = conn.execute(INSERT_TASK, (chain_id, order * 10, task_name, kind, command, ignore,
                                                         autonomous)).fetchone()[0]
                    if kind == "BUILTIN" and command == "Log":
                        conn.execute(INSERT_PARAM, (task_id, json.dumps({"report": "done"})))
            for name, cron, commands in SAMPLE_JOBS:
                conn.execute("SELECT schedule.create_job(%s::jsonb)",
                             (json.dumps({"name": name, "cron": cron, "commands": commands}),))
            first = conn.execute("SELECT schedule.submit_job(%s, name => %s)",
                                 ("SELECT count(*) FROM demo.beat", "count-beats")).fetchone()[0]
            conn.execute("SELECT schedule.submit_job(%s, name => %s, depends_on => %s)",
                         ("INSERT INTO demo.report (beats) VALUES (0)", "after-count", [first]))
            conn.execute("SELECT schedule.submit_job(%s, name => %s)", ("SELECT 1 / 0", "doomed-once"))
            conn.execute("SELECT schedule.submit_job(%s, name => %s, run_after => now() + interval '10 minutes')",
                         ("SELECT 'later'", "in-ten-minutes"))
    if extra_chains:
        conn.execute(GENERATE_CHAINS, (extra_chains,))


def prepare(dsn: str | None = None, reset: bool = False, extra_chains: int = 0,
            dbname: str = DEMO_DB) -> ConnSettings:
    base = resolve_settings(dsn, application_name="pgtt-tui demo")
    create_database(base, dbname, reset=reset)
    settings = demo_settings(base, dbname)
    with connect(settings) as conn:
        schema.install(conn, list(schema.MODULES))
        load_samples(conn, extra_chains)
        conn.execute("SELECT schedule.enable()")
    if CASCADE_HOOK is not None:
        CASCADE_HOOK(settings)
    return settings


class EngineThread:
    """The engine supervisor in a daemon thread with its own event loop."""

    def __init__(self, settings: ConnSettings, client_name: str = "demo-engine", modules: list[str] | None = None):
        self.settings = settings
        self.client_name = client_name
        self.modules = modules
        self.supervisor = None
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="pgtt-demo-engine", daemon=True)
        self._ready = threading.Event()

    def _main(self) -> None:
        from engine.worker import SERVICE_FACTORIES, Supervisor, WorkerOptions, build_services  # noqa: PLC0415

        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            modules = self.modules or [m for m in ("timetable", "schedule") if m in SERVICE_FACTORIES]
            options = WorkerOptions(settings=self.settings.with_app(f"pgtt-tui engine {self.client_name}"),
                                    client_name=self.client_name, modules=modules)
            self.supervisor = Supervisor(options, build_services(options))
            self._ready.set()
            loop.run_until_complete(self.supervisor.run())
        except BaseException as exc:  # noqa: BLE001 - reported through .error, the console stays up
            self.error = exc
            log.error("demo engine stopped: %s", exc)
        finally:
            self._ready.set()
            loop.close()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.supervisor is not None and self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self.supervisor.stop)
            except RuntimeError:
                pass
        self._thread.join(timeout)

    def join_forever(self) -> None:
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


# ---- a fixed history for screenshots and snapshot tests ----------------------------------------

def load_history(conn: psycopg.Connection, now: datetime) -> None:
    """Made-up runs, logs and an engine at fixed times relative to ``now`` (deterministic)."""
    ids = dict(conn.execute("SELECT chain_name, chain_id FROM timetable.chain").fetchall())
    tasks = {}
    for chain_id, task_id, name in conn.execute(
            "SELECT chain_id, task_id, task_name FROM timetable.task ORDER BY chain_id, task_order").fetchall():
        tasks.setdefault(chain_id, []).append((task_id, name))
    t = lambda minutes: now - timedelta(minutes=minutes)  # noqa: E731
    with conn.transaction():
        conn.execute("INSERT INTO pgtt.engine (client_name, backend_pid, host, os_pid, modules, version, "
                     "started_at, heartbeat_at) VALUES ('node-a', pg_backend_pid(), 'db-host-1', 4242, "
                     "'{timetable,schedule}', '0.1.0', %s, %s)", (t(95), t(0.05)))
        plan = [("heartbeat", 1, "succeeded", None), ("flaky-import", 2, "failed", "division by zero"),
                ("hourly-report", 3, "succeeded", None), ("broken-etl", 4, "failed",
                                                          'relation "demo.no_such_table" does not exist'),
                ("flaky-import", 6, "succeeded", None), ("heartbeat", 7, "succeeded", None)]
        txid = 1000
        for name, minutes, status, reason in plan:
            chain_id = ids[name]
            txid += 1
            start = t(minutes)
            conn.execute(
                "INSERT INTO timetable.chain_run (chain_id, due_at, trigger, client_name, session_id, claimed_at, "
                "started_at, finished_at, status, reason, txid) VALUES (%s, %s, 'every', 'node-a', 1, %s, %s, %s, "
                "%s, %s, %s)", (chain_id, start, start, start, start + timedelta(seconds=2), status, reason, txid))
            for i, (task_id, task_name) in enumerate(tasks.get(chain_id, [])):
                failed = status == "failed" and i == 0
                conn.execute(
                    "INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, pid, "
                    "returncode, ignore_error, kind, command, output, client_name) VALUES (%s, %s, %s, %s, %s, 4242,"
                    " %s, false, 'SQL', %s, %s, 'node-a')",
                    (chain_id, task_id, txid, start, start + timedelta(seconds=1), 1 if failed else 0,
                     task_name, (reason if failed else "SELECT 1")))
                conn.execute("INSERT INTO timetable.log (ts, pid, log_level, client_name, message, message_data) "
                             "VALUES (%s, 4242, %s, 'node-a', %s, %s)",
                             (start + timedelta(seconds=1), "ERROR" if failed else "INFO",
                              f"task {task_name} {'failed: ' + reason if failed else 'done'}",
                              json.dumps({"chain": name})))
                if failed:
                    break
        # a chain running right now
        conn.execute("INSERT INTO timetable.chain_run (chain_id, trigger, client_name, session_id, claimed_at, "
                     "started_at, status) VALUES (%s, 'every', 'node-a', 1, %s, %s, 'running')",
                     (ids["slow-rollup"], t(0.5), t(0.5)))
        conn.execute(
            "INSERT INTO timetable.chain_state (chain_id, client_name, next_due_at, dirty, last_started_at, "
            "last_finished_at, last_status) SELECT c.chain_id, c.client_name, "
            "CASE WHEN c.live THEN %s::timestamptz + (c.chain_id * interval '37 seconds') END, false, "
            "lr.started_at, lr.finished_at, lr.status FROM timetable.chain c "
            "LEFT JOIN LATERAL (SELECT started_at, finished_at, status FROM timetable.chain_run r "
            "WHERE r.chain_id = c.chain_id AND r.status IN ('succeeded', 'failed') ORDER BY started_at DESC LIMIT 1)"
            " lr ON true ON CONFLICT (chain_id) DO UPDATE SET next_due_at = EXCLUDED.next_due_at, dirty = false, "
            "last_started_at = EXCLUDED.last_started_at, last_finished_at = EXCLUDED.last_finished_at, "
            "last_status = EXCLUDED.last_status", (now,))
        jobs = dict(conn.execute("SELECT name, id FROM schedule.cron").fetchall())
        for name, minutes, state, message in [("cleanup-reports", 2, "done", None),
                                              ("bad-cron-job", 3, "error", "division by zero"),
                                              ("stats-refresh", 4, "done", None)]:
            conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at, state, started, finished, "
                         "message, engine) VALUES (%s, 'master', %s, %s, %s, %s, %s, 'node-a')",
                         (jobs[name], t(minutes), state, t(minutes), t(minutes) + timedelta(seconds=1), message))
        conn.execute("UPDATE schedule.cron SET next_run = %s::timestamptz + (id * interval '50 seconds')", (now,))
        conn.execute("UPDATE schedule.at_job SET status = 'done', is_success = (name <> 'doomed-once'), "
                     "start_time = %s, done_time = %s, submit_time = %s, "
                     "error = CASE WHEN name = 'doomed-once' THEN 'division by zero' END, engine = 'node-a' "
                     "WHERE name IN ('count-beats', 'doomed-once', 'after-count')", (t(5), t(5), t(10)))
        conn.execute("UPDATE schedule.at_job SET run_after = submit_time WHERE run_after IS NOT NULL")
        conn.execute("UPDATE schedule.at_job SET submit_time = %s, run_after = %s WHERE name = 'in-ten-minutes'",
                     (t(10), now + timedelta(minutes=10)))
