"""A role without privileges on a view's module: the chain list, the jobs view and the queues
view show a steady no-access panel (role + grant) instead of an error, check again only
slowly, refuse their actions with one line, and come back by themselves once the grant is
there; a module that is not installed still says so. engine.access.no_access on its own.
A snapshot of the panel at 80x24."""

from __future__ import annotations

from datetime import datetime, timezone

import psycopg
import pytest

from console_host import until
from psycopg import sql
from psycopg.conninfo import make_conninfo

from engine import access
from engine.db import ConnSettings
from engine.pgq import api as pgq_api
from engine.timetable import api as tt
from pgtt_tui.app import PgttApp
from pgtt_tui.dbaccess import ServerInfo
from pgtt_tui.screens.modals import HelpScreen
from pgtt_tui.widgets.common import NoAccessPanel, VimTable

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)


def make_role(conn, dsn, role: str) -> ConnSettings:
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    return ConnSettings(dsn=make_conninfo(dsn, user=role), application_name="pgtt-test")


def drop_role(conn, dsn, role: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def bare_role(conn, dsn):
    """A LOGIN role with no grants of its own (only what PUBLIC has)."""
    role = f"nogrant_{conn.info.dbname}"
    settings = make_role(conn, dsn, role)
    try:
        yield role, settings
    finally:
        drop_role(conn, dsn, role)


def grant(conn, statement: str, schema: str, role: str) -> None:
    conn.execute(sql.SQL(statement).format(sql.Identifier(schema), sql.Identifier(role)))


class Recorder:
    """Counts what the app is told: notifications (toasts) and the views' poll outcomes."""

    def __init__(self) -> None:
        self.toasts: list[str] = []
        self.polls: dict[str, int] = {}

    def __call__(self, message) -> None:
        kind = type(message).__name__
        if kind == "Notify":
            self.toasts.append(message.notification.message)
        elif kind in ("PollDone", "PollFailed", "PollDenied"):
            self.polls[kind] = self.polls.get(kind, 0) + 1


async def settled_polls(pilot, screen, seen: Recorder) -> dict[str, int]:
    """The poll counts once the view has scheduled its next poll (start-up may poll twice)."""
    await until(pilot, lambda: screen._timer is not None and not screen._polling)
    return dict(seen.polls)


def panel_text(screen) -> str:
    return " ".join(str(screen.query_one(NoAccessPanel).render()).split())


def make_app(settings: ConnSettings, view: str) -> PgttApp:
    return PgttApp(settings, refresh=0.2, tz=timezone.utc, start_view=view)


# ---- chains -----------------------------------------------------------------------------------

async def test_chain_list_without_access_shows_the_grant_refuses_actions_and_recovers(conn, dsn, bare_role):
    role, settings = bare_role
    cid = tt.create_chain(conn, "etl", "0 3 * * *")
    tt.add_task(conn, cid, "SELECT 1")
    seen = Recorder()
    app = make_app(settings, "chains")
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.no_access is not None, msg=lambda: seen.__dict__)
        text = panel_text(screen)
        assert f"no access for role {role} to the timetable tables" in text
        assert f"GRANT USAGE ON SCHEMA timetable TO {role};" in text
        assert f"GRANT SELECT ON ALL TABLES IN SCHEMA timetable TO {role};" in text
        assert screen.query_one(NoAccessPanel).display and not screen.query_one("#chains-panel").display
        # refresh is 0.2 s, but a denied view checks again only every 30 s: no polls, no toasts
        polls = await settled_polls(pilot, screen, seen)
        await pilot.pause(1.0)
        assert seen.polls == polls and set(polls) == {"PollDenied"} and seen.toasts == []
        await pilot.press("question_mark")  # the help opens on what the panel means
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert app.screen.focus_topic == "no-access"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)
        await pilot.press("x")  # run now
        await until(pilot, lambda: len(seen.toasts) == 1)
        assert seen.toasts == [f"run now: refused, no access for role {role} to the timetable tables (see the panel)"]
        await pilot.press("p")  # pause
        await until(pilot, lambda: len(seen.toasts) == 2)
        assert seen.toasts[1].startswith("pause/resume: refused, no access for role")
        assert not any(type(s).__name__ == "ConfirmScreen" for s in app.screen_stack)
        assert conn.execute("SELECT live FROM timetable.chain WHERE chain_id = %s", (cid,)).fetchone()[0] is True
        assert conn.execute("SELECT count(*) FROM timetable.chain_run").fetchone()[0] == 0
        # the administrator runs what the panel says; r checks at once and the list is back
        grant(conn, "GRANT USAGE ON SCHEMA {} TO {}", "timetable", role)
        grant(conn, "GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}", "timetable", role)
        await pilot.press("r")
        table = screen.query_one("#chains", VimTable)
        await until(pilot, lambda: screen.no_access is None and table.row_count == 1, msg=lambda: seen.__dict__)
        assert table.selected_key() == "etl" and screen.query_one("#chains-panel").display
        assert not screen.query_one(NoAccessPanel).display
        # with read access only, an action reaches the server, which refuses the write
        await pilot.press("p")
        await until(pilot, lambda: len(seen.toasts) == 3)
        assert "permission denied" in seen.toasts[2]
        assert seen.polls.get("PollFailed", 0) == 0


