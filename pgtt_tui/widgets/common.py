"""Small shared widgets: the status bar, the stale banner, the no-access panel, the filter bar, a
vim-keyed table."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.content import Content
from textual.widgets import Checkbox, DataTable, Input, Label, Static
from textual.widgets.data_table import ColumnKey

from engine.safetext import is_visible, visible
from pgtt_tui.widgets.format import escape, state_cell


def safe_cell(value: Any) -> Any:
    """A table cell as shown: data never goes through markup (a plain string becomes Text) and
    control characters are made visible (engine.safetext.visible), also in ready-made Text."""
    if isinstance(value, str):
        return Text(visible(value, newlines=False), no_wrap=True, overflow="ellipsis")
    if isinstance(value, Text) and not is_visible(value.plain, newlines=False):
        return Text(visible(value.plain, newlines=False), style=value.style, no_wrap=True, overflow="ellipsis")
    return value


class StatusBar(Static):
    """Top line: where we are connected, as whom, mode, refresh, last good poll."""

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $foreground; padding: 0 1; }
    """

    where = reactive("connecting…")
    role = reactive("")
    version = reactive("")
    read_only = reactive(False)
    refresh_s = reactive(2.0)
    last_ok = reactive("")
    paused = reactive(False)
    stale = reactive(False)
    view = reactive("")
    demo = reactive(False)

    def render(self) -> str:
        # (priority, markup, plain length): when the line is too wide for the terminal the
        # least important parts go first, so 80 columns still show view, place, mode and age
        parts: list[tuple[int, str, str]] = [(0, f"[b]pgtt ▸ {escape(self.view)}[/b]", f"pgtt ▸ {self.view}"),
                                             (1, escape(self.where), self.where)]
        if self.role:
            parts.append((4, escape(self.role), self.role))
        if self.version:
            parts.append((6, f"PG {escape(self.version)}", f"PG {self.version}"))
        if self.read_only:
            parts.append((0, "[reverse $warning] READ-ONLY [/]", " READ-ONLY "))
        if self.demo:
            parts.append((5, "[$accent]DEMO[/]", "DEMO"))
        refresh = "‖ PAUSED" if self.paused else f"⟳ {self.refresh_s:g}s"
        parts.append((2, refresh, refresh))
        if self.last_ok:
            stale = "STALE " if self.stale else ""
            parts.append((1 if self.stale else 3, f"{'[$error]STALE[/] ' if self.stale else ''}ok {self.last_ok}",
                          f"{stale}ok {self.last_ok}"))
        width = (self.size.width or 200) - 2
        sep = " · "
        while len(parts) > 1 and sum(len(p[2]) for p in parts) + len(sep) * (len(parts) - 1) > width:
            drop = max(range(len(parts)), key=lambda i: (parts[i][0], i))
            parts.pop(drop)
        return sep.join(p[1] for p in parts)


class Banner(Static):
    """Shown while the database is unreachable; the views keep their last data, marked stale."""

    DEFAULT_CSS = """
    Banner { height: auto; display: none; background: $error 30%; color: $foreground; padding: 0 1; }
    Banner.-shown { display: block; }
    """

    def show_error(self, text: str, since: str, *, ever_connected: bool = True) -> None:
        if ever_connected:
            self.update(f"[b]✗ connection lost[/b] (since {escape(since)}): {escape(text)} — showing the last "
                        f"data (stale); retrying by itself")
        else:  # there is no "last data": say that nothing was ever read
            self.update(f"[b]✗ cannot connect[/b] (trying since {escape(since)}): {escape(text)} — nothing has "
                        f"been read yet; retrying by itself")
        self.add_class("-shown")

    def clear(self) -> None:
        self.remove_class("-shown")


