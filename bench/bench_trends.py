"""Chart benchmarks (issue 18): the charts' queries on a large history, the console's render
time per refresh with the charts against without, and memory over a session.

1. queries: ``engine.views.trends`` activity (last hour, per minute), run_stats (last 60 runs of
   one chain), timeline (last 30 minutes) on --rows chain runs and --rows cron runs spread
   over 30 days (1,000,000 each by default), against the same queries on a small history
   (the same last day only) in the same run: a ratio near 1 means the cost follows the
   window, not the history. The activity query is also timed without the new end-time
   index (``chain_run_finished_idx``), to show what it buys;
2. render: the overview at 120×36 applying one incremental poll (show + next frame), with
   the chart on screen against the same view with the chart panel hidden (ratio);
3. memory: resident size over --polls refreshes of the overview with its chart, run back
   to back (300 polls = a ten-minute session at the default 2 s refresh, compressed: what
   could grow is per-poll state, not wall time).

4. samples (queue / cascade charts): ``queue_trends`` (30 minutes, 30 s buckets) and its
   incremental read on --samples rows of ``pgtt.queue_sample`` (40 queues with 2 consumers,
   24 hours every 10 s: 1,036,800 by default) against the same 40 queues' last hour only, in
   the same run; and the ticker's cost per round on those 40 queues: ``pgq.ticker()`` alone
   against a round that also samples (every 10th round at the default periods), as ratios.

    python bench/bench_trends.py [--dsn DSN] [--rows 1000000] [--repeat 20] [--polls 300]
                                 [--only-samples]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from engine import demo, schema
from engine.views import trends  # noqa: E402
from engine.db import connect, resolve_settings  # noqa: E402

NOW = demo.FIXED_NOW
DAYS = 30

FILL_RUNS = """
INSERT INTO timetable.chain_run (chain_id, due_at, trigger, client_name, session_id, claimed_at, started_at,
                                 finished_at, status)
SELECT c, t, 'every', 'bench-' || (g %% 4), 1, t + interval '0.2 s', t + interval '0.2 s',
       t + (1 + g %% 9) * interval '1 s', CASE WHEN g %% 17 = 0 THEN 'failed' WHEN g %% 41 = 0 THEN 'skipped'
                                          ELSE 'succeeded' END
FROM (SELECT g, 1 + g %% 200 AS c, %(now)s::timestamptz - (%(span)s::interval * g / %(n)s) AS t
      FROM generate_series(1, %(n)s) g) x
ORDER BY t
"""

FILL_CRON = """
INSERT INTO schedule.cron_run (cron, node, scheduled_at, state, started, finished, engine)
SELECT 1 + g %% 50, 'master', t, CASE WHEN g %% 13 = 0 THEN 'error' ELSE 'done' END, t, t + interval '2 s', 'bench-0'
FROM (SELECT g, %(now)s::timestamptz - (%(span)s::interval * g / %(n)s) - interval '7 ms' * g AS t
      FROM generate_series(1, %(n)s) g) x
