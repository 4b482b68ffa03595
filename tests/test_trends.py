"""engine.views.trends: the charts' read models (issue 18), on the demo's fixed history."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine import demo
from engine.views import trends
from engine.errors import NotFoundError

NOW = datetime(2026, 11, 21, 12, 0, 30, tzinfo=timezone.utc)


@pytest.fixture
def history(conn):
    demo.load_samples(conn)
    demo.load_trends(conn, NOW)
    demo.load_history(conn, NOW)
    return conn


def test_activity_counts_every_minute_of_the_hour(history):
    data = trends.activity(history, NOW)
    buckets = data["buckets"]
    assert len(buckets) == 60
    assert buckets[-1]["at"] == datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    assert [b["at"] for b in buckets] == sorted(b["at"] for b in buckets)
    total = sum(b["ok"] + b["failed"] + b["skipped"] for b in buckets)
    ended = history.execute("SELECT count(*) FROM timetable.chain_run WHERE finished_at > %s AND finished_at <= %s",
                            (buckets[0]["at"], NOW)).fetchone()[0]
    ended += history.execute("SELECT count(*) FROM schedule.cron_run WHERE finished > %s",
                             (buckets[0]["at"],)).fetchone()[0]
    ended += history.execute("SELECT count(*) FROM schedule.at_job WHERE done_time > %s",
                             (buckets[0]["at"],)).fetchone()[0]
    assert total == ended
    assert sum(b["failed"] for b in buckets) > 0 and sum(b["skipped"] for b in buckets) > 0
    # the demo engine has 8 slots for the whole hour; slow-rollup overlaps itself at the end
    assert {b["capacity"] for b in buckets} == {8}
    assert max(b["busy"] for b in buckets) > 1


def test_activity_since_replaces_only_the_newest_buckets(history):
    full = trends.activity(history, NOW)["buckets"]
    later = NOW + timedelta(seconds=45)
    history.execute("INSERT INTO timetable.chain_run (chain_id, trigger, client_name, session_id, started_at, "
                    "finished_at, status) SELECT chain_id, 'manual', 'node-a', 1, %s, %s, 'failed' "
                    "FROM timetable.chain WHERE chain_name = 'heartbeat'", (later, later))
    inc = trends.activity(history, later, since=full[-1]["at"])["buckets"]
    assert [b["at"] for b in inc] == [full[-1]["at"], full[-1]["at"] + timedelta(minutes=1)]
    assert inc[-1]["failed"] == 1
    merged = trends.merge_buckets(full, inc, keep=60)
    assert len(merged) == 60 and merged[-1]["failed"] == 1 and merged[0]["at"] == full[1]["at"]


def test_run_stats_of_a_chain(history):
    stats = trends.run_stats(history, "chain", "flaky-import", now=NOW)
    runs = stats["runs"]
    assert [r["run_id"] for r in runs] == sorted(r["run_id"] for r in runs)
    assert {r["status"] for r in runs} == {"succeeded", "failed"}
    s = stats["summary"]
    assert s["failed"] == sum(1 for r in runs if r["status"] == "failed")
    assert s["duration"]["p50"] <= s["duration"]["p95"] <= s["duration"]["max"]
    assert s["lag"]["max"] == pytest.approx(0.5)
    rollup = trends.run_stats(history, "chain", "slow-rollup", now=NOW)
    assert rollup["summary"]["skipped"] > 0 and rollup["summary"]["running"] == 1
    assert rollup["runs"][-1]["status"] == "running" and rollup["runs"][-1]["duration"] == pytest.approx(30)
    with pytest.raises(NotFoundError):
        trends.run_stats(history, "chain", "no-such-chain")


def test_run_stats_incremental_and_merge(history):
    first = trends.run_stats(history, "chain", "slow-rollup", n=10, now=NOW)["runs"]
    since = trends.oldest_open(first)
    assert since == first[-1]["run_id"]  # the running one
    history.execute("UPDATE timetable.chain_run SET status = 'succeeded', finished_at = %s WHERE run_id = %s",
                    (NOW, since))
    new = trends.run_stats(history, "chain", "slow-rollup", n=10, now=NOW, since_id=since)["runs"]
    assert [r["run_id"] for r in new] == [since]
    merged = trends.merge_runs(first, new, keep=10)
    assert merged[-1]["status"] == "succeeded" and len(merged) == 10


def test_run_stats_of_a_job(history):
    job = history.execute("SELECT id FROM schedule.cron WHERE name = 'bad-cron-job'").fetchone()[0]
    stats = trends.run_stats(history, "job", job)
    assert stats["runs"] and all(r["status"] == "failed" for r in stats["runs"])
    assert stats["summary"]["lag"]["max"] == pytest.approx(1.0)


def test_percentile_nearest_rank():
    assert trends.percentile([], 50) is None
    assert trends.percentile([3, 1, 2], 50) == 2
    assert trends.percentile(list(range(1, 101)), 95) == 95


def test_timeline_window_and_incremental(history):
    data = trends.timeline(history, NOW, minutes=30)
    runs = data["runs"]
    assert any(r["finished_at"] is None and r["name"] == "slow-rollup" for r in runs)
    assert any(r["status"] == "skipped" for r in runs)
    assert all(r["finished_at"] is None or r["finished_at"] >= NOW - timedelta(minutes=30) for r in runs)
    later = NOW + timedelta(seconds=10)
    history.execute("UPDATE timetable.chain_run SET status = 'succeeded', finished_at = %s "
                    "WHERE status = 'running'", (later,))
    inc = trends.timeline(history, later, minutes=30, since=NOW)["runs"]
    assert [r["name"] for r in inc] == ["slow-rollup"] and inc[0]["finished_at"] == later
    merged = trends.merge_timeline(runs, inc, start=later - timedelta(minutes=30))
    assert not any(r["finished_at"] is None and r["kind"] == "chain" for r in merged)
