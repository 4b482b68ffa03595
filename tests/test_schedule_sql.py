"""schedule SQL API: every example of seeds/003 runs and does what the text says; bad
input is refused with the field named; permission matrix with three roles; history."""

from __future__ import annotations

import uuid

import psycopg
import pytest

SEED_EXAMPLES = [
    # (SQL, what must hold of the created job: (column, value) pairs of get_job())
    ("""SELECT schedule.create_job('{"commands": "SELECT 15", "cron": "0 15 * * *", "dates": [ "2017-12-31 19:00", "2020-04-04 13:00" ]}')""",
     {"commands": ["SELECT 15"]}),
    ("""SELECT schedule.create_job('{"commands": "SELECT pg_sleep(100)", "cron": "15 */2 * * *", "last_start_available": "30 seconds" }')""",
     {"last_start_available": "00:00:30"}),
    ("""SELECT schedule.create_job('{"commands": "SELECT now()", "cron": "2 17 * * *", "start_date": "2017-05-01 11:00" }')""",
     {"end_date": None}),
    ("""SELECT schedule.create_job('{"commands": "SELECT now()", "cron": "2 17 * * *", "start_date": "2017-05-01 11:00", "end_date": "2017-06-04 15:00" }')""",
     {}),
    ("""SELECT schedule.create_job('{"commands": "SELECT 1; SELECT 2; SELECT 3;", "cron": "23 23 */2 * *" }')""",
     {"commands": ["SELECT 1; SELECT 2; SELECT 3;"], "use_same_transaction": False}),
    ("""SELECT schedule.create_job('{"commands": [ "SELECT 1", "SELECT 2", "SELECT 3" ], "cron": "23 23 */2 * *" }')""",
     {"commands": ["SELECT 1", "SELECT 2", "SELECT 3"], "use_same_transaction": False}),
    ("""SELECT schedule.create_job('{"commands": [ "SELECT 1", "SELECT 2", "SELECT 3" ], "cron": "23 23 */2 * *", "use_same_transaction": true }')""",
     {"use_same_transaction": True}),
    ("""SELECT schedule.create_job('{"commands": "SELECT random()", "cron": "45 10 * * *", "next_time_statement": "SELECT now() + ''1 day''::interval" }')""",
     {"next_time_statement": "SELECT now() + '1 day'::interval"}),
    ("""SELECT schedule.create_job('{"commands": "SELECT pg_sleep(10)", "cron": "15 */10 * * *", "max_run_time": "5 seconds" }')""",
     {"max_run_time": "00:00:05"}),
    ("""SELECT schedule.create_job('{"commands": "SELECT session_user", "cron": "5 */5 * * *", "run_as": "robot" }')""",
     {"run_as": "robot"}),
    ("""SELECT schedule.create_job('{"commands": "SELECT ''zzz''", "cron": "55 */12 * * *", "onrollback": "SELECT ''Cannot select zzz''" }')""",
     {"onrollback": "SELECT 'Cannot select zzz'"}),
]


