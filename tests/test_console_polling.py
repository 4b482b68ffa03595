"""A view polls only while the operator sees it (pgtt_tui/screens/base.py ``in_sight``).

Polls are counted from the PollDone messages the views post (a message hook). A poll held
in flight by a table lock the test owns makes "covered while a poll runs" certain rather
than a matter of timing. A long refresh interval means any poll beyond the expected ones
would come from a bug, not from the schedule."""

from __future__ import annotations

from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

from engine.cascade import ops
from engine.timetable import api as tt
from pgtt_tui.screens.cascade import CascadeScreen, PlanReady
from pgtt_tui.screens.chains import ChainsScreen
from pgtt_tui.screens.editors import ChainEditor
from pgtt_tui.screens.modals import ConfirmScreen, HelpScreen
from pgtt_tui.screens.plan import PlanScreen
from pgtt_tui.widgets.common import NoAccessPanel, VimTable
from tests.test_cascade_helpers import QUEUE, run_plan
from tests.test_console_no_access import bare_role, grant, make_app, until  # noqa: F401 - bare_role is a fixture

pytestmark = pytest.mark.timeout(120)

SLOW = 60.0  # refresh interval: no scheduled poll happens within a test


class PollCount:
    """PollDone messages per view."""

    def __init__(self) -> None:
        self.done: dict[str, int] = {}

    def __call__(self, message) -> None:
        if type(message).__name__ == "PollDone":
            self.done[message.view] = self.done.get(message.view, 0) + 1

    def __getitem__(self, view: str) -> int:
        return self.done.get(view, 0)


def settled(view) -> bool:
    """The view's poll ended and its next one is scheduled."""
    return view._timer is not None and not view._polling


def idle(view) -> bool:
    """No poll running and none scheduled: nothing polls until something asks."""
    return view._timer is None and not view._polling


@contextmanager
def locked(dsn: str, schema: str, table: str):
    """Hold an ACCESS EXCLUSIVE lock on the table: a poll that reads it waits until the end."""
    with psycopg.connect(dsn) as holder:
        holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(schema, table)))
        yield
        holder.rollback()


def waiting_on_lock(dsn: str, schema: str, table: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = l.relation "
                         "JOIN pg_namespace n ON n.oid = r.relnamespace "
                         "WHERE n.nspname = %s AND r.relname = %s AND NOT l.granted",
                         (schema, table)).fetchone()[0] > 0


async def test_chain_list_under_a_full_screen_editor_does_not_poll_and_refreshes_once_after(settings, conn, dsn):
    tt.create_chain(conn, "etl", "0 3 * * *")
    polls = PollCount()
    app = make_app(settings, "chains")
    app.refresh_s = SLOW
    async with app.run_test(size=(100, 30), message_hook=polls) as pilot:
        chains = app.screen
        assert isinstance(chains, ChainsScreen)
        await until(pilot, lambda: settled(chains))
        # the editor opens while a poll of the list runs (held by the lock)
        with locked(dsn, "timetable", "chain"):
            await pilot.press("r")
            await until(pilot, lambda: waiting_on_lock(dsn, "timetable", "chain"))
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, ChainEditor))
        before = polls["chains"]
        await until(pilot, lambda: not chains._polling)
        # that poll ended under the editor and scheduled nothing
        assert idle(chains) and app.screen is not chains
        assert polls["chains"] == before + 1
        tt.create_chain(conn, "added-meanwhile", "0 4 * * *")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is chains and settled(chains))
        assert polls["chains"] == before + 2  # one refresh on coming back, then the schedule
        table = chains.query_one(VimTable)
        assert {str(table.get_row_at(i)[0]) for i in range(table.row_count)} == {"etl", "added-meanwhile"}


