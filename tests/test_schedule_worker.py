"""schedule under the real worker supervisor: one engine serves every database listed in
``schedule.database`` (or ``--schedule-databases``), scheduled and one-time jobs alike."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from psycopg import sql

from engine.db import ConnSettings
from engine.worker import Supervisor, WorkerOptions, build_services


async def wait_for(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the jobs of both databases")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("how", ["alter_database", "worker_option"])
async def test_one_supervised_engine_serves_two_databases(make_db, how):
    dsns = [make_db(("schedule",)), make_db(("schedule",))]
    conns = [psycopg.connect(d, autocommit=True) for d in dsns]
    names = [c.info.dbname for c in conns]
    try:
        for c in conns:
            c.execute("SELECT schedule.enable()")
            c.execute("CREATE TABLE t (x text)")
            c.execute("SELECT schedule.submit_job('insert into t values (''once in '' || current_database())')")
            c.execute("SELECT schedule.create_job('* * * * * *', "
                      "'insert into t values (''every second in '' || current_database())')")
        listed = ", ".join(names)
        module_options: dict = {"poll_seconds": 0.2}
        if how == "alter_database":
            # the seed's way: a setting of the database the engine connects to
            conns[0].execute(sql.SQL("ALTER DATABASE {} SET schedule.database = {}").format(
                sql.Identifier(names[0]), sql.Literal(listed)))
        else:
            module_options["databases"] = listed  # pgtt-tui worker --schedule-databases
        options = WorkerOptions(settings=ConnSettings(dsn=dsns[0], application_name="pgtt-test"),
                                client_name="schedule-two-dbs", modules=["schedule"],
                                module_options={"schedule": module_options})
        supervisor = Supervisor(options, build_services(options))
        task = asyncio.create_task(supervisor.run())

        def both_ran() -> bool:
            for c, name in zip(conns, names):
                xs = {r[0] for r in c.execute("SELECT x FROM t").fetchall()}
                if {f"once in {name}", f"every second in {name}"} - xs:
                    return False
            return True

        try:
            await wait_for(both_ran)
            assert supervisor.state == "running"
            health = supervisor.health()
            assert health["ok"], health
            detail = health["services"]["schedule"]["detail"]
            assert all(f"{name}: enabled" in detail for name in names), detail
            started = {m.labels["database"] for m in supervisor.metrics()
                       if m.name == "pgtt_schedule_runs_started_total" and m.value > 0}
            assert started == set(names)
        finally:
            supervisor.stop()
            await asyncio.wait_for(task, timeout=30)
        assert supervisor.state == "stopped"
        for c in conns:
            # the log of each database shows its own runs, done
            assert c.execute("SELECT count(*) > 0, bool_and(status = 'done') FROM schedule.get_log()").fetchone() \
                == (True, True)
            assert c.execute("SELECT status, is_success FROM schedule.job_status").fetchall() == [("done", True)]
    finally:
        for c in conns:
            c.close()
