"""Installing, upgrading and using pgtt-tui on SQL_ASCII, LATIN1 and UTF8 databases.

``initdb --no-locale`` makes SQL_ASCII databases; with the client encoding following the
database, psycopg returned every text value as bytes there (the ledger read as
``b'pgtt'``, so a second ``db init`` re-ran installed files) and refused to send any
non-ASCII character. Our connections now always speak UTF8, and the SQL files are ASCII.
"""

from __future__ import annotations

import json
import shutil

import psycopg
import pytest
from psycopg import sql

from engine import schema
from engine.db import ConnSettings, connect
from engine.errors import SchemaError
from engine.paths import sql_root
from engine.timetable import api as tt_api
from tests.test_cli_foundation import assert_one_line_error, run_cli

ENCODINGS = ("SQL_ASCII", "LATIN1", "UTF8")


@pytest.fixture
def make_encoded_db(pg_cluster):
    created: list[str] = []

    def factory(encoding: str) -> str:
        name = f"enc_{encoding.lower()}_{len(created)}_{id(created) % 100000}"
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {} ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
                          .format(sql.Identifier(name), sql.Literal(encoding)))
        created.append(name)
        return pg_cluster.dsn(name)

    yield factory
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        for name in created:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def sql_copy(tmp_path, monkeypatch):
    """A private copy of sql/ the migrator reads instead of the shipped one."""
    root = tmp_path / "sql"
    shutil.copytree(sql_root(), root)
    monkeypatch.setattr(schema, "sql_root", lambda: root)
    schema.migrations.cache_clear()
    yield root
    schema.migrations.cache_clear()


def test_every_sql_file_is_ascii():
    files = sorted(sql_root().rglob("*.sql"))
    assert files
    bad = []
    for path in files:
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if any(b > 127 for b in line):
                bad.append(f"{path.relative_to(sql_root())}:{n}")
    assert not bad, f"non-ASCII characters in SQL files: {bad}"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_db_init_twice_and_upgrade_on_each_encoding(make_encoded_db, encoding):
    dsn = make_encoded_db(encoding)
    first = run_cli("db", "init", "--dsn", dsn, "--json")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    again = run_cli("db", "init", "--dsn", dsn)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    upgrade = run_cli("db", "upgrade", "--dsn", dsn)
    assert upgrade.returncode == 0, upgrade.stderr
    status = run_cli("--dsn", dsn, "db", "status", "--json")
    states = {r["module"]: r["state"] for r in json.loads(status.stdout)}
    assert set(states.values()) == {"up to date"}, states


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_upgrade_from_the_first_versions_on_each_encoding(make_encoded_db, sql_copy, encoding):
    dsn = make_encoded_db(encoding)
    held = {}
    for folder in sql_copy.iterdir():  # keep only each module's first file: "the old release"
        files = sorted(folder.glob("*.sql"))
        held[folder.name] = [(f, f.read_bytes()) for f in files[1:]]
        for f in files[1:]:
            f.unlink()
    schema.migrations.cache_clear()
    with connect(ConnSettings(dsn=dsn)) as conn:
        schema.install(conn, schema.parse_modules(None))
        assert all(v == 1 for v in schema.installed_versions(conn).values())
        for files in held.values():
            for f, data in files:
                f.write_bytes(data)
        schema.migrations.cache_clear()
        done = schema.install(conn, list(schema.MODULES), upgrade_only=True)
        assert done and all("upgraded" in line for line in done), done
        assert {s.state for s in schema.status(conn)} == {"up to date"}


