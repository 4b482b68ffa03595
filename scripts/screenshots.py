"""Generate screenshots/*.svg (and .png when rsvg-convert is installed) from the real app.

Deterministic: a throw-away database on the embedded server with the demo samples and the
fixed history of engine.demo.load_history, a fixed clock (engine.demo.FIXED_NOW, in the future
so that the sample engine row, registered against this script's live connection, is alive by
the real rule) and a fixed header line. Every screen at 120x36 and 80x24.

The queues, cascade and plan screens show the demo cascade (engine.demo.build_cascade: three
throw-away databases, nodes main -> mirror -> reports, built with the engine's plans). Its
nodes know each other by libpq service names (a temporary service file), so no socket path
or port shows. The cascade is driven by hand (no engine running): fixed orders are inserted
at the root, ticks are forced, and the real cascade workers take a fixed number of steps,
so tick ids, watermarks and event counts are the same on every run; the reports leaf is
left one tick behind. What the database measures against its own clock (ticker lag,
consumer lag, events per second, rotation time) is replaced by fixed values in the frames.

    python scripts/screenshots.py [--out screenshots] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import os
import tempfile
from dataclasses import replace
from datetime import timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from psycopg import conninfo as pg_conninfo  # noqa: E402

from engine import demo  # noqa: E402
from engine.clock import FakeClock  # noqa: E402
from engine.db import connect, resolve_settings  # noqa: E402
from pgtt_tui.app import PgttApp  # noqa: E402
from pgtt_tui.dbaccess import ServerInfo  # noqa: E402
from pgtt_tui.screens.cascade import CascadeScreen  # noqa: E402
from pgtt_tui.screens.queues import QueuesScreen  # noqa: E402

NOW = demo.FIXED_NOW
SERVER = ServerInfo(where="db-host:5432/pgtt_demo", role="postgres", version="18.1")
SIZES = [(120, 36), (80, 24)]


async def wait_data(app: PgttApp, what=None, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        screen = app.screen
        ok = what(app) if what else getattr(screen, "last_data", None) is not None
        if ok:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


# ---- the cascade views: real data from the demo cascade, database-clock timings pinned ----------

class PinnedQueues(QueuesScreen):
    """The real queues snapshot with what the server measures against its clock fixed."""

    def fetch(self, conn):
        snap = super().fetch(conn)
        queues = []
        for q in snap.queues:
            queues.append(replace(q, ticker_lag=timedelta(seconds=0.6), ev_per_sec=1.2 if q.last_tick_id else None,
                                  queue_switch_time=NOW - timedelta(minutes=42)))
        consumers = {}
        for name, rows in snap.consumers.items():
            top = next((q.last_tick_id for q in snap.queues if q.queue_name == name), None) or 0
            consumers[name] = [replace(c, lag=timedelta(seconds=0.6 + 2.0 * max(0, top - (c.last_tick or top))),
                                       last_seen=timedelta(seconds=0.4)) for c in rows]
        return replace(snap, queues=queues, consumers=consumers)


class PinnedCascade(CascadeScreen):
    """The real cascade status with the ticker lag (server clock) fixed."""

    def show(self, data) -> None:
        if data.status is not None:
            for n in data.status.nodes.values():
                if n.ticker_lag is not None:
                    n.ticker_lag = 0.6
        super().show(data)


PINNED = {"queues": PinnedQueues, "cascade": PinnedCascade}


def service_locations(base, dbname: str) -> dict[str, str]:
    """A libpq service file naming the three node databases; PGSERVICEFILE points at it."""
    params = pg_conninfo.conninfo_to_dict(base.dsn) if base.dsn else {}
    params.pop("application_name", None)
    lines, names = [], {}
    for name, suffix, *_ in demo.CASCADE_LAYOUT:
        service = f"demo-{name}"
        lines.append(f"[{service}]")
        lines += [f"{k}={v}" for k, v in {**params, "dbname": dbname + suffix}.items()]
        names[name] = f"service={service}"
    fd, path = tempfile.mkstemp(prefix="pgtt-shots-", suffix=".conf")
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.environ["PGSERVICEFILE"] = path
    return names


ORDERS = [("ada", 42.50), ("bob", 17.25), ("cyd", 99.00), ("dee", 8.75), ("eve", 61.10), ("ada", 12.00),
          ("bob", 150.00), ("cyd", 23.40), ("dee", 77.70)]


async def drive_cascade(cascade: demo.CascadeDemo) -> None:
    """Orders in three batches, a forced tick after each; the workers catch up, except the
    leaf, which stays one tick behind; two more orders wait for the next tick."""
    from engine.cascade.worker import CascadedWorker, TableSink  # noqa: PLC0415

    workers = {}
    for n in cascade.nodes:
        w = CascadedWorker(cascade.queue, handler=TableSink(cascade.sink_table) if n.role == "leaf" else None)
        w.clock = FakeClock(NOW)  # watermarks published once, whatever the script's speed
        await w.connect_target(n.settings)
        workers[n.name] = w
    main = cascade.node("main").settings

    def insert(rows, minutes: int) -> None:
        with connect(main) as conn:
            for i, (customer, amount) in enumerate(rows):
                conn.execute("INSERT INTO demo.orders (customer, amount, created_at) VALUES (%s, %s, %s)",
                             (customer, amount, NOW - timedelta(minutes=minutes, seconds=-i)))

    def tick() -> None:  # with ticker_max_lag 0 a tick follows any new event at once
        with connect(main) as conn:
            conn.execute("SELECT pgq.ticker(%s)", (cascade.queue,))

    def queue_config(pairs) -> None:
        with connect(main) as conn:
            for param, value in pairs:
                conn.execute("SELECT pgq.set_queue_config(%s, %s, %s)", (cascade.queue, param, value))

    async def settle(*names: str) -> None:
        for name in names:
            while await workers[name].step():
                pass

    queue_config([("ticker_max_lag", "0")])
    try:
        for k, minutes in enumerate((6, 4, 2)):
            for w in workers.values():  # a watermark period passes between batches
                w.clock.set(NOW + timedelta(minutes=k))
            insert(ORDERS[3 * k:3 * k + 3], minutes)
            tick()
            await settle("mirror", "reports") if k < 2 else await settle("mirror")
            await settle("main")
        insert([("eve", 5.0), ("ada", 33.3)], 0)
    finally:
        queue_config(demo.QUEUE_CONFIG)
        for w in workers.values():
            await w.close()


async def shoot(settings, name: str, size: tuple[int, int], out: Path, steps) -> Path:
    app = PgttApp(settings, refresh=60, clock=lambda: NOW, tz=timezone.utc, server=SERVER, demo=True,
                  start_view=steps[0])
    for mode, screen in PINNED.items():
        app.remove_mode(mode)
        app.add_mode(mode, screen)
    async with app.run_test(size=size) as pilot:
        await wait_data(app)
        for step in steps[1:]:
            await step(app, pilot)
        app.clear_notifications()
        await asyncio.sleep(0.1)
        path = out / f"{name}-{size[0]}x{size[1]}.svg"
        app.save_screenshot(filename=path.name, path=str(out))
    return path


async def open_chain(app, pilot):
    app.open_chain("flaky-import")
    await wait_data(app, lambda a: getattr(a.screen, "detail", None) is not None)


async def by_chain(app, pilot):
    await pilot.press("t")  # the timeline by chain / job
    await pilot.pause(0.3)


async def history(app, pilot):
    await pilot.press("h")
    await wait_data(app, lambda a: getattr(a.screen, "history", None) is not None)


async def editor(app, pilot):
    await pilot.press("n")
    await asyncio.sleep(0.2)
    app.screen.query_one("#name").value = "nightly-export"
    app.screen.query_one("#run_at").value = "30 2 * * 1-5"
    app.screen.query_one("#params").text = '["2026-11"]'
    await asyncio.sleep(0.2)


async def logs_ready(app, pilot):
    await wait_data(app, lambda a: len(a.screen.query_one("#log").entries) > 0)


async def calendar(app, pilot):
    app.screen.action_tab("calendar")
    await asyncio.sleep(0.3)


async def help_screen(app, pilot):
    await pilot.press("question_mark")
    await asyncio.sleep(0.3)


async def cascade_ready(app, pilot):
    await wait_data(app, lambda a: getattr(a.screen, "status", None) is not None)


async def select_mirror(app, pilot):
    await pilot.press("j")
    await wait_data(app, lambda a: (n := a.screen.selected()) is not None and n.name == "mirror")


async def switchover_plan(app, pilot):
    await pilot.press("s")
    await wait_data(app, lambda a: type(a.screen).__name__ == "PlanScreen")
    if type(app.screen).__name__ != "PlanScreen":
        raise SystemExit(f"the switchover plan did not open: {[n.message for n in app._notifications]}")


SCREENS = {
    "overview": ["overview"],
    "chains": ["chains"],
    "chain-detail": ["chains", open_chain],
    "run-history": ["chains", open_chain, history],
    "chain-editor": ["chains", editor],
    "jobs": ["jobs"],
    "jobs-calendar": ["jobs", calendar],
    "sessions": ["sessions"],
    "sessions-timeline": ["sessions", by_chain],
    "logs": ["logs", logs_ready],
    "help": ["chains", help_screen],
    "queues": ["queues"],
    "cascade": ["cascade", cascade_ready, select_mirror],
    "switchover-plan": ["cascade", cascade_ready, select_mirror, switchover_plan],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="screenshots")
    parser.add_argument("--dsn", default=None, help="server to create the throw-away database on")
    parser.add_argument("--only", action="append", default=[], choices=list(SCREENS), metavar="SCREEN",
                        help="only this screen (repeatable); default: all")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_settings(args.dsn, application_name="pgtt-tui screenshots")
    dbname = f"pgtt_screenshots_{os.getpid()}"  # never shown; unique so that two runs do not collide
    demo.create_database(base, dbname, reset=True)
    demo.drop_cascade_databases(base, dbname)
    settings = demo.demo_settings(base, dbname)
    locations = service_locations(base, dbname)
    with connect(settings) as conn:
        from engine import schema  # noqa: PLC0415

        schema.install(conn, list(schema.MODULES))
        demo.load_samples(conn)
        cascade = demo.build_cascade(base, dbname, location_of=lambda n: locations[n.name])
        asyncio.run(drive_cascade(cascade))
        demo.load_trends(conn, NOW)  # the hour before load_history's runs, for the charts (issue 18)
        demo.load_history(conn, NOW)  # the engine row is registered against `conn`, open until the end
        # sampled lag history for the queue and cascade charts (issue 18): the mirror caught up
        # after a pause (its curve goes back to zero); the orders queue's consumers as they are
        consumers = tuple(r[0] for r in conn.execute(
            "SELECT consumer_name FROM pgq.get_consumer_info(%s) ORDER BY 1", (cascade.queue,)).fetchall())
        conn.execute("DELETE FROM pgtt.queue_sample")
        demo.load_queue_samples(conn, NOW, cascade.queue, consumers)
        for n, shape in zip(cascade.nodes, ("root", "catchup", "steady")):
            with connect(n.settings) as node_conn:
                node_conn.execute("DELETE FROM pgtt.cascade_sample")
                demo.load_cascade_samples(node_conn, NOW, cascade.queue, n.name, shape)
                node_conn.commit()
        paths = []
        for name, steps in SCREENS.items():
            if args.only and name not in args.only:
                continue
            for size in SIZES:
                paths.append(asyncio.run(shoot(settings, name, size, out, steps)))
                print(paths[-1])
    rsvg = shutil.which("rsvg-convert")
    if rsvg:
        for path in paths:
            subprocess.run([rsvg, str(path), "-o", str(path.with_suffix(".png"))], check=True)
    demo.drop_cascade_databases(base, dbname)
    with psycopg.connect(base.conninfo(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    os.unlink(os.environ["PGSERVICEFILE"])


if __name__ == "__main__":
    main()
