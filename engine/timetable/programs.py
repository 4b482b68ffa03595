"""PROGRAM tasks: start an executable without a shell, capture its output, enforce timeouts.

pg_timetable semantics (reference §3.4) and what we do better:

- ``command`` is the executable (a path, or a name looked up on ``PATH``); each parameter
  row is a JSON array of strings used as ``argv[1:]``. There is never a shell: a task that
  wants one says ``bash -c "…"``. stdin is ``/dev/null``.
- stdout and stderr are read concurrently while the program runs, so a chatty program can
  never block on a full pipe. Each stream keeps its first ``output_limit`` bytes (the head);
  the rest is read and dropped and ``truncated`` is set. ``output`` is both streams
  combined in arrival order (as pg_timetable's combined output), bounded the same way and
  ending with a ``[output truncated: …]`` line when something was dropped.
- The real exit status is recorded (pg_timetable loses it since #742 and logs -1):

  ========================  ==================================================
  program exits normally    its exit code, 0–255
  killed by signal N        128 + N (the shell convention; 137 for SIGKILL)
  cannot be started         127 (not found) or 126 (not executable / denied),
                            with the reason in ``output``
  ========================  ==================================================

- The program runs in its own process group (a new session). At the timeout — or when the
  running task is cancelled, e.g. by ``notify_chain_stop`` — the *whole group* gets
  SIGKILL, so ``bash -c "sleep 100 | cat"`` leaves nothing behind. ``timed_out`` is then
  true and the return code is 137. After the main process exits we wait briefly for the
  pipes to close (children that kept them open), then stop reading.
- A program never outlives the engine that started it (Linux): the child asks the kernel
  for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, set between fork and exec;
  it fires when the *thread* that started it ends, and the engine starts programs from its
  event-loop thread, which lives as long as the engine), and a small guardian process
  (one per engine process, started with the first program) holds the other end of a pipe
  and the list of running program groups: when the engine dies, for any reason (kill -9
  too), the pipe closes and the guardian SIGKILLs those whole groups, so grandchildren
  (``bash -c "sleep 100 | cat"``) die as well.  So a crashed engine leaves no program
  running that a new engine would run a second time (max_instances), and the recorded
  outcome (failed: the engine lost its session) is true.
- ``--no-program-tasks``: :func:`set_programs_allowed(False)` is a process-wide switch that
  every path that starts a program checks — PROGRAM tasks and the CopyToProgram /
  CopyFromProgram builtins alike — through the one spawning function :func:`_spawn`.
  Callers may also pass ``allowed=False`` per call; either refusal raises
  :class:`ProgramsDisabledError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from engine.errors import InputError, PgttError

DEFAULT_OUTPUT_LIMIT = 1_000_000
#: after the main process exits, how long to wait for grandchildren to close the pipes
PIPE_GRACE_SECONDS = 0.5
_READ_CHUNK = 65536

_programs_allowed = True


class ProgramsDisabledError(PgttError):
    """A program was about to be started while program tasks are disabled."""

    def __init__(self, what: str = "program tasks"):
        super().__init__(f"{what}: program tasks execution is disabled (--no-program-tasks); "
                         "no program was started")


def set_programs_allowed(allowed: bool) -> None:
    """The process-wide ``--no-program-tasks`` switch (False = refuse every program start)."""
    global _programs_allowed
    _programs_allowed = bool(allowed)


def programs_allowed() -> bool:
    return _programs_allowed


@dataclass
class ProgramResult:
    returncode: int
    output: str  # stdout and stderr combined in arrival order, stripped; bounded
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class _Capture:
    """Keeps the first ``limit`` bytes of a stream, counts the rest."""

    def __init__(self, limit: int):
        self.limit = limit
        self.buf = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self.limit - len(self.buf)
        if room > 0:
            self.buf += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


def exit_code(raw: int | None) -> int:
    """asyncio's returncode (-N for a signal) as we record it: 128 + N for signals."""
    if raw is None:
        return -1
    return 128 - raw if raw < 0 else raw


