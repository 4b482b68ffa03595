"""The same engine driving a cascade built on the real PgQ extensions (Debian
``postgresql-15-pgq3`` + ``postgresql-15-pgq-node``): our worker, plans and status on
``CREATE EXTENSION pgq, pgq_node`` nodes, and our pgq_node function contract checked against
the real one.  Skipped, with the reason, where the extensions are not installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from engine.embedded import Cluster
from tests import test_pgq_node_functions as fn_tests
from tests.test_cascade_flow import scenario

pytestmark = pytest.mark.timeout(240)
CANDIDATES = [os.environ.get("PGTT_TEST_PG_BINDIR"), "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
              "/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/18/bin"]


def ext_bindir() -> Path | None:
    for cand in CANDIDATES:
        if not cand or not (Path(cand) / "pg_config").exists():
            continue
        share = subprocess.run([str(Path(cand) / "pg_config"), "--sharedir"], capture_output=True, text=True).stdout
        ext = Path(share.strip()) / "extension"
        if (ext / "pgq.control").exists() and (ext / "pgq_node.control").exists():
            return Path(cand)
    return None


BINDIR = ext_bindir()
needs_ext = pytest.mark.skipif(BINDIR is None, reason="real pgq/pgq_node extensions not installed: apt-get install "
                                                      "postgresql-15-pgq3 postgresql-15-pgq-node")


@pytest.fixture
def ext_servers(pg_tmp_root):
    started = []

    def factory(n):
        for i in range(n):
            cl = Cluster(base=pg_tmp_root / f"ext{os.getpid()}_{len(started)}", bindir=BINDIR, fast=True,
                         settings={"max_connections": "100", "synchronous_commit": "on"})
            cl.init()
            cl.start()
            started.append(cl)
        return started[-n:]
    yield factory
    for cl in started:
        cl.destroy()


@needs_ext
def test_engine_drives_cascade_on_real_extensions(ext_servers, tmp_path):
    scenario(ext_servers(3), tmp_path, real_extensions=True)


@needs_ext
@pytest.mark.parametrize("case", ["test_locations", "test_root_node_and_subscribers",
                                  "test_consumers_and_demote_promote", "test_branch_leaf_merge_and_drop"])
def test_function_contract_matches_real_pgq_node(ext_servers, case):
    (server,) = ext_servers(1)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgq")
        conn.execute("CREATE EXTENSION pgq_node")
        getattr(fn_tests, case)(conn)


def _table_acl(conn) -> list[tuple]:
    """(schema.table, privilege, grantee) of pgq's and pgq_node's base tables, owner excluded."""
    return conn.execute(
        "SELECT c.oid::regclass::text, a.privilege_type, coalesce(r.rolname, 'public') "
        "FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE c.relkind = 'r' AND a.grantee <> c.relowner AND c.oid::regclass::text = ANY (%s) ORDER BY 1, 2, 3",
        (["pgq.consumer", "pgq.queue", "pgq.tick", "pgq.subscription", "pgq.event_template", "pgq.retry_queue",
          "pgq_node.node_location", "pgq_node.node_info", "pgq_node.local_state", "pgq_node.subscriber_info"],)
    ).fetchall()


@needs_ext
def test_table_privileges_match_the_real_extensions(ext_servers):
    """Who may read (and change) the pgq and pgq_node tables: as with CREATE EXTENSION."""
    from engine import schema

    (server,) = ext_servers(1)
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute("CREATE DATABASE real_ext")
        admin.execute("CREATE DATABASE ours")
    with psycopg.connect(server.dsn("real_ext"), autocommit=True) as real, \
            psycopg.connect(server.dsn("ours"), autocommit=True) as ours:
        real.execute("CREATE EXTENSION pgq")
        real.execute("CREATE EXTENSION pgq_node")
        schema.install(ours, ["pgtt", "pgq", "pgq_node"])
        assert _table_acl(ours) == _table_acl(real)
