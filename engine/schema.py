"""Installer and migrator for the database modules in sql/.

Layout: ``sql/<module>/NNNN_name.sql``. A module's version is the number of its newest
file. Rules:
- the ledger ``pgtt.schema_migration`` records every file applied, with its checksum;
- each module is applied in its own transaction (all its pending files or none);
- the whole run holds one advisory lock, so two ``db init`` at once end with one schema:
  the second waits, then finds nothing to do;
- re-running is a no-op;
- where the real ``pgq`` / ``pgq_node`` extensions are installed, those modules are left
  alone and reported as provided by the extension (our engine uses the same public API).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import psycopg

from engine.errors import InputError, SchemaError
from engine.paths import sql_root

# Install order; each module names the modules it needs.
MODULES: dict[str, tuple[str, ...]] = {
    "pgtt": (),
    "pgq": ("pgtt",),
    "pgq_node": ("pgtt", "pgq"),
    "timetable": ("pgtt",),
    "schedule": ("pgtt",),
}
USER_MODULES = tuple(m for m in MODULES if m != "pgtt")
EXTENSION_MODULES = ("pgq", "pgq_node")
# pg_advisory_lock key for schema changes: any fixed bigint, documented in ARCHITECTURE.md
SCHEMA_LOCK_KEY = 0x70677474_00000001
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

LEDGER_DDL = """
CREATE SCHEMA IF NOT EXISTS pgtt;
CREATE TABLE IF NOT EXISTS pgtt.schema_migration (
    module     text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text        NOT NULL DEFAULT current_user,
    PRIMARY KEY (module, version)
);
COMMENT ON TABLE pgtt.schema_migration IS 'pgtt-tui: migration ledger, one row per applied sql/<module>/NNNN_*.sql file';
"""


@dataclass(frozen=True)
class Migration:
    module: str
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass
class ModuleStatus:
    module: str
    installed: int | None  # None: not installed
    available: int
    state: str  # "up to date" | "outdated" | "not installed" | "extension" | "newer than this pgtt-tui"
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@cache
def migrations(module: str) -> tuple[Migration, ...]:
    folder = sql_root() / module
    found = []
    for path in sorted(folder.glob("*.sql")) if folder.is_dir() else []:
        match = _FILE_RE.match(path.name)
        if not match:
            raise SchemaError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(module, int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(versions) + 1)):
        raise SchemaError(f"sql/{module}: migration numbers must run 1, 2, 3 … without gaps (found {versions})")
    return tuple(found)


def available_version(module: str) -> int:
    return len(migrations(module))


def parse_modules(text: str | None) -> list[str]:
    """``--modules timetable,pgq`` → ordered list with dependencies added."""
    if text is None or text.strip() in ("", "all"):
        wanted = list(USER_MODULES)
    else:
        wanted = [part.strip() for part in text.split(",") if part.strip()]
        for name in wanted:
            if name not in USER_MODULES:
                raise InputError("--modules", f"unknown module {name!r} (choose from {', '.join(USER_MODULES)})")
    closed: set[str] = set()

    def add(name: str) -> None:
        for dep in MODULES[name]:
            add(dep)
        closed.add(name)

    for name in wanted:
        add(name)
    return [m for m in MODULES if m in closed]


_MISSING_SQLSTATES = ("42P01", "3F000", "42883")  # undefined table, invalid schema name, undefined function
_OBJECT_RE = re.compile(r'(?:relation|schema|function)\s+"?([a-z_]+)[."]')


def missing_module(exc: BaseException) -> SchemaError | None:
    """When ``exc`` says one of our schemas or its objects does not exist, the SchemaError that
    names the module and the command that installs it (exit code 4); else None."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate not in _MISSING_SQLSTATES:
        return None
    match = _OBJECT_RE.search(str(exc))
    module = match.group(1) if match else None
    if module not in MODULES:
        return None
    return SchemaError(f"the {module} module is not installed in this database: run `pgtt-tui db init "
                       f"--modules {module}`")


def _speak_utf8(conn: psycopg.Connection) -> None:
    """Make a caller's connection speak UTF8 (engine.db's connections already do).

    With the client encoding of a SQL_ASCII database psycopg returns text as bytes: the
    ledger then read ``b'pgtt'`` and a second ``db init`` re-ran installed files."""
    if conn.info.encoding != "utf-8":
        conn.execute("SELECT set_config('client_encoding', 'UTF8', false)")


