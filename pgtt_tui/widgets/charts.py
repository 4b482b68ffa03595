"""Charts for the console (issue 18): our own small widgets on Textual ``Content``.

Why not Textual's ``Sparkline`` or textual-plotext: a Sparkline has one series and tells
values apart by colour only, and plotext draws with colour too (and is a dependency that
redraws a whole figure each time). We need failures told apart by *shape* (NO_COLOR, 16
colours), several marks per column (failed, skipped, running, overlap) and charts that
shrink to 80×24 while their numbers stay; a few hundred lines of cells do that.

Every chart is drawn from rows of cells ``(glyph, style)``: the style is a theme variable
(``$success``, ``$error``, ...) that only reinforces the glyph:

- bars: ``█`` and the eighth blocks ``▁▂▃▄▅▆▇`` for succeeded, ``▒`` for the failed part;
- marker row under the bars: ``✗`` failed, ``○`` skipped (``max_instances``), ``▶`` running;
- timeline: ``━`` one run, ``2``–``9`` runs overlapping (``+`` more), ``✗`` a failed run's end,
  ``○`` a skip, ``▶`` running now, ``·`` idle.

Data comes in through ``add_*`` methods that merge the newest buckets / runs into what the
chart holds (engine.views.trends merge helpers), and a column already drawn is reused from a
cache as long as its data and the scale stay the same, so a refresh draws the new column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from textual.content import Content
from textual.widget import Widget

from engine.views import trends
from pgtt_tui.widgets.format import clip, escape, fmt_duration

EIGHTHS = " ▁▂▃▄▅▆▇█"
OK, FAIL, SKIP, RUN, MUTED, WARN = "$success", "$error", "$warning", "$accent", "$text-muted", "$warning"

Cell = tuple[str, str]  # glyph, style ("" for the default)


def to_markup(cells: list[Cell]) -> str:
    """One row of cells as content markup, runs of one style in one tag."""
    out: list[str] = []
    i = 0
    while i < len(cells):
        style = cells[i][1]
        j = i
        while j < len(cells) and cells[j][1] == style:
            j += 1
        text = escape("".join(c[0] for c in cells[i:j]))
        out.append(f"[{style}]{text}[/]" if style else text)
        i = j
    return "".join(out)


def bar_column(height: int, parts: list[tuple[float, str, str]], scale: float) -> list[Cell]:
    """A column of ``height`` cells, bottom first, stacking ``parts`` (value, full glyph,
    style) in eighths of a cell. A cell takes the glyph of the part that fills most of it;
    the top cell of a ``█`` part is an eighth block. A non-zero part gets at least one
    eighth, so one failure among many runs is still drawn."""
    units_total = height * 8
    spans: list[tuple[int, int, str, str]] = []
    pos = 0
    for value, glyph, style in parts:
        if value <= 0 or scale <= 0:
            continue
        end = min(units_total, pos + max(1, round(value / scale * units_total)))
        spans.append((pos, end, glyph, style))
        pos = end
    col: list[Cell] = []
    for cell in range(height):
        lo, hi = cell * 8, cell * 8 + 8
        best, best_fill, filled = None, 0, 0
        for a, b, glyph, style in spans:
            fill = max(0, min(b, hi) - max(a, lo))
            filled += fill
            if fill > best_fill:
                best, best_fill = (glyph, style), fill
        if best is None:
            col.append((" ", ""))
        elif filled >= 8 or best[0] != "█":
            col.append(best)
        else:
            col.append((EIGHTHS[filled], best[1]))
    return col


def spark_cells(values: list[float | None], top: float) -> list[Cell]:
    """One row of eighth blocks (None: no data, drawn as a muted dot)."""
    out: list[Cell] = []
    for v in values:
        if v is None:
            out.append(("·", MUTED))
        elif top <= 0 or v <= 0:
            out.append(("▁" if v == 0 and top > 0 else " ", MUTED))
        else:
            out.append((EIGHTHS[max(1, min(8, round(v / top * 8)))], ""))
    return out


def nice_top(value: float) -> float:
    """The scale's top: the value rounded up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 5, 10):
        if value <= m * power:
            return float(m * power)
    return float(10 * power)


