"""Runs under real operations (issue #13): missed firings after downtime follow the policy
(stepped clock and a real outage), a killed engine takes its programs with it, the
reaper's log says what it recorded, skipped firings are aggregated."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from _timetable_support import SteppingClock, q, q1, running_engine, until
from engine.clock import SystemClock

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2030, 1, 1, 0, 0, 30, 500000, tzinfo=timezone.utc)


@pytest.fixture
def tdsn(make_db):
    dsn = make_db(("timetable",))
    q(dsn, "CREATE TABLE out (chain text, at timestamptz DEFAULT clock_timestamp())")
    return dsn


def _chain(dsn, name, run_at, policy=None, max_instances=None, command="INSERT INTO out (chain) VALUES ('x')"):
    cid = q1(dsn, "INSERT INTO timetable.chain (chain_name, run_at, live, max_instances) VALUES (%s, %s, true, %s) "
                  "RETURNING chain_id", (name, run_at, max_instances))
    if policy:
        q(dsn, "INSERT INTO timetable.chain_option (chain_id, missed_runs) VALUES (%s, %s)", (cid, policy))
    q(dsn, "INSERT INTO timetable.task (chain_id, task_order, command) VALUES (%s, 1, %s)", (cid, command))
    return cid


def _runs(dsn, cid):
    return q(dsn, "SELECT status, trigger, due_at, coalesce(skipped_firings, 1) FROM timetable.chain_run "
                  "WHERE chain_id = %s ORDER BY due_at", (cid,))


def _missed_log(dsn, cid):
    return q(dsn, "SELECT message, message_data FROM timetable.log WHERE message LIKE %s ORDER BY ts",
             (f"%missed firing(s) of chain {cid}:%",))


async def _down_and_up(dsn, cid, clock, downtime: timedelta, **opts):
    """An engine sees the chain armed, stops; the clock moves ``downtime``; an engine starts
    again and claims what is due; returns the runs (all ended)."""
    async with running_engine(dsn, "n1", clock, **opts):
        await until(lambda: q1(dsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,)))
    clock.advance(downtime)
    async with running_engine(dsn, "n1", clock, **opts):
        await until(lambda: q1(dsn, "SELECT next_due_at > %s FROM timetable.chain_state WHERE chain_id = %s",
                               (clock.now(), cid)), what="claimed")
        await until(lambda: not q1(dsn, "SELECT count(*) FROM timetable.chain_run WHERE chain_id = %s "
                                        "AND status IN ('claimed', 'running')", (cid,)), what="runs ended")
    return _runs(dsn, cid)


@pytest.mark.parametrize("policy", [None, "run_once", "skip"])
async def test_eight_seconds_down_every_second_chain_runs_once_and_says_so(tdsn, policy):
    """8 s of downtime, a ``* * * * * *`` chain: 7 firings missed (all within the grace of
    10 s) and the current one.  run_once (the default) and skip: one run, the on-time
    firing; the log line says what was done (it said "running 0" while 10 ran at once)."""
    cid = _chain(tdsn, "every-second", "* * * * * *", policy)
    runs = await _down_and_up(tdsn, cid, SteppingClock(T0), timedelta(seconds=8))
    current = T0.replace(second=38, microsecond=0)
    assert runs == [("succeeded", "cron", current, 1)]
    (msg, data), = _missed_log(tdsn, cid)
    run_id = q1(tdsn, "SELECT run_id FROM timetable.chain_run WHERE chain_id = %s", (cid,))
    if policy == "skip":
        assert msg == f"7 missed firing(s) of chain {cid}: policy skip: none run"
    else:
        assert msg == (f"7 missed firing(s) of chain {cid}: policy run_once: no separate catch-up: the on-time "
                       f"firing due {current.isoformat()} runs for them (run {run_id})")
    assert (data["missed"], data["first_missed"], data["last_missed"]) == (
        7, T0.replace(second=31, microsecond=0).isoformat(), T0.replace(second=37, microsecond=0).isoformat())


async def test_sixty_six_seconds_down_run_once_runs_once(tdsn):
    cid = _chain(tdsn, "every-second", "* * * * * *")
    runs = await _down_and_up(tdsn, cid, SteppingClock(T0), timedelta(seconds=66))
    assert runs == [("succeeded", "cron", datetime(2030, 1, 1, 0, 1, 36, tzinfo=timezone.utc), 1)]
    assert _missed_log(tdsn, cid)[0][0].startswith(f"65 missed firing(s) of chain {cid}: policy run_once: "
                                                   "no separate catch-up")


async def test_run_all_respects_max_instances_and_its_bound(tdsn):
    """run_all claims each missed firing, oldest first, at most missed_run_all_limit; the
    starts over max_instances are recorded as skipped (one aggregate row); the log line
    gives each number."""
    cid = _chain(tdsn, "all", "* * * * * *", "run_all", max_instances=3, command="SELECT pg_sleep(0.3)")
    runs = await _down_and_up(tdsn, cid, SteppingClock(T0), timedelta(seconds=66), missed_run_all_limit=20)
    started = [r for r in runs if r[0] == "succeeded"]
    skipped = [r for r in runs if r[0] == "skipped"]
    assert [r[1] for r in started] == ["missed"] * 3
    assert [r[2].second for r in started] == [31, 32, 33]  # the oldest missed firings first
    # 17 missed firings over max_instances and the on-time one: one row with the count
    assert [(r[1], r[2].second, r[3]) for r in skipped] == [("missed", 34, 18)]
    msg = _missed_log(tdsn, cid)[0][0]
    assert msg == (f"65 missed firing(s) of chain {cid}: policy run_all: 3 run(s) started, 17 skipped "
                   "(max_instances reached), 45 not run (over the bound of missed_run_all_limit = 20)")


async def test_a_long_backlog_is_counted_not_enumerated(tdsn):
    """Two hours down, an @every 1 second chain: the 7,199 missed firings are counted (not
    claimed one by one), run_once runs the current firing only."""
    cid = _chain(tdsn, "interval", "@every 1 second")
    clock = SteppingClock(T0)
    async with running_engine(tdsn, "n1", clock):
        await until(lambda: _runs(tdsn, cid) and not q1(tdsn, "SELECT count(*) FROM timetable.chain_run "
                                                             "WHERE status = 'running'"), what="first run")
    first_due = q1(tdsn, "SELECT next_due_at FROM timetable.chain_state WHERE chain_id = %s", (cid,))
    clock.advance(timedelta(hours=2))
    async with running_engine(tdsn, "n1", clock):
        await until(lambda: len(_runs(tdsn, cid)) == 2 and _runs(tdsn, cid)[1][0] == "succeeded", what="catch-up")
    assert _runs(tdsn, cid)[1][1:] == ("every", first_due + timedelta(seconds=7199), 1)
    (msg, data), = _missed_log(tdsn, cid)
    assert msg.startswith(f"7199 missed firing(s) of chain {cid}: policy run_once: no separate catch-up")
    assert data["last_missed"] == (first_due + timedelta(seconds=7198)).isoformat()


async def test_real_outage_every_second_chain_gets_one_catch_up(tdsn):
    """The engine really stops for 4 s (a system clock): after the restart the chain runs once
    for the whole outage, then every second again; never two runs for one second."""
    cid = _chain(tdsn, "every-second", "* * * * * *")
    clock = SystemClock()
    async with running_engine(tdsn, "n1", clock):
        await until(lambda: len(_runs(tdsn, cid)) >= 2, what="runs")
    stopped = datetime.now(timezone.utc)
    last_before = max(r[2] for r in _runs(tdsn, cid))
    await asyncio.sleep(4)
    restarted = datetime.now(timezone.utc)
    async with running_engine(tdsn, "n1", clock):
        await asyncio.sleep(1.6)
    runs = _runs(tdsn, cid)
    in_outage = [r for r in runs if last_before < r[2] <= restarted]
    assert len(in_outage) == 1, (stopped, restarted, runs)
    assert all(r[0] == "succeeded" and r[3] == 1 for r in runs)
    assert len({r[2] for r in runs}) == len(runs)
    assert len([r for r in runs if r[2] > restarted]) >= 1  # and on schedule again
    assert "policy run_once: no separate catch-up" in _missed_log(tdsn, cid)[0][0]


# --- skipped firings ------------------------------------------------------------------------

def test_skipped_firings_of_a_chain_share_one_row_per_minute(tdsn):
    """claim_due: the skipped firings of a chain in the same minute are one row (count, first
    and last due time); after a minute, a new row; finished_at never before started_at."""
    cid = _chain(tdsn, "full", "* * * * *", max_instances=1)
    t = datetime(2030, 1, 1, 0, 0, tzinfo=timezone.utc)
    with psycopg.connect(tdsn, autocommit=True) as c:
        c.execute("INSERT INTO timetable.chain_run (chain_id, due_at, trigger, client_name, session_id, status, "
                  "started_at) VALUES (%s, %s, 'cron', 'x', 9, 'running', %s)", (cid, t, t))

        def claim(minutes):
            dues = [t.replace(minute=m) for m in minutes]
            c.execute("UPDATE timetable.chain_state SET dirty = false, run_at = '* * * * *', next_due_at = %s "
                      "WHERE chain_id = %s", (dues[0], cid))
            ver = c.execute("SELECT version FROM timetable.chain_state WHERE chain_id = %s", (cid,)).fetchone()[0]
            return c.execute("SELECT run_id, status FROM timetable.claim_due('me', 1, now(), 16, %s, %s, %s, %s, "
                             "%s, %s)", ([cid] * len(dues), dues, ["cron"] * len(dues), [dues[0]] * len(dues),
                                         [dues[-1] + timedelta(minutes=1)] * len(dues),
                                         [ver] * len(dues))).fetchall()

        first = claim([1, 2, 3])
        assert {s for _, s in first} == {"skipped"} and len({r for r, _ in first}) == 1
        assert {r for r, _ in claim([4])} == {first[0][0]}  # merged
        rows = lambda: c.execute(  # noqa: E731
            "SELECT extract(minute FROM due_at), extract(minute FROM last_due_at), skipped_firings, reason, "
            "finished_at >= started_at FROM timetable.chain_run WHERE status = 'skipped' ORDER BY run_id").fetchall()
        assert rows() == [(1, 4, 4, "max_instances (1) reached: 1 run(s) in progress; 4 firing(s) skipped", True)]
        c.execute("UPDATE timetable.chain_run SET started_at = started_at - interval '61 seconds', "
                  "finished_at = finished_at - interval '61 seconds' WHERE status = 'skipped'")
        claim([5, 6])
        assert [r[:3] for r in rows()] == [(1, 4, 4), (5, 6, 2)]
        assert c.execute("SELECT sum(skipped_firings) FROM timetable.chain_run").fetchone()[0] == 6


async def test_a_chain_at_max_instances_writes_one_log_row_per_minute(tdsn):
    """A chain whose one slot stays taken, firing every second for 150 s: one chain_run row
    and at most one timetable.log row per minute, carrying the counts; none lost."""
    cid = _chain(tdsn, "busy", "@every 1 second", max_instances=1)
    clock = SteppingClock(T0)
    with psycopg.connect(tdsn, autocommit=True) as holder:  # a live backend owns the open run
        pid, started = holder.execute("SELECT pg_backend_pid(), backend_start FROM pg_stat_activity "
                                      "WHERE pid = pg_backend_pid()").fetchone()
        holder.execute("INSERT INTO timetable.chain_run (chain_id, due_at, trigger, client_name, session_id, status, "
                       "started_at, backend_pid, backend_start) VALUES (%s, NULL, 'manual', 'x', 9, 'running', "
                       "now(), %s, %s)", (cid, pid, started))
        async with running_engine(tdsn, "n1", clock) as eng:
            await until(lambda: eng.stats["skipped"] >= 1, what="a skipped firing")
            for i in range(150):  # each firing claimed before the next (later ones would be missed ones)
                clock.advance(1)
                await until(lambda: eng.stats["skipped"] >= i + 2, interval=0.005, what=f"firing {i + 2} skipped")
            assert eng.stats["missed"] == 0
        skipped = eng.stats["skipped"]
    rows = q(tdsn, "SELECT skipped_firings, last_due_at - due_at, finished_at >= started_at FROM timetable.chain_run "
                   "WHERE status = 'skipped'")
    assert len(rows) == 1 and rows[0][0] == skipped and rows[0][2]  # a real minute has not passed
    assert rows[0][1] == timedelta(seconds=skipped - 1)
    logs = q(tdsn, "SELECT message, message_data FROM timetable.log WHERE message LIKE 'Cannot proceed%%'")
    assert 2 <= len(logs) <= 4  # the first at once, then one per (fake) minute, the rest at shutdown
    assert sum(d["skipped"] for _, d in logs) == skipped
    assert logs[0][0] == (f"Cannot proceed: max_instances reached; 1 firing(s) of chain {cid} skipped, "
                          f"due {logs[0][1]['first_due']}")


# --- the reaper's log --------------------------------------------------------------------------

def _dead_run(dsn, cid, committed: bool):
    """A run claimed by an engine whose control connection is gone, its chain transaction
    committed (or not); returns the run id."""
    due = datetime(2030, 1, 1, 0, 1, tzinfo=timezone.utc)
    q(dsn, "UPDATE timetable.chain_state SET dirty = false, run_at = '* * * * *', next_due_at = %s "
           "WHERE chain_id = %s", (due, cid))
    version = q1(dsn, "SELECT version FROM timetable.chain_state WHERE chain_id = %s", (cid,))
    with psycopg.connect(dsn, autocommit=True) as gone:
        pid = gone.info.backend_pid
        started = gone.execute("SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()[0]
        run_id = gone.execute("SELECT run_id FROM timetable.claim_due('ghost', 777, %s, 16, %s, %s, %s, %s, %s, %s)",
                              (started, [cid], [due], ["cron"], [due], [due.replace(minute=2)], [version])
                              ).fetchone()[0]
    with psycopg.connect(dsn) as tx:
        txid = tx.execute("SELECT txid_current()").fetchone()[0]
        tx.execute("INSERT INTO timetable.execution_log (chain_id, task_id, txid, last_run, finished, pid, returncode, "
                   "kind, command, client_name, run_id) VALUES (%s, 1, %s, now(), now(), 777, 0, 'SQL', 'SELECT 1', "
                   "'ghost', %s)", (cid, txid, run_id))
        tx.commit() if committed else tx.rollback()
    for _ in range(100):
        if not q1(dsn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)):
            break
        time.sleep(0.05)
    return run_id


@pytest.mark.parametrize("at_start", [True, False])
async def test_the_reaper_logs_what_it_recorded_at_start_up_and_later(tdsn, at_start):
    ok = _chain(tdsn, "committed", "0 0 1 1 *")
    bad = _chain(tdsn, "rolled-back", "0 0 1 1 *")
    clock = SteppingClock(T0)

    if at_start:  # the runs' engine died while no engine was running: the next one reaps at start-up
        ok_run, bad_run = _dead_run(tdsn, ok, True), _dead_run(tdsn, bad, False)
    async with running_engine(tdsn, "n1", clock):
        if not at_start:
            ok_run, bad_run = _dead_run(tdsn, ok, True), _dead_run(tdsn, bad, False)
        await until(lambda: q1(tdsn, "SELECT count(*) FROM timetable.chain_run WHERE reaped") == 2, what="reaped")
        await until(lambda: q1(tdsn, "SELECT count(*) FROM timetable.log WHERE message LIKE 'run %%'") == 2,
                    what="the reaper's log rows")
    assert q(tdsn, "SELECT chain_id, status, finished_at >= started_at FROM timetable.chain_run ORDER BY chain_id") == [
        (ok, "succeeded", True), (bad, "failed", True)]
    logs = q(tdsn, "SELECT log_level::text, message, message_data->>'run' FROM timetable.log "
                   "WHERE message LIKE 'run %%' ORDER BY message_data->>'chain'")
    assert [(lvl, run) for lvl, _, run in logs] == [("INFO", str(ok_run)), ("ERROR", str(bad_run))]
    assert logs[0][1].startswith("run recorded as succeeded (its chain transaction had committed): engine ghost")
    assert logs[1][1].startswith("run marked failed: engine ghost") and "while the run was running" in logs[1][1]


# --- programs die with their engine --------------------------------------------------------------

ENGINE_SCRIPT = """
import asyncio, sys
sys.path.insert(0, {root!r})
from engine.clock import SystemClock
from engine.db import ConnSettings
from engine.timetable.options import TimetableOptions
from engine.timetable.scheduler import Scheduler

