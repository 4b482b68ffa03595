"""The schedule job manager: plans and runs pgpro_scheduler-style jobs.

One ``ScheduleService`` per engine process (``pgtt-tui worker --modules schedule``). It
serves the database of the DSN, or every database named in ``schedule.database``
(comma-separated), with one ``DatabaseManager`` each.

Per database, every pass (``DatabaseManager.step``):

0. claim the scheduled runs that are due now (step 5), before the rest of the pass;
1. read the switches (``schedule.enable()`` / ``start()``) and the limits
   ``schedule.max_workers`` / ``schedule.max_parallel_workers`` (a per-database
   ``ALTER DATABASE … SET`` wins over ``ALTER SYSTEM`` / postgresql.conf; re-read every pass,
   so a change needs no restart);
2. recover: a run whose executor backend is gone (engine crash, pg_terminate_backend) is
   marked failed "interrupted"; a next_time_statement chain it belonged to is recomputed
   (with ``schedule.transaction_state = 'failure'``) so it never stalls;
3. expire: planned runs past ``last_start_available`` and one-time jobs past
   ``max_wait_interval`` fail with that reason; a one-time job whose dependency failed or
   was cancelled fails naming the dependency (pgpro_scheduler lets it wait for ever);
4. plan: jobs whose next firing is due, or will be within ``PLAN_AHEAD`` (2 s), get a row in
   ``schedule.cron_run`` (a planned run is not claimed before it is due). The firing
   times come from engine/schedules.py (the one evaluator), in the job's time zone.
   ``(cron, scheduled_at)`` is unique and the job row is locked while planning, so several
   engines never plan one firing twice. After downtime a job runs once for the missed
   firings (``missed = 'once'``, the default) or skips them (``'skip'``);
5. claim and run: claims take a transaction-scoped advisory lock per database and queue
   kind, count the runs in progress cluster-wide and take more only below the limit,
   so the limits hold across any number of engines. Each run records the backend pid of the
   executor connection that runs it, which is what step 2 checks. Scheduled runs are claimed
   by one claimer connection per engine, a batch at a time for all idle executors (never more
   runs of one job than its ``max_instances`` allows), and handed to them; an executor that
   finishes wakes the claimer. One-time jobs' executors claim for themselves.

Scheduled and one-time jobs have separate queues and limits (``max_workers`` and
``max_parallel_workers``).

How a job runs (the sandbox; the same for commands, onrollback and next_time_statement).
The engine's login role is privileged (schema owner, often a superuser), and a job's session
*is* that login, so a plain ``SET ROLE robot`` could be undone by the job (``RESET ROLE``,
``SET ROLE postgres``, ``SET SESSION AUTHORIZATION``, ``set_config('role', …)``). Instead,
in the job's transaction the engine

1. reads ``schedule._commit_hazards()`` (see 3), creates a per-run function
   ``pg_temp.pgtt_job_<random>`` (SQL, SECURITY DEFINER, ``SET search_path = pg_catalog,
   pg_temp``) that runs the job's text through ``schedule._job_exec`` (PL/pgSQL, invoker's
   rights, so as the function's owner: ``EXECUTE`` of each statement), and hands it to the
   run_as role with ``ALTER FUNCTION … OWNER TO``. SQL because a backend keeps every PL/pgSQL
   function it compiled until it exits; a job with ``params`` gets a PL/pgSQL one (its
   ``USING`` list depends on their number), and executor connections are replaced after
   ``EXECUTOR_RUNS`` runs;
2. ``SET LOCAL ROLE`` run_as (so ``schedule.*`` functions called by the job see run_as as
   the caller) and calls the function with the job's SQL as an argument. Inside a
   security-definer function PostgreSQL refuses ``SET ROLE`` / ``SET SESSION AUTHORIZATION``
   (also via set_config, RESET, a function's SET clause) with "cannot set parameter … within
   security-definer function", for every nested call. The search_path inside is the
   run_as role's normal one (ALTER ROLE/DATABASE … SET search_path, else the server's);
3. back in the engine: ``RESET ROLE``, re-pin the engine's own ``search_path`` (a job may
   have changed it at session level) and drop the function. Code that would still run at
   COMMIT, after the function returned, is refused: the function will not return while the
   job left a ``WITH HOLD`` cursor open (its query runs at COMMIT as the current role), and
   the engine compares ``schedule._commit_hazards()`` before and after the job (same
   transaction: the per-transaction row counters are exact) and rolls the job back if it
   changed a table with a deferrable user trigger (PostgreSQL 13-17 fire it at COMMIT as the
   engine's role; 18 as the job's, but it may open a WITH HOLD cursor) or a deferrable
   unique/exclusion constraint whose index has expressions or a predicate (evaluated at
   COMMIT). Deferrable foreign keys are fine (PostgreSQL checks them as the table owner).
   With ``track_counts = off`` the engine cannot see what changed and refuses every job while
   such an object exists in the database.
4. the engine records the outcome in the same transaction and commits.

Every next_time_statement evaluation is limited by ``statement_timeout = 60s``.

The function name is random (a job cannot pre-create it) and is called with explicitly typed
arguments. The engine's own sessions pin ``search_path = pg_catalog, pg_temp`` (a job's temp
tables/types cannot shadow a catalog name; pg_temp is never searched for functions) and
qualify every schedule object. After every run ``schedule._reset_session()`` (what DISCARD
ALL does but DISCARD PLANS, as one call) drops what a job left behind (temp objects, settings,
advisory locks, prepared statements, LISTEN); cached plans stay, as they carry no privilege.

Steps 1-3 are one PL/pgSQL function, ``schedule._sandbox_run`` (sql/schedule/0006), so their
plans stay cached in the session; a scheduled run of a one-transaction job is one statement,
``schedule._run_cron`` (its settings, the sandbox, the outcome; its own transaction), then
the reset: two statements, two round trips. Planning the engine's statements anew for every
run once cost more server time than running them (measured: bench/README.md).

Limits: statements that cannot run inside a function fail with PostgreSQL's own error,
logged as the run's error (VACUUM, CREATE DATABASE, … "cannot run inside a transaction
block"; COMMIT/ROLLBACK/SAVEPOINT "EXECUTE of transaction commands is not implemented";
``SELECT … INTO new_table`` "EXECUTE of SELECT ... INTO is not implemented" — use CREATE
TABLE … AS). ``params`` are bound as ``text`` ($1::int casts work). A next_time_statement
value is assigned to a timestamptz (a text that reads as a time is accepted).

Requirements for the engine's login role: a superuser; or a non-superuser that owns the
schedule schema's objects, is a member of every run_as role (``GRANT robot TO pgtt_engine``;
PostgreSQL 16+: with the SET option, the default) and has, like every run_as role, the
TEMPORARY privilege on the database (PUBLIC has it by default): ``CREATE FUNCTION pg_temp…``
and ``ALTER FUNCTION … OWNER TO`` need these. Otherwise the run fails with PostgreSQL's
"must be able to SET ROLE …" / "permission denied for schema pg_temp_N". A run_as role also
uses the schedule schema (USAGE) and ``schedule._job_exec`` (EXECUTE); both are granted to
PUBLIC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.clock import Clock, SystemClock
from engine.db import ConnSettings, aconnect, translate_db_error
from engine.schedules import ScheduleError, Schedule, firings_between, pgpro_schedule

log = logging.getLogger("pgtt.schedule")

NOTIFY_CHANNEL = "pgtt_schedule"
# pg_advisory_xact_lock keys for the two claim queues (per database)
CRON_CLAIM_KEY = 0x70677474_00000911
AT_CLAIM_KEY = 0x70677474_00000912
DEFAULT_MAX_WORKERS = 2
DEFAULT_MAX_PARALLEL_WORKERS = 2
MISSED_GRACE = timedelta(seconds=60)
POLL_SECONDS = 1.0
# a run is planned (its cron_run row inserted) this long before it is due, so that at the due
# instant only the claims remain to be done
PLAN_AHEAD = timedelta(seconds=2)
# an executor connection is replaced after this many runs: a backend keeps a little of every
# per-run sandbox function until it exits (PostgreSQL 18 caches SQL functions; a job with
# params compiles a PL/pgSQL one, ~30-100 kB with its plans), and every later cache
# invalidation walks what it kept
EXECUTOR_RUNS = 500

# ---------------------------------------------------------------------------------------
# SQL
# ---------------------------------------------------------------------------------------

READ_STATE = """
SELECT m.enabled, m.started, m.start_epoch,
       (SELECT count(*) FROM pg_stat_activity a
         WHERE a.datname = current_database() AND a.application_name LIKE 'pgtt-schedule manager%%'
           AND a.pid <> pg_backend_pid()) AS other_managers
