"""Read models for the console's charts and ``pgtt-tui chain stats`` (issue 18).

Everything comes from the database's own history, so a chart is right the moment a view
opens; the console then asks again with ``since`` (the newest bucket it holds, or the
oldest run still open) and appends what changed instead of reading the window again.

- ``activity(conn, now)``: per minute of the last hour, the runs that ended (timetable and
  schedule together: succeeded / failed / skipped) and the slot use (average timetable runs
  in progress during the minute against the worker slots of the engines alive then).
  Bucketed in SQL with ``date_bin`` over the runs of the window only: the ended ones through
  ``chain_run_finished_idx`` / ``cron_run_finished_idx`` / ``at_job_done_idx``, the open ones
  through the partial "open" indexes, so the cost grows with the window, not the history.
- ``run_stats(conn, kind, key)``: the last N runs of one chain (``kind="chain"``, by name)
  or cron job (``kind="job"``, by id): duration, due→start lag, status; ``summarize`` gives
  p50 / p95 / max of both (pure, shared by the CLI and the console).
- ``timeline(conn, now, minutes)``: the runs of the last N minutes (start, end or still
  running, status, engine, chain / job name) for the sessions view's timeline.
- ``queue_trends(conn, now)`` / ``cascade_lag(conn, queue, now)``: events per second and
  consumer lag per queue, a cascade node's lag behind the root, from the samples the ticker
  and the cascade worker write (PgQ keeps no history); ``trend`` tells a growing lag.

Times are timestamptz; durations and lags are float seconds.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

from engine.access import Access, access
from engine.errors import NotFoundError

#: buckets are aligned on this origin (date_bin), so an incremental read lines up with the first
BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)
DEFAULT_WINDOW_MIN = 60
DEFAULT_STEP_S = 60
DEFAULT_RUNS = 60

# Ended runs per bucket: a run counts in the minute it ended (skipped ones end as they start).
TIMETABLE_ENDED_SQL = """
SELECT date_bin(%(step)s, r.finished_at, %(origin)s) AS at,
       count(*) FILTER (WHERE r.status = 'succeeded') AS ok,
       count(*) FILTER (WHERE r.status = 'failed') AS failed,
       count(*) FILTER (WHERE r.status = 'skipped') AS skipped
FROM timetable.chain_run r
WHERE r.finished_at >= %(since)s AND r.finished_at <= %(until)s
GROUP BY 1
"""

# Slot use: each run in progress during the window adds the seconds it ran in each bucket it
# spans (generate_series over its own buckets only); divided by the bucket length, the sum
# is the average number of runs in progress.
TIMETABLE_BUSY_SQL = """
WITH runs AS (
    SELECT greatest(r.started_at, %(since)s) AS s, least(coalesce(r.finished_at, %(until)s), %(until)s) AS e
    FROM timetable.chain_run r
    WHERE r.finished_at >= %(since)s AND r.started_at < %(until)s AND r.status <> 'skipped'
    UNION ALL
    SELECT greatest(r.started_at, %(since)s), %(until)s
    FROM timetable.chain_run r
    WHERE r.status IN ('claimed', 'running') AND r.started_at < %(until)s
)
SELECT b.at, sum(extract(epoch FROM least(runs.e, b.at + %(step)s) - greatest(runs.s, b.at)))
              / extract(epoch FROM %(step)s::interval) AS busy
FROM runs
CROSS JOIN LATERAL generate_series(date_bin(%(step)s, runs.s, %(origin)s), runs.e - interval '1 microsecond',
                                   %(step)s) AS b(at)
WHERE runs.e > runs.s
GROUP BY b.at
"""

# Capacity: the slots of the engines alive during the bucket (a live engine up to now, a
# stopped one up to its stop, a lost one up to its last heartbeat).
CAPACITY_SQL = """
SELECT b.at, coalesce(sum(e.slots), 0) AS capacity
FROM generate_series(date_bin(%(step)s, %(since)s, %(origin)s), %(until)s, %(step)s) AS b(at)
LEFT JOIN pgtt.engine e
  ON e.started_at < b.at + %(step)s
 AND coalesce(e.stopped_at, CASE WHEN pgtt.engine_alive(e.backend_pid, coalesce(e.connected_at, e.started_at)) THEN %(until)s
                                 ELSE e.heartbeat_at END) > b.at
