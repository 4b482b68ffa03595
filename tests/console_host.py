"""A host App for the queue / cascade / plan screens in tests (issue 7).

It is the console's own PgttApp (status bar, refresh, read-only, connections), started on
one given screen instead of the five standard views, with a fixed clock for snapshots.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from textual.app import App
from textual.screen import Screen

from engine.db import ConnSettings
from pgtt_tui.app import PgttApp
from pgtt_tui.dbaccess import Db

FIXED_NOW = datetime(2026, 11, 21, 3, 0, 0, tzinfo=timezone.utc)
APP_CSS = str(Path(__file__).resolve().parent.parent / "pgtt_tui" / "app.tcss")


class HostApp(PgttApp):
    CSS_PATH = [APP_CSS]

    def __init__(self, settings: ConnSettings, make_screen: Callable[[], Screen], *, read_only: bool = False,
                 refresh: float = 0.5, clock: Callable[[], datetime] | None = None) -> None:
        if read_only:
            from dataclasses import replace

            settings = replace(settings, read_only=True)
        self.settings = settings
        self.read_only = settings.read_only
        self.refresh_s = refresh
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.tz = timezone.utc
        self.log_lines = 1000
        self.demo = False
        self.profile = ""
        self.start_view = "main"
        self.db = Db(settings)
        self.paused = False
        self.server = None
        self.last_ok = None
        self.lost_since = None
        self.lost_error = ""
        self.last_action = None
        self._wanted_theme = None
        self.MODES = {"main": make_screen}
        App.__init__(self)

    def _load_server_info(self) -> None:  # keep the status bar deterministic (no host:port)
        return None
