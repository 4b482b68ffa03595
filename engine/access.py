"""What this role may read of each module, and the grant that would let it.

The one place for privilege detection. Everything is asked from the catalogs
(pg_namespace, pg_class, has_schema_privilege, has_table_privilege), which every role may
read: asking never fails with a permission error, and a module that is not installed (no
catalog entry) is told apart from one this role may not read.

- ``access(conn)``: per part (pgtt, timetable, schedule) installed and readable; the
  overview, sessions and logs read models show what they can and name the rest (``denied``);
- ``no_access(conn, part)``: for a console view whose reads failed with a permission
  error, what this role lacks and the GRANT statements that would give it read access
  (None when nothing is missing, so the error is something else);
- ``is_permission_error(exc)``: SQLSTATE 42501 (insufficient_privilege), raised by the
  server or passed on by an engine API.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

INSUFFICIENT_PRIVILEGE = "42501"

# The relations each part needs, found in the catalogs (no name lookup, so no permission
# error): installed = the first one exists; readable = schema USAGE and SELECT on all.
PART_RELATIONS = {
    "pgtt": ("engine_status",),
    "timetable": ("chain_run", "chain", "chain_state", "task", "log", "execution_log"),
    "schedule": ("cron_run", "cron", "at_job"),
}
_ACCESS_SQL = """
SELECT n.nspname, c.relname,
       has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT') AS readable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%(schemas)s) AND c.relname = ANY(%(names)s)
"""


class Access(dict):
    """installed(part) / readable(part) for pgtt, timetable, schedule; ``self[part]`` is
    whether the part is installed (the old ``installed()`` mapping)."""

    def __init__(self, found: dict[tuple[str, str], bool], role: str = "") -> None:
        self.found = found
        self.role = role
        super().__init__({part: (part, names[0]) in found for part, names in PART_RELATIONS.items()})

    def readable(self, part: str) -> bool:
        names = PART_RELATIONS[part]
        return self[part] and all(self.found.get((part, n), True) for n in names)

    def denied_text(self, part: str) -> str:
        """What the role may not read, and the grant that would let it."""
        return (f"role {self.role or 'this role'} may not read the {part} tables (needs USAGE on schema {part} "
                f"and SELECT on its tables)")


def access(conn: psycopg.Connection) -> Access:
    """Which parts are installed, and which this role may read directly."""
    names = sorted({n for rels in PART_RELATIONS.values() for n in rels})
    rows = conn.execute(_ACCESS_SQL, {"schemas": list(PART_RELATIONS), "names": names}).fetchall()
    found = {(r[0], r[1]): bool(r[2]) for r in rows if r[1] in PART_RELATIONS.get(r[0], ())}
    role = conn.execute("SELECT current_user").fetchone()[0]
    return Access(found, role)


def denied(parts: Access) -> dict[str, str]:
    """Installed parts this role may not read at all (the schedule part always has its API)."""
    return {p: parts.denied_text(p) for p in ("pgtt", "timetable") if parts[p] and not parts.readable(p)}


# ---- one view's part: what is missing, and the grant ---------------------------------------

@dataclass(frozen=True)
class ViewPart:
    """What a console view reads of one module (the schema has the module's name)."""

    label: str  # how the panel names it: "the timetable tables"
    marker: str  # a relation that exists when the module is installed
    reads: tuple[str, ...]  # relations the view selects from directly
    all_tables: bool  # the fix grants SELECT on all tables of the schema (else on those missing)


VIEW_PARTS = {
    "pgtt": ViewPart("the engine registry (schema pgtt)", "engine_status", PART_RELATIONS["pgtt"], True),
    "timetable": ViewPart("the timetable tables", "chain", PART_RELATIONS["timetable"], True),
    # the schedule module is read through its SQL API (SECURITY DEFINER functions and views
    # granted to PUBLIC), so USAGE on the schema is all a role needs
    "schedule": ViewPart("the schedule module", "cron", (), False),
    # PgQ grants these to PUBLIC (sql/pgq/0003_grants.sql); pgq.get_queue_info reads them
    "pgq": ViewPart("the PgQ tables", "queue", ("queue", "consumer", "tick", "subscription"), False),
}

_NO_ACCESS_SQL = """
SELECT current_user, quote_ident(current_user), quote_ident(%(schema)s),
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %(schema)s AND c.relname = %(marker)s) AS installed,
       coalesce((SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n WHERE n.nspname = %(schema)s),
                false) AS usage,
       ARRAY(SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = %(schema)s AND c.relname = ANY(%(reads)s) AND NOT has_table_privilege(c.oid, 'SELECT')
             ORDER BY c.relname) AS unreadable
"""


@dataclass(frozen=True)
class NoAccess:
    """An installed module this role may not read, what it lacks, and the statements an
    administrator runs to give it read access (writes need more)."""

    part: str
    role: str
    label: str
    missing: tuple[str, ...]
    grants: tuple[str, ...]

    @property
    def summary(self) -> str:
        return f"no access for role {self.role} to {self.label}"


def no_access(conn: psycopg.Connection, part: str) -> NoAccess | None:
    """What reading ``part`` needs that this role lacks; None when the part is not installed
    or nothing is missing (then a permission error has another cause and is shown as it is)."""
    spec = VIEW_PARTS[part]
    row = conn.execute(_NO_ACCESS_SQL, {"schema": part, "marker": spec.marker, "reads": list(spec.reads)}).fetchone()
    role, q_role, q_schema, installed, usage, unreadable = row
    if not installed or (usage and not unreadable):
        return None
    missing: list[str] = []
    grants: list[str] = []
    if not usage:
        missing.append(f"USAGE on schema {part}")
        grants.append(f"GRANT USAGE ON SCHEMA {q_schema} TO {q_role};")
    if unreadable:
        missing.append(f"SELECT on {', '.join(unreadable)}" if len(unreadable) <= 2
                       else f"SELECT on {len(unreadable)} of its tables")
        target = f"ALL TABLES IN SCHEMA {q_schema}" if spec.all_tables else ", ".join(unreadable)
        grants.append(f"GRANT SELECT ON {target} TO {q_role};")
    return NoAccess(part, role, spec.label, tuple(missing), tuple(grants))


def is_permission_error(exc: BaseException) -> bool:
    """SQLSTATE 42501 from the server, or an engine error that stands for it."""
    return getattr(exc, "sqlstate", None) == INSUFFICIENT_PRIVILEGE