async def test_cascade_under_the_plan_walker_does_not_poll_and_refreshes_once_after(settings, dsn):
    run_plan(ops.plan_create_root(QUEUE, "A", dsn))
    plan = ops.plan_pause(dsn, QUEUE, "A", True)
    polls = PollCount()
    app = make_app(settings, "cascade")
    app.refresh_s = SLOW
    async with app.run_test(size=(100, 30), message_hook=polls) as pilot:
        cascade = app.screen
        assert isinstance(cascade, CascadeScreen)
        await until(pilot, lambda: settled(cascade) and cascade.status is not None)
        with locked(dsn, "pgq_node", "node_info"):
            await pilot.press("r")
            await until(pilot, lambda: waiting_on_lock(dsn, "pgq_node", "node_info"))
            cascade.post_message(PlanReady(plan, "pause A"))  # what building the plan ends with
            await until(pilot, lambda: isinstance(app.screen, PlanScreen))
        before = polls["cascade"]
        await until(pilot, lambda: not cascade._polling)
        assert idle(cascade) and isinstance(app.screen, PlanScreen)
        assert polls["cascade"] == before + 1
        # leaving the walker: its dismiss callback asks for a poll and the view resumes: one poll
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is cascade and settled(cascade))
        assert polls["cascade"] == before + 2
        assert cascade.plan_screen is None


async def test_a_view_under_a_dialog_keeps_polling(settings, conn):
    tt.create_chain(conn, "etl", "0 3 * * *")
    polls = PollCount()
    app = make_app(settings, "chains")  # refresh 0.2 s
    async with app.run_test(size=(100, 30), message_hook=polls) as pilot:
        chains = app.screen
        await until(pilot, lambda: chains.query_one(VimTable).row_count == 1)
        await pilot.press("s")  # stop etl? asks first
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        confirm = app.screen
        under = polls["chains"]
        # the list stays visible around the dialog, so it stays live
        await until(pilot, lambda: polls["chains"] >= under + 3, msg=lambda: polls.done)
        assert app.screen is confirm
        await pilot.press("n")
        await until(pilot, lambda: app.screen is chains)
        later = polls["chains"]
        await until(pilot, lambda: polls["chains"] >= later + 2)  # and its schedule goes on


async def test_switching_to_a_view_polls_it_once(settings, conn):
    tt.create_chain(conn, "etl", "0 3 * * *")
    polls = PollCount()
    app = make_app(settings, "chains")
    app.refresh_s = SLOW
    async with app.run_test(size=(100, 30), message_hook=polls) as pilot:
        chains = app.screen
        await until(pilot, lambda: settled(chains))
        assert polls["chains"] == 1  # the start view
        await pilot.press("1")
        overview = app.screen
        await until(pilot, lambda: overview is not chains and settled(overview))
        assert polls["overview"] == 1  # a view switched to for the first time
        assert idle(chains) and polls["chains"] == 1
        await pilot.press("2")
        await until(pilot, lambda: app.screen is chains and settled(chains))
        assert polls["chains"] == 2 and polls["overview"] == 1  # and when switched back to
        assert idle(overview)


def on_hidden_widget(screen) -> bool:
    node = screen.focused
    while node is not None and node is not screen:
        if not node.display:
            return True
        node = node.parent
    return False


async def test_focus_after_help_over_the_no_access_panel_is_not_on_the_hidden_table(conn, bare_role):
    role, settings = bare_role
    tt.create_chain(conn, "etl", "0 3 * * *")
    app = make_app(settings, "chains")
    async with app.run_test(size=(100, 30)) as pilot:
        chains = app.screen
        table = chains.query_one(VimTable)
        await until(pilot, lambda: chains.no_access is not None)
        assert chains.query_one(NoAccessPanel).display and not chains.query_one("#chains-panel").display
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is chains)
        await pilot.pause()
        assert not on_hidden_widget(chains), chains.focused
        await pilot.press("enter")  # Enter on the list is refused, not an open of a hidden row
        await pilot.pause()
        assert app.screen is chains
        # granted: the table is back and has the focus again
        grant(conn, "GRANT USAGE ON SCHEMA {} TO {}", "timetable", role)
        grant(conn, "GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}", "timetable", role)
        await pilot.press("r")
        await until(pilot, lambda: chains.no_access is None and table.row_count == 1)
        assert chains.focused is table
