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
    ("chains:\n  - name: a\n    tasks: [{command: SELECT 1}]", "chains[0] (a).schedule", "is required"),
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
    ("chains:\n  - name: a\n    schedule: '@reboot'\n    tasks: [{command: 'SELECT $1', parameters: [yesterday]}]",
     "chains[0] (a).tasks[0].parameters[0]", 'write [["yesterday"]]'.replace('[["', '["').replace('"]]', '"]')),
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
    assert "chains[0] (a).tasks[0].command" in fields and "chains[1] (b).schedule" in fields
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
    assert tasks[5][7:] == ("reporter", "host=db1 dbname=x password=topsecret")
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
    assert [r["action"] for r in report] == ["not run (--validate)", "validated"]
    assert _chain_rows(conn) == []
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
