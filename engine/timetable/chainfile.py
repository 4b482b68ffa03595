"""pg_timetable-format YAML chain files (and plain SQL files): load, validate, import, export.

The YAML format (pg_timetable v6+, reference §3.15)::

    chains:
      - name: nightly-report            # required, unique
        schedule: "0 2 * * *"           # cron, @every …, @after …, @reboot; absent: every minute
        live: true                      # default false (as pg_timetable)
        max_instances: 1                # default NULL (the engine treats it as 16)
        timeout: 0                      # ms; 0 = --chain-timeout
        self_destruct: false
        exclusive: false
        client_name: node-a             # default NULL: any engine
        on_error: "SELECT …"            # SQL run in a new transaction when the chain fails
        time_zone: Europe/Berlin        # pgtt-tui addition (chain_option), optional
        missed_runs: run_once           # pgtt-tui addition: run_once | skip | run_all
        tasks:
          - name: step 1
            kind: SQL                   # SQL (default) | PROGRAM | BUILTIN
            command: "SELECT $1, $2"
            parameters:                 # a list of rows: every element is ONE execution
              - ["one", 2]              # (SQL/PROGRAM: a flat list ["one", 2] is one row too)
            run_as: reporter            # SET ROLE
            connect_string: "host=…"    # task.database_connection (remote database)
            ignore_error: false
            autonomous: false
            timeout: 0                  # ms; 0 = --task-timeout
            live: true                  # default true

Parameter shapes (see ``_parameter_rows``): a list of lists is one row per element; a
BUILTIN's list is one row per element (scalars and mappings alike); a flat list of values for
an SQL or PROGRAM task (pg_timetable's samples/yaml/Basic.yaml style) is one row. A chain
without ``schedule`` runs every minute, as pg_timetable's loader makes it (its docs say the
field is required; files without it load there, and here).

Import as pg_timetable: tasks get ``task_order`` 10, 20, 30, …; a chain name that exists
is an error unless ``replace`` (then ``timetable.delete_job`` first). Better than
pg_timetable: the whole import is ONE transaction (all chains or none), every problem is
reported at once naming the chain, the task index and the field, parameter rows are
checked against their task kind (an SQL row must be an array for ``$1..$n``; a PROGRAM row
an array of strings; a BUILTIN row the builtin's shape), and schedules are checked with the
same evaluator the scheduler uses. Unknown keys are errors (a typo never passes silently).

Export writes the same format, so ``export`` → ``import --replace`` round-trips (task order
is kept; the exact ``task_order`` numbers become 10, 20, …). Passwords in
``connect_string`` and SendMail's ``password`` are masked unless ``secrets=True``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.types.json import Jsonb

from engine.db import redact
from engine.errors import InputError
from engine.schedules import ScheduleError, parse_schedule, resolve_zone
from engine.timetable import builtins as bt
from engine.timetable.secrets import is_masked, mask_parameters, read_secrets

KINDS = ("SQL", "PROGRAM", "BUILTIN")
MISSED_POLICIES = ("run_once", "skip", "run_all")
CHAIN_KEYS = {"name", "schedule", "live", "max_instances", "timeout", "self_destruct", "exclusive", "client_name",
              "on_error", "tasks", "time_zone", "missed_runs"}
TASK_KEYS = {"name", "kind", "command", "parameters", "run_as", "connect_string", "ignore_error", "autonomous",
             "timeout", "live"}
#: a chain without ``schedule`` (or with an empty one) runs every minute: pg_timetable's YAML
#: loader fills this in before validating (its docs call the field required, but real files
#: without it load there, so they load here too)
DEFAULT_SCHEDULE = "* * * * *"
INT32_MAX = 2**31 - 1


@dataclass
class TaskSpec:
    command: str
    kind: str = "SQL"
    name: str | None = None
    parameters: list[Any] = field(default_factory=list)
    run_as: str | None = None
    connect_string: str | None = None
    ignore_error: bool = False
    autonomous: bool = False
    timeout: int = 0
    live: bool = True


@dataclass
class ChainSpec:
    name: str
    schedule: str | None
    tasks: list[TaskSpec] = field(default_factory=list)
    live: bool = False
    max_instances: int | None = None
    timeout: int = 0
    self_destruct: bool = False
    exclusive: bool = False
    client_name: str | None = None
    on_error: str | None = None
    time_zone: str | None = None
    missed_runs: str | None = None
    source: str = ""  # "file.yaml chains[2]" for messages


class ChainFileError(InputError):
    """One or more problems in a chain file; ``problems`` lists each (field, problem)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.problems = problems
        text = "; ".join(f"{f}: {p}" for f, p in problems[:20])
        if len(problems) > 20:
            text += f"; … and {len(problems) - 20} more"
        super().__init__(source, text)


