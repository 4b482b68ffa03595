"""The console's connections: one per purpose, opened lazily, reopened after a loss.

Purposes keep slow things from blocking fast ones (dolphie's main vs secondary
connection): ``poll`` for the views' refresh, ``action`` for what the operator asks,
``tail`` for the live log, ``lookup`` for the command palette. Each connection has a
lock, so two workers never share one at the same moment. Everything here runs in worker
threads; nothing touches widgets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from engine.db import ConnSettings, connect, translate_db_error
from engine.errors import ConnectError

T = TypeVar("T")


class ConnectionLost(Exception):
    """The database went away (or never answered); the message says why."""


@dataclass
class ServerInfo:
    where: str = ""
    role: str = ""
    version: str = ""
    in_recovery: bool = False

    def as_text(self) -> str:
        return f"{self.where} · {self.role} · PG {self.version}"


_INFO_SQL = """
SELECT coalesce(inet_server_addr()::text, 'local') AS host, current_database() AS db,
       current_user AS role, current_setting('server_version') AS version, pg_is_in_recovery() AS recovery
"""


class Db:
    def __init__(self, settings: ConnSettings):
        self.settings = settings
        self._conns: dict[str, psycopg.Connection | None] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.closed = False

    def _lock(self, purpose: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(purpose, threading.Lock())

    def _conn(self, purpose: str) -> psycopg.Connection:
        conn = self._conns.get(purpose)
        if conn is None or conn.closed or conn.broken:
            if self.closed:
                raise ConnectionLost("the console is closing")
            app = f"{self.settings.application_name} {purpose}".strip()
            try:
                conn = connect(self.settings, application_name=app)
            except ConnectError as exc:
                raise ConnectionLost(str(exc)) from None
            self._conns[purpose] = conn
        return conn

    def run(self, purpose: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Call ``fn(conn, *args, **kw)`` on the purpose's connection.

        A lost connection raises ConnectionLost (the next call reconnects); any other
        error (a PgttError, a database error) passes through unchanged.
        """
        with self._lock(purpose):
            conn = self._conn(purpose)
            try:
                return fn(conn, *args, **kw)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if conn.closed or conn.broken:
                    self._drop(purpose)
                    raise ConnectionLost(translate_db_error(exc)) from None
                self._rollback(conn)
                raise
            except psycopg.Error:
                self._rollback(conn)
                raise

    @staticmethod
    def _rollback(conn: psycopg.Connection) -> None:
        try:
            if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
        except psycopg.Error:
            pass

    def _drop(self, purpose: str) -> None:
        conn = self._conns.pop(purpose, None)
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def server_info(self) -> ServerInfo:
        def fetch(conn: psycopg.Connection) -> ServerInfo:
            row = conn.execute(_INFO_SQL).fetchone()
            host = conn.info.host or row[0]
            if host.startswith("/"):
                host = "local"
            return ServerInfo(where=f"{host}:{conn.info.port}/{row[1]}", role=row[2],
                              version=row[3].split()[0], in_recovery=bool(row[4]))

        return self.run("poll", fetch)

    def cancel(self, purpose: str) -> None:
        """Ask the server to cancel what the purpose's connection is running (from any thread)."""
        conn = self._conns.get(purpose)
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe()
            except (psycopg.Error, AttributeError):
                pass

    def close(self) -> None:
        self.closed = True
        for purpose in list(self._conns):
            conn = self._conns.get(purpose)
            if conn is not None:
                conn.cancel_safe() if hasattr(conn, "cancel_safe") else None
            self._drop(purpose)