FROM schedule.manager_state m
"""

# settings: ALTER DATABASE (role 0) wins over the session's view of ALTER SYSTEM / conf
READ_SETTING = """
SELECT coalesce(
    (SELECT split_part(cfg, '=', 2) FROM pg_db_role_setting s, unnest(s.setconfig) cfg
      WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND s.setrole = 0 AND split_part(cfg, '=', 1) = %(name)s LIMIT 1),
    current_setting(%(name)s, true))
"""

BUMP_EPOCH = "UPDATE schedule.manager_state SET start_epoch = start_epoch + 1"

ORPHAN_CRON = """
UPDATE schedule.cron_run r
   SET state = 'error', finished = %(now)s,
       message = 'interrupted: the engine running it stopped (backend ' || r.pid || ' is gone)'
 WHERE r.state = 'working' AND r.node = %(node)s
   AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.pid AND a.backend_start = r.backend_start)
RETURNING r.cron
"""

CHAIN_RECOMPUTE = """
UPDATE schedule.cron SET chain_state = 'recompute'
 WHERE id = ANY(%(ids)s) AND next_time_statement IS NOT NULL AND chain_state = 'wait'
"""

ORPHAN_AT = """
UPDATE schedule.at_job j
   SET status = 'done', is_success = false, done_time = %(now)s,
       error = 'interrupted: the engine running it stopped (backend ' || j.pid || ' is gone)'
 WHERE j.status = 'processing' AND j.node = %(node)s
   AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = j.pid AND a.backend_start = j.backend_start)
"""

EXPIRE_CRON = """
UPDATE schedule.cron_run
   SET state = 'error', finished = %(now)s,
       message = 'not started: no free worker before its last_start_available deadline ' || deadline
 WHERE state = 'planned' AND node = %(node)s AND deadline < %(now)s
"""

EXPIRE_AT = """
UPDATE schedule.at_job
   SET status = 'done', is_success = false, done_time = %(now)s,
       error = 'job expired: not started within max_wait_interval ' || max_wait_interval
 WHERE status = 'submitted' AND node = %(node)s AND NOT canceled AND max_wait_interval IS NOT NULL
   AND run_after IS NOT NULL AND run_after + max_wait_interval < %(now)s
"""

FAIL_DEPENDENTS = """
UPDATE schedule.at_job j
   SET status = 'done', is_success = false, done_time = %(now)s,
       error = 'dependency failed: ' || (
           SELECT string_agg('job ' || d.id || CASE WHEN d.canceled THEN ' was canceled'
                                                   ELSE ' failed: ' || coalesce(d.error, 'unknown error') END, '; '
                             ORDER BY d.id)
             FROM schedule.at_job d
            WHERE d.id = ANY(j.depends_on) AND d.status = 'done' AND (d.is_success IS NOT TRUE OR d.canceled))
 WHERE j.status = 'submitted' AND j.node = %(node)s AND j.depends_on IS NOT NULL
   AND EXISTS (SELECT 1 FROM schedule.at_job d
                WHERE d.id = ANY(j.depends_on) AND d.status = 'done' AND (d.is_success IS NOT TRUE OR d.canceled))
"""

# dependency-based jobs: once every dependency is done, they get run_after (their wait clock starts)
READY_DEPENDENTS = """
UPDATE schedule.at_job j SET run_after = %(now)s
 WHERE j.status = 'submitted' AND j.node = %(node)s AND j.run_after IS NULL AND j.depends_on IS NOT NULL
   AND NOT j.canceled
   AND NOT EXISTS (SELECT 1 FROM unnest(j.depends_on) dep
                    WHERE NOT EXISTS (SELECT 1 FROM schedule.at_job d
                                       WHERE d.id = dep AND d.status = 'done' AND d.is_success AND NOT d.canceled))
"""

DUE_JOBS = """
SELECT id, rule, tz, start_date, end_date, postpone, next_run, def_version, planned_version, chain_state,
       next_time_statement, executor, missed, onstart_epoch, node
  FROM schedule.cron
 WHERE active AND NOT broken AND node = %(node)s
   AND (   (next_run IS NOT NULL AND next_run <= %(horizon)s)
        OR planned_version <> def_version
        OR chain_state = 'recompute'
        OR onstart_epoch < %(epoch)s)
 ORDER BY id
 LIMIT 1000
   FOR UPDATE SKIP LOCKED
"""

INSERT_RUN = """
INSERT INTO schedule.cron_run (cron, node, scheduled_at, deadline, catch_up, message, state, finished)
VALUES (%(cron)s, %(node)s, %(at)s, %(at)s + %(postpone)s::interval, %(catch_up)s, %(message)s, %(state)s,
        CASE WHEN %(state)s = 'error' THEN %(at)s END)
ON CONFLICT (cron, scheduled_at) DO NOTHING
"""

UPDATE_PLAN = """
UPDATE schedule.cron SET next_run = %(next_run)s, planned_version = %(version)s, chain_state = %(chain)s,
       onstart_epoch = greatest(onstart_epoch, %(epoch)s)
 WHERE id = %(id)s
"""

MARK_BROKEN = "UPDATE schedule.cron SET broken = true, reason = %(reason)s, next_run = NULL WHERE id = %(id)s"

# runs already due are the claimer's and the executors' (an executor that finishes claims
# again; the pass re-kicks them every poll): waking the pass for them would spin it for as
# long as a backlog lasts
NEXT_WAKE = """
SELECT least(
    (SELECT min(next_run) - %(ahead)s::interval FROM schedule.cron WHERE active AND NOT broken AND node = %(node)s),
    (SELECT min(scheduled_at) FROM schedule.cron_run WHERE state = 'planned' AND node = %(node)s
        AND scheduled_at > %(now)s),
    (SELECT min(run_after) FROM schedule.at_job WHERE status = 'submitted' AND node = %(node)s AND NOT canceled
        AND run_after > %(now)s))
"""

COUNT_DUE = """
SELECT (SELECT count(*) FROM schedule.cron_run WHERE state = 'planned' AND node = %(node)s
           AND scheduled_at <= %(now)s),
       (SELECT count(*) FROM schedule.at_job WHERE status = 'submitted' AND node = %(node)s AND NOT canceled
           AND run_after <= %(now)s)
