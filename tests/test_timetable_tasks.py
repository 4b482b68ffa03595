"""PROGRAM tasks and every BUILTIN, against real programs, a real database, a local SMTP
sink and a local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import http.server
import os
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from engine.db import ConnSettings
from engine.errors import InputError
from engine.timetable import builtins as bt
from engine.timetable import programs
from engine.timetable.builtins import BUILTINS, BuiltinContext, execute_builtin
from engine.timetable.programs import ProgramsDisabledError, run_program

PY = sys.executable


@pytest.fixture(autouse=True)
def _programs_on():
    programs.set_programs_allowed(True)
    yield
    programs.set_programs_allowed(True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _procs_with_cmdline(cmdline: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if fh.read() == cmdline and _alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                pass
    return found


# ---- PROGRAM ------------------------------------------------------------------------------------

async def test_program_argv_without_shell(tmp_path):
    # shell metacharacters reach the program as plain argv items
    res = await run_program(PY, ["-c", "import sys; print(sys.argv[1:])", "$(echo hi)", "a b", ";", "*"],
                            timeout_ms=10_000)
    assert res.returncode == 0
    assert res.stdout.strip() == "['$(echo hi)', 'a b', ';', '*']"
    assert res.output == res.stdout.strip()
    assert not (tmp_path / "x").exists()


async def test_program_exit_codes_and_streams():
    res = await run_program(PY, ["-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(7)"],
                            timeout_ms=10_000)
    assert res.returncode == 7
    assert res.stdout == "out\n" and res.stderr == "err\n"
    assert "out" in res.output and "err" in res.output
    assert not res.timed_out and not res.truncated

    # killed by a signal: 128 + N
    res = await run_program(PY, ["-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
                            timeout_ms=10_000)
    assert res.returncode == 128 + 15

    # cannot start: 127 / 126 with the reason, no exception
    res = await run_program("/nonexistent/prog", [], timeout_ms=1000)
    assert res.returncode == 127 and "cannot start program" in res.output
    res = await run_program("/etc/hostname", [], timeout_ms=1000)
    assert res.returncode == 126


async def test_program_output_bound_never_blocks():
    # 5 MB on stdout and stderr each: far beyond a pipe buffer and the 1000-byte limit
    code = "import sys; sys.stdout.write('a' * 5_000_000); sys.stderr.write('b' * 5_000_000); sys.exit(3)"
    res = await run_program(PY, ["-c", code], timeout_ms=20_000, output_limit=1000)
    assert res.returncode == 3 and not res.timed_out
    assert res.truncated
    assert res.stdout == "a" * 1000 and res.stderr == "b" * 1000
    assert res.output.endswith("more bytes not kept]")
    assert len(res.output) < 1100


async def test_program_timeout_kills_whole_group(tmp_path):
    pidfile = tmp_path / "pids"
    # a shell with a background grandchild and a foreground sleep
    script = f"sleep 60 & echo $! > {pidfile}; echo started; sleep 60"
    t0 = time.monotonic()
    res = await run_program("/bin/sh", ["-c", script], timeout_ms=500)
    elapsed = time.monotonic() - t0
    assert res.timed_out and res.returncode == 128 + 9
    assert "started" in res.output and "killed after the timeout of 500 ms" in res.output
    assert elapsed < 5
    grandchild = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        await asyncio.sleep(0.05)
    assert not _alive(grandchild)


async def test_program_cancel_kills_group(tmp_path):
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(run_program("/bin/sh", ["-c", f"echo $$ > {pidfile}; sleep 60"], timeout_ms=None))
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):  # killed and reaped before the cancellation came back
        os.kill(pid, 0)


async def test_program_bad_argv():
    with pytest.raises(InputError, match=r"params\[1\]: must be a string"):
        await run_program(PY, ["-c", 5], timeout_ms=1000)  # type: ignore[list-item]
    with pytest.raises(InputError, match="params: must be a JSON array"):
        await run_program(PY, "-c print(1)", timeout_ms=1000)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="command"):
        await run_program("", [], timeout_ms=1000)


async def test_no_program_tasks_refuses_every_path(tmp_path, dsn):
    marker = tmp_path / "ran"
    programs.set_programs_allowed(False)
    with pytest.raises(ProgramsDisabledError, match="program tasks execution is disabled"):
        await run_program("/usr/bin/touch", [str(marker)], timeout_ms=1000)
    ctx = BuiltinContext(connect=BuiltinContext.connector(ConnSettings(dsn=dsn)))
    for name, params in (("CopyToProgram", {"sql": "COPY (SELECT 1) TO STDOUT", "cmd": "/usr/bin/touch",
                                            "args": [str(marker)]}),
                         ("CopyFromProgram", {"sql": "COPY t FROM STDIN", "cmd": "/usr/bin/touch",
                                              "args": [str(marker)]})):
        res = await execute_builtin(ctx, name, params)
        assert res.returncode == -1 and "program tasks execution is disabled" in res.output
    assert not marker.exists()
    # the per-context switch refuses too, with the global switch on
    programs.set_programs_allowed(True)
    ctx.programs_allowed = False
    res = await execute_builtin(ctx, "CopyToProgram", {"sql": "COPY (SELECT 1) TO STDOUT", "cmd": "/usr/bin/touch",
                                                       "args": [str(marker)]})
    assert res.returncode == -1 and "disabled" in res.output
    with pytest.raises(ProgramsDisabledError):
        await run_program("/usr/bin/touch", [str(marker)], timeout_ms=1000, allowed=False)
    assert not marker.exists()


# ---- simple builtins ----------------------------------------------------------------------------

async def test_registry_has_all_ten():
    assert set(BUILTINS) == {"NoOp", "Sleep", "Log", "SendMail", "Download", "CopyFromFile", "CopyToFile",
                             "CopyToProgram", "CopyFromProgram", "Shutdown"}
    res = await execute_builtin(BuiltinContext(), "Nope", None)
    assert res.returncode == -1 and "unknown builtin 'Nope'" in res.output


async def test_noop_sleep_log_shutdown():
    ctx = BuiltinContext()
    res = await execute_builtin(ctx, "NoOp", {"a": 1})
    assert res == bt.BuiltinResult(0, 'NoOp task called with value: {"a": 1}')

    t0 = time.monotonic()
    res = await execute_builtin(ctx, "Sleep", 1)
    assert res.returncode == 0 and time.monotonic() - t0 >= 0.95
    assert (await execute_builtin(ctx, "Sleep", "0")).returncode == 0
    bad = await execute_builtin(ctx, "Sleep", 1.5)
    assert bad.returncode == -1 and "integer number of seconds" in bad.output
    # the task timeout interrupts a sleep
    ctx_t = BuiltinContext(timeout_ms=200)
    t0 = time.monotonic()
    res = await execute_builtin(ctx_t, "Sleep", 30)
    assert res.returncode == -1 and "timed out after 200 ms" in res.output and time.monotonic() - t0 < 2

    logged = []

    async def sink(level, message, data):
        logged.append((level, message, data))

    ctx_l = BuiltinContext(log=sink, chain_id=3, task_id=4)
    res = await execute_builtin(ctx_l, "Log", {"Status": "WARNING"})
    assert res.returncode == 0
    assert logged == [("INFO", '{"Status": "WARNING"}', {"chain": 3, "task": 4, "builtin": "Log"})]

    asked = []
    res = await execute_builtin(BuiltinContext(request_shutdown=lambda: asked.append(1)), "Shutdown", None)
    assert res.returncode == 0 and asked == [1]
    assert (await execute_builtin(BuiltinContext(), "Shutdown", None)).returncode == -1


# ---- SendMail -----------------------------------------------------------------------------------

class SmtpSink:
    """A tiny SMTP server: EHLO (with AUTH PLAIN/LOGIN), MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    def __init__(self):
        self.messages: list[dict] = []
        self.auth: list[str] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self):
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()

    async def _client(self, reader, writer):
        def send(line: str):
            writer.write(line.encode() + b"\r\n")

        send("220 sink ESMTP")
        mail_from, rcpts = None, []
        try:
            while line := await reader.readline():
                cmd = line.decode().rstrip("\r\n")
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    send("250-sink")
                    send("250-AUTH PLAIN LOGIN")
                    send("250 8BITMIME")
                elif verb == "HELO":
                    send("250 sink")
                elif verb == "AUTH":
                    parts = cmd.split()
                    if parts[1].upper() == "PLAIN":
                        if len(parts) > 2:
                            blob = parts[2]
                        else:
                            send("334 ")
                            await writer.drain()
                            blob = (await reader.readline()).decode().strip()
                        _, user, password = base64.b64decode(blob).decode().split("\x00")
                    else:
                        send("334 VXNlcm5hbWU6")
                        await writer.drain()
                        user = base64.b64decode(await reader.readline()).decode()
                        send("334 UGFzc3dvcmQ6")
                        await writer.drain()
                        password = base64.b64decode(await reader.readline()).decode()
                    self.auth.append(f"{user}:{password}")
                    send("235 ok" if password == "secret" else "535 bad credentials")
                elif verb == "MAIL":
                    mail_from, rcpts = cmd.split(":", 1)[1].strip().split()[0].strip("<>"), []
                    send("250 ok")
                elif verb == "RCPT":
                    addr = cmd.split(":", 1)[1].strip().strip("<>")
                    if addr.startswith("reject"):
                        send("550 no such user")
                    else:
                        rcpts.append(addr)
                        send("250 ok")
                elif verb == "DATA":
                    send("354 go ahead")
                    await writer.drain()
                    data = bytearray()
                    while (chunk := await reader.readline()) not in (b".\r\n", b""):
                        data += chunk[1:] if chunk.startswith(b"..") else chunk
                    self.messages.append({"from": mail_from, "rcpts": rcpts, "data": bytes(data)})
                    send("250 queued")
                elif verb in ("RSET", "NOOP"):
                    send("250 ok")
                elif verb == "QUIT":
                    send("221 bye")
                    await writer.drain()
                    break
                else:
                    send("502 not implemented")
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def smtp():
    sink = await SmtpSink().start()
    yield sink
    await sink.stop()


