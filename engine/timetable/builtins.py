"""BUILTIN tasks: pg_timetable's ten builtins with its parameter shapes (reference §4).

Each builtin is ``async def fn(ctx: BuiltinContext, params: object) -> BuiltinResult`` and
runs once per parameter row; ``params`` is the row's JSON value already decoded (``None``
when the task has no parameter row). Bad parameters raise :class:`InputError` naming the
field (``params.serverport: must be an integer``); other failures raise
:class:`BuiltinError`. :func:`execute_builtin` is what the executor calls: it looks the
name up, applies the task timeout and turns every failure into ``BuiltinResult(-1, why)``.

==================  =========================================================================
NoOp                any value; output ``NoOp task called with value: <json>``
Sleep               an integer number of seconds (``5`` or ``"5"``); cancellable
Log                 any JSON; written to the engine log at INFO (so it reaches timetable.log
                    through ``ctx.log``); output is the logged text
SendMail            {username, password, serverhost, serverport (587), senderaddr, toaddr[],
                    ccaddr[], bccaddr[], subject, msgbody, contenttype (text/plain),
                    attachment[] (local paths), attachmentdata[] ({name, base64data})}
                    TLS as pg_timetable's mail dialer: port 465 = implicit TLS, otherwise
                    STARTTLS when the server offers it; credentials are only sent over TLS
                    or to a loopback server; certificates are verified
Download            {workersnum, fileurls[], destpath}: http(s) only; ``destpath`` must be an
                    existing directory; the file name is the Content-Disposition file name,
                    else the last segment of the URL path (as grab does); ``workersnum <= 0``
                    = one worker per file
CopyFromFile        {sql: "COPY … FROM STDIN", filename}: client-side COPY, own connection
CopyToFile          {sql: "COPY … TO STDOUT", filename}
CopyToProgram       {sql: "COPY … TO STDOUT", cmd, args[]}: COPY output → program stdin
CopyFromProgram     {sql: "COPY … FROM STDIN", cmd, args[]}: program stdout → COPY
Shutdown            ignored; as pg_timetable: cancels every other chain running in this
                    engine (as a STOP: they end failed, "stopped by the Shutdown builtin …"),
                    stops the engine, which exits with code 5; the chain that called it
                    goes on to its end
==================  =========================================================================

``--no-program-tasks`` covers CopyToProgram and CopyFromProgram too (pg_timetable's gap,
§11.9): both start their program through :mod:`engine.timetable.programs`, which refuses.
The Copy* builtins use their own connection from ``ctx.connect`` (as pg_timetable: not
part of the chain transaction).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import json
import logging
import mimetypes
import os
import smtplib
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psycopg

from engine.errors import InputError, PgttError
from engine.timetable import programs

log = logging.getLogger("pgtt.timetable.builtins")

DEFAULT_SMTP_PORT = 587
DEFAULT_NETWORK_TIMEOUT = 60.0  # seconds, when the task has no timeout
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


class BuiltinError(PgttError):
    """A builtin failed for a reason other than bad parameters."""


@dataclass
class BuiltinResult:
    returncode: int  # 0 = success, -1 = failure (as pg_timetable records BUILTIN tasks)
    output: str


LogFn = Callable[[str, str, dict[str, Any]], Awaitable[None] | None]


def _default_connect_unset() -> AbstractAsyncContextManager[psycopg.AsyncConnection]:
    raise BuiltinError("this builtin needs a database connection, and none was provided")


@dataclass
class BuiltinContext:
    """What a builtin may use.

    connect: returns an async context manager yielding an (autocommit) psycopg
        AsyncConnection to the chain's database, released when the block ends.
    programs_allowed: False under ``--no-program-tasks``.
    request_shutdown: asks the engine to stop every chain and exit with code 5.
    log: ``log(level, message, data)`` into the engine log / timetable.log.
    timeout_ms: the task's effective timeout (0/None = none).
    """

    connect: Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection]] = _default_connect_unset
    programs_allowed: bool = True
    request_shutdown: Callable[[], None] | None = None
    log: LogFn | None = None
    timeout_ms: int | None = None
    output_limit: int = programs.DEFAULT_OUTPUT_LIMIT
    chain_id: int | None = None
    task_id: int | None = None
    client_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def connector(settings) -> Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection]]:
        """A ``connect`` factory opening a fresh connection from engine ConnSettings."""
        from engine.db import aconnect  # noqa: PLC0415

        @contextlib.asynccontextmanager
        async def factory():
            conn = await aconnect(settings)
            try:
                yield conn
            finally:
                await conn.close()

        return factory

    def network_timeout(self) -> float:
        return self.timeout_ms / 1000 if self.timeout_ms and self.timeout_ms > 0 else DEFAULT_NETWORK_TIMEOUT

    async def emit_log(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        if self.log is None:
            log.log(logging.getLevelName(level.upper()) if level.upper() != "PANIC" else logging.CRITICAL,
                    "%s", message)
            return
        result = self.log(level, message, data)
        if asyncio.iscoroutine(result):
            await result


BuiltinFn = Callable[[BuiltinContext, object], Awaitable[BuiltinResult]]


# ---- parameter validation ---------------------------------------------------------------------

def _json_text(value: object) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _object(params: object, known: set[str], builtin: str) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InputError("params", f"{builtin} needs a JSON object, got {_kind(params)}")
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(f"params.{unknown[0]}", f"unknown field for {builtin} (known: {', '.join(sorted(known))})")
    return params


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _str(obj: dict, key: str, *, required: bool = False, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise InputError(f"params.{key}", "is required")
        return default
    if not isinstance(value, str):
        raise InputError(f"params.{key}", f"must be a string, not {_kind(value)}")
    if required and not value.strip():
        raise InputError(f"params.{key}", "must not be empty")
    return value


def _int(obj: dict, key: str, default: int) -> int:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"params.{key}", f"must be an integer, not {_kind(value)}")
    return value


def _str_list(obj: dict, key: str) -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"params.{key}", f"must be an array of strings, not {_kind(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InputError(f"params.{key}[{i}]", f"must be a string, not {_kind(item)}")
    return value


# ---- simple builtins --------------------------------------------------------------------------

async def noop(ctx: BuiltinContext, params: object) -> BuiltinResult:
    return BuiltinResult(0, f"NoOp task called with value: {_json_text(params)}".rstrip())


def sleep_seconds(params: object) -> int:
    if isinstance(params, str) and params.strip().lstrip("+").isdigit():
        params = int(params.strip())
    if isinstance(params, bool) or not isinstance(params, int):
        raise InputError("params", f"Sleep needs an integer number of seconds, got {_kind(params)}")
    if params < 0:
        raise InputError("params", "Sleep needs a number of seconds >= 0")
    return params


async def sleep(ctx: BuiltinContext, params: object) -> BuiltinResult:
    seconds = sleep_seconds(params)
    await asyncio.sleep(seconds)
    return BuiltinResult(0, f"Sleep task called for {seconds} seconds")


async def log_task(ctx: BuiltinContext, params: object) -> BuiltinResult:
    text = _json_text(params)
    await ctx.emit_log("INFO", text, {"chain": ctx.chain_id, "task": ctx.task_id, "builtin": "Log"})
    return BuiltinResult(0, f"Log task called with value: {text}".rstrip())


async def shutdown(ctx: BuiltinContext, params: object) -> BuiltinResult:
    if ctx.request_shutdown is None:
        raise BuiltinError("Shutdown: this engine cannot be shut down from a task here")
    ctx.request_shutdown()
    return BuiltinResult(0, "Shutdown task called: running chains are cancelled and the engine stops (exit code 5)")


# ---- SendMail ---------------------------------------------------------------------------------

MAIL_FIELDS = {"username", "password", "serverhost", "serverport", "senderaddr", "toaddr", "ccaddr", "bccaddr",
               "subject", "msgbody", "contenttype", "attachment", "attachmentdata"}


@dataclass
class MailSpec:
    username: str
    password: str
    host: str
    port: int
    sender: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    body: str
    content_type: str
    attachments: list[str]
    attachment_data: list[tuple[str, bytes]]

    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


def parse_mail(params: object) -> MailSpec:
    obj = _object(params, MAIL_FIELDS, "SendMail")
    port = _int(obj, "serverport", DEFAULT_SMTP_PORT)
    if not 0 < port < 65536:
        raise InputError("params.serverport", "must be between 1 and 65535")
    content_type = _str(obj, "contenttype", default="text/plain") or "text/plain"
    if "/" not in content_type or content_type.split("/", 1)[0].lower() != "text":
        raise InputError("params.contenttype", "must be a text/* type such as text/plain or text/html")
    data_items: list[tuple[str, bytes]] = []
    raw = obj.get("attachmentdata")
    if raw is not None:
        if not isinstance(raw, list):
            raise InputError("params.attachmentdata", f"must be an array of objects, not {_kind(raw)}")
        for i, item in enumerate(raw):
            where = f"params.attachmentdata[{i}]"
            if not isinstance(item, dict):
                raise InputError(where, "must be an object with name and base64data")
            name, b64 = item.get("name"), item.get("base64data")
            if not isinstance(name, str) or not name.strip():
                raise InputError(f"{where}.name", "must be a non-empty string")
            if not isinstance(b64, str):
                raise InputError(f"{where}.base64data", "must be a base64 string")
            try:
                data_items.append((os.path.basename(name), base64.b64decode(b64, validate=True)))
            except (binascii.Error, ValueError):
                raise InputError(f"{where}.base64data", "is not valid base64") from None
    spec = MailSpec(
        username=_str(obj, "username"), password=_str(obj, "password"),
        host=_str(obj, "serverhost", required=True), port=port,
        sender=_str(obj, "senderaddr", required=True),
        to=_str_list(obj, "toaddr"), cc=_str_list(obj, "ccaddr"), bcc=_str_list(obj, "bccaddr"),
        subject=_str(obj, "subject"), body=_str(obj, "msgbody"), content_type=content_type,
        attachments=_str_list(obj, "attachment"), attachment_data=data_items)
    if not spec.recipients():
        raise InputError("params.toaddr", "at least one recipient (toaddr, ccaddr or bccaddr) is required")
    for key, addrs in (("toaddr", spec.to), ("ccaddr", spec.cc), ("bccaddr", spec.bcc),
                       ("senderaddr", [spec.sender])):
        for i, addr in enumerate(addrs):
            if "@" not in email.utils.parseaddr(addr)[1] or "\n" in addr or "\r" in addr:
                where = f"params.{key}" if key == "senderaddr" else f"params.{key}[{i}]"
                raise InputError(where, f"{addr!r} is not an e-mail address")
    return spec


def build_message(spec: MailSpec) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = spec.sender
    if spec.to:
        msg["To"] = ", ".join(spec.to)
    if spec.cc:
        msg["Cc"] = ", ".join(spec.cc)
    msg["Subject"] = spec.subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid()
    subtype = spec.content_type.split("/", 1)[1].split(";")[0].strip() or "plain"
    msg.set_content(spec.body, subtype=subtype)
    for i, path in enumerate(spec.attachments):
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"params.attachment[{i}]", f"cannot read {path!r}: {exc.strerror or exc}") from None
        ctype, _ = mimetypes.guess_type(path)
        maintype, _, subtype = (ctype or "application/octet-stream").partition("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=os.path.basename(path))
    for name, content in spec.attachment_data:
        ctype, _ = mimetypes.guess_type(name)
        maintype, _, subtype = (ctype or "application/octet-stream").partition("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
    return msg


def _send_mail_sync(spec: MailSpec, msg: EmailMessage, timeout: float, tls_context: ssl.SSLContext) -> str:
    implicit_tls = spec.port == 465
    if implicit_tls:
        client: smtplib.SMTP = smtplib.SMTP_SSL(spec.host, spec.port, timeout=timeout, context=tls_context)
    else:
        client = smtplib.SMTP(spec.host, spec.port, timeout=timeout)
    with client:
        client.ehlo_or_helo_if_needed()
        encrypted = implicit_tls
        if not implicit_tls and client.has_extn("starttls"):
            client.starttls(context=tls_context)
            client.ehlo()
            encrypted = True
        if spec.username:
            if not encrypted and spec.host.lower() not in LOOPBACK_HOSTS:
                raise BuiltinError(f"SendMail: {spec.host} offers no TLS; refusing to send the password unencrypted")
            if client.has_extn("auth"):
                client.login(spec.username, spec.password)
        refused = client.send_message(msg, from_addr=spec.sender, to_addrs=spec.recipients())
    sent = len(spec.recipients()) - len(refused)
    text = f"Mail sent to {sent} recipient(s) via {spec.host}:{spec.port}" + (" (TLS)" if encrypted else "")
    if refused:
        text += f"; refused: {', '.join(sorted(refused))}"
    return text


async def send_mail(ctx: BuiltinContext, params: object) -> BuiltinResult:
    spec = parse_mail(params)
    msg = build_message(spec)
    tls_context = ctx.extra.get("smtp_tls_context") or ssl.create_default_context()
    try:
        text = await asyncio.to_thread(_send_mail_sync, spec, msg, ctx.network_timeout(), tls_context)
    except (smtplib.SMTPException, OSError) as exc:
        raise BuiltinError(f"SendMail via {spec.host}:{spec.port} failed: {exc}") from None
    return BuiltinResult(0, text)


# ---- Download ---------------------------------------------------------------------------------

DOWNLOAD_FIELDS = {"workersnum", "fileurls", "destpath"}


def parse_download(params: object) -> tuple[int, list[str], Path]:
    obj = _object(params, DOWNLOAD_FIELDS, "Download")
    workers = _int(obj, "workersnum", 0)
    urls = _str_list(obj, "fileurls")
    if not urls:
        raise InputError("params.fileurls", "Files to download are not specified")
    for i, url in enumerate(urls):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise InputError(f"params.fileurls[{i}]", f"{url!r} is not an http:// or https:// URL")
    dest = Path(_str(obj, "destpath", required=True))
    if not dest.is_dir():
        raise InputError("params.destpath", f"{str(dest)!r} is not an existing directory")
    return workers, urls, dest


def _file_name(url: str, disposition: str | None) -> str:
    if disposition:
        msg = EmailMessage()
        msg["Content-Disposition"] = disposition
        name = msg.get_filename()
        if name:
            name = os.path.basename(name.replace("\\", "/"))
            if name not in ("", ".", ".."):
                return name
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if name in ("", ".", ".."):
        raise BuiltinError(f"Download {url}: no file name could be determined from the URL or the response")
    return name


def _download_one(url: str, dest: Path, timeout: float) -> Path:
    request = urllib.request.Request(url, headers={"User-Agent": "pgtt-tui"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - scheme checked
            name = _file_name(resp.geturl() or url, resp.headers.get("Content-Disposition"))
            target = dest / name
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := resp.read(65536):
                        out.write(chunk)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except urllib.error.HTTPError as exc:
        raise BuiltinError(f"{url}: server returned {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise BuiltinError(f"{url}: {exc.reason}") from None
    except OSError as exc:
        raise BuiltinError(f"{url}: {exc.strerror or exc}") from None
    return target


async def download(ctx: BuiltinContext, params: object) -> BuiltinResult:
    workers, urls, dest = parse_download(params)
    limit = asyncio.Semaphore(workers if workers > 0 else len(urls))
    timeout = ctx.network_timeout()

    async def one(url: str) -> Path:
        async with limit:
            return await asyncio.to_thread(_download_one, url, dest, timeout)

    results = await asyncio.gather(*(one(u) for u in urls), return_exceptions=True)
    lines, errors = [], []
    for url, res in zip(urls, results):
        if isinstance(res, BaseException):
            errors.append(str(res))
        else:
            lines.append(f"Downloaded {url} to {res}")
            await ctx.emit_log("INFO", lines[-1], {"chain": ctx.chain_id, "task": ctx.task_id})
    if errors:
        raise BuiltinError("download failed: " + "; ".join(errors) + ("\n" + "\n".join(lines) if lines else ""))
    return BuiltinResult(0, "\n".join(lines))


# ---- Copy* ------------------------------------------------------------------------------------

COPY_FILE_FIELDS = {"sql", "filename"}
COPY_PROGRAM_FIELDS = {"sql", "cmd", "args"}


def _copy_sql(obj: dict, direction: str) -> str:
    text = _str(obj, "sql", required=True)
    words = text.strip().split(None, 1)
    if not words or words[0].upper() != "COPY":
        raise InputError("params.sql", f"must be a COPY … {direction} statement")
    return text


def _rowcount(cur: psycopg.AsyncCursor) -> int:
    return cur.rowcount if cur.rowcount is not None and cur.rowcount >= 0 else 0


async def copy_from_file(ctx: BuiltinContext, params: object) -> BuiltinResult:
    obj = _object(params, COPY_FILE_FIELDS, "CopyFromFile")
    stmt = _copy_sql(obj, "FROM STDIN")
    filename = _str(obj, "filename", required=True)
    try:
        handle = open(filename, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError("params.filename", f"cannot read {filename!r}: {exc.strerror or exc}") from None
    with handle:
        async with ctx.connect() as conn, conn.cursor() as cur:
            async with cur.copy(stmt) as copy:
                while chunk := await asyncio.to_thread(handle.read, 65536):
                    await copy.write(chunk)
            count = _rowcount(cur)
    return BuiltinResult(0, f"{count} rows copied from {filename}")


async def copy_to_file(ctx: BuiltinContext, params: object) -> BuiltinResult:
    obj = _object(params, COPY_FILE_FIELDS, "CopyToFile")
    stmt = _copy_sql(obj, "TO STDOUT")
    filename = _str(obj, "filename", required=True)
    try:
        handle = open(filename, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError("params.filename", f"cannot write {filename!r}: {exc.strerror or exc}") from None
    with handle:
        async with ctx.connect() as conn, conn.cursor() as cur:
            async with cur.copy(stmt) as copy:
                async for data in copy:
                    await asyncio.to_thread(handle.write, data)
            count = _rowcount(cur)
    return BuiltinResult(0, f"{count} rows copied to {filename}")


def _program_argv(obj: dict) -> list[str]:
    cmd = _str(obj, "cmd", required=True)
    return [cmd, *_str_list(obj, "args")]


def _program_failed(name: str, argv: list[str], res: programs.ProgramResult) -> BuiltinError:
    why = "timed out" if res.timed_out else f"exited with code {res.returncode}"
    tail = f": {res.output}" if res.output else ""
    return BuiltinError(f"{name}: program {argv[0]!r} {why}{tail}")


async def copy_to_program(ctx: BuiltinContext, params: object) -> BuiltinResult:
    obj = _object(params, COPY_PROGRAM_FIELDS, "CopyToProgram")
    stmt = _copy_sql(obj, "TO STDOUT")
    argv = _program_argv(obj)
    if not (ctx.programs_allowed and programs.programs_allowed()):
        raise programs.ProgramsDisabledError("CopyToProgram")
    async with ctx.connect() as conn, conn.cursor() as cur:
        async with cur.copy(stmt) as copy:
            async def source() -> AsyncIterator[bytes]:
                async for data in copy:
                    yield bytes(data)

            res = await programs.run_piped(argv, timeout_ms=ctx.timeout_ms, output_limit=ctx.output_limit,
                                           stdin_source=source(), allowed=ctx.programs_allowed,
                                           what="CopyToProgram")
            if res.returncode != 0 or res.timed_out:
                raise _program_failed("CopyToProgram", argv, res)
            # drain what the program did not read, so the COPY ends cleanly
            async for _ in copy:
                pass
        count = _rowcount(cur)
    out = f"{count} rows copied to program {argv[0]}"
    return BuiltinResult(0, out + (f"\n{res.output}" if res.output else ""))


async def copy_from_program(ctx: BuiltinContext, params: object) -> BuiltinResult:
    obj = _object(params, COPY_PROGRAM_FIELDS, "CopyFromProgram")
    stmt = _copy_sql(obj, "FROM STDIN")
    argv = _program_argv(obj)
    if not (ctx.programs_allowed and programs.programs_allowed()):
        raise programs.ProgramsDisabledError("CopyFromProgram")
    async with ctx.connect() as conn:
        cur = conn.cursor()
        try:
            async with cur.copy(stmt) as copy:
                res = await programs.run_piped(argv, timeout_ms=ctx.timeout_ms, output_limit=ctx.output_limit,
                                               stdout_sink=copy.write, allowed=ctx.programs_allowed,
                                               what="CopyFromProgram")
                if res.returncode != 0 or res.timed_out:
                    # raising inside the block makes psycopg abort the COPY: nothing is loaded
                    raise _program_failed("CopyFromProgram", argv, res)
            count = _rowcount(cur)
        finally:
            await cur.close()
    out = f"{count} rows copied from program {argv[0]}"
    return BuiltinResult(0, out + (f"\n{res.output}" if res.output else ""))


BUILTINS: dict[str, BuiltinFn] = {
    "NoOp": noop,
    "Sleep": sleep,
    "Log": log_task,
    "SendMail": send_mail,
    "Download": download,
    "CopyFromFile": copy_from_file,
    "CopyToFile": copy_to_file,
    "CopyToProgram": copy_to_program,
    "CopyFromProgram": copy_from_program,
    "Shutdown": shutdown,
}


def lookup(name: str) -> BuiltinFn:
    fn = BUILTINS.get(name)
    if fn is None:
        raise InputError("command", f"unknown builtin {name!r} (choose from {', '.join(BUILTINS)})")
    return fn


def validate_params(name: str, params: object) -> None:
    """Check a parameter row without running anything (import --validate, the task editor)."""
    lookup(name)
    if name == "Sleep":
        sleep_seconds(params)
    elif name == "SendMail":
        parse_mail(params)
    elif name == "Download":
        obj = _object(params, DOWNLOAD_FIELDS, "Download")
        _int(obj, "workersnum", 0)
        if not _str_list(obj, "fileurls"):
            raise InputError("params.fileurls", "Files to download are not specified")
        _str(obj, "destpath", required=True)
    elif name in ("CopyFromFile", "CopyToFile"):
        obj = _object(params, COPY_FILE_FIELDS, name)
        _copy_sql(obj, "FROM STDIN" if name == "CopyFromFile" else "TO STDOUT")
        _str(obj, "filename", required=True)
    elif name in ("CopyToProgram", "CopyFromProgram"):
        obj = _object(params, COPY_PROGRAM_FIELDS, name)
        _copy_sql(obj, "TO STDOUT" if name == "CopyToProgram" else "FROM STDIN")
        _program_argv(obj)


async def execute_builtin(ctx: BuiltinContext, name: str, params: object) -> BuiltinResult:
    """Run one builtin for one parameter row; never raises except on cancellation.

    Failures (bad parameters, disabled programs, network or database errors, the task
    timeout) come back as ``BuiltinResult(-1, reason)``.
    """
    try:
        fn = lookup(name)
        timeout = ctx.timeout_ms / 1000 if ctx.timeout_ms and ctx.timeout_ms > 0 else None
        return await asyncio.wait_for(fn(ctx, params), timeout)
    except TimeoutError:
        return BuiltinResult(-1, f"{name}: timed out after {ctx.timeout_ms} ms")
    except psycopg.Error as exc:
        from engine.db import translate_db_error  # noqa: PLC0415

        return BuiltinResult(-1, f"{name}: {translate_db_error(exc)}")
    except PgttError as exc:
        return BuiltinResult(-1, str(exc) if str(exc).startswith(name) else f"{name}: {exc}")
    except (OSError, ValueError) as exc:
        return BuiltinResult(-1, f"{name}: {exc}")
