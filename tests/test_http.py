"""The engine's HTTP endpoint with a real Supervisor and database: liveness, readiness,
start/stop chain, Prometheus metrics, and the Shutdown builtin's exit code 5."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

import psycopg
import pytest

from engine.db import ConnSettings
from engine.http import HttpEndpoint, prometheus_text
from engine.worker import Metric, Supervisor, WorkerOptions, run_worker
from tests._timetable_support import SteppingClock, q, q1, running_engine, until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_sync(url: str, method: str = "GET") -> tuple[int, str, dict]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


async def get(url: str, method: str = "GET") -> tuple[int, str, dict]:
    return await asyncio.to_thread(_get_sync, url, method)


def test_prometheus_text_format():
    from engine.timetable.runstats import Histogram

    h = Histogram(buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 3.0):
        h.observe(v)
    text = prometheus_text([
        Metric("pgtt_worker_up", 1.0, help="1 while services run"),
        Metric("pgtt_runs_total", 3, {"client_name": 'a"b\\c\nd'}, "counter", "runs"),
        Metric("pgtt_runs_total", 4.5, {"client_name": "x"}, "counter", "runs"),
        Metric("bad name", 1),
        *h.metrics("lat_seconds", {"c": "x"}, "latency"),
    ])
    assert text == (
        "# HELP pgtt_worker_up 1 while services run\n"
        "# TYPE pgtt_worker_up gauge\n"
        "pgtt_worker_up 1\n"
        "# HELP pgtt_runs_total runs\n"
        "# TYPE pgtt_runs_total counter\n"
        'pgtt_runs_total{client_name="a\\"b\\\\c\\nd"} 3\n'
        'pgtt_runs_total{client_name="x"} 4.5\n'
        "# HELP lat_seconds latency\n"
        "# TYPE lat_seconds histogram\n"
        'lat_seconds_bucket{c="x",le="0.1"} 1\n'
        'lat_seconds_bucket{c="x",le="1.0"} 2\n'
        'lat_seconds_bucket{c="x",le="+Inf"} 3\n'
        'lat_seconds_sum{c="x"} 3.55\n'
        'lat_seconds_count{c="x"} 3\n')


async def test_readiness_503_until_running(dsn):
    sup = Supervisor(WorkerOptions(settings=ConnSettings(dsn=dsn), client_name="not-yet"), [])
    ep = await HttpEndpoint(sup, ConnSettings(dsn=dsn), "not-yet").start()
    try:
        assert ep.host == "127.0.0.1"
        base = f"http://127.0.0.1:{ep.port}"
        status, body, headers = await get(base + "/readiness")
        assert status == 503 and headers["Content-Type"] == "application/json"
        data = json.loads(body)
        assert data["ready"] is False and data["state"] == "starting"
        assert (await get(base + "/liveness"))[0] == 200
        sup.state = "standby"  # a standby engine is healthy, but not ready to run chains
        assert (await get(base + "/readiness"))[0] == 503
        status, body, _ = await get(base + "/nope")
        assert status == 404 and "/metrics" in body
        assert (await get(base + "/liveness", "POST"))[0] == 405
        status, _, headers = await get(base + "/liveness", "HEAD")
        assert status == 200 and int(headers["Content-Length"]) > 0
    finally:
        await ep.close()


async def test_endpoints_with_running_worker(dsn):
    port = _free_port()
    client = "http-engine"
    options = WorkerOptions(settings=ConnSettings(dsn=dsn, application_name="pgtt-test worker"), client_name=client,
                            modules=["timetable"],
                            module_options={"timetable": {"poll_seconds": 0.2, "reap_seconds": 0.5},
                                            "http": {"rest_port": port}})
    worker = asyncio.create_task(run_worker(options))
    base = f"http://127.0.0.1:{port}"
    try:
        async def ready():
            if worker.done():
                worker.result()
            try:
                return (await get(base + "/readiness"))[0] == 200
            except OSError:
                return False

        await until(ready, timeout=20, what="readiness 200")
        status, body, _ = await get(base + "/readiness")
        assert json.loads(body)["services"]["timetable"]["ok"] is True

        slow = q1(dsn, "SELECT timetable.add_job('slow', '@reboot', 'SELECT pg_sleep(30)', job_live => false)")
        quick = q1(dsn, "SELECT timetable.add_job('quick', '@reboot', 'SELECT 1', job_live => false)")
        other = q1(dsn, "SELECT timetable.add_job('other', '@reboot', 'SELECT 1', job_client_name => 'elsewhere')")

        assert (await get(base + "/startchain?id=abc"))[0] == 400
        assert (await get(base + "/startchain"))[0] == 400
        assert (await get(base + f"/startchain?id={other}"))[0] == 404  # bound to another engine
        assert (await get(base + "/startchain?id=999999"))[0] == 404
        status, body, _ = await get(base + f"/stopchain?id={slow}")
        assert status == 400 and "No running chain found" in body

        status, body, _ = await get(base + f"/startchain?id={quick}")
        assert status == 200 and json.loads(body)["chain_id"] == quick
        await until(lambda: q1(dsn, "SELECT status FROM timetable.chain_run WHERE chain_id = %s", (quick,))
                    == "succeeded", what="quick run")

        assert (await get(base + f"/startchain?id={slow}"))[0] == 200
        await until(lambda: q1(dsn, "SELECT status FROM timetable.chain_run WHERE chain_id = %s", (slow,))
                    == "running", what="slow run starts")
        status, body, _ = await get(base + f"/stopchain?id={slow}")
        assert status == 200, body
        await until(lambda: q1(dsn, "SELECT status FROM timetable.chain_run WHERE chain_id = %s", (slow,))
                    == "failed", what="slow run stopped")
        assert "stopped" in q1(dsn, "SELECT reason FROM timetable.chain_run WHERE chain_id = %s", (slow,))

        status, text, headers = await get(base + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        lines = text.splitlines()
        assert "pgtt_worker_up 1" in lines
        assert f'pgtt_timetable_runs_succeeded_total{{client_name="{client}"}} 1' in lines
        assert f'pgtt_timetable_runs_failed_total{{client_name="{client}"}} 1' in lines
        assert "# TYPE pgtt_timetable_run_duration_seconds histogram" in lines
        assert f'pgtt_timetable_run_duration_seconds_count{{client_name="{client}"}} 2' in lines
        assert any(line.startswith("pgtt_timetable_start_lag_seconds_count") for line in lines)
        assert 'pgtt_service_restarts_total{service="timetable"} 0' in lines

        # the Shutdown builtin stops the engine, which reports exit code 5
        stop = q1(dsn, "SELECT timetable.add_job('shutdown', '@reboot', 'Shutdown', job_kind => 'BUILTIN', "
                       "job_live => false)")
        assert (await get(base + f"/startchain?id={stop}"))[0] == 200
        supervisor = await asyncio.wait_for(worker, timeout=60)
        assert supervisor.exit_code == 5 and supervisor.state == "stopped"
        assert q1(dsn, "SELECT status FROM timetable.chain_run WHERE chain_id = %s", (stop,)) == "succeeded"
        with pytest.raises(OSError):
            _get_sync(base + "/liveness")  # the endpoint closed with the engine
    finally:
        if not worker.done():
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


async def test_stopchain_stops_the_chain_on_every_engine(dsn):
    """/stopchain on engine B stops runs of the chain on engine A too (api.stop_chain semantics)."""
    slow = q1(dsn, "SELECT timetable.add_job('slow-anywhere', '@reboot', 'SELECT pg_sleep(60)', "
                   "job_live => false, job_max_instances => 4)")

    def open_runs(client=None):
        return q1(dsn, "SELECT count(*) FROM timetable.chain_run WHERE chain_id = %s AND status = 'running' "
                       "AND (%s::text IS NULL OR client_name = %s)", (slow, client, client))

    async with running_engine(dsn, "engine-a", SteppingClock()) as a, \
            running_engine(dsn, "engine-b", SteppingClock()) as b:
        sup = Supervisor(WorkerOptions(settings=ConnSettings(dsn=dsn), client_name="engine-b"), [])
        ep = await HttpEndpoint(sup, ConnSettings(dsn=dsn), "engine-b").start()
        base = f"http://127.0.0.1:{ep.port}"
        try:
            # running only on A: B's endpoint stops it all the same
            await a.start_adhoc(slow)
            await until(lambda: open_runs("engine-a") == 1, what="run on A")
            status, body, _ = await get(base + f"/stopchain?id={slow}")
            assert status == 200, body
            assert json.loads(body)["engines"] == ["engine-a"]
            await until(lambda: open_runs() == 0, what="A's run stopped")
            # running on both: every instance on every engine stops
            await a.start_adhoc(slow)
            await a.start_adhoc(slow)
            await b.start_adhoc(slow)
            await until(lambda: open_runs() == 3, what="three runs")
            status, body, _ = await get(base + f"/stopchain?id={slow}")
            assert status == 200 and json.loads(body)["engines"] == ["engine-a", "engine-b"], body
            assert json.loads(body)["runs"] == 3
            await until(lambda: open_runs() == 0, timeout=15, what="all runs stopped")
            reasons = q(dsn, "SELECT client_name, status, reason FROM timetable.chain_run WHERE chain_id = %s "
                             "ORDER BY run_id", (slow,))
            assert [r[0] for r in reasons] == ["engine-a", "engine-a", "engine-a", "engine-b"]
            assert all(r[1] == "failed" and "stopped" in r[2] for r in reasons), reasons
            status, body, _ = await get(base + f"/stopchain?id={slow}")
            assert status == 400 and "No running chain found" in body
        finally:
            await ep.close()


def test_cli_worker_file_validate_and_flags(dsn, tmp_path):
    """`pgtt-tui worker -f x.yaml --validate` checks and exits 0; a bad file exits 2 naming the field."""
    from typer.testing import CliRunner

    from pgtt_tui.cli import app

    good = tmp_path / "c.yaml"
    good.write_text("chains:\n  - {name: a, schedule: '@reboot', tasks: [{command: SELECT 1}]}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("chains:\n  - {name: a, schedule: '@reboot', tasks: [{command: SELECT 1, kind: nope}]}\n")
    runner = CliRunner()
    res = runner.invoke(app, ["worker", "--dsn", dsn, "-f", str(good), "--validate", "--modules", "timetable"])
    assert res.exit_code == 0, res.output
    assert q1(dsn, "SELECT count(*) FROM timetable.chain") == 0
    res = runner.invoke(app, ["worker", "--dsn", dsn, "-f", str(bad), "--validate", "--modules", "timetable"])
    assert res.exit_code != 0 and "chains[0] (a).tasks[0].kind" in str(res.exception)
    with psycopg.connect(dsn, autocommit=True):
        pass
    assert q(dsn, "SELECT chain_name FROM timetable.chain") == []