# ---- parsing --------------------------------------------------------------------------------------

class _Collector:
    def __init__(self):
        self.problems: list[tuple[str, str]] = []

    def add(self, where: str, problem: str) -> None:
        self.problems.append((where, problem))


def _where(index: int, name: Any, rest: str = "") -> str:
    label = f"chains[{index}]" + (f" ({name})" if isinstance(name, str) and name else "")
    return label + (f".{rest}" if rest else "")


def _get(raw: dict, key: str, types: tuple[type, ...], what: str, where: str, errs: _Collector, default=None):
    value = raw.get(key, default)
    if value is None or key not in raw:
        return default
    if bool not in types and isinstance(value, bool):
        errs.add(where, f"must be {what}, not a boolean")
        return default
    if not isinstance(value, types):
        errs.add(where, f"must be {what}, not {type(value).__name__}")
        return default
    return value


def _task_from(raw: Any, ci: int, cname: Any, ti: int, errs: _Collector) -> TaskSpec | None:
    base = _where(ci, cname, f"tasks[{ti}]")
    if not isinstance(raw, dict):
        errs.add(base, "must be a mapping with at least kind and command")
        return None
    for key in sorted(set(raw) - TASK_KEYS):
        errs.add(f"{base}.{key}", f"unknown task field (known: {', '.join(sorted(TASK_KEYS))})")
    kind_raw = _get(raw, "kind", (str,), "SQL, PROGRAM or BUILTIN", f"{base}.kind", errs, "SQL")
    kind = (kind_raw or "SQL").upper()
    if kind not in KINDS:
        errs.add(f"{base}.kind", f"{kind_raw!r} is not SQL, PROGRAM or BUILTIN")
    command = _get(raw, "command", (str,), "text", f"{base}.command", errs, "")
    if not command or not command.strip():
        errs.add(f"{base}.command", "is required")
    params = _parameter_rows(kind, raw.get("parameters"), f"{base}.parameters", errs)
    timeout = _get(raw, "timeout", (int,), "an integer number of milliseconds", f"{base}.timeout", errs, 0)
    if timeout < 0 or timeout > INT32_MAX:
        errs.add(f"{base}.timeout", "must be 0 (the --task-timeout default) or a positive number of milliseconds")
    task = TaskSpec(
        command=command or "", kind=kind,
        name=_get(raw, "name", (str,), "text", f"{base}.name", errs),
        parameters=params,
        run_as=_get(raw, "run_as", (str,), "a role name", f"{base}.run_as", errs),
        connect_string=_get(raw, "connect_string", (str,), "a libpq connection string", f"{base}.connect_string",
                            errs),
        ignore_error=_get(raw, "ignore_error", (bool,), "true or false", f"{base}.ignore_error", errs, False),
        autonomous=_get(raw, "autonomous", (bool,), "true or false", f"{base}.autonomous", errs, False),
        timeout=timeout,
        live=_get(raw, "live", (bool,), "true or false", f"{base}.live", errs, True))
    _check_parameters(task, base, errs)
    return task


