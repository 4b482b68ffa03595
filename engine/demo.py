"""``pgtt-tui demo``: sample chains, jobs and a three-node cascade, and the engine in this process.

- ``prepare(dsn)``: on the embedded server (or ``dsn``), create (or reuse) the ``pgtt_demo``
  database with every module, load the samples (chains and jobs that give a steady flow of
  runs and some failures), enable the job manager and build the cascade sample
  (``build_cascade``). Returns a :class:`DemoSetup`. Re-running reuses what exists.
- ``build_cascade(...)``: three databases on the same server, each a node of the cascaded
  queue ``orders``: ``main`` (the demo database itself, root) → ``mirror``
  (``pgtt_demo_mirror``, branch) → ``reports`` (``pgtt_demo_reports``, leaf). Built with the
  engine's own plans (``engine.cascade.ops.plan_create_*`` through ``PlanRunner``). The
  producer is the integration of the three modules: a timetable chain ``order-feed`` inserts
  a few rows into ``demo.orders`` every 2 seconds, and a PgQ capture trigger on that table
  turns them into events. The chain exists on ``main`` and ``mirror`` and only inserts on the
  node that is the root at the time, so the flow goes on after a switchover. The leaf's
  worker stores every event in ``public.order_events`` of ``pgtt_demo_reports``.
- ``EngineThread(settings, cascade=...)``: one engine supervisor per demo database (``main``:
  timetable, schedule, pgq ticker, cascade worker; ``mirror``: timetable, pgq, cascade;
  ``reports``: pgq, cascade with the sink table), all in one thread with its own asyncio
  loop, so the console's event loop and the engine's never wait on each other; ``stop()``
  shuts them down cleanly.
- ``load_history(conn, now)``: a fixed, made-up history (runs, logs, engines) at fixed
  times, for deterministic screenshots and snapshot tests; no engine needed.
  ``load_trends(conn, now)`` (called first) adds the hour of runs before it, for the charts.
  ``FIXED_NOW`` is the time to use with it (see its comment: it lies in the future on purpose).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from engine import schema
from engine.db import DEMO_DATABASE, ConnSettings, connect, redact, resolve_settings

log = logging.getLogger("pgtt.demo")

DEMO_DB = DEMO_DATABASE

#: The fixed "now" for load_history in screenshots.  It lies in the future on purpose: an
#: engine row counts as alive only while its registering backend runs and started no later
#: than the row says (pgtt.engine_alive, which guards against a reused pid).  A made-up
#: history needs a made-up ``started_at``; with a "now" in the past, every live backend
#: started after it and the sample engine would show as lost.  With this date the row is
#: registered against the caller's live connection and is alive by the real rule.
FIXED_NOW = datetime(2036, 11, 21, 12, 0, 0, tzinfo=timezone.utc)

#: fails about one run in three.  The divisor must not be a constant: PostgreSQL folds
#: ``1 / 0`` while planning, so ``CASE WHEN random() < 0.3 THEN 1 / 0 …`` failed every time
FLAKY_FETCH = "SELECT CASE WHEN random() < 0.3 THEN 1 / floor(random() * 0)::int ELSE 1 END"
_OLD_FLAKY_FETCH = "SELECT CASE WHEN random() < 0.3 THEN 1 / 0 ELSE 1 END"

# name, schedule, tasks [(name, kind, command, ignore_error, autonomous)], live
SAMPLE_CHAINS: list[tuple[str, str, list[tuple[str, str, str, bool, bool]], bool]] = [
    ("heartbeat", "@every 5 seconds",
     [("beat", "SQL", "INSERT INTO demo.beat (at) VALUES (now())", False, False)], True),
    ("flaky-import", "@every 10 seconds",
     [("fetch", "SQL", FLAKY_FETCH, False, False),
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
    # demo databases loaded by earlier versions carry the always-failing task
    conn.execute("UPDATE timetable.task SET command = %s WHERE command = %s", (FLAKY_FETCH, _OLD_FLAKY_FETCH))
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


# ---- the three-node cascade ----------------------------------------------------------------------

CASCADE_QUEUE = "orders"
SINK_TABLE = "public.order_events"
FEED_CHAIN = "order-feed"
#: (node name, database suffix, initial role, provider, schema modules, engine services)
CASCADE_LAYOUT: tuple[tuple[str, str, str, str | None, tuple[str, ...], tuple[str, ...]], ...] = (
    ("main", "", "root", None, tuple(schema.MODULES), ("timetable", "schedule", "pgq", "cascade")),
    ("mirror", "_mirror", "branch", "main", ("pgtt", "pgq", "pgq_node", "timetable"), ("timetable", "pgq", "cascade")),
    ("reports", "_reports", "leaf", "mirror", ("pgtt", "pgq", "pgq_node"), ("pgq", "cascade")),
)
#: ticks soon after events arrive (the default waits up to 3 s) and every 5 s when idle,
#: so the tree's tick ids and the leaf move while one watches
QUEUE_CONFIG = (("ticker_max_lag", "1 second"), ("ticker_idle_period", "5 seconds"))
#: cascade worker options for the demo: short pauses, watermarks published every few seconds
WORKER_OPTIONS = {"loop_delay": 0.5, "wm_publish_period": 5.0, "global_wm_period": 5.0}

# order ids of each node start apart (main 1, mirror 1000001), so that the leaf shows where
# an order came from once a switchover moved the producer
ORDERS_TABLE = """
CREATE SCHEMA IF NOT EXISTS demo;
CREATE TABLE IF NOT EXISTS demo.orders (
    order_id   bigint GENERATED ALWAYS AS IDENTITY (START WITH {start}) PRIMARY KEY,
    customer   text NOT NULL,
    amount     numeric(10, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
# one to three orders, only where this database is the root of the cascade at the time
FEED_INSERT = """INSERT INTO demo.orders (customer, amount)
SELECT (ARRAY['ada', 'bob', 'cyd', 'dee', 'eve'])[1 + floor(random() * 5)::int], round((random() * 200)::numeric, 2)
FROM generate_series(1, 1 + floor(random() * 3)::int)
WHERE pgq_node.is_root_node('orders')"""
FEED_TRIM = """DELETE FROM demo.orders WHERE created_at < now() - interval '1 hour'
AND pgq_node.is_root_node('orders')"""
FEED_TASKS = [("insert orders", "SQL", FEED_INSERT, False, False),
              ("trim old orders", "SQL", FEED_TRIM, False, False)]
FEED_SCHEDULE = "@every 2 seconds"


@dataclass
class CascadeNode:
    name: str
    dbname: str
    role: str  # the role it was created with (a switchover changes the live one)
    provider: str | None
    settings: ConnSettings
    location: str  # what the other nodes store in pgq_node.node_location
    services: tuple[str, ...]

    @property
    def client_name(self) -> str:
        return f"demo-{self.name}"


@dataclass
class CascadeDemo:
    queue: str
    nodes: list[CascadeNode]
    sink_table: str = SINK_TABLE
    built: list[str] = field(default_factory=list)  # what this run created (empty when reused)

    def node(self, name: str) -> CascadeNode:
        return next(n for n in self.nodes if n.name == name)

    def worker_options(self) -> list:
        """One WorkerOptions per node: the services its supervisor runs."""
        from engine.worker import WorkerOptions  # noqa: PLC0415

        out = []
        for n in self.nodes:
            opts = WorkerOptions(settings=n.settings.with_app(f"pgtt-tui engine {n.client_name}"),
                                 client_name=n.client_name, modules=list(n.services))
            if "cascade" in n.services:
                cascade = dict(WORKER_OPTIONS, queues=[self.queue])
                if n.role == "leaf":
                    cascade["sink_table"] = self.sink_table
                opts.module_options["cascade"] = cascade
            if "pgq" in n.services:
                opts.module_options["pgq"] = {"ticker_period": 1.0}
            out.append(opts)
        return out


@dataclass
class DemoSetup:
    settings: ConnSettings  # the console's database (the cascade's main node)
    cascade: CascadeDemo | None = None


def _node_info(conn: psycopg.Connection, queue: str) -> dict | None:
    from engine.cascade.status import node_info  # noqa: PLC0415

    return node_info(conn, queue)


def _run_plan(plan) -> None:
    from engine.cascade.plan import PlanError, PlanRunner  # noqa: PLC0415

    with PlanRunner(plan, application_name="pgtt-tui demo") as runner:
        outcome = runner.run()
    if not outcome.ok:
        raise PlanError(f"demo cascade: {plan.title}: "
                        + (outcome.report.message() if outcome.report else "the plan stopped"), outcome.report)


def cascade_nodes(base: ConnSettings, dbname: str = DEMO_DB,
                  location_of: Callable[[CascadeNode], str] | None = None) -> list[CascadeNode]:
    nodes = []
    for name, suffix, role, provider, _modules, services in CASCADE_LAYOUT:
        settings = demo_settings(base, dbname + suffix)
        node = CascadeNode(name, dbname + suffix, role, provider, settings,
                           pg_conninfo.make_conninfo(settings.dsn), services)
        if location_of is not None:
            node.location = location_of(node)
        nodes.append(node)
    return nodes


def build_cascade(base: ConnSettings, dbname: str = DEMO_DB, *, reset: bool = False,
                  location_of: Callable[[CascadeNode], str] | None = None) -> CascadeDemo:
    """Create (or reuse) the three node databases and the cascade ``orders`` over them.

    ``dbname`` is the main node's database (it must exist already: ``prepare`` makes it);
    the others are ``<dbname>_mirror`` and ``<dbname>_reports``. ``location_of`` gives the
    connection string the nodes store for each other (default: the node's DSN; the
    screenshot script uses service names so that frames do not show socket paths).
    Idempotent: a node that is already a member is left as it is (a switchover made in an
    earlier run stays); only a stored location that no longer matches is updated.
    """
    from engine.cascade import ops  # noqa: PLC0415
    from engine.pgq import api as pgq_api  # noqa: PLC0415
    from engine.pgq import capture  # noqa: PLC0415

    nodes = cascade_nodes(base, dbname, location_of)
    layout = {entry[0]: entry for entry in CASCADE_LAYOUT}
    demo = CascadeDemo(CASCADE_QUEUE, nodes)
    for node in nodes:
        if node.dbname != dbname:
            create_database(base, node.dbname, reset=reset)
        with connect(node.settings) as conn:
            schema.install(conn, list(layout[node.name][4]))
    locations = {n.name: n.location for n in nodes}
    for node in nodes:
        with connect(node.settings) as conn:
            info = _node_info(conn, demo.queue)
        if info is not None:
            continue
        if node.provider is None:
            _run_plan(ops.plan_create_root(demo.queue, node.name, node.location))
        else:
            _run_plan(ops.plan_create_branch(demo.queue, node.name, node.location, locations[node.provider],
                                             node_type=node.role))
        demo.built.append(node.name)
    _refresh_locations(demo)
    for node in nodes:
        with connect(node.settings) as conn:
            has_queue = conn.execute("SELECT 1 FROM pgq.queue WHERE queue_name = %s", (demo.queue,)).fetchone()
            if has_queue:
                for param, value in QUEUE_CONFIG:
                    pgq_api.set_queue_config(conn, demo.queue, param, value)
            if "timetable" in node.services:
                start = 1 + 1_000_000 * [n.name for n in nodes].index(node.name)
                conn.execute(ORDERS_TABLE.format(start=start))
                if not capture.list_captures(conn, demo.queue, "demo.orders"):
                    capture.add_capture(conn, "demo.orders", demo.queue, "json")
                _ensure_chain(conn, FEED_CHAIN, FEED_SCHEDULE, FEED_TASKS)
    return demo


def _refresh_locations(demo: CascadeDemo) -> None:
    """After a restart on another port (or socket folder) the stored locations are stale:
    re-register the current ones on every node (the root also sends them down the cascade)."""
    for node in demo.nodes:
        with connect(node.settings) as conn:
            stored = dict((name, loc) for name, loc, _dead in conn.execute(
                "SELECT node_name, node_location, dead FROM pgq_node.get_queue_locations(%s)",
                (demo.queue,)).fetchall())
            for other in demo.nodes:
                if other.name in stored and stored[other.name] != other.location:
                    log.info("demo cascade: location of %s changed; updating it on %s", other.name, node.name)
                    conn.execute("SELECT * FROM pgq_node.register_location(%s, %s, %s, false)",
                                 (demo.queue, other.name, other.location))


def _ensure_chain(conn: psycopg.Connection, name: str, run_at: str,
                  tasks: list[tuple[str, str, str, bool, bool]]) -> None:
    if conn.execute("SELECT 1 FROM timetable.chain WHERE chain_name = %s", (name,)).fetchone():
        return
    with conn.transaction():
        chain_id = conn.execute(INSERT_CHAIN, (name, run_at, True)).fetchone()[0]
        for order, (task_name, kind, command, ignore, autonomous) in enumerate(tasks, 1):
            conn.execute(INSERT_TASK, (chain_id, order * 10, task_name, kind, command, ignore, autonomous))


def drop_cascade_databases(base: ConnSettings, dbname: str = DEMO_DB) -> None:
    """Drop the mirror and reports databases (tests and the screenshot script clean up)."""
    with connect(base) as admin:
        for _name, suffix, *_ in CASCADE_LAYOUT:
            if suffix:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname + suffix)))