@pytest.fixture
def sconn(make_db):
    dsn = make_db(("schedule",))
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def roles(sconn):
    """Three roles, unique per test (roles are cluster-wide), dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"{k}_{suffix}" for k in ("alice", "bob", "robot")}
    for n in names.values():
        sconn.execute(f'CREATE ROLE "{n}" LOGIN')
    sconn.execute(f'GRANT "{names["robot"]}" TO "{names["alice"]}"')
    sconn.execute("CREATE TABLE t (x text)")
    sconn.execute("GRANT ALL ON t TO PUBLIC")
    yield names
    db = sconn.info.dbname
    for n in names.values():
        sconn.execute(f'REVOKE ALL ON DATABASE "{db}" FROM "{n}"')
        sconn.execute(f'DROP OWNED BY "{n}"')
        sconn.execute(f'DROP ROLE "{n}"')


def as_role(conn, role):
    conn.execute(f'SET ROLE "{role}"')


def test_every_seed_example_runs_and_stores_what_it_says(sconn):
    sconn.execute("DROP ROLE IF EXISTS robot")
    sconn.execute("CREATE ROLE robot")
    try:
        for query, expect in SEED_EXAMPLES:
            job_id = sconn.execute(query).fetchone()[0]
            rec = sconn.execute("SELECT row_to_json(j) FROM schedule.get_job(%s) j", (job_id,)).fetchone()[0]
            for key, value in expect.items():
                assert rec[key] == value, (query, key, rec)
            assert rec["active"] is True and rec["broken"] is False
        first = sconn.execute("SELECT rule FROM schedule.get_job(1)").fetchone()[0]
        assert first["crontab"] == "0 15 * * *" and len(first["dates"]) == 2
        # the one-time job examples
        sconn.execute("SELECT schedule.submit_job(query := 'select 1')")
        sconn.execute("""SELECT schedule.submit_job(query := 'select $1, $2', params := '{"text 1", "text 2"}')""")
        sconn.execute("SELECT schedule.submit_job('select ''flowers''', run_after := '2017-03-08 08:00:01')")
        deps = [sconn.execute("SELECT schedule.submit_job('select 1')").fetchone()[0] for _ in range(3)]
        sconn.execute("SELECT schedule.submit_job('select ''well done''', depends_on := %s)", (deps,))
        rid = sconn.execute("SELECT schedule.submit_job('select 1, schedule.resubmit(run_after := ''5'')')").fetchone()[0]
        assert sconn.execute("SELECT schedule.cancel_job(%s)", (rid,)).fetchone()[0] is True
        st = sconn.execute("SELECT status, canceled FROM schedule.job_status WHERE id = %s", (rid,)).fetchone()
        assert st == ("done", True)
        # the configuration examples
        db = sconn.info.dbname
        sconn.execute(f'ALTER DATABASE "{db}" SET schedule.max_workers = 5')
        sconn.execute("SELECT pg_reload_conf()")
        assert sconn.execute("SELECT schedule.enable()").fetchone()[0] is True
        assert sconn.execute("SELECT schedule.is_enabled()").fetchone()[0] is True
        assert sconn.execute("SELECT schedule.disable()").fetchone()[0] is True
        assert sconn.execute("SELECT schedule.is_enabled()").fetchone()[0] is False
        assert sconn.execute("SELECT schedule.stop()").fetchone()[0] is True
        assert sconn.execute("SELECT schedule.stop()").fetchone()[0] is False
        assert sconn.execute("SELECT schedule.start()").fetchone()[0] is True
        assert sconn.execute("SELECT schedule.nodename()").fetchone()[0] == "primary"
        assert "pgpro_scheduler" in sconn.execute("SELECT schedule.version()").fetchone()[0]
        assert sconn.execute("SELECT type FROM schedule.status()").fetchone()[0] == "database manager"
    finally:
        sconn.execute("DROP OWNED BY robot")
        sconn.execute("DROP ROLE robot")


def test_simple_forms_attributes_activate_drop(sconn):
    a = sconn.execute("SELECT schedule.create_job('@every_second', 'select 1')").fetchone()[0]
    b = sconn.execute("SELECT schedule.create_job('0 0 * * * *', ARRAY['select 1', 'select 2'], 'node2')").fetchone()[0]
    c = sconn.execute("SELECT schedule.create_job('2031-01-01 10:00+00'::timestamptz, 'select 1')").fetchone()[0]
    d = sconn.execute("SELECT schedule.create_job('2031-01-01 10:00+00'::timestamptz, ARRAY['select 1'])").fetchone()[0]
    e = sconn.execute("SELECT schedule.create_job(ARRAY['2031-01-01 10:00+00', '2031-01-02 10:00+00']::timestamptz[], "
                      "'select 1')").fetchone()[0]
    f = sconn.execute("SELECT schedule.create_job(ARRAY['2031-01-01 10:00+00']::timestamptz[], ARRAY['s'])").fetchone()[0]
    assert len({a, b, c, d, e, f}) == 6
    assert sconn.execute("SELECT node, commands FROM schedule.get_job(%s)", (b,)).fetchone() == \
        ("node2", ["select 1", "select 2"])
    for kw in ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"):
        assert sconn.execute("SELECT schedule.set_job_attribute(%s, 'cron', %s)", (a, kw)).fetchone()[0]
    assert sconn.execute("SELECT schedule.set_job_attribute(%s, 'commands', ARRAY['select 3'])", (a,)).fetchone()[0]
    assert sconn.execute("""SELECT schedule.set_job_attributes(%s, '{"name": "x", "max_instances": 2,
                            "rule": {"hours": [1, 2], "wdays": [0]}}')""", (a,)).fetchone()[0]
    assert sconn.execute("SELECT schedule.set_job_attributes(%s, '{}')", (a,)).fetchone()[0] is False
    rec = sconn.execute("SELECT name, max_instances, rule, commands FROM schedule.get_job(%s)", (a,)).fetchone()
    assert rec == ("x", 2, {"crontab": "@annually", "hours": [1, 2], "wdays": [0]}, ["select 3"])
    assert sconn.execute("SELECT schedule.deactivate_job(%s)", (a,)).fetchone()[0]
    assert sconn.execute("SELECT active FROM schedule.get_job(%s)", (a,)).fetchone()[0] is False
    assert sconn.execute("SELECT schedule.activate_job(%s)", (a,)).fetchone()[0]
    assert sconn.execute("SELECT schedule.drop_job(%s)", (a,)).fetchone()[0]
    with pytest.raises(psycopg.errors.NoDataFound, match="does not exist"):
        sconn.execute("SELECT schedule.get_job(%s)", (a,))
    assert len(sconn.execute("SELECT * FROM schedule.get_owned_cron()").fetchall()) == 5
    assert len(sconn.execute("SELECT * FROM schedule.get_cron()").fetchall()) == 5
    assert sconn.execute("SELECT count(*) FROM schedule.timetable(now(), now() + interval '10 years')").fetchone()[0] >= 5
    assert sconn.execute("SELECT schedule.clean_log()").fetchone()[0] == 0