def _parameter_rows(kind: str, value: Any, where: str, errs: _Collector) -> list[Any]:
    """The ``parameters`` of a task in any shape pg_timetable's YAML files use -> parameter rows.

    * a list of lists (``- ["one", 2]`` per line): one row per inner list, one execution each;
    * BUILTIN: every element is one row (``Sleep: [5]``, ``Log: ["text", {"Status": …}]``,
      SendMail / Download / Copy*: one mapping per row), as pg_timetable stores them;
    * SQL / PROGRAM with a flat list of values (``parameters: ["TT_CHANNEL", "Ahoj"]``, the
      shape of pg_timetable's samples/yaml/Basic.yaml, the README's ``["yesterday"]`` and the
      docs' ``bash: ["-c", "echo hello"]``): the whole list is ONE row, i.e. ``$1..$n`` / argv
      of one execution. That is what those files mean and what pg_timetable's loader made of
      them while the samples were written (it joined the list into one JSON array); stored
      element by element (v7) each scalar row would fail at every run, because the SQL and
      PROGRAM executors only take an array per row;
    * ``null`` elements of a list of lists stay NULL rows (ignored at run time, as in pg_timetable).

    A list mixing argument lists and single values has no consistent reading and is an error,
    as is a ``parameters`` that is not a list at all (pg_timetable cannot load that either).
    """
    if value is None:
        return []
    if not isinstance(value, list):
        errs.add(where, "must be a list: a list of parameter rows (one execution each, e.g. [[1, 'a'], [2, 'b']]) "
                        "or, for SQL and PROGRAM tasks, one flat list of arguments")
        return []
    if kind not in ("SQL", "PROGRAM") or not value:
        return list(value)
    lists = [isinstance(v, list) for v in value]
    if all(v is None for v in value) or all(isinstance(v, list) or v is None for v in value):
        return list(value)
    if not any(lists):
        return [list(value)]  # one flat argument list: one execution
    first = next(i for i, v in enumerate(value) if v is not None and not isinstance(v, list))
    errs.add(f"{where}[{first}]", "mixes argument lists and single values: write one list per execution "
                                  "(e.g. [[1, 'a'], [2, 'b']]) or one flat list of arguments for a single execution")
    return []


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _check_parameters(task: TaskSpec, base: str, errs: _Collector) -> None:
    for pi, row in enumerate(task.parameters):
        where = f"{base}.parameters[{pi}]"
        try:
            json.dumps(row, allow_nan=False)
        except (TypeError, ValueError):
            errs.add(where, "must be plain JSON (strings, numbers, booleans, lists, mappings)")
            continue
        if row is None:
            continue  # a NULL row is ignored at run time, as in pg_timetable
        if task.kind == "SQL":
            if not isinstance(row, list):
                errs.add(where, f"an SQL task's parameter row must be a list of values for $1..$n "
                                f"(write [{json.dumps(row)}] for one argument)")
        elif task.kind == "PROGRAM":
            if not isinstance(row, list) or not all(isinstance(a, str) for a in row):
                errs.add(where, "a PROGRAM task's parameter row must be a list of strings (the arguments)")
        elif task.kind == "BUILTIN" and task.command in bt.BUILTINS:
            try:
                bt.validate_params(task.command, row)
            except InputError as exc:
                errs.add(f"{where}{exc.field[len('params'):] if exc.field.startswith('params') else ''}",
                         exc.problem)
    if task.kind == "BUILTIN" and task.command and task.command not in bt.BUILTINS:
        errs.add(f"{base}.command", f"unknown builtin {task.command!r} (choose from {', '.join(bt.BUILTINS)})")


