"""YAML chain files: parsing, validation messages, import (one transaction), export round trip, CLI."""

from __future__ import annotations

import json
import textwrap

import psycopg
import pytest
import typer
import yaml
from typer.testing import CliRunner

from engine.errors import InputError, NotFoundError
from engine.timetable import chainfile
from engine.timetable.chainfile import ChainFileError, ChainSpec, TaskSpec

SAMPLE = textwrap.dedent("""\
    chains:
      - name: parameter-examples
        schedule: "0 0 * * *"
        live: true
        max_instances: 1
        timeout: 60000
        client_name: node-a
        on_error: "SELECT pg_notify('monitoring', 'failed')"
        time_zone: Europe/Berlin
        missed_runs: skip
        tasks:
          - name: sql-example
            kind: SQL
            command: "SELECT $1, $2, $3, $4"
            parameters:
              - ["one", 2, 3.14, false]
              - ["two", 4, 6.28, true]
          - name: program-example
            kind: PROGRAM
            command: iconv
            parameters:
              - ["-f", "latin1", "-t", "utf-8", "in.txt"]
            ignore_error: true
            timeout: 5000
          - kind: BUILTIN
            command: Sleep
            parameters: [5]
          - kind: BUILTIN
            command: Log
            parameters:
              - "WARNING: a message"
              - {"Status": "WARNING", "Details": "Test object"}
          - kind: BUILTIN
            command: SendMail
            parameters:
              - username: user@example.com
                password: hunter2
                serverhost: smtp.example.com
                serverport: 587
                senderaddr: user@example.com
                toaddr: [recipient@example.com]
                subject: test
                msgbody: "<h2>Hello</h2>"
                contenttype: "text/html; charset=UTF-8"
          - name: multi-line
            command: |
              INSERT INTO t VALUES (1);
              INSERT INTO t VALUES (2);
            autonomous: true
            run_as: reporter
            connect_string: "host=db1 dbname=x password=topsecret"
            live: false
      - name: second
        schedule: "@every 10 seconds"
        tasks:
          - command: SELECT 1
    """)


def _write(tmp_path, text, name="chains.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_sample(tmp_path):
    specs = chainfile.load_chain_file(_write(tmp_path, SAMPLE))
    assert [s.name for s in specs] == ["parameter-examples", "second"]
    first = specs[0]
    assert (first.schedule, first.live, first.max_instances, first.timeout, first.client_name) == \
        ("0 0 * * *", True, 1, 60000, "node-a")
    assert (first.time_zone, first.missed_runs) == ("Europe/Berlin", "skip")
    assert [t.kind for t in first.tasks] == ["SQL", "PROGRAM", "BUILTIN", "BUILTIN", "BUILTIN", "SQL"]
    assert first.tasks[0].parameters == [["one", 2, 3.14, False], ["two", 4, 6.28, True]]
    assert first.tasks[3].parameters[1] == {"Status": "WARNING", "Details": "Test object"}
    assert first.tasks[5].live is False and first.tasks[5].autonomous is True
    assert specs[1].live is False and specs[1].tasks[0].kind == "SQL"  # pg_timetable's defaults


@pytest.mark.parametrize("text, where, problem", [
    ("chains: []", "chains", "non-empty list"),
    ("foo: 1", "chains", "top-level 'chains:'"),
    ("chains: [\n  - name: x\n    schedule: '* * *'\n    tasks: [{command: SELECT 1}]\n", "line", "not valid YAML"),
    ("chains:\n  - schedule: '* * * * *'\n    tasks: [{command: SELECT 1}]", "chains[0].name", "is required"),
    ("chains:\n  - name: a\n    schedule: '61 * * * *'\n    tasks: [{command: SELECT 1}]",
     "chains[0] (a).schedule", "'61 * * * *'"),
    ("chains:\n  - name: a\n    schedule: '@every'\n    tasks: [{command: SELECT 1}]", "chains[0] (a).schedule", ""),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: []", "chains[0] (a).tasks", "at least one task"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{kind: SQL}]", "chains[0] (a).tasks[0].command",
     "is required"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{command: x, kind: SHELL}]",
     "chains[0] (a).tasks[0].kind", "'SHELL' is not SQL, PROGRAM or BUILTIN"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{command: x, timeout: -1}]",
     "chains[0] (a).tasks[0].timeout", "must be 0"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    max_instances: many\n    tasks: [{command: x}]",
     "chains[0] (a).max_instances", "must be an integer"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    live: 'yes'\n    tasks: [{command: x}]",
     "chains[0] (a).live", "true or false"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{command: x, paramters: [[1]]}]",
     "chains[0] (a).tasks[0].paramters", "unknown task field"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{command: 'SELECT $1', parameters: [[1], 2]}]",
     "chains[0] (a).tasks[0].parameters[1]", "mixes argument lists and single values"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{command: 'SELECT $1', parameters: yesterday}]",
     "chains[0] (a).tasks[0].parameters", "must be a list"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{kind: PROGRAM, command: ls, parameters: [[1]]}]",
     "chains[0] (a).tasks[0].parameters[0]", "list of strings"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{kind: BUILTIN, command: Sleep, parameters: [x]}]",
     "chains[0] (a).tasks[0].parameters[0]", "integer number of seconds"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{kind: BUILTIN, command: SendMail, "
     "parameters: [{serverhost: h, senderaddr: a@b, toaddr: [c@d], serverport: x}]}]",
     "chains[0] (a).tasks[0].parameters[0].serverport", "must be an integer"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{kind: BUILTIN, command: Shell}]",
     "chains[0] (a).tasks[0].command", "unknown builtin 'Shell'"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    time_zone: Mars/Olympus\n    tasks: [{command: x}]",
     "chains[0] (a).time_zone", "unknown time zone"),
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    missed_runs: later\n    tasks: [{command: x}]",
     "chains[0] (a).missed_runs", "run_once"),
    ("chains:\n  - {name: a, schedule: '@reboot', tasks: [{command: x}]}\n"
     "  - {name: a, schedule: '@reboot', tasks: [{command: y}]}", "chains[1] (a).name", "duplicate chain name"),
])
def test_validation_names_chain_task_and_field(tmp_path, text, where, problem):
    with pytest.raises(ChainFileError) as info:
        chainfile.load_chain_file(_write(tmp_path, text))
    assert any(w.startswith(where) and problem in p for w, p in info.value.problems), info.value.problems