def fmt_s(seconds: float | None) -> str:
    return "–" if seconds is None else fmt_duration(seconds)


class _Chart(Widget):
    DEFAULT_CSS = """
    _Chart { height: 1fr; min-height: 3; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._cache: dict[Any, list[Cell]] = {}
        self.renders = 0  # columns drawn (not from the cache): bench and tests read it

    def _column(self, key: Any, make: Any) -> list[Cell]:
        col = self._cache.get(key)
        if col is None:
            col = make()
            self._cache[key] = col
            self.renders += 1
            if len(self._cache) > 4096:  # scales change: keep the cache bounded
                self._cache.clear()
        return col

    #: numbers go beside the chart when this much room is left of the width, else on top
    SIDE_MIN = 30

    def _with_numbers(self, numbers: list[str], chart: list[list[Cell]], chart_w: int) -> Content:
        """The chart with its numbers beside it (wide) or above it (narrow: the chart gets
        the rows that are left, and folds away before the numbers do)."""
        width, height = self.size.width, self.size.height
        if chart and width - chart_w - 2 >= self.SIDE_MIN:
            rows: list[list[Cell] | str] = []
            for i in range(max(len(chart), min(len(numbers), height))):
                line = to_markup(chart[i]) if i < len(chart) else " " * chart_w
                pad = chart_w - sum(len(c[0]) for c in chart[i]) if i < len(chart) else 0
                rows.append(line + " " * (pad + 2) + (numbers[i] if i < len(numbers) else ""))
            return self._rows_to_content(rows[:height])
        return self._rows_to_content((list(numbers) + list(chart))[:max(1, height)])

    def _rows_to_content(self, rows: list[list[Cell] | str]) -> Content:
        lines = [r if isinstance(r, str) else to_markup(r) for r in rows]
        return Content.from_markup("\n".join(lines))


class ActivityChart(_Chart):
    """Overview: runs that ended per minute (succeeded █ / failed ▒ stacked, ✗ / ○ marks)
    and slot use (timetable runs in progress / slots) over the last hour; numbers first, so
    at 80×24 the chart folds to them."""

    DEFAULT_CSS = """
    ActivityChart { height: 1fr; min-height: 2; }
    """

    def __init__(self, keep: int = trends.DEFAULT_WINDOW_MIN, **kw: Any) -> None:
        super().__init__(**kw)
        self.keep = keep
        self.buckets: list[dict[str, Any]] = []

    def add_buckets(self, new: list[dict[str, Any]]) -> None:
        self.buckets = trends.merge_buckets(self.buckets, new, keep=self.keep)
        self.refresh()

    @property
    def since(self) -> datetime | None:
        """Where the next read starts: the newest bucket (it was still filling)."""
        return self.buckets[-1]["at"] if self.buckets else None

    def numbers(self, side: bool) -> list[str]:
        """The chart's numbers: short lines beside it, or one line above it."""
        b = self.buckets
        ok, failed, skipped = (sum(x[k] for x in b) for k in ("ok", "failed", "skipped"))
        peak = max((x["ok"] + x["failed"] + x["skipped"] for x in b), default=0)
        busy = [x["busy"] for x in b if x.get("busy") is not None]
        cap = b[-1].get("capacity") if b else None
        slots = f"{busy[-1]:.1f}/{cap if cap is not None else '?'}" if busy else ""
        if side:
            lines = [f"[b]{ok + failed + skipped}[/b] runs in {len(b)} min", f"[{OK}]█ {ok} succeeded[/]",
                     f"[{FAIL}]▒ ✗ {failed} failed[/]", f"[{SKIP}]░ ○ {skipped} skipped[/]", f"peak {peak}/min"]
            if busy:
                lines += [f"slots {slots} now", f"      peak {max(busy):.1f}"]
            return lines
        text = (f"[b]{ok + failed + skipped}[/b] runs/{len(b)}m [{OK}]█ {ok}[/] [{FAIL}]▒✗ {failed}[/]"
                f" [{SKIP}]○ {skipped}[/] peak {peak}/min")
        if busy:
            text += f" · slots {slots} (peak {max(busy):.1f})"
        return [text]

    def render(self) -> Content:
        width, height = self.size.width, self.size.height
        gutter = 6
        cols = min(len(self.buckets), max(0, width - gutter))
        side = width - gutter - cols - 2 >= self.SIDE_MIN
        numbers = self.numbers(side)
        room = height if side else height - len(numbers)
        if room < 3 or cols < 10:
            return self._with_numbers(self.numbers(False), [], 0)
        shown = self.buckets[-cols:]
        has_slots = any(x.get("busy") is not None for x in shown)
        axis = room >= 6
        bar_h = max(1, room - 1 - (1 if has_slots else 0) - (1 if axis else 0))
        top = nice_top(max((x["ok"] + x["failed"] + x["skipped"] for x in shown), default=1))
        columns = [self._column(("a", bar_h, top, x["ok"], x["failed"], x["skipped"]), lambda x=x: bar_column(
            bar_h, [(x["failed"], "▒", FAIL), (x["ok"], "█", OK), (x["skipped"], "░", SKIP)], top)) for x in shown]
        rows: list[list[Cell]] = []
        for level in range(bar_h - 1, -1, -1):
            label = f"{top:g}" if level == bar_h - 1 else ("0" if level == 0 and bar_h > 1 else "")
            rows.append([(f"{label:>{gutter - 1}}┤", MUTED)] + [c[level] for c in columns])
        marks = [("✗", FAIL) if x["failed"] else ("○", SKIP) if x["skipped"] else ("─", MUTED) for x in shown]
        rows.append([(f"{'':>{gutter - 1}}└", MUTED)] + marks)
        if has_slots:
            caps = [x.get("capacity") or 0 for x in shown]
            cap_top = max(caps + [max((x.get("busy") or 0) for x in shown)])
            rows.append([(f"{'slots':>{gutter - 1}} ", MUTED)] + spark_cells([x.get("busy") for x in shown], cap_top))
        if axis:
            rows.append(_time_axis(gutter, cols, f"-{cols}m", "now"))
        return self._with_numbers(numbers, rows, gutter + cols)