GROUP BY b.at
"""

CRON_ENDED_SQL = """
SELECT date_bin(%(step)s, r.finished, %(origin)s) AS at,
       count(*) FILTER (WHERE r.state = 'done') AS ok,
       count(*) FILTER (WHERE r.state = 'error') AS failed,
       0 AS skipped
FROM schedule.cron_run r
WHERE r.state IN ('done', 'error') AND r.finished >= %(since)s AND r.finished <= %(until)s
GROUP BY 1
"""

AT_ENDED_SQL = """
SELECT date_bin(%(step)s, a.done_time, %(origin)s) AS at,
       count(*) FILTER (WHERE a.is_success) AS ok,
       count(*) FILTER (WHERE NOT coalesce(a.is_success, false)) AS failed,
       0 AS skipped
FROM schedule.at_job a
WHERE a.status = 'done' AND a.done_time >= %(since)s AND a.done_time <= %(until)s
GROUP BY 1
"""

# Through the schedule SQL API for a role that may not read its tables (own jobs only).
CRON_ENDED_API_SQL = """
SELECT date_bin(%(step)s, r.finished, %(origin)s) AS at,
       count(*) FILTER (WHERE r.status <> 'error') AS ok,
       count(*) FILTER (WHERE r.status = 'error') AS failed,
       0 AS skipped
FROM schedule.get_user_log() r
WHERE r.finished >= %(since)s AND r.finished <= %(until)s
GROUP BY 1
"""

CHAIN_ID_SQL = "SELECT chain_id FROM timetable.chain WHERE chain_name = %s"

CHAIN_RUNS_SQL = """
SELECT r.run_id, r.due_at, coalesce(r.started_at, r.claimed_at) AS started_at, r.finished_at, r.status,
       coalesce(r.reason, '') AS reason, r.client_name AS engine, r.trigger
FROM timetable.chain_run r
WHERE r.chain_id = %(id)s AND r.run_id >= %(since_id)s
ORDER BY r.run_id DESC
LIMIT %(n)s
"""

JOB_RUNS_SQL = """
SELECT r.run_id, r.scheduled_at AS due_at, r.started AS started_at, r.finished AS finished_at,
       CASE r.state WHEN 'done' THEN 'succeeded' WHEN 'error' THEN 'failed'
                    WHEN 'working' THEN 'running' ELSE r.state END AS status,
       coalesce(r.message, '') AS reason, coalesce(r.engine, r.node) AS engine, 'cron' AS trigger
FROM schedule.cron_run r
WHERE r.cron = %(id)s AND r.run_id >= %(since_id)s AND r.state <> 'planned'
ORDER BY r.scheduled_at DESC
LIMIT %(n)s
"""

TIMELINE_CHAINS_SQL = """
SELECT 'chain:' || r.run_id AS key, 'chain' AS kind, coalesce(c.chain_name, 'chain ' || r.chain_id) AS name,
       r.client_name AS engine, coalesce(r.started_at, r.claimed_at) AS started_at, r.finished_at,
       CASE WHEN r.status = 'claimed' THEN 'running' ELSE r.status END AS status
FROM timetable.chain_run r LEFT JOIN timetable.chain c USING (chain_id)
WHERE r.finished_at >= %(since)s AND coalesce(r.started_at, r.claimed_at) < %(until)s
UNION ALL
SELECT 'chain:' || r.run_id, 'chain', coalesce(c.chain_name, 'chain ' || r.chain_id), r.client_name,
       coalesce(r.started_at, r.claimed_at), NULL, 'running'
