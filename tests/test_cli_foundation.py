"""The CLI's foundation: db init/status, one-line errors and exit codes, embedded server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from engine.db import ConnSettings, MIN_SERVER_VERSION, check_server_version, redact

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pgtt_tui", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=full_env)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    # (a password in --dsn also gets its warning line, issue 14: not part of the error)
    lines = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("pgtt-tui: warning: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pgtt-tui: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_db_init_and_status_json(empty_dsn):
    result = run_cli("db", "init", "--dsn", empty_dsn, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert any(line.startswith("pgtt: installed") for line in data["changes"])
    again = run_cli("db", "init", "--dsn", empty_dsn)
    assert again.returncode == 0
    assert "nothing to do" in again.stdout
    status = run_cli("--dsn", empty_dsn, "db", "status", "--json")
    rows = {r["module"]: r for r in json.loads(status.stdout)}
    assert rows["pgtt"]["state"] == "up to date"


def test_db_init_selected_modules_only(empty_dsn):
    result = run_cli("db", "init", "--dsn", empty_dsn, "--modules", "timetable", "--json")
    assert result.returncode == 0, result.stderr
    states = {r["module"]: r["state"] for r in json.loads(result.stdout)["modules"]}
    assert states["pgq"] == "not installed"
    assert states["pgq_node"] == "not installed"


def test_unknown_module_names_the_field(empty_dsn):
    result = run_cli("db", "init", "--dsn", empty_dsn, "--modules", "timetable,nope")
    assert_one_line_error(result, 2, "--modules", "'nope'")
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('pgtt')").fetchone()[0] is None


def test_bad_dsn_syntax():
    assert_one_line_error(run_cli("db", "status", "--dsn", "nonsense=1"), 2, "--dsn", "nonsense")


def test_unreachable_server(tmp_path):
    assert_one_line_error(run_cli("db", "status", "--dsn", f"host={tmp_path} port=9 dbname=x"), 3,
                          "cannot connect", "is the server running")


def test_wrong_password_is_one_line_and_never_shows_the_password(pg_cluster, conn):
    conn.execute("DROP ROLE IF EXISTS pgtt_pw")
    conn.execute("CREATE ROLE pgtt_pw LOGIN PASSWORD 'right-secret'")
    try:
        bad = pg_cluster.tcp_dsn("postgres", "pgtt_pw", "wrong-secret")
        result = run_cli("db", "status", "--dsn", bad)
        assert_one_line_error(result, 3, "password authentication failed", "check the password")
        assert "wrong-secret" not in result.stderr
        good = run_cli("db", "status", "--dsn", pg_cluster.tcp_dsn("postgres", "pgtt_pw", "right-secret"))
        assert good.returncode == 0, good.stderr
    finally:
        conn.execute("DROP ROLE pgtt_pw")


def test_old_server_versions_are_refused_with_a_clear_message():
    assert MIN_SERVER_VERSION == 130000
    check_server_version(130000)
    with pytest.raises(Exception, match="12.22 is too old: pgtt-tui needs PostgreSQL 13 or newer"):
        check_server_version(120022)


def test_redact_hides_passwords_in_dsns_and_uris():
    assert "s3cret" not in redact("host=x password=s3cret dbname=y")
    assert "s3cret" not in redact("host=x password='s3 cret' dbname=y".replace("s3 cret", "s3cret"))
    assert "s3cret" not in redact("postgresql://bob:s3cret@db.example/prod")
    assert redact("postgresql://bob:s3cret@db/prod") == "postgresql://bob:***@db/prod"


def test_read_only_settings_make_the_server_refuse_writes(dsn):
    from engine.db import connect

    with connect(ConnSettings(dsn=dsn, read_only=True)) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE nope (x int)")


def test_version_flag():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("pgtt-tui ")


def test_connect_waiting_waits_for_a_server_that_comes_up(tmp_path):
    import threading
    import time as _time

    from engine.db import connect_waiting
    from engine.embedded import Cluster

    from conftest import _test_bindir

    root = Path(tempfile.mkdtemp(prefix="pgtt-wait-"))
    root.chmod(0o755)
    cluster = Cluster(base=root / "c", bindir=_test_bindir(), fast=True)
    cluster.init()
    try:
        starter = threading.Timer(1.5, cluster.start)
        starter.start()
        t0 = _time.monotonic()
        with connect_waiting(ConnSettings(dsn=cluster.dsn()), 60) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert _time.monotonic() - t0 >= 1.0  # it really waited
        starter.join()
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


def test_connect_waiting_does_not_wait_for_a_wrong_password(pg_cluster, conn):
    import time as _time

    from engine.db import connect_waiting
    from engine.errors import ConnectError

    conn.execute("DROP ROLE IF EXISTS pgtt_pw2")
    conn.execute("CREATE ROLE pgtt_pw2 LOGIN PASSWORD 'right'")
    try:
        t0 = _time.monotonic()
        with pytest.raises(ConnectError, match="password authentication failed"):
            connect_waiting(ConnSettings(dsn=pg_cluster.tcp_dsn("postgres", "pgtt_pw2", "wrong")), 60)
        assert _time.monotonic() - t0 < 10
    finally:
        conn.execute("DROP ROLE pgtt_pw2")


def test_a_missing_module_exits_4_naming_the_command_that_installs_it(make_db):
    dsn = make_db(("schedule",))
    for args, module in ((("chain", "list"), "timetable"), (("chain", "show", "x"), "timetable"),
                         (("queue", "list"), "pgq")):
        result = run_cli(*args, "--dsn", dsn)
        assert result.returncode == 4, (args, result.stderr)
        assert f"pgtt-tui db init --modules {module}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_queue_list_humanises_lags_and_rates_but_json_keeps_raw_numbers():
    import datetime as dt

    from pgtt_tui.cli.common import format_table

    rows = [{"queue_name": "q", "ticker_lag": dt.timedelta(minutes=21, seconds=19.96), "ev_per_sec": 1.355968730276305}]
    text = format_table(rows)
    assert "21m19s" in text and "1.36" in text
    assert "0:21:19" not in text and "1.3559" not in text
