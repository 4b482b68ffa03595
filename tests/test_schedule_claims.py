"""schedule manager, how runs are handed out: one claimer claims a batch of due runs for
the idle executors (one lock and one statement per batch), within max_workers and each
job's max_instances; after every run the executor's session is reset as by DISCARD ALL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from engine.clock import FakeClock
from engine.db import ConnSettings
from engine.schedule.manager import DatabaseManager

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def sdb(make_db):
    dsn = make_db(("schedule",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT schedule.enable()")
        conn.execute("CREATE TABLE t (job int, pid int, t0 timestamptz, t1 timestamptz, seen jsonb)")
        conn.execute("GRANT ALL ON t TO PUBLIC")
        yield dsn, conn


async def test_a_batch_never_gives_one_job_more_runs_than_max_instances(sdb):
    dsn, conn = sdb
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET schedule.max_workers = 8')
    body = ("insert into t (job, pid, t0) values (1, pg_backend_pid(), clock_timestamp()); select pg_sleep(0.2); "
            "update t set t1 = clock_timestamp() where t1 is null and pid = pg_backend_pid()")
    jid = conn.execute("SELECT schedule.create_job('0 0 1 1 *', %s)", (body,)).fetchone()[0]
    other = conn.execute("SELECT schedule.create_job('0 0 1 1 *', 'insert into t (job, t0) values (2, clock_timestamp())')").fetchone()[0]
    # four due runs of one job (max_instances 1) and one of another, all due at once
    for k in range(4):
        conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at) VALUES (%s, 'primary', %s)",
                     (jid, T0 - timedelta(seconds=10 - k)))
    conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at) VALUES (%s, 'primary', %s)",
                 (other, T0 - timedelta(seconds=5)))
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=FakeClock(T0))
    try:
        await m.step()
        await m.drain()
    finally:
        await m.close()
    spans = conn.execute("SELECT t0, t1 FROM t WHERE job = 1 ORDER BY t0").fetchall()
    assert len(spans) == 4 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # one at a time
    # the other job was not held back behind them: it ran while the first run was running
    assert conn.execute("SELECT t0 FROM t WHERE job = 2").fetchone()[0] < spans[0][1]
    assert conn.execute("SELECT count(*) FROM schedule.cron_run WHERE state = 'done'").fetchone()[0] == 5


async def test_the_next_job_on_a_session_finds_nothing_the_previous_one_left(sdb):
    dsn, conn = sdb
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET schedule.max_workers = 1')
    conn.execute("CREATE SEQUENCE s")
    conn.execute("GRANT ALL ON SEQUENCE s TO PUBLIC")
    leave = ["LISTEN pgtt_leftover", "SELECT pg_advisory_lock(4242)", "PREPARE leftover AS SELECT 1",
             "CREATE TEMP TABLE leftover (x int)", "SET work_mem = '7MB'", "SELECT nextval('s')",
             "insert into t (job, pid) values (1, pg_backend_pid())"]
    look = """insert into t (job, pid, seen) select 2, pg_backend_pid(), jsonb_build_object(
        'listen', (select count(*) from pg_listening_channels()),
        'locks', (select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()),
        'prepared', (select count(*) from pg_prepared_statements),
        'temp', (select count(*) from pg_class where relnamespace = pg_my_temp_schema()),
        'work_mem', current_setting('work_mem'),
        'lastval', (select count(*) from pg_sequences where false))"""
    for k, body in enumerate([leave, [look]]):
        conn.execute("SELECT schedule.create_job(%s::jsonb)",
                     (psycopg.types.json.Json({"cron": "0 0 1 1 *", "commands": body, "name": f"j{k}"}),))
    for k, name in enumerate(["j0", "j1"]):
        conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at) "
                     "SELECT id, 'primary', %s FROM schedule.cron WHERE name = %s", (T0 - timedelta(seconds=9 - k), name))
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=FakeClock(T0))
    try:
        await m.step()
        await m.drain()
    finally:
        await m.close()
    rows = conn.execute("SELECT job, pid, seen FROM t ORDER BY job").fetchall()
    assert [r[0] for r in rows] == [1, 2] and rows[0][1] == rows[1][1]  # same executor session
    assert rows[1][2] == {"listen": 0, "locks": 0, "prepared": 0, "temp": 0, "work_mem": "4MB", "lastval": 0}


async def test_runs_are_planned_ahead_and_start_when_due(sdb):
    dsn, conn = sdb
    clock = FakeClock(T0)
    jid = conn.execute("SELECT schedule.create_job('* * * * *', 'insert into t (job, t0) values (1, now())')").fetchone()[0]
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=clock)
    try:
        await m.step()
        clock.advance(59)  # one second before the firing: its run is planned, not started
        await m.step()
        await m.drain()
        assert conn.execute("SELECT scheduled_at, state FROM schedule.cron_run WHERE cron = %s", (jid,)).fetchall() \
            == [(T0 + timedelta(minutes=1), "planned")]
        assert await m.next_wake() == T0 + timedelta(minutes=1)  # the loop wakes when it is due
        clock.advance(1)
        await m.step()
        await m.drain()
        assert conn.execute("SELECT scheduled_at, state FROM schedule.cron_run WHERE cron = %s", (jid,)).fetchall() \
            == [(T0 + timedelta(minutes=1), "done")]
    finally:
        await m.close()


async def test_a_stop_recorded_before_the_run_starts_is_honoured(sdb):
    """stop_job cancels the job's backend; a one-time job claimed but not yet started is idle
    there, so the cancel alone would be lost and the job would run in full. The executor checks
    the recorded stop before it starts the job's statements."""
    from tests.test_schedule_manager import manager, rows

    dsn, conn = sdb
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(seconds=2))
    jid = conn.execute("SELECT schedule.submit_job('select pg_sleep(30)')").fetchone()[0]
    # stop_job right after the claim committed, before the job's statements began: what it
    # leaves behind when its cancel reached an idle backend (a trigger plays that moment)
    conn.execute("""
        CREATE FUNCTION public.stop_at_claim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'processing' AND OLD.status <> 'processing' THEN
                NEW.stop_requested := 'stopped by tester with schedule.stop_job';
                NEW.canceled := true;
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER zz_stop_at_claim BEFORE UPDATE ON schedule.at_job
            FOR EACH ROW EXECUTE FUNCTION public.stop_at_claim()""")
    m = manager(dsn, clock)
    try:
        await m.step()
        await m.drain(timeout=10)
        st = rows(conn, "SELECT status, is_success, error FROM schedule.job_status WHERE id = %s", jid)
        assert st[0][:2] == ("done", False) and "stopped by tester" in st[0][2]
    finally:
        await m.close()