def test_all_problems_at_once_and_file_checks(tmp_path):
    text = "chains:\n  - name: a\n    schedule: 'bad'\n    tasks: [{kind: X}]\n  - {name: b, tasks: [{command: y}]}"
    with pytest.raises(ChainFileError) as info:
        chainfile.load_chain_file(_write(tmp_path, text))
    fields = [w for w, _ in info.value.problems]
    assert "chains[0] (a).schedule" in fields and "chains[0] (a).tasks[0].kind" in fields
    assert "chains[0] (a).tasks[0].command" in fields and "chains[1] (b).schedule" not in fields
    with pytest.raises(InputError, match="must end in .yaml or .yml"):
        chainfile.load_chain_file(_write(tmp_path, "chains: []", "x.json"))
    with pytest.raises(InputError, match="cannot read"):
        chainfile.load_chain_file(tmp_path / "missing.yaml")


def _chain_rows(conn):
    return conn.execute("SELECT chain_name, run_at, live, max_instances, timeout, client_name, on_error "
                        "FROM timetable.chain ORDER BY chain_name").fetchall()


def test_import_export_round_trip(conn, tmp_path):
    specs = chainfile.load_chain_file(_write(tmp_path, SAMPLE))
    done = chainfile.import_chains(conn, specs)
    assert [d["name"] for d in done] == ["parameter-examples", "second"] and not any(d["replaced"] for d in done)
    cid = done[0]["chain_id"]
    tasks = conn.execute("SELECT task_order, kind::text, command, ignore_error, autonomous, timeout, live, run_as, "
                         "database_connection FROM timetable.task WHERE chain_id = %s ORDER BY task_order",
                         (cid,)).fetchall()
    assert [t[0] for t in tasks] == [10, 20, 30, 40, 50, 60]
    assert tasks[1][1:7] == ("PROGRAM", "iconv", True, False, 5000, True)
    # the password is kept where the read grant does not reach (sql/timetable/0007), the task shows it masked
    assert tasks[5][7:] == ("reporter", "host=db1 dbname=x password=***")
    assert conn.execute("SELECT database_connection FROM timetable_secret.task_connection").fetchall() == [
        ("host=db1 dbname=x password=topsecret",)]
    params = conn.execute("SELECT order_id, value FROM timetable.parameter p JOIN timetable.task t USING (task_id) "
                          "WHERE t.chain_id = %s AND t.task_order = 10 ORDER BY order_id", (cid,)).fetchall()
    assert params == [(1, ["one", 2, 3.14, False]), (2, ["two", 4, 6.28, True])]
    assert conn.execute("SELECT time_zone, missed_runs FROM timetable.chain_option WHERE chain_id = %s",
                        (cid,)).fetchone() == ("Europe/Berlin", "skip")

    # export (with secrets) -> import --replace -> export gives the same text and the same rows
    text = chainfile.export_chains(conn, secrets=True)
    before = _chain_rows(conn)
    again = chainfile.parse_chains(text)
    assert [chainfile.export_dict(s, True) for s in again] == [chainfile.export_dict(s, True) for s in specs]
    done2 = chainfile.import_chains(conn, again, replace=True)
    assert all(d["replaced"] for d in done2)
    assert chainfile.export_chains(conn, secrets=True) == text
    assert _chain_rows(conn) == before
    # the YAML is readable by any YAML parser and names keep pg_timetable's keys
    doc = yaml.safe_load(text)
    assert doc["chains"][0]["tasks"][5]["command"] == "INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2);\n"
    assert "|" in text  # multi-line SQL as a block scalar

    # default export masks passwords
    masked = chainfile.export_chains(conn, ["parameter-examples"])
    assert "topsecret" not in masked and "hunter2" not in masked and "password=***" in masked
    with pytest.raises(NotFoundError, match="'nope'"):
        chainfile.export_chains(conn, ["parameter-examples", "nope"])


