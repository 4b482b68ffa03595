"""The one set of input checks for timetable chains, tasks and parameter rows.

``engine.timetable.api`` (so the CLI) and the console's chain and task editors (as you
type) call these; sql/timetable/0007_input_checks.sql makes the same checks, with the
same messages, for SQL written straight into the pg_timetable tables.  Each raises
``InputError(field, problem)``; nothing here touches the database except
``min_interval`` and ``check_run_as``, which read it.

* ``@every`` / ``@after`` below the floor (:data:`DEFAULT_MIN_INTERVAL`, 1 second; the
  setting ``pgtt.timetable_min_interval`` changes it, 0 removes it);
* ``max_instances`` < 1, negative timeouts, numbers beyond a PostgreSQL integer;
* empty chain names and commands, names with control characters (:data:`CONTROL_CHARS`);
* a BUILTIN command that is not one of the ten builtins, parameter rows of the wrong shape
  for the task's kind;
* ``run_as`` naming a role that does not exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import psycopg

from engine.errors import InputError
from engine.schedules import ScheduleError, parse_schedule
from engine.timetable import builtins as bt

KINDS = ("SQL", "PROGRAM", "BUILTIN")
BUILTIN_NAMES = tuple(bt.BUILTINS)  # the SQL side: timetable.builtin_names()
INT32_MAX = 2**31 - 1

MIN_INTERVAL_SETTING = "pgtt.timetable_min_interval"
DEFAULT_MIN_INTERVAL = timedelta(seconds=1)

#: refused in chain, task and client names: C0 controls, DEL, C1 controls, the line and
#: paragraph separators and the bidirectional overrides (text that rewrites a terminal line)
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

_OBJECT_BUILTINS = ("SendMail", "Download", "CopyFromFile", "CopyToFile", "CopyToProgram", "CopyFromProgram")


def name_problem(value: str | None, *, empty_ok: bool = False) -> str | None:
    """What is wrong with a name (None: nothing); timetable.name_problem in SQL."""
    if value is None:
        return None
    bad = CONTROL_CHARS.search(value)
    if bad:
        return f"must not contain control characters (U+{ord(bad.group()):04X} at position {bad.start() + 1})"
    if not empty_ok and not value.strip(" "):
        return "must not be empty"
    return None


def check_name(field: str, value: str | None, *, empty_ok: bool = False, empty_hint: str = "") -> None:
    problem = name_problem(value, empty_ok=empty_ok)
    if problem == "must not be empty" and empty_hint:
        problem += f" ({empty_hint})"
    if problem:
        raise InputError(field, problem)


def interval_words(delta: timedelta) -> str:
    """An interval as the messages show it (timetable._interval_words in SQL)."""
    us = delta // timedelta(microseconds=1)
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000} second{'' if us == 1_000_000 else 's'}"
    if us >= 1_000_000:
        return f"{us / 1_000_000:g} seconds"
    if us % 1000 == 0:
        return f"{us // 1000} ms"
    return f"{us} microsecond{'' if us == 1 else 's'}"


def check_run_at(run_at: str | None, min_interval: timedelta = DEFAULT_MIN_INTERVAL, field: str = "run_at") -> None:
    """A schedule the evaluator accepts, and an @every / @after interval not below the floor."""
    if run_at is None:
        return
    try:
        schedule = parse_schedule(run_at)
    except ScheduleError as exc:
        raise InputError(field, str(exc)) from None
    interval = getattr(schedule, "interval", None)
    if interval is not None and interval < min_interval:
        raise InputError(field, f"the interval of {run_at.strip()} is below the minimum of "
                                f"{interval_words(min_interval)} (the setting {MIN_INTERVAL_SETTING} lowers it)")


def _whole(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError
            value = int(value)
        except (TypeError, ValueError):
            raise InputError(field, f"{value!r} is not a whole number") from None
    if value > INT32_MAX:
        raise InputError(field, f"{value}: must be at most {INT32_MAX}")
    return value


def check_max_instances(value: Any, field: str = "max_instances") -> None:
    if value is None:
        return
    if _whole(field, value) < 1:
        raise InputError(field, f"{value}: must be 1 or more (NULL: the engine default, 16)")


def check_timeout(value: Any, field: str = "timeout", default_flag: str = "--chain-timeout") -> None:
    if value is None:
        return
    if _whole(field, value) < 0:
        raise InputError(field, f"{value}: must be 0 (the {default_flag} default) or a positive number of milliseconds")


def check_kind(kind: Any) -> str:
    text = str(kind or "").upper()
    if text not in KINDS:
        raise InputError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    return text


def check_command(kind: str, command: str | None, field: str = "command") -> None:
    if command is None or not command.strip():
        raise InputError(field, "must not be empty")
    if kind == "BUILTIN" and command not in BUILTIN_NAMES:
        raise InputError(field, f"unknown builtin {command!r} (choose from {', '.join(BUILTIN_NAMES)})")


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def parameter_problem(kind: str, command: str | None, row: Any) -> str | None:
    """The shape check of one parameter row (timetable.parameter_problem in SQL)."""
    if row is None:
        return None
    if kind == "SQL" and not isinstance(row, list):
        hint = f" (write [{json.dumps(row)}] for one argument)" if isinstance(row, (str, int, float)) else ""
        return f"an SQL task's parameter row must be a JSON array of values for $1..$n, not {_json_kind(row)}{hint}"
    if kind == "PROGRAM":
        if not isinstance(row, list):
            return ("a PROGRAM task's parameter row must be a JSON array of strings (the arguments), "
                    f"not {_json_kind(row)}")
        for i, arg in enumerate(row):
            if not isinstance(arg, str):
                return ("a PROGRAM task's parameter row must be a JSON array of strings (the arguments): "
                        f"element {i} is {_json_kind(arg)}")
    if kind == "BUILTIN":
        if command == "Sleep":
            try:
                bt.sleep_seconds(row)
            except InputError:
                return f"Sleep needs a whole number of seconds >= 0, not {json.dumps(row)}"
        elif command in _OBJECT_BUILTINS and not isinstance(row, dict):
            return f"{command} needs a JSON object, not {_json_kind(row)}"
    return None


def check_parameters(kind: str, command: str | None, rows: list[Any] | None, field: str = "parameters") -> None:
    """Every row plain JSON of the kind's shape; a builtin's row also as the builtin reads it
    (its fields: ``parameters[0].serverport``)."""
    if rows is None:
        return
    if not isinstance(rows, list):
        raise InputError(field, "must be a list of parameter rows (one execution each)")
    for i, row in enumerate(rows):
        where = f"{field}[{i}]"
        try:
            json.dumps(row, allow_nan=False)
        except (TypeError, ValueError):
            raise InputError(where, "must be plain JSON (strings, finite numbers, booleans, arrays, objects)") from None
        problem = parameter_problem(kind, command, row)
        if problem:
            raise InputError(where, problem)
        if kind == "BUILTIN" and row is not None and command in BUILTIN_NAMES:
            try:
                bt.validate_params(command, row)
            except InputError as exc:
                sub = exc.field[len("params"):] if exc.field.startswith("params") else ""
                raise InputError(where + sub, exc.problem) from None


def check_chain(values: Mapping[str, Any], min_interval: timedelta = DEFAULT_MIN_INTERVAL,
                name_field: str = "name") -> None:
    """The chain columns present in ``values`` (a new chain: all of them)."""
    if "chain_name" in values:
        check_name(name_field, values["chain_name"] if values["chain_name"] is not None else "")
    if "client_name" in values:
        check_name("client_name", values["client_name"], empty_hint="NULL: any engine may run the chain")
    if "run_at" in values:
        check_run_at(values["run_at"], min_interval)
    check_max_instances(values.get("max_instances"))
    check_timeout(values.get("timeout"))


def check_task(values: Mapping[str, Any]) -> None:
    """The task columns present in ``values``; the command against the kind when both are given."""
    kind = check_kind(values["kind"]) if "kind" in values else None
    if "command" in values:
        check_command(kind or "SQL", values["command"])
    if "task_name" in values:
        check_name("task_name", values["task_name"], empty_ok=True)
    check_timeout(values.get("timeout"), default_flag="--task-timeout")
    if values.get("run_as") is not None and CONTROL_CHARS.search(values["run_as"]):
        raise InputError("run_as", name_problem(values["run_as"]) or "")


# ---- what needs the database ------------------------------------------------------------------

MIN_INTERVAL_QUERY = "SELECT timetable.min_interval()"
ROLE_EXISTS_QUERY = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s)"


def min_interval(conn: psycopg.Connection) -> timedelta:
    """The floor this database's sessions get (pgtt.timetable_min_interval, else 1 second)."""
    try:
        with conn.transaction():
            return conn.execute(MIN_INTERVAL_QUERY).fetchone()[0]
    except psycopg.errors.InvalidParameterValue as exc:
        text = str(exc.diag.message_primary or exc)
        field, _, problem = text.partition(": ")
        raise InputError(field, problem or text) from None


def check_run_as(conn: psycopg.Connection, run_as: str | None, field: str = "run_as") -> None:
    """run_as must name an existing role ('' and None: none)."""
    if not run_as:
        return
    problem = name_problem(run_as)
    if problem:
        raise InputError(field, problem)
    if not conn.execute(ROLE_EXISTS_QUERY, (run_as,)).fetchone()[0]:
        raise InputError(field, f'role "{run_as}" does not exist')