async def test_runs_already_due_do_not_wake_the_pass(sdb):
    """Due runs are the claimer's (executors that finish claim again, and every pass kicks it):
    if they woke the pass, it would spin for as long as a backlog lasts."""
    dsn, conn = sdb
    jid = conn.execute("SELECT schedule.create_job('0 0 1 1 *', 'select 1')").fetchone()[0]
    conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at) VALUES (%s, 'primary', %s)",
                 (jid, T0 - timedelta(seconds=10)))
    later = conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at) VALUES (%s, 'primary', %s) "
                         "RETURNING scheduled_at", (jid, T0 + timedelta(seconds=30))).fetchone()[0]
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=FakeClock(T0))
    try:
        await m.open()
        assert await m.next_wake() == later  # not the run due 10 s ago
    finally:
        await m.close()


async def test_new_executor_connections_are_warmed_without_a_trace(sdb, caplog):
    """Executor connections opened ahead of a firing run an empty run as the engine's role
    (so the first real run does not pay for planning): it changes nothing and leaves nothing
    but the session's temporary schema, which it exists to create."""
    dsn, conn = sdb
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET schedule.max_workers = 3')
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=FakeClock(T0))
    try:
        await m.open()
        await m.read_state()
        await m.prewarm("cron", 3)
        assert len(m._idle["cron"]) == 3
        for ex in m._idle["cron"]:
            cur = await ex.execute("SELECT current_user = session_user, coalesce(current_setting('schedule.job_id', "
                                   "true), ''), (SELECT count(*) FROM pg_catalog.pg_proc "
                                   "WHERE pronamespace = pg_catalog.pg_my_temp_schema()), "
                                   "pg_catalog.pg_my_temp_schema() <> 0")
            assert await cur.fetchone() == (True, "", 0, True)  # warmed: its temporary schema exists
        assert "warm-up failed" not in caplog.text
        assert conn.execute("SELECT count(*) FROM schedule.cron_run").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM schedule.get_log()").fetchone()[0] == 0
    finally:
        await m.close()


