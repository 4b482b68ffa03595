"""What this role may read of each module, and the grant that would let it.

The one place for privilege detection. Everything is asked from the catalogs
(pg_namespace, pg_class, pg_proc and the has_*_privilege functions), which every role may
read: asking never fails with a permission error, and a module that is not installed (no
catalog entry) is told apart from one this role may not read.

- ``access(conn)``: per part (pgtt, timetable, schedule) installed and readable; the
  overview, sessions and logs read models show what they can and name the rest (``denied``);
- ``no_access(conn, part)``: for a console view whose reads failed with a permission
  error, what this role lacks (schema USAGE, SELECT on the tables it reads, EXECUTE on the
  functions it calls; has_function_privilege, signatures from pg_proc) and the GRANT
  statements that would give it read access (None when nothing is missing, so the error
  is something else);
- ``is_permission_error(exc)``: SQLSTATE 42501 (insufficient_privilege), raised by the
  server or passed on by an engine API.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from engine.errors import SchemaError

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
    """What a console view reads of one module (its schema has the part's name unless
    ``schema`` says otherwise)."""

    label: str  # how the panel names it: "the timetable tables"
    marker: str  # a relation that exists when the module is installed
    reads: tuple[str, ...]  # relations the view selects from directly
    all_tables: bool  # the fix grants SELECT on all tables of the schema (else on those missing)
    schema: str = ""
    uses: tuple[str, ...] = ()  # further schemas the view calls into (USAGE)
    calls: tuple[tuple[str, str, int], ...] = ()  # (schema, function, argument count) it calls: EXECUTE


# What the cascade view does on the console's own database: queue_views.cascade_queues
# selects from pgq_node.node_info, engine.cascade.status calls these functions (the
# members' probes run with the members' locations, not with this role). Both pgq_node
# versions (ours, the real extension) grant them to pgq_reader, not to PUBLIC.
CASCADE_CALLS = (
    ("pgq_node", "get_queue_locations", 1),
    ("pgq_node", "get_node_info", 1),
    ("pgq_node", "get_consumer_info", 1),
    ("pgq_node", "get_subscriber_info", 1),
    ("pgq", "get_queue_info", 1),
)

VIEW_PARTS = {
    "pgtt": ViewPart("the engine registry (schema pgtt)", "engine_status", PART_RELATIONS["pgtt"], True),
    "timetable": ViewPart("the timetable tables", "chain", PART_RELATIONS["timetable"], True),
    # the schedule module is read through its SQL API (SECURITY DEFINER functions and views
    # granted to PUBLIC), so USAGE on the schema is all a role needs
    "schedule": ViewPart("the schedule module", "cron", (), False),
    # PgQ grants these to PUBLIC (sql/pgq/0003_grants.sql); pgq.get_queue_info reads them
    "pgq": ViewPart("the PgQ tables", "queue", ("queue", "consumer", "tick", "subscription"), False),
    "cascade": ViewPart("the cascade status (pgq_node)", "node_info", ("node_info",), False, schema="pgq_node",
                        uses=("pgq",), calls=CASCADE_CALLS),
}

_NO_ACCESS_SQL = """
SELECT current_user, quote_ident(current_user), quote_ident(%(schema)s),
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %(schema)s AND c.relname = %(marker)s) AS installed,
       ARRAY(SELECT quote_ident(s.name) FROM unnest(%(schemas)s::text[]) WITH ORDINALITY s(name, i)
             JOIN pg_namespace n ON n.nspname = s.name
             WHERE NOT has_schema_privilege(n.oid, 'USAGE') ORDER BY s.i) AS no_usage,
       ARRAY(SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = %(schema)s AND c.relname = ANY(%(reads)s) AND NOT has_table_privilege(c.oid, 'SELECT')
             ORDER BY c.relname) AS unreadable,
       ARRAY(SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '('
                    || coalesce((SELECT string_agg(format_type(a.type, NULL), ', ' ORDER BY a.i)
                                 FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(type, i)), '') || ')'
             FROM unnest(%(fn_schemas)s::text[], %(fn_names)s::text[], %(fn_nargs)s::int[])
                  WITH ORDINALITY f(nspname, proname, nargs, i)
             JOIN pg_namespace n ON n.nspname = f.nspname
             JOIN pg_proc p ON p.pronamespace = n.oid AND p.proname = f.proname AND p.pronargs = f.nargs
             WHERE NOT has_function_privilege(p.oid, 'EXECUTE') ORDER BY f.i, p.oid) AS no_execute
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


@dataclass(frozen=True)
class NotInstalled:
    """A view's module is missing from this database (``schema.missing_module``): the view
    shows this in place of its tables, like a NoAccess, and checks again by itself."""

    module: str
    message: str

    @property
    def summary(self) -> str:
        return f"the {self.module} module is not installed here"


def not_installed(exc: BaseException) -> NotInstalled | None:
    from engine.schema import missing_module  # noqa: PLC0415

    if isinstance(exc, SchemaError) and "not installed" in str(exc):
        missing: SchemaError | None = exc
    else:
        missing = missing_module(exc)
    if missing is None:
        return None
    words = str(missing).split()
    module = words[1] if len(words) > 1 and words[0] == "the" else "?"
    return NotInstalled(module, str(missing))


def no_access(conn: psycopg.Connection, part: str) -> NoAccess | None:
    """What reading ``part`` needs that this role lacks; None when the part is not installed
    or nothing is missing (then a permission error has another cause and is shown as it is)."""
    spec = VIEW_PARTS[part]
    schema = spec.schema or part
    row = conn.execute(_NO_ACCESS_SQL, {
        "schema": schema, "marker": spec.marker, "reads": list(spec.reads), "schemas": [schema, *spec.uses],
        "fn_schemas": [c[0] for c in spec.calls], "fn_names": [c[1] for c in spec.calls],
        "fn_nargs": [c[2] for c in spec.calls]}).fetchone()
    role, q_role, q_schema, installed, no_usage, unreadable, no_execute = row
    if not installed or not (no_usage or unreadable or no_execute):
        return None
    missing: list[str] = []
    grants: list[str] = []
    if no_usage:
        missing.append(f"USAGE on schema{'s' if len(no_usage) > 1 else ''} {', '.join(no_usage)}")
        grants.extend(f"GRANT USAGE ON SCHEMA {q} TO {q_role};" for q in no_usage)
    if unreadable:
        missing.append(f"SELECT on {', '.join(unreadable)}" if len(unreadable) <= 2
                       else f"SELECT on {len(unreadable)} of its tables")
        target = f"ALL TABLES IN SCHEMA {q_schema}" if spec.all_tables else ", ".join(unreadable)
        grants.append(f"GRANT SELECT ON {target} TO {q_role};")
    if no_execute:
        missing.append(f"EXECUTE on {', '.join(no_execute)}" if len(no_execute) <= 2
                       else f"EXECUTE on {len(no_execute)} of the functions it calls")
        grants.append(f"GRANT EXECUTE ON FUNCTION {', '.join(no_execute)} TO {q_role};")
    return NoAccess(part, role, spec.label, tuple(missing), tuple(grants))


def is_permission_error(exc: BaseException) -> bool:
    """SQLSTATE 42501 from the server, or an engine error that stands for it."""
    return getattr(exc, "sqlstate", None) == INSUFFICIENT_PRIVILEGE
