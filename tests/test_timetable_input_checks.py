"""Input that makes no sense is refused where it enters (issue 13): through plain SQL on the
pg_timetable tables (sql/timetable/0007_input_checks.sql), the engine API and the CLI
(engine/timetable/validate.py), each with one line naming the field; nothing is changed.
SQL written for pg_timetable that makes sense keeps working."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from typer.testing import CliRunner

from _timetable_support import q, q1
from engine.errors import InputError
from engine.timetable import api, validate
from pgtt_tui.cli import app


@pytest.fixture
def tdsn(make_db):
    return make_db(("timetable",))


@pytest.fixture
def tconn(tdsn):
    with psycopg.connect(tdsn, autocommit=True) as c:
        yield c


def refused(conn, query, params=None) -> str:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute(query, params)
    return err.value.diag.message_primary


def counts(dsn):
    return q(dsn, "SELECT (SELECT count(*) FROM timetable.chain), (SELECT count(*) FROM timetable.task), "
                  "(SELECT count(*) FROM timetable.parameter)")[0]


INSERT_CHAIN = "INSERT INTO timetable.chain (chain_name, run_at, max_instances, timeout, client_name) " \
               "VALUES (%s, %s, %s, %s, %s)"


# ---- SQL: the interval floor --------------------------------------------------------------------

def test_sql_refuses_intervals_below_the_floor(tconn, tdsn):
    msg = refused(tconn, INSERT_CHAIN, ("fast", "@every 1 microsecond", None, 0, None))
    assert msg == ("run_at: the interval of @every 1 microsecond is below the minimum of 1 second "
                   "(the setting pgtt.timetable_min_interval lowers it)")
    msg = refused(tconn, "SELECT timetable.add_job('fast', '@after 500 ms', 'SELECT 1')")
    assert msg.startswith("run_at: the interval of @after 500 ms is below the minimum of 1 second")
    assert counts(tdsn) == (0, 0, 0)
    # at the floor and above; cron, @reboot and NULL (every minute) are not intervals
    for i, run_at in enumerate(["@every 1 second", "@after 2 hours", "* * * * * *", "@reboot", None]):
        tconn.execute(INSERT_CHAIN, (f"ok{i}", run_at, None, 0, None))
    assert counts(tdsn) == (5, 0, 0)


def test_the_floor_setting_lowers_it_and_rows_from_before_stay_editable(tconn, tdsn):
    tconn.execute("SET pgtt.timetable_min_interval = '100 ms'")
    assert validate.min_interval(tconn) == timedelta(milliseconds=100)
    tconn.execute(INSERT_CHAIN, ("fast", "@every 200 ms", None, 0, None))
    assert refused(tconn, INSERT_CHAIN, ("faster", "@every 50 ms", None, 0, None)).startswith(
        "run_at: the interval of @every 50 ms is below the minimum of 100 ms")
    tconn.execute("SET pgtt.timetable_min_interval = 0")
    tconn.execute(INSERT_CHAIN, ("fastest", "@every 1 microsecond", None, 0, None))
    tconn.execute("SET pgtt.timetable_min_interval = 'soon'")
    assert refused(tconn, INSERT_CHAIN, ("x", "@every 1 hour", None, 0, None)) == (
        "pgtt.timetable_min_interval: 'soon' is not an interval (e.g. '1 second', '200 ms', 0 for no floor)")
    with pytest.raises(InputError, match="pgtt.timetable_min_interval: 'soon' is not an interval"):
        validate.min_interval(tconn)
    tconn.execute("RESET pgtt.timetable_min_interval")
    # written under a lower floor: still paused, renamed, deleted; its schedule not made faster
    tconn.execute("UPDATE timetable.chain SET live = false, chain_name = 'fast2' WHERE chain_name = 'fast'")
    assert refused(tconn, "UPDATE timetable.chain SET run_at = '@every 100 ms' WHERE chain_name = 'fast2'") \
        .startswith("run_at:")
    assert api.pause_chain(tconn, "fastest")["live"] is False
    tconn.execute("DELETE FROM timetable.chain WHERE chain_name = 'fast2'")
    # a database default (the documented way) reaches new sessions, the API included
    tconn.execute("SELECT set_config('x.y', '1', false)")  # keep the session busy: nothing else
    q(tdsn, "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET pgtt.timetable_min_interval = %L', "
            "current_database(), '250 ms'); END $$")
    with psycopg.connect(tdsn, autocommit=True) as fresh:
        assert validate.min_interval(fresh) == timedelta(milliseconds=250)
        api.create_chain(fresh, "quarter", "@every 250 ms")
        with pytest.raises(InputError, match=r"^run_at: the interval of @every 249 ms is below the minimum of 250 ms"):
            api.create_chain(fresh, "too-fast", "@every 249 ms")


# ---- SQL: the other columns ---------------------------------------------------------------------

@pytest.mark.parametrize("row, message", [
    (("c", "@daily", 0, 0, None), "max_instances: 0: must be 1 or more (NULL: the engine default, 16)"),
    (("c", "@daily", -3, 0, None), "max_instances: -3: must be 1 or more"),
    (("c", "@daily", None, -1, None), "timeout: -1: must be 0 (the --chain-timeout default) or a positive number"),
    (("", "@daily", None, 0, None), "chain_name: must not be empty"),
    (("   ", "@daily", None, 0, None), "chain_name: must not be empty"),
    (("bad\x1b[2Jname", "@daily", None, 0, None),
     "chain_name: must not contain control characters (U+001B at position 4)"),
    (("two\nlines", "@daily", None, 0, None), "chain_name: must not contain control characters (U+000A"),
    (("rtl\u202eevil", "@daily", None, 0, None), "chain_name: must not contain control characters (U+202E"),
    (("c1\x85", "@daily", None, 0, None), "chain_name: must not contain control characters (U+0085"),
    (("c", "@daily", None, 0, ""), "client_name: must not be empty (NULL: any engine may run the chain)"),
    (("c", "@daily", None, 0, "node\r"), "client_name: must not contain control characters (U+000D"),
])
def test_sql_refuses_chain_columns(tconn, tdsn, row, message):
    assert refused(tconn, INSERT_CHAIN, row).startswith(message)
    tconn.execute(INSERT_CHAIN, ("fine", "@daily", None, 0, None))
    name, run_at, max_instances, timeout, client = row
    update = "UPDATE timetable.chain SET chain_name = %s, max_instances = %s, timeout = %s, client_name = %s " \
             "WHERE chain_name = 'fine'"
    assert refused(tconn, update, (name, max_instances, timeout, client)).startswith(message)
    assert q(tdsn, "SELECT chain_name, max_instances, timeout, client_name FROM timetable.chain") == \
        [("fine", None, 0, None)]


def test_sql_refuses_task_columns_and_parameter_shapes(tconn, tdsn):
    cid = tconn.execute(INSERT_CHAIN + " RETURNING chain_id", ("c", "@daily", None, 0, None)).fetchone()[0]
    ins = "INSERT INTO timetable.task (chain_id, task_order, kind, command, task_name, timeout) " \
          "VALUES (%s, 10, %s, %s, %s, %s) RETURNING task_id"
    assert refused(tconn, ins, (cid, "SQL", "  \n ", None, 0)) == "command: must not be empty"
    assert refused(tconn, ins, (cid, "BUILTIN", "Shell", None, 0)) == (
        "command: unknown builtin 'Shell' (choose from NoOp, Sleep, Log, SendMail, Download, CopyFromFile, "
        "CopyToFile, CopyToProgram, CopyFromProgram, Shutdown)")
    assert refused(tconn, ins, (cid, "BUILTIN", "sleep", None, 0)).startswith("command: unknown builtin 'sleep'")
    assert refused(tconn, ins, (cid, "SQL", "SELECT 1", "step\t1", 0)) == \
        "task_name: must not contain control characters (U+0009 at position 5)"
    assert refused(tconn, ins, (cid, "SQL", "SELECT 1", None, -5)).startswith(
        "timeout: -5: must be 0 (the --task-timeout default)")
    sql_task = tconn.execute(ins, (cid, "SQL", "SELECT $1", "", 0)).fetchone()[0]  # '' name: no label
    prog = tconn.execute(ins, (cid, "PROGRAM", "echo", None, 0)).fetchone()[0]
    sleep = tconn.execute(ins, (cid, "BUILTIN", "Sleep", None, 0)).fetchone()[0]
    mail = tconn.execute(ins, (cid, "BUILTIN", "SendMail", None, 0)).fetchone()[0]
    assert refused(tconn, "UPDATE timetable.task SET kind = 'BUILTIN' WHERE task_id = %s", (prog,)) \
        .startswith("command: unknown builtin 'echo'")
    par = "INSERT INTO timetable.parameter (task_id, order_id, value) VALUES (%s, %s, %s::jsonb)"
    for task, value, message in [
        (sql_task, '"x"', "an SQL task's parameter row must be a JSON array of values for $1..$n, not a string "
                          "(write [\"x\"] for one argument)"),
        (sql_task, '{"a": 1}', "an SQL task's parameter row must be a JSON array of values for $1..$n, not an object"),
        (prog, '"-c"', "a PROGRAM task's parameter row must be a JSON array of strings (the arguments), not a string"),
        (prog, '["-n", 5]', "a PROGRAM task's parameter row must be a JSON array of strings (the arguments): "
                            "element 1 is a number"),
        (sleep, '"soon"', "Sleep needs a whole number of seconds >= 0, not \"soon\""),
        (sleep, '-1', "Sleep needs a whole number of seconds >= 0, not -1"),
        (sleep, '1.5', "Sleep needs a whole number of seconds >= 0, not 1.5"),
        (mail, '["a@b"]', "SendMail needs a JSON object, not an array"),
    ]:
        assert refused(tconn, par, (task, 1, value)) == f"value (task {task}, order_id 1): {message}", value
        # the Python side says the same
        kind, command = q(tdsn, "SELECT kind::text, command FROM timetable.task WHERE task_id = %s", (task,))[0]
        import json
        assert validate.parameter_problem(kind, command, json.loads(value)) == message
    for task, value in [(sql_task, '[1, "a", [1, 2], {"k": null}]'), (sql_task, '[]'), (sql_task, None),
                        (prog, '["-c", "echo hi"]'), (sleep, '5'), (sleep, '"7"'), (mail, '{"serverhost": "h"}')]:
        tconn.execute(par, (task, 2, value))
        tconn.execute("DELETE FROM timetable.parameter WHERE task_id = %s", (task,))
    tconn.execute(par, (sql_task, 1, "[1]"))
    assert refused(tconn, "UPDATE timetable.parameter SET value = '1' WHERE task_id = %s", (sql_task,)) \
        .startswith(f"value (task {sql_task}, order_id 1): an SQL task's parameter row")


def test_sql_warns_about_a_run_as_role_that_does_not_exist(tconn, tdsn):
    notices = []
    tconn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
    cid = tconn.execute(INSERT_CHAIN + " RETURNING chain_id", ("c", "@daily", None, 0, None)).fetchone()[0]
    ins = "INSERT INTO timetable.task (chain_id, task_order, command, run_as) VALUES (%s, 10, 'SELECT 1', %s)"
    tconn.execute(ins, (cid, "postgres; drop table victim"))
    tconn.execute(ins, (cid, "postgres"))
    tconn.execute(ins, (cid, None))
    assert notices == [("WARNING", 'run_as: role "postgres; drop table victim" does not exist: '
                                   "the task will fail when it runs")]
    assert q1(tdsn, "SELECT count(*) FROM timetable.task") == 3  # only a warning here


def test_pg_timetable_samples_still_work(tconn, tdsn):
    """The shapes of pg_timetable's samples (Basic, Sleep, Log, NoOp, Chain, Mail, Shutdown,
    Exclusive) pass the checks unchanged."""
    tconn.execute("""SELECT timetable.add_job(job_name => 'notify every minute', job_schedule => '* * * * *',
        job_command => 'SELECT pg_notify($1, $2)', job_parameters => '[ "TT_CHANNEL", "Ahoj from SQL base task" ]'
        :: jsonb, job_kind => 'SQL'::timetable.command_kind, job_client_name => NULL, job_max_instances => 1,
        job_live => TRUE, job_self_destruct => FALSE, job_ignore_errors => TRUE)""")
    tconn.execute("SELECT timetable.add_job('sleep', '@every 10 seconds', 'Sleep', '20', 'BUILTIN', "
                  "job_max_instances => 1)")
    tconn.execute("""SELECT timetable.add_job(job_name => 'Builtin-in Log', job_schedule => NULL,
        job_command => 'Log', job_parameters => '{"Description":"Log Execution"}'::jsonb, job_kind => 'BUILTIN')""")
    tconn.execute("SELECT timetable.add_job('execute-func', '5 0 * 8 *', 'NoOp', job_kind => 'BUILTIN')")
    tconn.execute("SELECT timetable.add_job('exclusive', '@after 10 seconds', 'SELECT pg_sleep(5)', "
                  "job_exclusive => true)")
    tconn.execute("SELECT timetable.add_job('Shutdown after job', '* * 1 * *', 'Shutdown', job_kind => 'BUILTIN')")
    mail = tconn.execute("""SELECT timetable.add_job(job_name => 'send-mail', job_schedule => '0 12 * * *',
        job_command => 'SendMail', job_kind => 'BUILTIN', job_parameters => '{"username": "user@example.com",
        "password": "x", "serverhost": "smtp.example.com", "serverport": 587, "senderaddr": "user@example.com",
        "toaddr": ["to@example.com"], "subject": "pg_timetable", "msgbody": "<b>hi</b>",
        "contenttype": "text/html"}'::jsonb)""").fetchone()[0]
    first = q1(tdsn, "SELECT task_id FROM timetable.task WHERE chain_id = %s", (mail,))
    tconn.execute("SELECT timetable.add_task('SQL', 'SELECT 1', %s, 10)", (first,))
    tconn.execute("""DO $$
        DECLARE v_chain bigint; v_task bigint;
        BEGIN
            INSERT INTO timetable.chain (chain_name, run_at, max_instances, live)
            VALUES ('chain operation', '* * * * *', 1, TRUE) RETURNING chain_id INTO v_chain;
            INSERT INTO timetable.task (chain_id, task_order, kind, command, ignore_error)
            VALUES (v_chain, 1, 'SQL', 'INSERT INTO chain_log (msg) VALUES ($1)', TRUE) RETURNING task_id INTO v_task;
            INSERT INTO timetable.parameter (task_id, order_id, value) VALUES (v_task, 1, '["first"]');
            INSERT INTO timetable.task (chain_id, task_order, kind, command, task_name)
            VALUES (v_chain, 2, 'PROGRAM', 'bash', 'list') RETURNING task_id INTO v_task;
            INSERT INTO timetable.parameter (task_id, order_id, value) VALUES (v_task, 1, '["-c", "ls"]');
        END $$""")
    assert q(tdsn, "SELECT count(*) FROM timetable.chain")[0][0] == 8
    # add_job with a wrongly shaped parameter is refused as a whole (one statement)
    before = counts(tdsn)
    assert refused(tconn, "SELECT timetable.add_job('bad', '@daily', 'SELECT $1', '\"x\"')").startswith("value (task ")
    assert refused(tconn, "SELECT timetable.add_job('bad', '@daily', 'Shell', NULL, 'BUILTIN')").startswith(
        "command: unknown builtin 'Shell'")
    assert counts(tdsn) == before


