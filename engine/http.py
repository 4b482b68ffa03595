"""A tiny HTTP/1.1 endpoint for the engine (``pgtt-tui worker --rest-port N``).

pg_timetable's REST API (reference §3.13) plus Prometheus metrics, without a new
dependency (asyncio streams). Differences from pg_timetable, on purpose (§11.9):
it binds to 127.0.0.1 unless ``--rest-host`` says otherwise, and it has ``/metrics``.

=====================  ======================================================================
GET /liveness          200 ``{"status": "alive"}`` while the process serves requests
GET /readiness         200 when the supervisor is running and every service is healthy;
                       503 with the JSON health (state, services, last error) otherwise
                       (starting, reconnecting, standby, stopped)
GET /startchain?id=N   ``timetable.notify_chain_start(N, <client name>)``: 200 when sent;
                       400 for a bad id; 404 when no such chain is runnable by this engine
GET /stopchain?id=N    stops the chain wherever it runs (as ``pgtt-tui chain stop`` /
                       engine.timetable.api.stop_chain): ``timetable.notify_chain_stop(N, <engine>)``
                       to every engine with an open run of it, this one or another; 200 with
                       those engines; 400 "No running chain found" when none runs it
GET /metrics           Prometheus text exposition format 0.0.4 of ``Supervisor.metrics()``
=====================  ======================================================================

Every response closes the connection (``Connection: close``); requests larger than 8 KiB
or slower than the read timeout are dropped. Only GET and HEAD are served.

Who may call it (the one place these rules are enforced: ``HttpEndpoint._refusal``):

* **Host.** A request's ``Host`` must name the bound address (``localhost`` too when bound to
  loopback; any IP address when bound to every interface) or a configured name
  (``--rest-allowed-host``), with the endpoint's port if it gives one: a web page that
  rebinds its own name to 127.0.0.1 (DNS rebinding) is refused with 403.
* **Cross-origin.** An ``Origin`` that is not the endpoint's own, or ``Sec-Fetch-Site``
  other than ``same-origin`` / ``none`` (a browser sends it with every request, an ``<img>``
  included), is refused with 403: another web page cannot start or stop chains (CSRF).
* **Token.** With a bearer token (``--rest-token`` / ``PGTT_REST_TOKEN``), ``/startchain``
  and ``/stopchain`` need ``Authorization: Bearer <token>`` (401 otherwise). An endpoint
  that listens beyond localhost refuses to start without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import urllib.parse
from collections.abc import Iterable
from typing import Any

import psycopg

from engine.db import ConnSettings, aconnect, translate_db_error
from engine.errors import InputError, PgttError

log = logging.getLogger("pgtt.http")

DEFAULT_HOST = "127.0.0.1"
TOKEN_ENV = "PGTT_REST_TOKEN"
CONTROL_PATHS = ("/startchain", "/stopchain")
READ_TIMEOUT = 10.0
MAX_REQUEST = 8192
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Payload Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}

CHAIN_FOR_CLIENT = """
SELECT chain_id FROM timetable.chain WHERE chain_id = %s AND (client_name IS NULL OR client_name = %s)
"""
#: the engines with an open run of the chain, and how many runs each (api.stop_chain's query)
OPEN_RUN_ENGINES = """
SELECT client_name, count(*) FROM timetable.chain_run
WHERE chain_id = %s AND status IN ('claimed', 'running')
GROUP BY client_name ORDER BY client_name
"""


# ---- Prometheus text format ----------------------------------------------------------------------

def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _valid_name(name: str) -> bool:
    return bool(name) and (name[0].isalpha() or name[0] in "_:") and all(c.isalnum() or c in "_:" for c in name)


def prometheus_text(metrics: Iterable[Any]) -> str:
    """Render engine.worker.Metric objects (name, value, labels, kind, help) as exposition text.

    Samples of one name are grouped under one ``# HELP`` / ``# TYPE`` header, as the
    format requires; names that are not valid metric names are skipped.
    """
    groups: dict[str, list[Any]] = {}
    for m in metrics:
        if not _valid_name(m.name):
            log.debug("skipping metric with an invalid name %r", m.name)
            continue
        family = m.name
        if m.kind in ("histogram", "summary"):  # name_bucket / name_sum / name_count share one header
            for suffix in ("_bucket", "_sum", "_count"):
                if family.endswith(suffix):
                    family = family[: -len(suffix)]
                    break
        groups.setdefault(family, []).append(m)
    lines: list[str] = []
    for name, items in groups.items():
        first = items[0]
        kind = first.kind if first.kind in ("counter", "gauge", "summary", "histogram") else "untyped"
        if first.help:
            lines.append(f"# HELP {name} {_escape_help(first.help)}")
        lines.append(f"# TYPE {name} {kind}")
        for m in items:
            labels = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in sorted((m.labels or {}).items())
                              if _valid_name(k))
            lines.append(f"{m.name}{{{labels}}} {_number(m.value)}" if labels else f"{m.name} {_number(m.value)}")
    return "\n".join(lines) + "\n"


# ---- who may call ----------------------------------------------------------------------------------

def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the endpoint on this machine."""
    if host.lower() == "localhost":
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def is_wildcard(host: str) -> bool:
    ip = _ip(host) if host else None
    return host == "" or (ip is not None and ip.is_unspecified)


