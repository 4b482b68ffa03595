"""Error types shared by the whole engine.

Every error a user can cause carries the name of the field that is wrong and what is
wrong with it, so the CLI and the console can show one clear line without a traceback.
"""

from __future__ import annotations


class PgttError(Exception):
    """Base class for errors that are meant to be shown to the user as one line."""

    #: process exit code the CLI uses for this kind of error (see README "Exit codes")
    exit_code = 1


class InputError(PgttError, ValueError):
    """Bad input: names the field and the problem; nothing was changed."""

    exit_code = 2

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ConnectError(PgttError):
    """The database could not be reached or refused us; the message says what to do."""

    exit_code = 3


class SchemaError(PgttError):
    """The schema is missing, outdated or cannot be installed here."""

    exit_code = 4


class ReadOnlyError(PgttError):
    """A write was attempted in read-only mode."""

    exit_code = 5


class NotFoundError(PgttError):
    """The named object (chain, job, queue, node, ...) does not exist."""

    exit_code = 6
