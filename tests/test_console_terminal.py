"""The console draws on the terminal even when stderr is redirected (`pgtt-tui 2>err.log`),
and refuses with one line when the process has no terminal at all."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(90)


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and needle not in out:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_console_draws_on_the_terminal_when_stderr_is_redirected(dsn, tmp_path):
    log = tmp_path / "err.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), TERM="xterm-256color")
    pid, master = pty.fork()
    if pid == 0:  # the child: a terminal on 0/1, stderr into a file, as with `2>err.log`
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 2)
            os.execve(sys.executable, [sys.executable, "-m", "pgtt_tui", "--dsn", dsn], env)
        finally:
            os._exit(127)
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        screen = _read_until(master, b"Overview", timeout=45)
        assert b"Overview" in screen, screen[-500:]
        os.write(master, b"q")
        _read_until(master, b"\x00never", timeout=3)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(master)
    assert b"\x1b[" not in log.read_bytes()  # nothing of the screen went to the log


def test_console_without_any_terminal_refuses_with_one_line(dsn, tmp_path):
    log = tmp_path / "err.log"
    with open(log, "wb") as err:
        proc = subprocess.run([sys.executable, "-m", "pgtt_tui", "--dsn", dsn], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=err, env=dict(os.environ, PYTHONPATH=str(REPO)),
                              cwd=str(REPO), start_new_session=True, timeout=60)
    text = log.read_text()
    assert proc.returncode == 2, text
    assert text.startswith("pgtt-tui: error: terminal: the console needs a terminal") and text.count("\n") == 1
