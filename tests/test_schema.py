"""The migrator: ledger, idempotence, concurrency, outdated detection, privileges."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from engine import schema
from engine.errors import InputError, SchemaError


def _conn(dsn):
    return psycopg.connect(dsn, autocommit=True)


def test_install_then_rerun_is_noop(empty_dsn):
    with _conn(empty_dsn) as conn:
        first = schema.install(conn, ["pgtt"])
        assert first == [f"pgtt: installed to version {schema.available_version('pgtt')}"]
        assert schema.install(conn, ["pgtt"]) == []
        rows = conn.execute("SELECT module, version, checksum FROM pgtt.schema_migration").fetchall()
        assert [(m, v) for m, v, _ in rows] == [("pgtt", v) for v in range(1, schema.available_version("pgtt") + 1)]
        assert all(len(c) == 64 for _, _, c in rows)


def test_status_reports_every_module(empty_dsn):
    with _conn(empty_dsn) as conn:
        before = {s.module: s.state for s in schema.status(conn)}
        assert set(before) == set(schema.MODULES)
        assert set(before.values()) == {"not installed"}
        schema.install(conn, schema.parse_modules(None))
        after = {s.module: s for s in schema.status(conn)}
        for module, st in after.items():
            if schema.available_version(module):
                assert st.state == "up to date", st
                assert st.installed == st.available


def test_outdated_schema_is_refused_with_the_upgrade_command(empty_dsn):
    with _conn(empty_dsn) as conn:
        schema.install(conn, ["pgtt"])
        schema.require_current(conn, ["pgtt"])
        top = schema.available_version("pgtt")
        # pretend the newest file was never applied; a row for the version before it stays
        # (when pgtt had one file, a fake version 0 row stood for the older release)
        conn.execute("DELETE FROM pgtt.schema_migration WHERE module = 'pgtt' AND version = %s", (top,))
        conn.execute("INSERT INTO pgtt.schema_migration (module, version, name, checksum) "
                     "VALUES ('pgtt', %s, 'older', 'x') ON CONFLICT DO NOTHING", (top - 1,))
        assert {s.module: s.state for s in schema.status(conn)}["pgtt"] == "outdated"
        with pytest.raises(SchemaError, match="pgtt-tui db upgrade"):
            schema.require_current(conn, ["pgtt"])


def test_missing_module_is_refused_with_the_init_command(empty_dsn):
    with _conn(empty_dsn) as conn:
        schema.install(conn, ["pgtt"])
        with pytest.raises(SchemaError, match="db init --modules pgq"):
            schema.require_current(conn, ["pgq"])


def test_parse_modules_adds_dependencies_and_names_bad_field():
    assert schema.parse_modules("pgq_node") == ["pgtt", "pgq", "pgq_node"]
    assert schema.parse_modules("timetable,pgq") == ["pgtt", "pgq", "timetable"]
    with pytest.raises(InputError, match=r"--modules: unknown module 'cron'"):
        schema.parse_modules("timetable,cron")


def test_two_processes_init_at_once_leave_one_consistent_schema(empty_dsn):
    code = (
        "import sys, psycopg; from engine import schema\n"
        "c = psycopg.connect(sys.argv[1], autocommit=True)\n"
        "print(len(schema.install(c, schema.parse_modules(None))))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_dsn], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    with _conn(empty_dsn) as conn:
        dupes = conn.execute(
            "SELECT module, version, count(*) FROM pgtt.schema_migration GROUP BY 1, 2 HAVING count(*) > 1").fetchall()
        assert dupes == []
        assert all(s.state == "up to date" for s in schema.status(conn) if s.available)
    # exactly one of them did the work; the others found nothing to do
    did_work = [int(out.strip()) for out, _ in outs]
    assert sorted(did_work)[:-1] == [0] * (len(did_work) - 1)


def test_role_without_create_gets_a_clear_error_and_nothing_changes(empty_dsn):
    with _conn(empty_dsn) as conn:
        conn.execute("DROP ROLE IF EXISTS pgtt_nocreate")
        conn.execute("CREATE ROLE pgtt_nocreate LOGIN")
        db = conn.info.dbname
        conn.execute(f'REVOKE CREATE ON DATABASE "{db}" FROM PUBLIC')
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        with psycopg.connect(empty_dsn.replace("user=postgres", "user=pgtt_nocreate"), autocommit=True) as weak:
            with pytest.raises(SchemaError, match='role "pgtt_nocreate" may not create schemas'):
                schema.install(weak, ["pgtt"])
        with _conn(empty_dsn) as conn:
            assert conn.execute("SELECT to_regnamespace('pgtt')").fetchone()[0] is None
    finally:
        with _conn(empty_dsn) as conn:
            conn.execute(f'REVOKE ALL ON DATABASE "{conn.info.dbname}" FROM pgtt_nocreate')
            conn.execute("DROP ROLE pgtt_nocreate")


def test_real_pgq_extension_is_left_in_place(empty_dsn):
    with _conn(empty_dsn) as conn:
        available = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'pgq'").fetchone()[0]
        if not available:
            pytest.skip("the real pgq extension is not installed on this server")
        conn.execute("CREATE EXTENSION pgq")
        done = schema.install(conn, ["pgtt", "pgq"])
        assert any("real extension pgq" in line and "left in place" in line for line in done)
        st = {s.module: s for s in schema.status(conn)}
        assert st["pgq"].state == "extension"
