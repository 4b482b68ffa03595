"""Small modals for the queue and cascade views: ask for a text, pick one of a list.

Both are single-key friendly (Enter accepts, Esc cancels) so they work from a phone's
SSH client; both dismiss with a typed result (``str | None``).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from pgtt_tui.widgets.format import escape


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line of text; Enter returns it (stripped), Esc returns None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, hint: str = "", *, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.hint = hint
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt", classes="dialog"):
            yield Label(f"[b]{escape(self.title_text)}[/b]")
            if self.hint:
                yield Static(escape(self.hint), classes="prompt-hint")
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static("Enter: ok · Esc: cancel", classes="prompt-keys")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        if not value:
            self.notify("type a value, or Esc to cancel", severity="warning")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickScreen(ModalScreen[str | None]):
    """Pick one of ``choices`` ([(value, label)]) with j/k or arrows and Enter; Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("j", "down", show=False),
                Binding("k", "up", show=False)]

    def __init__(self, title: str, choices: list[tuple[str, str]], hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.choices = choices
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="pick", classes="dialog"):
            yield Label(f"[b]{escape(self.title_text)}[/b]")
            if self.hint:
                yield Static(escape(self.hint), classes="prompt-hint")
            yield OptionList(*[Option(escape(label), id=value) for value, label in self.choices], id="pick-list")
            yield Static("j/k: move · Enter: choose · Esc: cancel", classes="prompt-keys")

    def on_mount(self) -> None:
        option_list = self.query_one(OptionList)
        option_list.focus()
        if self.choices:
            option_list.highlighted = 0

    def action_down(self) -> None:
        self.query_one(OptionList).action_cursor_down()

    def action_up(self) -> None:
        self.query_one(OptionList).action_cursor_up()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