@pytest.mark.parametrize("options, field", [
    ({"commands": "select 1", "cron": "61 * * * *"}, "minute"),
    ({"commands": "select 1", "cron": "* * * *"}, "cron"),
    ({"commands": "select 1", "cron": "@often"}, "cron"),
    ({"commands": "select 1", "cron": "0 0 31 2 *"}, "day of month"),
    ({"commands": "select 1", "rule": {"hours": [24]}}, "rule.hours"),
    ({"commands": "select 1", "rule": {"minutes": []}}, "rule.minutes"),
    ({"commands": "select 1", "rule": {"weekday": [1]}}, "rule.weekday"),
    ({"commands": "select 1", "dates": ["not a date"]}, "dates[0]"),
    ({"commands": "select 1"}, "cron"),
    ({"cron": "* * * * *"}, "commands"),
    ({"commands": "select 1", "cron": "* * * * *", "max_run_time": "soon"}, "max_run_time"),
    ({"commands": "select 1", "cron": "* * * * *", "max_instances": 0}, "max_instances"),
    ({"commands": "select 1", "cron": "* * * * *", "tz": "Mars/Olympus"}, "tz"),
    ({"commands": "select 1", "cron": "* * * * *", "colour": "red"}, "colour"),
    ({"commands": "select 1", "cron": "* * * * *", "run_as": "no_such_role_x"}, "run_as"),
])
def test_bad_input_names_the_field_and_changes_nothing(sconn, options, field):
    import json

    with pytest.raises(psycopg.Error) as info:
        sconn.execute("SELECT schedule.create_job(%s::jsonb)", (json.dumps(options),))
    assert info.value.diag.message_primary.startswith(field), info.value.diag.message_primary
    assert sconn.execute("SELECT count(*) FROM schedule.cron").fetchone()[0] == 0


def test_submit_job_bad_input(sconn):
    for call, field in [("query := ''", "query"),
                        ("'select 1', run_after := now(), depends_on := '{1}'", "depends_on"),
                        ("'select 1', depends_on := '{424242}'", "depends_on"),
                        ("'select 1', resubmit_limit := 0", "resubmit_limit"),
                        ("'select 1', max_duration := '-1 second'", "max_duration")]:
        with pytest.raises(psycopg.Error) as info:
            sconn.execute(f"SELECT schedule.submit_job({call})")
        assert info.value.diag.message_primary.startswith(field)
    assert sconn.execute("SELECT count(*) FROM schedule.at_job").fetchone()[0] == 0