def _time_axis(gutter: int, cols: int, left: str, right: str, middle: str = "") -> list[Cell]:
    line = [" "] * cols
    for i, ch in enumerate(left[:cols]):
        line[i] = ch
    for i, ch in enumerate(right):
        j = cols - len(right) + i
        if 0 <= j < cols:
            line[j] = ch
    if middle and cols > len(left) + len(right) + len(middle) + 4:
        start = (cols - len(middle)) // 2
        for i, ch in enumerate(middle):
            line[start + i] = ch
    return [(" " * gutter, ""), ("".join(line), MUTED)]


class RunChart(_Chart):
    """Chain / job detail: the duration of the last runs as bars (one column per run,
    newest right; failed ▒ + ✗, skipped ○, running ▶ growing), the due→start lag as a second
    row of blocks on its own scale, p50 / p95 / max of both as text on the first lines."""

    DEFAULT_CSS = """
    RunChart { height: 1fr; min-height: 2; }
    """

    def __init__(self, keep: int = trends.DEFAULT_RUNS, **kw: Any) -> None:
        super().__init__(**kw)
        self.keep = keep
        self.runs: list[dict[str, Any]] = []

    def add_runs(self, new: list[dict[str, Any]]) -> None:
        self.runs = trends.merge_runs(self.runs, new, keep=self.keep)
        self.refresh()

    @property
    def since_id(self) -> int:
        return trends.oldest_open(self.runs)

    def numbers(self, side: bool) -> list[str]:
        s = trends.summarize(self.runs)
        d, lag = s["duration"], s["lag"]
        if side:
            return [f"[b]{s['runs']}[/b] runs  [{OK}]█ {s['succeeded']} ok[/]  [{FAIL}]▒ ✗ {s['failed']} failed[/]",
                    f"[{SKIP}]○ {s['skipped']} skipped[/]  [{RUN}]▶ {s['running']} running[/]",
                    f"duration p50 [b]{fmt_s(d['p50'])}[/b] p95 [b]{fmt_s(d['p95'])}[/b] max [b]{fmt_s(d['max'])}[/b]",
                    f"lag      p50 {fmt_s(lag['p50'])} p95 {fmt_s(lag['p95'])} max {fmt_s(lag['max'])}"]
        return [f"[b]{s['runs']}[/b] runs [{OK}]█ {s['succeeded']} ok[/] [{FAIL}]▒ ✗ {s['failed']} failed[/] "
                f"[{SKIP}]○ {s['skipped']} skip[/] [{RUN}]▶ {s['running']} run[/]",
                f"duration p50 [b]{fmt_s(d['p50'])}[/b] p95 [b]{fmt_s(d['p95'])}[/b] max [b]{fmt_s(d['max'])}[/b]"
                f" · lag p50 {fmt_s(lag['p50'])} p95 {fmt_s(lag['p95'])} max {fmt_s(lag['max'])}"]

    def render(self) -> Content:
        width, height = self.size.width, self.size.height
        gutter = 7
        cols = min(len(self.runs), max(0, width - gutter))
        side = width - gutter - cols - 2 >= self.SIDE_MIN
        numbers = self.numbers(side)
        room = height if side else height - len(numbers)
        if room < 3 or cols < 1:
            return self._with_numbers(self.numbers(False), [], 0)
        shown = self.runs[-cols:]
        bar_h = max(1, room - 2)
        top = nice_top(max((r["duration"] or 0 for r in shown), default=1))

        def parts(r: dict[str, Any]) -> list[tuple[float, str, str]]:
            dur = r["duration"] or 0
            if r["status"] == "failed":
                return [(dur, "▒", FAIL)]
            if r["status"] == "running":
                return [(dur, "█", RUN)]
            if r["status"] == "skipped":
                return []
            return [(dur, "█", OK)]

        columns = [self._column(("r", bar_h, top, r["run_id"], r["status"], r["duration"]),
                                lambda r=r: bar_column(bar_h, parts(r), top)) for r in shown]
        rows: list[list[Cell]] = []
        for level in range(bar_h - 1, -1, -1):
            label = fmt_duration(top) if level == bar_h - 1 else ("0" if level == 0 and bar_h > 1 else "")
            rows.append([(f"{label:>{gutter - 1}}┤", MUTED)] + [c[level] for c in columns])
        marks = [("✗", FAIL) if r["status"] == "failed" else ("○", SKIP) if r["status"] == "skipped"
                 else ("▶", RUN) if r["status"] == "running" else ("─", MUTED) for r in shown]
        rows.append([(f"{'':>{gutter - 1}}└", MUTED)] + marks)
        lags = [None if r["status"] == "skipped" else r.get("lag") for r in shown]
        lag_top = max((v for v in lags if v is not None), default=0)
        rows.append([(f"{'lag':>{gutter - 1}} ", MUTED)] + spark_cells(lags, lag_top))
        return self._with_numbers(numbers, rows, gutter + cols)


