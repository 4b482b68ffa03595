"""Progress of long CLI operations (plan waits, chain import, db init / upgrade).

On a terminal: one line redrawn in place, with a bar when the total is known.  Anywhere
else (a log file, a pipe, CI): a plain line per change, never carriage returns, so a log
reads top to bottom.  Progress goes to stderr, so ``--json`` output on stdout stays data.
"""

from __future__ import annotations

import sys
from typing import TextIO

from engine.safetext import visible
from pgtt_tui.widgets.format import bar, behind_bar

__all__ = ["Progress", "bar", "behind_bar"]


class Progress:
    """``what`` advancing through ``total`` steps (unknown: None)."""

    def __init__(self, what: str, total: int | None = None, stream: TextIO | None = None) -> None:
        self.what = what
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self._last = ""
        self._drawn = False

    def update(self, done: int, detail: str = "") -> None:
        detail = visible(detail, newlines=False)
        if self.live:
            count = f" {bar(done, self.total)} {done}/{self.total}" if self.total else f" {done}"
            self.stream.write(f"\r{self.what}{count} {detail}\x1b[K")
            self._drawn = True
        else:
            line = f"{self.what}: {done}/{self.total} {detail}" if self.total else f"{self.what}: {done} {detail}"
            if line == self._last:
                return
            self._last = line
            self.stream.write(line.rstrip() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self._drawn = False