async def test_executor_connections_are_replaced_after_so_many_runs(sdb, monkeypatch):
    """A backend keeps a little of every per-run sandbox function until it exits, so an
    executor connection is retired after EXECUTOR_RUNS runs and a fresh one takes over; no
    run is lost on the way (scheduled runs and one-time jobs)."""
    from engine.schedule import manager as manager_module

    dsn, conn = sdb
    monkeypatch.setattr(manager_module, "EXECUTOR_RUNS", 3)
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET schedule.max_workers = 1')
    conn.execute(f'ALTER DATABASE "{conn.info.dbname}" SET schedule.max_parallel_workers = 1')
    jid = conn.execute("SELECT schedule.create_job('0 0 1 1 *', "
                       "'insert into t (job, pid) values (1, pg_backend_pid())')").fetchone()[0]
    for k in range(8):
        conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at) VALUES (%s, 'primary', %s)",
                     (jid, T0 - timedelta(seconds=20 - k)))
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=FakeClock(T0))
    try:
        await m.step()
        await m.drain()
        for _ in range(8):  # the runs left when a connection retired: the next passes take them
            await m.step()
            await m.drain()
    finally:
        await m.close()
    pids = [r[0] for r in conn.execute("SELECT pid FROM t WHERE job = 1 ORDER BY t0 NULLS LAST, pid").fetchall()]
    assert len(pids) == 8
    assert conn.execute("SELECT count(*) FROM schedule.cron_run WHERE state = 'done'").fetchone()[0] == 8
    per_pid = sorted(pids.count(p) for p in set(pids))
    assert max(per_pid) <= 3 and len(per_pid) >= 3
    # one-time jobs, on their own executors
    ids = [conn.execute("SELECT schedule.submit_job('insert into t (job, pid) values (2, pg_backend_pid())')")
           .fetchone()[0] for _ in range(5)]
    clock = FakeClock(datetime.now(timezone.utc) + timedelta(seconds=1))
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=clock)
    try:
        for _ in range(6):
            await m.step()
            await m.drain()
    finally:
        await m.close()
    assert conn.execute("SELECT count(*) FROM schedule.all_job_status WHERE id = ANY(%s) AND is_success",
                        (ids,)).fetchone()[0] == 5
    at_pids = [r[0] for r in conn.execute("SELECT pid FROM t WHERE job = 2").fetchall()]
    assert len(at_pids) == 5 and max(at_pids.count(p) for p in set(at_pids)) <= 3


def test_a_run_leaves_no_compiled_function_in_the_executor_backend(sdb):
    """A backend keeps every PL/pgSQL function it compiled, dropped or not, with its plans
    (~30-100 kB a run, and every later invalidation walks them): a run without params uses an
    SQL-language sandbox function that runs the job through one permanent function."""
    dsn, conn = sdb
    conn.execute("CREATE ROLE pgtt_ctx_robot")
    try:
        conn.execute("GRANT INSERT ON t TO pgtt_ctx_robot")
        conn.prepare_threshold = None  # the session reset deallocates prepared statements
        for _ in range(3):
            conn.execute("SELECT schedule._run_cron(-1, 1, 'pgtt_ctx_robot', "
                         "ARRAY['insert into public.t (job) values (3)'], 'public', NULL)")
            conn.execute("SELECT schedule._reset_session()")
        assert conn.execute("SELECT count(*) FROM public.t WHERE job = 3").fetchone()[0] == 3
        kept = conn.execute("SELECT count(*) FROM pg_catalog.pg_backend_memory_contexts "
                            "WHERE name = 'PL/pgSQL function' AND ident LIKE '%%pgtt_job%%'").fetchone()[0]
        assert kept == 0
    finally:
        conn.execute("SELECT pg_catalog.set_config('search_path', 'public', false)")
        conn.execute("DROP OWNED BY pgtt_ctx_robot")
        conn.execute("DROP ROLE pgtt_ctx_robot")


async def test_a_run_that_fell_due_during_the_pass_wakes_the_next_one(sdb):
    """The pass dispatched what was due at its start; a run due later, even by the time the
    pass ends, must still wake the next pass (not wait for the poll)."""
    dsn, conn = sdb
    clock = FakeClock(T0)
    jid = conn.execute("SELECT schedule.create_job('0 0 1 1 *', 'select 1')").fetchone()[0]
    m = DatabaseManager(ConnSettings(dsn=dsn), clock=clock)
    try:
        await m.step()
        await m.drain()
        due = conn.execute("INSERT INTO schedule.cron_run (cron, node, scheduled_at) VALUES (%s, 'primary', %s) "
                           "RETURNING scheduled_at", (jid, T0 + timedelta(milliseconds=500))).fetchone()[0]
        clock.advance(1)  # the pass took a second
        assert await m.next_wake() == due
    finally:
        await m.close()