def test_import_is_one_transaction(conn, tmp_path):
    chainfile.import_chains(conn, [ChainSpec(name="exists", schedule="@reboot", tasks=[TaskSpec("SELECT 1")])])
    specs = [ChainSpec(name="new-one", schedule="* * * * *", tasks=[TaskSpec("SELECT 1")]),
             ChainSpec(name="exists", schedule="* * * * *", tasks=[TaskSpec("SELECT 2")])]
    with pytest.raises(InputError, match=r"chains\[1\] \(exists\)\.name: a chain with this name exists already"):
        chainfile.import_chains(conn, specs)
    assert [r[0] for r in _chain_rows(conn)] == ["exists"]  # new-one was rolled back too
    # validate() catches specs built in code
    assert chainfile.validate([ChainSpec(name="x", schedule="* *", tasks=[])])
    with pytest.raises(ChainFileError):
        chainfile.import_chains(conn, [ChainSpec(name="x", schedule="* *", tasks=[TaskSpec("SELECT 1")])])


def test_load_files_sql_and_yaml(conn, tmp_path):
    sql_file = _write(tmp_path, "CREATE TABLE made_by_script (id int);\n"
                                "SELECT timetable.add_job('from-sql', '@reboot', 'SELECT 1');", "a.sql")
    yaml_file = _write(tmp_path, "chains:\n  - {name: from-yaml, schedule: '@reboot', tasks: [{command: SELECT 1}]}",
                       "b.yml")
    report = chainfile.load_files(conn, [str(sql_file), str(yaml_file)], validate_only=True)
    assert [r["action"] for r in report] == ["checked (ran in a transaction, rolled back)", "validated"]
    assert _chain_rows(conn) == []
    assert conn.execute("SELECT to_regclass('made_by_script')").fetchone()[0] is None
    report = chainfile.load_files(conn, [str(sql_file), str(yaml_file)])
    assert [r["action"] for r in report] == ["ran", "imported"]
    assert [r[0] for r in _chain_rows(conn)] == ["from-sql", "from-yaml"]
    with pytest.raises(InputError, match="exists already"):
        chainfile.load_files(conn, [str(yaml_file)])
    chainfile.load_files(conn, [str(yaml_file)], replace=True)
    with pytest.raises(InputError, match="--file takes"):
        chainfile.load_files(conn, [str(tmp_path / "x.txt")])


# ---- CLI ------------------------------------------------------------------------------------------

def _cli():
    from pgtt_tui.cli import chain_io

    app = typer.Typer()
    sub = typer.Typer()
    chain_io.register(sub)
    app.add_typer(sub, name="chain")
    return app