def split_host(value: str) -> tuple[str, int | None] | None:
    """``name``, ``name:port``, ``[v6]`` or ``[v6]:port`` -> (lower-case name, port); None if malformed."""
    value = value.strip()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:  # a bare IPv6 address
        name, port_text = value, None
    else:
        name, port_text = value, None
    if port_text is not None:
        if not port_text.isdigit():
            return None
        return name.lower(), int(port_text)
    return name.lower(), None


def require_token(host: str, token: str | None) -> None:
    """An endpoint that listens beyond localhost must have a bearer token."""
    if not is_loopback(host) and not token:
        raise InputError("--rest-token", f"required when the HTTP endpoint listens beyond localhost "
                                         f"(--rest-host {host}): set --rest-token or {TOKEN_ENV}")


def _headers(head: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            out.setdefault(k.strip().lower(), []).append(v.strip())
    return out


# ---- the server -----------------------------------------------------------------------------------

class HttpEndpoint:
    """Serves the endpoints for one Supervisor (anything with state, health(), metrics())."""

    def __init__(self, supervisor: Any, settings: ConnSettings, client_name: str,
                 host: str = DEFAULT_HOST, port: int = 0, *, token: str | None = None,
                 allowed_hosts: Iterable[str] = ()):
        self.supervisor = supervisor
        self.settings = settings.with_app(f"pgtt-tui http {client_name}")
        self.client_name = client_name
        self.host = host
        self.port = port
        self.token = token or None
        self.allowed_hosts = {h.strip().lower().strip("[]") for h in allowed_hosts if h and h.strip()}
        self.server: asyncio.AbstractServer | None = None
        self.requests = 0
        self.refused = 0

    async def start(self) -> HttpEndpoint:
        require_token(self.host, self.token)
        for name in self.allowed_hosts:
            if not name or any(c in name for c in "/@ \t") or split_host(name) is None:
                raise InputError("--rest-allowed-host", f"{name!r} is not a host name or address")
        try:
            self.server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_REQUEST)
        except OSError as exc:
            raise InputError("--rest-port", f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("HTTP endpoint on http://%s:%s/ (liveness, readiness, startchain, stopchain, metrics)",
                 self.host, self.port)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), timeout=2)
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=READ_TIMEOUT)
            except asyncio.LimitOverrunError:
                await self._send(writer, 413, {"error": "request too large"}, head_only=False)
                return
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                await self._send(writer, 400, {"error": "malformed request line"}, head_only=False)
                return
            method, target, _ = parts
            self.requests += 1
            if method not in ("GET", "HEAD"):
                await self._send(writer, 405, {"error": f"{method} is not allowed; use GET"}, head_only=False,
                                 extra_headers={"Allow": "GET, HEAD"})
                return
            url = urllib.parse.urlsplit(target)
            query = urllib.parse.parse_qs(url.query)
            refusal = self._refusal(_headers(head), url.path)
            if refusal is not None:
                self.refused += 1
                status, message = refusal
                log.warning("HTTP %s %s refused: %s", method, url.path, message)
                extra = {"WWW-Authenticate": 'Bearer realm="pgtt-tui"'} if status == 401 else None
                await self._send(writer, status, {"error": message}, head_only=method == "HEAD",
                                 extra_headers=extra)
                return
            try:
                status, body, ctype = await self.dispatch(url.path, query)
            except Exception as exc:  # noqa: BLE001 - one bad request never stops the server
                log.exception("HTTP %s failed", url.path)
                status, body, ctype = 500, {"error": str(exc)}, None
            await self._send(writer, status, body, head_only=method == "HEAD", content_type=ctype)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    # ---- who may call ----------------------------------------------------------------------------

    def _host_allowed(self, name: str) -> bool:
        if name in self.allowed_hosts:
            return True
        bound = self.host.lower().strip("[]")
        if is_wildcard(self.host):
            return name == "localhost" or _ip(name) is not None
        if is_loopback(self.host) and (name == "localhost" or (_ip(name) is not None and _ip(name).is_loopback)):
            return True
        if name == bound:
            return True
        ip, bound_ip = _ip(name), _ip(bound)
        return ip is not None and ip == bound_ip

    def _origin_ok(self, origin: str) -> bool:
        parts = urllib.parse.urlsplit(origin)
        if parts.scheme != "http" or not parts.hostname:
            return False
        try:
            port = parts.port or 80
        except ValueError:
            return False
        return port == self.port and self._host_allowed(parts.hostname.lower())

    def _refusal(self, headers: dict[str, list[str]], path: str) -> tuple[int, str] | None:
        """(status, message) when the request may not be served, else None."""
        hosts = headers.get("host") or []
        if len(hosts) != 1:
            return 400, "Host: exactly one Host header is required"
        parsed = split_host(hosts[0])
        if parsed is None or not self._host_allowed(parsed[0]) or parsed[1] not in (None, self.port):
            return 403, (f"Host: {hosts[0]!r} does not name this endpoint (allowed: the address it listens on"
                         f"{', localhost' if is_loopback(self.host) else ''} or --rest-allowed-host)")
        for origin in headers.get("origin") or []:
            if not self._origin_ok(origin):
                return 403, f"Origin: cross-origin requests are refused ({origin!r} is not this endpoint)"
        for site in headers.get("sec-fetch-site") or []:
            if site.lower() not in ("same-origin", "none"):
                return 403, f"Sec-Fetch-Site: cross-site requests are refused ({site!r})"
        if path in CONTROL_PATHS and self.token:
            given = ""
            for value in headers.get("authorization") or []:
                scheme, _, credentials = value.partition(" ")
                if scheme.lower() == "bearer":
                    given = credentials.strip()
            if not given:
                return 401, f"Authorization: {path} needs 'Authorization: Bearer <token>' (--rest-token)"
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return 401, "Authorization: the bearer token is wrong"
        return None

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: Any, *, head_only: bool,
                    content_type: str | None = None, extra_headers: dict[str, str] | None = None) -> None:
        if isinstance(body, str):
            data = body.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        else:
            data = (json.dumps(body, default=str) + "\n").encode()
            content_type = content_type or "application/json"
        headers = {"Content-Type": content_type, "Content-Length": str(len(data)), "Connection": "close",
                   "Cache-Control": "no-store", **(extra_headers or {})}
        out = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(out.encode("latin-1") + (b"" if head_only else data))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    # ---- routes ----------------------------------------------------------------------------------

    async def dispatch(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any, str | None]:
        if path == "/liveness":
            return 200, {"status": "alive"}, None
        if path == "/readiness":
            health = self.supervisor.health()
            ready = getattr(self.supervisor, "state", "") == "running" and bool(health.get("ok"))
            return (200 if ready else 503), {"ready": ready, **health}, None
        if path == "/metrics":
            return 200, prometheus_text(self.supervisor.metrics()), "text/plain; version=0.0.4; charset=utf-8"
        if path in ("/startchain", "/stopchain"):
            values = query.get("id") or []
            try:
                chain_id = int(values[0]) if len(values) == 1 else 0
            except ValueError:
                chain_id = 0
            if chain_id <= 0:
                return 400, {"error": "id: must be one positive chain id, e.g. ?id=42"}, None
            try:
                if path == "/startchain":
                    return await self._start_chain(chain_id)
                return await self._stop_chain(chain_id)
            except psycopg.Error as exc:
                return 503, {"error": translate_db_error(exc)}, None
            except PgttError as exc:
                return 503, {"error": str(exc)}, None
        return 404, {"error": f"no endpoint {path}", "endpoints": ["/liveness", "/readiness", "/startchain?id=N",
                                                                   "/stopchain?id=N", "/metrics"]}, None

    async def _start_chain(self, chain_id: int) -> tuple[int, Any, None]:
        conn = await aconnect(self.settings)
        try:
            found = await (await conn.execute(CHAIN_FOR_CLIENT, (chain_id, self.client_name))).fetchone()
            if found is None:
                return 404, {"error": f"no chain {chain_id} that engine {self.client_name!r} may run"}, None
            await conn.execute("SELECT timetable.notify_chain_start(%s, %s)", (chain_id, self.client_name))
        finally:
            await conn.close()
        return 200, {"status": "started", "chain_id": chain_id, "client_name": self.client_name}, None

    async def _stop_chain(self, chain_id: int) -> tuple[int, Any, None]:
        conn = await aconnect(self.settings)
        try:
            engines = await (await conn.execute(OPEN_RUN_ENGINES, (chain_id,))).fetchall()
            if not engines:
                return 400, {"error": "No running chain found", "chain_id": chain_id}, None
            for name, _ in engines:
                await conn.execute("SELECT timetable.notify_chain_stop(%s, %s)", (chain_id, name))
        finally:
            await conn.close()
        return 200, {"status": "stopping", "chain_id": chain_id, "runs": sum(n for _, n in engines),
                     "engines": [name for name, _ in engines]}, None


async def start_endpoint(supervisor: Any, settings: ConnSettings, client_name: str, port: int,
                         host: str = DEFAULT_HOST, *, token: str | None = None,
                         allowed_hosts: Iterable[str] = ()) -> HttpEndpoint:
    return await HttpEndpoint(supervisor, settings, client_name, host, port, token=token,
                              allowed_hosts=allowed_hosts).start()