async def test_chain_detail_without_access_shows_the_panel(conn, dsn, bare_role):
    role, settings = bare_role
    tt.create_chain(conn, "etl", "0 3 * * *")
    seen = Recorder()
    app = make_app(settings, "chains")
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        app.open_chain("etl")
        await until(pilot, lambda: getattr(app.screen, "no_access", None) is not None
                    and type(app.screen).__name__ == "ChainDetailScreen")
        assert f"GRANT USAGE ON SCHEMA timetable TO {role};" in panel_text(app.screen)
        await pilot.press("a")  # add task
        await until(pilot, lambda: len(seen.toasts) == 1)
        assert seen.toasts[0].startswith("add task: refused, no access for role")
        assert type(app.screen).__name__ == "ChainDetailScreen"  # no editor opened


async def test_chains_without_the_timetable_module_say_not_installed_not_no_access(make_db):
    """A missing module is no privilege problem: the panel says "not installed" and names the
    command that installs it; no toast with the server's "does not exist"."""
    dsn = make_db(("schedule",))
    seen = Recorder()
    app = make_app(ConnSettings(dsn=dsn, application_name="pgtt-test"), "chains")
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        await until(pilot, lambda: app.screen.no_access is not None)
        panel = app.screen.query_one(NoAccessPanel)
        assert panel.display and "not installed" in panel.border_title and "no access" not in panel.border_title
        assert "db init --modules timetable" in panel_text(app.screen)
        assert not any("does not exist" in toast for toast in seen.toasts)


# ---- jobs ----------------------------------------------------------------------------------------

async def test_jobs_without_usage_on_schedule_show_the_grant_and_recover(conn, dsn, bare_role):
    role, settings = bare_role
    conn.execute("REVOKE USAGE ON SCHEMA schedule FROM PUBLIC")  # by default PUBLIC may use its SQL API
    seen = Recorder()
    app = make_app(settings, "jobs")
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.no_access is not None, msg=lambda: seen.__dict__)
        text = panel_text(screen)
        assert f"no access for role {role} to the schedule module" in text
        assert f"GRANT USAGE ON SCHEMA schedule TO {role};" in text and "GRANT SELECT" not in text
        assert not screen.query_one("#job-tabs").display
        await pilot.press("n")  # new cron job
        await until(pilot, lambda: len(seen.toasts) == 1)
        assert seen.toasts[0].startswith("new cron job: refused, no access for role")
        assert app.screen is screen
        grant(conn, "GRANT USAGE ON SCHEMA {} TO {}", "schedule", role)
        with psycopg.connect(settings.dsn, autocommit=True) as mine:
            mine.execute("SELECT schedule.create_job('{\"name\": \"mine\", \"cron\": \"0 4 * * *\", "
                         "\"commands\": [\"SELECT 1\"]}'::jsonb)")
        await pilot.press("r")
        cron = screen.query_one("#cron-table", VimTable)
        await until(pilot, lambda: screen.no_access is None and cron.row_count == 1)
        assert screen.query_one("#job-tabs").display
        assert seen.polls.get("PollFailed", 0) == 0 and len(seen.toasts) == 1


async def test_jobs_without_the_schedule_module_say_so_once(make_db):
    dsn = make_db(("timetable",))
    seen = Recorder()
    app = make_app(ConnSettings(dsn=dsn, application_name="pgtt-test"), "jobs")
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        await until(pilot, lambda: seen.polls.get("PollDone", 0) >= 4)
        assert app.screen.no_access is None and not app.screen.query_one(NoAccessPanel).display
        assert seen.toasts == ["the schedule module is not installed here (pgtt-tui db init)"]


# ---- queues ---------------------------------------------------------------------------------------

