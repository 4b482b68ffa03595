"""`pgtt-tui queue tail --follow` (pgtt_tui/cli/queue.py over engine.pgq.api.events_since), run as
a real process against a real database: recent events first, then every newly committed event
exactly once in commit-snapshot order, including one from a transaction that was open before
the previous poll; rolled-back events never; Ctrl-C ends it with exit code 0."""

from __future__ import annotations

import json
import os
import queue as queue_mod
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from engine.pgq import api

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def qdsn(make_db):
    dsn = make_db(("pgq",))
    with psycopg.connect(dsn, autocommit=True) as c:
        api.create_queue(c, "tailq")
    return dsn


class _Lines:
    """Reads a process's stdout on a thread so the test can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.q: queue_mod.Queue[str] = queue_mod.Queue()
        self.thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self.thread.start()

    def _pump(self, proc):
        for line in proc.stdout:
            self.q.put(line)

    def take(self, n: int, timeout: float = 20.0) -> list[dict]:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected {n} lines, got {out}")
            try:
                out.append(json.loads(self.q.get(timeout=left)))
            except queue_mod.Empty:
                continue
        return out

    def nothing_for(self, seconds: float) -> list[str]:
        time.sleep(seconds)
        extra = []
        while not self.q.empty():
            extra.append(self.q.get_nowait())
        return extra


def _insert(conn, data: str) -> int:
    return api.insert_event(conn, "tailq", "tail", data)


def test_tail_without_follow_oldest_first(qdsn):
    from pgtt_tui.cli import app

    with psycopg.connect(qdsn, autocommit=True) as c:
        ids = [_insert(c, f"e{i}") for i in range(5)]
    res = CliRunner().invoke(app, ["queue", "tail", "tailq", "-n", "3", "--json", "--dsn", qdsn])
    assert res.exit_code == 0, res.output
    assert [e["ev_id"] for e in json.loads(res.stdout)] == ids[-3:]


def test_tail_follow_prints_each_committed_event_once(qdsn):
    with psycopg.connect(qdsn, autocommit=True) as c:
        before = [_insert(c, f"old{i}") for i in range(3)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pgtt_tui", "queue", "tail", "tailq", "--follow", "--json",
                             "-n", "2", "--interval", "0.1", "--dsn", qdsn],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        lines = _Lines(proc)
        # the two most recent events first, oldest first
        assert [e["ev_id"] for e in lines.take(2)] == before[-2:]

        with psycopg.connect(qdsn, autocommit=True) as c, psycopg.connect(qdsn) as long_tx, \
                psycopg.connect(qdsn) as aborted:
            # a transaction that inserts now but commits only after later events were printed
            late = _insert(long_tx, "late")
            _insert(aborted, "never")
            first = _insert(c, "first")
            assert [e["ev_id"] for e in lines.take(1)] == [first]
            aborted.rollback()
            second = _insert(c, "second")
            assert [(e["ev_id"], e["ev_data"]) for e in lines.take(1)] == [(second, "second")]
            time.sleep(0.5)  # several polls while "late" is still open: not printed yet
            long_tx.commit()
            got = lines.take(1)
            assert [(e["ev_id"], e["ev_data"], e["ev_type"]) for e in got] == [(late, "late", "tail")]
            burst = [_insert(c, f"burst{i}") for i in range(20)]
            assert [e["ev_id"] for e in lines.take(20)] == burst
        assert lines.nothing_for(1.0) == []  # no event twice, the rolled-back one never
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tail_follow_shows_how_far_a_backlog_catch_up_is(qdsn):
    """A poll that brings a backlog (2,500 events committed at once) prints them all, in
    order, and reports the catch-up on stderr: plain lines here (no terminal)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pgtt_tui", "queue", "tail", "tailq", "--follow", "--json",
                             "-n", "1", "--interval", "0.2", "--dsn", qdsn],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        lines = _Lines(proc)
        with psycopg.connect(qdsn, autocommit=True) as c:
            _insert(c, "ready")
        lines.take(1, timeout=60)  # the tail follows from here on
        with psycopg.connect(qdsn) as c:
            c.execute("SELECT pgq.insert_event('tailq', 'bulk', g::text) FROM generate_series(1, 2500) g")
            c.commit()
        got = lines.take(2500, timeout=60)
        assert [e["ev_data"] for e in got] == [str(n) for n in range(1, 2501)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        err = proc.stderr.read()
        assert "\r" not in err
        assert [line for line in err.splitlines() if line.startswith("catching up")] == [
            "catching up: 1000/2500 events", "catching up: 2000/2500 events", "catching up: 2500/2500 events"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
