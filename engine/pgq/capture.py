"""Change capture: put PgQ's table triggers (pgq.jsontriga / logutriga / sqltriga) on a table
so its INSERT, UPDATE, DELETE (and TRUNCATE) become events of a queue; remove them; list which
tables feed which queue (read from pg_trigger, so triggers made by hand or by londiste show too).

Works with our pgq module (sql/pgq/0004_triggers.sql) and with the real extension: both have
the same three functions and arguments. Used by the CLI (``pgtt-tui queue capture``) and the
console's queue view.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from engine.errors import InputError, NotFoundError

FORMATS: dict[str, str] = {"json": "jsontriga", "url": "logutriga", "sql": "sqltriga"}
FUNCTION_FORMATS = {fn: fmt for fmt, fn in FORMATS.items()}
# options as PgQ's triggers accept them (reference/pgq_triggers.md §3)
_FLAG_OPTIONS = ("SKIP", "backup", "deny")
_VALUE_OPTIONS = ("ignore=", "pkey=", "when=", "ev_type=", "ev_data=", "ev_extra1=", "ev_extra2=", "ev_extra3=",
                  "ev_extra4=")
_NOT_FOR_TRUNCATE = ("ignore=", "pkey=", "backup", "when=", "ev_type=", "ev_data=", "ev_extra1=", "ev_extra2=",
                     "ev_extra3=", "ev_extra4=")
MAX_IDENT = 63

Q_TABLE = """
SELECT c.oid, n.nspname, c.relname, c.relkind
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = to_regclass(%s)
"""
Q_QUEUE_EXISTS = "SELECT 1 FROM pgq.queue WHERE queue_name = %s"
Q_HAS_FUNCTIONS = """
SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'pgq' AND p.proname IN ('jsontriga', 'logutriga', 'sqltriga') AND p.pronargs = 0
"""
Q_TRIGGERS = """
SELECT t.tgname, n.nspname, c.relname, p.proname, t.tgtype, t.tgenabled, t.tgnargs, t.tgargs
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
 WHERE pn.nspname = 'pgq' AND p.proname IN ('jsontriga', 'logutriga', 'sqltriga') AND NOT t.tgisinternal
   AND (%(relid)s::oid IS NULL OR t.tgrelid = %(relid)s::oid)
 ORDER BY n.nspname, c.relname, t.tgname