def prepare(dsn: str | None = None, reset: bool = False, extra_chains: int = 0,
            dbname: str = DEMO_DB, cascade: bool = True) -> DemoSetup:
    base = resolve_settings(dsn, application_name="pgtt-tui demo")
    create_database(base, dbname, reset=reset)
    settings = demo_settings(base, dbname)
    with connect(settings) as conn:
        schema.install(conn, list(schema.MODULES))
        load_samples(conn, extra_chains)
        conn.execute("SELECT schedule.enable()")
    demo = build_cascade(base, dbname, reset=reset) if cascade else None
    return DemoSetup(settings, demo)


def how_to_reach(settings: ConnSettings, *, embedded: bool) -> str:
    """One line for the operator: how the command line reaches the demo's data."""
    dsn = redact(settings.dsn)
    if embedded:
        return (f"the demo's data is in database {DEMO_DB} of the embedded server: pgtt-tui commands without "
                f"--dsn use it (e.g. pgtt-tui chain list), or --dsn \"{dsn}\"")
    return f"the demo's data is in database {DEMO_DB}: pgtt-tui --dsn \"{dsn}\" chain list"


def cascade_tree(setup: DemoSetup) -> list[str]:
    """The cascade's topology as it is now (a switchover in an earlier run shows)."""
    from engine.cascade.status import collect_status  # noqa: PLC0415

    if setup.cascade is None:
        return []
    return collect_status(setup.settings.dsn, setup.cascade.queue).tree_lines()