class NoAccessPanel(Static):
    """Stands in place of a view's tables while this role may not read what the view shows
    (app.tcss: ``.-no-access``): what is not readable, for which role, and the grant."""

    DEFAULT_CSS = """
    NoAccessPanel { display: none; height: 1fr; border: round $warning; border-title-color: $warning;
                    padding: 1 2; }
    """

    def show_not_installed(self, title: str, missing: Any, recheck_s: float) -> None:
        """``missing`` is an engine.access.NotInstalled: the module is not in this database."""
        self.border_title = f"{title}: not installed"
        self.update("\n".join([f"[$warning]? not installed[/]: {escape(missing.message)}", "",
                                f"{escape(title)} shows the {escape(missing.module)} module, which this database "
                                "does not have.",
                                f"[$text-muted]Checked again every {recheck_s:g} s · r: check now[/]"]))

    def show_denied(self, title: str, denied: Any, recheck_s: float) -> None:
        """``denied`` is an engine.access.NoAccess."""
        self.border_title = f"{title}: no access"
        lines = [f"[$warning]? no access[/] for role [b]{escape(denied.role)}[/b] to {escape(denied.label)}", "",
                 f"{escape(title)} cannot be shown: the role lacks {escape(' and '.join(denied.missing))}.",
                 "An administrator can grant read access with:",
                 *(f"  [b]{escape(grant)}[/b]" for grant in denied.grants), "",
                 "Actions here stay refused until then (changes need write grants too).",
                 f"[$text-muted]Checked again every {recheck_s:g} s · r: check now[/]"]
        self.update("\n".join(lines))


class FilterBar(Horizontal):
    """``/`` opens it; typing filters the list as you type; Enter keeps it; Esc clears it."""

    DEFAULT_CSS = """
    FilterBar { height: 1; display: none; background: $boost; }
    FilterBar.-shown { display: block; }
    FilterBar > Label { width: auto; padding: 0 1; color: $text-muted; }
    FilterBar > Input { border: none; height: 1; padding: 0; background: $boost; width: 1fr; }
    FilterBar > Input:focus { border: none; }
    """

    class Changed(Message):
        def __init__(self, bar: FilterBar, value: str, final: bool) -> None:
            super().__init__()
            self.bar = bar
            self.value = value
            self.final = final

        @property
        def control(self) -> FilterBar:
            return self.bar

    BINDINGS = [Binding("escape", "clear", "clear filter", show=True)]

    def __init__(self, hint: str = "filter", **kw: Any) -> None:
        super().__init__(**kw)
        self.hint = hint

    def compose(self):
        yield Label("/")
        yield Input(placeholder=self.hint, id="filter-input", select_on_focus=False)

    @property
    def value(self) -> str:
        return self.query_one(Input).value

    def open(self) -> None:
        self.add_class("-shown")
        self.query_one(Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self, event.value, final=False))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Changed(self, event.value, final=True))
        if not event.value:
            self.remove_class("-shown")
        self.screen.focus_next()

    def action_clear(self) -> None:
        changed = bool(self.query_one(Input).value)
        self.query_one(Input).value = ""
        self.remove_class("-shown")
        if changed:
            self.post_message(self.Changed(self, "", final=True))
        self.screen.set_focus(None)
        self.screen.focus_next()


