"""The pgtt-tui console (Textual App).

Structure (see ARCHITECTURE notes in the issue report):
- five top-level views as Textual *modes*, each with its own screen stack: overview,
  chains, jobs, sessions, logs (keys 1-5, or ``:`` / ctrl+p to jump);
- drill-down screens are pushed on the mode's stack (Enter), Esc pops them;
- every database call runs in a worker thread on one of the ``Db`` connections and
  reports back with a message (pgtt_tui.messages); widgets are only touched on the UI
  thread;
- the app owns the shared state shown in every view's status bar: where we are
  connected, READ-ONLY, refresh rate, paused, time of the last good poll, and the
  lost-connection banner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timezone, tzinfo
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from engine.db import ConnSettings
from engine.safetext import visible
from pgtt_tui.dbaccess import ConnectionLost, Db, ServerInfo
from pgtt_tui.widgets.common import Banner, StatusBar
from pgtt_tui.widgets.format import fmt_stamp

REFRESH_STEPS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# The top-level views (Textual modes), in key order 1..n: (mode, title, help, "module:Class").
# A view whose module is not there (a module not built into this install) is left out.
VIEWS = (
    ("overview", "Overview", "engines, chains and jobs by state, failures, next runs",
     "pgtt_tui.screens.overview:OverviewScreen"),
    ("chains", "Chains", "timetable chains: list, detail, editor, history", "pgtt_tui.screens.chains:ChainsScreen"),
    ("jobs", "Schedule jobs", "cron and one-time jobs, calendar", "pgtt_tui.screens.jobs:JobsScreen"),
    ("sessions", "Sessions", "engines and running chains / jobs", "pgtt_tui.screens.sessions:SessionsScreen"),
    ("logs", "Logs", "live tail of the timetable and job logs", "pgtt_tui.screens.logs:LogsScreen"),
    ("queues", "Queues", "PgQ queues, consumers, lag, ticker", "pgtt_tui.screens.queues:QueuesScreen"),
    ("cascade", "Cascade", "cascade topology and node operations", "pgtt_tui.screens.cascade:CascadeScreen"),
)


def load_views() -> list[tuple[str, str, str, type]]:
    import importlib  # noqa: PLC0415

    out = []
    for mode, title, help_text, target in VIEWS:
        module_name, _, cls = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        out.append((mode, title, help_text, getattr(module, cls)))
    return out


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


class JumpProvider(Provider):
    """Command palette: jump to a view, a chain or a job by name."""

    async def discover(self) -> Hits:
        app: PgttApp = self.app  # type: ignore[assignment]
        for mode, title, help_text, _ in app.views:
            yield DiscoveryHit(f"view: {title}", lambda m=mode: app.switch_mode(m), help=help_text)

    async def search(self, query: str) -> Hits:
        app: PgttApp = self.app  # type: ignore[assignment]
        matcher = self.matcher(query)
        for mode, title, help_text, _ in app.views:
            text = f"view: {title}"
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), lambda m=mode: app.switch_mode(m), text=text, help=help_text)
        needle = query.strip()
        for prefix in ("chain ", "job ", "chain:", "job:"):
            if needle.lower().startswith(prefix):
                needle = needle[len(prefix):].strip()
        if not needle:
            return
        try:
            found = await asyncio.to_thread(app.db.run, "lookup", app.lookup_names, needle)
        except Exception:  # noqa: BLE001 - the palette must not fail because the DB is away
            return
        for kind, ident, name in found:
            text = f"{kind}: {name}"
            score = matcher.match(text) or 0.5
            if kind == "chain":
                yield Hit(score, matcher.highlight(text), lambda n=name: app.open_chain(n), text=text,
                          help="open the chain")
            else:
                yield Hit(score, matcher.highlight(text), lambda i=ident: app.open_job(i), text=text,
                          help="open the schedule job")


class PgttApp(App):
    CSS_PATH = ["app.tcss"]
    TITLE = "pgtt-tui"
    COMMANDS = {JumpProvider}
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("q", "quit", "quit", priority=False),
        Binding("question_mark", "help", "help"),
        Binding("colon", "command_palette", "jump", show=False),
        Binding("r", "refresh_now", "refresh", show=False),
        Binding("plus,equals_sign", "faster", "faster", show=False),
        Binding("minus", "slower", "slower", show=False),
        Binding("space", "toggle_pause", "pause", show=False),
        Binding("1", "view(1)", "overview", show=False),
        Binding("2", "view(2)", "chains", show=False),
        Binding("3", "view(3)", "jobs", show=False),
        Binding("4", "view(4)", "sessions", show=False),
        Binding("5", "view(5)", "logs", show=False),
        Binding("6", "view(6)", "queues", show=False),
        Binding("7", "view(7)", "cascade", show=False),
    ]

    def notify(self, message: str, *, title: str = "", severity: Any = "information", timeout: float | None = None,
               markup: bool = True) -> None:
        """Every toast (screens and widgets call this too) carries data: names, database and
        program errors. It is shown as plain text, control characters made visible."""
        super().notify(visible(message), title=visible(title), severity=severity, timeout=timeout, markup=False)

    def __init__(self, settings: ConnSettings, *, refresh: float = 2.0, read_only: bool = False,
                 clock: Callable[[], datetime] | None = None, tz: tzinfo | None = None,
                 theme: str | None = None, log_lines: int = 10_000, demo: bool = False,
                 start_view: str = "overview", lookup_names: Callable[..., list] | None = None,
                 profile: str = "", server: ServerInfo | None = None, demo_hint: str = "") -> None:
        if read_only and not settings.read_only:
            from dataclasses import replace  # noqa: PLC0415

            settings = replace(settings, read_only=True)
        self.settings = settings
        self.read_only = settings.read_only
        self.refresh_s = refresh
        self.clock = clock or system_clock
        self.tz = tz
        self.log_lines = log_lines
        self.demo = demo
        self.demo_hint = demo_hint  # how the CLI reaches the demo's data (shown at start)
        #: plan records already offered for resuming in this console (offered once each)
        self.offered_plans: set[str] = set()
        #: plan walkers open in any mode (quitting asks while one of them is half-run)
        self.plan_walkers: set[Any] = set()
        self.profile = profile
        self.start_view = start_view
        self.db = Db(settings)
        self.paused = False
        self.server: ServerInfo | None = server
        self._fixed_server = server is not None  # tests and screenshots pin what the header shows
        self.last_ok: datetime | None = None
        self.lost_since: datetime | None = None
        self.lost_error = ""
        self.last_action: tuple[str, str, str] | None = None
        self.views = load_views()
        self.MODES = {mode: cls for mode, _, _, cls in self.views}
        if lookup_names is not None:
            self.lookup_names = lookup_names  # type: ignore[method-assign]
        super().__init__()
        if theme:
            self._wanted_theme = theme
        else:
            self._wanted_theme = None

    # ---- life cycle ------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self._wanted_theme:
            try:
                self.theme = self._wanted_theme
            except Exception:  # noqa: BLE001 - unknown theme: keep the default, say so
                self.notify(f"unknown theme {self._wanted_theme!r}; using {self.theme}", severity="warning")
        if not self._fixed_server:
            self.run_worker(self._load_server_info, thread=True, group="server-info", exit_on_error=False)
        self.switch_mode(self.start_view)
        if self.demo_hint:
            self.notify(self.demo_hint, title="demo", timeout=20)

    def _load_server_info(self) -> None:
        try:
            info = self.db.server_info()
        except ConnectionLost:
            return
        except Exception:  # noqa: BLE001
            return
        self.call_from_thread(self._set_server_info, info)

    def _set_server_info(self, info: ServerInfo) -> None:
        self.server = info
        self.sync_status()

    async def on_unmount(self) -> None:
        self.db.closed = True  # worker loops see this and end
        for screen in self.screen_stack:
            stop = getattr(screen, "_stop", None)
            if stop is not None:
                stop.set()
        self.workers.cancel_all()
        await asyncio.to_thread(self.db.close)

    # ---- shared status ----------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock()

    def mark_ok(self) -> None:
        self.last_ok = self.now()
        if self.lost_since is not None:
            self.lost_since = None
            self.lost_error = ""
            self.notify("connection is back", title="database", timeout=4)
            if self.server is None:
                self.run_worker(self._load_server_info, thread=True, group="server-info", exit_on_error=False)
        self.sync_status()

    def mark_lost(self, error: str) -> None:
        if self.lost_since is None:
            self.lost_since = self.now()
        self.lost_error = error
        self.sync_status()

    @property
    def stale(self) -> bool:
        return self.lost_since is not None

    def sync_status(self, screen: Any = None) -> None:
        screen = screen or self.screen
        try:
            bar = screen.query_one(StatusBar)
            banner = screen.query_one(Banner)
        except Exception:  # noqa: BLE001 - modal screens have no status bar
            return
        if self.server is not None:
            bar.where = self.server.where
            bar.role = self.server.role + (" (standby)" if self.server.in_recovery else "")
            bar.version = self.server.version
        else:
            bar.where = self.settings.describe() if self.settings.dsn else "connecting…"
        bar.read_only = self.read_only
        bar.refresh_s = self.refresh_s
        bar.paused = self.paused
        bar.demo = self.demo
        bar.view = getattr(screen, "TITLE", "")
        bar.last_ok = fmt_stamp(self.last_ok, self.tz)[11:] if self.last_ok else ""
        bar.stale = self.stale
        if self.stale:
            banner.show_error(self.lost_error, fmt_stamp(self.lost_since, self.tz)[11:],
                              ever_connected=self.last_ok is not None)
            screen.add_class("-stale")
        else:
            banner.clear()
            screen.remove_class("-stale")

    # ---- global actions --------------------------------------------------------------------------
    def action_view(self, number: int) -> None:
        if 1 <= number <= len(self.views):
            self.switch_mode(self.views[number - 1][0])

    def action_refresh_now(self) -> None:
        screen = self.screen
        if hasattr(screen, "request_poll"):
            screen.request_poll()

    def _set_refresh(self, value: float) -> None:
        self.refresh_s = value
        self.notify(f"refresh every {value:g} s", timeout=2)
        self.sync_status()

    def action_faster(self) -> None:
        lower = [s for s in REFRESH_STEPS if s < self.refresh_s]
        self._set_refresh(lower[-1] if lower else REFRESH_STEPS[0])

    def action_slower(self) -> None:
        higher = [s for s in REFRESH_STEPS if s > self.refresh_s]
        self._set_refresh(higher[0] if higher else REFRESH_STEPS[-1])

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.sync_status()
        screen = self.screen
        if hasattr(screen, "on_pause_changed"):
            screen.on_pause_changed(self.paused)
        if not self.paused and hasattr(screen, "request_poll"):
            screen.request_poll()

    async def action_quit(self) -> None:
        """``q``, ctrl+q and the palette's Quit: ask first while a plan is half-run."""
        from pgtt_tui.screens.modals import ConfirmScreen  # noqa: PLC0415

        half = [w for w in self.plan_walkers if w.half_run()]
        if not half:
            self.exit()
            return
        walker = half[0]
        saved = f" Its record {walker.record_id()} is on disk: the next console offers to continue it." \
            if walker.record_id() else ""
        body = (f"{walker.plan.title}: {walker.progress_text()}. The cascade is left half-way.{saved}\n\n"
                "Quit anyway?")

        def done(ok: bool | None) -> None:
            if ok:
                self.exit()

        self.push_screen(ConfirmScreen("Quit with a half-run plan", body), done)

    def action_help(self) -> None:
        from pgtt_tui.screens.modals import HelpScreen  # noqa: PLC0415

        screen = self.screen
        view = getattr(screen, "HELP", None) or getattr(screen, "VIEW", "app")
        keys, generic = screen.help_key_groups() if hasattr(screen, "help_key_groups") else ([], [])
        focus = screen.help_topic() if hasattr(screen, "help_topic") else None
        self.push_screen(HelpScreen(view, keys, focus, generic))

    def save_screenshot(self, filename: str | None = None, path: str | None = None,
                        time_format: str | None = None) -> str:
        """Textual's SVG, marked ``xml:space="preserve"``: Rich writes runs of spaces as
        no-break spaces, which SVG renderers such as rsvg-convert still strip at the start of
        a text run (``pgtt Overview`` became ``pgttOverview`` in the PNGs)."""
        saved = super().save_screenshot(filename, path, time_format)
        with open(saved, encoding="utf-8") as f:
            svg = f.read()
        if 'xml:space="preserve"' not in svg:
            svg = svg.replace("<svg ", '<svg xml:space="preserve" ', 1)
            with open(saved, "w", encoding="utf-8") as f:
                f.write(svg)
        return saved

    # ---- navigation used by the palette and the views ----------------------------------------
    def open_chain(self, name: str) -> None:
        from pgtt_tui.screens.chains import ChainDetailScreen  # noqa: PLC0415

        self.switch_mode("chains")
        self.push_screen(ChainDetailScreen(name))

    def open_job(self, job_id: Any) -> None:
        from pgtt_tui.screens.jobs import JobDetailScreen  # noqa: PLC0415

        self.switch_mode("jobs")
        self.push_screen(JobDetailScreen(job_id))

    def lookup_names(self, conn: Any, needle: str) -> list[tuple[str, Any, str]]:
        from engine.views.overview import lookup_names  # noqa: PLC0415

        return lookup_names(conn, needle, limit=20)
