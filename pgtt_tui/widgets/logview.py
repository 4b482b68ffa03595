"""A live log view built on Textual's line API (only visible lines are rendered).

- entries arrive in batches (one message per poll, however many lines);
- follow mode keeps the view at the bottom; scrolling up leaves follow mode and counts
  the lines that arrive meanwhile ("+N new"); scrolling back to the bottom resumes it;
- a filter (level, chain, client, free text) applies to what is held, as you type;
- the number of held entries is capped (oldest dropped), so memory stays flat however
  long it runs; older history is paged in from the database on request;
- wrap on/off.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.safetext import visible

LEVELS = ("DEBUG", "INFO", "NOTICE", "USER", "WARNING", "ERROR", "PANIC")
LEVEL_RANK = {"DEBUG": 0, "INFO": 1, "NOTICE": 1, "USER": 1, "WARNING": 2, "ERROR": 3, "PANIC": 4}
LEVEL_CHOICES = ("all", "info", "warning", "error")
_CHOICE_RANK = {"all": 0, "info": 1, "warning": 2, "error": 3}


@dataclass(frozen=True)
class LogFilter:
    """``level:error chain:nightly client:node-a some words`` → a filter (all parts optional)."""

    min_level: str = "all"
    chain: str = ""
    client: str = ""
    text: str = ""

    @classmethod
    def parse(cls, query: str, min_level: str = "all") -> LogFilter:
        chain = client = ""
        words: list[str] = []
        for token in query.split():
            key, sep, value = token.partition(":")
            if sep and key.lower() == "chain":
                chain = value.lower()
            elif sep and key.lower() in ("client", "cl"):
                client = value.lower()
            elif sep and key.lower() in ("level", "lvl") and value.lower() in _CHOICE_RANK:
                min_level = value.lower()
            else:
                words.append(token.lower())
        return cls(min_level=min_level, chain=chain, client=client, text=" ".join(words))

    def matches(self, entry: Any) -> bool:
        if self.min_level != "all" and LEVEL_RANK.get(entry.level, 1) < _CHOICE_RANK[self.min_level]:
            return False
        if self.chain and self.chain not in (entry.chain or "").lower():
            return False
        if self.client and self.client not in (entry.client or "").lower():
            return False
        if self.text and self.text not in entry.message.lower() and self.text not in (entry.chain or "").lower():
            return False
        return True

    @property
    def active(self) -> bool:
        return bool(self.min_level != "all" or self.chain or self.client or self.text)

    def describe(self) -> str:
        parts = []
        if self.min_level != "all":
            parts.append(f"level≥{self.min_level}")
        if self.chain:
            parts.append(f"chain:{self.chain}")
        if self.client:
            parts.append(f"client:{self.client}")
        if self.text:
            parts.append(f'"{self.text}"')
        return " ".join(parts) or "none"


def level_style_name(level: str) -> str:
    rank = LEVEL_RANK.get(level, 1)
    return {0: "logview--debug", 2: "logview--warning", 3: "logview--error", 4: "logview--error"}.get(
        rank, "logview--info")


class LogView(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"logview--debug", "logview--info", "logview--warning", "logview--error"}
    DEFAULT_CSS = """
    LogView { background: $surface; }
    LogView > .logview--debug { color: $text-muted; }
    LogView > .logview--info { color: $foreground; }
    LogView > .logview--warning { color: $warning; }
    LogView > .logview--error { color: $error; text-style: bold; }
    """

    follow = reactive(True)
    wrap = reactive(False)
    pending = reactive(0)

    class Status(Message):
        """Follow state or the "+N new" counter changed."""

        def __init__(self, follow: bool, pending: int, shown: int, held: int) -> None:
            super().__init__()
            self.follow = follow
            self.pending = pending
            self.shown = shown
            self.held = held

    def __init__(self, max_lines: int = 10_000, tz: tzinfo | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_lines = max_lines
        self.tz = tz
        self.entries: deque = deque(maxlen=max_lines)
        self.filter = LogFilter()
        # display lines: (text, style-name, entry index marker)
        self._lines: list[tuple[str, str]] = []
        self._width = 0
        self._styles: dict[str, Style] = {}
        self._programmatic = False

    # ---- formatting ------------------------------------------------------------------
    def format_entry(self, entry: Any) -> str:
        t = entry.ts.astimezone(self.tz) if self.tz is not None else entry.ts.astimezone()
        chain = (entry.chain or "-")[:18]
        client = (entry.client or "-")[:12]
        return f"{t:%H:%M:%S} {entry.level[:5]:<5} {client:<12} {chain:<18} {entry.message}"

    def _display(self, entry: Any) -> list[tuple[str, str]]:
        # a log line is data: written straight into segments (no markup), so only the
        # control characters need making visible (engine.safetext.visible)
        text = visible(self.format_entry(entry).replace("\n", " ⏎ ").replace("\t", " "), newlines=False)
        style = level_style_name(entry.level)
        width = max(20, self.scrollable_content_region.width or 80)
        if not self.wrap or len(text) <= width:
            return [(text, style)]
        indent = " " * 9
        out = [(text[:width], style)]
        rest = text[width:]
        step = width - len(indent)
        while rest:
            out.append((indent + rest[:step], style))
            rest = rest[step:]
        return out

    # ---- data --------------------------------------------------------------------------
    def append(self, entries: list[Any]) -> int:
        """Add new entries (oldest first); returns how many passed the filter."""
        if not entries:
            return 0
        self.entries.extend(entries)
        added: list[tuple[str, str]] = []
        matches = self.filter.matches
        for entry in entries[-self.max_lines:]:
            if matches(entry):
                added.extend(self._display(entry))
        shown = len(added)
        if added:
            self._lines.extend(added)
            removed = len(self._lines) - self.max_lines
            if removed > 0:
                del self._lines[:removed]
            self._width = max(self._width, max(len(t) for t, _ in added))
            self._resize(removed if removed > 0 else 0, new=shown)
        return shown

    def prepend(self, entries: list[Any]) -> int:
        """Put an older page (oldest first) above what is held, if there is room."""
        room = self.max_lines - len(self.entries)
        if room <= 0 or not entries:
            return 0
        entries = entries[-room:]
        self.entries.extendleft(reversed(entries))
        lines: list[tuple[str, str]] = []
        for entry in entries:
            if self.filter.matches(entry):
                lines.extend(self._display(entry))
        if lines:
            self._lines[:0] = lines
            self._width = max(self._width, max(len(t) for t, _ in lines))
            self.virtual_size = Size(self._width, len(self._lines))
            self._programmatic = True
            self.scroll_to(y=self.scroll_y + len(lines), animate=False, immediate=True)
            self._programmatic = False
            self.refresh()
        return len(entries)

    def clear(self) -> None:
        self.entries.clear()
        self._lines.clear()
        self._width = 0
        self.pending = 0
        self.virtual_size = Size(0, 0)
        self.refresh()

    def set_filter(self, flt: LogFilter) -> None:
        self.filter = flt
        self.rebuild()

    def rebuild(self) -> None:
        lines: list[tuple[str, str]] = []
        matches = self.filter.matches
        for entry in self.entries:
            if matches(entry):
                lines.extend(self._display(entry))
        self._lines = lines[-self.max_lines:]
        self._width = max((len(t) for t, _ in self._lines), default=0)
        self.pending = 0
        self.virtual_size = Size(self._width, len(self._lines))
        if self.follow:
            self._to_end()
        self.refresh()
        self._post_status()

    @property
    def shown(self) -> int:
        return len(self._lines)

    def last_entry(self) -> Any | None:
        return self.entries[-1] if self.entries else None

    def entry_text_at_cursor(self) -> str:
        """The text of the last visible line (what `y` copies)."""
        if not self._lines:
            return ""
        index = min(len(self._lines) - 1, int(self.scroll_y) + self.scrollable_content_region.height - 1)
        return self._lines[index][0]

    # ---- scrolling and follow -----------------------------------------------------------
    def _resize(self, removed_top: int, new: int) -> None:
        self.virtual_size = Size(self._width, len(self._lines))
        if self.follow:
            self._to_end()
        else:
            if removed_top:
                self._programmatic = True
                self.scroll_to(y=max(0, self.scroll_y - removed_top), animate=False, immediate=True)
                self._programmatic = False
            self.pending += new
            self._post_status()
        self.refresh()

    def _to_end(self) -> None:
        self._programmatic = True
        self.scroll_to(y=max(0, len(self._lines) - self.scrollable_content_region.height), animate=False,
                       immediate=True)
        self._programmatic = False

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if self._programmatic:
            return
        at_end = new >= self.max_scroll_y - 0.5
        if at_end and not self.follow:
            self.follow = True
        elif not at_end and new < old and self.follow:
            self.follow = False

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self.pending = 0
            self._to_end()
        self._post_status()

    def watch_wrap(self) -> None:
        self.rebuild()

    def _post_status(self) -> None:
        self.post_message(self.Status(self.follow, self.pending, len(self._lines), len(self.entries)))

    def on_resize(self) -> None:
        if self.wrap:
            self.rebuild()
        elif self.follow:
            self._to_end()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()

    # ---- rendering ----------------------------------------------------------------------
    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self.get_component_rich_style(name)
            self._styles[name] = style
        return style

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if index >= len(self._lines) or index < 0:
            return Strip.blank(width, base)
        text, style_name = self._lines[index]
        strip = Strip([Segment(text, base + self._style(style_name))])
        return strip.crop_extend(scroll_x, scroll_x + width, base)
