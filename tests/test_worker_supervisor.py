"""The engine supervisor: idles on a standby, starts after promotion, restarts failed services."""

from __future__ import annotations

import asyncio
import subprocess

import psycopg
import pytest

from engine.db import ConnSettings
from engine.embedded import Cluster
from engine.worker import Metric, Supervisor, WorkerOptions


class CountingService:
    """A service that records each start and can be told to fail once."""

    name = "counting"

    def __init__(self, fail_first: bool = False):
        self.starts = 0
        self.fail_first = fail_first

    async def run(self, ctx) -> None:
        self.starts += 1
        if self.fail_first and self.starts == 1:
            raise RuntimeError("boom")
        await ctx.stopping.wait()

    def health(self) -> dict:
        return {"ok": True, "detail": f"started {self.starts}x"}

    def metrics(self) -> list[Metric]:
        return [Metric("counting_starts_total", self.starts, kind="counter")]


async def _until(predicate, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_failed_service_is_restarted_and_heartbeat_registers(dsn):
    service = CountingService(fail_first=True)
    sup = Supervisor(WorkerOptions(settings=ConnSettings(dsn=dsn), client_name="sup-test", modules=[]), [service])
    task = asyncio.create_task(sup.run())
    await _until(lambda: service.starts >= 2)
    assert sup.restarts["counting"] == 1
    assert "boom" in sup.last_error
    with psycopg.connect(dsn) as conn:
        await _until(lambda: conn.execute("SELECT count(*) FROM pgtt.engine_status WHERE client_name = 'sup-test' "
                                          "AND alive").fetchone()[0] == 1)
    assert sup.health()["ok"] is True
    sup.stop()
    await asyncio.wait_for(task, 30)
    assert sup.state == "stopped"
    with psycopg.connect(dsn) as conn:
        stopped = conn.execute("SELECT stopped_at IS NOT NULL FROM pgtt.engine WHERE client_name = 'sup-test' "
                               "ORDER BY engine_id DESC LIMIT 1").fetchone()[0]
    assert stopped


@pytest.mark.slow
async def test_idles_on_a_standby_and_starts_after_promotion(make_servers, pg_tmp_root):
    (primary,) = make_servers(1)
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (x int)")
    standby = Cluster(base=pg_tmp_root / f"standby{primary.port}", bindir=primary.bindir, fast=True)
    standby.base.mkdir(parents=True, exist_ok=True)
    standby._own(standby.datadir, 0o700)
    standby._own(standby.sockdir, 0o700)
    result = standby._run([str(primary.bindir / "pg_basebackup"), "-h", str(primary.sockdir), "-p", str(primary.port),
                           "-U", "postgres", "-D", str(standby.datadir), "-R", "-X", "stream"])
    assert result.returncode == 0, result.stderr
    standby.start()
    try:
        service = CountingService()
        sup = Supervisor(WorkerOptions(settings=ConnSettings(dsn=standby.dsn()), client_name="standby-test"),
                         [service])
        task = asyncio.create_task(sup.run())
        await _until(lambda: sup.state == "standby")
        await asyncio.sleep(0.5)
        assert service.starts == 0
        assert sup.health()["ok"] is True  # idling on a standby is healthy
        promote = standby._run([str(standby.bindir / "pg_ctl"), "-D", str(standby.datadir), "-w", "promote"])
        assert promote.returncode == 0, promote.stderr
        await _until(lambda: service.starts == 1 and sup.state == "running")
        sup.stop()
        await asyncio.wait_for(task, 30)
    finally:
        standby.destroy()


async def test_registration_retires_long_dead_engines_and_forgets_old_stopped_ones(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        # a crashed engine (its backend pid does not exist), silent for two hours
        conn.execute("INSERT INTO pgtt.engine (client_name, backend_pid, heartbeat_at, started_at) "
                     "VALUES ('crashed', 2147483000, now() - interval '2 hours', now() - interval '3 hours')")
        # one that crashed a minute ago: still shown as lost
        conn.execute("INSERT INTO pgtt.engine (client_name, backend_pid, heartbeat_at, started_at) "
                     "VALUES ('recent', 2147483001, now() - interval '1 minute', now() - interval '1 hour')")
        # stopped long ago
        conn.execute("INSERT INTO pgtt.engine (client_name, backend_pid, started_at, stopped_at) "
                     "VALUES ('old', 1, now() - interval '30 days', now() - interval '20 days')")
    service = CountingService()
    sup = Supervisor(WorkerOptions(settings=ConnSettings(dsn=dsn), client_name="pruner", modules=[]), [service])
    task = asyncio.create_task(sup.run())
    with psycopg.connect(dsn, autocommit=True) as conn:
        await _until(lambda: conn.execute("SELECT count(*) FROM pgtt.engine WHERE client_name = 'pruner'")
                     .fetchone()[0] == 1)
        await _until(lambda: conn.execute("SELECT count(*) FROM pgtt.engine WHERE client_name = 'old'")
                     .fetchone()[0] == 0)
        rows = dict(conn.execute("SELECT client_name, stopped_at IS NOT NULL FROM pgtt.engine").fetchall())
    assert rows["crashed"] is True  # retired at its last heartbeat
    assert rows["recent"] is False  # still shown as lost
    assert "old" not in rows
    sup.stop()
    await asyncio.wait_for(task, 30)


async def test_a_lost_probe_connection_is_retried_like_a_server_that_is_down(dsn):
    """The probe held while idling on a standby loses its connection when that server
    restarts: that is worth a prompt retry (about every second), not the slow back-off for a
    server that refuses us (password, missing database: up to 15 s), which would also grow
    with each restart of the standby and delay noticing its promotion."""
    from engine.errors import ConnectError

    sup = Supervisor(WorkerOptions(settings=ConnSettings(dsn=dsn, application_name="pgtt-test probe")), [])
    try:
        assert await sup._in_recovery() is False  # opens the probe
        pid = sup._probe.info.backend_pid
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await asyncio.sleep(0.2)
        with pytest.raises(ConnectError) as lost:
            await sup._in_recovery()
        assert getattr(lost.value, "retryable", False)
        assert sup._probe is None
        assert await sup._in_recovery() is False  # a new probe
    finally:
        await sup._close_probe()
