"""Who may call the engine's HTTP endpoint (issue #14, item 4): a foreign Host (DNS
rebinding), another origin (CSRF) and, with a token, a request without it are refused,
with real HTTP requests; an endpoint beyond localhost does not start without a token."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.db import ConnSettings
from engine.errors import InputError
from engine.http import HttpEndpoint
from engine.worker import Supervisor, WorkerOptions
from tests._timetable_support import SteppingClock, q, q1, running_engine, until

REPO = Path(__file__).resolve().parent.parent
ENGINE = "http-sec"


def _request(port: int, path: str, headers: dict[str, str], connect_to: str = "127.0.0.1") -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection(connect_to, port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}"), dict(resp.getheaders())
    finally:
        conn.close()


async def request(port: int, path: str, **headers: str) -> tuple[int, dict, dict]:
    return await asyncio.to_thread(_request, port, path, {k.replace("_", "-"): v for k, v in headers.items()})


def runs(dsn: str, chain_id: int) -> int:
    return q1(dsn, "SELECT count(*) FROM timetable.chain_run WHERE chain_id = %s", (chain_id,))


async def endpoint(dsn: str, **kw) -> HttpEndpoint:
    sup = Supervisor(WorkerOptions(settings=ConnSettings(dsn=dsn), client_name=ENGINE), [])
    return await HttpEndpoint(sup, ConnSettings(dsn=dsn), ENGINE, **kw).start()


async def test_foreign_host_and_cross_origin_requests_are_refused_and_start_nothing(dsn):
    cid = q1(dsn, "SELECT timetable.add_job('target', '@reboot', 'SELECT 1', job_live => false)")
    async with running_engine(dsn, ENGINE, SteppingClock()):
        ep = await endpoint(dsn)
        p = ep.port
        own = f"127.0.0.1:{p}"
        try:
            start = f"/startchain?id={cid}"
            # the reported attack: a web page's request, after its name was rebound to 127.0.0.1
            status, body, _ = await request(p, start, Host=f"evil.example:{p}", Origin="http://evil.example")
            assert status == 403 and body["error"].startswith("Host:"), body
            status, body, _ = await request(p, start, Host=own, Origin="http://evil.example")
            assert status == 403 and body["error"].startswith("Origin:"), body
            status, body, _ = await request(p, start, Host=own, Origin="null")
            assert status == 403, body
            status, body, _ = await request(p, start, Host=own, Sec_Fetch_Site="cross-site")  # an <img> tag
            assert status == 403 and body["error"].startswith("Sec-Fetch-Site:"), body
            assert (await request(p, start, Host=f"127.0.0.1:{p + 1}"))[0] == 403  # another port
            assert (await request(p, start, Host=f"localhost.evil.example:{p}"))[0] == 403
            status, body, _ = await request(p, start)
            assert status == 400 and body["error"].startswith("Host:"), body
            assert (await request(p, "/metrics", Host="evil.example"))[0] == 403  # reads too
            await asyncio.sleep(0.5)
            assert runs(dsn, cid) == 0
            assert q1(dsn, "SELECT count(*) FROM timetable.pending_start") == 0
            # its own names: the bound address, localhost (bound to loopback), a configured name
            assert (await request(p, "/liveness", Host=f"localhost:{p}"))[0] == 200
            assert (await request(p, "/liveness", Host="pgtt.internal"))[0] == 403
            assert (await request(p, "/liveness", Host=f"[::1]:{p}"))[0] == 200
            status, body, _ = await request(p, start, Host=own, Origin=f"http://{own}", Sec_Fetch_Site="same-origin")
            assert status == 200, body
            await until(lambda: runs(dsn, cid) == 1, what="the run from the endpoint's own origin")
        finally:
            await ep.close()
    assert ep.refused == 9
    named = await endpoint(dsn, allowed_hosts=["pgtt.internal"])  # --rest-allowed-host
    try:
        assert (await request(named.port, "/liveness", Host="pgtt.internal"))[0] == 200
        assert (await request(named.port, "/liveness", Host=f"PGTT.internal:{named.port}"))[0] == 200
        assert (await request(named.port, "/liveness", Host="other.internal"))[0] == 403
    finally:
        await named.close()
    with pytest.raises(InputError, match="--rest-allowed-host"):
        await endpoint(dsn, allowed_hosts=["http://x/"])


async def test_a_token_is_required_for_start_and_stop_when_set(dsn):
    cid = q1(dsn, "SELECT timetable.add_job('guarded', '@reboot', 'SELECT 1', job_live => false)")
    async with running_engine(dsn, ENGINE, SteppingClock()):
        ep = await endpoint(dsn, token="s3cret-token")
        p = ep.port
        host = f"127.0.0.1:{p}"
        try:
            for path in (f"/startchain?id={cid}", f"/stopchain?id={cid}"):
                status, body, headers = await request(p, path, Host=host)
                assert status == 401 and body["error"].startswith("Authorization:"), body
                assert headers["WWW-Authenticate"].startswith("Bearer")
                status, _, _ = await request(p, path, Host=host, Authorization="Bearer wrong")
                assert status == 401
            assert (await request(p, "/liveness", Host=host))[0] == 200  # probes need no token
            await asyncio.sleep(0.3)
            assert runs(dsn, cid) == 0
            status, body, _ = await request(p, f"/startchain?id={cid}", Host=host, Authorization="Bearer s3cret-token")
            assert status == 200, body
            await until(lambda: runs(dsn, cid) == 1, what="the authorised run")
        finally:
            await ep.close()


async def test_beyond_localhost_the_endpoint_needs_a_token(dsn):
    with pytest.raises(InputError, match="--rest-token: required when the HTTP endpoint listens beyond localhost"):
        await endpoint(dsn, host="0.0.0.0")
    ep = await endpoint(dsn, host="0.0.0.0", token="t")
    try:
        p = ep.port
        assert (await request(p, "/liveness", Host=f"127.0.0.1:{p}"))[0] == 200  # an address of this host
        assert (await request(p, "/liveness", Host=f"evil.example:{p}"))[0] == 403
        assert (await request(p, "/startchain?id=1", Host=f"127.0.0.1:{p}"))[0] == 401
    finally:
        await ep.close()
    # the command refuses to start, with one line, before it connects
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "pgtt_tui", "worker", "--dsn", dsn, "--clientname", "x",
                             "--rest-port", "18999", "--rest-host", "0.0.0.0"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--rest-token" in result.stderr, result.stderr
    assert q(dsn, "SELECT 1 FROM timetable.active_session") == []
