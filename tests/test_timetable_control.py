"""Who may START and STOP chains (issue #14, item 1).

The engine's channel is its client name, visible to every role in pg_stat_activity, and
pg_notify needs no privilege: a START or STOP must take effect only when a role allowed to
control chains asked for it through timetable.notify_chain_start / notify_chain_stop (a
member of timetable_operator, or a role with EXECUTE on the function)."""

from __future__ import annotations

import asyncio
import gc
import json

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from _timetable_support import SteppingClock, q, q1, running_engine, until
from engine.errors import InputError
from engine.timetable import api

ENGINE = "ctl-engine"


@pytest.fixture
def tdsn(make_db):
    dsn = make_db(("timetable",))
    q(dsn, "CREATE TABLE out (v text, at timestamptz DEFAULT clock_timestamp())")
    q(dsn, "GRANT INSERT, SELECT ON out TO PUBLIC")
    return dsn


@pytest.fixture
def roles(tdsn):
    """make(suffix) -> (role, dsn): LOGIN roles unique to this test's database, dropped after."""
    dbname = psycopg.conninfo.conninfo_to_dict(tdsn)["dbname"]
    made: list[str] = []

    def make(suffix: str) -> tuple[str, str]:
        role = f"{suffix}_{dbname}"
        q(tdsn, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        made.append(role)
        return role, make_conninfo(tdsn, user=role)

    yield make
    for role in made:
        q(tdsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        q(tdsn, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        q(tdsn, sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def chain(dsn: str, name: str, command: str) -> int:
    return q1(dsn, "SELECT timetable.add_job(%s, '@every 1 hour', %s, job_live => false)", (name, command))


def runs(dsn: str, chain_id: int) -> list[tuple]:
    return q(dsn, "SELECT status, reason FROM timetable.chain_run WHERE chain_id = %s ORDER BY run_id", (chain_id,))


def log_like(dsn: str, pattern: str) -> list[tuple]:
    return q(dsn, "SELECT message, message_data FROM timetable.log WHERE message LIKE %s ORDER BY ts", (pattern,))


async def test_bare_pg_notify_start_from_a_role_without_grants_runs_nothing_and_is_logged_once(tdsn, roles):
    cid = chain(tdsn, "victim", "INSERT INTO out VALUES ('ran')")
    role, role_dsn = roles("nogrant")
    async with running_engine(tdsn, ENGINE, SteppingClock()):
        with psycopg.connect(role_dsn, autocommit=True) as attacker:
            pid = attacker.info.backend_pid
            payload = json.dumps({"ConfigID": cid, "Command": "START"})
            attacker.execute("SELECT pg_notify(%s, %s)", (ENGINE, payload))
            attacker.execute("SELECT pg_notify(%s, %s)", (ENGINE, payload))  # the same again: logged once
            # and one that claims to name a request: it only wakes the engine
            attacker.execute("SELECT pg_notify(%s, %s)", (ENGINE, json.dumps(
                {"ConfigID": cid, "Command": "START", "PendingID": 1})))
            logged = await until(lambda: log_like(tdsn, f"ignored a notification from pid {pid}%"),
                                 what="the bare notification logged")
            await asyncio.sleep(0.5)
    assert runs(tdsn, cid) == []
    assert q1(tdsn, "SELECT count(*) FROM out") == 0
    assert len(log_like(tdsn, f"ignored a notification from pid {pid}%")) == 1
    message, data = logged[0]
    assert f"(role {role})" in message
    assert data["pid"] == pid and data["role"] == role


async def test_bare_pg_notify_stop_does_not_end_a_running_instance(tdsn, roles):
    cid = chain(tdsn, "long", "SELECT pg_sleep(30)")
    _, role_dsn = roles("nogrant")
    async with running_engine(tdsn, ENGINE, SteppingClock()):
        q(tdsn, "SELECT timetable.notify_chain_start(%s, %s)", (cid, ENGINE))
        await until(lambda: runs(tdsn, cid) and runs(tdsn, cid)[0][0] == "running", what="the chain running")
        with psycopg.connect(role_dsn, autocommit=True) as attacker:
            pid = attacker.info.backend_pid
            attacker.execute("SELECT pg_notify(%s, %s)", (ENGINE, json.dumps({"ConfigID": cid, "Command": "STOP"})))
            await until(lambda: log_like(tdsn, f"ignored a notification from pid {pid}%"), what="the STOP logged")
        await asyncio.sleep(0.5)
        assert runs(tdsn, cid)[0][0] == "running"
        q(tdsn, "SELECT timetable.notify_chain_stop(%s, %s)", (cid, ENGINE))  # the engine's own role may
        await until(lambda: runs(tdsn, cid)[0][0] == "failed", what="the legitimate STOP")
    assert "stopped by notify_chain_stop" in runs(tdsn, cid)[0][1]


async def test_operators_and_execute_grantees_may_control_chains_others_are_refused(tdsn, roles):
    cid = chain(tdsn, "work", "INSERT INTO out VALUES (current_user)")
    operator, operator_dsn = roles("op")
    q(tdsn, sql.SQL("GRANT timetable_operator TO {}").format(sql.Identifier(operator)))
    grantee, grantee_dsn = roles("exec")  # pg_timetable style: EXECUTE on the function only
    q(tdsn, sql.SQL("GRANT USAGE ON SCHEMA timetable TO {}").format(sql.Identifier(grantee)))
    q(tdsn, sql.SQL("GRANT EXECUTE ON FUNCTION timetable.notify_chain_start(bigint, text, interval) TO {}")
        .format(sql.Identifier(grantee)))
    reader, reader_dsn = roles("usage")  # may reach the schema, may not control chains
    q(tdsn, sql.SQL("GRANT USAGE ON SCHEMA timetable TO {}").format(sql.Identifier(reader)))
    async with running_engine(tdsn, ENGINE, SteppingClock()):
        q(operator_dsn, "SELECT timetable.notify_chain_start(%s, %s)", (cid, ENGINE))
        await until(lambda: len([r for r in runs(tdsn, cid) if r[0] == "succeeded"]) == 1, what="operator's run")
        q(grantee_dsn, "SELECT timetable.notify_chain_start(%s, %s)", (cid, ENGINE))
        await until(lambda: len([r for r in runs(tdsn, cid) if r[0] == "succeeded"]) == 2, what="grantee's run")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            q(reader_dsn, "SELECT timetable.notify_chain_start(%s, %s)", (cid, ENGINE))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the recorded role cannot be forged
            q(reader_dsn, "INSERT INTO timetable.pending_start (chain_id, worker_name, requested_by) "
                          "VALUES (%s, %s, %s)", (cid, ENGINE, operator))
        # a request written directly is recorded with its real role, refused and logged
        q(reader_dsn, "INSERT INTO timetable.pending_start (chain_id, worker_name) VALUES (%s, %s)", (cid, ENGINE))
        q(reader_dsn, "SELECT pg_notify(%s, %s)", (ENGINE, json.dumps({"PendingID": 1})))
        refused = await until(lambda: log_like(tdsn, f"START of chain {cid} refused: role {reader} %"),
                              what="the refusal logged")
        await asyncio.sleep(0.5)
    assert len(runs(tdsn, cid)) == 2
    assert "timetable_operator" in refused[0][0]
    assert q1(tdsn, "SELECT count(*) FROM timetable.pending_start") == 0


async def test_a_request_made_inside_a_security_definer_function_is_the_owners(tdsn, roles):
    """As in a schedule job's sandbox: a SECURITY DEFINER function owned by a role without
    the right, called from a superuser's session, asks as its owner, not as the session."""
    cid = chain(tdsn, "sandboxed", "INSERT INTO out VALUES ('ran')")
    owner, owner_dsn = roles("jobowner")
    q(tdsn, sql.SQL("GRANT USAGE ON SCHEMA timetable TO {}").format(sql.Identifier(owner)))
    q(tdsn, sql.SQL("CREATE SCHEMA jobs AUTHORIZATION {}").format(sql.Identifier(owner)))
    q(owner_dsn, """CREATE FUNCTION jobs.job() RETURNS void LANGUAGE sql SECURITY DEFINER AS $$
                    INSERT INTO timetable.pending_start (chain_id, worker_name) VALUES (%s, '%s');
                    SELECT pg_notify('%s', '{"PendingID": 1}') $$""" % (cid, ENGINE, ENGINE))
    async with running_engine(tdsn, ENGINE, SteppingClock()):
        q(tdsn, "SELECT jobs.job()")  # the session is the superuser's
        await until(lambda: log_like(tdsn, f"START of chain {cid} refused: role {owner} %"), what="refusal")
        await asyncio.sleep(0.3)
    assert runs(tdsn, cid) == []


def test_start_delay_must_be_finite_and_reasonable(tdsn, server_version_num):
    cid = chain(tdsn, "delayed", "SELECT 1")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="start_delay: must be a finite interval"):
        q(tdsn, "SELECT timetable.notify_chain_start(%s, 'w', interval '31 days')", (cid,))
    if server_version_num >= 170000:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="start_delay"):
            q(tdsn, "SELECT timetable.notify_chain_start(%s, 'w', 'infinity'::interval)", (cid,))
    with pytest.raises(psycopg.errors.CheckViolation):  # the table holds only what the engine can use
        q(tdsn, "INSERT INTO timetable.pending_start (chain_id, worker_name, start_delay) "
                "VALUES (%s, 'w', interval '100 years')", (cid,))
    assert q1(tdsn, "SELECT count(*) FROM timetable.pending_start") == 0
    with psycopg.connect(tdsn, autocommit=True) as conn:
        for bad in (1e308 * 10, float("nan"), 1e308, -1):
            with pytest.raises(InputError, match="--delay"):
                api.run_chain(conn, cid, worker="w", delay_seconds=bad)
    assert q1(tdsn, "SELECT count(*) FROM timetable.pending_start") == 0


async def test_a_huge_delay_in_a_bare_notification_leaves_no_unretrieved_exception(tdsn):
    cid = chain(tdsn, "after junk", "INSERT INTO out VALUES ('ran')")
    errors: list[dict] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with running_engine(tdsn, ENGINE, SteppingClock()) as engine:
            for payload in ({"ConfigID": cid, "Command": "START", "Delay": 1e308},
                            {"ConfigID": cid, "Command": "START", "Delay": "NaN"}, [1], "not json"):
                q(tdsn, "SELECT pg_notify(%s, %s)", (ENGINE, payload if isinstance(payload, str)
                                                      else json.dumps(payload)))
            await until(lambda: len(log_like(tdsn, "ignored a notification from pid%")) == 4, what="4 logged")
            await asyncio.sleep(0.3)
            gc.collect()
            await asyncio.sleep(0.1)
            assert engine.ready and not engine._bg
            q(tdsn, "SELECT timetable.notify_chain_start(%s, %s)", (cid, ENGINE))
            await until(lambda: q1(tdsn, "SELECT count(*) FROM out") == 1, what="a real START afterwards")
    finally:
        loop.set_exception_handler(previous)
    assert errors == []


async def test_a_request_that_arrives_after_the_refusal_pass_is_not_carried_out(tdsn, roles, monkeypatch):
    """_take_pending refuses, then takes STOPs and due STARTs, each statement on its own
    snapshot: a request committed between the refusal and the take must still be checked.
    The refusal statement is made to see nothing, as if the request committed just after it."""
    from engine.timetable import scheduler

    victim = chain(tdsn, "victim", "INSERT INTO out VALUES ('ran')")
    long = chain(tdsn, "long", "SELECT pg_sleep(30)")
    reader, reader_dsn = roles("late")
    q(tdsn, sql.SQL("GRANT USAGE ON SCHEMA timetable TO {}").format(sql.Identifier(reader)))
    refuse = scheduler.PENDING_REFUSE_SQL
    async with running_engine(tdsn, ENGINE, SteppingClock()):
        q(tdsn, "SELECT timetable.notify_chain_start(%s, %s)", (long, ENGINE))
        await until(lambda: runs(tdsn, long) and runs(tdsn, long)[0][0] == "running", what="the chain running")
        monkeypatch.setattr(scheduler, "PENDING_REFUSE_SQL",
                            "SELECT NULL::bigint, NULL::text, NULL::bigint, NULL::name, NULL::integer "
                            "WHERE %(me)s::text IS NULL")
        q(reader_dsn, "INSERT INTO timetable.pending_start (chain_id, worker_name) VALUES (%s, %s)", (victim, ENGINE))
        q(reader_dsn, "INSERT INTO timetable.pending_start (command, chain_id, worker_name) VALUES ('STOP', %s, %s)",
          (long, ENGINE))
        q(reader_dsn, "SELECT pg_notify(%s, %s)", (ENGINE, json.dumps({"PendingID": 1})))
        await asyncio.sleep(1.0)
        assert runs(tdsn, victim) == []
        assert runs(tdsn, long)[0][0] == "running"
        # the next refusal pass sees them: refused and logged
        monkeypatch.setattr(scheduler, "PENDING_REFUSE_SQL", refuse)
        q(reader_dsn, "SELECT pg_notify(%s, %s)", (ENGINE, json.dumps({"PendingID": 1})))
        await until(lambda: log_like(tdsn, f"STOP of chain {long} refused: role {reader} %"), what="the refusal")
        await asyncio.sleep(0.3)
        assert runs(tdsn, long)[0][0] == "running"
        q(tdsn, "SELECT timetable.notify_chain_stop(%s, %s)", (long, ENGINE))
        await until(lambda: runs(tdsn, long)[0][0] == "failed", what="the legitimate STOP")
    assert runs(tdsn, victim) == []
    assert q1(tdsn, "SELECT count(*) FROM out") == 0
    assert q1(tdsn, "SELECT count(*) FROM timetable.pending_start") == 0
