"""The one connection layer: settings, connections, pools, errors, read-only, back-off.

Where the connection comes from, in order:
1. ``--dsn`` (a libpq connection string or URI; ``service=NAME`` uses pg_service.conf);
2. the libpq environment (``PGHOST``, ``PGSERVICE``, ``PGDATABASE``, ``PGPORT``, ``PGUSER``):
   if any of these is set, libpq takes it from there;
3. otherwise the per-user embedded server (started on demand).

Every connection carries ``application_name`` so the console's sessions view and
``pg_stat_activity`` say who is who; connect and statement timeouts are set on the
connection; read-only mode sets ``default_transaction_read_only`` so the server itself
refuses writes, whatever the caller does.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace

import psycopg
from psycopg import conninfo as pg_conninfo

from engine.errors import ConnectError, InputError, ReadOnlyError

MIN_SERVER_VERSION = 130000
LIBPQ_ENV = ("PGHOST", "PGHOSTADDR", "PGSERVICE", "PGDATABASE", "PGPORT", "PGUSER")
DEFAULT_APP_NAME = "pgtt-tui"
CLIENT_ENCODING = "UTF8"


@dataclass(frozen=True)
class ConnSettings:
    dsn: str = ""
    application_name: str = DEFAULT_APP_NAME
    connect_timeout: int = 10  # seconds
    statement_timeout_ms: int = 0  # 0 = server default
    read_only: bool = False

    def conninfo(self, **overrides: object) -> str:
        """The final libpq string; our settings win over the DSN's own unless overridden."""
        try:
            params = pg_conninfo.conninfo_to_dict(self.dsn) if self.dsn else {}
        except psycopg.ProgrammingError as exc:
            raise InputError("--dsn", f"not a valid connection string: {_first_line(exc)}") from None
        params.setdefault("application_name", self.application_name)
        params.setdefault("connect_timeout", str(self.connect_timeout))
        # always UTF8: on a SQL_ASCII database the client encoding would otherwise follow
        # the database and psycopg return text as bytes; on LATIN1 a character the
        # database cannot hold is then refused by the server with one clear error
        params["client_encoding"] = CLIENT_ENCODING
        options = [params.pop("options", "")] if params.get("options") else []
        if self.statement_timeout_ms:
            options.append(f"-c statement_timeout={int(self.statement_timeout_ms)}")
        if self.read_only:
            options.append("-c default_transaction_read_only=on")
        if options:
            params["options"] = " ".join(options)
        params.update({k: v for k, v in overrides.items() if v is not None})
        return pg_conninfo.make_conninfo(**params)

    def with_app(self, name: str) -> ConnSettings:
        return replace(self, application_name=name)

    def describe(self) -> str:
        """host:port/db for headers and messages, never the password."""
        return redact(self.dsn) if self.dsn else "(libpq environment)"


def env_names_a_server() -> bool:
    return any(os.environ.get(name) for name in LIBPQ_ENV)


def resolve_settings(dsn: str | None, *, application_name: str = DEFAULT_APP_NAME, read_only: bool = False,
                     statement_timeout_ms: int = 0, connect_timeout: int = 10) -> ConnSettings:
    """Settings from --dsn, else the libpq environment, else the embedded server."""
    if dsn is not None and not dsn.strip():
        raise InputError("--dsn", "is empty")
    if dsn is None and not env_names_a_server():
        from engine import embedded  # noqa: PLC0415 - starts a server only when needed

        cluster = embedded.ensure_shared_running()
        dsn = cluster.dsn(_embedded_working_database(cluster.dsn()))
    settings = ConnSettings(dsn=dsn or "", application_name=application_name, read_only=read_only,
                            statement_timeout_ms=statement_timeout_ms, connect_timeout=connect_timeout)
    settings.conninfo()  # validates the DSN syntax now, with the field named
    return settings


#: where ``pgtt-tui demo`` loads its data (engine.demo); on the embedded server a command
#: without --dsn works there once it exists, so the CLI sees what the demo console shows
DEMO_DATABASE = "pgtt_demo"


def _embedded_working_database(admin_dsn: str) -> str:
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DATABASE,)).fetchone()
    except psycopg.Error:
        return "postgres"  # the connection itself will report what is wrong
    return DEMO_DATABASE if found else "postgres"


