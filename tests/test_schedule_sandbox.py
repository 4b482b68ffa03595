"""schedule: a job cannot leave its run_as role (the sandbox in engine/schedule/manager.py).

The engine logs in as a superuser here (the test cluster's ``postgres``), the worst case.
Every job runs as a plain role ("robot") that owns one schema. Each escape attempt must
fail, say why in the job's log, and leave nothing behind that it tried to do as the
superuser. Normal jobs must keep working."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from engine.clock import FakeClock
from engine.db import ConnSettings
from engine.schedule.manager import DatabaseManager

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def robot(make_db):
    """(dsn, superuser connection, robot role name, superuser name)."""
    dsn = make_db(("schedule",))
    role = f"robot_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT schedule.enable()")
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE SCHEMA robot AUTHORIZATION {}").format(sql.Identifier(role)))
        # the role's own search_path: the job must get it (not the engine's)
        conn.execute(sql.SQL("ALTER ROLE {} SET search_path = robot").format(sql.Identifier(role)))
        conn.execute("CREATE TABLE robot.t (x text)")
        conn.execute(sql.SQL("ALTER TABLE robot.t OWNER TO {}").format(sql.Identifier(role)))
        try:
            yield dsn, conn, role, conn.info.user
        finally:
            conn.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def run_all(dsn: str, clock: FakeClock, minutes: int = 1) -> None:
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=clock)
    try:
        await m.step()
        await m.drain()
        for _ in range(minutes):
            clock.advance(60)
            await m.step()
            await m.drain()
            await m.step()  # one-time jobs unblocked by the previous pass
            await m.drain()
    finally:
        await m.close()


def robot_privileges(conn, role):
    return conn.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s",
                        (role,)).fetchone()


ESCAPES = [
    "RESET ROLE",
    "SET ROLE {su}",
    "SET SESSION AUTHORIZATION {su}",
    "SELECT set_config('role', '{su}', false)",
    "SET LOCAL ROLE {su}",
    "RESET SESSION AUTHORIZATION",
    # a helper with a SET clause: CREATE works, calling it does not
    "CREATE FUNCTION robot.sw() RETURNS int LANGUAGE sql SET role = {su} AS 'SELECT 1'; SELECT robot.sw()",
]


async def test_every_role_escape_fails_is_logged_and_leaves_nothing(robot):
    dsn, conn, role, su = robot
    # what an escaped job would do as the superuser, then switch back to look innocent
    payload = ("CREATE TABLE public.{tag} (x int); ALTER ROLE {role} SUPERUSER; "
               "INSERT INTO robot.t VALUES ('{tag}')")
    ids = {}
    for n, escape in enumerate(ESCAPES):
        tag = f"esc_at_{n}"
        text = f"{escape.format(su=su)}; {payload.format(tag=tag, role=role)}; SET ROLE {role}"
        ids[tag] = conn.execute("SELECT schedule.submit_job(%s, run_as := %s)", (text, role)).fetchone()[0]
    # scheduled jobs: the commands, onrollback and next_time_statement are sandboxed alike
    conn.execute("SELECT schedule.create_job(jsonb_build_object('cron', '* * * * *', 'run_as', %s::text, "
                 "'commands', jsonb_build_array('select 1', %s::text), 'onrollback', %s::text))",
                 (role, f"RESET ROLE; {payload.format(tag='esc_cmd', role=role)}",
                  f"RESET ROLE; {payload.format(tag='esc_rb', role=role)}"))
    nts = conn.execute("SELECT schedule.create_job(jsonb_build_object('cron', '* * * * *', 'run_as', %s::text, "
                       "'commands', 'select 1', 'next_time_statement', %s::text))",
                       (role, f"SELECT set_config('role', '{su}', false)::timestamptz")).fetchone()[0]
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(seconds=1))
    await run_all(dsn, clock)

    for tag, jid in ids.items():
        status, ok, error = conn.execute("SELECT status, is_success, error FROM schedule.all_job_status WHERE id = %s",
                                         (jid,)).fetchone()
        assert (status, ok) == ("done", False), tag
        assert "within security-definer function" in error and "may not change its role" in error, (tag, error)
    log = conn.execute("SELECT status, message FROM schedule.get_log() WHERE cron <> %s", (nts,)).fetchall()
    assert len(log) == 1 and log[0][0] == "error"
    assert "error in command #2: cannot set parameter \"role\"" in log[0][1]
    assert "onrollback failed: cannot set parameter \"role\"" in log[0][1]
    broken, reason = conn.execute("SELECT broken, reason FROM schedule.cron WHERE id = %s", (nts,)).fetchone()
    assert broken and "cannot set parameter \"role\"" in reason
    # nothing the jobs tried as the superuser persisted
    assert robot_privileges(conn, role) == (False, False, False)
    assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'esc%%'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM robot.t").fetchone()[0] == 0


async def test_code_that_would_run_at_commit_is_refused(robot):
    """Deferred triggers and WITH HOLD cursors run when the engine commits, after the
    sandbox function returned: a job that leaves such code pending is rolled back."""
    dsn, conn, role, su = robot
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("SET ROLE {}").format(ident))
    try:
        conn.execute(f"""
            CREATE FUNCTION robot.escape() RETURNS int LANGUAGE plpgsql AS $$
            BEGIN RESET ROLE; EXECUTE 'ALTER ROLE {role} CREATEROLE'; RETURN 1; END $$;
            CREATE FUNCTION robot.trap() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM robot.escape(); RETURN NULL; END $$;
            CREATE TABLE robot.trapped (x int);
            CREATE CONSTRAINT TRIGGER trapped_t AFTER INSERT ON robot.trapped
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION robot.trap();
            CREATE FUNCTION robot.key(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN RETURN $1; END $$;
            CREATE TABLE robot.excl (x int, EXCLUDE USING btree ((robot.key(x)) WITH =) DEFERRABLE INITIALLY DEFERRED);
            -- a deferrable foreign key is fine (PostgreSQL's own checks run as the table owner)
            CREATE TABLE robot.parent (id int PRIMARY KEY);
            CREATE TABLE robot.child (p int REFERENCES robot.parent DEFERRABLE INITIALLY DEFERRED);
        """)
    finally:
        conn.execute("RESET ROLE")
    # one executor, so the jobs run one after another on the same session (the fk job must not
    # be blamed for what the previous job on that session did)
    conn.execute(sql.SQL("ALTER DATABASE {} SET schedule.max_parallel_workers = 1").format(
        sql.Identifier(conn.info.dbname)))
    jobs = {
        "trigger": "INSERT INTO robot.trapped VALUES (1)",
        "cursor": "DECLARE c CURSOR WITH HOLD FOR SELECT robot.escape()",
        "exclusion": "INSERT INTO robot.excl VALUES (1)",
        "fk": "INSERT INTO robot.child VALUES (7); INSERT INTO robot.parent VALUES (7)",
    }
    ids = {k: conn.execute("SELECT schedule.submit_job(%s, run_as := %s)", (v, role)).fetchone()[0]
           for k, v in jobs.items()}
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(seconds=1))
    await run_all(dsn, clock)
    got = {k: conn.execute("SELECT is_success, error FROM schedule.all_job_status WHERE id = %s", (i,)).fetchone()
           for k, i in ids.items()}
    assert got["fk"] == (True, None)
    assert got["trigger"][0] is False and "deferrable trigger trapped_t on table robot.trapped" in got["trigger"][1]
    assert got["exclusion"][0] is False and "deferrable constraint excl_" in got["exclusion"][1]
    assert got["cursor"][0] is False and "WITH HOLD" in got["cursor"][1]
    assert robot_privileges(conn, role) == (False, False, False)
    assert conn.execute("SELECT (SELECT count(*) FROM robot.trapped), (SELECT count(*) FROM robot.excl), "
                        "(SELECT count(*) FROM robot.child)").fetchone() == (0, 0, 1)
    # without track_counts the engine cannot tell which tables a job changed: it refuses
    # every job while such an object exists (safe, and the log says why)
    conn.execute(sql.SQL("ALTER DATABASE {} SET track_counts = off").format(sql.Identifier(conn.info.dbname)))
    blind = conn.execute("SELECT schedule.submit_job('select 1', run_as := %s)", (role,)).fetchone()[0]
    await run_all(dsn, FakeClock(datetime.now(timezone.utc) + timedelta(seconds=1)))
    ok, error = conn.execute("SELECT is_success, error FROM schedule.all_job_status WHERE id = %s", (blind,)).fetchone()
    assert ok is False and "trapped_t" in error


async def test_normal_jobs_still_work_as_the_run_as_role(robot):
    dsn, conn, role, su = robot
    conn.execute("CREATE TABLE public.marks (x text, who text DEFAULT current_user)")
    conn.execute("GRANT ALL ON public.marks TO PUBLIC")
    conn.execute("CREATE TABLE public.st (s text)")
    conn.execute("GRANT ALL ON public.st TO PUBLIC")
    # text with several statements = one transaction; unqualified t = robot.t (the role's search_path)
    conn.execute("SELECT schedule.create_job(jsonb_build_object('cron', '* * * * *', 'run_as', %s::text, "
                 "'commands', 'insert into t values (''one''); insert into t values (current_user || ''@'' || "
                 "current_setting(''search_path''))'))", (role,))
    # an array: one transaction each; the failing one runs onrollback
    conn.execute("SELECT schedule.create_job(jsonb_build_object('cron', '* * * * *', 'run_as', %s::text, "
                 "'commands', jsonb_build_array('insert into t values (''arr1'')', 'select 1/0'), "
                 "'onrollback', 'insert into t values (''rolled back as '' || current_user)'))", (role,))
    # next_time_statement as the role, seeing transaction_state
    chain = conn.execute(
        "SELECT schedule.create_job(jsonb_build_object('cron', '* * * * *', 'run_as', %s::text, "
        "'commands', 'select 1', 'next_time_statement', "
        "'insert into public.st values (current_user || '':'' || current_setting(''schedule.transaction_state'')) "
        "returning ''2030-01-01 00:09+00''::timestamptz'))", (role,)).fetchone()[0]
    # a job that moves its own session's search_path and plants look-alike temp objects:
    # the engine's own SQL afterwards must not notice
    conn.execute("SELECT schedule.create_job(jsonb_build_object('cron', '* * * * *', 'run_as', %s::text, "
                 "'commands', 'select set_config(''search_path'', ''robot'', false); "
                 "create temp table pg_stat_activity (pid int); create temp table cron_run (x int); "
                 "insert into t values (''planted'')'))", (role,))
    clock = FakeClock(T0)
    await run_all(dsn, clock)
    xs = sorted(r[0] for r in conn.execute("SELECT x FROM robot.t").fetchall())
    assert xs == sorted(["one", f"{role}@robot", "arr1", f"rolled back as {role}", "planted"])
    assert conn.execute("SELECT s FROM public.st").fetchall() == [(f"{role}:success",)]
    assert conn.execute("SELECT next_run, chain_state FROM schedule.cron WHERE id = %s",
                        (chain,)).fetchone() == (datetime(2030, 1, 1, 0, 9, tzinfo=timezone.utc), "chain")
    log = sorted(r[0] for r in conn.execute("SELECT status FROM schedule.get_log()").fetchall())
    assert log == ["done", "done", "done", "error"]
    # one-time jobs: params bound to $1..$n (as text), several statements, the role's identity
    p = conn.execute("SELECT schedule.submit_job('insert into public.marks (x) values ($1 || ($2::int + 1))', "
                     "params := '{\"p\", \"41\"}', run_as := %s)", (role,)).fetchone()[0]
    q = conn.execute("SELECT schedule.submit_job('insert into public.marks (x) values (''a''); "
                     "insert into public.marks (x) values (schedule.get_self_id()::text)', run_as := %s)",
                     (role,)).fetchone()[0]
    clock2 = FakeClock(datetime.now(timezone.utc) + timedelta(seconds=1))
    await run_all(dsn, clock2)
    assert conn.execute("SELECT id, is_success FROM schedule.all_job_status WHERE id IN (%s, %s) ORDER BY id",
                        (p, q)).fetchall() == [(p, True), (q, True)]
    assert sorted(conn.execute("SELECT x, who FROM public.marks").fetchall()) == sorted(
        [("p42", role), ("a", role), (str(q), role)])
    # the engine's sessions are left with their pinned search_path
    assert robot_privileges(conn, role) == (False, False, False)


async def test_resubmit_is_honoured_when_the_job_then_fails(robot):
    dsn, conn, role, su = robot
    jid = conn.execute("SELECT schedule.submit_job('insert into t values (''try''); "
                       "select schedule.resubmit(run_after := ''5''); select 1/0', "
                       "resubmit_limit := 3, run_as := %s)", (role,)).fetchone()[0]
    plain = conn.execute("SELECT schedule.submit_job('select 1/0', run_as := %s)", (role,)).fetchone()[0]
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(seconds=1))
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=clock)

    def state(i):
        return conn.execute("SELECT status, attempt, is_success, error FROM schedule.all_job_status WHERE id = %s",
                            (i,)).fetchone()

    try:
        await m.step()
        await m.drain()
        # failed, but its resubmit() request survived the rollback: queued again, error kept
        assert state(jid) == ("submitted", 1, False, "division by zero")
        assert state(plain) == ("done", 0, False, "division by zero")
        for _ in range(2):
            clock.advance(5)
            await m.step()
            await m.drain()
        assert state(jid) == ("done", 2, False, "division by zero; resubmit limit reached (3)")
        assert conn.execute("SELECT count(*) FROM robot.t").fetchone()[0] == 0  # every run rolled back
    finally:
        await m.close()


async def test_statements_that_cannot_run_in_a_function_fail_with_a_clear_error(robot):
    dsn, conn, role, su = robot
    cases = {
        "VACUUM robot.t": "VACUUM cannot run inside a transaction block",
        "COMMIT": "EXECUTE of transaction commands is not implemented",
        "insert into t values ('x'); ROLLBACK; RESET ROLE": "EXECUTE of transaction commands is not implemented",
        "CREATE DATABASE nope": "CREATE DATABASE cannot run inside a transaction block",
        "DISCARD ALL": "DISCARD ALL cannot run inside a transaction block",
    }
    ids = {text: conn.execute("SELECT schedule.submit_job(%s, run_as := %s)", (text, role)).fetchone()[0]
           for text in cases}
    await run_all(dsn, FakeClock(datetime.now(timezone.utc) + timedelta(seconds=1)))
    for text, expected in cases.items():
        ok, error = conn.execute("SELECT is_success, error FROM schedule.all_job_status WHERE id = %s",
                                 (ids[text],)).fetchone()
        assert ok is False and expected in error, (text, error)
    assert conn.execute("SELECT count(*) FROM robot.t").fetchone()[0] == 0
    assert robot_privileges(conn, role) == (False, False, False)
