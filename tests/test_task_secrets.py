"""Issue 14 (3): remote-task passwords are masked wherever they are shown, a read-only role
cannot read them, and an export with masked passwords does not import as ``password=***``."""

from __future__ import annotations

import json

import psycopg
import pytest
from typer.testing import CliRunner

from engine import access
from engine.db import redact
from engine.errors import InputError
from engine.timetable import api, chainfile
from engine.timetable.executor import DEFS_SQL
from pgtt_tui.cli import app as cli_app
from test_console_no_access import drop_role, make_role

SECRET = "s3cr3t-pw"
REMOTE = f"host=db1 port=5433 dbname=x user=u password={SECRET}"
SHOWN = "host=db1 port=5433 dbname=x user=u password=***"


def cli(dsn: str, *args: str):
    return CliRunner().invoke(cli_app, ["--dsn", dsn, *args], catch_exceptions=False)


@pytest.fixture
def remote_chain(conn):
    cid = api.create_chain(conn, "remote", "0 4 * * *")
    tid = api.add_task(conn, cid, "SELECT 1", database_connection=REMOTE)
    return cid, tid


def secret_rows(conn) -> list[tuple]:
    return conn.execute("SELECT task_id, database_connection FROM timetable_secret.task_connection "
                        "ORDER BY task_id").fetchall()


@pytest.mark.parametrize("text", [
    REMOTE, "password='a b\\' c' host=x", "PASSWORD = x", "postgresql://u:pw@h:5/db", "postgres://u@h/db",
    "host=h dbname=d", "postgresql://u:pw@h/db?password=z",
])
def test_sql_mask_is_engine_redact(conn, text):
    assert conn.execute("SELECT timetable_secret.redact(%s)", (text,)).fetchone()[0] == redact(text)


def test_password_leaves_the_task_row_and_the_engine_still_gets_it(conn, remote_chain):
    cid, tid = remote_chain
    assert conn.execute("SELECT database_connection FROM timetable.task WHERE task_id = %s",
                        (tid,)).fetchone()[0] == SHOWN
    assert secret_rows(conn) == [(tid, REMOTE)]
    defs = conn.execute(DEFS_SQL, ([cid],)).fetchone()
    assert defs[-1][0][6] == REMOTE  # the executor connects with the whole string
    # SQL written for pg_timetable: plain INSERT / UPDATE of the column
    t2 = conn.execute("INSERT INTO timetable.task (chain_id, task_order, kind, command, database_connection) "
                      "VALUES (%s, 20, 'SQL', 'SELECT 2', 'postgresql://u:pw2@h/db') RETURNING task_id",
                      (cid,)).fetchone()[0]
    assert conn.execute("SELECT database_connection FROM timetable.task WHERE task_id = %s",
                        (t2,)).fetchone()[0] == "postgresql://u:***@h/db"
    # writing back the masked value (the console's task editor, unchanged) keeps the secret
    api.update_task(conn, tid, database_connection=SHOWN, timeout=5)
    assert dict(secret_rows(conn))[tid] == REMOTE
    # a masked password with anything else changed cannot be guessed back: refused, nothing changed
    with pytest.raises(psycopg.errors.CheckViolation, match="database_connection: the password is masked"):
        api.update_task(conn, tid, database_connection=SHOWN.replace("db1", "db2"))
    with pytest.raises(psycopg.errors.CheckViolation, match="masked"):
        api.add_task(conn, cid, "SELECT 3", database_connection="host=z password=***")
    assert dict(secret_rows(conn))[tid] == REMOTE
    # no password any more: the secret goes; deleting a task takes its secret along
    api.update_task(conn, tid, database_connection="service=remote")
    assert [r[0] for r in secret_rows(conn)] == [t2]
    api.delete_task(conn, t2)
    assert secret_rows(conn) == []


def test_chain_show_masks_and_show_secrets_reveals(dsn, remote_chain):
    for args in (["--json", "chain", "show", "remote"], ["chain", "show", "remote"], ["chain", "export", "remote"]):
        out = cli(dsn, *args)
        assert out.exit_code == 0 and SECRET not in out.output and "password=***" in out.output, out.output
    out = cli(dsn, "--json", "chain", "show", "remote", "--show-secrets")
    assert out.exit_code == 0 and json.loads(out.output)["tasks"][0]["database_connection"] == REMOTE
    assert SECRET in cli(dsn, "chain", "export", "remote", "--show-secrets").output
    for args in (["--read-only", "chain", "show", "remote", "--show-secrets"],
                 ["--read-only", "chain", "export", "--show-secrets"]):
        with pytest.raises(Exception, match="read-only mode: --show-secrets is not allowed"):
            cli(dsn, *args)


