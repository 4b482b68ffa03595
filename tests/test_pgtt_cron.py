"""One SQL cron parser (sql/pgtt/0002_cron.sql) behind timetable's and schedule's entry points.

- pgtt.cron_problem says exactly what engine/schedules.py says (verdict and message), and
  pgtt's fields are the evaluator's;
- timetable.cron (domain), timetable.cron_parse and schedule._cron_problem give pgtt's
  verdict and problem, and no function outside pgtt carries cron parsing code any more;
- a database installed by the release before (old files) and then upgraded the way
  `pgtt-tui db upgrade` does ends with the same functions and grants as a fresh install;
- a role with no privilege on pgtt that could insert chains and check crons still can.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone

import psycopg
import pytest

from engine import schema, schedules
from tests.test_schedule_timing import PARITY_CORPUS
from tests.test_timetable_cron_parity import _random_cron

TIMETABLE_ALSO_KNOWN = ["@every <interval>", "@after <interval>", "@reboot"]

# what the old PL/pgSQL parsers got wrong or worded differently, beside the random corpus
EDGES = [
    "0 0 * * 1/2", "0 0 * * 1/3", "0 0 * * 7/2", "0 0 * * 5/1", "0 0 * * SUN/2",  # 'a/s' stops at Saturday
    "0\xa00 * * *", "\u30000 0 * * *\u3000", "0 0 * * *\x1c", "0 0 * *\u2003*",  # Python's whitespace
    "a'b * * * *", 'x"y * * * *', "a\\b * * * *", "a\x01 * * * *", "@often\ty", "@o'ften",  # Python's repr
    "0099 * * * *", "1-2-3 * * * *", "*-5 * * * *", "0 0 L/2 * *", "5- * * * *", "@Every_Second", "@REBOOT ",
    "0 0 31 4,6 *", "0 0 30,31 2 *", "0 0 1/40 * *", "0 0 * * 1/999999999999999999999", "",
]


def _corpus() -> list[str]:
    rng = random.Random(20261122)
    return list(dict.fromkeys(PARITY_CORPUS + EDGES + [_random_cron(rng) for _ in range(1200)]))


def _py_problem(text: str) -> str | None:
    try:
        schedules.CronExpr.parse(text)
        return None
    except schedules.ScheduleError as exc:
        return str(exc)


def _py_fields(text: str) -> tuple:
    e = schedules.CronExpr.parse(text)
    return (list(e.seconds), list(e.minutes), list(e.hours), list(e.days), list(e.months), list(e.weekdays),
            e.last_day, e.dom_any, e.dow_any)


def _error(conn, query: str, params) -> str | None:
    try:
        conn.execute(query, params)
        return None
    except psycopg.errors.InvalidParameterValue as exc:
        return exc.diag.message_primary


@pytest.fixture
def both(make_db):
    with psycopg.connect(make_db(("timetable", "schedule")), autocommit=True) as conn:
        yield conn


def test_pgtt_says_what_the_evaluator_says(both):
    texts = _corpus()
    rows = both.execute(
        "SELECT t, pgtt.cron_problem(t), (s.fields).* FROM unnest(%s::text[]) t, pgtt.cron_scan(t) s", (texts,)
    ).fetchall()
    wrong, valid = [], 0
    for text, problem, *fields in rows:
        want = _py_problem(text)
        if want is not None and "parse_schedule() handles it" in want:
            # @every/@after/@reboot: not cron; Python names its other parser, SQL the keyword
            if not (problem or "").startswith(f"cron: unknown keyword {text.strip()!r}"):
                wrong.append((text, problem, want))
            continue
        if problem != want or (want is None and tuple(fields) != _py_fields(text)):
            wrong.append((text, problem, want, fields))
        valid += want is None
    assert wrong == []
    assert 200 < valid < len(texts) - 200  # both verdicts are exercised


def test_pgtt_cron_parse_raises_the_problem_with_the_field(both):
    assert _error(both, "SELECT pgtt.cron_parse('0 25 * * *')", ()) \
        == 'cron field "hour" (2nd): 25 is out of range 0-23'
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        both.execute("SELECT pgtt.cron_parse('0 0 * * MON-FRX')")
    assert info.value.diag.message_hint.startswith("fields: [second] minute hour")
    assert _error(both, "SELECT pgtt.cron_parse('@often', ARRAY['@reboot'])", ()).endswith("@every_second, @reboot")
    assert both.execute("SELECT (pgtt.cron_parse('@weekly')).weekdays").fetchone()[0] == [0]


def test_timetable_and_schedule_give_pgtts_verdict_and_problem(both):
    wrong = []
    for text in _corpus():
        # timetable: cron_parse and the domain (cron_validate) raise pgtt's message; the
        # domain handles @every/@after/@reboot itself (with timetable's interval parser)
        want = both.execute("SELECT pgtt.cron_problem(%s, %s)", (text, TIMETABLE_ALSO_KNOWN)).fetchone()[0]
        got_parse = _error(both, "SELECT timetable.cron_parse(%s)", (text,))
        got_domain = _error(both, "SELECT %s::timetable.cron", (text,))
        kind = both.execute("SELECT timetable.schedule_kind(%s)", (text,)).fetchone()[0]
        if got_parse != want or (kind == "cron" and got_domain != want):
            wrong.append(("timetable", text, got_parse, got_domain, want))
        # schedule: the same problem, worded field first; @reboot is a schedule of its own
        source, field, ordinal, problem = both.execute(
            "SELECT source, field, ordinal, problem FROM pgtt.cron_scan(%s, ARRAY['@reboot'])", (text,)).fetchone()
        if problem is None or source.lower() == "@reboot":
            want = None
        elif ordinal is None:
            want = f"cron: {problem}"
        else:
            want = f'{field} (cron field "{field}", {ordinal}): {problem}'
        got = both.execute("SELECT schedule._cron_problem(%s)", (text,)).fetchone()[0]
        if got != want:
            wrong.append(("schedule", text, got, want))
    assert wrong == []


def test_no_cron_parser_is_left_outside_pgtt(both):
    # messages only a cron field parser produces
    rows = both.execute("""
        SELECT DISTINCT n.nspname || '.' || p.proname
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('pgtt', 'timetable', 'schedule')
           AND (p.prosrc LIKE '%%L (last day of month)%%' OR p.prosrc LIKE '%%is not a positive whole number%%'
                OR p.prosrc LIKE '%%a day name or number%%')""").fetchall()
    assert rows == [("pgtt.cron_scan",)]
    for helper in ("timetable._cron_field", "timetable._cron_value", "timetable._cron_error"):
        assert both.execute("SELECT count(*) FROM pg_proc WHERE oid::regprocedure::text LIKE %s",
                            (helper + "(%",)).fetchone()[0] == 0, helper


def test_timetable_next_firing_follows_the_evaluator_for_weekday_steps(both):
    after = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for text in ("0 0 * * 1/2", "0 0 * * 1/3", "0 0 * * 5/1", "0 0 * * 7/2", "0 12 * * SUN/3"):
        want = schedules.upcoming(text, after, 6)
        got, t = [], after
        for _ in range(6):
            t = both.execute("SELECT timetable.cron_next(%s, %s)", (text, t)).fetchone()[0]
            got.append(t)
        assert got == want, text


def _previous_release(module: str) -> int:
    """The version of ``module`` before the shared cron parser arrived."""
    found = [m.version for m in schema.migrations(module) if m.name in ("cron", "shared_cron")]
    assert len(found) == 1, (module, found)
    return found[0] - 1


def _catalog(conn) -> dict:
    functions = conn.execute("""
        SELECT n.nspname, p.oid::regprocedure::text, pg_get_functiondef(p.oid), coalesce(p.proacl::text, '')
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname IN ('pgtt', 'timetable', 'schedule') AND p.prokind IN ('f', 'p')""").fetchall()
    schemas = conn.execute("SELECT nspname, nspacl::text FROM pg_namespace "
                           "WHERE nspname IN ('pgtt', 'timetable', 'schedule')").fetchall()
    types = conn.execute("""
        SELECT t.oid::regtype::text, coalesce(pg_get_constraintdef(k.oid), '')
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
          LEFT JOIN pg_class c ON c.oid = t.typrelid
          LEFT JOIN pg_constraint k ON k.contypid = t.oid
         WHERE n.nspname IN ('pgtt', 'timetable', 'schedule')
           AND (t.typtype IN ('d', 'e') OR c.relkind = 'c')""").fetchall()
    return {"functions": {(s, sig): (body, acl) for s, sig, body, acl in functions},
            "schemas": dict(schemas), "types": sorted(types)}


def test_upgrade_from_the_previous_release_ends_with_the_wrappers(empty_dsn, make_db, monkeypatch):
    modules = ["pgtt", "timetable", "schedule"]
    cut = {m: _previous_release(m) for m in modules}
    full = schema.migrations
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        with monkeypatch.context() as patch:
            patch.setattr(schema, "migrations", lambda module: full(module)[:cut.get(module, len(full(module)))])
            schema.install(conn, modules)
        assert schema.installed_versions(conn) == cut
        # the old parsers are there, and data that uses them
        assert conn.execute("SELECT to_regprocedure('timetable._cron_field(text, text, int, int, int)')").fetchone()[0]
        conn.execute("INSERT INTO timetable.chain (chain_name, run_at) VALUES ('kept', '0 0 * * 1/2')")
        conn.execute("""SELECT schedule.create_job('{"cron": "*/5 * * * *", "commands": "SELECT 1"}')""")

        done = schema.install(conn, list(schema.MODULES), upgrade_only=True)
        assert done == [f"{m}: upgraded to version {schema.available_version(m)} (from {cut[m]})" for m in modules]
        assert conn.execute("SELECT run_at FROM timetable.chain").fetchall() == [("0 0 * * 1/2",)]
        assert conn.execute("SELECT rule FROM schedule.cron").fetchall() == [({"crontab": "*/5 * * * *"},)]
        assert _error(conn, "INSERT INTO timetable.chain (chain_name, run_at) VALUES ('bad', '0 25 * * *')", ()) \
            == 'cron field "hour" (2nd): 25 is out of range 0-23'
        assert conn.execute("SELECT bool_and(prosrc LIKE '%%pgtt.cron_%%') FROM pg_proc WHERE oid IN "
                            "('timetable.cron_parse(text)'::regprocedure, 'schedule._cron_problem(text)'::regprocedure)"
                            ).fetchone()[0] is True
        upgraded = _catalog(conn)
    with psycopg.connect(make_db(("timetable", "schedule")), autocommit=True) as fresh:
        installed = _catalog(fresh)
    assert upgraded["schemas"] == installed["schemas"]
    assert upgraded["types"] == installed["types"]
    assert set(upgraded["functions"]) == set(installed["functions"])
    assert [k for k in upgraded["functions"] if upgraded["functions"][k] != installed["functions"][k]] == []
    _unprivileged_role_still_works(empty_dsn)


def _unprivileged_role_still_works(dsn: str) -> None:
    role = "cron_admin_without_pgtt"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        conn.execute(f'CREATE ROLE "{role}"')
        try:
            # what a timetable administrator gets (README: grant the schema to administrators)
            conn.execute(f'GRANT USAGE ON SCHEMA timetable TO "{role}"; '
                         f'GRANT ALL ON ALL TABLES IN SCHEMA timetable TO "{role}"; '
                         f'GRANT ALL ON ALL SEQUENCES IN SCHEMA timetable TO "{role}"')
            conn.execute(f'SET ROLE "{role}"')
            conn.execute("INSERT INTO timetable.chain (chain_name, run_at) VALUES ('by admin', '@daily')")
            assert conn.execute("SELECT timetable.add_job('job by admin', '0 0 * * 1/2', 'SELECT 1')").fetchone()[0]
            assert _error(conn, "INSERT INTO timetable.chain (chain_name, run_at) VALUES ('x', '0 0 31 2 *')", ()) \
                == 'cron field "day of month" (3rd): 31 never occurs in month 2'
            assert conn.execute("SELECT timetable.cron_next('0 0 * * *', '2026-01-01 12:00Z')").fetchone()[0] \
                == datetime(2026, 1, 2, tzinfo=timezone.utc)
            # schedule: directly (granted to PUBLIC) and through a SECURITY DEFINER job function
            assert conn.execute("SELECT schedule._cron_problem('0 0 * * 8')").fetchone()[0] \
                == 'day of week (cron field "day of week", 5th): 8 is out of range 0-7'
            assert _error(conn, """SELECT schedule.create_job('{"cron": "61 * * * *", "commands": "SELECT 1"}')""",
                          ()).startswith("minute (cron field")
            assert conn.execute("""SELECT schedule.create_job('{"cron": "@reboot", "commands": "SELECT 1"}')""") \
                .fetchone()[0]
            conn.execute("RESET ROLE")
        finally:
            conn.execute("RESET ROLE")
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_unprivileged_role_uses_the_shared_parser_on_a_fresh_install(make_db):
    _unprivileged_role_still_works(make_db(("timetable", "schedule")))