async def test_sendmail_full_message(smtp, tmp_path):
    attach = tmp_path / "report.csv"
    attach.write_text("a,b\n1,2\n")
    params = {
        "username": "user@example.com", "password": "secret", "serverhost": "127.0.0.1", "serverport": smtp.port,
        "senderaddr": "scheduler@example.com", "toaddr": ["to@example.com"], "ccaddr": ["cc@example.com"],
        "bccaddr": ["bcc@example.com"], "subject": "pg_timetable - No Reply",
        "msgbody": "<b>Hello</b>", "contenttype": "text/html", "attachment": [str(attach)],
        "attachmentdata": [{"name": "note.txt", "base64data": base64.b64encode(b"hello note").decode()}],
    }
    res = await execute_builtin(BuiltinContext(timeout_ms=10_000), "SendMail", params)
    assert res.returncode == 0, res.output
    assert res.output.startswith("Mail sent to 3 recipient(s)")
    assert smtp.auth == ["user@example.com:secret"]
    [msg] = smtp.messages
    assert msg["from"] == "scheduler@example.com"
    assert sorted(msg["rcpts"]) == ["bcc@example.com", "cc@example.com", "to@example.com"]
    parsed = email.message_from_bytes(msg["data"], policy=email.policy.default)
    assert parsed["Subject"] == "pg_timetable - No Reply"
    assert parsed["To"] == "to@example.com" and parsed["Cc"] == "cc@example.com"
    assert parsed["Bcc"] is None  # never in the headers
    body = parsed.get_body(("html",))
    assert body.get_content().strip() == "<b>Hello</b>"
    atts = {p.get_filename(): p.get_content() for p in parsed.iter_attachments()}
    assert atts["report.csv"] in ("a,b\n1,2\n", b"a,b\n1,2\n")
    assert atts["note.txt"] in ("hello note", b"hello note")