def test_sendmail_password_masked_in_show(conn):
    cid = api.create_chain(conn, "mail", "0 4 * * *")
    api.add_task(conn, cid, "SendMail", kind="BUILTIN", parameters=[{"username": "u", "password": "mailpw",
                                                                       "serverhost": "h", "senderaddr": "a@b",
                                                                       "toaddr": ["c@d"]}])
    shown = api.get_chain(conn, "mail")["tasks"][0]["parameters"][0]
    assert shown["password"] == "***"
    assert api.get_chain(conn, "mail", secrets=True)["tasks"][0]["parameters"][0]["password"] == "mailpw"


def test_the_panels_read_grant_shows_the_chains_but_not_the_password(conn, dsn, remote_chain):
    role = f"reader_{conn.info.dbname}"
    settings = make_role(conn, dsn, role)
    try:
        with psycopg.connect(settings.dsn, autocommit=True) as rconn:
            denied = access.no_access(rconn, "timetable")
            assert denied is not None and denied.grants
            for statement in denied.grants:  # exactly what the no-access panel suggests
                conn.execute(statement)
            assert access.no_access(rconn, "timetable") is None
            chain = api.get_chain(rconn, "remote")  # what the console's chain detail reads
            assert chain["tasks"][0]["database_connection"] == SHOWN
            assert api.chain_page(rconn).rows[0]["chain_name"] == "remote"
            every = rconn.execute("SELECT string_agg(t::text, ' ') FROM timetable.task t").fetchone()[0]
            assert SECRET not in every
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                rconn.execute("SELECT * FROM timetable_secret.task_connection")
            with pytest.raises(InputError, match="may not read connection secrets"):
                api.get_chain(rconn, "remote", secrets=True)
        out = CliRunner().invoke(cli_app, ["--dsn", settings.dsn, "chain", "show", "remote", "--show-secrets"])
        assert out.exit_code != 0 and SECRET not in out.output
    finally:
        drop_role(conn, dsn, role)


def test_import_of_a_masked_export_keeps_the_secret_or_refuses(conn, dsn, remote_chain, tmp_path):
    masked = chainfile.export_chains(conn, ["remote"])
    assert SECRET not in masked and "password=***" in masked
    path = tmp_path / "remote.yaml"
    path.write_text(masked)
    # the same chain, replaced: its task keeps the secret it had
    chainfile.import_chains(conn, chainfile.load_chain_file(path), replace=True)
    tid = conn.execute("SELECT task_id FROM timetable.task").fetchone()[0]
    assert secret_rows(conn) == [(tid, REMOTE)]
    # no chain (or no such task) to keep it from: refused, naming chain and task; nothing changed
    other = tmp_path / "other.yaml"
    other.write_text(masked.replace("name: remote", "name: elsewhere"))
    with pytest.raises(InputError) as refused:
        chainfile.import_chains(conn, chainfile.load_chain_file(other))
    assert "elsewhere" in str(refused.value) and "task 1" in str(refused.value) and "masked" in str(refused.value)
    assert conn.execute("SELECT count(*) FROM timetable.chain").fetchone()[0] == 1
    with pytest.raises(InputError, match="elsewhere"):
        cli(dsn, "chain", "import", str(other))


def test_an_insert_that_does_not_insert_leaves_the_existing_tasks_secret_alone(conn, remote_chain):
    """BEFORE INSERT triggers fire for rows that ON CONFLICT then skips (or turns into an
    UPDATE): such an insert naming an existing task's id must not replace or delete that
    task's secret, whose row would still show the old masked string."""
    cid, tid = remote_chain
    insert = ("INSERT INTO timetable.task (task_id, chain_id, task_order, kind, command, database_connection) "
              "VALUES (%s, %s, 99, 'SQL', 'SELECT 1', %s) ON CONFLICT (task_id) DO NOTHING")
    for other in ("host=evil.example user=u password=theirs", "host=evil.example user=u", None):
        conn.execute(insert, (tid, cid, other))
        assert secret_rows(conn) == [(tid, REMOTE)], other
    assert conn.execute("SELECT database_connection FROM timetable.task WHERE task_id = %s",
                        (tid,)).fetchone()[0] == SHOWN
    with pytest.raises(psycopg.errors.UniqueViolation):
        with conn.transaction():
            conn.execute(insert.replace(" ON CONFLICT (task_id) DO NOTHING", ""), (tid, cid, "host=e password=x"))
    assert secret_rows(conn) == [(tid, REMOTE)]
    # an upsert that does set the connection goes through the UPDATE: the new secret is kept, masked
    new = "host=db2 user=u password=n3w"
    conn.execute(insert.replace("DO NOTHING", "DO UPDATE SET database_connection = EXCLUDED.database_connection"),
                 (tid, cid, new))
    assert secret_rows(conn) == [(tid, new)]
    assert conn.execute("SELECT database_connection FROM timetable.task WHERE task_id = %s",
                        (tid,)).fetchone()[0] == "host=db2 user=u password=***"