"""

# pg_trigger.tgtype bits
_ROW, _BEFORE, _INSERT, _DELETE, _UPDATE, _TRUNCATE = 1, 2, 4, 8, 16, 32


@dataclass
class Capture:
    """One PgQ capture trigger on a table."""

    table: str            # schema.table as ev_extra1 shows it (unquoted)
    trigger: str
    queue: str
    format: str           # json | url | sql
    options: list[str] = field(default_factory=list)
    timing: str = "AFTER"  # AFTER | BEFORE
    events: list[str] = field(default_factory=list)  # INSERT, UPDATE, DELETE, TRUNCATE
    enabled: str = "origin"  # origin | always | replica | disabled

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_options(options: list[str] | tuple[str, ...]) -> list[str]:
    """Validate trigger options the way PgQ's trigger will read them (so a typo fails now,
    not at the first write)."""
    for opt in options:
        if opt in _FLAG_OPTIONS:
            continue
        if any(opt.startswith(prefix) for prefix in _VALUE_OPTIONS):
            name, _, value = opt.partition("=")
            if name == "ignore" and not value.strip():
                raise InputError("--option", f"{opt!r}: give the column names after '='")
            if name not in ("ignore", "pkey") and not value.strip():
                raise InputError("--option", f"{opt!r}: give an SQL expression after '='")
            continue
        raise InputError("--option", f"unknown trigger option {opt!r} (use SKIP, backup, deny, ignore=cols, "
                                     "pkey=cols, when=expr, ev_type=/ev_data=/ev_extra1..4=expr)")
    return list(options)


def default_trigger_name(queue: str, fmt: str) -> str:
    """``pgq_<format>_<queue>``; long or unusual queue names get a short hash instead."""
    base = f"pgq_{fmt}_{queue}"
    if len(base) <= MAX_IDENT - len("_truncate") and re.fullmatch(r"[A-Za-z0-9_]+", queue):
        return base
    digest = hashlib.sha1(queue.encode()).hexdigest()[:10]
    return f"pgq_{fmt}_{re.sub(r'[^A-Za-z0-9_]', '_', queue)[:30]}_{digest}"


def _table(conn: psycopg.Connection, table: str) -> tuple[int, str, str]:
    if not table or not table.strip():
        raise InputError("TABLE", "must not be empty")
    try:
        row = conn.execute(Q_TABLE, (table,)).fetchone()
    except psycopg.errors.InvalidName as exc:
        raise InputError("TABLE", f"{table!r} is not a valid table name ({exc.diag.message_primary})") from exc
    if row is None:
        raise NotFoundError(f'table "{table}" does not exist')
    oid, nsp, rel, kind = row
    if kind not in ("r", "p"):
        raise InputError("TABLE", f'"{nsp}.{rel}" is not a table')
    return oid, nsp, rel


def _require_triggers(conn: psycopg.Connection) -> None:
    if conn.execute(Q_HAS_FUNCTIONS).fetchone()[0] < 3:
        raise NotFoundError("the pgq trigger functions are not installed here: run `pgtt-tui db upgrade` "
                            "(or `db init --modules pgq`)")


def add_capture(conn: psycopg.Connection, table: str, queue: str, fmt: str = "json",
                options: list[str] | tuple[str, ...] = (), *, before: bool = False, truncate: bool = True,
                name: str | None = None, replace: bool = False) -> list[Capture]:
    """Capture a table's changes into ``queue``: a row trigger (INSERT/UPDATE/DELETE) and, unless
    ``truncate`` is false, a statement trigger for TRUNCATE. One transaction; returns what exists
    afterwards. ``before`` makes it a BEFORE trigger (needed for the SKIP option)."""
    if fmt not in FORMATS:
        raise InputError("--format", f"must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if not queue or not queue.strip():
        raise InputError("--queue", "must not be empty")
    opts = check_options(options)
    if "SKIP" in opts and not before:
        raise InputError("--option", "SKIP needs a BEFORE trigger (--before): PgQ refuses SKIP in an AFTER trigger")
    name = name or default_trigger_name(queue, fmt)
    if len(name) > MAX_IDENT - len("_truncate"):
        raise InputError("--name", f"is longer than {MAX_IDENT - len('_truncate')} characters")
    with conn.transaction():
        _require_triggers(conn)
        oid, nsp, rel = _table(conn, table)
        if conn.execute(Q_QUEUE_EXISTS, (queue,)).fetchone() is None:
            raise NotFoundError(f'queue "{queue}" does not exist (create it with `pgtt-tui queue create {queue}`)')
        existing = {c.trigger for c in _captures(conn, oid)}
        tables = sql.SQL("{}.{}").format(sql.Identifier(nsp), sql.Identifier(rel))
        names = [name] + ([name + "_truncate"] if truncate else [])
        for trg in names:
            if trg in existing:
                if not replace:
                    raise InputError("--name", f'table "{nsp}.{rel}" already has the trigger "{trg}" '
                                               "(use --replace, or --remove first)")
                conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(trg), tables))
        func = sql.SQL("pgq.{}").format(sql.Identifier(FORMATS[fmt]))
        args = sql.SQL(", ").join(sql.Literal(a) for a in [queue, *opts])
        conn.execute(sql.SQL("CREATE TRIGGER {} {} INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW "
                             "EXECUTE FUNCTION {}({})").format(
            sql.Identifier(name), sql.SQL("BEFORE" if before else "AFTER"), tables, func, args))
        if truncate:
            topts = [o for o in opts if not o.startswith(_NOT_FOR_TRUNCATE)]
            targs = sql.SQL(", ").join(sql.Literal(a) for a in [queue, *topts])
            conn.execute(sql.SQL("CREATE TRIGGER {} {} TRUNCATE ON {} FOR EACH STATEMENT "
                                 "EXECUTE FUNCTION {}({})").format(
                sql.Identifier(name + "_truncate"), sql.SQL("BEFORE" if before else "AFTER"), tables, func, targs))
        return [c for c in _captures(conn, oid) if c.trigger in names]


def remove_capture(conn: psycopg.Connection, table: str, queue: str | None = None,
                   name: str | None = None) -> list[str]:
    """Drop the capture triggers of ``table`` (all of them, or those feeding ``queue``, or the
    one named ``name`` and its ``_truncate`` partner). Returns the dropped trigger names."""
    with conn.transaction():
        oid, nsp, rel = _table(conn, table)
        found = [c for c in _captures(conn, oid)
                 if (queue is None or c.queue == queue) and (name is None or c.trigger in (name, name + "_truncate"))]
        if not found:
            what = f' feeding queue "{queue}"' if queue else ""
            what += f' named "{name}"' if name else ""
            raise NotFoundError(f'table "{nsp}.{rel}" has no pgq capture trigger{what}')
        for c in found:
            conn.execute(sql.SQL("DROP TRIGGER {} ON {}.{}").format(
                sql.Identifier(c.trigger), sql.Identifier(nsp), sql.Identifier(rel)))
    return [c.trigger for c in found]


def _decode(row: tuple) -> Capture:
    tgname, nsp, rel, proname, tgtype, tgenabled, nargs, tgargs = row
    raw = bytes(tgargs or b"")
    args = [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:nargs]]
    events = [ev for bit, ev in ((_INSERT, "INSERT"), (_UPDATE, "UPDATE"), (_DELETE, "DELETE"),
                                 (_TRUNCATE, "TRUNCATE")) if tgtype & bit]
    enabled = {"O": "origin", "A": "always", "R": "replica", "D": "disabled"}.get(tgenabled, tgenabled)
    return Capture(table=f"{nsp}.{rel}", trigger=tgname, queue=args[0] if args else "",
                   format=FUNCTION_FORMATS[proname], options=args[1:],
                   timing="BEFORE" if tgtype & _BEFORE else "AFTER", events=events, enabled=enabled)


def _captures(conn: psycopg.Connection, relid: int | None) -> list[Capture]:
    return [_decode(r) for r in conn.execute(Q_TRIGGERS, {"relid": relid}).fetchall()]


def list_captures(conn: psycopg.Connection, queue: str | None = None, table: str | None = None) -> list[Capture]:
    """Every PgQ capture trigger in the database (optionally of one queue / one table)."""
    relid = _table(conn, table)[0] if table else None
    return [c for c in _captures(conn, relid) if queue is None or c.queue == queue]


def tables_by_queue(conn: psycopg.Connection) -> dict[str, list[str]]:
    """queue name → the tables whose triggers feed it (for the queue view)."""
    out: dict[str, list[str]] = {}
    for c in _captures(conn, None):
        if c.enabled == "disabled":
            continue
        tables = out.setdefault(c.queue, [])
        if c.table not in tables:
            tables.append(c.table)
    return out
