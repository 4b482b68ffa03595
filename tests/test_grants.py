"""`pgtt-tui db grant --role R --as reader|operator`: the documented role sets (README
"Security model"); a reader never sees a remote task's connection string (its password)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from engine import grants
from engine.errors import InputError
from pgtt_tui.cli import app
from tests._timetable_support import q, q1


@pytest.fixture
def role(dsn):
    name = f"person_{psycopg.conninfo.conninfo_to_dict(dsn)['dbname']}"
    q(dsn, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name, make_conninfo(dsn, user=name)
    q(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
    q(dsn, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    q(dsn, sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_reader_sees_chains_and_queues_but_no_connection_secrets(dsn, role):
    name, role_dsn = role
    cid = q1(dsn, "SELECT timetable.add_job('remote', '@every 1 hour', 'SELECT 1', "
                  "job_client_name => NULL, job_live => false)")
    q(dsn, "UPDATE timetable.task SET database_connection = 'host=x password=hunter2' WHERE chain_id = %s", (cid,))
    with psycopg.connect(dsn, autocommit=True) as conn:
        grants.apply(conn, name, "reader")
    assert q1(role_dsn, "SELECT chain_name FROM timetable.chain WHERE chain_id = %s", (cid,)) == "remote"
    assert q1(role_dsn, "SELECT command FROM timetable.task WHERE chain_id = %s", (cid,)) == "SELECT 1"
    # the task row holds the connection masked; the password itself lives in timetable_secret
    assert q1(role_dsn, "SELECT database_connection FROM timetable.task WHERE chain_id = %s", (cid,)) \
        == "host=x password=***"
    assert q(role_dsn, "SELECT * FROM pgq.get_queue_info()") == []
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        q(role_dsn, "SELECT database_connection FROM timetable_secret.task_connection")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # a reader may not start chains
        q(role_dsn, "SELECT timetable.notify_chain_start(%s, 'w')", (cid,))


def test_operator_may_start_chains_and_administer_queues(dsn, role):
    name, role_dsn = role
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = grants.apply(conn, name, "operator")
    assert f'GRANT "timetable_operator" TO "{name}"' in done and f'GRANT "pgq_admin" TO "{name}"' in done
    cid = q1(dsn, "SELECT timetable.add_job('j', '@every 1 hour', 'SELECT 1', job_live => false)")
    q(role_dsn, "SELECT timetable.notify_chain_start(%s, 'w')", (cid,))
    assert q1(dsn, "SELECT requested_by FROM timetable.pending_start") == name
    q(role_dsn, "SELECT pgq.create_queue('q_by_operator')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        q(role_dsn, "SELECT database_connection FROM timetable_secret.task_connection")


def test_bad_input_is_refused_and_changes_nothing(dsn, role):
    name, role_dsn = role
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(InputError, match="--as: 'admin' is not one of reader, operator"):
            grants.apply(conn, name, "admin")
        with pytest.raises(InputError, match="--role: no role 'nobody_here'"):
            grants.apply(conn, "nobody_here", "reader")
    result = CliRunner().invoke(app, ["db", "grant", "--role", name, "--as", "reader", "--dry-run", "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert f'GRANT USAGE ON SCHEMA "timetable" TO "{name}";' in result.output
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the dry run changed nothing
        q(role_dsn, "SELECT chain_name FROM timetable.chain")