class EngineThread:
    """Engine supervisors in a daemon thread with their own event loop.

    Without ``cascade``: one supervisor on ``settings`` with ``modules`` (default: timetable
    and schedule). With ``cascade``: one supervisor per node (``CascadeDemo.worker_options``),
    as ``pgtt-tui worker --dsn NODE --modules …`` would run on each.
    """

    def __init__(self, settings: ConnSettings, client_name: str = "demo-engine", modules: list[str] | None = None,
                 *, cascade: CascadeDemo | None = None):
        self.settings = settings
        self.client_name = client_name
        self.modules = modules
        self.cascade = cascade
        self.supervisor = None  # the one on ``settings`` (the console's database)
        self.supervisors: list = []
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="pgtt-demo-engine", daemon=True)
        self._ready = threading.Event()
        # Waiting uses this event, not Thread.join: on Python 3.11 a Ctrl+C that interrupts
        # join() can leave a live thread marked as stopped, and the engine would then be cut
        # off at exit without its clean shutdown (engine rows never marked stopped).
        self._finished = threading.Event()

    def _options(self) -> list:
        from engine.worker import SERVICE_FACTORIES, WorkerOptions  # noqa: PLC0415

        if self.cascade is not None:
            return self.cascade.worker_options()
        modules = self.modules or [m for m in ("timetable", "schedule") if m in SERVICE_FACTORIES]
        return [WorkerOptions(settings=self.settings.with_app(f"pgtt-tui engine {self.client_name}"),
                              client_name=self.client_name, modules=modules)]

    def _main(self) -> None:
        from engine.worker import Supervisor, build_services  # noqa: PLC0415

        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            asyncio.set_event_loop(loop)
            self.supervisors = [Supervisor(o, build_services(o)) for o in self._options()]
            self.supervisor = self.supervisors[0]
            self._ready.set()

            async def run_all() -> list:
                return await asyncio.gather(*(s.run() for s in self.supervisors), return_exceptions=True)

            errors = [r for r in loop.run_until_complete(run_all()) if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        except BaseException as exc:  # noqa: BLE001 - reported through .error, the console stays up
            self.error = exc
            log.error("demo engine stopped: %s", exc)
        finally:
            self._ready.set()
            loop.close()
            self._finished.set()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _stop_all(self) -> None:
        for s in self.supervisors:
            s.stop()

    def stop(self, timeout: float = 15.0) -> None:
        if self.supervisors and self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop_all)
            except RuntimeError:
                pass
        self._finished.wait(timeout)

    def join_forever(self) -> None:
        """Until the engine stops by itself or Ctrl+C (then call ``stop``)."""
        try:
            while not self._finished.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass

    @property
    def alive(self) -> bool:
        return self._thread.ident is not None and not self._finished.is_set()

    def health(self) -> list[dict]:
        return [s.health() for s in self.supervisors]


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
        conn.execute("UPDATE pgtt.engine SET slots = 8 WHERE client_name = 'node-a'")
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


