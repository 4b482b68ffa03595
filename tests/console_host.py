"""A host App for the queue / cascade / plan screens in tests (issue 7).

It is the console's own PgttApp (status bar, refresh, read-only, connections), started on
one given screen (a mode named "main") instead of the overview, with a pinned header
(no host:port of the test server) and, for snapshots, a fixed clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from textual.screen import Screen

from engine.db import ConnSettings
from pgtt_tui.app import PgttApp
from pgtt_tui.dbaccess import ServerInfo

FIXED_NOW = datetime(2026, 11, 21, 3, 0, 0, tzinfo=timezone.utc)
APP_CSS = str(Path(__file__).resolve().parent.parent / "pgtt_tui" / "app.tcss")
PINNED = ServerInfo(where="db.example:5432/prod", role="postgres", version="18.1")


class HostApp(PgttApp):
    CSS_PATH = [APP_CSS]

    def __init__(self, settings: ConnSettings, make_screen: Callable[[], Screen], *, read_only: bool = False,
                 refresh: float = 0.5, clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(settings, refresh=refresh, read_only=read_only, clock=clock, tz=timezone.utc,
                         start_view="main", server=PINNED)
        self.add_mode("main", make_screen)


async def until(pilot, predicate, timeout: float = 15.0, step: float = 0.05, msg=None) -> None:
    """Let the app run until ``predicate()`` holds; fail with ``msg()`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(step)
    raise AssertionError(f"condition not reached in time {msg() if msg else ''}")


async def settle(pilot, predicate=None, timeout: float = 10.0) -> None:
    """Until the screen has data (or ``predicate(app)``) and no poll is running, then a beat
    more: what a snapshot is taken after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = pilot.app.screen
        ready = predicate(pilot.app) if predicate else getattr(screen, "last_data", None) is not None
        if ready and not any(w.group.startswith("poll") and not w.is_finished for w in pilot.app.workers):
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)