async def main():
    s = Scheduler(ConnSettings(dsn=sys.argv[1]), TimetableOptions(client_name=sys.argv[2], poll_seconds=0.2,
                  reap_seconds=0.5).validate(), SystemClock())
    await s.run(asyncio.Event())
asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
@pytest.mark.parametrize("guardian_killed", [False, True])
async def test_kill_9_of_the_engine_kills_its_programs(tdsn, tmp_path, guardian_killed):
    """A PROGRAM task (bash, which starts a sleep of its own) runs; the engine gets kill -9:
    within a second both the program and its child are gone (the guardian kills the group),
    nothing of it finishes, and the next engine records the run as failed.  With the
    guardian killed first, the kernel's parent-death signal still kills the program."""
    script = (f"echo $$ > {tmp_path}/pid.$PPID; sleep 30 & echo $! > {tmp_path}/child.$PPID; wait; "
              f"touch {tmp_path}/finished")
    cid = q1(tdsn, "INSERT INTO timetable.chain (chain_name, run_at, live, max_instances) "
                   "VALUES ('prog', '@every 1 hour', true, 1) RETURNING chain_id")
    q(tdsn, "INSERT INTO timetable.task (chain_id, task_order, command, kind) VALUES (%s, 1, 'bash', 'PROGRAM') "
            "RETURNING task_id", (cid,))
    q(tdsn, "INSERT INTO timetable.parameter (task_id, order_id, value) SELECT task_id, 1, %s::jsonb "
            "FROM timetable.task WHERE chain_id = %s", (f'["-c", "{script}"]', cid))
    proc = subprocess.Popen([sys.executable, "-c", ENGINE_SCRIPT.format(root=str(ROOT)), tdsn, "victim"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file, child_file = tmp_path / f"pid.{proc.pid}", tmp_path / f"child.{proc.pid}"
    try:
        await until(lambda: pid_file.exists() and child_file.exists() and child_file.read_text().strip(),
                    timeout=20, what="the program running")
        program, child = int(pid_file.read_text()), int(child_file.read_text())
        assert _alive(program) and _alive(child)
        if guardian_killed:
            guardian, = [p for p in _children(proc.pid) if p != program]
            os.kill(guardian, signal.SIGKILL)
            await until(lambda: not _alive(guardian), what="the guardian gone")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    t0 = time.monotonic()
    watched = (program,) if guardian_killed else (program, child)  # no guardian: the group's others live
    while any(_alive(p) for p in watched) and time.monotonic() - t0 < 3:
        await asyncio.sleep(0.02)
    gone_after = time.monotonic() - t0
    for pid in (program, child):  # never leave them behind, whatever the test says
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert gone_after < 1.0, f"the program outlived its engine by {gone_after:.1f} s"
    async with running_engine(tdsn, "survivor", SystemClock()):
        await until(lambda: q1(tdsn, "SELECT status FROM timetable.chain_run WHERE client_name = 'victim'") == "failed",
                    timeout=15, what="the victim's run reaped")
    assert not (tmp_path / "finished").exists()