def load_trends(conn: psycopg.Connection, now: datetime) -> None:
    """An hour of made-up runs before ``load_history``'s (minutes 60..9 before ``now``), at
    fixed times, so the console's charts have a shape in screenshots and snapshots: a
    heartbeat every minute, flaky-import every three minutes (every fourth one failing,
    and a burst of failures between 40 and 30 minutes ago), slow-rollup getting slower and
    overlapping itself (a ``max_instances`` skip each time), late starts on hourly-report,
    and bad-cron-job failing every six minutes. Call it before ``load_history`` (run ids grow
    with time, as they do in a real history)."""
    ids = dict(conn.execute("SELECT chain_name, chain_id FROM timetable.chain").fetchall())
    jobs = dict(conn.execute("SELECT name, id FROM schedule.cron").fetchall())
    runs: list[tuple[str, float, float, float, str, str | None]] = []  # chain, minutes ago, lag s, duration s
    for m in range(60, 8, -1):
        runs.append(("heartbeat", m, 0.2 + (m % 3) * 0.1, 1.0 + (m % 4) * 0.5, "succeeded", None))
        if m % 3 == 0:
            failed = (m // 3) % 4 == 0 or 30 < m <= 40
            runs.append(("flaky-import", m - 0.5, 0.5, 3.0 + (m % 5), "failed" if failed else "succeeded",
                         "division by zero" if failed else None))
        if m % 5 == 0 and m >= 15:
            # slower and slower; from 35 minutes ago it overlaps the next firing: skipped
            runs.append(("slow-rollup", m - 0.25, 0.3, 60.0 + (60 - m) * 12, "succeeded", None))
            if m <= 35:
                runs.append(("slow-rollup", m - 2.75, 0.0, 0.0, "skipped", "max_instances (1) reached"))
        if m % 10 == 0:
            runs.append(("hourly-report", m - 0.1, 2.0 + (60 - m) / 5, 12.0 + (m % 20), "succeeded", None))
    with conn.transaction():
        for name, minutes, lag, duration, status, reason in runs:
            due = now - timedelta(minutes=minutes)
            start = due + timedelta(seconds=lag)
            conn.execute(
                "INSERT INTO timetable.chain_run (chain_id, due_at, trigger, client_name, session_id, claimed_at, "
                "started_at, finished_at, status, reason) VALUES (%s, %s, 'every', 'node-a', 1, %s, %s, %s, %s, %s)",
                (ids[name], due, start, start, start + timedelta(seconds=duration), status, reason))
        for m in range(60, 8, -2):
            name = "bad-cron-job" if m % 6 == 0 else "stats-refresh"
            state = "error" if name == "bad-cron-job" else "done"
            due = now - timedelta(minutes=m)
            conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at, state, started, finished, "
                         "message, engine) VALUES (%s, 'master', %s, %s, %s, %s, %s, 'node-a') "
                         "ON CONFLICT DO NOTHING",
                         (jobs[name], due, state, due + timedelta(seconds=1), due + timedelta(seconds=3),
                          "division by zero" if state == "error" else None))


