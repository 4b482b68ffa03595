"""Parity with PgQ's own C triggers, live: every scenario of tests/pgq_trigger_cases.py runs on
our pgq module and on the real extension (CREATE EXTENSION pgq, Debian postgresql-NN-pgq3) in
another database of the same server; statement results and events must be identical.

Skipped when the server has no pgq extension (e.g. the embedded PostgreSQL 18); run with
PGTT_TEST_PG_BINDIR=/usr/lib/postgresql/15/bin after `apt-get install postgresql-15-pgq3`."""

from __future__ import annotations

import psycopg
import pytest

from tests.pgq_trigger_cases import SCENARIOS, run_scenario


@pytest.fixture
def extension_dsn(make_db) -> str:
    dsn = make_db(())
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pgq'").fetchone() is None:
            pytest.skip("the real pgq extension is not available on this server "
                        "(apt-get install postgresql-15-pgq3 and set PGTT_TEST_PG_BINDIR=/usr/lib/postgresql/15/bin)")
        conn.execute("CREATE EXTENSION pgq")
    return dsn


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_events_as_pgq_c_triggers(make_db, extension_dsn, name):
    ours = run_scenario(make_db(("pgq",)), SCENARIOS[name])
    theirs = run_scenario(extension_dsn, SCENARIOS[name])
    assert ours == theirs