class VimTable(DataTable):
    """A row-cursor DataTable with j/k, g/G, live keyed row updates and columns that fit.

    Columns are ``(label, width)`` with an optional third item: ``"flex"`` (this column takes
    the spare width, at least ``width``) or an int (the column is shown only when the table
    is at least that wide). So one table reads well at 120 and at 80 columns: narrow
    terminals drop the least useful columns instead of scrolling sideways.
    """

    BINDINGS = [
        Binding("j", "cursor_down", "down", show=False),
        Binding("k", "cursor_up", "up", show=False),
        Binding("g", "first", "top", show=False),
        Binding("G", "last", "bottom", show=False),
        Binding("O", "cycle_sort", "sort", show=False),
        Binding("v", "view_row", "view row in full", show=False),
    ]
    #: whether ``O`` may reorder the rows (a server-paged list keeps the server's order)
    SORTABLE = True

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("cursor_type", "row")
        kw.setdefault("zebra_stripes", False)
        super().__init__(**kw)
        self._spec: list[tuple[str, int, Any]] = []
        self._layout: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._all_rows: list[tuple[str, tuple]] = []
        self._given_rows: list[tuple[str, tuple]] = []
        #: (column index in the spec, descending) or None for the view's own order
        self.sort_by: tuple[int, bool] | None = None

    def add_fixed(self, *columns: tuple) -> None:
        """Columns with fixed widths: stable layout under live updates (and in snapshots)."""
        for column in columns:
            label, width, *rest = column
            self._spec.append((label, width, rest[0] if rest else None))
        self._apply_layout(self.size.width or 0)

    def _compute_layout(self, width: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        pad = 2 * self.cell_padding
        shown = tuple(i for i, (_, _, flag) in enumerate(self._spec)
                      if not isinstance(flag, int) or not width or width >= flag)
        widths = [self._spec[i][1] for i in shown]
        if width:
            spare = width - int(self.styles.scrollbar_size_vertical or 0) - sum(w + pad for w in widths)
            for n, i in enumerate(shown):
                if self._spec[i][2] == "flex":
                    widths[n] = max(widths[n], widths[n] + spare)
                    break
        return shown, tuple(widths)

    def _apply_layout(self, width: int) -> None:
        layout = self._compute_layout(width)
        if layout == self._layout:
            return
        first = self._layout is None
        self._layout = layout
        selected = None if first else self.selected_key()
        self.clear(columns=True)
        for i, w in zip(*layout):
            label = self._spec[i][0]
            self.add_column(self._label(i), width=w, key=label)
        if self._all_rows:
            for key, cells in self._all_rows:
                self.add_row(*self._project(cells), key=key)
            if selected is not None:
                try:
                    self.move_cursor(row=self.get_row_index(selected))
                except Exception:  # noqa: BLE001 - the row is gone
                    pass

    # ---- v: the selected row in full (a narrow terminal cuts cells with "…") -------------------
    def row_text(self, key: str) -> str:
        cells = dict(self._all_rows).get(key) or ()
        labels = [spec[0] for spec in self._spec] or [str(c.label) for c in self.ordered_columns]
        out = []
        for label, cell in zip(labels, cells):
            text = cell.plain if isinstance(cell, Text) else str(cell)
            out.append(f"{label}: {text}")
        return "\n".join(out)

    def action_view_row(self) -> None:
        """The whole row, every column and every character, in a scrollable dialog; a screen
        with a richer view of its rows (the plan walker's steps) provides ``view_row``."""
        key = self.selected_key()
        if key is None:
            return
        viewer = getattr(self.screen, "view_row", None)
        if viewer is not None and viewer(self, key):
            return
        from pgtt_tui.screens.modals import TextScreen  # noqa: PLC0415 - screens import widgets

        self.app.push_screen(TextScreen(f"{self.border_title or self.id or 'row'}: {key}", self.row_text(key)))

    # ---- sorting: O cycles column and direction; kept across refreshes ------------------------
    def _label(self, index: int) -> str:
        label = self._spec[index][0]
        if self.sort_by is not None and self.sort_by[0] == index:
            return f"{label} {'▼' if self.sort_by[1] else '▲'}"
        return label

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cycle_sort":
            return self.SORTABLE and bool(self._spec)
        return True

    def action_cycle_sort(self) -> None:
        """Next state: column 1 ascending, column 1 descending, column 2 ascending, … and
        finally the view's own order again."""
        shown = list(self._layout[0]) if self._layout else list(range(len(self._spec)))
        if not shown:
            return
        if self.sort_by is None:
            self.sort_by = (shown[0], False)
        elif not self.sort_by[1]:
            self.sort_by = (self.sort_by[0], True)
        else:
            later = [i for i in shown if i > self.sort_by[0]]
            self.sort_by = (later[0], False) if later else None
        for i in (self._layout[0] if self._layout else ()):
            self.columns[ColumnKey(self._spec[i][0])].label = Text(self._label(i))
        self.sync_rows(self._given_rows)
        self.refresh()
        what = "the view's own order" if self.sort_by is None else \
            f"{self._spec[self.sort_by[0]][0]} {'descending' if self.sort_by[1] else 'ascending'}"
        self.notify(f"sorted by {what}", timeout=2)

    def _sorted(self, rows: list[tuple[str, tuple]]) -> list[tuple[str, tuple]]:
        if self.sort_by is None:
            return rows
        index, descending = self.sort_by

        def key(row: tuple[str, tuple]) -> tuple:
            cells = row[1]
            value = cells[index] if index < len(cells) else ""
            text = value.plain if isinstance(value, Text) else str(value)
            try:
                return (0, float(text.replace(",", "")), "")
            except ValueError:
                return (1, 0.0, text.lower())
        return sorted(rows, key=key, reverse=descending)

    def on_resize(self, event: Any) -> None:
        if self._spec:
            self._apply_layout(event.size.width)

    def _project(self, cells: tuple) -> tuple:
        if not self._spec or self._layout is None:
            return cells
        return tuple(cells[i] if i < len(cells) else "" for i in self._layout[0])

    def add_row(self, *cells: Any, **kw: Any) -> Any:
        """Every row goes through safe_cell, whoever adds it."""
        return super().add_row(*(safe_cell(c) for c in cells), **kw)

    def update_cell(self, row_key: Any, column_key: Any, value: Any, **kw: Any) -> None:
        super().update_cell(row_key, column_key, safe_cell(value), **kw)

    def state(self, state: str | None) -> Text:
        return state_cell(state, self.app.theme_variables)

    def action_first(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

    def selected_key(self) -> str | None:
        if not self.row_count or self.cursor_row < 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - cursor outside the rows
            return None

    def sync_rows(self, rows: list[tuple[str, tuple]], keep_order: bool = True) -> None:
        """Make the table show exactly ``rows`` ([(key, cells)]): update changed cells by key,
        add new rows, remove gone ones; the cursor stays on the same key if it survives."""
        selected = self.selected_key()
        rows = [(key, tuple(safe_cell(c) for c in cells)) for key, cells in rows]
        self._given_rows = rows  # the view's own order, for when sorting is turned off
        rows = self._sorted(rows)
        self._all_rows = rows
        rows = [(key, self._project(cells)) for key, cells in rows]
        wanted = {key for key, _ in rows}
        columns = list(self.columns)
        order_now = [rk.value for rk in self.rows]
        existing = set(order_now)
        order_new = [key for key, _ in rows]
        survivors_now = [k for k in order_now if k in wanted]
        survivors_new = [k for k in order_new if k in existing]
        appended = [k for k in order_new if k not in existing]
        if survivors_now != survivors_new or order_new != survivors_new + appended:
            self.clear()  # the order changed: rebuild (cheap at page sizes)
            existing = set()
        for key in existing - wanted:
            self.remove_row(key)
        for key, cells in rows:
            if key in existing:
                for col, value in zip(columns, cells):
                    if self.get_cell(key, col) != value:
                        self.update_cell(key, col, value)
            else:
                self.add_row(*cells, key=key)
        if selected is not None and selected in wanted:
            self.move_cursor(row=self.get_row_index(selected))


class TextCheckbox(Checkbox):
    """A checkbox whose state reads as text, ``[x]`` or ``[ ]``: Textual's own shows the same
    ``X`` either way and tells on from off by colour only, which a plain capture, NO_COLOR
    and colour-blind operators cannot see."""

    @property
    def _button(self) -> Content:
        return Content.styled(f"[{'x' if self.value else ' '}]", self.get_visual_style("toggle--button"))