class TimelineChart(_Chart):
    """Sessions: the runs of the last N minutes, one row per engine (or per chain / job),
    time left to right; overlaps show as counts, failures as ✗, max_instances skips as ○,
    idle time as ·, the running ones reach ``now`` (▶) and grow with each poll."""

    DEFAULT_CSS = """
    TimelineChart { height: 1fr; min-height: 2; }
    """

    def __init__(self, minutes: int = 30, **kw: Any) -> None:
        super().__init__(**kw)
        self.minutes = minutes
        self.runs: list[dict[str, Any]] = []
        self.now: datetime | None = None
        self.group_by = "engine"  # or "name"

    def add_runs(self, new: list[dict[str, Any]], now: datetime) -> None:
        self.now = now
        self.runs = trends.merge_timeline(self.runs, new, start=now - timedelta(minutes=self.minutes))
        self.refresh()

    def toggle(self) -> str:
        self.group_by = "name" if self.group_by == "engine" else "engine"
        self._cache.clear()
        self.refresh()
        return self.group_by

    def groups(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.runs:
            out.setdefault(str(r[self.group_by] or "?"), []).append(r)
        return dict(sorted(out.items()))

    def render(self) -> Content:
        width, height = self.size.width, self.size.height
        groups = self.groups()
        running = sum(1 for r in self.runs if r["finished_at"] is None)
        failed = sum(1 for r in self.runs if r["status"] == "failed")
        skipped = sum(1 for r in self.runs if r["status"] == "skipped")
        by = "engine" if self.group_by == "engine" else "chain / job"
        if width >= 100:
            head = (f"[b]{len(self.runs)}[/b] runs in {self.minutes}m by {by}  [{RUN}]▶ {running} running[/]  "
                    f"[{FAIL}]✗ {failed} failed[/]  [{SKIP}]○ {skipped} skipped[/]  [{MUTED}]2-9 overlapping · idle[/]")
        else:
            head = (f"[b]{len(self.runs)}[/b] runs/{self.minutes}m [{RUN}]▶ {running}[/] [{FAIL}]✗ {failed}[/] "
                    f"[{SKIP}]○ {skipped}[/] [{MUTED}]2-9 overlap · idle[/]")
        rows: list[list[Cell] | str] = [head]
        if self.now is None or height < 3 or width < 30:
            return self._rows_to_content(rows[:max(1, height)])
        label_w = min(16, max(6, width // 6))
        cols = width - label_w - 1
        start = self.now - timedelta(minutes=self.minutes)
        cell_s = self.minutes * 60 / cols
        room = height - 2
        names = list(groups)[:room]
        for name in names:
            cells = self._lane(groups[name], start, cell_s, cols)
            rows.append([(f"{clip(name, label_w):<{label_w}} ", "b")] + cells)
        if len(groups) > room:
            rows[-1] = f"[{MUTED}]… {len(groups) - room + 1} more rows (taller terminal)[/]"
        rows.append(_time_axis(label_w + 1, cols, f"-{self.minutes}m", "now", f"-{self.minutes // 2}m"))
        return self._rows_to_content(rows[:height])

    def _lane(self, runs: list[dict[str, Any]], start: datetime, cell_s: float, cols: int) -> list[Cell]:
        assert self.now is not None
        counts = [0] * cols
        marks: dict[int, Cell] = {}
        for r in runs:
            s = (r["started_at"] - start).total_seconds() / cell_s
            end = r["finished_at"] or self.now
            e = (end - start).total_seconds() / cell_s
            first, last = max(0, int(s)), min(cols - 1, int(e))
            if r["status"] == "skipped":
                if 0 <= first < cols:
                    marks[first] = ("○", SKIP)
                continue
            for i in range(first, last + 1):
                counts[i] += 1
            if r["finished_at"] is None:
                marks[cols - 1] = ("▶", RUN)
            elif r["status"] == "failed" and 0 <= last < cols:
                marks[last] = ("✗", FAIL)
        out: list[Cell] = []
        for i, n in enumerate(counts):
            if i in marks:
                out.append(marks[i])
            elif n == 0:
                out.append(("·", MUTED))
            elif n == 1:
                out.append(("━", OK))
            else:
                out.append((str(n) if n < 10 else "+", WARN))
        return out


#: a series' direction by shape: growing lag ▲ (bad), shrinking ▼, steady ─
TREND_MARK = {"up": ("▲", "growing"), "down": ("▼", "shrinking"), "flat": ("─", "steady")}


@dataclass
class TrendRow:
    """One row of a TrendChart: which series (``key``), which field of its buckets, how to
    label and print it; ``watch``: a growing value is bad (lag), marked ▲ in the error style."""

    key: Any
    label: str
    field: str
    unit: str = "s"
    watch: bool = True


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        return fmt_duration(value)
    return f"{value:.1f} {unit}" if value < 100 and value != int(value) else f"{value:.0f} {unit}"


class TrendChart(_Chart):
    """Queues (events per second, each consumer's lag) and cascade (each node's lag behind the
    root): one row per series, a sparkline over the window (rows of one unit on one scale,
    gaps as ·), its newest value and where it is heading by shape (▲ growing, ▼ shrinking, ─
    steady; a growing lag in the error style too). Narrow, the sparkline goes and the
    numbers stay; short, the rows that do not fit are counted."""

    DEFAULT_CSS = """
    TrendChart { height: 1fr; min-height: 2; }
    """

    def __init__(self, keep: int = trends.QUEUE_WINDOW_MIN * 60 // trends.QUEUE_STEP_S, **kw: Any) -> None:
        super().__init__(**kw)
        self.keep = keep
        self.series: dict[Any, list[dict[str, Any]]] = {}
        self.rows: list[TrendRow] = []
        self.note = ""
        self.title = ""

    def add_series(self, new: dict[Any, list[dict[str, Any]]]) -> None:
        self.series = trends.merge_series(self.series, new, keep=self.keep)
        self.refresh()

    def show_rows(self, rows: list[TrendRow], title: str = "", note: str = "") -> None:
        self.rows, self.title, self.note = rows, title, note
        self.refresh()

    @property
    def since(self) -> datetime | None:
        """Where the next read starts: the newest bucket any series holds."""
        newest = [b[-1]["at"] for b in self.series.values() if b]
        return max(newest) if newest else None

    def values(self, row: TrendRow) -> list[float | None]:
        return [b.get(row.field) for b in self.series.get(row.key, [])]

    def direction(self, row: TrendRow) -> str | None:
        return trends.trend(self.values(row))

    def render(self) -> Content:
        width, height = self.size.width, self.size.height
        lines: list[list[Cell] | str] = []
        # the heading line only when every row fits under it (the panel's title names the chart)
        if self.title and height > len(self.rows) + 1:
            note = "  " + self.note if self.note and len(self.title) + 2 + len(self.note) <= width else ""
            lines.append([(clip(self.title, width), "b"), (note, MUTED)])
        if not self.rows:
            lines.append(f"[{MUTED}]no series yet[/]")
            return self._rows_to_content(lines[:max(1, height)])
        label_w = min(18, max(8, max(len(r.label) for r in self.rows) + 1))
        tail_w = 22 if width >= 100 else 12
        cols = min(self.keep, width - label_w - tail_w - 2)
        room = max(1, height - len(lines))
        # short of room, the series whose watched value grows come first (a consumer or node
        # falling behind must not hide under "… more")
        rows = self.rows if len(self.rows) <= room else sorted(
            self.rows, key=lambda r: 0 if r.watch and self.direction(r) == "up" else 1)
        shown = rows if len(rows) <= room else rows[:room - 1]
        # rows of one unit share a scale (lags compare across consumers / nodes)
        tops: dict[str, float] = {}
        for row in self.rows:
            tops[row.unit] = max([tops.get(row.unit, 0.0)] + [v for v in self.values(row)[-cols:] if v is not None])
        for row in shown:
            vals = self.values(row)
            present = [v for v in vals if v is not None]
            last = present[-1] if present else None
            cells: list[Cell] = [(f"{clip(row.label, label_w - 1):<{label_w}}", "b")]
            if cols >= 10:
                part = vals[-cols:]
                part = [None] * (cols - len(part)) + part
                top = nice_top(tops[row.unit])
                cells += spark_cells(part, top) + [(" ", "")]
            direction = trends.trend(vals)
            cells.append((f"{fmt_value(last, row.unit):>8} ", ""))
            if direction is not None:
                mark, word = TREND_MARK[direction]
                style = FAIL if direction == "up" and row.watch else (OK if direction == "down" and row.watch else "")
                cells.append((mark + (f" {word}" if tail_w > 12 else ""), style))
            lines.append(cells)
        if len(shown) < len(self.rows):
            lines.append(f"[{MUTED}]… {len(self.rows) - len(shown)} more (taller terminal)[/]")
        return self._rows_to_content(lines[:max(1, height)])