"""

CLAIM_LOCK = "SELECT pg_advisory_xact_lock(%s)"
COUNT_AT_RUNNING = "SELECT count(*) FROM schedule.at_job WHERE status = 'processing' AND node = %(node)s"

SKIP_INSTANCES = """
UPDATE schedule.cron_run r SET state = 'error', finished = %(now)s,
       message = 'max instances limit reached (' || c.max_instances || ' running): this firing was skipped'
  FROM schedule.cron c
 WHERE c.id = r.cron AND r.state = 'planned' AND r.node = %(node)s AND r.scheduled_at <= %(now)s
   AND (SELECT count(*) FROM schedule.cron_run w WHERE w.cron = r.cron AND w.state = 'working') >= c.max_instances
"""

# the claimer's one statement: the advisory lock and the batch claim (one run per idle executor,
# recorded under that executor's backend; sql/schedule/0006_one_call_runs.sql)
CLAIM_CRON_BATCH = """
SELECT * FROM schedule._claim_cron_batch(%(key)s, %(node)s, %(now)s, %(engine)s, %(limit)s, %(pids)s::int[],
                                         %(starts)s::timestamptz[])
"""
# the run's settings in the executor's session (get_self_id(), transaction_state)
JOB_SETTINGS = "SELECT schedule._job_settings(%s, 'cron')"
BACKEND_START = "SELECT backend_start FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()"

CLAIM_AT = """
UPDATE schedule.at_job
   SET status = 'processing', start_time = %(now)s, pid = pg_backend_pid(), engine = %(engine)s,
       backend_start = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
       stop_requested = NULL, is_success = NULL, error = NULL, done_time = NULL
 WHERE id = (SELECT id FROM schedule.at_job
              WHERE status = 'submitted' AND node = %(node)s AND NOT canceled AND run_after <= %(now)s
              ORDER BY run_after, submit_time, id
              LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, query, params, executor, max_duration, attempt, resubmit_limit,
          schedule._job_settings(id, 'at') AS _settings
"""

# resubmit(): the request survives a rollback in a temporary sequence (setval is not
# transactional); created for every one-time run (DISCARD ALL drops it), reset to -1
RESUBMIT_SEQ = (
    "CREATE TEMPORARY SEQUENCE IF NOT EXISTS pgtt_resubmit MINVALUE -1 START -1",
    "GRANT UPDATE ON SEQUENCE pg_temp.pgtt_resubmit TO PUBLIC",
    "SELECT pg_catalog.setval('pg_temp.pgtt_resubmit', -1, true)",
)
RESUBMIT_READ = "SELECT nullif(last_value, -1) FROM pg_temp.pgtt_resubmit"

FINISH_CRON = """
UPDATE schedule.cron_run SET state = %(state)s, finished = %(now)s, pid = NULL,
       message = CASE WHEN %(message)s::text IS NULL THEN message
                      ELSE coalesce(message || '; ', '') || %(message)s::text END
 WHERE run_id = %(run_id)s
"""

STOP_REASON_CRON = "SELECT stop_requested FROM schedule.cron_run WHERE run_id = %s"
STOP_REASON_AT = "SELECT stop_requested, canceled FROM schedule.at_job WHERE id = %s"

SET_CHAIN = """
UPDATE schedule.cron SET next_run = %(next_run)s, chain_state = 'chain'
 WHERE id = %(id)s AND def_version = %(version)s AND chain_state IN ('wait', 'recompute')
"""

FINISH_AT = """
UPDATE schedule.at_job SET status = 'done', is_success = %(ok)s, error = %(error)s, done_time = %(now)s, pid = NULL
 WHERE id = %(id)s
"""

RESUBMIT_AT = """
UPDATE schedule.at_job SET status = 'submitted', run_after = %(run_after)s, attempt = attempt + 1, pid = NULL,
       is_success = %(ok)s, error = %(error)s, done_time = %(now)s
 WHERE id = %(id)s
"""

# --- the job sandbox (see "How a job runs" above) ----------------------------------------

# what DISCARD ALL does, then the engine's own session settings: one function call that may
# share a pipeline with the run's bookkeeping (DISCARD ALL itself may not: it refuses to run in a
# pipeline or a transaction block); sql/schedule/0005_calendar_claims.sql
RESET_SESSION = "SELECT schedule._reset_session()"
CHECK_INTERVAL = "SET client_connection_check_interval = 1000"

PIN_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)"
# a next_time_statement has no max_run_time; it must not hang the manager (armed per statement,
# so a SET inside the statement cannot lift it)
NEXT_TIME_TIMEOUT = "SET LOCAL statement_timeout = '60s'"
SERVER_SEARCH_PATH = "SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'search_path'"

# the sandbox, one call inside the caller's transaction (steps 1-3 of "How a job runs"):
# role, the job's statements, their params (or NULL), the server's search_path, want a value
SANDBOX_RUN = ("SELECT schedule._sandbox_run(%s, %s::pg_catalog.text[], %s::pg_catalog.text[], %s, %s)")
# an empty run as the engine's own role: what a new executor connection does before its first
# real run (no job text runs, no row changes; run -1 does not exist)
WARM_UP = "SELECT schedule._run_cron(-1, -1, current_user, '{}', %s, NULL)"
# a scheduled run of a one-transaction job, whole: settings, sandbox, outcome (its own transaction)
RUN_CRON = ("SELECT schedule._run_cron(%(run_id)s, %(cron)s, %(role)s, %(sql)s::pg_catalog.text[], %(path)s, "
            "%(finished)s)")


# a job's own error, or the sandbox refusing to commit it (schedule._sandbox_run raises those)
JOB_ERRORS = (psycopg.Error,)


def _message(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        text = translate_db_error(exc)
        if "within security-definer function" in text and "cannot set parameter" in text:
            # the sandbox refused SET ROLE / SET SESSION AUTHORIZATION: say why in the job's log
            text += " (a schedule job runs as its run_as role and may not change its role or session user)"
        return text
    return str(exc) or type(exc).__name__


def job_schedule(rule: dict[str, Any]) -> Schedule:
    """The evaluator's schedule for a stored ``cron.rule`` object."""
    rule = dict(rule or {})
    cron = rule.pop("crontab", None)
    dates = rule.pop("dates", None)
    return pgpro_schedule(cron=cron, rule=rule or None, dates=dates)


# ---------------------------------------------------------------------------------------
# Per-database manager
# ---------------------------------------------------------------------------------------


@dataclass
class Stats:
    cron_started: int = 0
    cron_failed: int = 0
    at_started: int = 0
    at_failed: int = 0
    planned: int = 0
    interrupted: int = 0
    expired: int = 0
    last_error: str = ""
    last_step: float = 0.0


class _Killed(Exception):
    pass


class _StoppedBeforeStart(Exception):
    """schedule.stop_job asked before the job's statements began (the text is its reason)."""


@dataclass
class _Running:
    conn: psycopg.AsyncConnection
    kill_reason: str | None = None
    in_user_sql: bool = False


class DatabaseManager:
    """Plans and runs the jobs of one database (see the module docstring)."""

    def __init__(self, settings: ConnSettings, *, clock: Clock | None = None, engine_name: str = "pgtt-tui",
                 nodename: str | None = None, poll_seconds: float = POLL_SECONDS, logger: logging.Logger = log,
                 plan_ahead: timedelta = PLAN_AHEAD):
        self.plan_ahead = plan_ahead
        self.settings = settings
        self.clock = clock or SystemClock()
        self.engine_name = engine_name
        self.nodename_override = nodename
        self.node = nodename or "primary"
        self.poll_seconds = poll_seconds
        self.log = logger
        self.stats = Stats()
        self.control: psycopg.AsyncConnection | None = None
        self.enabled = False
        self.max_workers = DEFAULT_MAX_WORKERS
        self.max_parallel_workers = DEFAULT_MAX_PARALLEL_WORKERS
        self.epoch = 0
        self._idle: dict[str, list[psycopg.AsyncConnection]] = {"cron": [], "at": []}
        self._tasks: dict[str, set[asyncio.Task]] = {"cron": set(), "at": set()}
        self._schedules: dict[tuple[int, int], Schedule] = {}
        self._wake = asyncio.Event()
        self._started_once = False
        self._control_dirty = False
        self._server_path = '"$user", public'  # replaced by the server's value in open()
        self.claims: psycopg.AsyncConnection | None = None  # the cron claimer's connection
        self._claimer: asyncio.Task | None = None
        self._claim_again = False
        self._claim_want = 0
        self._closing = False
        self._backend_start: dict[int, datetime] = {}  # executor backend pid -> its backend_start
        self._runs_on: dict[int, int] = {}  # executor backend pid -> runs it ran (EXECUTOR_RUNS)
        self._dispatched_at: datetime | None = None  # the instant the last dispatch claimed for

    # --- connections ------------------------------------------------------------------
    async def _connect(self, role: str) -> psycopg.AsyncConnection:
        conn = await aconnect(self.settings.with_app(f"pgtt-schedule {role} {self.engine_name}"[:63]))
        await self._session_setup(conn)
        return conn

    @staticmethod
    async def _session_setup(conn: psycopg.AsyncConnection) -> None:
        conn.prepare_threshold = None  # DISCARD ALL between jobs would drop prepared statements
        # the engine's own SQL never resolves a name through a user schema or a job's temp objects
        await conn.execute(PIN_SEARCH_PATH)
        if conn.info.server_version >= 140000:
            # a backend whose engine died notices it within a second instead of at the end of its query
            await conn.execute(CHECK_INTERVAL)

    async def open(self) -> None:
        if self.control is None or self.control.closed:
            self.control = await self._connect("manager")
            await self.control.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
            if self.nodename_override is None:
                cur = await self.control.execute("SELECT schedule.nodename()")
                self.node = (await cur.fetchone())[0]
            cur = await self.control.execute(SERVER_SEARCH_PATH)
            self._server_path = (await cur.fetchone())[0]

    async def close(self) -> None:
        self._closing = True  # executors that end now do not start a new claimer
        if self._claimer is not None:
            self._claimer.cancel()
            await asyncio.gather(self._claimer, return_exceptions=True)
        for kind in ("cron", "at"):
            for task in list(self._tasks[kind]):
                task.cancel()
            await asyncio.gather(*self._tasks[kind], return_exceptions=True)
            for conn in self._idle[kind]:
                await conn.close()
            self._idle[kind].clear()
        if self._claimer is not None:
            self._claimer.cancel()
            await asyncio.gather(self._claimer, return_exceptions=True)
            self._claimer = None
        if self.claims is not None:
            await self.claims.close()
            self.claims = None
        if self.control is not None:
            await self.control.close()
            self.control = None
        self._closing = False

    # --- one pass -----------------------------------------------------------------------
    async def _setting(self, name: str) -> str | None:
        cur = await self.control.execute(READ_SETTING, {"name": name})
        value = (await cur.fetchone())[0]
        return value if value not in (None, "") else None

    async def _int_setting(self, name: str, default: int) -> int:
        value = await self._setting(name)
        try:
            return max(1, int(value)) if value is not None else default
        except ValueError:
            self.log.warning("%s = %r is not a whole number; using %s", name, value, default)
            return default

    async def read_state(self) -> None:
        conn = self.control
        cur = await conn.execute(READ_STATE)
        enabled, started, epoch, others = await cur.fetchone()
        if not self._started_once:
            self._started_once = True
            auto = (await self._setting("schedule.auto_enabled") or "off").lower() in ("on", "true", "1", "yes")
            if auto and not enabled:
                await conn.execute("UPDATE schedule.manager_state SET enabled = true, start_epoch = start_epoch + 1")
                enabled, epoch = True, epoch + 1
            elif enabled and started and others == 0:
                # the first engine on this database: the scheduler starts now, onstart jobs fire
                await conn.execute(BUMP_EPOCH)
                epoch += 1
        self.enabled = bool(enabled and started)
        self.epoch = epoch
        self.max_workers = await self._int_setting("schedule.max_workers", DEFAULT_MAX_WORKERS)
        self.max_parallel_workers = await self._int_setting("schedule.max_parallel_workers",
                                                            DEFAULT_MAX_PARALLEL_WORKERS)

    async def step(self) -> None:
        """One full pass: state, recovery, expiry, planning, dispatch."""
        await self.open()
        await self.read_state()
        now = self.clock.now()
        if self.enabled:
            await self.dispatch(now)  # runs planned ahead and due now start first
        await self.recover(now)
        if not self.enabled:
            return
        await self.expire(now)
        await self.plan(now)
        await self.dispatch(now)
        self.stats.last_step = time.monotonic()

    async def recover(self, now: datetime) -> None:
        conn = self.control
        args = {"now": now, "node": self.node}
        async with conn.transaction():
            cur = await conn.execute(ORPHAN_CRON, args)
            ids = sorted({row[0] for row in await cur.fetchall()})
            if ids:
                await conn.execute(CHAIN_RECOMPUTE, {"ids": ids})
            cur2 = await conn.execute(ORPHAN_AT, args)
            n = len(ids) + (cur2.rowcount or 0)
        if n:
            self.stats.interrupted += n
            self.log.warning("marked %d interrupted run(s) as failed", n)

    async def expire(self, now: datetime) -> None:
        conn = self.control
        args = {"now": now, "node": self.node}
        async with conn.transaction():
            a = await conn.execute(EXPIRE_CRON, args)
            await conn.execute(SKIP_INSTANCES, args)
            b = await conn.execute(EXPIRE_AT, args)
            await conn.execute(FAIL_DEPENDENTS, args)
            await conn.execute(READY_DEPENDENTS, args)
        self.stats.expired += (a.rowcount or 0) + (b.rowcount or 0)

    def _schedule_for(self, job: dict) -> Schedule:
        key = (job["id"], job["def_version"])
        sched = self._schedules.get(key)
        if sched is None:
            sched = job_schedule(job["rule"])
            self._schedules[key] = sched
        return sched

    def _next_firing(self, job: dict, sched: Schedule, after: datetime) -> datetime | None:
        if job["start_date"] is not None and after < job["start_date"]:
            after = job["start_date"] - timedelta(microseconds=1)
        nxt = sched.next_after(after, job["tz"])
        if nxt is not None and job["end_date"] is not None and nxt > job["end_date"]:
            return None
        return nxt

    async def plan(self, now: datetime) -> None:
        """Insert the due firings of every due job (batch, rows locked, exactly once)."""
        conn = self.control
        conn.row_factory = dict_row
        try:
            async with conn.transaction():
                cur = await conn.execute(DUE_JOBS, {"node": self.node, "now": now, "epoch": self.epoch,
                                                    "horizon": now + self.plan_ahead})
                jobs = await cur.fetchall()
                runs: list[dict] = []
                plans: list[dict] = []
                for job in jobs:
                    try:
                        self._plan_job(job, now, runs, plans)
                    except ScheduleError as exc:
                        await conn.execute(MARK_BROKEN, {"id": job["id"], "reason": f"bad schedule: {exc}"})
                for job in [j for j in jobs if j["chain_state"] == "recompute"]:
                    await self._recompute_chain(job, now, plans)
                if runs:
                    async with conn.cursor() as c:
                        await c.executemany(INSERT_RUN, runs)
                if plans:
                    async with conn.cursor() as c:
                        await c.executemany(UPDATE_PLAN, plans)
                self.stats.planned += len(runs)
        finally:
            conn.row_factory = psycopg.rows.tuple_row
            if self._control_dirty and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                # a recomputed next_time_statement ran here: drop whatever it left in the session
                self._control_dirty = False
                await conn.execute("RESET ALL")
                await conn.execute("DISCARD TEMP")
                await self._session_setup(conn)

    def _plan_job(self, job: dict, now: datetime, runs: list, plans: list) -> None:
        if job["chain_state"] == "recompute":
            return  # handled by _recompute_chain (needs SQL)
        sched = self._schedule_for(job)
        chain = job["chain_state"]
        next_run = job["next_run"]
        version = job["def_version"]
        plan = {"id": job["id"], "version": version, "epoch": self.epoch, "chain": chain, "next_run": next_run}
        base = {"cron": job["id"], "node": job["node"], "postpone": job["postpone"], "catch_up": False,
                "message": None, "state": "planned"}
        # onstart / @reboot: once per scheduler start
        if job["onstart_epoch"] < self.epoch and sched.runs_at_start:
            runs.append({**base, "at": now.replace(microsecond=0)})
        if job["planned_version"] != version or (next_run is None and chain == "schedule"):
            # (re)computed from the schedule, starting now
            plan["next_run"] = self._next_firing(job, sched, now)
            plan["chain"] = "schedule"
            plans.append(plan)
            return
        if next_run is None or next_run > now + self.plan_ahead:
            plans.append(plan)
            return
        # a firing is due (or will be within plan_ahead: its run waits, planned, until then)
        if job["end_date"] is not None and next_run > job["end_date"]:
            plan["next_run"] = None
            plans.append(plan)
            return
        if now - next_run > MISSED_GRACE:
            missed = [next_run] + (firings_between(sched, next_run, now, job["tz"], limit=10_000)
                                   if chain == "schedule" else [])
            count = len(missed)
            note = (f"catch-up: {count} firing(s) from {missed[0].isoformat()} to {missed[-1].isoformat()} "
                    f"were missed while no engine ran")
            if job["missed"] == "once":
                runs.append({**base, "at": missed[-1], "catch_up": True, "message": note, "postpone": None})
            else:
                runs.append({**base, "at": missed[-1], "catch_up": True, "state": "error",
                             "message": "skipped (missed = 'skip'): " + note})
        else:
            runs.append({**base, "at": next_run})
        if job["next_time_statement"]:
            plan["next_run"] = None
            plan["chain"] = "wait"  # the run's next_time_statement sets the next time
        else:
            plan["next_run"] = self._next_firing(job, sched, max(now, next_run))
        plans.append(plan)

    async def _recompute_chain(self, job: dict, now: datetime, plans: list) -> None:
        """The chain's run was interrupted: evaluate next_time_statement as after a failure."""
        conn = self.control
        self._control_dirty = True  # the statement ran in this session: cleaned after the pass
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_catalog.set_config('schedule.transaction_state', 'failure', true)")
                await conn.execute(NEXT_TIME_TIMEOUT)  # it runs on the manager's own connection
                value = await self._sandboxed(_Running(conn), job["executor"], [job["next_time_statement"]],
                                              want_value=True)
                if value is None:
                    raise ValueError("next_time_statement did not return a timestamp with time zone (got no row "
                                     "or NULL)")
        except (*JOB_ERRORS, ValueError) as exc:
            await conn.execute(MARK_BROKEN, {"id": job["id"],
                                             "reason": f"unable to execute next time statement: {_message(exc)}"})
            return
        plans.append({"id": job["id"], "version": job["def_version"], "epoch": self.epoch, "chain": "chain",
                      "next_run": value})

    async def dispatch(self, now: datetime) -> None:
        self._dispatched_at = now
        cur = await self.control.execute(COUNT_DUE, {"node": self.node, "now": now})
        due_cron, due_at = await cur.fetchone()
        if due_cron:
            self._kick_claimer(min(due_cron, self.max_workers - len(self._tasks["cron"])))
        self._spawn("at", min(due_at, self.max_parallel_workers - len(self._tasks["at"])))

    # --- scheduled runs: one claimer hands out runs to idle executors ----------------------
    # Claims are serialized by an advisory lock (the cluster-wide max_workers count must be
    # exact), so an engine claims with one connection, for all its idle executors at once:
    # one lock and one statement per batch instead of one per run, and no executor waits in
    # the lock's queue.  An executor that finishes hands its connection back and wakes the
    # claimer; the claimer stops when a batch comes back short (nothing more is due now).

    def _kick_claimer(self, want: int = 0) -> None:
        if self._closing:
            return
        self._claim_want = max(self._claim_want, want)
        self._claim_again = True
        if self._claimer is None or self._claimer.done():
            self._claimer = asyncio.create_task(self._claim_loop(), name="schedule-cron-claimer")

    async def _executor_conn(self) -> psycopg.AsyncConnection:
        conn = await self._connect("cron executor")
        cur = await conn.execute(BACKEND_START)
        self._backend_start[conn.info.backend_pid] = (await cur.fetchone())[0]
        self._runs_on.pop(conn.info.backend_pid, None)  # a new backend may reuse a pid
        await self._warm_up(conn)
        return conn

    async def _warm_up(self, conn: psycopg.AsyncConnection) -> None:
        """An empty run (only a head start: if it fails, the real runs fail with the reason)."""
        try:
            await conn.execute(WARM_UP, (self._server_path,))
        except psycopg.Error as exc:
            self.log.warning("schedule executor warm-up failed (runs will say why): %s", _message(exc))
        await conn.execute(RESET_SESSION)

    async def _open_executors(self, n: int) -> list[psycopg.AsyncConnection]:
        """``n`` new cron executor connections, ready to run. A new backend creates its temporary
        schema and plans the run's statements on its first run, and a new schema makes every
        backend drop its cached plans: an empty run on each (which creates the schemas), then a
        second one (which plans for good) take ~20 ms per connection off the due instant."""
        got = await asyncio.gather(*(self._executor_conn() for _ in range(n)), return_exceptions=True)
        conns = [c for c in got if isinstance(c, psycopg.AsyncConnection)]
        failed = [e for e in got if isinstance(e, BaseException)]
        try:
            if failed:
                raise failed[0]
            await asyncio.gather(*(self._warm_up(c) for c in conns))
        except BaseException:
            for conn in conns:
                await conn.close()
            raise
        return conns

    async def _claim_loop(self) -> None:
        try:
            while self._claim_again:
                self._claim_again = False
                free = self.max_workers - len(self._tasks["cron"])
                self._idle["cron"] = [c for c in self._idle["cron"]
                                      if not c.closed and c.info.backend_pid in self._backend_start]
                missing = min(free, self._claim_want) - len(self._idle["cron"])
                self._claim_want = 0
                if missing > 0:
                    # (executors that finish meanwhile add to the same list)
                    self._idle["cron"].extend(await self._open_executors(missing))
                idle = self._idle["cron"]
                want = min(free, len(idle))
                if want <= 0:
                    continue
                jobs = await self._claim_batch(idle[:want])
                by_pid = {c.info.backend_pid: c for c in idle}
                for job in jobs:
                    conn = by_pid[job["pid"]]
                    self._idle["cron"].remove(conn)
                    task = asyncio.create_task(self._run_claimed(conn, job), name="schedule-cron-executor")
                    self._tasks["cron"].add(task)
                    task.add_done_callback(self._tasks["cron"].discard)
                if len(jobs) == want:
                    self._claim_again = True  # maybe more is due: the next executor to come back claims
        except Exception as exc:  # noqa: BLE001 - the manager's next pass starts a new claimer
            self.stats.last_error = _message(exc)
            self.log.warning("schedule claimer failed: %s", _message(exc))
            if self.claims is not None:
                await self.claims.close()
                self.claims = None

    async def _claim_batch(self, conns: list[psycopg.AsyncConnection]) -> list[dict]:
        if self.claims is None or self.claims.closed:
            self.claims = await self._connect("claims")
        conn = self.claims
        pids = [c.info.backend_pid for c in conns]
        args = {"key": CRON_CLAIM_KEY, "node": self.node, "now": self.clock.now(), "engine": self.engine_name,
                "limit": self.max_workers, "pids": pids, "starts": [self._backend_start[p] for p in pids]}
        conn.row_factory = dict_row
        try:
            cur = await conn.execute(CLAIM_CRON_BATCH, args)  # one statement, its own transaction
            return await cur.fetchall()
        finally:
            conn.row_factory = psycopg.rows.tuple_row

    async def _run_claimed(self, conn: psycopg.AsyncConnection, job: dict) -> None:
        """Run one claimed run on its executor connection: the job's settings, the run, the
        session reset; then the connection goes back to the idle ones."""
        try:
            await self._run_cron(conn, job)
            await self._reset_session(conn)
        except Exception as exc:  # noqa: BLE001 - an executor must not die silently; the run is recovered
            self.stats.last_error = _message(exc)
            self.log.warning("schedule executor failed: %s", _message(exc))
            await conn.close()
        finally:
            if not conn.closed:
                if self._worn_out(conn):
                    await conn.close()
                    self._spawn_replacement()
                elif (len(self._idle["cron"]) < self.max_workers
                        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE):
                    self._idle["cron"].append(conn)
                else:
                    await conn.close()
            self._tasks["cron"].discard(asyncio.current_task())  # this executor is free again
            self._kick_claimer()

    def _worn_out(self, conn: psycopg.AsyncConnection) -> bool:
        """Count a run on ``conn``; True once it has run EXECUTOR_RUNS or a few more (it is then
        replaced)."""
        pid = conn.info.backend_pid
        self._runs_on[pid] = self._runs_on.get(pid, 0) + 1
        # spread by backend pid, so that executors that started together do not all retire at once
        if self._runs_on[pid] < EXECUTOR_RUNS + pid % (EXECUTOR_RUNS // 5 + 1):
            return False
        self._runs_on.pop(pid, None)
        self._backend_start.pop(pid, None)
        return True

    def _spawn_replacement(self) -> None:
        """Open a warmed executor connection in the background for one that was retired (a
        slot counts as busy meanwhile, so the claimer does not open another on the run's path)."""
        if self._closing:
            return
        task = asyncio.create_task(self._replace_executor(), name="schedule-cron-replacement")
        self._tasks["cron"].add(task)
        task.add_done_callback(self._tasks["cron"].discard)

    async def _replace_executor(self) -> None:
        try:
            conns = await self._open_executors(1)
        except Exception as exc:  # noqa: BLE001 - the claimer opens connections on demand instead
            self.stats.last_error = _message(exc)
            self.log.warning("schedule executor could not be replaced: %s", _message(exc))
            self._tasks["cron"].discard(asyncio.current_task())
            self._kick_claimer()  # the slot is free again: the claimer opens one on demand
            return
        if self._closing or len(self._idle["cron"]) >= self.max_workers:
            for conn in conns:
                await conn.close()
            return
        self._idle["cron"].extend(conns)
        self._tasks["cron"].discard(asyncio.current_task())
        self._kick_claimer()

    def _spawn(self, kind: str, n: int) -> None:
        for _ in range(max(0, n)):
            task = asyncio.create_task(self._executor_loop(kind), name=f"schedule-{kind}-executor")
            self._tasks[kind].add(task)
            task.add_done_callback(self._tasks[kind].discard)

    async def drain(self, timeout: float = 60.0) -> None:
        """Wait until no executor is busy (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while any(self._tasks.values()) or (self._claimer is not None and not self._claimer.done()):
            if time.monotonic() > deadline:
                raise TimeoutError("schedule executors still busy")
            await asyncio.sleep(0.02)

    async def next_wake(self) -> datetime | None:
        # runs due by the instant the last pass dispatched for were dispatched; later ones wake it
        now = self._dispatched_at or self.clock.now()
        cur = await self.control.execute(NEXT_WAKE, {"node": self.node, "ahead": self.plan_ahead, "now": now})
        return (await cur.fetchone())[0]

    # --- executors ------------------------------------------------------------------------
    async def prewarm(self, kind: str, n: int) -> None:
        """Open idle executor connections ahead of a firing (connecting costs more than running)."""
        want = min(n, self.max_workers if kind == "cron" else self.max_parallel_workers)
        missing = want - len(self._idle[kind]) - len(self._tasks[kind])
        if missing > 0:
            if kind == "cron":
                conns = await self._open_executors(missing)
            else:
                conns = await asyncio.gather(*(self._connect("at executor") for _ in range(missing)))
            self._idle[kind].extend(conns)
        if kind == "cron" and (self.claims is None or self.claims.closed):
            self.claims = await self._connect("claims")

    async def _executor_loop(self, kind: str) -> None:
        """A one-time jobs' executor: claims and runs until nothing is due (scheduled runs are
        handed out by the claimer, ``_claim_loop``)."""
        conn = self._idle[kind].pop() if self._idle[kind] else None
        retire = False
        try:
            if conn is None or conn.closed:
                conn = await self._connect("cron executor" if kind == "cron" else "at executor")
            # pipeline mode for the executor's life: a statement whose result is not needed yet
            # travels with the next one that is, so the run's last bookkeeping, the session reset
            # and the next claim take one round trip
            async with conn.pipeline():
                job = await self._claim_at(conn, self.clock.now())
                while job is not None:
                    await self._run_at(conn, job)
                    await self._reset_session(conn)
                    if self._worn_out(conn):
                        retire = True  # closed below; the next pass starts a fresh executor
                        break
                    job = await self._claim_at(conn, self.clock.now())
        except Exception as exc:  # noqa: BLE001 - an executor must not die silently; the run is recovered
            self.stats.last_error = _message(exc)
            self.log.warning("schedule executor failed: %s", _message(exc))
            if conn is not None:
                await conn.close()
            conn = None
        finally:
            if conn is not None and not conn.closed:
                limit = self.max_workers if kind == "cron" else self.max_parallel_workers
                if (not retire and len(self._idle[kind]) < limit
                        and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE):
                    self._idle[kind].append(conn)
                else:
                    await conn.close()

    @staticmethod
    async def _reset_session(conn: psycopg.AsyncConnection) -> None:
        """Drop what a job left in the session (as DISCARD ALL), re-pin the engine's settings.
        Queued: it goes with the next statement that waits for a result."""
        await conn.execute(RESET_SESSION)

    async def _claim_at(self, conn: psycopg.AsyncConnection, now: datetime) -> dict | None:
        args = {"node": self.node, "now": now, "engine": self.engine_name}
        conn.row_factory = dict_row
        try:
            async with conn.transaction():
                await conn.execute(CLAIM_LOCK, (AT_CLAIM_KEY,))
                cur = await conn.execute(COUNT_AT_RUNNING, args)
                if (await cur.fetchone())["count"] >= self.max_parallel_workers:
                    return None
                cur = await conn.execute(CLAIM_AT, args)
                job = await cur.fetchone()
                if job is not None:
                    for stmt in RESUBMIT_SEQ:
                        await conn.execute(stmt)
                return job
        finally:
            conn.row_factory = psycopg.rows.tuple_row

    async def _watchdog(self, run: _Running, limit: timedelta | None, end_date: datetime | None) -> None:
        """Cancel the running statement when max_run_time / max_duration / end_date passes."""
        started = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            reason = None
            if limit is not None and time.monotonic() - started >= limit.total_seconds():
                reason = f"stopped: ran longer than its limit of {limit}"
            elif end_date is not None and self.clock.now() >= end_date:
                reason = f"stopped: the job's end_date {end_date.isoformat()} was reached"
            if reason and run.in_user_sql:
                run.kill_reason = reason
                try:
                    await run.conn.cancel_safe()
                except Exception:  # noqa: BLE001 - the statement may have finished meanwhile
                    pass
                return

    def _start_watchdog(self, run: _Running, limit: timedelta | None, end_date: datetime | None) -> asyncio.Task | None:
        if limit is None and end_date is None:
            return None  # nothing to watch (schedule.stop_cron_job / stop_job cancel from SQL)
        return asyncio.create_task(self._watchdog(run, limit, end_date))

    async def _sandboxed(self, run: _Running, role: str, statements: list[str], params: list | None = None,
                         want_value: bool = False) -> datetime | None:
        """Inside the caller's transaction: run ``statements`` as ``role`` in the sandbox
        (module docstring, "How a job runs"); one statement. Returns the first column of the
        last statement's first row when ``want_value`` (next_time_statement)."""
        run.in_user_sql = True
        try:
            cur = await run.conn.execute(SANDBOX_RUN, (role, list(statements), params, self._server_path, want_value))
            row = await cur.fetchone()
        finally:
            run.in_user_sql = False
        if not row:
            return None
        return next(iter(row.values())) if isinstance(row, dict) else row[0]

    def _finished_at(self) -> datetime | None:
        """A run's end time as the engine's clock says, or None for "the database's now" when
        the clock is the wall clock (the server reads it when the run ends)."""
        return None if isinstance(self.clock, SystemClock) else self.clock.now()

    async def _run_cron(self, conn: psycopg.AsyncConnection, job: dict) -> None:
        self.stats.cron_started += 1
        run = _Running(conn)
        watchdog = self._start_watchdog(run, job["max_run_time"], job["end_date"])
        commands: list[str] = job["commands"]
        errors: list[str] = []
        ok = True
        one_transaction = job["same_transaction"] or len(commands) == 1
        try:
            if one_transaction:
                # settings, sandbox and outcome in one statement and transaction
                run.in_user_sql = True
                try:
                    await conn.execute(RUN_CRON, {"run_id": job["run_id"], "cron": job["cron"],
                                                  "role": job["executor"], "sql": commands, "path": self._server_path,
                                                  "finished": self._finished_at()})
                except JOB_ERRORS as exc:
                    ok = False
                    errors.append(await self._failure_text(run, exc, job["run_id"], 1 if len(commands) == 1 else None))
                finally:
                    run.in_user_sql = False
            else:
                await conn.execute(JOB_SETTINGS, (job["cron"],))
                for i, command in enumerate(commands, 1):
                    try:
                        async with conn.transaction():
                            await self._sandboxed(run, job["executor"], [command])
                    except JOB_ERRORS as exc:
                        ok = False
                        errors.append(await self._failure_text(run, exc, job["run_id"], i))
                        break
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if one_transaction and not ok and (job["next_time_statement"] or job["onrollback"]):
            # the settings rolled back with the job; what follows needs them
            await conn.execute(JOB_SETTINGS, (job["cron"],))
        if job["next_time_statement"] or (not ok and job["onrollback"]):
            await conn.execute("SELECT set_config('schedule.transaction_state', %s, false)",
                               ("success" if ok else "failure",))
        if not ok and job["onrollback"]:
            try:
                async with conn.transaction():
                    await self._sandboxed(_Running(conn), job["executor"], [job["onrollback"]])
            except JOB_ERRORS as exc:
                errors.append(f"onrollback failed: {_message(exc)}")
        if not ok or not one_transaction:
            async with conn.transaction():
                await conn.execute(FINISH_CRON, {"state": "done" if ok else "error", "now": self.clock.now(),
                                                 "message": "; ".join(errors) or None, "run_id": job["run_id"]})
        if not ok:
            self.stats.cron_failed += 1
        if job["next_time_statement"]:
            await self._next_time(conn, job)

    async def _failure_text(self, run: _Running, exc: BaseException, run_id: int, command_no: int | None) -> str:
        if run.kill_reason:
            return run.kill_reason
        if isinstance(exc, psycopg.errors.QueryCanceled):
            cur = await run.conn.execute(STOP_REASON_CRON, (run_id,))
            row = await cur.fetchone()
            if row and row[0]:
                return row[0]
        where = f"error in command #{command_no}: " if command_no else "error: "
        return where + _message(exc)

    async def _next_time(self, conn: psycopg.AsyncConnection, job: dict) -> None:
        try:
            async with conn.transaction():
                await conn.execute(NEXT_TIME_TIMEOUT)
                value = await self._sandboxed(_Running(conn), job["executor"], [job["next_time_statement"]],
                                              want_value=True)
            if value is None:
                raise ValueError("it must return a timestamp with time zone (got no row or NULL)")
            await conn.execute(SET_CHAIN, {"next_run": value, "id": job["cron"], "version": job["def_version"]})
        except (*JOB_ERRORS, ValueError) as exc:
            await conn.execute(MARK_BROKEN, {"id": job["cron"],
                                             "reason": f"unable to execute next time statement: {_message(exc)}"})

    async def _run_at(self, conn: psycopg.AsyncConnection, job: dict) -> None:
        self.stats.at_started += 1
        run = _Running(conn)
        watchdog = self._start_watchdog(run, job["max_duration"], None)
        try:
            async with conn.transaction():
                # stop_job cancels the backend a job runs on; a job claimed ahead whose run has
                # not started yet is idle there, so the cancel alone would be lost and the job
                # would run in full: a stop recorded before the start is honoured here
                cur = await conn.execute(STOP_REASON_AT, (job["id"],))
                stopped = (await cur.fetchone())[0]
                if stopped is not None:
                    raise _StoppedBeforeStart(stopped)
                await self._sandboxed(run, job["executor"], [job["query"]],
                                      list(job["params"]) if job["params"] is not None else None)
                # the outcome commits with the job's own changes
                await self._finish_at(conn, job, None)
        except _StoppedBeforeStart as exc:
            self.stats.at_failed += 1  # nothing ran: no resubmit() can have been asked for
            async with conn.transaction():
                await conn.execute(FINISH_AT, {"id": job["id"], "ok": False, "now": self.clock.now(),
                                               "error": str(exc)})
        except JOB_ERRORS as exc:
            self.stats.at_failed += 1
            text = run.kill_reason
            if text is None and isinstance(exc, psycopg.errors.QueryCanceled):
                cur = await conn.execute(STOP_REASON_AT, (job["id"],))
                text = (await cur.fetchone())[0]
            async with conn.transaction():
                await self._finish_at(conn, job, text or _message(exc))
        finally:
            if watchdog is not None:
                watchdog.cancel()
        await self._notify_done()

    async def _finish_at(self, conn: psycopg.AsyncConnection, job: dict, error: str | None) -> None:
        """Record a one-time run: done, failed, or resubmitted. A resubmit() request counts
        on success and on error (pgpro_scheduler); it survives the rollback of a failed job
        because it is kept in a temporary sequence (setval is not transactional)."""
        cur = await conn.execute(RESUBMIT_READ)
        resubmit = (await cur.fetchone())[0]
        cur = await conn.execute(STOP_REASON_AT, (job["id"],))
        _, canceled = await cur.fetchone()
        now = self.clock.now()
        failed = f"{error}; " if error else ""
        if resubmit is not None and not canceled:
            if job["attempt"] + 1 < job["resubmit_limit"]:
                await conn.execute(RESUBMIT_AT, {"id": job["id"], "now": now, "ok": error is None, "error": error,
                                                 "run_after": now + timedelta(seconds=int(resubmit))})
            else:
                await conn.execute(FINISH_AT, {"id": job["id"], "ok": False, "now": now,
                                               "error": f"{failed}resubmit limit reached ({job['resubmit_limit']})"})
        elif resubmit is not None and canceled:
            await conn.execute(FINISH_AT, {"id": job["id"], "ok": False, "now": now,
                                           "error": f"{failed}job was canceled while processing: cannot resubmit"})
        else:
            await conn.execute(FINISH_AT, {"id": job["id"], "ok": error is None, "now": now, "error": error})

    async def _notify_done(self) -> None:
        # a finished one-time job may unblock dependants: wake the manager loop
        self._wake.set()

    # --- the loop --------------------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                await self.step()
                wake = await self.next_wake() if self.enabled else None
                now = self.clock.now()
                until = now + timedelta(seconds=self.poll_seconds)
                if wake is not None and wake < until:
                    until = max(wake, now)
                if wake is not None and wake - now < timedelta(seconds=5):
                    await self.prewarm("cron", self.max_workers)
                await self._wait(stopping, until)
        finally:
            await self.close()

    async def _wait(self, stopping: asyncio.Event, until: datetime) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(self.clock.sleep_until(until)),
                   asyncio.ensure_future(stopping.wait()),
                   asyncio.ensure_future(self._wake.wait()),
                   asyncio.ensure_future(self._notified())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _notified(self) -> None:
        async for _ in self.control.notifies():
            return


# ---------------------------------------------------------------------------------------
# The worker service
# ---------------------------------------------------------------------------------------


def databases_from_setting(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@dataclass
class ScheduleService:
    """``pgtt-tui worker`` service: one DatabaseManager per served database."""

    nodename: str | None = None
    databases: list[str] | None = None  # None: schedule.database, else the DSN's database
    poll_seconds: float = POLL_SECONDS
    name: str = "schedule"
    managers: dict[str, DatabaseManager] = field(default_factory=dict)
    _error: str = ""

    async def _wanted(self, settings: ConnSettings) -> list[str]:
        if self.databases:
            return list(self.databases)
        conn = await aconnect(settings.with_app("pgtt-schedule probe"))
        try:
            cur = await conn.execute("SELECT current_setting('schedule.database', true), current_database()")
            value, current = await cur.fetchone()
        finally:
            await conn.close()
        return databases_from_setting(value) or [current]

    async def run(self, ctx) -> None:
        tasks: dict[str, asyncio.Task] = {}
        try:
            while not ctx.stopping.is_set():
                wanted = await self._wanted(ctx.settings)
                for db in wanted:
                    if db not in tasks or tasks[db].done():
                        if db in tasks and tasks[db].done() and tasks[db].exception() is not None:
                            raise tasks[db].exception()
                        settings = ConnSettings(dsn=ctx.settings.conninfo(dbname=db),
                                                application_name=ctx.settings.application_name,
                                                connect_timeout=ctx.settings.connect_timeout)
                        mgr = DatabaseManager(settings, clock=ctx.clock, engine_name=ctx.client_name,
                                              nodename=self.nodename, poll_seconds=self.poll_seconds, logger=ctx.log)
                        self.managers[db] = mgr
                        tasks[db] = asyncio.create_task(mgr.run(ctx.stopping), name=f"schedule:{db}")
                for db in [d for d in tasks if d not in wanted]:
                    tasks.pop(db).cancel()
                    self.managers.pop(db, None)
                try:
                    await asyncio.wait_for(ctx.stopping.wait(), timeout=10)
                except TimeoutError:
                    pass
                for db, task in tasks.items():
                    if task.done() and task.exception() is not None:
                        raise task.exception()
        except Exception as exc:
            self._error = str(exc)
            raise
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    def health(self) -> dict[str, Any]:
        if self._error:
            return {"ok": False, "detail": self._error}
        parts = [f"{db}: {'enabled' if m.enabled else 'disabled'}, started {m.stats.cron_started} cron / "
                 f"{m.stats.at_started} one-time runs" for db, m in self.managers.items()]
        return {"ok": True, "detail": "; ".join(parts) or "starting"}

    def metrics(self) -> list:
        from engine.worker import Metric  # noqa: PLC0415 - avoid an import cycle at module load

        out = []
        for db, m in self.managers.items():
            labels = {"database": db}
            s = m.stats
            out += [
                Metric("pgtt_schedule_runs_started_total", s.cron_started, {**labels, "kind": "cron"}, "counter",
                       "scheduled job runs started"),
                Metric("pgtt_schedule_runs_started_total", s.at_started, {**labels, "kind": "onetime"}, "counter",
                       "one-time job runs started"),
                Metric("pgtt_schedule_runs_failed_total", s.cron_failed, {**labels, "kind": "cron"}, "counter",
                       "scheduled job runs that failed"),
                Metric("pgtt_schedule_runs_failed_total", s.at_failed, {**labels, "kind": "onetime"}, "counter",
                       "one-time job runs that failed"),
                Metric("pgtt_schedule_interrupted_total", s.interrupted, labels, "counter",
                       "runs found interrupted (engine died) and marked failed"),
                Metric("pgtt_schedule_busy_workers", len(m._tasks["cron"]), {**labels, "kind": "cron"}, "gauge",
                       "scheduled-job executors busy in this engine"),
                Metric("pgtt_schedule_busy_workers", len(m._tasks["at"]), {**labels, "kind": "onetime"}, "gauge",
                       "one-time-job executors busy in this engine"),
            ]
        return out


def build_services(options) -> list[ScheduleService]:
    opts = options.for_module("schedule") if hasattr(options, "for_module") else {}
    dbs = opts.get("databases")
    return [ScheduleService(nodename=opts.get("nodename"),
                            databases=databases_from_setting(dbs) if isinstance(dbs, str) else dbs,
                            poll_seconds=float(opts.get("poll_seconds", POLL_SECONDS)))]