ON CONFLICT DO NOTHING
"""


def timed(fn, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def build(base, dbname: str, rows: int, span: timedelta) -> object:
    demo.create_database(base, dbname, reset=True)
    settings = demo.demo_settings(base, dbname)
    with connect(settings) as conn:
        schema.install(conn, ["pgtt", "timetable", "schedule"])
        for i in range(1, 201):
            conn.execute("INSERT INTO timetable.chain (chain_name, run_at, live) VALUES (%s, '* * * * *', true)",
                         (f"bench-{i:03d}",))
        for i in range(1, 51):
            conn.execute("INSERT INTO schedule.cron (name, node, rule, commands, owner, executor) "
                         "VALUES (%s, 'master', '{\"crontab\": \"* * * * *\"}', '{SELECT 1}', current_user, "
                         "current_user)", (f"job-{i}",))
        conn.execute(FILL_RUNS, {"now": NOW, "span": span, "n": rows})
        conn.execute(FILL_CRON, {"now": NOW, "span": span, "n": rows})
        conn.execute("INSERT INTO pgtt.engine (client_name, backend_pid, slots, started_at, heartbeat_at, stopped_at) "
                     "SELECT 'bench-' || g, 0, 32, %s, %s, %s FROM generate_series(0, 3) g",
                     (NOW - span, NOW, NOW))
        conn.execute("ANALYZE")
    return settings


def queries(settings, repeat: int) -> dict[str, float]:
    with connect(settings) as conn:
        parts = trends.access(conn)
        out = {
            "activity (60 × 1 min)": timed(lambda: trends.activity(conn, NOW, parts=parts), repeat),
            "activity, next poll (1 bucket)": timed(
                lambda: trends.activity(conn, NOW, since=NOW - timedelta(seconds=30), parts=parts), repeat),
            "run_stats (last 60 runs)": timed(lambda: trends.run_stats(conn, "chain", "bench-007", now=NOW), repeat),
            "timeline (30 min)": timed(lambda: trends.timeline(conn, NOW, minutes=30, parts=parts), repeat),
        }
        conn.execute("DROP INDEX timetable.chain_run_finished_idx")
        conn.execute("ANALYZE timetable.chain_run")
        out["activity without chain_run_finished_idx"] = timed(lambda: trends.activity(conn, NOW, parts=parts),
                                                               max(3, repeat // 4))
        conn.execute("CREATE INDEX chain_run_finished_idx ON timetable.chain_run (finished_at)")
    return out


async def render_bench(settings, repeat: int) -> tuple[float, float]:
    from pgtt_tui.app import PgttApp  # noqa: PLC0415

    app = PgttApp(settings, refresh=3600, clock=lambda: NOW, tz=timezone.utc, start_view="overview")
    async with app.run_test(size=(120, 36)) as pilot:
        while app.screen.last_data is None:
            await pilot.pause(0.05)
        screen = app.screen
        with connect(settings) as conn:
            data = dict(screen.last_data)
            data["activity"] = trends.activity(conn, NOW, since=NOW - timedelta(seconds=30))

        async def one() -> float:
            t0 = time.perf_counter()
            screen.show(data)
            screen.refresh()
            await pilot.pause()
            return time.perf_counter() - t0

        with_charts = []
        for _ in range(repeat):
            with_charts.append(await one())
        screen.query_one("#activity-box").display = False
        await pilot.pause()
        without = []
        for _ in range(repeat):
            without.append(await one())
    return statistics.median(with_charts) * 1000, statistics.median(without) * 1000


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def memory_bench(settings, polls: int) -> tuple[float, float, float]:
    from pgtt_tui.app import PgttApp  # noqa: PLC0415

    app = PgttApp(settings, refresh=3600, clock=lambda: NOW, tz=timezone.utc, start_view="overview")
    async with app.run_test(size=(120, 36)) as pilot:
        while app.screen.last_data is None:
            await pilot.pause(0.05)
        start = rss_mb()
        middle = start
        for i in range(polls):
            if i == polls // 10:
                middle = rss_mb()
            screen = app.screen
            generation = screen._generation
            screen.request_poll()
            while screen._polling or screen._generation == generation:
                await pilot.pause(0.01)
        return start, middle, rss_mb()


FILL_QUEUE_SAMPLES = """
INSERT INTO pgtt.queue_sample (queue_name, consumer_name, sampled_at, ev_per_sec, lag_s, pending, tick_id)
SELECT 'bq' || q, c, %(now)s::timestamptz - s * interval '10 s',
       CASE WHEN c = '' THEN 5 + s %% 7 END, 1 + (s %% 13), CASE WHEN c <> '' THEN s %% 100 END, 100000 - s