async def test_sendmail_defaults_refusals_and_errors(smtp):
    base = {"serverhost": "127.0.0.1", "serverport": smtp.port, "senderaddr": "s@example.com",
            "toaddr": ["a@example.com", "reject@example.com"], "subject": "x", "msgbody": "plain body"}
    res = await execute_builtin(BuiltinContext(timeout_ms=10_000), "SendMail", base)
    assert res.returncode == 0 and "refused: reject@example.com" in res.output
    parsed = email.message_from_bytes(smtp.messages[-1]["data"], policy=email.policy.default)
    assert parsed.get_content_type() == "text/plain" and smtp.auth == []  # no username: no AUTH

    wrong = await execute_builtin(BuiltinContext(timeout_ms=10_000), "SendMail",
                                  {**base, "username": "u", "password": "nope"})
    assert wrong.returncode == -1 and "SendMail" in wrong.output and "535" in wrong.output

    for params, field in (({**base, "serverport": "25x"}, "params.serverport: must be an integer"),
                          ({**base, "toaddr": "a@example.com"}, "params.toaddr: must be an array"),
                          ({**base, "toaddr": [], "ccaddr": []}, "params.toaddr: at least one recipient"),
                          ({**base, "senderaddr": None}, "params.senderaddr: is required"),
                          ({**base, "tooaddr": ["x@y"]}, "params.tooaddr: unknown field"),
                          ({**base, "attachmentdata": [{"name": "a", "base64data": "!!"}]},
                           "params.attachmentdata[0].base64data: is not valid base64"),
                          ({**base, "attachment": ["/nonexistent/file"]}, "params.attachment[0]: cannot read"),
                          ([1, 2], "params: SendMail needs a JSON object")):
        res = await execute_builtin(BuiltinContext(), "SendMail", params)
        assert res.returncode == -1 and field in res.output, (params, res.output)
    # a server that is not there
    res = await execute_builtin(BuiltinContext(timeout_ms=5000), "SendMail", {**base, "serverport": 1})
    assert res.returncode == -1 and "failed" in res.output