def validate_argv(command: object, args: object, field: str = "params") -> list[str]:
    """``command`` plus one parameter row as argv; InputError names the bad field."""
    if not isinstance(command, str) or not command.strip():
        raise InputError("command", "must name the program to run")
    if args is None:
        args = []
    if not isinstance(args, list):
        raise InputError(field, "must be a JSON array of strings (the program's arguments)")
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            raise InputError(f"{field}[{i}]", f"must be a string, not {type(arg).__name__}")
        if "\x00" in arg:
            raise InputError(f"{field}[{i}]", "must not contain a NUL character")
    if "\x00" in command:
        raise InputError("command", "must not contain a NUL character")
    return [command, *args]


_PR_SET_PDEATHSIG = 1
_prctl = None  # libc's prctl, resolved once in the engine (not in the forked child)


def _pdeathsig_setup() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when the engine (the forking thread) dies;
    None where there is no prctl (not Linux)."""
    global _prctl
    if not sys.platform.startswith("linux"):
        return None
    if _prctl is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return None
        fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        fn.restype = ctypes.c_int
        _prctl = fn
    prctl, parent = _prctl, os.getpid()

    def setup() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the engine died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)
    return setup


_GUARDIAN_SCRIPT = """
import os, signal, sys
groups = set()
for line in sys.stdin.buffer:  # EOF: the engine process is gone (or closed the pipe)
    try:
        pgid = int(line[1:])
    except ValueError:
        continue
    if line[:1] == b"+":
        groups.add(pgid)
    else:
        groups.discard(pgid)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class _Guardian:
    """One process per engine process that kills the process groups of the programs still
    running when the engine dies (it reads EOF on a pipe only the engine holds open)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._groups: set[int] = set()

    def _send(self, line: bytes) -> None:
        try:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _GUARDIAN_SCRIPT], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                for pgid in self._groups:  # a new guardian learns the groups still running
                    self._proc.stdin.write(b"+%d\n" % pgid)
            self._proc.stdin.write(line)
            self._proc.stdin.flush()
        except OSError:  # no guardian: the programs still get SIGKILL from the kernel (pdeathsig)
            self._proc = None

    def add(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)
            self._send(b"+%d\n" % pgid)

    def remove(self, pgid: int) -> None:
        with self._lock:
            if pgid in self._groups:
                self._groups.discard(pgid)
                self._send(b"-%d\n" % pgid)

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


_guardian = _Guardian()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # os.kill, not proc.kill(): Popen.kill() polls first and could reap the child behind
    # asyncio's child watcher (which then reports 255 instead of the real status)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session: pgid == pid
    except (ProcessLookupError, PermissionError):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGKILL)


async def _spawn(argv: list[str], *, allowed: bool, what: str, stdin: int, stdout: int,
                 env: Mapping[str, str] | None, cwd: str | os.PathLike | None) -> asyncio.subprocess.Process:
    """THE place where programs are started; refuses when program tasks are disabled."""
    if not (allowed and _programs_allowed):
        raise ProgramsDisabledError(what)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=stdin, stdout=stdout, stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        preexec_fn=_pdeathsig_setup())
    _guardian.add(proc.pid)  # its own session: the group id is its pid
    return proc


def _start_failure(argv: list[str], exc: OSError) -> ProgramResult:
    code = 127 if isinstance(exc, FileNotFoundError) else 126
    reason = exc.strerror or str(exc)
    msg = f"cannot start program {argv[0]!r}: {reason}"
    return ProgramResult(returncode=code, output=msg, stdout="", stderr=msg)


async def run_piped(argv: list[str], *, timeout_ms: int | None, output_limit: int = DEFAULT_OUTPUT_LIMIT,
                    env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
                    stdin_source: AsyncIterator[bytes] | None = None,
                    stdout_sink: Callable[[bytes], Awaitable[None]] | None = None,
                    allowed: bool = True, what: str = "PROGRAM task") -> ProgramResult:
    """Run argv; optionally feed stdin from ``stdin_source`` and/or hand stdout to ``stdout_sink``
    (then stdout is not captured). Used by PROGRAM tasks and the Copy*Program builtins."""
    if output_limit < 0:
        raise InputError("output_limit", "must be >= 0")
    try:
        proc = await _spawn(argv, allowed=allowed, what=what,
                            stdin=asyncio.subprocess.PIPE if stdin_source is not None else asyncio.subprocess.DEVNULL,
                            stdout=asyncio.subprocess.PIPE, env=env, cwd=cwd)
    except ProgramsDisabledError:
        raise
    except OSError as exc:
        return _start_failure(argv, exc)

    try:
        out, err, both = _Capture(output_limit), _Capture(output_limit), _Capture(output_limit)
        sink_error: list[BaseException] = []

        async def read(stream: asyncio.StreamReader, capture: _Capture, to_sink: bool) -> None:
            while True:
                data = await stream.read(_READ_CHUNK)
                if not data:
                    return
                if to_sink and not sink_error:
                    try:
                        await stdout_sink(data)  # type: ignore[misc]
                    except Exception as exc:  # the consumer failed: stop the program
                        sink_error.append(exc)
                        _kill_group(proc)
                    continue
                if to_sink:
                    continue
                capture.add(data)
                both.add(data)

        async def feed() -> None:
            assert proc.stdin is not None
            try:
                async for data in stdin_source:  # type: ignore[union-attr]
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the program stopped reading; its exit status tells the story
            finally:
                with contextlib.suppress(Exception):
                    proc.stdin.close()

        readers = [asyncio.create_task(read(proc.stdout, out, stdout_sink is not None)),
                   asyncio.create_task(read(proc.stderr, err, False))]
        feeder = asyncio.create_task(feed()) if stdin_source is not None else None
        waiter = asyncio.create_task(proc.wait())
        timed_out = False
        try:
            timeout = timeout_ms / 1000 if timeout_ms and timeout_ms > 0 else None
            done, _ = await asyncio.wait({waiter}, timeout=timeout)
            if not done:
                timed_out = True
                _kill_group(proc)
                await waiter
            # the main process is gone; give the pipes a moment to reach EOF (grandchildren)
            _, pending = await asyncio.wait(readers, timeout=PIPE_GRACE_SECONDS if not timed_out else 2.0)
            for task in pending:
                task.cancel()
            if feeder is not None:
                if not feeder.done():
                    feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
                if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
                    sink_error.append(feeder.exception())
            await asyncio.gather(*readers, return_exceptions=True)
        except asyncio.CancelledError:
            _kill_group(proc)
            for task in (*readers, *([feeder] if feeder else [])):
                task.cancel()
            # reap the killed program before going on: a run cancelled at engine shutdown must
            # not leave a zombie, nor a pipe transport that outlives the event loop
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(waiter), timeout=2.0)
            await asyncio.gather(*readers, *([feeder] if feeder else []), return_exceptions=True)
            raise
        if sink_error:
            raise sink_error[0]

        truncated = bool(out.dropped or err.dropped or both.dropped)
        output = both.text().strip()
        if both.dropped:
            output += f"\n[output truncated: {both.dropped} more bytes not kept]"
        if timed_out:
            output = (output + "\n" if output else "") + f"[killed after the timeout of {timeout_ms} ms]"
        return ProgramResult(returncode=exit_code(proc.returncode), output=output, stdout=out.text(),
                             stderr=err.text(), timed_out=timed_out, truncated=truncated)
    finally:
        _guardian.remove(proc.pid)  # ended: its group id may be reused


async def run_program(command: str, args: list[str], *, timeout_ms: int | None,
                      output_limit: int = DEFAULT_OUTPUT_LIMIT, env: Mapping[str, str] | None = None,
                      cwd: str | os.PathLike | None = None, allowed: bool = True) -> ProgramResult:
    """Run one PROGRAM task execution: ``command`` with ``args`` as argv, no shell.

    Raises ProgramsDisabledError when program tasks are disabled, InputError for a bad
    argv; every other outcome (non-zero exit, signal, timeout, cannot start) is a result.
    """
    argv = validate_argv(command, args)
    return await run_piped(argv, timeout_ms=timeout_ms, output_limit=output_limit, env=env, cwd=cwd,
                           allowed=allowed)
