"""Modal screens: confirmation (returns bool), help for the current view, text viewer."""

from __future__ import annotations

import re
from importlib import resources

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Markdown, Static

from pgtt_tui.widgets.format import escape


class ConfirmScreen(ModalScreen[bool]):
    """Asks before a destructive action; names the target and the consequence.

    With ``type_to_confirm`` the operator must type that text (e.g. the chain name)
    before "yes" is accepted.
    """

    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("n", "cancel", "no", show=False),
                Binding("y", "confirm", "yes", show=False)]

    def __init__(self, title: str, body: str, *, type_to_confirm: str | None = None, danger: bool = True) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.type_to_confirm = type_to_confirm
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm", classes="dialog -danger" if self.danger else "dialog"):
            yield Label(f"[b]{escape(self.title_text)}[/b]", id="confirm-title")
            yield Static(escape(self.body), id="confirm-body")
            if self.type_to_confirm is not None:
                yield Label(f"type [b]{escape(self.type_to_confirm)}[/b] to confirm:")
                yield Input(id="confirm-typed", placeholder=self.type_to_confirm)
            with Horizontal(classes="buttons"):
                yield Button("yes (y)", id="yes", variant="error" if self.danger else "primary")
                yield Button("no (n / esc)", id="no")

    def on_mount(self) -> None:
        if self.type_to_confirm is not None:
            self.query_one("#confirm-typed", Input).focus()
        else:
            self.query_one("#no", Button).focus()

    def _typed_ok(self) -> bool:
        if self.type_to_confirm is None:
            return True
        typed = self.query_one("#confirm-typed", Input).value
        if typed != self.type_to_confirm:
            self.notify(f"type {self.type_to_confirm!r} exactly to confirm", severity="warning")
            return False
        return True

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "yes":
            self.action_confirm()
        else:
            self.dismiss(False)

    def action_confirm(self) -> None:
        if self._typed_ok():
            self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


def help_text(view: str, focus: str | None = None) -> str:
    """The view's help page. A page may have parts for its widgets, each starting with a
    ``<!-- focus: NAME -->`` line; with ``focus`` the part of the focused widget comes right
    after the page's introduction and the other parts follow, else the page stays in order."""
    try:
        text = resources.files("pgtt_tui.help").joinpath(f"{view}.md").read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        return f"# {view}\n\n(no help written for this view yet)"
    intro, parts = split_focus(text)
    if focus in parts:
        here = parts.pop(focus)
        here = here.replace("## ", "## ▶ Here: ", 1)
        return "\n\n".join([intro.rstrip(), here.strip(), *(p.strip() for p in parts.values())])
    return text


def split_focus(text: str) -> tuple[str, dict[str, str]]:
    """(introduction, {focus name: its part}) of a help page."""
    marker = re.compile(r"^<!-- focus: ([\w-]+) -->\s*$", re.M)
    pieces = marker.split(text)
    return pieces[0], {pieces[i]: pieces[i + 1] for i in range(1, len(pieces) - 1, 2)}


class HelpScreen(ModalScreen[None]):
    """``?``: the help page of the current view, plus the keys that apply right now."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "close")]

    def __init__(self, view: str, keys: list[tuple[str, str]], focus: str | None = None,
                 generic: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.view = view
        self.keys = keys  # this view's keys, in the project's words: listed first
        self.generic = generic or []  # Textual's table and scrolling keys: listed last
        self.focus_topic = focus

    def compose(self) -> ComposeResult:
        def table(keys: list[tuple[str, str]]) -> str:
            return "| key | action |\n|---|---|\n" + "\n".join(f"| `{k}` | {d} |" for k, d in keys)

        parts = ["*Esc, q or ? closes this help.*"]
        if self.keys:
            parts.append("## Keys here\n\n" + table(self.keys))
        parts.append(help_text(self.view, self.focus_topic))
        if self.generic:
            parts.append("## Other keys (tables, scrolling)\n\n" + table(self.generic))
        with VerticalScroll(id="help", classes="dialog"):
            yield Markdown("\n\n".join(parts))

    def action_close(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[None]):
    """Shows a long text (task output, a log line) in full; ``y`` copies it (OSC 52)."""

    BINDINGS = [Binding("escape,q", "close", "close"), Binding("y", "copy", "copy")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="textview", classes="dialog"):
            yield Label(f"[b]{escape(self.title_text)}[/b]")
            yield Static(escape(self.text), markup=True)

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.text)
        self.notify("copied (OSC 52)")

    def action_close(self) -> None:
        self.dismiss(None)