# ---- the API and the CLI ------------------------------------------------------------------------

def cli_error(dsn, *args) -> InputError:
    result = CliRunner().invoke(app, ["chain", *args, "--dsn", dsn])
    assert isinstance(result.exception, InputError), (args, result.output, result.exception)
    return result.exception


@pytest.mark.parametrize("args, field, problem", [
    (("create", "x", "-s", "@every 1 microsecond"), "--schedule",
     "the interval of @every 1 microsecond is below the minimum of 1 second (the setting "
     "pgtt.timetable_min_interval lowers it)"),
    (("create", "x", "-s", "@after 0.5 seconds"), "--schedule", "below the minimum of 1 second"),
    (("edit", "existing", "-s", "@every 999 ms"), "--schedule", "below the minimum of 1 second"),
    (("create", "x", "--max-instances", "0"), "--max-instances", "0: must be 1 or more"),
    (("edit", "existing", "--max-instances", "0"), "--max-instances", "0: must be 1 or more"),
    (("create", "x", "--timeout", "-1"), "--timeout", "-1: must be 0 (the --chain-timeout default)"),
    (("create", "x", "--max-instances", "3000000000"), "--max-instances", "must be at most 2147483647"),
    (("create", "bad\x1bname"), "--name", "must not contain control characters (U+001B at position 4)"),
    (("edit", "existing", "--name", "a\u2028b"), "--name", "must not contain control characters (U+2028"),
    (("create", "x", "--client-name", "node\n"), "--client-name", "must not contain control characters"),
    (("create", "x", "--command", "Shell", "--kind", "BUILTIN"), "--command",
     "unknown builtin 'Shell' (choose from NoOp, Sleep, Log"),
    (("task", "add", "existing", "Shell", "--kind", "builtin"), "COMMAND", "unknown builtin 'Shell'"),
    (("task", "add", "existing", "Sleep", "--kind", "BUILTIN", "--param", '"soon"'), "--param[1]",
     "Sleep needs a whole number of seconds >= 0"),
    (("task", "add", "existing", "SendMail", "--kind", "BUILTIN", "--param", "[1]"), "--param[1]",
     "SendMail needs a JSON object, not an array"),
    (("task", "add", "existing", "SendMail", "--kind", "BUILTIN", "--param",
      '{"serverhost": "h", "senderaddr": "a@b", "toaddr": ["c@d"], "serverport": 0}'), "--param[1].serverport",
     "must be between 1 and 65535"),
    (("task", "add", "existing", "ls", "--kind", "PROGRAM", "--param", '["-l", 1]'), "--param[1]",
     "element 1 is a number"),
    (("task", "add", "existing", "SELECT 1", "--name", "t\tx"), "--name", "control characters (U+0009"),
    (("task", "add", "existing", "SELECT 1", "--run-as", "nope"), "--run-as", 'role "nope" does not exist'),
    (("task", "add", "existing", "SELECT 1", "--run-as", "postgres; drop table victim"), "--run-as",
     'role "postgres; drop table victim" does not exist'),
    (("task", "edit", "1", "--run-as", "nope"), "--run-as", 'role "nope" does not exist'),
    (("task", "edit", "1", "--kind", "BUILTIN"), "--command", "unknown builtin 'SELECT 1'"),
    (("task", "edit", "1", "--timeout", "-1"), "--timeout", "-1: must be 0 (the --task-timeout default)"),
])
def test_cli_refuses_with_the_option_named(tdsn, args, field, problem):
    res = CliRunner().invoke(app, ["chain", "create", "existing", "--command", "SELECT 1", "--dsn", tdsn])
    assert res.exit_code == 0, res.output
    before = q(tdsn, "SELECT c.*, t.* FROM timetable.chain c JOIN timetable.task t USING (chain_id)")
    exc = cli_error(tdsn, *args)
    assert exc.field == field and problem in exc.problem, (exc.field, exc.problem)
    assert exc.exit_code == 2
    assert q(tdsn, "SELECT c.*, t.* FROM timetable.chain c JOIN timetable.task t USING (chain_id)") == before
    assert counts(tdsn) == (1, 1, 0)


