"""The cascade topology as a Tree: root → branches → leaves, one line per node.

Every state is text + glyph first (``ROOT``, ``‖ paused``, ``✗ UNREACHABLE``, ``⚠ was branch``)
and colour (from the current theme's variables) second, so it reads the same with
``NO_COLOR`` or an ANSI theme.  Updates are keyed by node name: when nobody moved, only
the changed labels are replaced; when the shape changed, the tree is rebuilt and the
cursor stays on the same node.

:func:`diff_status` compares two polls and returns what should be highlighted.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from engine.cascade.status import CascadeStatus, NodeStatus
from pgtt_tui.widgets.format import safe

ROLE_WORD = {"root": "ROOT", "branch": "branch", "leaf": "leaf"}


@dataclass
class Change:
    """Something about a node that changed between two polls (shown until it ages out)."""

    node: str
    text: str  # e.g. "⚠ role: branch → root", "✗ stopped answering"
    polls_left: int = 10


def diff_status(old: CascadeStatus | None, new: CascadeStatus) -> list[Change]:
    """Role changes, nodes that stopped (or started) answering, provider moves, dead tags."""
    if old is None:
        return []
    changes: list[Change] = []
    for name, n in new.nodes.items():
        before = old.nodes.get(name)
        if before is None:
            changes.append(Change(name, "✚ new member"))
            continue
        if before.reachable and not n.reachable:
            changes.append(Change(name, "✗ stopped answering"))
        elif not before.reachable and n.reachable:
            changes.append(Change(name, "✓ answers again"))
        if n.reachable and before.node_type and n.node_type and before.node_type != n.node_type:
            changes.append(Change(name, f"⚠ role: {before.node_type} → {n.node_type}"))
        elif n.reachable and before.reachable and before.provider != n.provider and n.node_type != "root":
            changes.append(Change(name, f"⚠ provider: {before.provider} → {n.provider}"))
        if before.dead != n.dead:
            changes.append(Change(name, "✗ tagged dead" if n.dead else "✓ tagged alive"))
    for name in old.nodes:
        if name not in new.nodes:
            changes.append(Change(name, "✖ left the cascade"))
    return changes


def worker_state(n: NodeStatus) -> tuple[str, str]:
    """(text, theme colour name) of a node's worker."""
    if not n.reachable:
        return "✗ UNREACHABLE", "error"
    if n.node_type is None:
        return "? not set up", "warning"
    if n.cur_error:
        return "✗ error", "error"
    if n.paused:
        return "‖ paused", "warning"
    return "▶ running", "success"


def node_line(n: NodeStatus, changes: list[Change], root_known: bool = True) -> list[tuple[str, str | None]]:
    """The node's line as (text, colour) parts."""
    parts: list[tuple[str, str | None]] = [(n.name, "bold")]
    if n.dead:
        parts.append((" ✗DEAD", "error"))
    if n.reachable and n.node_type:
        parts.append((f" {ROLE_WORD.get(n.node_type, n.node_type)}", "accent" if n.node_type == "root" else None))
    state, colour = worker_state(n)
    parts.append((f" {state}", colour))
    if n.reachable and n.node_type:
        parts.append((f" tick {n.last_tick if n.last_tick is not None else '-'}", None))
        if n.node_type != "root":
            behind = "?" if n.lag_ticks is None or not root_known else str(n.lag_ticks)
            parts.append((f" -{behind}", "warning" if (n.lag_ticks or 0) > 0 else None))
        if n.node_type != "leaf":
            parts.append((f" wm {_v(n.local_watermark)}/{_v(n.global_watermark)}", "muted"))
    for c in changes:
        parts.append((f"  {c.text}", "warning" if c.text.startswith(("⚠", "✚", "✖")) else
                      "error" if c.text.startswith("✗") else "success"))
    return parts


def _v(value: object) -> str:
    return "-" if value is None else str(value)


class TopologyTree(Tree[str]):
    """The cascade tree; ``data`` of each TreeNode is the node name (None on the queue line)."""

    BINDINGS = [
        Binding("j", "cursor_down", "down", show=False),
        Binding("k", "cursor_up", "up", show=False),
        Binding("g", "scroll_home", "top", show=False),
        Binding("G", "scroll_end", "bottom", show=False),
    ]

    DEFAULT_CSS = """
    TopologyTree { background: $surface; }
    """

    def __init__(self, **kw) -> None:
        super().__init__("cascade", **kw)
        self.show_root = True
        self.guide_depth = 3
        self.status: CascadeStatus | None = None
        self._shape: tuple = ()
        self._by_name: dict[str, TreeNode[str]] = {}

    # ---- rendering helpers ------------------------------------------------------------
    def _style(self, colour: str | None) -> Style:
        if colour is None:
            return Style()
        if colour == "bold":
            return Style(bold=True)
        variables = self.app.get_css_variables()
        value = variables.get("text-muted" if colour == "muted" else colour)
        if value is None:
            return Style()
        try:
            return Style(color=value if not value.startswith("rgba") else None, bold=colour == "error")
        except Exception:  # noqa: BLE001 - a theme value Rich cannot parse: plain text
            return Style()

    def label_for(self, n: NodeStatus, changes: list[Change], root_known: bool) -> Text:
        text = Text()
        for part, colour in node_line(n, changes, root_known):
            text.append(safe(part), self._style(colour))
        return text

    @staticmethod
    def shape_of(status: CascadeStatus) -> tuple:
        """Who hangs under whom (and in which order); a change means rebuilding."""
        out = []
        seen: set[str] = set()

        def walk(name: str, depth: int) -> None:
            if name in seen or name not in status.nodes:
                return
            seen.add(name)
            out.append((depth, name))
            for child in sorted(status.nodes[name].children):
                walk(child, depth + 1)

        if status.root:
            walk(status.root, 0)
        for name in sorted(status.nodes):
            if name not in seen:
                walk(name, 0)
        return tuple(out)

    # ---- update -----------------------------------------------------------------------
    def show_status(self, status: CascadeStatus, changes: dict[str, list[Change]] | None = None) -> None:
        changes = changes or {}
        root_known = status.root is not None
        root_line = Text()
        root_line.append(f"queue {safe(status.queue)}", Style(bold=True))
        if not root_known:
            root_line.append("  ✗ no live root", self._style("error"))
        shape = self.shape_of(status)
        selected = self.cursor_node.data if self.cursor_node is not None else None
        if shape != self._shape:
            self.clear()
            self._by_name = {}
            parents: list[TreeNode[str]] = [self.root]
            for depth, name in shape:
                parents = parents[: depth + 1]
                parent = parents[-1]
                node = parent.add(self.label_for(status.nodes[name], changes.get(name, []), root_known),
                                  data=name, expand=True, allow_expand=False)
                self._by_name[name] = node
                parents.append(node)
            self._shape = shape
            self.root.expand()
            want = selected if selected in self._by_name else status.root
            if want in self._by_name:
                self.call_after_refresh(self.select_name, want)
        else:
            for name, node in self._by_name.items():
                label = self.label_for(status.nodes[name], changes.get(name, []), root_known)
                if node.label != label:
                    node.set_label(label)
        self.root.set_label(root_line)
        self.status = status

    def selected_name(self) -> str | None:
        node = self.cursor_node
        return node.data if node is not None else None

    def select_name(self, name: str) -> None:
        if name in self._by_name:
            self.move_cursor(self._by_name[name])

    def node_of(self, name: str) -> TreeNode[str]:
        """The tree line of node ``name`` (KeyError if it is not shown)."""
        return self._by_name[name]