def _chain_from(raw: Any, ci: int, errs: _Collector, source: str) -> ChainSpec | None:
    if not isinstance(raw, dict):
        errs.add(f"chains[{ci}]", "must be a mapping with name, schedule and tasks")
        return None
    name = raw.get("name")
    base = _where(ci, name)
    for key in sorted(set(raw) - CHAIN_KEYS):
        errs.add(f"{base}.{key}", f"unknown chain field (known: {', '.join(sorted(CHAIN_KEYS))})")
    if not isinstance(name, str) or not name.strip():
        errs.add(f"{base}.name", "is required (a non-empty text)")
        name = ""
    schedule = raw.get("schedule")
    if schedule is None or (isinstance(schedule, str) and not schedule.strip()):
        schedule = DEFAULT_SCHEDULE  # as pg_timetable's loader (SetDefaults): every minute
    elif not isinstance(schedule, str):
        errs.add(f"{base}.schedule", f"must be text, not {type(schedule).__name__} (quote it)")
        schedule = None
    else:
        try:
            parse_schedule(schedule)
        except ScheduleError as exc:
            errs.add(f"{base}.schedule", f"{schedule!r}: {exc}")
    max_instances = _get(raw, "max_instances", (int,), "an integer", f"{base}.max_instances", errs)
    if max_instances is not None and not 1 <= max_instances <= INT32_MAX:
        errs.add(f"{base}.max_instances", "must be 1 or more (or absent: the engine default)")
    timeout = _get(raw, "timeout", (int,), "an integer number of milliseconds", f"{base}.timeout", errs, 0)
    if timeout < 0 or timeout > INT32_MAX:
        errs.add(f"{base}.timeout", "must be 0 (the --chain-timeout default) or a positive number of milliseconds")
    tz = _get(raw, "time_zone", (str,), "an IANA time zone name", f"{base}.time_zone", errs)
    if tz is not None:
        try:
            resolve_zone(tz)
        except ScheduleError as exc:
            errs.add(f"{base}.time_zone", exc.problem)
    missed = _get(raw, "missed_runs", (str,), "text", f"{base}.missed_runs", errs)
    if missed is not None and missed not in MISSED_POLICIES:
        errs.add(f"{base}.missed_runs", f"{missed!r} is not one of {', '.join(MISSED_POLICIES)}")
    raw_tasks = raw.get("tasks")
    tasks: list[TaskSpec] = []
    if not isinstance(raw_tasks, list) or not raw_tasks:
        errs.add(f"{base}.tasks", "a chain needs at least one task")
    else:
        for ti, traw in enumerate(raw_tasks):
            task = _task_from(traw, ci, name, ti, errs)
            if task is not None:
                tasks.append(task)
    return ChainSpec(
        name=name, schedule=schedule, tasks=tasks,
        live=_get(raw, "live", (bool,), "true or false", f"{base}.live", errs, False),
        max_instances=max_instances, timeout=timeout,
        self_destruct=_get(raw, "self_destruct", (bool,), "true or false", f"{base}.self_destruct", errs, False),
        exclusive=_get(raw, "exclusive", (bool,), "true or false", f"{base}.exclusive", errs, False),
        client_name=_get(raw, "client_name", (str,), "text", f"{base}.client_name", errs) or None,
        on_error=_get(raw, "on_error", (str,), "SQL text", f"{base}.on_error", errs) or None,
        time_zone=tz, missed_runs=missed, source=f"{source} chains[{ci}]")


def parse_chains(text: str, source: str = "<yaml>") -> list[ChainSpec]:
    """Parse YAML text; raise ChainFileError listing every problem (nothing is imported)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ChainFileError(source, [(where, f"not valid YAML: {problem}")]) from None
    errs = _Collector()
    if not isinstance(doc, dict) or "chains" not in doc:
        raise ChainFileError(source, [("chains", "the file must have a top-level 'chains:' list")])
    for key in sorted(set(doc) - {"chains"}):
        errs.add(key, "unknown top-level key (only 'chains' is allowed)")
    raw_chains = doc.get("chains")
    if not isinstance(raw_chains, list) or not raw_chains:
        raise ChainFileError(source, [("chains", "must be a non-empty list of chains")])
    specs = []
    for ci, raw in enumerate(raw_chains):
        spec = _chain_from(raw, ci, errs, source)
        if spec is not None:
            specs.append(spec)
    seen: dict[str, int] = {}
    for ci, spec in enumerate(specs):
        if spec.name and spec.name in seen:
            errs.add(_where(ci, spec.name, "name"), f"duplicate chain name (also chains[{seen[spec.name]}])")
        seen.setdefault(spec.name, ci)
    if errs.problems:
        raise ChainFileError(source, errs.problems)
    return specs


def validate(specs: list[ChainSpec]) -> list[tuple[str, str]]:
    """Re-check specs built in code (the file parser already does this); returns the problems."""
    errs = _Collector()
    for ci, spec in enumerate(specs):
        _chain_from(export_dict(spec, secrets=True), ci, errs, spec.source or "<specs>")
        for ti, task in enumerate(spec.tasks):  # the rows as they will be stored, not as re-read
            if task.kind in ("SQL", "PROGRAM"):
                _check_parameters(task, _where(ci, spec.name, f"tasks[{ti}]"), errs)
    return list(dict.fromkeys(errs.problems))


def load_chain_file(path: str | Path) -> list[ChainSpec]:
    """Parse and validate a ``.yaml`` / ``.yml`` chain file."""
    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise InputError(str(path), "a chain file must end in .yaml or .yml (SQL scripts end in .sql)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(str(path), "is not UTF-8 text") from None
    return parse_chains(text, str(path))


# ---- import ---------------------------------------------------------------------------------------

INSERT_CHAIN = """
INSERT INTO timetable.chain (chain_name, run_at, max_instances, timeout, live, self_destruct, exclusive_execution,
                             client_name, on_error)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING chain_id