# ---- Download -----------------------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/missing"):
            self.send_error(404, "Not Found")
            return
        body = f"content of {self.path}\n".encode()
        self.send_response(200)
        if self.path.startswith("/attach"):
            self.send_header("Content-Disposition", 'attachment; filename="../../evil name.txt"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_download(http_server, tmp_path):
    urls = [f"{http_server}/data/one.csv", f"{http_server}/two%20x.txt", f"{http_server}/attach?id=1"]
    res = await execute_builtin(BuiltinContext(timeout_ms=10_000), "Download",
                                {"workersnum": 2, "fileurls": urls, "destpath": str(tmp_path)})
    assert res.returncode == 0, res.output
    assert (tmp_path / "one.csv").read_text() == "content of /data/one.csv\n"
    assert (tmp_path / "two x.txt").read_text() == "content of /two%20x.txt\n"
    # Content-Disposition wins, stripped to a base name (no path traversal)
    assert (tmp_path / "evil name.txt").read_text() == "content of /attach?id=1\n"
    assert res.output.splitlines()[0] == f"Downloaded {urls[0]} to {tmp_path / 'one.csv'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil name.txt", "one.csv", "two x.txt"]

    res = await execute_builtin(BuiltinContext(timeout_ms=10_000), "Download",
                                {"workersnum": 0, "fileurls": [f"{http_server}/missing.csv", urls[0]],
                                 "destpath": str(tmp_path)})
    assert res.returncode == -1 and "404" in res.output and "download failed" in res.output
    for params, msg in (({"fileurls": [], "destpath": str(tmp_path)}, "params.fileurls: Files to download"),
                        ({"fileurls": urls, "destpath": str(tmp_path / "nope")}, "params.destpath"),
                        ({"fileurls": ["file:///etc/passwd"], "destpath": str(tmp_path)}, "params.fileurls[0]"),
                        ({"fileurls": urls, "destpath": str(tmp_path), "workersnum": "2"},
                         "params.workersnum: must be an integer")):
        res = await execute_builtin(BuiltinContext(), "Download", params)
        assert res.returncode == -1 and msg in res.output, res.output


