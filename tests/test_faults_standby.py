"""Fault test: a primary fails, its streaming standby is promoted, the engines carry on.

Real streaming replication on this machine (tests/failover_scenario.py): a primary and a
``pg_basebackup`` standby, 20 timetable chains firing every second, engines on the
primary's DSN, on the standby's, and on a multi-host DSN with
``target_session_attrs=read-write`` (one of them started while only the standby answers).
The primary crashes (``pg_ctl stop -m immediate``), the standby is promoted 3 s later.
Figures over many promotions: bench/bench_failover.py, bench/README.md.
"""

from __future__ import annotations

import pytest

from tests.conftest import _test_bindir
from tests.failover_scenario import basebackup_available, run_failover

pytestmark = pytest.mark.slow


@pytest.fixture
def bindir():
    path = _test_bindir()
    if not basebackup_available(path):
        pytest.skip(f"no pg_basebackup in {path}: a streaming standby cannot be made")
    return path


def test_chains_fire_again_promptly_after_promotion_without_duplicates(bindir, pg_tmp_root):
    res = run_failover(pg_tmp_root / "failover", bindir, mode="immediate", n_chains=20, warmup_s=3.0,
                       outage_s=3.0, after_s=3.0)
    report = res.line() + "\n" + "\n".join(res.details)
    # the engine on the standby idled until the promotion; so did the multi-host ones
    # (only a standby answered their read-write DSN), without a growing back-off
    assert res.standby_engine_idled, report
    assert "only standby servers answer: idling" in res.logs["multi-host"], res.logs["multi-host"]
    # started with --startup-wait 0 while only the standby answered: it waits, it does not exit
    assert "only standby servers answer: idling" in res.logs["late-multi"], res.logs["late-multi"]
    assert "database unreachable" not in res.logs["late-multi"] + res.logs["on-standby"], report
    # prompt: chains fire again within a second or two of the promotion, every engine is back
    assert res.first_fire_s < 2.0, report
    assert res.all_fire_s < 3.0, report
    assert set(res.engine_back_s) == {"on-standby", "multi-host", "late-multi"}, report
    assert max(res.engine_back_s.values()) < 3.0, report
    # exactly once where the history survived; what asynchronous replication lost is the
    # only source of a second run, and no firing was dropped silently
    assert res.duplicates <= res.lost_from_history, report
    assert res.lost_firings == 0, report
    assert res.executions + res.claimed_not_run + res.skipped + res.missed_by_policy >= res.due_instants, report
    assert all(code == 0 for code in res.engine_exit_codes.values()), res.engine_exit_codes
