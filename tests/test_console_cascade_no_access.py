"""The cascade view for a role that may not read pgq_node: the no-access panel of the other
views (role, what is missing, the grants from the catalog) instead of "not a cascade node";
its operation keys refused with one line; back to the tree on r once the grants are there.
pgq_node installed but without a node still says "not a cascade node", pgq_node missing says
it is not installed. engine.access.no_access(conn, "cascade") on its own, on our pgq_node and
on the real extension."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from engine import access
from engine.views import queues as queue_views
from engine.cascade import ops, status
from engine.cascade.status import collect_status
from engine.db import ConnSettings
from engine.embedded import Cluster
from pgtt_tui.screens.modals import HelpScreen
from pgtt_tui.screens.plan import PlanScreen
from pgtt_tui.widgets.common import NoAccessPanel
from tests.test_cascade_helpers import QUEUE, prepare_db, run_plan
from tests.test_cascade_real_ext import BINDIR, needs_ext
from tests.test_console_no_access import (  # noqa: F401 - bare_role is a fixture
    Recorder, bare_role, drop_role, make_app, make_role, panel_text, until)
from tests.test_console_polling import on_hidden_widget

pytestmark = pytest.mark.timeout(120)

STATUS_FUNCTIONS = ("get_queue_locations", "get_node_info", "get_consumer_info", "get_subscriber_info")


@pytest.fixture
def root_node(dsn):
    """This database is the root A of queue cq (its location: the superuser's DSN)."""
    run_plan(ops.plan_create_root(QUEUE, "A", dsn))
    return dsn


def no_access_of(settings: ConnSettings) -> access.NoAccess | None:
    with psycopg.connect(settings.dsn, autocommit=True) as mine:
        return access.no_access(mine, "cascade")


def shows_the_tree(screen) -> bool:
    return screen.no_access is None and screen.status is not None and screen.status.root == "A"


# ---- the view ------------------------------------------------------------------------------------

async def test_no_usage_on_pgq_node_shows_the_panel_refuses_operations_and_recovers(conn, bare_role, root_node):
    role, settings = bare_role
    conn.execute("REVOKE USAGE ON SCHEMA pgq_node FROM PUBLIC")
    seen = Recorder()
    app = make_app(settings, "cascade")
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.no_access is not None, msg=lambda: seen.__dict__)
        text = panel_text(screen)
        assert f"no access for role {role} to the cascade status (pgq_node)" in text
        assert f"GRANT USAGE ON SCHEMA pgq_node TO {role};" in text
        assert f"GRANT SELECT ON pgq_node.node_info TO {role};" in text
        assert "GRANT EXECUTE ON FUNCTION pgq_node.get_queue_locations(text), pgq_node.get_node_info(text)" in text
        assert "not a cascade node" not in text and screen.last_data is None
        assert screen.query_one(NoAccessPanel).display and not screen.query_one("#tree-panel").display
        await pilot.press("question_mark")  # the help opens on what the panel means
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert app.screen.focus_topic == "no-access"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)
        await pilot.pause()
        assert not on_hidden_widget(screen), screen.focused  # not back on the hidden tree
        # operation keys and the menu: one line each, nothing opened, nothing built
        await pilot.press("s")
        await until(pilot, lambda: len(seen.toasts) == 1)
        assert seen.toasts == [f"switchover: refused, no access for role {role} to the cascade status (pgq_node) "
                               "(see the panel)"]
        await pilot.press("f")
        await pilot.press("enter")
        await until(pilot, lambda: len(seen.toasts) == 3, msg=lambda: (seen.toasts, screen.focused))
        assert seen.toasts[1].startswith("failover: refused, no access for role")
        assert seen.toasts[2].startswith("operations: refused, no access for role")
        assert app.screen is screen and not any(isinstance(s, PlanScreen) for s in app.screen_stack)
        assert set(seen.polls) == {"PollDenied"}
        # the administrator runs what the panel says; r checks at once and the tree is back
        for statement in screen.no_access.grants:
            conn.execute(statement)
        await pilot.press("r")
        await until(pilot, lambda: shows_the_tree(screen), msg=lambda: seen.__dict__)
        assert screen.query_one("#tree-panel").display and not screen.query_one(NoAccessPanel).display
        assert "Cascade cq · root A" in str(screen.query_one("#tree-panel").border_title)
        assert seen.polls.get("PollFailed", 0) == 0 and len(seen.toasts) == 3


async def test_execute_revoked_on_one_status_function_names_that_grant(conn, bare_role, root_node):
    role, settings = bare_role
    # a site that opened the cascade status to everyone, then took one function back
    conn.execute("GRANT SELECT ON pgq_node.node_info TO PUBLIC")
    for name in STATUS_FUNCTIONS:
        conn.execute(f"GRANT EXECUTE ON FUNCTION pgq_node.{name}(text) TO PUBLIC")
    conn.execute("REVOKE EXECUTE ON FUNCTION pgq_node.get_node_info(text) FROM PUBLIC")
    seen = Recorder()
    app = make_app(settings, "cascade")
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.no_access is not None, msg=lambda: seen.__dict__)
        assert screen.no_access.missing == ("EXECUTE on pgq_node.get_node_info(text)",)
        assert screen.no_access.grants == (f"GRANT EXECUTE ON FUNCTION pgq_node.get_node_info(text) TO {role};",)
        assert f"GRANT EXECUTE ON FUNCTION pgq_node.get_node_info(text) TO {role};" in panel_text(screen)
        await pilot.press("p")
        await until(pilot, lambda: len(seen.toasts) == 1)
        assert seen.toasts[0].startswith(f"pause/resume: refused, no access for role {role}")
        conn.execute(screen.no_access.grants[0])
        await pilot.press("r")
        await until(pilot, lambda: shows_the_tree(screen), msg=lambda: seen.__dict__)
        assert seen.polls.get("PollFailed", 0) == 0


