"""The executor's few-round-trip path (engine/timetable/executor.py): what it must keep.

- execution_log rows of tasks run in the chain transaction: one per execution, visible to
  later tasks of the run, kept (written after the rollback, before on_error) when the chain
  fails, never written twice;
- a multi-statement command still runs with the simple protocol and reports its last tag;
- the run's txid is the chain transaction's txid_current(), the same in chain_run and in
  every execution_log row of the run;
- a task's leftovers (SET ROLE, session settings, LISTEN, temp tables, session advisory
  locks) do not reach the next run on the same worker connection.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from _timetable_support import SteppingClock, q, q1, running_engine, until

T0 = datetime(2030, 1, 1, 0, 0, 30, tzinfo=timezone.utc)


def _chain(dsn, name, **cols):
    cols = {"live": True, "run_at": "@reboot", **cols}
    names = ", ".join(["chain_name", *cols])
    return q1(dsn, f"INSERT INTO timetable.chain ({names}) VALUES ({', '.join(['%s'] * (1 + len(cols)))}) "
                   "RETURNING chain_id", (name, *cols.values()))


def _task(dsn, chain_id, order, command, **cols):
    names = ", ".join(["chain_id", "task_order", "command", *cols])
    return q1(dsn, f"INSERT INTO timetable.task ({names}) VALUES ({', '.join(['%s'] * (3 + len(cols)))}) "
                   "RETURNING task_id", (chain_id, order, command, *cols.values()))


async def _finished(dsn, chain_id, n=1):
    return await until(lambda: q1(dsn, "SELECT count(*) >= %s FROM timetable.chain_run WHERE chain_id = %s AND "
                                       "status NOT IN ('claimed', 'running')", (n, chain_id)), what="run end")


async def test_failed_chain_keeps_its_rows_and_on_error_sees_them(make_db):
    dsn = make_db(("timetable",))
    q(dsn, "CREATE TABLE seen (what text, n bigint)")
    cid = _chain(dsn, "fails",
                 on_error="INSERT INTO seen SELECT 'on_error', count(*) FROM timetable.execution_log "
                          "WHERE chain_id = current_setting('pg_timetable.current_chain_id')::bigint")
    t1 = _task(dsn, cid, 1, "CREATE TEMP TABLE x (v int); INSERT INTO x VALUES (1); INSERT INTO x VALUES (2)")
    t2 = _task(dsn, cid, 2, "INSERT INTO seen SELECT 'task 2', count(*) FROM timetable.execution_log "
                            "WHERE chain_id = current_setting('pg_timetable.current_chain_id')::bigint")
    t3 = _task(dsn, cid, 3, "SELECT 1/0")
    _task(dsn, cid, 4, "INSERT INTO seen VALUES ('never', 0)")
    async with running_engine(dsn, "fp", SteppingClock(T0)):
        await _finished(dsn, cid)
    status, txid = q(dsn, "SELECT status, txid FROM timetable.chain_run WHERE chain_id = %s", (cid,))[0]
    assert status == "failed"
    rows = q(dsn, "SELECT task_id, returncode, output, txid FROM timetable.execution_log WHERE chain_id = %s "
                  "ORDER BY last_run", (cid,))
    assert [(r[0], r[1]) for r in rows] == [(t1, 0), (t2, 0), (t3, -1)]  # once each, none lost
    assert rows[0][2] == "INSERT 0 1"  # the tag of the last statement of a multi-statement command
    assert "division by zero" in rows[2][2]
    assert {r[3] for r in rows} == {txid} and txid > 0
    # task 2 saw task 1's row inside the chain transaction; on_error saw all three after the
    # rollback; the chain's own work was rolled back
    assert q(dsn, "SELECT what, n FROM seen ORDER BY what") == [("on_error", 3)]


async def test_rows_once_and_txid_on_success_and_nothing_leaks_between_runs(make_db):
    dsn = make_db(("timetable",))
    q(dsn, "CREATE TABLE seen (run int, role text, setting text, temp bool, listening bigint, locks bigint)")
    q(dsn, "DROP ROLE IF EXISTS fp_role")
    q(dsn, "CREATE ROLE fp_role")
    q(dsn, "GRANT ALL ON seen TO fp_role")
    check = ("INSERT INTO seen SELECT {n}, current_user, current_setting('work_mem'), "
             "to_regclass('pg_temp.leftover') IS NOT NULL, (SELECT count(*) FROM pg_listening_channels()), "
             "(SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory' "
             "AND classid = 0 AND objid = 42)")
    try:
        # one cron worker: both chains run on the same worker connection, one after the other
        first = _chain(dsn, "messy")
        _task(dsn, first, 1, "SET ROLE fp_role; SET work_mem = '7MB'; CREATE TEMP TABLE leftover (v int); "
                             "LISTEN somewhere; SELECT pg_advisory_lock(42); " + check.format(n=1))
        async with running_engine(dsn, "fp", SteppingClock(T0), cron_workers=1) as sched:
            await _finished(dsn, first)
            second = _chain(dsn, "clean", live=False)
            _task(dsn, second, 1, check.format(n=2))
            await sched.start_adhoc(second)
            await _finished(dsn, second)
        got = q(dsn, "SELECT run, role, setting, temp, listening, locks FROM seen ORDER BY run")
        assert got[0] == (1, "fp_role", "7MB", True, 0, 1)  # (LISTEN takes effect at commit)
        assert got[1][1:] == ("postgres", "4MB", False, 0, 0), got
        for cid in (first, second):
            (status, txid), = q(dsn, "SELECT status, txid FROM timetable.chain_run WHERE chain_id = %s", (cid,))
            assert status == "succeeded"
            assert q(dsn, "SELECT txid FROM timetable.execution_log WHERE chain_id = %s", (cid,)) == [(txid,)]
        assert q1(dsn, "SELECT count(*) FROM timetable.active_chain") == 0
    finally:
        q(dsn, "DROP OWNED BY fp_role")
        q(dsn, "DROP ROLE fp_role")


def _claim_by_dead_backend(dsn, cid, due):
    """claim_due the firing ``due`` of chain ``cid`` on a connection that is then closed (an
    engine's control connection that goes away); returns (run_id, that backend's pid)."""
    import psycopg

    q(dsn, "UPDATE timetable.chain_state SET dirty = false, run_at = '* * * * *', next_due_at = %s "
           "WHERE chain_id = %s", (due, cid))
    version = q1(dsn, "SELECT version FROM timetable.chain_state WHERE chain_id = %s", (cid,))
    with psycopg.connect(dsn, autocommit=True) as gone:
        pid = gone.info.backend_pid
        started = gone.execute("SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()[0]
        (run_id, chain_id, got_due, status), = gone.execute(
            "SELECT * FROM timetable.claim_due('ghost', 777, %s, 16, %s, %s, %s, %s, %s, %s)",
            (started, [cid], [due], ["cron"], [due], [due.replace(minute=2)], [version])).fetchall()
    assert (chain_id, got_due, status) == (cid, due, "running")
    for _ in range(100):
        if not q1(dsn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)):
            break
        time.sleep(0.05)
    return run_id, pid


def test_a_claimed_run_of_a_dead_engine_is_reaped_and_corrected_if_it_committed_after_all(make_db):
    """claim_due starts the run: its chain_run row is 'running' from the claim on, owned by the
    claiming backend (the engine's control connection).  When that backend is gone the
    reaper ends the run as failed and marks it reaped; the firing is not claimed again; and
    if the run's chain transaction commits after all (the engine only lost its control
    connection), close_runs still records the truth, once."""
    dsn = make_db(("timetable",))
    cid = _chain(dsn, "claimed", run_at="* * * * *")
    due = datetime(2030, 1, 1, 0, 1, tzinfo=timezone.utc)
    run_id, dead_pid = _claim_by_dead_backend(dsn, cid, due)
    assert q(dsn, "SELECT last_run_id, last_status FROM timetable.chain_state WHERE chain_id = %s",
             (cid,)) == [(run_id, "running")]
    version = q1(dsn, "SELECT version FROM timetable.chain_state WHERE chain_id = %s", (cid,))
    assert q(dsn, "SELECT * FROM timetable.claim_due('other', 778, now(), 16, %s, %s, %s, %s, %s, %s)",
             ([cid], [due], ["cron"], [due], [due.replace(minute=2)], [version])) == []  # next_due_at moved on
    reaped = q(dsn, "SELECT chain_id, reason FROM timetable.reap_dead_runs()")
    assert reaped == [(cid, f"engine ghost (session 777) lost its database session (backend {dead_pid}) while "
                            "the run was running")]
    assert q(dsn, "SELECT status, due_at, trigger, client_name, reaped FROM timetable.chain_run") == [
        ("failed", due, "cron", "ghost", True)]
    assert q1(dsn, "SELECT last_status FROM timetable.chain_state WHERE chain_id = %s", (cid,)) == "failed"
    end = ("SELECT timetable.close_runs(%s, ARRAY['succeeded'], ARRAY[NULL], ARRAY[%s]::timestamptz[], "
           "ARRAY[%s]::timestamptz[], ARRAY[42]::bigint[], ARRAY[NULL]::timestamptz[])")
    assert q1(dsn, end, ([run_id], due, due)) == 1
    status, reason, txid, flag = q(dsn, "SELECT status, reason, txid, reaped FROM timetable.chain_run")[0]
    assert (status, txid, flag) == ("succeeded", 42, False)
    assert reason.startswith("its chain transaction committed after the reaper had recorded: engine ghost")
    assert q1(dsn, "SELECT last_status FROM timetable.chain_state WHERE chain_id = %s", (cid,)) == "succeeded"
    assert q1(dsn, end, ([run_id], due, due)) == 0  # written twice: nothing changes


@pytest.mark.parametrize("committed", [True, False])
def test_the_reaper_reads_the_outcome_of_a_dead_engines_run_from_its_execution_log_rows(make_db, committed):
    """The engine died after its chain transaction ended but before the log writer recorded
    the run's end: the reaper records 'succeeded' when the chain transaction (whose txid the
    run's execution_log rows carry) committed, 'failed' when it rolled back."""
    import psycopg

    dsn = make_db(("timetable",))
    cid = _chain(dsn, "ended", run_at="* * * * *")
    due = datetime(2030, 1, 1, 0, 1, tzinfo=timezone.utc)
    run_id, dead_pid = _claim_by_dead_backend(dsn, cid, due)
    with psycopg.connect(dsn) as chain_tx:  # the run's chain transaction, with its log row
        txid = chain_tx.execute("SELECT txid_current()").fetchone()[0]
        chain_tx.execute("INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, pid, "
                         "returncode, kind, command, client_name, run_id) "
                         "VALUES (%s, 1, %s, now(), now(), 777, 0, 'SQL', 'SELECT 1', 'ghost', %s)",
                         (cid, txid, run_id))
        if committed:
            chain_tx.commit()
        else:  # a failed run's rows are written again after the ROLLBACK, with the same txid
            chain_tx.rollback()
            chain_tx.execute("INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, "
                             "pid, returncode, kind, command, client_name, run_id) "
                             "VALUES (%s, 1, %s, now(), now(), 777, 1, 'SQL', 'SELECT 1', 'ghost', %s)",
                             (cid, txid, run_id))
            chain_tx.commit()
    (reaped_run, reason), = q(dsn, "SELECT run_id, reason FROM timetable.reap_dead_runs()")
    assert reaped_run == run_id
    status, got_txid = q(dsn, "SELECT status, txid FROM timetable.chain_run")[0]
    if committed:
        assert (status, got_txid) == ("succeeded", txid)
        assert reason == (f"engine ghost (session 777) lost its database session (backend {dead_pid}) after the "
                          "run committed; recorded by reap_dead_runs")
    else:
        assert status == "failed" and "while the run was running" in reason


