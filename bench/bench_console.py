"""Console benchmarks (headless Textual, real PostgreSQL on the embedded server).

1. cold start: App constructed -> first full frame with data (overview), vs a bare Textual
   App with one DataTable in the same run (ratio);
2. chain list with 100,000 chains: first page shown, --moves cursor moves (with page turns), vs the same moves in a bare one-page DataTable,
   jump to the last page; vs the engine's chain_page query alone (ratio = UI overhead);
3. live tail at 2,000 lines/s: a writer inserts into timetable.log; lag of the last shown
   line behind the database, sampled every 0.5 s; lines shown == lines written;
4. resident memory after --minutes of tailing (default 0.5; the README quotes 10).

    python bench/bench_console.py [--chains 100000] [--rate 2000] [--seconds 20] [--minutes 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.app import App  # noqa: E402
from textual.widgets import DataTable  # noqa: E402

from engine import demo, schema  # noqa: E402
from engine.timetable import api as tt_api  # noqa: E402
from engine.db import connect, resolve_settings  # noqa: E402
from pgtt_tui.app import PgttApp  # noqa: E402
from pgtt_tui.widgets.logview import LogView  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def wait(predicate, timeout: float = 60.0) -> float:
    t0 = time.perf_counter()
    while not predicate():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(0.005)
    return time.perf_counter() - t0


class Bare(App):
    def __init__(self, rows: int = 20) -> None:
        super().__init__()
        self.rows = rows

    def compose(self):
        table = DataTable(cursor_type="row")
        table.add_columns("name", "schedule", "next run", "last run", "result", "state", "client")
        for i in range(self.rows):
            table.add_row(f"bench-{i:07d}", "0 4 * * *", "", "", "· never", "‖ paused", "any")
        yield table


async def bare_moves(moves: int) -> float:
    """Baseline: the same number of cursor moves in a plain DataTable of one page (200 rows)."""
    async with Bare(200).run_test(size=(120, 36)) as pilot:
        await pilot.pause(0)
        t0 = time.perf_counter()
        for i in range(moves):
            await pilot.press("down" if (i // 199) % 2 == 0 else "up")
        return time.perf_counter() - t0


async def bench_start(settings) -> dict:
    t0 = time.perf_counter()
    async with Bare().run_test(size=(120, 36)) as pilot:
        await pilot.pause(0)
        bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    app = PgttApp(settings, refresh=60)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait(lambda: getattr(app.screen, "last_data", None) is not None)
        await pilot.pause(0)
        ours = time.perf_counter() - t0
    return {"cold_start_s": ours, "bare_textual_s": bare, "ratio": ours / bare}


async def bench_chains(settings, n: int, moves_wanted: int = 1000) -> dict:
    with connect(settings) as conn:
        have = conn.execute("SELECT count(*) FROM timetable.chain").fetchone()[0]
        if have < n:
            conn.execute("INSERT INTO timetable.chain (chain_name, run_at, live) "
                         "SELECT format('bench-%%s', lpad(g::text, 7, '0')), '0 4 * * *', g %% 3 = 0 "
                         "FROM generate_series(%s, %s) g", (have + 1, n))
            conn.execute("ANALYZE timetable.chain")
        t0 = time.perf_counter()
        for _ in range(20):
            page = tt_api.chain_page(conn, limit=200)
            tt_api.chain_page(conn, after=page.last_name, limit=200)
        query = (time.perf_counter() - t0) / 40
    app = PgttApp(settings, refresh=60, start_view="chains")
    async with app.run_test(size=(120, 36)) as pilot:
        t0 = time.perf_counter()
        await wait(lambda: app.screen.page is not None and app.screen.page.rows)
        await pilot.pause(0)
        first = time.perf_counter() - t0
        screen = app.screen
        t0 = time.perf_counter()
        moves = 0
        for _ in range(moves_wanted):
            before = screen.page.first_index
            at_end = screen.query_one("#chains").cursor_row >= len(screen.page.rows) - 1
            await pilot.press("j")
            moves += 1
            if at_end:
                await wait(lambda b=before: screen.page.first_index != b)
        scroll = time.perf_counter() - t0
        bare = await bare_moves(moves)
        t0 = time.perf_counter()
        await pilot.press("G")
        await wait(lambda: screen.page.first_index + len(screen.page.rows) == screen.page.total)
        last = time.perf_counter() - t0
        total = screen.page.total
    return {"chains": total, "first_page_s": first, "query_per_page_s": query,
            "ratio_first_page_vs_query": first / query, "moves": moves, "scroll_moves_s": scroll,
            "per_move_ms": scroll / moves * 1000, "bare_datatable_per_move_ms": bare / moves * 1000,
            "ratio_move_vs_bare": scroll / bare, "jump_to_last_page_s": last}


def writer(settings, rate: int, seconds: float, stop: threading.Event, written: list) -> None:
    batch = max(1, rate // 20)
    with connect(settings) as conn:
        t_next = time.perf_counter()
        end = t_next + seconds
        while time.perf_counter() < end and not stop.is_set():
            conn.execute("INSERT INTO timetable.log (ts, pid, log_level, client_name, message) "
                         "SELECT clock_timestamp(), 1, CASE WHEN g %% 50 = 0 THEN 'ERROR' ELSE 'INFO' END"
                         "::timetable.log_type, 'bench', 'bench line ' || g FROM generate_series(1, %s) g", (batch,))
            written[0] += batch
            t_next += batch / rate
            delay = t_next - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


async def bench_tail(settings, rate: int, seconds: float, minutes: float) -> dict:
    app = PgttApp(settings, refresh=2.0, start_view="logs", log_lines=10_000)
    async with app.run_test(size=(120, 36)) as pilot:
        view = app.screen.query_one(LogView)
        screen = app.screen
        await wait(lambda: screen.tail is not None)
        received0 = screen.total_received
        rss0 = rss_mb()
        stop = threading.Event()
        written = [0]
        duration = max(seconds, minutes * 60)
        thread = threading.Thread(target=writer, args=(settings, rate, duration, stop, written))
        t0 = time.perf_counter()
        thread.start()
        lags = []
        while thread.is_alive():
            await asyncio.sleep(0.5)
            last = view.last_entry()
            if last is not None and last.source == "log" and last.client == "bench":
                lags.append((datetime.now(timezone.utc) - last.ts).total_seconds())
        elapsed = time.perf_counter() - t0
        await wait(lambda: screen.total_received - received0 >= written[0], timeout=30)
        catch_up = time.perf_counter() - t0 - elapsed
        await pilot.pause(0)
        rss1 = rss_mb()
    lags.sort()
    return {"rate_target": rate, "written": written[0], "rate_achieved": written[0] / elapsed,
            "shown": screen.total_received - received0, "lag_p50_s": statistics.median(lags) if lags else None,
            "lag_p95_s": lags[int(len(lags) * 0.95) - 1] if lags else None, "lag_max_s": max(lags) if lags else None,
            "catch_up_after_stop_s": catch_up, "tail_seconds": elapsed, "rss_before_mb": rss0, "rss_after_mb": rss1,
            "held_lines": len(view.entries)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--chains", type=int, default=100_000)
    parser.add_argument("--moves", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--minutes", type=float, default=0.5, help="tail duration for the memory figure")
    args = parser.parse_args()
    base = resolve_settings(args.dsn, application_name="pgtt-tui bench")
    demo.create_database(base, "pgtt_bench", reset=True)
    settings = demo.demo_settings(base, "pgtt_bench")
    with connect(settings) as conn:
        schema.install(conn, list(schema.MODULES))
    print("python", sys.version.split()[0], "pid", os.getpid())
    print("start ", asyncio.run(bench_start(settings)))
    print("chains", asyncio.run(bench_chains(settings, args.chains, args.moves)))
    print("tail  ", asyncio.run(bench_tail(settings, args.rate, args.seconds, args.minutes)))


if __name__ == "__main__":
    main()