async def test_pgq_node_readable_but_no_node_is_not_a_cascade_node(conn, bare_role):
    role, settings = bare_role
    for statement in no_access_of(settings).grants:  # this role may read everything, there is nothing
        conn.execute(statement)
    assert no_access_of(settings) is None
    seen = Recorder()
    app = make_app(settings, "cascade")
    async with app.run_test(size=(100, 30), message_hook=seen) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.last_data is not None, msg=lambda: seen.__dict__)
        assert screen.last_data.status is None and screen.no_access is None
        assert screen.last_data.note == "this database is not a cascade node (pgq_node has no queue here)"
        assert not screen.query_one(NoAccessPanel).display and screen.query_one("#tree-panel").display
        await pilot.press("s")  # no panel: the view's own answer, not a refusal for access
        await until(pilot, lambda: len(seen.toasts) == 1)
        assert seen.toasts == ["select a node first (j/k)"]


async def test_without_pgq_node_the_view_says_it_is_not_installed(make_db, conn, dsn):
    bare = make_db(("pgq",))
    with psycopg.connect(bare, autocommit=True) as other:  # an empty schema of that name is no module
        other.execute("CREATE SCHEMA pgq_node")
        other.execute("REVOKE USAGE ON SCHEMA pgq_node FROM PUBLIC")
    role = f"nocasc_{conn.info.dbname}_n"
    settings = make_role(conn, dsn, role)
    try:
        mine = ConnSettings(dsn=make_conninfo(bare, user=role), application_name="pgtt-test")
        assert no_access_of(mine) is None
        app = make_app(mine, "cascade")
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.last_data is not None)
            assert screen.no_access is None and not screen.query_one(NoAccessPanel).display
            assert screen.last_data.note.startswith("this database is not a cascade node: pgq_node is not installed")
    finally:
        drop_role(conn, dsn, role)


# ---- engine.access.no_access(conn, "cascade") ----------------------------------------------------

def test_cascade_checks_exactly_what_the_view_reads():
    """The functions engine.cascade.status calls and the table the view lists queues from are
    the ones no_access checks: a call added there without adding it here fails this test."""
    called = set()
    for name in dir(status):
        value = getattr(status, name)
        if name.endswith("_SQL") and isinstance(value, str):
            called |= set(re.findall(r"\b(pgq_node|pgq)\.(\w+)\(", value))
    part = access.VIEW_PARTS["cascade"]
    assert called == {(schema, fn) for schema, fn, _ in part.calls}
    assert re.findall(r"FROM (\w+)\.(\w+)", queue_views.Q_CASCADE_QUEUES) == [(part.schema, r) for r in part.reads]


def test_cascade_grants_quote_the_role_and_are_what_fixes_it(conn, dsn, root_node):
    role = f'Ops "Cascade" {conn.info.dbname}'
    settings = make_role(conn, dsn, role)
    try:
        conn.execute("REVOKE USAGE ON SCHEMA pgq FROM PUBLIC")
        denied = no_access_of(settings)
        quoted = '"' + role.replace('"', '""') + '"'
        assert denied.role == role and denied.missing == (
            "USAGE on schema pgq", "SELECT on pgq_node.node_info", "EXECUTE on 4 of the functions it calls")
        assert denied.grants == (
            f"GRANT USAGE ON SCHEMA pgq TO {quoted};", f"GRANT SELECT ON pgq_node.node_info TO {quoted};",
            "GRANT EXECUTE ON FUNCTION pgq_node.get_queue_locations(text), pgq_node.get_node_info(text), "
            f"pgq_node.get_consumer_info(text), pgq_node.get_subscriber_info(text) TO {quoted};")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            collect_status(settings.dsn, QUEUE)
        for statement in denied.grants:
            conn.execute(statement)
        assert no_access_of(settings) is None
        st = collect_status(settings.dsn, QUEUE)
        assert st.root == "A" and st.nodes["A"].node_type == "root"
    finally:
        drop_role(conn, dsn, role)


@pytest.fixture
def ext_node():
    """A database with the real pgq and pgq_node extensions, root A of queue cq."""
    cluster = Cluster(base=Path(tempfile.mkdtemp(prefix="pgtt-ext-noaccess-")), bindir=BINDIR, fast=True)
    cluster.init()
    cluster.start()
    try:
        dsn = prepare_db(cluster, real_extensions=True)
        run_plan(ops.plan_create_root(QUEUE, "A", dsn))
        yield cluster, dsn
    finally:
        cluster.destroy()


@needs_ext
def test_on_the_real_extension_the_grants_come_from_its_catalog(ext_node):
    cluster, dsn = ext_node
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("CREATE ROLE casc_viewer LOGIN")
        admin.execute("REVOKE EXECUTE ON FUNCTION pgq.get_queue_info(text) FROM PUBLIC")
        mine = ConnSettings(dsn=cluster.dsn("casc", user="casc_viewer"))
        denied = no_access_of(mine)
        assert "SELECT on pgq_node.node_info" in denied.missing
        assert denied.grants[-1].startswith("GRANT EXECUTE ON FUNCTION pgq_node.get_queue_locations(text), ")
        assert denied.grants[-1].endswith(", pgq.get_queue_info(text) TO casc_viewer;")
        for statement in denied.grants:
            admin.execute(statement)
    assert no_access_of(mine) is None
    assert collect_status(mine.dsn, QUEUE).root == "A"
