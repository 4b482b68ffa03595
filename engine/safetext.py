"""Text from the database or from a program, made safe to show on a terminal.

Names, commands, log messages, error texts, event payloads, node and consumer names and
program output are written by other roles (a non-superuser's job name, a remote server's
error). Printed raw, an escape sequence in them retitles the operator's terminal, clears
the screen or fakes output. ``visible`` is the ONE function that every console widget and
every human-readable CLI output passes such text through (the console at its cell, markup
and log-line helpers in ``pgtt_tui/widgets``, the CLI in ``pgtt_tui/cli/common.py``);
``--json`` output needs none (JSON escapes control characters itself).

Every control character is shown as a Python-style escape, so the bytes stay readable and
copyable: C0 (U+0000-U+001F, ESC is ``\\x1b``), DEL (``\\x7f``) and C1 (U+0080-U+009F) as
``\\xNN``; the Unicode line/paragraph separators and the bidirectional overrides and isolates
(which reorder what the terminal shows: "Trojan source") as ``\\uNNNN``. Tab and newline are
kept where a field may hold several lines (``newlines=True``, the default: commands, output);
one-line places (table cells) fold them themselves or pass ``newlines=False``.
"""

from __future__ import annotations

import re

_OTHER = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_KEEP_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_OTHER}]")
_UNSAFE_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_OTHER}]")
_JSON_RAW = re.compile(f"[\x7f-\x9f{_OTHER}]")


def _show(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object, *, newlines: bool = True) -> str:
    """``text`` (``str()`` of it) with control characters made visible, e.g. ESC as ``\\x1b``.

    ``newlines=False`` also shows tab and newline (``\\t``, ``\\n`` as ``\\x09``, ``\\x0a``).
    """
    s = text if isinstance(text, str) else ("" if text is None else str(text))
    pattern = _UNSAFE_KEEP_LINES if newlines else _UNSAFE_ONE_LINE
    return pattern.sub(_show, s) if pattern.search(s) else s


def is_visible(text: str, *, newlines: bool = True) -> bool:
    """True when ``text`` holds nothing ``visible`` would change (for tests and asserts)."""
    return not (_UNSAFE_KEEP_LINES if newlines else _UNSAFE_ONE_LINE).search(text)


def visible_json(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with the characters it leaves raw
    (DEL, C1, the separators and bidi controls; C0 it escapes itself) written as ``\\uNNNN``:
    the same JSON value, nothing a terminal acts on. They only occur inside JSON strings."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if _JSON_RAW.search(text) else text