FROM timetable.chain_run r LEFT JOIN timetable.chain c USING (chain_id)
WHERE r.status IN ('claimed', 'running')
LIMIT %(limit)s
"""

TIMELINE_CRON_SQL = """
SELECT 'cron:' || r.run_id AS key, 'job' AS kind, coalesce(c.name, 'job ' || r.cron) AS name,
       coalesce(r.engine, r.node) AS engine, r.started AS started_at, r.finished AS finished_at,
       CASE r.state WHEN 'done' THEN 'succeeded' WHEN 'error' THEN 'failed' ELSE 'running' END AS status
FROM schedule.cron_run r LEFT JOIN schedule.cron c ON c.id = r.cron
WHERE (r.state IN ('done', 'error') AND r.finished >= %(since)s AND r.started < %(until)s)
   OR (r.state = 'working' AND r.started IS NOT NULL)
LIMIT %(limit)s
"""


def _rows(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return list(cur.fetchall())


def bucket_start(at: datetime, step_s: int = DEFAULT_STEP_S) -> datetime:
    """``date_bin(step, at, BUCKET_ORIGIN)`` in Python (the buckets the SQL makes)."""
    seconds = (at - BUCKET_ORIGIN).total_seconds()
    return BUCKET_ORIGIN + timedelta(seconds=math.floor(seconds / step_s) * step_s)


def activity(conn: psycopg.Connection, now: datetime, *, minutes: int = DEFAULT_WINDOW_MIN,
             step_s: int = DEFAULT_STEP_S, since: datetime | None = None,
             parts: Access | None = None) -> dict[str, Any]:
    """Runs per bucket over the last ``minutes`` up to ``now`` (or from the bucket holding
    ``since``: the console's incremental read; it replaces the buckets from there on).

    ``buckets``: one dict per bucket, oldest first, every bucket present: ``at``, ``ok``,
    ``failed``, ``skipped`` (runs that ended in it, timetable and schedule together),
    ``busy`` (average timetable runs in progress, None without timetable), ``capacity``
    (slots of the engines alive then, None without the pgtt schema)."""
    parts = parts or access(conn)
    first = bucket_start(now - timedelta(minutes=minutes), step_s) + timedelta(seconds=step_s)
    start = max(first, bucket_start(since, step_s)) if since is not None else first
    until = now
    params = {"step": timedelta(seconds=step_s), "origin": BUCKET_ORIGIN, "since": start, "until": until}
    buckets: dict[datetime, dict[str, Any]] = {}
    at = start
    while at <= now:
        buckets[at] = {"at": at, "ok": 0, "failed": 0, "skipped": 0, "busy": None, "capacity": None}
        at += timedelta(seconds=step_s)
    ended: list[dict[str, Any]] = []
    if parts.readable("timetable"):
        ended += _rows(conn, TIMETABLE_ENDED_SQL, params)
        for b in buckets.values():
            b["busy"] = 0.0
        for row in _rows(conn, TIMETABLE_BUSY_SQL, params):
            if row["at"] in buckets:
                buckets[row["at"]]["busy"] = round(float(row["busy"] or 0), 2)
    if parts.readable("schedule"):
        ended += _rows(conn, CRON_ENDED_SQL, params) + _rows(conn, AT_ENDED_SQL, params)
    elif parts["schedule"]:
        ended += _rows(conn, CRON_ENDED_API_SQL, params)
    for row in ended:
        b = buckets.get(row["at"])
        if b is not None:
            for k in ("ok", "failed", "skipped"):
                b[k] += int(row[k])
    if parts.readable("pgtt"):
        for row in _rows(conn, CAPACITY_SQL, params):
            if row["at"] in buckets:
                buckets[row["at"]]["capacity"] = int(row["capacity"])
    return {"step_s": step_s, "minutes": minutes, "since": start, "now": now,
            "buckets": [buckets[k] for k in sorted(buckets)]}


def merge_buckets(old: list[dict[str, Any]], new: list[dict[str, Any]], *, keep: int) -> list[dict[str, Any]]:
    """The console's append: buckets of ``new`` replace those of ``old`` from the first one
    on; the oldest fall off so that at most ``keep`` remain."""
    if not new:
        return old[-keep:]
    cut = new[0]["at"]
    return ([b for b in old if b["at"] < cut] + list(new))[-keep:]


# ---- one chain's / job's runs ------------------------------------------------------------------

def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return max(0.0, (b - a).total_seconds())


def run_stats(conn: psycopg.Connection, kind: str, key: str | int, *, n: int = DEFAULT_RUNS,
              now: datetime | None = None, since_id: int = 0) -> dict[str, Any]:
    """The last ``n`` runs (with ``run_id >= since_id``) of a chain (``kind="chain"``, by
    name) or a cron job (``kind="job"``, by id), oldest first, and their summary.

    Each run: run_id, due_at, started_at, finished_at, status (succeeded, failed, skipped,
    running), reason, engine, ``duration`` (s; a running one up to ``now``), ``lag`` (s from
    due to start; None for ad-hoc runs)."""
    if kind == "chain":
        row = conn.execute(CHAIN_ID_SQL, (str(key),)).fetchone()
        if row is None:
            raise NotFoundError(f"chain {key!r} does not exist")
        query, ident = CHAIN_RUNS_SQL, row[0]
    elif kind == "job":
        query, ident = JOB_RUNS_SQL, int(key)
    else:
        raise ValueError(kind)
    runs = _rows(conn, query, {"id": ident, "since_id": since_id, "n": n})
    runs.reverse()
    for r in runs:
        end = r["finished_at"] or (now if r["status"] in ("running", "claimed") else None)
        r["status"] = "running" if r["status"] == "claimed" else r["status"]
        r["duration"] = _seconds(r["started_at"], end)
        r["lag"] = _seconds(r["due_at"], r["started_at"]) if r["due_at"] is not None and r["status"] != "skipped" \
            else None
    return {"kind": kind, "name": str(key), "runs": runs, "summary": summarize(runs)}


def merge_runs(old: list[dict[str, Any]], new: list[dict[str, Any]], *, keep: int) -> list[dict[str, Any]]:
    """The console's append for per-run charts: runs of ``new`` replace those with the same
    id, newer ones are appended, the oldest fall off."""
    by_id = {r["run_id"]: r for r in old}
    by_id.update({r["run_id"]: r for r in new})
    return [by_id[k] for k in sorted(by_id)][-keep:]


def oldest_open(runs: list[dict[str, Any]]) -> int:
    """Where the next incremental read starts: the oldest run still running, else the
    newest run (it is read again, cheaply), else 0."""
    open_ids = [r["run_id"] for r in runs if r["status"] == "running"]
    if open_ids:
        return min(open_ids)
    return max((r["run_id"] for r in runs), default=0)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by status and p50 / p95 / max of the durations of finished runs (succeeded or
    failed) and of the due→start lags."""
    done = [r["duration"] for r in runs if r["status"] in ("succeeded", "failed") and r["duration"] is not None]
    lags = [r["lag"] for r in runs if r.get("lag") is not None and r["status"] != "skipped"]
    counts = {s: sum(1 for r in runs if r["status"] == s) for s in ("succeeded", "failed", "skipped", "running")}
    return {"runs": len(runs), **counts,
            "duration": {"p50": percentile(done, 50), "p95": percentile(done, 95), "max": max(done, default=None)},
            "lag": {"p50": percentile(lags, 50), "p95": percentile(lags, 95), "max": max(lags, default=None)}}


# ---- timeline --------------------------------------------------------------------------------

def timeline(conn: psycopg.Connection, now: datetime, *, minutes: int = 30, since: datetime | None = None,
             limit: int = 2000, parts: Access | None = None) -> dict[str, Any]:
    """Runs in progress during the last ``minutes`` (or, incrementally, that ended since
    ``since`` or are still running): key, kind (chain | job), name, engine, started_at,
    finished_at (None while running), status."""
    parts = parts or access(conn)
    start = now - timedelta(minutes=minutes)
    params = {"since": max(start, since) if since else start, "until": now, "limit": limit}
    runs: list[dict[str, Any]] = []
    if parts.readable("timetable"):
        runs += _rows(conn, TIMELINE_CHAINS_SQL, params)
    if parts.readable("schedule"):
        runs += _rows(conn, TIMELINE_CRON_SQL, params)
    runs = [r for r in runs if r["started_at"] is not None]
    runs.sort(key=lambda r: (r["started_at"], r["key"]))
    return {"now": now, "minutes": minutes, "since": params["since"], "runs": runs}


def merge_timeline(old: list[dict[str, Any]], new: list[dict[str, Any]], *, start: datetime) -> list[dict[str, Any]]:
    """The console's append for the timeline: runs of ``new`` replace those with the same key;
    runs that ended before ``start`` fall off."""
    by_key = {r["key"]: r for r in old}
    by_key.update({r["key"]: r for r in new})
    out = [r for r in by_key.values() if r["finished_at"] is None or r["finished_at"] >= start]
    out.sort(key=lambda r: (r["started_at"], r["key"]))
    return out


# ---- queues and cascade: sampled history (pgtt.queue_sample / pgtt.cascade_sample) -----------
#
# PgQ keeps no lag history, so the engine samples it (sql/pgtt/0006_trend_samples.sql): the
# ticker writes a row per queue and per consumer at most every 10 s, the cascade worker a row
# per node into the node's own database. These read the samples of a window bucketed with
# date_bin over ``*_sample_at_idx`` (the cost grows with the window, not the retention), and,
# like ``activity``, take ``since`` so a poll reads only from the newest bucket on.
# ``stored`` is False where there is no sample table or this role may not read it: the
# console then samples what it sees while the view is open (``live_bucket``).

QUEUE_WINDOW_MIN = 30
QUEUE_STEP_S = 30

SAMPLES_READABLE_SQL = """
SELECT CASE WHEN to_regclass(%(table)s) IS NULL THEN false
            ELSE has_table_privilege(%(table)s, 'SELECT') END
"""

QUEUE_SAMPLES_SQL = """
SELECT s.queue_name, s.consumer_name, date_bin(%(step)s, s.sampled_at, %(origin)s) AS at,
       avg(s.ev_per_sec) AS ev_per_sec, max(s.lag_s) AS lag, max(s.pending) AS pending, max(s.tick_id) AS tick
FROM pgtt.queue_sample s
WHERE s.sampled_at >= %(since)s AND s.sampled_at <= %(until)s
GROUP BY 1, 2, 3
"""

CASCADE_SAMPLES_SQL = """
SELECT s.node_name, date_bin(%(step)s, s.sampled_at, %(origin)s) AS at,
       max(s.lag_s) AS lag, max(s.tick_id) AS tick
FROM pgtt.cascade_sample s
WHERE s.queue_name = %(queue)s AND s.sampled_at >= %(since)s AND s.sampled_at <= %(until)s
GROUP BY 1, 2
"""


def samples_readable(conn: psycopg.Connection, table: str) -> bool:
    """Whether ``table`` (``pgtt.queue_sample`` / ``pgtt.cascade_sample``) exists and this
    role may read it."""
    return bool(conn.execute(SAMPLES_READABLE_SQL, {"table": table}).fetchone()[0])


def _window(now: datetime, minutes: int, step_s: int, since: datetime | None) -> tuple[datetime, list[datetime]]:
    first = bucket_start(now - timedelta(minutes=minutes), step_s) + timedelta(seconds=step_s)
    start = max(first, bucket_start(since, step_s)) if since is not None else first
    ats, at = [], start
    while at <= now:
        ats.append(at)
        at += timedelta(seconds=step_s)
    return start, ats


def _series(rows: list[dict[str, Any]], key: Any, ats: list[datetime], fields: tuple[str, ...]
            ) -> dict[Any, list[dict[str, Any]]]:
    """Rows (one per series and bucket) as every bucket of the window per series, None where
    no sample fell."""
    out: dict[Any, dict[datetime, dict[str, Any]]] = {}
    for row in rows:
        k = key(row)
        buckets = out.get(k)
        if buckets is None:
            buckets = out[k] = {at: {"at": at, **{f: None for f in fields}} for at in ats}
        b = buckets.get(row["at"])
        if b is not None:
            for f in fields:
                b[f] = None if row[f] is None else float(row[f])
    return {k: [v[at] for at in ats] for k, v in sorted(out.items())}


def queue_trends(conn: psycopg.Connection, now: datetime, *, minutes: int = QUEUE_WINDOW_MIN,
                 step_s: int = QUEUE_STEP_S, since: datetime | None = None) -> dict[str, Any]:
    """Per queue and consumer, the sampled history of the last ``minutes`` (or from the bucket
    holding ``since``): ``series[(queue, "")]`` the queue's buckets (``ev_per_sec`` average,
    ``lag`` the ticker lag), ``series[(queue, consumer)]`` a consumer's (``lag`` the largest
    in the bucket, ``pending``). Every bucket of the window is present (None: no sample)."""
    start, ats = _window(now, minutes, step_s, since)
    result: dict[str, Any] = {"step_s": step_s, "minutes": minutes, "since": start, "now": now,
                              "stored": False, "series": {}}
    if not samples_readable(conn, "pgtt.queue_sample"):
        return result
    rows = _rows(conn, QUEUE_SAMPLES_SQL, {"step": timedelta(seconds=step_s), "origin": BUCKET_ORIGIN,
                                           "since": start, "until": now})
    result["stored"] = True
    result["series"] = _series(rows, lambda r: (r["queue_name"], r["consumer_name"]), ats,
                               ("ev_per_sec", "lag", "pending", "tick"))
    return result


def cascade_lag(conn: psycopg.Connection, queue: str, now: datetime, *, minutes: int = QUEUE_WINDOW_MIN,
                step_s: int = QUEUE_STEP_S, since: datetime | None = None) -> dict[str, Any]:
    """One node's sampled lag behind the root (``lag``: seconds since the tick it completed was
    made on the root, the largest in the bucket; ``tick``), read on that node's database;
    ``series[node]`` (a node's database normally holds its own name only)."""
    start, ats = _window(now, minutes, step_s, since)
    result: dict[str, Any] = {"step_s": step_s, "minutes": minutes, "since": start, "now": now,
                              "stored": False, "series": {}}
    if not samples_readable(conn, "pgtt.cascade_sample"):
        return result
    rows = _rows(conn, CASCADE_SAMPLES_SQL, {"step": timedelta(seconds=step_s), "origin": BUCKET_ORIGIN,
                                             "since": start, "until": now, "queue": queue})
    result["stored"] = True
    result["series"] = _series(rows, lambda r: r["node_name"], ats, ("lag", "tick"))
    return result


def merge_series(old: dict[Any, list[dict[str, Any]]], new: dict[Any, list[dict[str, Any]]], *,
                 keep: int) -> dict[Any, list[dict[str, Any]]]:
    """``merge_buckets`` per series; a series only in ``old`` keeps its buckets."""
    out = dict(old)
    for key, buckets in new.items():
        out[key] = merge_buckets(old.get(key, []), buckets, keep=keep)
    return out


def live_bucket(now: datetime, step_s: int = QUEUE_STEP_S, **values: float | None) -> dict[str, Any]:
    """The console's own sample where nothing is stored: one bucket at ``now`` (merged like a
    read one, so the newest poll in a bucket wins)."""
    return {"at": bucket_start(now, step_s), **{k: None if v is None else float(v) for k, v in values.items()}}


def trend(values: list[float | None], *, recent: int = 6) -> str | None:
    """Where a series is heading over its last ``recent`` values with data: ``"up"`` (the
    newest two are clearly above the oldest two: by more than 1 and a tenth), ``"down"``,
    ``"flat"`` (noise, or a partly filled newest bucket, does not count); None with fewer
    than two values."""
    vals = [v for v in values if v is not None][-recent:]
    if len(vals) < 2:
        return None
    k = 2 if len(vals) >= 4 else 1
    first, last = sum(vals[:k]) / k, sum(vals[-k:]) / k
    margin = max(1.0, 0.1 * max(abs(first), abs(last)))
    if last - first > margin:
        return "up"
    if first - last > margin:
        return "down"
    return "flat"