# key=value: ``password`` (and ``sslpassword``, ``PGPASSWORD=``) with optional spaces around
# '=', then a quoted value (backslash escapes, as libpq reads it) or an unquoted one up to
# whitespace (a backslash escapes the next character).  In a URI query (after ? or &) the
# value ends at &, # or whitespace.  In a URI's user info the secret runs from the colon
# after the user name to the @ (libpq allows neither / nor @ unencoded in it).  Closing
# punctuation right before the end of an unquoted value (``'...password=x'``, ``(...)``,
# ``...: error``) is taken for the message's own and kept.
_TRAILER = r"""[:,;)\]'"]*"""
_KV_PASSWORD_RE = re.compile(
    r"(?P<key>password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\\])+?(?=" + _TRAILER + r"(?:\s|$)))",
    re.IGNORECASE)
_QUERY_PASSWORD_RE = re.compile(
    r"(?P<key>[?&](?:ssl)?password=)(?P<value>[^&#\s]*?(?=" + _TRAILER + r"(?:[&#\s]|$)))", re.IGNORECASE)
_URI_PASSWORD_RE = re.compile(r"(?P<key>postgres(?:ql)?://[^:/@\s?#]*:)(?P<value>[^@/\s]*)(?=@)", re.IGNORECASE)
#: a value that is already our mask
_MASKED = re.compile(r"\*\*\*")
MASK = "***"


def _mask(match: re.Match) -> str:
    value = match.group("value")
    if not value or _MASKED.fullmatch(value):
        return match.group(0)  # nothing there, or redacted already: keep the text around it
    return match.group("key") + MASK


def redact(text: str) -> str:
    """Hide passwords in a DSN or in any message that might echo one; only the secret is
    replaced (by ``***``), the text around it is kept, and redacting twice changes nothing."""
    text = _URI_PASSWORD_RE.sub(_mask, text)
    text = _QUERY_PASSWORD_RE.sub(_mask, text)
    # key=value pairs outside URI queries (those were handled above)
    return _KV_PASSWORD_RE.sub(lambda m: m.group(0) if m.start() > 0 and text[m.start() - 1] in "?&"
                               else _mask(m), text)


def _first_line(exc: BaseException) -> str:
    return redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def explain_connect_error(exc: BaseException, settings: ConnSettings) -> ConnectError:
    """Turn libpq's multi-line failure into one line that says what to do."""
    text = str(exc)
    where = settings.describe()
    low = text.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        hint = "check the password (~/.pgpass, PGPASSWORD, or -W to type it)"
    elif "does not exist" in low and "database" in low:
        hint = "create the database first or name another one with dbname="
    elif "role" in low and "does not exist" in low:
        hint = "connect as an existing role (user= in --dsn or PGUSER)"
    elif "connection refused" in low or "no such file or directory" in low or "could not translate host" in low:
        hint = "is the server running, and are host and port right?"
    elif "timeout expired" in low:
        hint = "the server did not answer in time: check the network or raise connect_timeout"
    elif "service" in low and ("not found" in low or "definition" in low):
        hint = "check the service name in pg_service.conf (PGSERVICEFILE)"
    else:
        hint = "check --dsn or the PG* environment variables"
    # a multi-host DSN with target_session_attrs=read-write (or primary) found only
    # standbys: the primary is down or not yet promoted; waiting (promotion) fixes it
    standby = any(word in low for word in (
        "session is read-only", "server is in hot standby mode", "could not make a writable connection"
    )) and not any(word in low for word in ("authentication failed", "does not exist", "no password"))
    if standby:
        hint = "only standby (read-only) servers answered: the primary is down or not promoted yet"
    error = ConnectError(f"cannot connect to {where}: {_first_line(exc)} — {hint}")
    error.standby = standby
    # worth waiting for: the server is down, starting, shutting down or unreachable; not
    # worth it: bad credentials, a missing database or role, a wrong service name
    error.retryable = any(word in low for word in (
        "connection refused", "no such file or directory", "timeout expired", "starting up",
        "shutting down", "not yet accepting", "in recovery mode", "could not translate host",
        "server closed the connection", "too many clients")) or standby
    return error


