"""The role sets an administrator gives to people: ``pgtt-tui db grant --role R --as P``.

Profiles (README "Security model"):

* ``reader``: sees what the console shows, without connection secrets: USAGE on
  ``timetable`` and SELECT on its tables and views (a remote task's password is not there:
  ``timetable.task.database_connection`` holds it masked, the whole string lives in
  ``timetable_secret``, which no grant here touches);
  ``pgq_reader`` (queues, consumers, and the pgq_node tables) and SELECT on the queue and
  cascade samples in ``pgtt`` (the charts' history). ``schedule`` needs no grant:
  every role sees and changes only its own jobs.
* ``operator``: a reader who may also START and STOP chains (``timetable_operator``:
  ``notify_chain_start`` / ``notify_chain_stop``) and operate queues and cascades
  (``pgq_admin``).

Only modules installed in the database are granted. The statements are returned, so
``--dry-run`` prints them; nothing is run when one of them would be refused.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from engine.errors import InputError

PROFILES = ("reader", "operator")
SAMPLE_TABLES = ("queue_sample", "cascade_sample")

_RELATIONS_SQL = """
SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
WHERE c.relnamespace = %s::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p')
ORDER BY c.relname
"""

def _installed(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,)).fetchone()[0]


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s)", (role,)).fetchone()[0]


def _read_schema(conn: psycopg.Connection, schema: str, role: sql.Identifier) -> list[sql.Composable]:
    out: list[sql.Composable] = [sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role)]
    for name, _kind in conn.execute(_RELATIONS_SQL, (schema,)).fetchall():
        out.append(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(schema, name), role))
    return out


def plan(conn: psycopg.Connection, role: str, profile: str) -> list[sql.Composable]:
    """The statements that give ``role`` the ``profile`` for the modules installed here."""
    if profile not in PROFILES:
        raise InputError("--as", f"{profile!r} is not one of {', '.join(PROFILES)}")
    if not role:
        raise InputError("--role", "must name a role")
    if not _role_exists(conn, role):
        raise InputError("--role", f"no role {role!r} in this cluster (CREATE ROLE it first)")
    who = sql.Identifier(role)
    out: list[sql.Composable] = []
    if _installed(conn, "timetable"):
        out += _read_schema(conn, "timetable", who)
        if profile == "operator":
            out.append(sql.SQL("GRANT {} TO {}").format(sql.Identifier("timetable_operator"), who))
    if _installed(conn, "pgq"):
        out.append(sql.SQL("GRANT {} TO {}").format(
            sql.Identifier("pgq_admin" if profile == "operator" else "pgq_reader"), who))
        # the queue and cascade charts' history (sql/pgtt/0006_trend_samples.sql)
        for table in SAMPLE_TABLES:
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pgtt.{table}",)).fetchone()[0]:
                out.append(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier("pgtt", table), who))
    return out


def apply(conn: psycopg.Connection, role: str, profile: str, *, dry_run: bool = False) -> list[str]:
    """Run (unless ``dry_run``) the grants of :func:`plan` in one transaction; returns them as text."""
    statements = plan(conn, role, profile)
    texts = [s.as_string(conn) for s in statements]
    if not dry_run:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
    return texts