"""
INSERT_TASK = """
INSERT INTO timetable.task (chain_id, task_order, task_name, kind, command, run_as, database_connection,
                            ignore_error, autonomous, timeout, live)
VALUES (%s, %s, %s, %s::timetable.command_kind, %s, %s, %s, %s, %s, %s, %s) RETURNING task_id
"""
INSERT_PARAM = "INSERT INTO timetable.parameter (task_id, order_id, value) VALUES (%s, %s, %s)"
INSERT_OPTION = """
INSERT INTO timetable.chain_option (chain_id, time_zone, missed_runs) VALUES (%s, %s, coalesce(%s, 'run_once'))
"""


def import_chains(conn: psycopg.Connection, specs: list[ChainSpec], replace: bool = False,
                  on_progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """Create the chains in ONE transaction; returns ``[{"name", "chain_id", "replaced"}]``.
    ``on_progress(done, total, name)`` is called before each chain.

    An existing name is an error unless ``replace`` (then ``timetable.delete_job``); on any
    error nothing is changed.
    """
    problems = validate(specs)
    if problems:
        raise ChainFileError("chains", problems)
    out = []
    with conn.transaction():
        for ci, spec in enumerate(specs):
            if on_progress is not None:
                on_progress(ci, len(specs), spec.name)
            kept = _kept_secrets(conn, ci, spec)
            replaced = False
            if replace:
                replaced = bool(conn.execute("SELECT timetable.delete_job(%s)", (spec.name,)).fetchone()[0])
            elif conn.execute("SELECT 1 FROM timetable.chain WHERE chain_name = %s", (spec.name,)).fetchone():
                raise InputError(_where(ci, spec.name, "name"), "a chain with this name exists already "
                                                                "(use --replace to overwrite it)")
            try:
                chain_id = conn.execute(INSERT_CHAIN, (spec.name, spec.schedule, spec.max_instances, spec.timeout,
                                                       spec.live, spec.self_destruct, spec.exclusive,
                                                       spec.client_name, spec.on_error)).fetchone()[0]
                if spec.time_zone or spec.missed_runs:
                    conn.execute(INSERT_OPTION, (chain_id, spec.time_zone, spec.missed_runs))
                for ti, task in enumerate(spec.tasks):
                    task_id = conn.execute(INSERT_TASK, (chain_id, (ti + 1) * 10, task.name, task.kind, task.command,
                                                         task.run_as, kept.get(ti, task.connect_string),
                                                         task.ignore_error,
                                                         task.autonomous, task.timeout, task.live)).fetchone()[0]
                    for pi, row in enumerate(task.parameters, start=1):
                        conn.execute(INSERT_PARAM, (task_id, pi, None if row is None else Jsonb(row)))
            except (psycopg.errors.CheckViolation, psycopg.errors.InvalidParameterValue) as exc:
                # the database's own checks (sql/timetable/0007_input_checks.sql: the @every /
                # @after floor, names, builtins, parameter shapes), "field: problem"
                raise InputError(_where(ci, spec.name), f"rejected by the database: "
                                                        f"{exc.diag.message_primary}") from None
            out.append({"name": spec.name, "chain_id": chain_id, "replaced": replaced})
    return out


KEEP_TASKS = """
SELECT t.task_id, t.database_connection FROM timetable.task t JOIN timetable.chain c USING (chain_id)
WHERE c.chain_name = %s ORDER BY t.task_order, t.task_id
"""


def _kept_secrets(conn: psycopg.Connection, ci: int, spec: ChainSpec) -> dict[int, str]:
    """A file exported without --show-secrets carries ``password=***``: each such task takes the
    whole connection string of the same task (same place, same masked string) of the chain
    of the same name, or the import is refused naming the chain and the task."""
    masked = [ti for ti, task in enumerate(spec.tasks) if is_masked(task.connect_string)]
    if not masked:
        return {}
    existing = conn.execute(KEEP_TASKS, (spec.name,)).fetchall()
    kept: dict[int, int] = {}
    for ti in masked:
        task = spec.tasks[ti]
        if ti < len(existing) and existing[ti][1] == task.connect_string:
            kept[ti] = existing[ti][0]
            continue
        label = f"task {ti + 1}" + (f" ({task.name})" if task.name else "")
        raise InputError(_where(ci, spec.name, f"tasks[{ti}].connect_string"),
                         f"the password is masked (***) and chain {spec.name!r} has no {label} with this connection "
                         f"to keep it from; export with --show-secrets or write the password into the file")
    secrets = read_secrets(conn, list(kept.values()))
    return {ti: secrets[task_id] for ti, task_id in kept.items() if task_id in secrets}


def _read_sql(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(str(path), "is not UTF-8 text") from None


def run_sql_file(conn: psycopg.Connection, path: str | Path) -> None:
    """Run a plain SQL script (``-f file.sql``) as pg_timetable does: the whole text at once."""
    conn.execute(_read_sql(Path(path)).encode("utf-8"), prepare=False)


# --validate for SQL scripts: the script runs through PL/pgSQL's EXECUTE inside a transaction
# that is always rolled back. EXECUTE hands the whole text to the server's parser and runs
# the statements one after the other (so a script may use what it created a line earlier),
# and it cannot end the transaction: a COMMIT in the script is refused instead of escaping.
VALIDATE_FN = ("CREATE OR REPLACE FUNCTION pg_temp.pgtt_validate_script(script text) RETURNS void LANGUAGE plpgsql "
               "AS $pgtt$BEGIN EXECUTE script; END$pgtt$")
VALIDATE_CALL = "SELECT pg_temp.pgtt_validate_script(%s)"


def _line_col(text: str, pos: int) -> str:
    before = text[: max(pos - 1, 0)]
    return f"line {before.count(chr(10)) + 1}, column {len(before) - before.rfind(chr(10))}"


def _not_checkable(exc: psycopg.Error) -> bool:
    """Statements that cannot run inside a transaction or a function (COMMIT, VACUUM,
    CREATE DATABASE, COPY from the client…): valid scripts we cannot dry-run."""
    state = exc.sqlstate or ""
    msg = (exc.diag.message_primary or "").lower()
    return state in ("25001", "2D000") or (state == "0A000" and ("transaction" in msg or "copy" in msg))


def check_sql_script(conn: psycopg.Connection, path: str | Path, *, keep: bool = False) -> dict[str, Any]:
    """``--validate`` of an SQL script: parse, plan and run it in a transaction that is rolled
    back, so syntax errors, unknown tables / functions and failing calls (e.g. a bad cron
    text given to ``timetable.add_job``) are found and nothing stays changed.

    What is NOT undone (PostgreSQL cannot): sequence increments, and effects outside the
    database of functions the script calls (``COPY … TO PROGRAM``, dblink, ``lo_export``…);
    the statements run for real, so a long query takes as long as it would. A script with
    statements that cannot run in a transaction (COMMIT, VACUUM, CREATE DATABASE, …) is
    reported as not fully checked, not as invalid. Raises ChainFileError with the line and
    column of a syntax error, or the failing statement. ``keep``: leave the effects in the
    caller's transaction (which the caller rolls back: ``load_files(validate_only=True)``).
    """
    path = Path(path)
    text = _read_sql(path)
    try:
        with conn.transaction(force_rollback=not keep):
            conn.execute(VALIDATE_FN)
            conn.execute(VALIDATE_CALL, (text,))
    except psycopg.Error as exc:
        if _not_checkable(exc):
            return {"file": str(path), "kind": "sql",
                    "action": f"not fully checked: {exc.diag.message_primary} (--validate runs the script in a "
                              "transaction that is rolled back, where this statement cannot run)"}
        where = "script"
        if exc.diag.internal_position and exc.diag.internal_query == text:
            where = _line_col(text, int(exc.diag.internal_position))
        elif exc.diag.context:
            first = exc.diag.context.splitlines()[0]
            if first.startswith("SQL statement"):
                where = first if len(first) <= 200 else first[:197] + '…"'
        raise ChainFileError(str(path), [(where, exc.diag.message_primary or str(exc))]) from None
    return {"file": str(path), "kind": "sql", "action": "checked (ran in a transaction, rolled back)"}


def load_files(conn: psycopg.Connection, paths: list[str], *, validate_only: bool = False,
               replace: bool = False) -> list[dict[str, Any]]:
    """``pgtt-tui worker -f FILE…``: SQL scripts run and YAML files import, in the order given.

    With ``validate_only`` nothing changes: every file is tried in order inside ONE
    transaction that is rolled back at the end (so a later file may use what an earlier
    one creates): SQL scripts as ``check_sql_script`` describes, YAML files parsed and
    imported (also finding name clashes, unless ``replace``). Every problem of every file is
    reported at once (ChainFileError, "FILE: where"). Returns one entry per file.
    """
    for p in paths:
        if Path(p).suffix.lower() not in (".yaml", ".yml", ".sql"):
            raise InputError(str(p), "--file takes .sql scripts and .yaml/.yml chain files")
    if validate_only:
        return _validate_files(conn, [Path(p) for p in paths], replace)
    report = []
    for p in paths:
        path = Path(p)
        if path.suffix.lower() == ".sql":
            run_sql_file(conn, path)
            report.append({"file": str(path), "kind": "sql", "action": "ran"})
        else:
            done = import_chains(conn, load_chain_file(path), replace=replace)
            report.append({"file": str(path), "kind": "yaml", "chains": [d["name"] for d in done],
                           "action": "imported"})
    return report


def _validate_files(conn: psycopg.Connection, paths: list[Path], replace: bool) -> list[dict[str, Any]]:
    report: list[dict[str, Any]] = []
    problems: list[tuple[str, str]] = []
    with conn.transaction(force_rollback=True):
        for path in paths:
            try:
                with conn.transaction():  # a savepoint: a failing file does not spoil the next
                    if path.suffix.lower() == ".sql":
                        report.append(check_sql_script(conn, path, keep=True))
                    else:
                        specs = load_chain_file(path)
                        import_chains(conn, specs, replace=replace)
                        report.append({"file": str(path), "kind": "yaml", "chains": [s.name for s in specs],
                                       "action": "validated"})
            except ChainFileError as exc:
                problems += [(f"{path}: {w}" if w != str(path) else str(path), p) for w, p in exc.problems]
            except InputError as exc:
                problems.append((f"{path}: {exc.field}" if exc.field != str(path) else str(path), exc.problem))
    if problems:
        raise ChainFileError("--file", problems)
    return report


# ---- export ---------------------------------------------------------------------------------------

EXPORT_CHAINS = """
SELECT c.chain_id, c.chain_name, c.run_at, c.live, c.max_instances, c.timeout, c.self_destruct,
       c.exclusive_execution, c.client_name, c.on_error, o.time_zone, o.missed_runs