def test_api_accepts_sensible_input_and_checks_stored_parameters_on_a_kind_change(tconn, tdsn):
    cid = api.create_chain(tconn, "ok", "@every 1 second", max_instances=1, timeout=0, client_name="node-a")
    tid = api.add_task(tconn, cid, "SELECT $1", parameters=[[1], None], run_as="postgres", task_name="")
    api.update_task(tconn, tid, run_as="")  # '' clears it
    with pytest.raises(InputError, match=r"^parameters\[0\]: Sleep needs a whole number of seconds"):
        api.update_task(tconn, tid, kind="BUILTIN", command="Sleep")  # the stored [1] does not fit
    api.update_task(tconn, tid, kind="BUILTIN", command="Sleep", parameters=[5])
    assert q(tdsn, "SELECT kind::text, command FROM timetable.task") == [("BUILTIN", "Sleep")]
    assert q(tdsn, "SELECT value FROM timetable.parameter") == [(5,)]


@pytest.mark.parametrize("name, problem", [("node\x1b[31m", "must not contain control characters (U+001B at position 5)"),
                                           ("   ", "must not be empty")])
def test_worker_refuses_a_client_name_with_control_characters(tdsn, name, problem):
    result = CliRunner().invoke(app, ["worker", "--dsn", tdsn, "--clientname", name, "--modules", "timetable"])
    assert isinstance(result.exception, InputError), (result.output, result.exception)
    assert (result.exception.field, result.exception.problem) == ("--clientname", problem)
    assert q1(tdsn, "SELECT count(*) FROM pgtt.engine") == 0


def test_chain_file_import_refused_by_the_database_checks_changes_nothing(tconn, tdsn):
    from engine.timetable import chainfile

    specs = chainfile.parse_chains("chains:\n"
                                   "  - name: ok\n    schedule: '@every 10 seconds'\n"
                                   "    tasks: [{command: SELECT 1}]\n"
                                   "  - name: fast\n    schedule: '@every 10 ms'\n"
                                   "    tasks: [{command: SELECT 1}]\n")
    with pytest.raises(InputError) as err:
        chainfile.import_chains(tconn, specs)
    assert str(err.value).startswith("chains[1] (fast): rejected by the database: run_at: the interval of "
                                     "@every 10 ms is below the minimum of 1 second"), str(err.value)
    assert counts(tdsn) == (0, 0, 0)
