"""Pure formatting helpers: times, durations and states as text + glyph.

States are never shown by colour alone: every state has a word and a glyph, and the
colour (a theme variable via a CSS class / markup) only reinforces it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any

from rich.style import Style
from rich.text import Text

from engine.safetext import visible

# state -> (glyph, word, theme colour variable)
STATES: dict[str, tuple[str, str, str]] = {
    "ok": ("✓", "ok", "$success"),
    "success": ("✓", "ok", "$success"),
    "done": ("✓", "done", "$success"),
    "failed": ("✗", "FAIL", "$error"),
    "error": ("✗", "FAIL", "$error"),
    "running": ("▶", "RUN", "$accent"),
    "processing": ("▶", "RUN", "$accent"),
    "working": ("▶", "RUN", "$accent"),
    "live": ("●", "live", "$success"),
    "paused": ("‖", "paused", "$warning"),
    "inactive": ("‖", "inactive", "$warning"),
    "active": ("●", "active", "$success"),
    "broken": ("!", "BROKEN", "$error"),
    "submitted": ("◷", "queued", "$primary"),
    "canceled": ("⊘", "canceled", "$text-muted"),
    "cancelled": ("⊘", "canceled", "$text-muted"),
    "dead": ("✗", "DEAD", "$error"),
    "stopped": ("■", "stopped", "$text-muted"),
    "alive": ("●", "alive", "$success"),
    "stale": ("?", "stale", "$warning"),
    "never": ("·", "never", "$text-muted"),
    "": ("·", "", "$text-muted"),
}


def _state(state: str | None) -> tuple[str, str, str]:
    """(glyph, word, colour); an unknown state shows its own word, made visible."""
    return STATES.get((state or "").lower(), ("·", visible(state or "", newlines=False), "$text-muted"))


def state_text(state: str | None) -> str:
    glyph, word, _ = _state(state)
    return f"{glyph} {word}".strip()


def state_markup(state: str | None) -> str:
    """Content markup: glyph + word, coloured with a theme variable."""
    glyph, word, colour = _state(state)
    text = escape(f"{glyph} {word}".strip())
    return f"[{colour}]{text}[/]"


def local(t: datetime | None, tz: tzinfo | None) -> datetime | None:
    if t is None:
        return None
    return t.astimezone(tz) if tz is not None else t.astimezone()


def fmt_time(t: datetime | None, now: datetime, tz: tzinfo | None = None) -> str:
    """``14:03:07`` today, ``11-20 14:03`` this year, else the date."""
    if t is None:
        return ""
    lt, ln = local(t, tz), local(now, tz)
    assert lt is not None and ln is not None
    if lt.date() == ln.date():
        return lt.strftime("%H:%M:%S")
    if lt.year == ln.year:
        return lt.strftime("%m-%d %H:%M")
    return lt.strftime("%Y-%m-%d")


def fmt_stamp(t: datetime | None, tz: tzinfo | None = None) -> str:
    if t is None:
        return ""
    lt = local(t, tz)
    assert lt is not None
    return lt.strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(delta: timedelta | float | None) -> str:
    if delta is None:
        return ""
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 10:
        return f"{sign}{seconds:.1f}s"
    seconds = int(seconds)
    if seconds < 60:
        return f"{sign}{seconds}s"
    if seconds < 3600:
        return f"{sign}{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{sign}{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{sign}{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def bar(done: float, total: float, width: int = 20) -> str:
    """``[#######-------]``: ``done`` of ``total`` in plain characters (reads in any terminal,
    with NO_COLOR, and in a log); the console and the CLI draw progress with it."""
    filled = round(width * max(0.0, min(done, total)) / total) if total else 0
    return f"[{'#' * filled}{'-' * (width - filled)}]"


def behind_bar(behind: float | None, most: float | None, width: int = 20) -> str:
    """`` [#######-------] 3 behind (of 10)`` for a wait that says how far behind it is
    (shrinking towards done); "" when it does not say."""
    if behind is None or not most:
        return ""
    return f" {bar(most - behind, most, width)} {behind:g} behind (of {most:g})"


def fmt_relative(t: datetime | None, now: datetime) -> str:
    """``in 4m10s`` / ``3m ago``."""
    if t is None:
        return ""
    delta = (t - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {fmt_duration(delta)}" if delta > 0 else f"{fmt_duration(-delta)} ago"


def clip(text: str | None, width: int) -> str:
    """One line of at most ``width`` characters, control characters made visible."""
    if not text:
        return ""
    one = visible(" ".join(str(text).split()), newlines=False)
    return one if len(one) <= width else one[: max(0, width - 1)] + "…"


def safe(text: object) -> str:
    """Data shown as plain text (a table cell, a log line): control characters made visible
    (engine.safetext.visible, the one sanitiser)."""
    return visible(text)


def escape(text: object) -> str:
    """Data (names, messages, errors) put into content markup: control characters made
    visible, every ``[`` escaped, and a trailing backslash kept from escaping the tag that
    follows (a zero-width space after it), so ``[bold]x[/]`` or ``x\\`` show as they are."""
    out = visible(text).replace("[", "\\[")
    return out + "\u200b" if out.endswith("\\") else out


def state_cell(state: str | None, variables: dict[str, Any] | None = None) -> Text:
    """A table cell: glyph + word, coloured from the current theme's variables."""
    glyph, word, colour = _state(state)
    text = Text(f"{glyph} {word}".strip(), no_wrap=True)
    value = (variables or {}).get(colour.lstrip("$"))
    if value and isinstance(value, str) and value.startswith("#"):
        try:
            text.stylize(Style(color=value[:7]))
        except Exception:  # noqa: BLE001 - a colour Rich cannot parse: glyph and word still say it
            pass
    return text