# ---- queue and cascade samples (issue 18) ------------------------------------------------------

QUEUE_SAMPLE_SQL = """
INSERT INTO pgtt.queue_sample (queue_name, consumer_name, sampled_at, ev_per_sec, lag_s, pending, tick_id)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
CASCADE_SAMPLE_SQL = """
INSERT INTO pgtt.cascade_sample (queue_name, node_name, sampled_at, tick_id, lag_s)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


def load_queue_samples(conn: psycopg.Connection, now: datetime, queue: str = "orders",
                       consumers: tuple[str, ...] = ("billing", "mailer")) -> None:
    """Thirty minutes of made-up ticker samples (every 10 s up to ``now``), at fixed values: the
    queue's events per second rise and fall, the first consumer keeps up (lag about 2 s), the
    others fall behind over the last ten minutes (their lag grows)."""
    rows = []
    for i in range(180, -1, -1):
        at = now - timedelta(seconds=10 * i)
        eps = 4.0 + 3.0 * ((180 - i) % 36) / 36 + (6.0 if 60 <= i <= 90 else 0.0)
        rows.append((queue, "", at, round(eps, 2), 0.5 + (i % 3) * 0.3, None, 1000 - i))
        for n, consumer in enumerate(consumers):
            lag = 1.5 + (i % 4) * 0.3 if n == 0 else (2.0 + (60 - i) * 3.0 if i < 60 else 2.0 + (i % 5) * 0.2)
            rows.append((queue, consumer, at, None, round(lag, 1), int(lag * eps), 1000 - i - int(lag)))
    with conn.cursor() as cur:
        cur.executemany(QUEUE_SAMPLE_SQL, rows)


def load_cascade_samples(conn: psycopg.Connection, now: datetime, queue: str, node: str, shape: str) -> None:
    """Thirty minutes of made-up cascade-worker samples of ``node`` (in its own database):
    ``root`` (steady, under a second), ``catchup`` (paused 20 to 12 minutes ago: the lag grows
    to eight minutes, then the curve goes back to zero), ``steady`` (a few seconds)."""
    rows = []
    for i in range(180, -1, -1):
        at = now - timedelta(seconds=10 * i)
        if shape == "root":
            lag = 0.4 + (i % 3) * 0.2
        elif shape == "catchup":
            if 72 <= i <= 120:
                lag = 2.0 + (120 - i) * 10.0
            elif 36 <= i < 72:
                lag = max(1.5, 482.0 - (72 - i) * 14.0)
            else:
                lag = 1.5 + (i % 4) * 0.2
        else:
            lag = 2.5 + (i % 5) * 0.3
        rows.append((queue, node, at, 1000 - i - int(lag), round(lag, 1)))
    with conn.cursor() as cur:
        cur.executemany(CASCADE_SAMPLE_SQL, rows)