def test_the_claim_records_runs_over_max_instances_as_skipped(make_db):
    """Several firings of one chain in one claim (catch-up, run_all) with max_instances 2 and
    one run already open: one more starts, the others are recorded as skipped with why."""
    dsn = make_db(("timetable",))
    cid = _chain(dsn, "limited", run_at="* * * * *")
    q(dsn, "UPDATE timetable.chain SET max_instances = 2 WHERE chain_id = %s", (cid,))
    t0 = datetime(2030, 1, 1, 0, 0, tzinfo=timezone.utc)
    q(dsn, "INSERT INTO timetable.chain_run (chain_id, due_at, trigger, client_name, session_id, status, "
           "started_at) VALUES (%s, %s, 'cron', 'x', 9, 'running', %s)", (cid, t0, t0))
    dues = [t0.replace(minute=m) for m in (1, 2, 3)]
    q(dsn, "UPDATE timetable.chain_state SET dirty = false, run_at = '* * * * *', next_due_at = %s", (dues[0],))
    version = q1(dsn, "SELECT version FROM timetable.chain_state WHERE chain_id = %s", (cid,))
    claimed = q(dsn, "SELECT due_at, status FROM timetable.claim_due('me', 1, now(), 16, %s, %s, %s, %s, %s, %s) "
                     "ORDER BY due_at", ([cid] * 3, dues, ["missed"] * 3, [dues[0]] * 3, [t0.replace(minute=4)] * 3,
                                         [version] * 3))
    assert claimed == [(dues[0], "running"), (dues[1], "skipped"), (dues[2], "skipped")]
    # the skipped firings of one chain share one aggregate row: count and span
    assert q(dsn, "SELECT due_at, last_due_at, skipped_firings, reason, finished_at >= started_at "
                  "FROM timetable.chain_run WHERE status = 'skipped'") == [
        (dues[1], dues[2], 2, "max_instances (2) reached: 2 run(s) in progress; 2 firing(s) skipped", True)]
    assert q1(dsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,)) == t0.replace(minute=4)