def check_server_version(version: int) -> None:
    """Refuse servers older than PostgreSQL 13 (server_version_num form, e.g. 120022)."""
    if version < MIN_SERVER_VERSION:
        raise ConnectError(
            f"server version {version // 10000}.{version % 10000} is too old: pgtt-tui needs PostgreSQL 13 or newer"
        )


def check_server(conn: psycopg.Connection | psycopg.AsyncConnection) -> None:
    check_server_version(conn.info.server_version)


def connect(settings: ConnSettings, *, autocommit: bool = True, **overrides: object) -> psycopg.Connection:
    """A checked synchronous connection, or ConnectError with one clear line."""
    try:
        conn = psycopg.connect(settings.conninfo(**overrides), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise explain_connect_error(exc, settings) from None
    try:
        check_server(conn)
    except ConnectError:
        conn.close()
        raise
    return conn


#: connection attempts in progress (see ``aconnect``), so that an engine can let the ones its
#: cancelled callers left behind finish before its event loop ends (``settle_connects``)
_ATTEMPTS: set[asyncio.Task] = set()


async def _attempt(conninfo: str, autocommit: bool) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=autocommit)


def _close_abandoned(attempt: asyncio.Task) -> None:
    """Done-callback of an attempt whose caller was cancelled: close what it opened."""
    if attempt.cancelled() or attempt.exception() is not None:
        return  # failed attempts are closed by psycopg (the server answered, or timed out)
    attempt.result().pgconn.finish()


async def aconnect(settings: ConnSettings, *, autocommit: bool = True, **overrides: object) -> psycopg.AsyncConnection:
    """A checked asyncio connection, or ConnectError with one clear line.

    Cancelling the caller never cuts an attempt short: psycopg would leave the half-open
    socket (SSL request or startup packet sent, answer unread) to the garbage collector,
    and a server shutting down waits for such a client until ``authentication_timeout``
    (PostgreSQL <= 16 waits for its "dead-end" children).  The attempt runs in its own
    task, bounded by ``connect_timeout``, and the connection is closed as soon as it is
    made if nobody wants it any more.
    """
    attempt = asyncio.ensure_future(_attempt(settings.conninfo(**overrides), autocommit))
    _ATTEMPTS.add(attempt)
    attempt.add_done_callback(_ATTEMPTS.discard)
    try:
        conn = await asyncio.shield(attempt)
    except asyncio.CancelledError:
        attempt.add_done_callback(_close_abandoned)  # runs at once if it is already done
        raise
    except psycopg.OperationalError as exc:
        raise explain_connect_error(exc, settings) from None
    try:
        check_server(conn)
    except ConnectError:
        await conn.close()
        raise
    return conn


async def settle_connects(timeout: float = 15.0) -> None:
    """Wait (bounded) for the connection attempts of this event loop that are still in
    progress: each ends with its connection closed if its caller was cancelled.  Call it
    before the loop ends, so that no attempt is cut short by the loop's own shutdown."""
    loop = asyncio.get_running_loop()
    mine = [t for t in _ATTEMPTS if t.get_loop() is loop and not t.done()]
    if mine:
        await asyncio.wait(mine, timeout=timeout)


def make_pool(settings: ConnSettings, *, min_size: int = 1, max_size: int = 4, name: str | None = None):
    """A psycopg_pool ConnectionPool (autocommit connections) for the console's workers."""
    from psycopg_pool import ConnectionPool  # noqa: PLC0415 - optional at import time

    return ConnectionPool(settings.conninfo(), min_size=min_size, max_size=max_size, name=name,
                          kwargs={"autocommit": True}, open=True, timeout=settings.connect_timeout,
                          check=ConnectionPool.check_connection)


def make_async_pool(settings: ConnSettings, *, min_size: int = 1, max_size: int = 8, name: str | None = None):
    """An AsyncConnectionPool for the engine's asyncio services (opened by the caller)."""
    from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415

    return AsyncConnectionPool(settings.conninfo(), min_size=min_size, max_size=max_size, name=name,
                               kwargs={"autocommit": True}, open=False, timeout=settings.connect_timeout,
                               check=AsyncConnectionPool.check_connection)


#: while the server cannot be reached (down, restarting), reconnect loops probe at least this
#: often, so that the engine is back within about a second of the server (back-off up to it)
UNREACHABLE_PROBE_MAX = 1.0