def _ledger_exists(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('pgtt.schema_migration') IS NOT NULL").fetchone()[0]


def installed_versions(conn: psycopg.Connection) -> dict[str, int]:
    _speak_utf8(conn)
    if not _ledger_exists(conn):
        return {}
    rows = conn.execute("SELECT module, max(version) FROM pgtt.schema_migration GROUP BY module").fetchall()
    return {module: version for module, version in rows}


def extensions(conn: psycopg.Connection) -> dict[str, str]:
    """Real PgQ extensions present in this database: name → version."""
    rows = conn.execute(
        "SELECT extname, extversion FROM pg_extension WHERE extname = ANY(%s)", (list(EXTENSION_MODULES),)
    ).fetchall()
    return dict(rows)


def status(conn: psycopg.Connection) -> list[ModuleStatus]:
    installed = installed_versions(conn)
    exts = extensions(conn)
    result = []
    for module in MODULES:
        avail = available_version(module)
        have = installed.get(module)
        if module in exts:
            result.append(ModuleStatus(module, None, avail, "extension", f"real extension {module} {exts[module]}"))
        elif have is None:
            result.append(ModuleStatus(module, None, avail, "not installed"))
        elif have < avail:
            result.append(ModuleStatus(module, have, avail, "outdated", "run: pgtt-tui db upgrade"))
        elif have > avail:
            result.append(ModuleStatus(module, have, avail, "newer than this pgtt-tui", "upgrade pgtt-tui"))
        else:
            result.append(ModuleStatus(module, have, avail, "up to date"))
    return result


def _check_can_create(conn: psycopg.Connection) -> None:
    ok, role, db = conn.execute(
        "SELECT has_database_privilege(current_database(), 'CREATE'), current_user, current_database()"
    ).fetchone()
    if not ok:
        raise SchemaError(
            f'role "{role}" may not create schemas in database "{db}": run as the database owner, '
            f'or GRANT CREATE ON DATABASE "{db}" TO "{role}"'
        )


def install(conn: psycopg.Connection, modules: list[str] | None = None, *, upgrade_only: bool = False,
            on_progress: Callable[[int, int, str], None] | None = None) -> list[str]:
    """Install or upgrade modules; returns what was done, one line each.

    ``on_progress(done, total, file)`` is called before each migration file runs (``total``:
    the files pending in that module), so a long upgrade can show where it is.

    ``conn`` must be in autocommit mode: each module gets its own transaction here.
    """
    if not conn.autocommit:
        raise ValueError("schema.install needs an autocommit connection")
    modules = modules or list(MODULES)
    for name in modules:
        if name not in MODULES:
            raise InputError("--modules", f"unknown module {name!r}")
    _speak_utf8(conn)
    _check_can_create(conn)
    done: list[str] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
    try:
        with conn.transaction():
            conn.execute(LEDGER_DDL)
        installed = installed_versions(conn)
        exts = extensions(conn)
        for module in [m for m in MODULES if m in modules]:
            if module in exts:
                done.append(f"{module}: the real extension {module} {exts[module]} is installed; left in place")
                continue
            have = installed.get(module, 0)
            if upgrade_only and have == 0 and module != "pgtt":
                continue
            pending = [m for m in migrations(module) if m.version > have]
            if have > available_version(module):
                raise SchemaError(f"{module}: the database has version {have}, newer than this pgtt-tui "
                                  f"({available_version(module)}): upgrade pgtt-tui")
            missing = [dep for dep in MODULES[module] if dep not in installed and dep not in exts
                       and dep not in modules]
            if missing:
                raise SchemaError(f"{module} needs {', '.join(missing)}: install it too (db init --modules …)")
            if not pending:
                continue
            with conn.transaction():
                for number, migration in enumerate(pending):
                    if on_progress is not None:
                        on_progress(number, len(pending), f"{module}/{migration.path.name}")
                    try:
                        conn.execute(migration.text)
                    except psycopg.Error as exc:
                        raise SchemaError(f"{migration.path.name}: {str(exc).strip().splitlines()[0]}") from exc
                    except (OSError, ValueError) as exc:  # unreadable file, bad encoding
                        raise SchemaError(f"{migration.path.name}: cannot apply this file: {exc} — reinstall "
                                          f"pgtt-tui (the file is damaged)") from exc
                    conn.execute(
                        "INSERT INTO pgtt.schema_migration (module, version, name, checksum) VALUES (%s, %s, %s, %s)",
                        (module, migration.version, migration.name, migration.checksum),
                    )
            installed[module] = pending[-1].version
            done.append(f"{module}: {'installed' if have == 0 else 'upgraded'} to version {pending[-1].version}"
                        + (f" (from {have})" if have else ""))
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
    return done


def require_current(conn: psycopg.Connection, modules: list[str]) -> None:
    """Refuse to run on a missing or outdated schema, naming the command that fixes it."""
    by_name = {s.module: s for s in status(conn)}
    for module in modules:
        st = by_name[module]
        if st.state in ("up to date", "extension"):
            continue
        if st.state == "not installed":
            raise SchemaError(f"module {module} is not installed in this database: run `pgtt-tui db init "
                              f"--modules {module}`")
        if st.state == "outdated":
            raise SchemaError(f"module {module} is at version {st.installed}, this pgtt-tui needs "
                              f"{st.available}: run `pgtt-tui db upgrade`")
        raise SchemaError(f"module {module}: {st.state} ({st.note})")