# ---- Copy* --------------------------------------------------------------------------------------

@pytest.fixture
def copy_ctx(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE items (id int, name text)")
    return BuiltinContext(connect=BuiltinContext.connector(ConnSettings(dsn=dsn)), timeout_ms=20_000)


def _rows(dsn, query="SELECT id, name FROM items ORDER BY id"):
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute(query).fetchall()


async def test_copy_from_and_to_file(copy_ctx, dsn, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("1,one\n2,two\n3,three\n")
    res = await execute_builtin(copy_ctx, "CopyFromFile",
                                {"sql": "COPY items FROM STDIN (FORMAT csv)", "filename": str(src)})
    assert res == bt.BuiltinResult(0, f"3 rows copied from {src}")
    assert _rows(dsn) == [(1, "one"), (2, "two"), (3, "three")]

    out = tmp_path / "out.csv"
    res = await execute_builtin(copy_ctx, "CopyToFile",
                                {"sql": "COPY (SELECT * FROM items WHERE id > 1 ORDER BY id) TO STDOUT (FORMAT csv)",
                                 "filename": str(out)})
    assert res == bt.BuiltinResult(0, f"2 rows copied to {out}")
    assert out.read_text() == "2,two\n3,three\n"

    bad = await execute_builtin(copy_ctx, "CopyFromFile", {"sql": "COPY items FROM STDIN (FORMAT csv)",
                                                           "filename": str(tmp_path / "missing.csv")})
    assert bad.returncode == -1 and "params.filename: cannot read" in bad.output
    bad = await execute_builtin(copy_ctx, "CopyFromFile", {"sql": "DELETE FROM items", "filename": str(src)})
    assert bad.returncode == -1 and "params.sql: must be a COPY" in bad.output
    src.write_text("x,broken\n")
    bad = await execute_builtin(copy_ctx, "CopyFromFile", {"sql": "COPY items FROM STDIN (FORMAT csv)",
                                                           "filename": str(src)})
    assert bad.returncode == -1 and "invalid input syntax" in bad.output
    assert len(_rows(dsn)) == 3


async def test_copy_to_and_from_program(copy_ctx, dsn, tmp_path):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 5000) g")
    dump = tmp_path / "dump.txt"
    res = await execute_builtin(copy_ctx, "CopyToProgram",
                                {"sql": "COPY (SELECT id, name FROM items ORDER BY id) TO STDOUT",
                                 "cmd": "/bin/sh", "args": ["-c", f"cat > {dump}; echo done"]})
    assert res.returncode == 0, res.output
    assert res.output == "5000 rows copied to program /bin/sh\ndone"
    lines = dump.read_text().splitlines()
    assert len(lines) == 5000 and lines[0] == "1\tn1" and lines[-1] == "5000\tn5000"

    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE items2 (id int, name text)")
    res = await execute_builtin(copy_ctx, "CopyFromProgram",
                                {"sql": "COPY items2 FROM STDIN", "cmd": "/bin/cat", "args": [str(dump)]})
    assert res.returncode == 0, res.output
    assert res.output == "5000 rows copied from program /bin/cat"
    assert _rows(dsn, "SELECT count(*), sum(id) FROM items2") == [(5000, 5000 * 5001 // 2)]

    # a failing program: the task fails with its exit code and nothing is loaded
    res = await execute_builtin(copy_ctx, "CopyFromProgram",
                                {"sql": "COPY items2 FROM STDIN", "cmd": "/bin/sh",
                                 "args": ["-c", "printf '9\\tx\\n'; echo oops >&2; exit 4"]})
    assert res.returncode == -1 and "exited with code 4" in res.output and "oops" in res.output
    assert _rows(dsn, "SELECT count(*) FROM items2 WHERE id = 9") == [(1,)]  # only the earlier load had id 9
    res = await execute_builtin(copy_ctx, "CopyToProgram",
                                {"sql": "COPY items TO STDOUT", "cmd": "/bin/sh", "args": ["-c", "exit 3"]})
    assert res.returncode == -1 and "exited with code 3" in res.output
    res = await execute_builtin(copy_ctx, "CopyToProgram",
                                {"sql": "COPY items TO STDOUT", "cmd": "/bin/sh", "args": [1]})
    assert res.returncode == -1 and "params.args[0]: must be a string" in res.output


async def test_validate_params_shapes():
    bt.validate_params("Sleep", 5)
    bt.validate_params("NoOp", None)
    bt.validate_params("CopyToProgram", {"sql": "COPY t TO STDOUT", "cmd": "x"})
    with pytest.raises(InputError, match=r"params\.cmd: is required"):
        bt.validate_params("CopyFromProgram", {"sql": "COPY t FROM STDIN"})
    with pytest.raises(InputError, match="command: unknown builtin"):
        bt.validate_params("Shell", None)
    with contextlib.suppress(InputError):
        bt.validate_params("Download", {"fileurls": ["http://x/y"], "destpath": "/tmp"})


# ---- through the real engine --------------------------------------------------------------------

from tests._timetable_support import SteppingClock, q, q1, running_engine, until  # noqa: E402


class Unchecked:
    """A parameter row the input checks (sql/timetable/0007) refuse, written as a row from
    before them would be: with triggers off for that one INSERT."""

    def __init__(self, row):
        self.row = row


def _add_chain(dsn, name, tasks, **chain):
    """tasks: list of (kind, command, [param rows], extra task columns)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        chain_id = c.execute("INSERT INTO timetable.chain (chain_name, run_at, live, on_error) "
                             "VALUES (%s, %s, false, %s) RETURNING chain_id",
                             (name, chain.get("run_at", "@reboot"), chain.get("on_error"))).fetchone()[0]
        for i, (kind, command, rows, extra) in enumerate(tasks, start=1):
            cols = {"chain_id": chain_id, "task_order": i * 10, "kind": kind, "command": command, **extra}
            task_id = c.execute(
                "INSERT INTO timetable.task (" + ", ".join(cols) + ") VALUES (" + ", ".join(["%s"] * len(cols))
                + ") RETURNING task_id", list(cols.values())).fetchone()[0]
            for order, row in enumerate(rows, start=1):
                unchecked = isinstance(row, Unchecked)
                if unchecked:
                    c.execute("SET session_replication_role = replica")
                c.execute("INSERT INTO timetable.parameter (task_id, order_id, value) VALUES (%s, %s, %s)",
                          (task_id, order, psycopg.types.json.Jsonb(row.row if unchecked else row)))
                if unchecked:
                    c.execute("RESET session_replication_role")
    return chain_id


async def _run(sched, dsn, chain_id):
    run_id = await sched.start_adhoc(chain_id)
    assert run_id is not None
    return await until(lambda: q1(dsn, "SELECT status FROM timetable.chain_run WHERE run_id = %s AND status "
                                       "NOT IN ('claimed', 'running')", (run_id,)), timeout=30, what="run end")


async def test_engine_runs_program_and_builtin_tasks(dsn, tmp_path):
    out = tmp_path / "out.txt"
    chain_id = _add_chain(dsn, "prog", [
        ("PROGRAM", "/bin/sh", [["-c", f"echo \"$0\" >> {out}", "first"], ["-c", f"echo \"$0\" >> {out}", "two"]], {}),
        ("BUILTIN", "NoOp", [{"x": 1}], {}),
        ("BUILTIN", "Log", [{"Status": "WARNING"}], {}),
        ("PROGRAM", PY, [["-c", "import sys; print('bad'); sys.exit(9)"]], {"ignore_error": True}),
        ("BUILTIN", "Sleep", [Unchecked(1.5)], {"ignore_error": True}),  # refused today, fails at run time
    ])
    async with running_engine(dsn, "tasks-e2e", SteppingClock()) as sched:
        assert await _run(sched, dsn, chain_id) == "succeeded"
    assert out.read_text() == "first\ntwo\n"
    rows = q(dsn, "SELECT kind::text, command, returncode, output, params FROM timetable.execution_log "
                  "WHERE chain_id = %s ORDER BY last_run, task_id", (chain_id,))
    assert [(r[0], r[2]) for r in rows] == [("PROGRAM", 0), ("PROGRAM", 0), ("BUILTIN", 0), ("BUILTIN", 0),
                                           ("PROGRAM", 9), ("BUILTIN", -1)]
    assert rows[2][3] == 'NoOp task called with value: {"x": 1}'
    assert rows[4][3] == "bad" and rows[4][4] == '["-c", "import sys; print(\'bad\'); sys.exit(9)"]'
    assert "integer number of seconds" in rows[5][3]
    # the Log builtin's text reaches timetable.log at INFO
    assert q1(dsn, "SELECT count(*) FROM timetable.log WHERE log_level = 'INFO' AND message = %s",
              ('{"Status": "WARNING"}',)) == 1


async def test_engine_program_timeout_and_no_program_tasks(dsn, tmp_path):
    marker = tmp_path / "marker"
    slow = _add_chain(dsn, "slow", [("PROGRAM", "/bin/sleep", [["31.25"]], {"timeout": 300})])
    refused = _add_chain(dsn, "refused", [
        ("PROGRAM", "/usr/bin/touch", [[str(marker)]], {"ignore_error": True}),
        ("BUILTIN", "CopyToProgram", [{"sql": "COPY (SELECT 1) TO STDOUT", "cmd": "/usr/bin/touch",
                                       "args": [str(marker)]}], {}),
    ], on_error="CREATE TABLE on_error_ran ()")
    async with running_engine(dsn, "tasks-e2e2", SteppingClock()) as sched:
        t0 = time.monotonic()
        assert await _run(sched, dsn, slow) == "failed"
        assert time.monotonic() - t0 < 10
    async with running_engine(dsn, "tasks-e2e3", SteppingClock(), no_program_tasks=True) as sched:
        assert await _run(sched, dsn, refused) == "failed"
    assert not marker.exists()
    rc, output = q(dsn, "SELECT returncode, output FROM timetable.execution_log WHERE chain_id = %s", (slow,))[0]
    # the program's own result wins: its process group was killed at the task timeout
    # (SIGKILL: 128 + 9) and the row says so (the run ended well before the sleep's 30 s)
    assert rc == 137 and "killed after the timeout" in output, (rc, output)
    rows = q(dsn, "SELECT kind::text, returncode, output FROM timetable.execution_log WHERE chain_id = %s "
                  "ORDER BY last_run", (refused,))
    assert [r[:2] for r in rows] == [("PROGRAM", -1), ("BUILTIN", -1)]
    assert all("program tasks execution is disabled" in r[2] for r in rows)
    assert q1(dsn, "SELECT to_regclass('on_error_ran') IS NOT NULL")


async def test_engine_copy_builtins_and_shutdown_without_worker(dsn, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("1,a\n2,b\n")
    dst = tmp_path / "out.csv"
    q(dsn, "CREATE TABLE t (id int, v text)")
    chain_id = _add_chain(dsn, "copy", [
        ("BUILTIN", "CopyFromFile", [{"sql": "COPY t FROM STDIN (FORMAT csv)", "filename": str(src)}], {}),
        ("BUILTIN", "CopyToFile", [{"sql": "COPY (SELECT * FROM t ORDER BY id) TO STDOUT (FORMAT csv)",
                                    "filename": str(dst)}], {}),
        ("BUILTIN", "Shutdown", [], {}),
    ])
    async with running_engine(dsn, "tasks-e2e4", SteppingClock()) as sched:
        # no `pgtt-tui worker` around this Scheduler: Shutdown fails clearly, the rest ran
        assert await _run(sched, dsn, chain_id) == "failed"
    assert dst.read_text() == "1,a\n2,b\n"
    outs = [r[0] for r in q(dsn, "SELECT output FROM timetable.execution_log WHERE chain_id = %s ORDER BY last_run",
                            (chain_id,))]
    assert outs[0] == f"2 rows copied from {src}" and outs[1] == f"2 rows copied to {dst}"
    assert "not started by `pgtt-tui worker`" in outs[2]


async def test_shutdown_builtin_cancels_running_chains_and_exits_5(dsn, tmp_path):
    """As pg_timetable: Shutdown cancels every chain running in the engine (SQL, PROGRAM and a
    Sleep builtin here), the engine stops without waiting for them and exits with code 5;
    the chain that called Shutdown runs to its end."""
    from engine.worker import WorkerOptions, run_worker

    q(dsn, "CREATE TABLE after_shutdown (n int)")
    sql_slow = _add_chain(dsn, "slow-sql", [("SQL", "SELECT pg_sleep(120)", [], {})])
    prog_slow = _add_chain(dsn, "slow-program", [("PROGRAM", "/bin/sleep", [["120"]], {})])
    sleep_slow = _add_chain(dsn, "slow-builtin", [("BUILTIN", "Sleep", [120], {})])
    stop = _add_chain(dsn, "maintenance", [("BUILTIN", "Shutdown", [], {}),
                                           ("SQL", "INSERT INTO after_shutdown VALUES (1)", [], {})])
    client = "shutdown-engine"
    options = WorkerOptions(settings=ConnSettings(dsn=dsn, application_name="pgtt-test worker"), client_name=client,
                            modules=["timetable"],
                            module_options={"timetable": {"poll_seconds": 0.2, "reap_seconds": 0.5}})
    worker = asyncio.create_task(run_worker(options))
    try:
        await until(lambda: q1(dsn, "SELECT count(*) FROM timetable.active_session WHERE client_name = %s",
                               (client,)), timeout=20, what="engine up")
        for chain_id in (sql_slow, prog_slow, sleep_slow):
            q(dsn, "SELECT timetable.notify_chain_start(%s, %s)", (chain_id, client))
        await until(lambda: q1(dsn, "SELECT count(*) FROM timetable.chain_run WHERE status = 'running'") == 3,
                    timeout=20, what="three slow runs")
        await asyncio.sleep(0.5)  # the program and the sleep are under way
        t0 = time.monotonic()
        q(dsn, "SELECT timetable.notify_chain_start(%s, %s)", (stop, client))
        supervisor = await asyncio.wait_for(worker, timeout=60)
        took = time.monotonic() - t0
    finally:
        if not worker.done():
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
    assert supervisor.exit_code == 5
    assert took < 15, f"the engine waited {took:.1f} s for the running chains instead of cancelling them"
    runs = dict((r[0], r[1:]) for r in q(dsn, "SELECT chain_id, status, reason FROM timetable.chain_run"))
    for chain_id in (sql_slow, prog_slow, sleep_slow):
        status, reason = runs[chain_id]
        assert status == "failed" and "stopped" in reason, (chain_id, status, reason)
    # the SQL run names the Shutdown; PROGRAM / BUILTIN runs get the executor's generic STOP
    # reason ("stopped by notify_chain_stop"): its _bounded() does not look at the run's reason
    assert "Shutdown builtin" in runs[sql_slow][1]
    assert runs[stop][0] == "succeeded"
    assert q(dsn, "SELECT n FROM after_shutdown") == [(1,)]  # the calling chain went on to its end
    assert q1(dsn, "SELECT count(*) FROM timetable.chain_run WHERE status IN ('claimed', 'running')") == 0
    assert q1(dsn, "SELECT count(*) FROM timetable.active_chain") == 0