def is_connection_loss(exc: BaseException) -> bool:
    """The connection to the server is gone or cannot be made (server restart, crash,
    network): worth a reconnect, and the reason a run in progress was interrupted."""
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, ConnectError, ConnectionError))


def connection_lost_reason(exc: BaseException) -> str:
    """"database connection lost: <the server's or libpq's message>" (one line)."""
    return f"database connection lost: {_first_line(exc)}"


def backoff_delays(initial: float = 0.2, maximum: float = 30.0, factor: float = 2.0) -> Iterator[float]:
    """Exponential back-off with full jitter for reconnect loops (never-ending iterator)."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(maximum, delay * factor)


def connect_with_retry(settings: ConnSettings, *, attempts: int | None = None, sleep=time.sleep,
                       **kw: object) -> psycopg.Connection:
    """Reconnect with back-off; ``attempts=None`` retries for ever (workers do that)."""
    last: ConnectError | None = None
    for n, delay in enumerate(backoff_delays()):
        if attempts is not None and n >= attempts:
            break
        try:
            return connect(settings, **kw)
        except ConnectError as exc:
            last = exc
            sleep(delay)
    assert last is not None
    raise last


def connect_waiting(settings: ConnSettings, wait_seconds: float, *, sleep=time.sleep,
                    **kw: object) -> psycopg.Connection:
    """Connect, waiting up to ``wait_seconds`` while the server is down or starting.

    For services started together with their database (systemd, containers): a server
    that is not up yet is waited for with back-off; a wrong password, database or role
    fails at once, since waiting cannot fix it.
    """
    deadline = time.monotonic() + max(0.0, wait_seconds)
    delays = backoff_delays(initial=0.2, maximum=5.0)
    while True:
        try:
            return connect(settings, **kw)
        except ConnectError as exc:
            if not getattr(exc, "retryable", False) or time.monotonic() >= deadline:
                raise
            sleep(min(next(delays), max(0.0, deadline - time.monotonic())))


async def aconnect_with_retry(settings: ConnSettings, *, attempts: int | None = None,
                              **kw: object) -> psycopg.AsyncConnection:
    last: ConnectError | None = None
    for n, delay in enumerate(backoff_delays()):
        if attempts is not None and n >= attempts:
            break
        try:
            return await aconnect(settings, **kw)
        except ConnectError as exc:
            last = exc
            await asyncio.sleep(delay)
    assert last is not None
    raise last


def guard_write(settings: ConnSettings, what: str) -> None:
    """Refuse a write action in read-only mode before touching the database.

    The server refuses too (default_transaction_read_only), so this is the friendly
    message, not the only line of defence.
    """
    if settings.read_only:
        raise ReadOnlyError(f"read-only mode: {what} is not allowed (start without --read-only to change things)")


def translate_db_error(exc: psycopg.Error) -> str:
    """A database error as one line: the server's message, its detail and hint."""
    diag = getattr(exc, "diag", None)
    parts = [(diag.message_primary if diag and diag.message_primary else str(exc).strip().splitlines()[0])]
    if diag and diag.message_detail:
        parts.append(diag.message_detail)
    if diag and diag.message_hint:
        parts.append(f"hint: {diag.message_hint}")
    return redact(" — ".join(p for p in parts if p))


async def listen(conn: psycopg.AsyncConnection, channel: str) -> AsyncIterator[psycopg.Notify]:
    """LISTEN on a channel (quoted identifier) and yield notifications."""
    from psycopg import sql  # noqa: PLC0415

    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    async for notify in conn.notifies():
        yield notify


def array_literal(values) -> str:
    """A PostgreSQL array literal (text) of ints, strings, None and timezone-aware datetimes,
    to send with a ``::type[]`` cast.  For batches of plain values this is several times
    cheaper than letting psycopg adapt a Python list element by element; every element is
    quoted, with backslash and double quote escaped as the array syntax requires."""
    parts = []
    for v in values:
        if v is None:
            parts.append("NULL")
            continue
        if hasattr(v, "isoformat"):
            if getattr(v, "tzinfo", None) is None:
                raise ValueError("timestamps in array literals must be timezone-aware")
            text = v.isoformat()
        else:
            text = str(v)
        parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"
