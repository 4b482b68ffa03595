"""The shared embedded server: started on demand, shared by processes, recovered after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from engine import embedded

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def embedded_home(pg_tmp_root):
    # under the session's 0755 temp root: when tests run as root, the server's own
    # unprivileged user must be able to reach it (pytest's tmp_path is 0700)
    home = pg_tmp_root / f"home{os.getpid()}-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env[embedded.HOME_ENV] = str(home)
    env.pop(embedded.PG_BINDIR_ENV, None)
    yield home, env
    subprocess.run([sys.executable, "-m", "pgtt_tui", "db", "embedded", "stop", "--force"], env=env, cwd=REPO,
                   capture_output=True, timeout=60)


def test_unreachable_home_gets_a_clear_error(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root hands the server to another OS user")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env[embedded.HOME_ENV] = str(tmp_path / "home")  # pytest's tmp_path is 0700 root-only
    result = cli(env, "db", "embedded", "dsn")
    assert result.returncode == 3
    assert "cannot reach" in result.stderr and embedded.HOME_ENV in result.stderr


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "pgtt_tui", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=180)


def test_concurrent_processes_share_one_server_and_init_works_without_dsn(embedded_home):
    home, env = embedded_home
    procs = [subprocess.Popen([sys.executable, "-m", "pgtt_tui", "db", "embedded", "dsn"], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    dsns = {out.strip() for out, _ in outs}
    assert len(dsns) == 1, dsns
    dsn = dsns.pop()
    pidfiles = list(home.glob("pg*/data/postmaster.pid"))
    assert len(pidfiles) == 1
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    init = cli(env, "db", "init", "--modules", "timetable")
    assert init.returncode == 0, init.stderr
    status = cli(env, "db", "status")
    assert "up to date" in status.stdout


def test_stale_state_after_a_crash_is_recovered(embedded_home):
    home, env = embedded_home
    first = cli(env, "db", "embedded", "dsn")
    assert first.returncode == 0, first.stderr
    pidfile = next(home.glob("pg*/data/postmaster.pid"))
    pid = int(pidfile.read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
            time.sleep(0.05)
        except ProcessLookupError:
            break
    time.sleep(0.5)  # backends notice the postmaster is gone
    assert pidfile.exists()  # the crash left it behind
    second = cli(env, "db", "embedded", "dsn")
    assert second.returncode == 0, second.stderr
    with psycopg.connect(second.stdout.strip()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    status = cli(env, "db", "embedded", "status", "--json")
    assert '"running": true' in status.stdout


def test_server_runs_as_an_unprivileged_user_when_root(pg_cluster):
    with psycopg.connect(pg_cluster.dsn()) as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    owner = os.stat(data_dir).st_uid
    if os.geteuid() == 0:
        assert owner != 0
    else:
        assert owner == os.geteuid()