FROM timetable.chain c LEFT JOIN timetable.chain_option o ON o.chain_id = c.chain_id
WHERE %(names)s::text[] IS NULL OR c.chain_name = ANY (%(names)s::text[])
ORDER BY c.chain_name
"""
EXPORT_TASKS = """
SELECT t.chain_id, t.task_name, t.kind::text, t.command, t.run_as, t.database_connection, t.ignore_error,
       t.task_id,
       t.autonomous, coalesce(t.timeout, 0), t.live,
       coalesce((SELECT jsonb_agg(p.value ORDER BY p.order_id) FROM timetable.parameter p
                 WHERE p.task_id = t.task_id), '[]'::jsonb)
FROM timetable.task t WHERE t.chain_id = ANY (%s)
ORDER BY t.chain_id, t.task_order, t.task_id
"""


def _mask_params(task: TaskSpec) -> list[Any]:
    return mask_parameters(task.kind, task.command, task.parameters)


def export_dict(spec: ChainSpec, secrets: bool = False) -> dict[str, Any]:
    """One chain in the file format (defaults left out)."""
    out: dict[str, Any] = {"name": spec.name, "schedule": spec.schedule}
    if spec.live:
        out["live"] = True
    if spec.max_instances is not None:
        out["max_instances"] = spec.max_instances
    if spec.timeout:
        out["timeout"] = spec.timeout
    if spec.self_destruct:
        out["self_destruct"] = True
    if spec.exclusive:
        out["exclusive"] = True
    for key in ("client_name", "on_error", "time_zone"):
        if getattr(spec, key):
            out[key] = getattr(spec, key)
    if spec.missed_runs and spec.missed_runs != "run_once":
        out["missed_runs"] = spec.missed_runs
    tasks = []
    for task in spec.tasks:
        t: dict[str, Any] = {}
        if task.name:
            t["name"] = task.name
        t["kind"] = task.kind
        t["command"] = task.command
        params = task.parameters if secrets else _mask_params(task)
        if params:
            t["parameters"] = params
        if task.run_as:
            t["run_as"] = task.run_as
        if task.connect_string:
            t["connect_string"] = task.connect_string if secrets else redact(task.connect_string)
        for key in ("ignore_error", "autonomous"):
            if getattr(task, key):
                t[key] = True
        if task.timeout:
            t["timeout"] = task.timeout
        if not task.live:
            t["live"] = False
        tasks.append(t)
    out["tasks"] = tasks
    return out


def read_chains(conn: psycopg.Connection, names: list[str] | None = None, *, secrets: bool = False) -> list[ChainSpec]:
    """The chains in the database (all, or those named) as specs; unknown names are an error.
    Connection strings are as stored (passwords masked) unless ``secrets``."""
    rows = conn.execute(EXPORT_CHAINS, {"names": list(names) if names else None}).fetchall()
    if names:
        missing = sorted(set(names) - {r[1] for r in rows})
        if missing:
            from engine.errors import NotFoundError  # noqa: PLC0415

            raise NotFoundError(f"no chain named {', '.join(repr(m) for m in missing)}")
    specs: dict[int, ChainSpec] = {}
    for (chain_id, name, run_at, live, max_inst, timeout, self_destruct, exclusive, client, on_error, tz,
         missed) in rows:
        specs[chain_id] = ChainSpec(name=name, schedule=run_at, live=bool(live), max_instances=max_inst,
                                    timeout=timeout or 0, self_destruct=bool(self_destruct),
                                    exclusive=bool(exclusive), client_name=client, on_error=on_error,
                                    time_zone=tz, missed_runs=missed, source=f"chain {name}")
    if specs:
        rows = conn.execute(EXPORT_TASKS, (list(specs),)).fetchall()
        revealed = read_secrets(conn, [r[7] for r in rows]) if secrets else {}
        for (chain_id, tname, kind, command, run_as, dbconn, ignore_error, task_id, autonomous, timeout, live,
             params) in rows:
            dbconn = revealed.get(task_id, dbconn)
            specs[chain_id].tasks.append(TaskSpec(
                command=command, kind=kind, name=tname, parameters=list(params), run_as=run_as,
                connect_string=dbconn, ignore_error=bool(ignore_error), autonomous=bool(autonomous),
                timeout=timeout or 0, live=bool(live)))
    return list(specs.values())


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def dump_chains(specs: list[ChainSpec], secrets: bool = False) -> str:
    doc = {"chains": [export_dict(s, secrets) for s in specs]}
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


def export_chains(conn: psycopg.Connection, names: list[str] | None = None, secrets: bool = False) -> str:
    """YAML for the chains (all, or those named) that ``import_chains`` reads back."""
    return dump_chains(read_chains(conn, names, secrets=secrets), secrets)