async def test_queues_without_usage_on_pgq_show_the_grant_refuse_actions_and_recover(conn, dsn, bare_role):
    role, settings = bare_role
    pgq_api.create_queue(conn, "orders")
    conn.execute("REVOKE USAGE ON SCHEMA pgq FROM PUBLIC")
    seen = Recorder()
    app = make_app(settings, "queues")
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.no_access is not None, msg=lambda: seen.__dict__)
        text = panel_text(screen)
        assert f"no access for role {role} to the PgQ tables" in text
        assert f"GRANT USAGE ON SCHEMA pgq TO {role};" in text
        await pilot.press("a")  # add consumer
        await until(pilot, lambda: len(seen.toasts) == 1)
        assert seen.toasts[0].startswith("add consumer: refused, no access for role")
        assert app.screen is screen  # no prompt opened
        polls = await settled_polls(pilot, screen, seen)
        await pilot.pause(1.0)
        assert seen.polls == polls and set(polls) == {"PollDenied"}
        grant(conn, "GRANT USAGE ON SCHEMA {} TO {}", "pgq", role)
        await pilot.press("r")
        queues = screen.query_one("#queues", VimTable)
        await until(pilot, lambda: screen.no_access is None and queues.row_count == 1)
        assert queues.selected_key() == "orders" and len(seen.toasts) == 1


async def test_queues_without_pgq_installed_still_say_so(make_db, conn, dsn):
    bare = make_db(("timetable",))
    role = f"nogrant_{conn.info.dbname}_q"
    settings = make_role(conn, dsn, role)
    try:
        app = make_app(ConnSettings(dsn=make_conninfo(bare, user=role), application_name="pgtt-test"), "queues")
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.last_data is not None)
            assert screen.no_access is None and not screen.query_one(NoAccessPanel).display
            assert "not installed" in screen.query_one("#queues-panel").border_title
    finally:
        drop_role(conn, dsn, role)


# ---- engine.access.no_access ---------------------------------------------------------------------

def test_no_access_names_what_is_missing_and_only_that(conn, dsn, bare_role, make_db):
    role, settings = bare_role
    conn.execute("REVOKE SELECT ON pgq.queue FROM PUBLIC")
    with psycopg.connect(settings.dsn, autocommit=True) as mine:
        tt_denied = access.no_access(mine, "timetable")
        assert tt_denied.role == role and tt_denied.missing == (
            "USAGE on schema timetable", "SELECT on 6 of its tables")
        pgq_denied = access.no_access(mine, "pgq")  # PUBLIC still has USAGE on pgq
        assert pgq_denied.missing == ("SELECT on pgq.queue",)
        assert pgq_denied.grants == (f"GRANT SELECT ON pgq.queue TO {role};",)
        assert access.no_access(mine, "schedule") is None  # its SQL API is PUBLIC's
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
            mine.execute("SELECT * FROM timetable.chain")
        assert access.is_permission_error(err.value)
    assert access.no_access(conn, "timetable") is None  # a superuser lacks nothing
    with psycopg.connect(make_db(("pgq",)), autocommit=True) as other:
        assert access.no_access(other, "timetable") is None  # not installed is not "no access"


def test_no_access_quotes_the_role_in_the_grant(conn, dsn):
    role = f"Ops Viewer {conn.info.dbname}"
    settings = make_role(conn, dsn, role)
    try:
        with psycopg.connect(settings.dsn, autocommit=True) as mine:
            denied = access.no_access(mine, "timetable")
        assert denied.grants[0] == f'GRANT USAGE ON SCHEMA timetable TO "{role}";'
        for statement in denied.grants:  # what the panel says is what an administrator can run
            conn.execute(statement)
        with psycopg.connect(settings.dsn, autocommit=True) as mine:
            assert access.no_access(mine, "timetable") is None
            assert mine.execute("SELECT count(*) FROM timetable.chain").fetchone()[0] == 0
    finally:
        drop_role(conn, dsn, role)


# ---- snapshot ----------------------------------------------------------------------------------

@pytest.fixture
def viewer(conn, dsn):
    settings = make_role(conn, dsn, "viewer")  # a fixed name: it is in the picture
    try:
        yield settings
    finally:
        drop_role(conn, dsn, "viewer")


def test_snapshot_chains_no_access_80x24(snap_compare, viewer):
    app = PgttApp(viewer, refresh=60, clock=lambda: NOW, tz=timezone.utc, start_view="chains",
                  server=ServerInfo(where="db-host:5432/pgtt_demo", role="viewer", version="18.1"))

    async def run_before(pilot):
        await until(pilot, lambda: getattr(pilot.app.screen, "no_access", None) is not None)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