FROM generate_series(1, 40) q, unnest(ARRAY['', 'c1', 'c2']) c, generate_series(0, %(steps)s - 1) s
"""


def build_samples(base, dbname: str, steps: int) -> object:
    demo.create_database(base, dbname, reset=True)
    settings = demo.demo_settings(base, dbname)
    with connect(settings) as conn:
        schema.install(conn, ["pgtt", "pgq"])
        for q in range(1, 41):
            conn.execute("SELECT pgq.create_queue(%s)", (f"bq{q}",))
            for c in ("c1", "c2"):
                conn.execute("SELECT pgq.register_consumer(%s, %s)", (f"bq{q}", c))
        conn.execute(FILL_QUEUE_SAMPLES, {"now": NOW, "steps": steps})
        conn.execute("ANALYZE pgtt.queue_sample")
    return settings


def samples_bench(base, rows: int, repeat: int) -> None:
    from engine.pgq.ticker import sample_queues, tick  # noqa: PLC0415

    steps = max(1, rows // 120)
    big = build_samples(base, "pgtt_bench_samples_big", steps)
    small = build_samples(base, "pgtt_bench_samples_small", 360)  # the last hour, same rate
    out = {}
    for label, settings in (("large", big), ("small", small)):
        with connect(settings) as conn:
            n = conn.execute("SELECT count(*) FROM pgtt.queue_sample").fetchone()[0]
            full = timed(lambda: trends.queue_trends(conn, NOW), repeat)
            inc = timed(lambda: trends.queue_trends(conn, NOW, since=NOW - timedelta(seconds=20)), repeat)
            out[label] = (n, full, inc)
    print(f"\n{'queue_trends (median ms)':<42} {'large':>9} {'small':>9} {'large/small':>12}")
    print(f"{'rows':<42} {out['large'][0]:>9,} {out['small'][0]:>9,}")
    for i, name in ((1, "30 min × 30 s, 40 queues + 80 consumers"), (2, "next poll (newest bucket)")):
        print(f"{name:<42} {out['large'][i]:>9.1f} {out['small'][i]:>9.1f} {out['large'][i] / out['small'][i]:>11.1f}×")

    async def rounds() -> tuple[float, float]:
        conn = await psycopg.AsyncConnection.connect(big.conninfo(), autocommit=True)
        try:
            async def plain() -> None:
                await tick(conn)

            async def sampled() -> None:
                await tick(conn)
                await sample_queues(conn, period=0)  # always due: the round that samples

            async def med(fn) -> float:
                await fn()
                ts = []
                for _ in range(repeat * 5):
                    t0 = time.perf_counter()
                    await fn()
                    ts.append(time.perf_counter() - t0)
                return statistics.median(ts) * 1000
            a, b = [], []
            for _ in range(3):  # interleaved pairs against drift on a noisy machine
                a.append(await med(plain))
                b.append(await med(sampled))
            return statistics.median(a), statistics.median(b)
        finally:
            await conn.close()

    plain, sampled = asyncio.run(rounds())
    amortized = plain + (sampled - plain) / 10  # one sampling round in ten (1 s ticks, 10 s samples)
    print(f"ticker round on 40 queues (median): pgq.ticker() {plain:.2f} ms, with a sample {sampled:.2f} ms "
          f"(ratio {sampled / plain:.2f}); amortized at 1 s ticks / 10 s samples {amortized:.2f} ms "
          f"(ratio {amortized / plain:.2f})")
    with psycopg.connect(base.conninfo(), autocommit=True) as admin:
        for name in ("pgtt_bench_samples_big", "pgtt_bench_samples_small"):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--samples", type=int, default=1_036_800, help="queue samples (4.)")
    parser.add_argument("--only-samples", action="store_true", help="run part 4 only")
    args = parser.parse_args()
    base = resolve_settings(args.dsn, application_name="pgtt-tui bench")
    if args.only_samples:
        samples_bench(base, args.samples, args.repeat)
        return
    t0 = time.perf_counter()
    big = build(base, "pgtt_bench_trends_big", args.rows, timedelta(days=DAYS))
    small = build(base, "pgtt_bench_trends_small", max(1, args.rows // DAYS), timedelta(days=1))
    print(f"filled in {time.perf_counter() - t0:.0f} s: {args.rows:,} chain runs + {args.rows:,} cron runs over "
          f"{DAYS} days vs {args.rows // DAYS:,} + {args.rows // DAYS:,} over the last day (same rate)")
    q_big, q_small = queries(big, args.repeat), queries(small, args.repeat)
    print(f"\n{'query (median ms)':<42} {'large':>9} {'small':>9} {'large/small':>12}")
    for name in q_big:
        print(f"{name:<42} {q_big[name]:>9.1f} {q_small[name]:>9.1f} {q_big[name] / q_small[name]:>11.1f}×")
    with_c, without = asyncio.run(render_bench(big, args.repeat))
    print(f"\noverview refresh (show + frame), median: with chart {with_c:.1f} ms, without {without:.1f} ms, "
          f"ratio {with_c / without:.2f}")
    start, middle, end = asyncio.run(memory_bench(big, args.polls))
    print(f"memory (RSS) over {args.polls} overview polls: {start:.0f} MB after the first, {middle:.0f} MB after "
          f"{args.polls // 10}, {end:.0f} MB at the end")
    with psycopg.connect(base.conninfo(), autocommit=True) as admin:
        for name in ("pgtt_bench_trends_big", "pgtt_bench_trends_small"):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    samples_bench(base, args.samples, args.repeat)


if __name__ == "__main__":
    main()