def test_permission_matrix_three_roles(sconn, roles):
    alice, bob, robot = roles["alice"], roles["bob"], roles["robot"]
    as_role(sconn, alice)
    a_job = sconn.execute("SELECT schedule.create_job('* * * * *', 'select 1')").fetchone()[0]
    # alice is a member of robot: she may run as robot, not as bob or a superuser
    a_robot = sconn.execute("SELECT schedule.create_job(%s::jsonb)",
                            ('{"commands": "select 1", "cron": "* * * * *", "run_as": "%s"}' % robot,)).fetchone()[0]
    for target in (bob, "postgres"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not run jobs as"):
            sconn.execute("SELECT schedule.submit_job('select 1', run_as := %s)", (target,))
    a_at = sconn.execute("SELECT schedule.submit_job('select 1', run_as := %s)", (robot,)).fetchone()[0]
    sconn.execute("RESET ROLE")
    as_role(sconn, bob)
    b_job = sconn.execute("SELECT schedule.create_job('* * * * *', 'select 2')").fetchone()[0]
    # bob sees and changes only his own jobs
    assert [r[0] for r in sconn.execute("SELECT id FROM schedule.get_owned_cron()")] == [b_job]
    assert [r[0] for r in sconn.execute("SELECT id FROM schedule.list_jobs()")] == [b_job]
    for call in ("get_job(%s)", "set_job_attribute(%s, 'name', 'x')", "deactivate_job(%s)", "drop_job(%s)",
                 "activate_job(%s)", "stop_cron_job(%s)"):
        with pytest.raises(psycopg.errors.NoDataFound, match="does not exist or is not yours"):
            sconn.execute(f"SELECT schedule.{call}", (a_job,))
    with pytest.raises(psycopg.errors.NoDataFound):
        sconn.execute("SELECT schedule.cancel_job(%s)", (a_at,))
    assert sconn.execute("SELECT count(*) FROM schedule.job_status").fetchone()[0] == 0
    for call in ("get_cron()", "get_active_jobs()", "get_log()", "clean_log()", "enable()", "disable()",
                 "start()", "stop()"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"only a superuser"):
            sconn.execute(f"SELECT schedule.{call}")
    for call in (f"get_owned_cron('{alice}')", f"get_user_log('{alice}')", f"get_active_jobs('{alice}')"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="another user"):
            sconn.execute(f"SELECT * FROM schedule.{call}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only a superuser"):
        sconn.execute("SELECT * FROM schedule.all_job_status")
    # the tables are not reachable directly
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sconn.execute("SELECT * FROM schedule.cron")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sconn.execute("UPDATE schedule.cron SET executor = 'postgres'")
    sconn.execute("RESET ROLE")
    # robot (no membership) cannot use alice's role either; the superuser sees everything
    as_role(sconn, robot)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sconn.execute("SELECT schedule.submit_job('select 1', run_as := %s)", (alice,))
    sconn.execute("RESET ROLE")
    assert {r[0] for r in sconn.execute("SELECT id FROM schedule.get_cron()")} == {a_job, a_robot, b_job}
    assert sconn.execute("SELECT count(*) FROM schedule.all_job_status").fetchone()[0] == 1
    owners = dict(sconn.execute("SELECT id, owner FROM schedule.get_cron()").fetchall())
    assert owners[a_job] == alice and owners[b_job] == bob
    assert sconn.execute("SELECT schedule.drop_job(%s)", (a_job,)).fetchone()[0]  # superuser may


def test_history_tables_follow_enable_history(sconn):
    a = sconn.execute("SELECT schedule.create_job('* * * * *', 'select 1')").fetchone()[0]
    assert sconn.execute("SELECT count(*) FROM schedule.cron__history").fetchone()[0] == 0
    sconn.execute("SET schedule.enable_history = on")
    b = sconn.execute("SELECT schedule.create_job('* * * * *', 'select 2')").fetchone()[0]
    sconn.execute("SELECT schedule.set_job_attribute(%s, 'cron', '0 * * * *')", (b,))
    sconn.execute("SELECT schedule.drop_job(%s)", (a,))
    hist = sconn.execute("SELECT id, rule ->> 'crontab', submitter FROM schedule.cron__history ORDER BY version_id").fetchall()
    assert hist == [(b, "* * * * *", "postgres"), (b, "0 * * * *", "postgres")]
    assert sconn.execute("SELECT cron, submitter FROM schedule.cron__deleted").fetchall() == [(a, "postgres")]
    sconn.execute("SET schedule.enable_history = off")
    sconn.execute("SELECT schedule.drop_job(%s)", (b,))
    assert sconn.execute("SELECT count(*) FROM schedule.cron__deleted").fetchone()[0] == 1  # kept, not extended
