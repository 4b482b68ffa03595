"""Issue 14 (3): a password in --dsn is visible to every local user (ps): warned about on
stderr; -W asks for it instead (getpass, on the terminal; the test drives it through a pty)."""

from __future__ import annotations

import os
import pty
import sys
import time
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from pgtt_tui.cli import app as cli_app
from pgtt_tui.cli import common

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_warning(monkeypatch):
    monkeypatch.setattr(common, "_warned", False)


def test_password_in_dsn_on_the_command_line_is_warned_about_once(dsn):
    with_pw = make_conninfo(dsn, password="pw-in-argv")  # the test server trusts the socket
    result = CliRunner().invoke(cli_app, ["--dsn", with_pw, "chain", "list"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("pgtt-tui: warning: the --dsn given on the command line holds a password") == 1
    assert "PGPASSFILE" in result.stderr and "-W" in result.stderr and "pw-in-argv" not in result.stderr
    common._warned = False
    quiet = CliRunner().invoke(cli_app, ["--dsn", dsn, "chain", "list"])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def test_dash_w_asks_on_the_terminal_and_connects_with_it(pg_cluster, conn):
    """A role that needs a password (over TCP the embedded server asks for one): -W prompts,
    the password typed there connects, and it is neither in argv nor warned about."""
    role = f"w_{conn.info.dbname}"
    conn.execute(f"CREATE ROLE {role} SUPERUSER LOGIN PASSWORD 'typed-pw'")
    try:
        target = pg_cluster.tcp_dsn(conn.info.dbname, role)
        pid, fd = pty.fork()
        if pid == 0:  # the child: pgtt-tui on a terminal of its own
            os.chdir(ROOT)
            os.environ["PYTHONPATH"] = str(ROOT)
            os.execv(sys.executable, [sys.executable, "-m", "pgtt_tui", "-W", "--dsn", target,
                                      "--json", "db", "status"])
        out = b""
        deadline = time.monotonic() + 60
        while b"Password:" not in out and time.monotonic() < deadline:
            out += os.read(fd, 1024)
        os.write(fd, b"typed-pw\n")
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(pid, 0)
        text = out.decode(errors="replace")
        assert os.waitstatus_to_exitcode(status) == 0, text
        assert "typed-pw" not in text.split("Password:", 1)[1] and "warning" not in text
    finally:
        conn.execute(f"DROP ROLE {role}")