def test_a_failed_install_is_safe_to_rerun_after_the_fix(make_encoded_db, sql_copy):
    dsn = make_encoded_db("SQL_ASCII")
    broken = sorted((sql_copy / "timetable").glob("*.sql"))[-1]
    good = broken.read_bytes()
    broken.write_bytes(good + b"\nSELECT 1 / 0;\n")
    with psycopg.connect(dsn, autocommit=True) as conn:  # a bare connection, as the tests and scripts use
        with pytest.raises(SchemaError, match=f"{broken.name}: division by zero"):
            schema.install(conn, schema.parse_modules(None))
        installed = schema.installed_versions(conn)
        assert "timetable" not in installed and "schedule" not in installed  # its transaction rolled back as a whole
        assert installed["pgtt"] == schema.available_version("pgtt")
        assert conn.execute("SELECT to_regclass('timetable.chain')").fetchone()[0] is None
        broken.write_bytes(good)
        done = schema.install(conn, schema.parse_modules(None))
        assert done == [f"timetable: installed to version {schema.available_version('timetable')}",
                        f"schedule: installed to version {schema.available_version('schedule')}"], done
        assert {s.state for s in schema.status(conn)} == {"up to date"}


def test_a_file_that_cannot_be_read_is_one_schema_error(empty_dsn, sql_copy):
    broken = sorted((sql_copy / "timetable").glob("*.sql"))[-1]
    broken.write_bytes(b"-- \xff not utf-8\nSELECT 1;\n")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        with pytest.raises(SchemaError, match=f"{broken.name}: "):
            schema.install(conn, schema.parse_modules("timetable"))


def test_cli_db_init_turns_any_failure_into_one_line(empty_dsn, monkeypatch, capsys):
    from pgtt_tui.cli import main  # noqa: PLC0415

    def missing():  # what engine.paths.sql_root raises in a damaged installation
        raise FileNotFoundError("the SQL modules are missing: looked in /x/_sql and /x/sql")

    monkeypatch.setattr(schema, "sql_root", missing)
    schema.migrations.cache_clear()
    try:
        for command in (["db", "init"], ["db", "upgrade"]):
            with pytest.raises(SystemExit) as exit_info:
                main([*command, "--dsn", empty_dsn])
            err = capsys.readouterr().err
            assert exit_info.value.code == 4, err
            assert err.count("\n") == 1 and err.startswith("pgtt-tui: error: "), err
            assert "the SQL modules are missing" in err and "Traceback" not in err, err
    finally:
        schema.migrations.cache_clear()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_non_ascii_chain_names_round_trip(make_encoded_db, encoding):
    dsn = make_encoded_db(encoding)
    # LATIN1 holds u-umlaut and e-acute but no en dash or euro sign
    name = "Pr\u00fcfung caf\u00e9" + ("" if encoding == "LATIN1" else " \u2013 \u20ac")
    with connect(ConnSettings(dsn=dsn)) as conn:
        schema.install(conn, schema.parse_modules("timetable"))
        cid = tt_api.create_chain(conn, name, "@every 1 hour")
        assert [c["chain_name"] for c in tt_api.list_chains(conn)] == [name]
        assert tt_api.get_chain(conn, cid)["chain_name"] == name
        assert tt_api.get_chain(conn, name)["chain_id"] == cid
    listed = run_cli("--dsn", dsn, "chain", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [c["chain_name"] for c in json.loads(listed.stdout)] == [name]


def test_control_characters_are_still_refused_on_sql_ascii(make_encoded_db):
    dsn = make_encoded_db("SQL_ASCII")
    with connect(ConnSettings(dsn=dsn)) as conn:
        schema.install(conn, schema.parse_modules("timetable"))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="control characters"):
            conn.execute("INSERT INTO timetable.chain (chain_name) VALUES (%s)", ("bad\x07name",))


def test_a_name_the_database_encoding_cannot_hold_is_one_line(make_encoded_db):
    dsn = make_encoded_db("LATIN1")
    with connect(ConnSettings(dsn=dsn)) as conn:
        schema.install(conn, schema.parse_modules("timetable"))
    result = run_cli("--dsn", dsn, "chain", "create", "price \u20ac", "--schedule", "@every 1 hour")
    assert_one_line_error(result, 1, "LATIN1")
