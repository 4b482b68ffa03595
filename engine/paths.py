"""Where the shipped SQL lives, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def sql_root() -> Path:
    """The folder holding one sub-folder per database module.

    A wheel carries it as ``engine/_sql`` (see pyproject's force-include); a checkout
    (and an editable install) has it as ``sql/`` beside the package.
    """
    for candidate in (_PKG / "_sql", _PKG.parent / "sql"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the SQL modules are missing: looked in {_PKG / '_sql'} and {_PKG.parent / 'sql'}")