def test_cli_import_export(dsn, tmp_path):
    runner = CliRunner()
    app = _cli()
    path = _write(tmp_path, SAMPLE)
    res = runner.invoke(app, ["chain", "import", str(path), "--validate", "--dsn", dsn])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["chain", "import", str(path), "--dsn", dsn, "--json"])
    assert res.exit_code == 0, res.output
    assert [r["action"] for r in json.loads(res.stdout)] == ["created", "created"]
    res = runner.invoke(app, ["chain", "import", str(path), "--dsn", dsn])
    assert res.exit_code != 0 and isinstance(res.exception, InputError)
    res = runner.invoke(app, ["chain", "import", str(path), "--replace", "--dsn", dsn])
    assert res.exit_code == 0 and "replaced" in res.stdout
    out = tmp_path / "out.yaml"
    res = runner.invoke(app, ["chain", "export", "second", "--dsn", dsn, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(out.read_text()) == {"chains": [{"name": "second", "schedule": "@every 10 seconds",
                                                           "tasks": [{"kind": "SQL", "command": "SELECT 1"}]}]}
    res = runner.invoke(app, ["chain", "export", "--dsn", dsn])
    assert res.exit_code == 0 and "parameter-examples" in res.stdout and "hunter2" not in res.stdout
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM timetable.chain").fetchone()[0] == 2


def test_root_cli_has_chain_import_export(dsn, tmp_path):
    from pgtt_tui.cli import app

    path = _write(tmp_path, "chains:\n  - {name: via-root, schedule: '*/5 * * * *', live: true, "
                            "tasks: [{command: SELECT 1}]}\n")
    runner = CliRunner()
    res = runner.invoke(app, ["chain", "import", str(path), "--dsn", dsn])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["chain", "export", "via-root", "--dsn", dsn])
    assert res.exit_code == 0 and yaml.safe_load(res.stdout)["chains"][0]["schedule"] == "*/5 * * * *"


# ---- our equivalents of pg_timetable's samples/yaml/*.yaml (every parameter shape they use) ------

SAMPLES = {
    # Basic.yaml: an SQL task with a FLAT list of arguments (one execution, $1 and $2)
    "basic.yaml": """\
        chains:
          - name: notify-every-minute
            schedule: "* * * * *"
            live: true
            max_instances: 1
            self_destruct: false
            tasks:
              - name: send a notification
                kind: SQL
                command: "SELECT pg_notify($1, $2)"
                parameters: ["yaml_basic_channel", "hello from a YAML chain"]
                ignore_error: true
        """,
    # Parameters.yaml: a list of lists (SQL, PROGRAM), Sleep's integer, Log's text and mapping,
    # SendMail's mapping
    "parameters.yaml": """\
        chains:
          - name: parameter-shapes
            schedule: "0 0 * * *"
            tasks:
              - {name: sql rows, command: "SELECT $1, $2, $3, $4",
                 parameters: [["one", 2, 3.14, false], ["two", 4, 6.28, true]]}
              - name: program rows
                kind: PROGRAM
                command: iconv
                parameters:
                  - ["-f", "latin1", "-t", "utf-8", "-o", "a.txt", "a.in"]
                  - ["-f", "latin1", "-t", "utf-8", "-o", "b.txt", "b.in"]
              - {name: sleep, kind: BUILTIN, command: Sleep, parameters: [5]}
              - name: log
                kind: BUILTIN
                command: Log
                parameters:
                  - "WARNING: a plain message"
                  - {"Status": "WARNING", "Details": "an object"}
              - name: mail
                kind: BUILTIN
                command: SendMail
                parameters:
                  - username: someone@example.com
                    password: secret
                    serverhost: smtp.example.com
                    serverport: 587
                    senderaddr: someone@example.com
                    toaddr: ["else@example.com"]
                    subject: test
                    msgbody: "<p>hi</p>"
                    contenttype: "text/html; charset=UTF-8"
        """,
    # Chain.yaml: several ordered steps, one reading the chain id setting
    "chain.yaml": """\
        chains:
          - name: three-steps
            schedule: "@every 1 hour"
            tasks:
              - {name: first, command: "INSERT INTO yaml_steps VALUES (1, $1)", parameters: ["a"]}
              - {name: second, command: "INSERT INTO yaml_steps VALUES (2, $1), (3, $2)", parameters: ["b", "c"]}
              - name: third
                command: "INSERT INTO yaml_steps VALUES (4, current_setting('pg_timetable.current_chain_id'))"
        """,
    # CronStyle.yaml: a cron schedule with a step and a day of month
    "cronstyle.yaml": """\
        chains:
          - name: cron-style
            schedule: "40 */2 27 * *"
            live: true
            tasks: [{command: "SELECT 1"}]
        """,
    # ETLPipeline.yaml: a temporary table, a check in a DO block, a load; one transaction
    "etl.yaml": """\
        chains:
          - name: etl-pipeline
            schedule: "0 2 * * *"
            max_instances: 1
            timeout: 60000
            tasks:
              - name: extract
                command: |
                  CREATE TEMP TABLE staging ON COMMIT DROP AS
                  SELECT g AS id, g * $1::int AS amount FROM generate_series(1, 5) g
                parameters: [10]
              - name: validate
                command: |
                  DO $$
                  BEGIN
                    IF (SELECT count(*) FROM staging WHERE amount <= 0) > 0 THEN
                      RAISE EXCEPTION 'bad rows in staging';
                    END IF;
                  END $$
              - name: load
                command: "INSERT INTO yaml_etl SELECT id, amount FROM staging"
        """,
    # MultipleChains.yaml: several chains in one file (and one without a schedule)
    "multiple.yaml": """\
        chains:
          - {name: multi-a, schedule: "@every 30 seconds", tasks: [{command: "SELECT 1"}]}
          - {name: multi-b, schedule: "@reboot", client_name: worker-b, tasks: [{command: "SELECT 2"}]}
          - {name: multi-c, tasks: [{command: "SELECT 3"}]}
        """,
    # Shell.yaml: a PROGRAM task with a flat argv list (one execution)
    "shell.yaml": """\
        chains:
          - name: shell
            schedule: "*/5 * * * *"
            tasks:
              - {name: say hello, kind: PROGRAM, command: /bin/sh, parameters: ["-c", "echo hello > \\"$0\\"", "OUT"]}
        """,
    # Backup.yaml: PROGRAM steps, client_name and a task timeout
    "backup.yaml": """\
        chains:
          - name: backup
            schedule: "0 3 * * 0"
            client_name: backup-node
            tasks:
              - {name: make dir, kind: PROGRAM, command: mkdir, parameters: [["-p", "/tmp/pgtt-backups"]]}
              - name: dump
                kind: PROGRAM
                command: pg_dump
                timeout: 3600000
                parameters: [["--format=custom", "--file=/tmp/pgtt-backups/db.dump", "postgres"]]
        """,
}


def _samples(tmp_path, out_file=None):
    paths = {}
    for name, text in SAMPLES.items():
        text = textwrap.dedent(text)
        if out_file is not None:
            text = text.replace("OUT", str(out_file))
        paths[name] = _write(tmp_path, text, name)
    return paths


def test_sample_shapes_parse_to_pg_timetable_rows(tmp_path):
    specs = {s.name: s for p in _samples(tmp_path).values() for s in chainfile.load_chain_file(p)}
    basic = specs["notify-every-minute"]
    assert (basic.schedule, basic.live, basic.max_instances) == ("* * * * *", True, 1)
    assert basic.tasks[0].parameters == [["yaml_basic_channel", "hello from a YAML chain"]]  # ONE execution
    shapes = specs["parameter-shapes"].tasks
    assert shapes[0].parameters == [["one", 2, 3.14, False], ["two", 4, 6.28, True]]
    assert len(shapes[1].parameters) == 2 and shapes[1].parameters[1][-1] == "b.in"
    assert shapes[2].parameters == [5]
    assert shapes[3].parameters == ["WARNING: a plain message", {"Status": "WARNING", "Details": "an object"}]
    assert shapes[4].parameters[0]["serverport"] == 587 and len(shapes[4].parameters) == 1
    steps = specs["three-steps"].tasks
    assert [t.parameters for t in steps] == [[["a"]], [["b", "c"]], []]
    assert specs["cron-style"].schedule == "40 */2 27 * *"
    assert specs["etl-pipeline"].tasks[0].parameters == [[10]]
    assert specs["multi-c"].schedule == "* * * * *"  # no schedule: every minute, as pg_timetable's loader
    assert specs["multi-b"].client_name == "worker-b"
    assert specs["shell"].tasks[0].parameters == [["-c", 'echo hello > "$0"', "OUT"]]
    assert specs["backup"].tasks[1].timeout == 3600000 and specs["backup"].client_name == "backup-node"


def test_no_schedule_and_empty_schedule_mean_every_minute(conn, tmp_path):
    path = _write(tmp_path, "chains:\n  - {name: none, tasks: [{command: SELECT 1}]}\n"
                            "  - {name: empty, schedule: '', tasks: [{command: SELECT 1}]}\n"
                            "  - {name: nul, schedule: null, tasks: [{command: SELECT 1}]}\n")
    chainfile.import_chains(conn, chainfile.load_chain_file(path))
    assert conn.execute("SELECT array_agg(DISTINCT run_at::text) FROM timetable.chain").fetchone()[0] == ["* * * * *"]


def test_code_built_specs_are_checked_as_stored(conn):
    # a spec built in code keeps its rows as given: a scalar row for an SQL task is refused
    bad = ChainSpec(name="x", schedule="@reboot", tasks=[TaskSpec("SELECT $1", parameters=["scalar"])])
    assert any("tasks[0].parameters[0]" in w and "list of values" in p for w, p in chainfile.validate([bad]))
    good = ChainSpec(name="x", schedule="@reboot", tasks=[TaskSpec("SELECT $1", parameters=[["v"]])])
    assert chainfile.validate([good]) == []


async def test_sample_chains_run_with_pg_timetable_meaning(dsn, tmp_path):
    from engine.clock import SystemClock
    from tests._timetable_support import q, q1, running_engine, until

    out = tmp_path / "hello.txt"
    paths = _samples(tmp_path, out)
    q(dsn, "CREATE TABLE yaml_steps (n int, v text); CREATE TABLE yaml_etl (id int, amount int)")
    with psycopg.connect(dsn, autocommit=True) as c:
        for name in ("basic.yaml", "chain.yaml", "etl.yaml", "shell.yaml"):
            chainfile.import_chains(c, chainfile.load_chain_file(paths[name]))
        c.execute("UPDATE timetable.chain SET live = false")  # run them by hand only
    ids = dict(q(dsn, "SELECT chain_name, chain_id FROM timetable.chain"))
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN yaml_basic_channel")
        async with running_engine(dsn, "yaml-samples", SystemClock()) as sched:
            for name in ("notify-every-minute", "three-steps", "etl-pipeline", "shell"):
                run_id = await sched.start_adhoc(ids[name])
                status = await until(lambda: q1(dsn, "SELECT status FROM timetable.chain_run WHERE run_id = %s "
                                                     "AND status NOT IN ('claimed', 'running')", (run_id,)),
                                     timeout=30, what=f"{name} ends")
                assert status == "succeeded", (name, q(dsn, "SELECT output FROM timetable.execution_log"))
        notes = list(listener.notifies(timeout=2, stop_after=1))
    assert [(n.channel, n.payload) for n in notes] == [("yaml_basic_channel", "hello from a YAML chain")]
    assert q1(dsn, "SELECT count(*) FROM timetable.execution_log WHERE chain_id = %s",
              (ids["notify-every-minute"],)) == 1  # one execution, not one per scalar
    assert q(dsn, "SELECT n, v FROM yaml_steps ORDER BY n") == [
        (1, "a"), (2, "b"), (3, "c"), (4, str(ids["three-steps"]))]
    assert q(dsn, "SELECT sum(amount)::int, count(*)::int FROM yaml_etl") == [(150, 5)]
    assert out.read_text() == "hello\n"


# ---- --validate for SQL scripts: a dry run in a transaction that is rolled back -------------------

def test_validate_sql_scripts_dry_run(conn, tmp_path):
    conn.execute("CREATE SEQUENCE validate_seq")
    good = _write(tmp_path, textwrap.dedent("""\
        CREATE TABLE made_here (id int PRIMARY KEY, note text);
        INSERT INTO made_here VALUES (1, 'a');             -- uses the table made a line above
        SELECT timetable.add_job('from-script', '*/10 * * * *', 'SELECT count(*) FROM made_here');
        DO $$ BEGIN PERFORM pg_notify('validate_channel', 'x'); END $$;
        SELECT nextval('validate_seq');
        """), "good.sql")
    syntax = _write(tmp_path, "SELECT 1;\n\nSELEC 2;\n", "syntax.sql")
    missing = _write(tmp_path, "SELECT 1;\nINSERT INTO no_such_table VALUES (1);\n", "missing.sql")
    bad_cron = _write(tmp_path, "SELECT timetable.add_job('x', '61 * * * *', 'SELECT 1');\n", "cron.sql")
    escape = _write(tmp_path, "CREATE TABLE escaped (i int);\nCOMMIT;\nVACUUM;\n", "escape.sql")
    yaml_dup = _write(tmp_path, "chains:\n  - {name: from-script, schedule: '@reboot', tasks: [{command: SELECT 1}]}\n",
                      "dup.yaml")

    with psycopg.connect(conn.info.dsn, autocommit=True) as listener:
        listener.execute("LISTEN validate_channel")
        report = chainfile.load_files(conn, [str(good)], validate_only=True)
        assert [r["action"] for r in report] == ["checked (ran in a transaction, rolled back)"]
        assert not list(listener.notifies(timeout=0.5))  # the NOTIFY was rolled back with the rest
    assert conn.execute("SELECT to_regclass('made_here')").fetchone()[0] is None
    assert _chain_rows(conn) == []
    # sequences are not transactional: the one documented leftover of a dry run
    assert conn.execute("SELECT last_value FROM validate_seq").fetchone()[0] == 1

    # every problem of every file at once, named by file and line / statement; nothing changed
    with pytest.raises(ChainFileError) as info:
        chainfile.load_files(conn, [str(syntax), str(missing), str(bad_cron), str(good), str(yaml_dup)],
                             validate_only=True)
    problems = dict(info.value.problems)
    assert problems[f"{syntax}: line 3, column 1"] == 'syntax error at or near "SELEC"'
    assert any(w.startswith(f"{missing}: ") and 'relation "no_such_table" does not exist' in p
               for w, p in problems.items()), problems
    assert any(w.startswith(f"{bad_cron}: ") and "61" in p for w, p in problems.items()), problems
    # the YAML file is imported in the same dry run: it clashes with the chain good.sql makes
    assert problems[f"{yaml_dup}: chains[0] (from-script).name"].startswith(
        "a chain with this name exists already")
    assert not any(w.startswith(str(good)) for w in problems)
    assert _chain_rows(conn) == [] and conn.execute("SELECT to_regclass('made_here')").fetchone()[0] is None

    # a script that ends transactions cannot be dry-run: reported, not run, not an error
    report = chainfile.load_files(conn, [str(escape)], validate_only=True)
    assert report[0]["action"].startswith("not fully checked: EXECUTE of transaction commands")
    assert conn.execute("SELECT to_regclass('escaped')").fetchone()[0] is None

    # the real run still runs them (pg_timetable's behaviour)
    assert [r["action"] for r in chainfile.load_files(conn, [str(good)])] == ["ran"]
    assert [r[0] for r in _chain_rows(conn)] == ["from-script"]


def test_cli_validate_sql_and_worker_flag(dsn, tmp_path):
    from pgtt_tui.cli import app

    good = _write(tmp_path, "CREATE TABLE t_cli (i int); INSERT INTO t_cli VALUES (1);\n", "good.sql")
    bad = _write(tmp_path, "SELECT * FROM t_cli_missing;\n", "bad.sql")
    chains = _write(tmp_path, "chains:\n  - {name: c, tasks: [{command: SELECT 1}]}\n", "c.yaml")
    runner = CliRunner()
    res = runner.invoke(app, ["chain", "import", str(good), str(chains), "--validate", "--dsn", dsn, "--json"])
    assert res.exit_code == 0, res.output
    assert [r["action"] for r in json.loads(res.stdout)] == ["checked (ran in a transaction, rolled back)",
                                                              "validated"]
    res = runner.invoke(app, ["chain", "import", str(bad), "--validate", "--dsn", dsn])
    assert res.exit_code != 0 and 't_cli_missing" does not exist' in str(res.exception)
    res = runner.invoke(app, ["worker", "--dsn", dsn, "-f", str(good), "-f", str(bad), "--validate",
                              "--modules", "timetable"])
    assert res.exit_code != 0 and f'{bad}: line 1, column 15: relation "t_cli_missing" does not exist' in \
        str(res.exception), res.exception
    res = runner.invoke(app, ["worker", "--dsn", dsn, "-f", str(good), "--validate", "--modules", "timetable"])
    assert res.exit_code == 0, res.output
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT to_regclass('t_cli')").fetchone()[0] is None
        assert c.execute("SELECT count(*) FROM timetable.chain").fetchone()[0] == 0
