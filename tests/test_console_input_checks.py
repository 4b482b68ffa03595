"""The console's chain and task editors check as you type with the engine's own checks
(engine.timetable.validate), the @every / @after floor of this very database included, and
a save the engine refuses (run_as naming no role) changes nothing (issue 13)."""

from __future__ import annotations

from datetime import timezone

import psycopg
import pytest

from console_host import until
from engine.db import ConnSettings
from engine.timetable import api as tt
from pgtt_tui.app import PgttApp

pytestmark = pytest.mark.timeout(120)


def text(editor, ident: str) -> str:
    return str(editor.query_one(f"#{ident}").render())


async def test_chain_editor_refuses_nonsense_as_you_type(settings):
    app = PgttApp(settings, refresh=0.3, tz=timezone.utc, start_view="chains")
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("n")
        await until(pilot, lambda: type(app.screen).__name__ == "ChainEditor")
        editor = app.screen
        editor.query_one("#name").value = "bad\x1bname"
        editor.query_one("#run_at").value = "@every 1 microsecond"
        editor.query_one("#max_instances").value = "0"
        editor.query_one("#client_name").value = "node\x07"
        editor.query_one("#command").text = "SELECT 1"
        await pilot.pause(0.05)
        assert "name: must not contain control characters (U+001B at position 4)" in text(editor, "name-msg")
        assert "below the minimum of 1 second" in text(editor, "run_at-msg") and "✗" in text(editor, "run_at-msg")
        assert "max instances: 0: must be 1 or more" in text(editor, "num-msg")
        assert "client: must not contain control characters (U+0007" in text(editor, "num-msg")
        assert editor.query_one("#save").disabled
        editor.query_one("#name").value = "fine"
        editor.query_one("#run_at").value = "@every 1 second"
        editor.query_one("#max_instances").value = "1"
        editor.query_one("#client_name").value = ""
        editor.query_one("#kind").value = "BUILTIN"
        editor.query_one("#command").text = "Shell"
        await pilot.pause(0.05)
        assert "command: unknown builtin 'Shell'" in text(editor, "command-msg")
        editor.query_one("#command").text = "Sleep"
        editor.query_one("#params").text = '5\n"soon"'
        await pilot.pause(0.05)
        assert "parameters line 2: Sleep needs a whole number of seconds" in text(editor, "params-msg")
        assert editor.query_one("#save").disabled
        editor.query_one("#params").text = "5"
        await pilot.pause(0.05)
        assert not editor.query_one("#save").disabled
        await pilot.press("f2")
        await until(pilot, lambda: type(app.screen).__name__ != "ChainEditor")
    with psycopg.connect(settings.dsn) as conn:
        assert conn.execute("SELECT chain_name, run_at, max_instances FROM timetable.chain").fetchall() == \
            [("fine", "@every 1 second", 1)]


async def test_chain_editor_uses_the_databases_floor(make_db):
    dsn = make_db(("timetable",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET pgtt.timetable_min_interval = %L', "
                     "current_database(), '100 ms'); END $$")
    settings = ConnSettings(dsn=dsn, application_name="pgtt-test")
    app = PgttApp(settings, refresh=0.3, tz=timezone.utc, start_view="chains")
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("n")
        await until(pilot, lambda: type(app.screen).__name__ == "ChainEditor")
        editor = app.screen
        await until(pilot, lambda: editor.min_interval.total_seconds() == 0.1)
        editor.query_one("#name").value = "fast"
        editor.query_one("#run_at").value = "@every 200 ms"
        editor.query_one("#command").text = "SELECT 1"
        await pilot.pause(0.05)
        assert "✓" in text(editor, "run_at-msg"), text(editor, "run_at-msg")
        editor.query_one("#run_at").value = "@every 50 ms"
        await pilot.pause(0.05)
        assert "below the minimum of 100 ms" in text(editor, "run_at-msg")


async def test_task_editor_checks_like_the_engine_and_run_as_must_name_a_role(settings, conn):
    cid = tt.create_chain(conn, "etl", "0 3 * * *")
    tt.add_task(conn, cid, "SELECT 1", task_name="extract")
    app = PgttApp(settings, refresh=0.3, tz=timezone.utc, start_view="chains")
    async with app.run_test(size=(100, 40)) as pilot:
        app.open_chain("etl")
        await until(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        screen = app.screen
        await pilot.press("a")
        await until(pilot, lambda: type(app.screen).__name__ == "TaskEditor")
        editor = app.screen
        editor.query_one("#task_name").value = "re\tport"
        editor.query_one("#kind").value = "PROGRAM"
        editor.query_one("#command").text = "ls"
        editor.query_one("#params").text = '["-l", 1]'
        editor.query_one("#timeout").value = "-1"
        await pilot.pause(0.05)
        assert "parameters line 1: a PROGRAM task's parameter row must be a JSON array of strings" in \
            text(editor, "params-msg")
        assert "timeout: -1: must be 0 (the --task-timeout default)" in text(editor, "num-msg")
        assert "name: must not contain control characters (U+0009" in text(editor, "num-msg")
        assert editor.query_one("#save").disabled
        editor.query_one("#task_name").value = "report"
        editor.query_one("#params").text = '["-l"]'
        editor.query_one("#timeout").value = "0"
        editor.query_one("#run_as").value = "postgres; drop table victim"
        await pilot.pause(0.05)
        assert not editor.query_one("#save").disabled
        await pilot.press("f2")  # the engine refuses: no such role
        await until(pilot, lambda: app.last_action and app.last_action[1] == "failed")
        assert 'run_as: role "postgres; drop table victim" does not exist' in app.last_action[2]
        assert app.screen is editor
        editor.query_one("#run_as").value = "postgres"
        await pilot.pause(0.05)
        await pilot.press("f2")
        await until(pilot, lambda: app.screen is screen)
    assert [(t["task_name"], t["run_as"]) for t in tt.get_chain(conn, cid)["tasks"]] == \
        [("extract", None), ("report", "postgres")]
