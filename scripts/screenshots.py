"""Generate screenshots/*.svg (and .png when rsvg-convert is installed) from the real app.

Deterministic: a throw-away database on the embedded server with the demo samples and the
fixed history of engine.demo.load_history, a fixed clock and a fixed header line. Every
screen at 120x36 and 80x24.

    python scripts/screenshots.py [--out screenshots] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from engine import demo  # noqa: E402
from engine.db import connect, resolve_settings  # noqa: E402
from pgtt_tui.app import PgttApp  # noqa: E402
from pgtt_tui.dbaccess import ServerInfo  # noqa: E402

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)
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


async def shoot(settings, name: str, size: tuple[int, int], out: Path, steps) -> Path:
    app = PgttApp(settings, refresh=60, clock=lambda: NOW, tz=timezone.utc, server=SERVER, demo=True,
                  start_view=steps[0])
    async with app.run_test(size=size) as pilot:
        await wait_data(app)
        for step in steps[1:]:
            await step(app, pilot)
        path = out / f"{name}-{size[0]}x{size[1]}.svg"
        app.save_screenshot(filename=path.name, path=str(out))
    return path


async def open_chain(app, pilot):
    app.open_chain("flaky-import")
    await wait_data(app, lambda a: getattr(a.screen, "detail", None) is not None)


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


SCREENS = {
    "overview": ["overview"],
    "chains": ["chains"],
    "chain-detail": ["chains", open_chain],
    "run-history": ["chains", open_chain, history],
    "chain-editor": ["chains", editor],
    "jobs": ["jobs"],
    "jobs-calendar": ["jobs", calendar],
    "sessions": ["sessions"],
    "logs": ["logs", logs_ready],
    "help": ["chains", help_screen],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="screenshots")
    parser.add_argument("--dsn", default=None, help="server to create the throw-away database on")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_settings(args.dsn, application_name="pgtt-tui screenshots")
    dbname = "pgtt_screenshots"
    demo.create_database(base, dbname, reset=True)
    settings = demo.demo_settings(base, dbname)
    with connect(settings) as conn:
        from engine import schema  # noqa: PLC0415

        schema.install(conn, list(schema.MODULES))
        demo.load_samples(conn)
        demo.load_history(conn, NOW)
        paths = []
        for name, steps in SCREENS.items():
            for size in SIZES:
                paths.append(asyncio.run(shoot(settings, name, size, out, steps)))
                print(paths[-1])
    rsvg = shutil.which("rsvg-convert")
    if rsvg:
        for path in paths:
            subprocess.run([rsvg, str(path), "-o", str(path.with_suffix(".png"))], check=True)
    with psycopg.connect(base.conninfo(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
