"""The shared embedded server is shared (issue #14, item 5): `db embedded stop` refuses while
other clients are connected and names them (--force insists), and `db embedded status`
describes the server that is running, not the caller's binaries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg

from engine import embedded
from tests.test_embedded import cli, embedded_home  # noqa: F401 - embedded_home is a fixture


def test_stop_refuses_while_other_clients_are_connected_and_force_insists(embedded_home):  # noqa: F811
    _, env = embedded_home
    started = cli(env, "db", "embedded", "dsn")
    assert started.returncode == 0, started.stderr
    with psycopg.connect(started.stdout.strip(), application_name="someone-else", autocommit=True) as other:
        pid = other.info.backend_pid
        refused = cli(env, "db", "embedded", "stop")
        assert refused.returncode == 2, refused
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert f"someone-else (pid {pid}, user postgres)" in refused.stderr and "--force" in refused.stderr
        assert other.execute("SELECT 1").fetchone() == (1,)  # nothing changed
        forced = cli(env, "db", "embedded", "stop", "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        result = json.loads(forced.stdout)
        assert result["stopped"] is True and [c["pid"] for c in result["disconnected"]] == [pid]
    status = json.loads(cli(env, "db", "embedded", "status", "--json").stdout)
    assert status["running"] is False
    again = cli(env, "db", "embedded", "stop")
    assert again.returncode == 0 and json.loads(cli(env, "db", "embedded", "stop", "--json").stdout)["stopped"] is False


def test_status_describes_the_running_server_not_the_callers_binaries(embedded_home, tmp_path):  # noqa: F811
    home, env = embedded_home
    started = cli(env, "db", "embedded", "dsn")
    assert started.returncode == 0, started.stderr
    # the caller's binaries: another folder (of the same major version) than the server's
    farm = tmp_path / "bin"
    farm.mkdir()
    for binary in embedded.wheel_bindir().iterdir():
        (farm / binary.name).symlink_to(binary)
    caller_env = {**env, embedded.PG_BINDIR_ENV: str(farm)}
    status = cli(caller_env, "db", "embedded", "status", "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    pidfile = next(home.glob("pg*/data/postmaster.pid")).read_text().splitlines()
    pid = int(pidfile[0])
    binary = os.readlink(f"/proc/{pid}/exe")
    with psycopg.connect(started.stdout.strip()) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    assert data["running"] is True and data["pid"] == pid
    assert data["binary"] == binary and data["bindir"] == str(Path(binary).parent) != str(farm)
    assert data["version"] == version
    assert data["port"] == int(pidfile[3]) and data["datadir"] == pidfile[1]
