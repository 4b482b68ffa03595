"""The base of every top-level view: completion-scheduled polling, actions in workers.

A view implements ``fetch(conn)`` (runs in a worker thread, calls engine functions and
returns plain data) and ``show(data)`` (runs on the UI thread, updates widgets). The
next poll is scheduled only after the previous one finished, at the app's refresh
interval, and only while the view is in sight (``in_sight``: the active screen, or under
dialogs only); a view that comes back into sight polls at once, a paused one not again
until the operator resumes. Write actions go through ``act()``: a worker calls the engine on the
``action`` connection and posts ActionDone / ActionFailed; read-only mode refuses them
here and the engine (guard_write + default_transaction_read_only) refuses them again.

A view that names the module it reads (``ACCESS_PART``) tells a lack of privileges from
other failures: when a poll fails with a permission error and engine.access finds what
this role lacks, the view shows the no-access panel in place of its tables, checks again
only every DENIED_RECHECK_S seconds (or on ``r``), comes back by itself once the grant is
there, and refuses the actions marked ``@needs_access`` meanwhile with one line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import psycopg
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Footer

from engine import access as access_api
from engine.db import guard_write, translate_db_error
from engine.errors import PgttError
from pgtt_tui.dbaccess import ConnectionLost
from pgtt_tui.messages import ActionDone, ActionFailed, PollDenied, PollDone, PollFailed
from pgtt_tui.widgets.common import Banner, NoAccessPanel, StatusBar

if TYPE_CHECKING:
    from pgtt_tui.app import PgttApp

#: seconds between checks while this role may not read a view's module (r checks at once)
DENIED_RECHECK_S = 30.0
A = TypeVar("A", bound=Callable[..., Any])


def needs_access(action: A) -> A:
    """For a view's ``action_*`` methods that need the module the view reads: while the
    no-access panel is up they are refused with one line instead of failing later."""

    @functools.wraps(action)
    def guarded(view: BaseView, *args: Any) -> Any:
        if view.no_access is not None:
            view.refuse_without_access(action.__name__.removeprefix("action_"), *args)
            return None
        return action(view, *args)

    return guarded  # type: ignore[return-value]


def _own_binding(node: Any, binding: Binding) -> bool:
    """Whether ``binding`` comes from one of the console's classes (not a Textual widget's)."""
    for cls in type(node).__mro__:
        if cls.__module__.startswith("pgtt_tui") and any(
                isinstance(b, Binding) and b.action == binding.action and b.key == binding.key
                for b in cls.__dict__.get("BINDINGS", [])):
            return True
    return False


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return translate_db_error(exc)
    return str(exc) or type(exc).__name__


class BaseView(Screen):
    VIEW: ClassVar[str] = "view"
    TITLE: ClassVar[str] = "view"
    #: actions that change the database: hidden and refused in read-only mode
    WRITE_ACTIONS: ClassVar[frozenset[str]] = frozenset()
    POLLS: ClassVar[bool] = True
    #: the module this view reads (engine.access.VIEW_PARTS): a permission error on it shows
    #: the no-access panel instead of an error
    ACCESS_PART: ClassVar[str | None] = None

    BINDINGS = [Binding("escape", "back", "back", show=False),
                Binding("left_square_bracket", "switch_tab(-1)", "previous tab", show=False),
                Binding("right_square_bracket", "switch_tab(1)", "next tab", show=False)]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._polling = False
        self._poll_again = False
        self._timer: Timer | None = None
        self._generation = 0
        # whether the view counts itself in sight (its schedule runs), and the poll generation
        # when it last went out of sight: see on_screen_resume
        self._watching = False
        self._generation_hidden = 0
        self.last_data: Any = None
        self._last_poll_error = ""
        self.no_access: access_api.NoAccess | None = None
        self._focus_before_denied: Any = None

    @property
    def papp(self) -> PgttApp:
        return self.app  # type: ignore[return-value]

    # ---- layout --------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        yield Banner(id="banner")
        yield from self.compose_body()
        if self.ACCESS_PART:
            yield NoAccessPanel(id="no-access")
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.papp.sync_status(self)

    def on_screen_resume(self) -> None:
        self.papp.sync_status(self)
        # Already watching: Textual resumes a mode's first screen twice, and a dialog closed
        # over the view did not interrupt its schedule.
        if not self.POLLS or self._watching or not self.in_sight:
            return
        self._watching = True
        if self._polling and self._generation > self._generation_hidden:
            return  # started since it went out of sight (the cover's dismiss callback asked): that is the refresh
        self.request_poll()

    def on_screen_suspend(self) -> None:
        if not self.in_sight:
            self._stop_watching()

    @property
    def in_sight(self) -> bool:
        """Whether the operator sees this view: it is the active screen, or only ModalScreens
        are above it in the current mode. Every ModalScreen of the console (modals.py,
        prompts.py) is a dialog over the view dimmed through a see-through background (app.tcss:
        ModalScreen, ``.dialog`` at most 90% of the screen), so the view stays visible around
        it and keeps polling; a full Screen pushed on top (the plan walker, an editor, a detail
        view) hides it. Not ``is_current``: Textual counts the screen right below the top one
        as visible even when the top one is a full opaque screen."""
        try:
            stack = self.app.screen_stack
        except Exception:  # noqa: BLE001 - no app or no stack (shutting down): nothing in sight
            return False
        for screen in reversed(stack):
            if screen is self:
                return True
            if not isinstance(screen, ModalScreen):
                return False
        return False

    def _stop_watching(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._poll_again = False  # the poll on coming back reads whatever changed meanwhile
        if self._watching:
            self._watching = False
            self._generation_hidden = self._generation

    # ---- polling --------------------------------------------------------------------------
    def fetch(self, conn: psycopg.Connection) -> Any:  # worker thread
        return None

    def show(self, data: Any) -> None:  # UI thread
        pass

    def request_poll(self) -> None:
        """Poll now unless a poll is already running (then its completion schedules the next);
        out of sight, not at all (coming back into sight polls)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if not self.POLLS:
            return
        if not self.in_sight:
            self._stop_watching()
            return
        if self._polling:
            self._poll_again = True  # what is shown changed: poll again as soon as this one ends
            return
        self._polling = True
        self._generation += 1
        generation = self._generation
        self.run_worker(lambda: self._poll_body(generation), thread=True, group=f"poll-{self.VIEW}",
                        exit_on_error=False, description=f"poll {self.VIEW}")

    def _poll_body(self, generation: int) -> None:  # worker thread: no widgets here
        try:
            data = self.papp.db.run("poll", self.fetch)
        except ConnectionLost as exc:
            self.post_message(PollFailed(self.VIEW, str(exc), lost=True))
        except (PgttError, psycopg.Error) as exc:
            denied = (access_api.not_installed(exc) if self.ACCESS_PART else None) or self._explain_denial(exc)
            self.post_message(PollDenied(self.VIEW, denied) if denied else PollFailed(self.VIEW, describe_error(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the refresh loop
            self.post_message(PollFailed(self.VIEW, f"{type(exc).__name__}: {exc}"))
        else:
            self.post_message(PollDone(self.VIEW, data, generation))

    def _explain_denial(self, exc: BaseException) -> access_api.NoAccess | None:  # worker thread
        """What this role lacks to read the view's module, when ``exc`` is a permission error."""
        if self.ACCESS_PART is None or not access_api.is_permission_error(exc):
            return None
        try:
            return self.papp.db.run("poll", access_api.no_access, self.ACCESS_PART)
        except Exception:  # noqa: BLE001 - then the original error is shown as it is
            return None

    def on_poll_done(self, message: PollDone) -> None:
        message.stop()
        self._polling = False
        self._last_poll_error = ""
        self.papp.mark_ok()
        self._clear_no_access()
        self.last_data = message.data
        self.show(message.data)
        self._schedule_next()

    def on_poll_denied(self, message: PollDenied) -> None:
        message.stop()
        self._polling = False
        self._last_poll_error = ""
        self.papp.mark_ok()  # the database answers: this is no connection problem
        if self.no_access is None:
            self._focus_before_denied = self.focused
        self.no_access = message.no_access
        panel = self.query_one(NoAccessPanel)
        if isinstance(message.no_access, access_api.NotInstalled):
            panel.show_not_installed(self.TITLE, message.no_access, self._denied_recheck_s())
        else:
            panel.show_denied(self.TITLE, message.no_access, self._denied_recheck_s())
        self.add_class("-no-access")
        # Hidden is not enough: Textual's auto-focus on resume (after a dialog) takes the first
        # focusable widget even when it is not displayed, and Enter would reach the hidden
        # table. Disabled widgets cannot take the focus.
        for child in self._body():
            child.add_class("view-body")
            child.disabled = True
        self._schedule_next(denied=True)

    def _body(self) -> list[Any]:
        """What compose_body made: hidden while the no-access panel is up (app.tcss). Not the
        widgets Textual gives every screen (toast rack, tooltip): the refusals are toasts."""
        return [child for child in self.children if not isinstance(child, (StatusBar, Banner, NoAccessPanel, Footer))
                and not child.has_class("-textual-system")]

    def _clear_no_access(self) -> None:
        if self.no_access is None:
            return
        self.no_access = None
        self.remove_class("-no-access")
        for child in self._body():
            child.disabled = False
        if self._focus_before_denied is not None and self.focused is None:
            self.set_focus(self._focus_before_denied)
        self._focus_before_denied = None

    def _denied_recheck_s(self) -> float:
        return max(DENIED_RECHECK_S, self.papp.refresh_s)

    def refuse_without_access(self, action: str, *args: Any) -> None:
        """One line for a refused action; a parameterised one (``op('pause')``) is named by the
        binding that carries its parameters."""
        denied = self.no_access
        bound = f"{action}({', '.join(map(repr, args))})" if args else action
        label = next((b.description for b in self._bindings_for(bound)), "") or action.replace("_", " ")
        self.notify(f"{label}: refused, {denied.summary if denied else 'no access'} (see the panel)",
                    severity="error", timeout=6)

    def _bindings_for(self, action: str) -> list[Binding]:
        return [b for b in self.BINDINGS if isinstance(b, Binding) and b.action == action and b.description]

    def on_poll_failed(self, message: PollFailed) -> None:
        message.stop()
        self._polling = False
        if message.lost:
            self.papp.mark_lost(message.error)
        elif message.error != self._last_poll_error:  # the same error again: said once is enough
            self.notify(message.error, title=f"{self.TITLE}: refresh failed", severity="error", timeout=6)
        self._last_poll_error = "" if message.lost else message.error
        self._schedule_next(lost=message.lost)

    def _schedule_next(self, lost: bool = False, denied: bool = False) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if not self.in_sight:
            # covered while this poll ran; no screen event may tell us (a mode switched away
            # from over a dialog suspends the dialog, not us): the next resume polls
            self._stop_watching()
            return
        if self._poll_again and not lost:
            self._poll_again = False
            self.request_poll()
            return
        if self.papp.paused:
            return
        if denied:
            delay = self._denied_recheck_s()
        else:
            delay = self.papp.refresh_s if not lost else min(5.0, max(1.0, self.papp.refresh_s))
        self._timer = self.set_timer(delay, self.request_poll)

    # ---- actions ----------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.WRITE_ACTIONS and self.papp.read_only:
            return False  # not offered in the footer and help; on_key says why when pressed
        if action == "switch_tab":
            from textual.widgets import TabbedContent  # noqa: PLC0415

            return bool(self.query(TabbedContent))  # only tabbed views offer [ and ]
        return True

    def on_key(self, event: events.Key) -> None:
        """In read-only mode a write key is not bound (check_action), so it would do nothing at
        all: say why instead."""
        if not self.papp.read_only or not self.WRITE_ACTIONS:
            return
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.action in self.WRITE_ACTIONS \
                    and event.key in binding.key.split(","):
                event.stop()
                self.refuse_read_only(binding.action)
                return

    def refuse_read_only(self, action: str) -> None:
        """One line for a write key pressed in read-only mode (instead of nothing happening)."""
        label = next((b.description for b in self._bindings_for(action)), "") or action.replace("_", " ")
        self.notify(f"read-only mode: {label} is not allowed (the console was started with --read-only)",
                    severity="warning", timeout=4)

    def act(self, name: str, what: str, fn: Callable[..., Any], *args: Any, write: bool = True,
            summary: str | Callable[[Any], str] = "", then: Callable[[Any], None] | None = None,
            **kw: Any) -> None:
        """Run ``fn(conn, *args)`` in a worker; the result comes back as ActionDone / ActionFailed."""
        if write and self.papp.read_only:
            self.notify(f"read-only mode: {what} is not allowed", severity="error")
            return

        def body() -> None:  # worker thread
            try:
                if write:
                    guard_write(self.papp.settings, what)
                result = self.papp.db.run("action", fn, *args, **kw)
            except ConnectionLost as exc:
                self.post_message(ActionFailed(name, f"{what}: connection lost: {exc}"))
            except (PgttError, psycopg.Error) as exc:
                self.post_message(ActionFailed(name, describe_error(exc)))
            except Exception as exc:  # noqa: BLE001 - shown, not crashing the console
                self.post_message(ActionFailed(name, f"{type(exc).__name__}: {exc}"))
            else:
                text = summary(result) if callable(summary) else (summary or f"{what}: done")
                self.post_message(ActionDone(name, text, (result, then)))

        self.run_worker(body, thread=True, group=f"action-{name}", exit_on_error=False, description=what)

    def engine_act(self, name: str, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
        """``act`` for engine write calls shaped ``fn(conn, settings, *args)`` (guard_write inside)."""
        self.act(name, what, fn, self.papp.settings, *args, **kw)

    def on_action_done(self, message: ActionDone) -> None:
        message.stop()
        result, then = message.result
        self.notify(message.summary, title="done", timeout=4)
        self.papp.last_action = (message.action, "ok", message.summary)
        if then is not None:
            then(result)
        self.request_poll()

    def on_action_failed(self, message: ActionFailed) -> None:
        message.stop()
        self.papp.last_action = (message.action, "failed", message.error)
        self.notify(message.error, title=f"{message.action} failed", severity="error", timeout=10)

    #: the action Enter (a DataTable row selection) triggers on this view
    ENTER_ACTION: ClassVar[str] = "open"

    def on_data_table_row_selected(self, event: Any) -> None:
        event.stop()
        method = getattr(self, f"action_{self.ENTER_ACTION}", None)
        if method is not None:
            method()

    def action_back(self) -> None:
        """Esc: first clears an applied filter (the help says so), then goes back."""
        if self.clear_filter():
            return
        if len(self.app.screen_stack) > 1:
            self.app.pop_screen()

    def action_switch_tab(self, step: int) -> None:
        """[ / ]: the previous / next tab of a tabbed view, keeping the focus in the tables
        (no Tab-Tab-arrow dance through the tab bar)."""
        from textual.widgets import TabbedContent, TabPane  # noqa: PLC0415

        tabs = self.query(TabbedContent)
        if not tabs:
            return
        content = tabs.first()
        panes = [p.id for p in content.query(TabPane) if p.id]
        if not panes:
            return
        at = panes.index(content.active) if content.active in panes else 0
        content.active = panes[(at + step) % len(panes)]
        pane = content.get_pane(content.active)
        focusable = [w for w in pane.query("*") if w.focusable]
        if focusable:
            focusable[0].focus()

    def clear_filter(self) -> bool:
        """Clear this view's filter when one is applied; True if there was one."""
        from pgtt_tui.widgets.common import FilterBar  # noqa: PLC0415

        for bar in self.query(FilterBar):
            if bar.value or bar.has_class("-shown"):
                bar.action_clear()
                return True
        return False

    def help_topic(self) -> str | None:
        """Which part of the view's help page fits what has the focus: the ``help_topic``
        of the focused widget or of the nearest container that has one, else its id; the
        no-access part while the no-access panel is up."""
        if self.no_access is not None:
            return "no-access"
        node = self.focused
        while node is not None and node is not self:
            topic = getattr(node, "help_topic", None)
            if topic:
                return topic
            node = node.parent
        return self.focused.id if self.focused is not None else None

    def help_keys(self) -> list[tuple[str, str]]:
        """(key, description) of the bindings that apply on this view right now: the
        console's own first, the generic ones of Textual's widgets after them."""
        ours, generic = self.help_key_groups()
        return ours + generic

    def help_key_groups(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The keys that apply now, split into the console's own (this view's, its widgets'
        and the app's, in the project's words) and Textual's generic widget keys ("Cursor
        up", "Page left", "Focus previous"), which the help lists last."""
        ours: list[tuple[str, str]] = []
        generic: list[tuple[str, str]] = []
        seen: set[str] = set()
        for key, active in self.active_bindings.items():
            binding = active.binding
            if not binding.description or binding.action in seen or not active.enabled:
                continue
            seen.add(binding.action)
            entry = (binding.key_display or self.app.get_key_display(binding), binding.description)
            (ours if _own_binding(active.node, binding) else generic).append(entry)
        return ours, generic