async def test_a_run_records_when_it_really_started(make_db):
    """The claim records a run's planned start (its due time); the end records the real one,
    for a success (close_runs, batched by the log writer) and a failure (finish_run): here
    two runs wait behind a slow one for the only worker while the clock moves on."""
    dsn = make_db(("timetable",))
    slow = _chain(dsn, "slow", run_at="* * * * *")
    _task(dsn, slow, 1, "SELECT pg_sleep(1)")
    ok = _chain(dsn, "ok", run_at="* * * * *")
    _task(dsn, ok, 1, "SELECT 1")
    bad = _chain(dsn, "bad", run_at="* * * * *")
    _task(dsn, bad, 1, "SELECT 1/0")
    clock = SteppingClock(T0)
    due = T0.replace(minute=1, second=0)
    later = due.replace(second=10)
    async with running_engine(dsn, "fp", clock, cron_workers=1):
        await until(lambda: q1(dsn, "SELECT count(*) FROM timetable.chain_state WHERE next_due_at = %s", (due,)) == 3,
                    what="due times")
        clock.set(due)
        await until(lambda: q1(dsn, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(1)%%' "
                                    "AND state = 'active' AND pid <> pg_backend_pid()"), what="the slow run")
        assert q(dsn, "SELECT status, started_at FROM timetable.chain_run WHERE chain_id = %s", (ok,)) == [
            ("running", due)]  # claimed and waiting: the planned start
        clock.set(later)
        for cid in (slow, ok, bad):
            await _finished(dsn, cid)
    got = dict((c, (s, t)) for c, s, t in q(dsn, "SELECT chain_id, status, started_at FROM timetable.chain_run"))
    assert got == {slow: ("succeeded", due), ok: ("succeeded", later), bad: ("failed", later)}
