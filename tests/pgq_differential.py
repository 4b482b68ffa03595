"""The machinery of tests/test_pgq_differential.py: run one operation sequence against two
databases of the same server (the real PgQ 3.5 / pgq_node 3.5 extensions in one, our
sql/pgq and sql/pgq_node in the other), in lockstep, and compare every outcome.

An operation is an SQL text, or ``(connection number, SQL text)``: each side has three
autocommit connections, so a sequence can hold a transaction open on one (explicit BEGIN /
COMMIT) while the others tick and consume. An outcome is the result rows (column names
included) or the error (SQLSTATE and primary message, what a client matches on), and the
notices / warnings the statement raised (severity and message).

Normalised, and only these (README, "Differences from PgQ", says why they cannot be equal):
- time values (timestamps, intervals: ``now()`` differs between the two runs of an
  operation) become ``<time>``; ``ev_per_sec`` (events per second of tick time) ``<rate>``;
- transaction ids and snapshots (columns named in TXID_COLUMNS): both databases share one
  server, whose transaction counter advances for both, so the numbers differ by design.
NULLs stay NULLs in every case.
"""

from __future__ import annotations

import datetime
import decimal
import json

import psycopg

SESSION = ("SET DateStyle = 'ISO, YMD'", "SET TimeZone = 'UTC'", "SET lc_messages = 'C'",
           "SET bytea_output = 'hex'", "SET IntervalStyle = 'postgres'", "SET extra_float_digits = 1",
           "SET client_min_messages = notice")

TXID_COLUMNS = {"ev_txid", "tick_snapshot", "queue_switch_step1", "queue_switch_step2", "txid"}
RATE_COLUMNS = {"ev_per_sec"}


def _norm(column: str, value):
    if value is None:
        return None
    if column in TXID_COLUMNS:
        return "<txid>"
    if column in RATE_COLUMNS:
        return "<rate>"
    if isinstance(value, (datetime.datetime, datetime.timedelta, datetime.date, datetime.time)):
        return "<time>"
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_norm(column, v) for v in value]
    return value


class Side:
    """One database, three autocommit connections."""

    def __init__(self, dsn: str):
        self.conns = []
        self.notices: list[tuple[str, str]] = []
        for _ in range(3):
            conn = psycopg.connect(dsn, autocommit=True)
            for stmt in SESSION:
                conn.execute(stmt)
            conn.add_notice_handler(lambda d: self.notices.append((d.severity_nonlocalized, d.message_primary)))
            self.conns.append(conn)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    def run(self, op) -> tuple:
        index, text = op if isinstance(op, tuple) else (0, op)
        self.notices.clear()
        try:
            cur = self.conns[index].execute(text)
            if cur.description is None:
                out = ("ok", cur.statusmessage)
            else:
                names = [c.name for c in cur.description]
                out = ("rows", names, [[_norm(n, v) for n, v in zip(names, row)] for row in cur.fetchall()])
        except psycopg.Error as e:
            out = ("error", e.sqlstate, e.diag.message_primary)
        return out + (tuple(self.notices),)


def _show(op) -> str:
    index, text = op if isinstance(op, tuple) else (0, op)
    return f"[{index}] {text}"


class Mismatch(AssertionError):
    pass


def run_both(real_dsn: str, ours_dsn: str, ops: list, label: str) -> int:
    """Run ``ops`` on both sides in lockstep (real first); raise Mismatch at the first
    difference, with the sequence so far. Returns the number of operations run."""
    real, ours = Side(real_dsn), Side(ours_dsn)
    log: list[str] = []
    try:
        for n, op in enumerate(ops, 1):
            a = real.run(op)
            b = ours.run(op)
            log.append(f"{n:4d} {_show(op)}\n       -> {_brief(a)}")
            if a != b:
                raise Mismatch(f"{label}: operation {n} differs\n  real: {a}\n  ours: {b}\n"
                               f"sequence so far:\n" + "\n".join(log))
    finally:
        real.close()
        ours.close()
    return len(ops)


def _brief(out: tuple) -> str:
    text = json.dumps(out, default=str)
    return text if len(text) < 300 else text[:300] + "..."


# state of the pgq tables after a sequence: compared too
PGQ_STATE = [
    "SELECT queue_id, queue_name, queue_ntables, queue_cur_table, queue_rotation_period, queue_external_ticker, "
    "queue_disable_insert, queue_ticker_paused, queue_ticker_max_count, queue_ticker_max_lag, "
    "queue_ticker_idle_period, queue_per_tx_limit, queue_data_pfx, queue_event_seq, queue_tick_seq, "
    "queue_extra_maint, queue_switch_step2 IS NULL AS step2_pending FROM pgq.queue ORDER BY 1",
    "SELECT * FROM pgq.consumer ORDER BY 1",
    "SELECT sub_id, sub_queue, sub_consumer, sub_last_tick, sub_batch, sub_next_tick FROM pgq.subscription "
    "ORDER BY 2, 3",
    "SELECT tick_queue, tick_id, tick_event_seq FROM pgq.tick ORDER BY 1, 2",
    "SELECT ev_queue, ev_id, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, ev_extra3, ev_extra4, "
    "ev_txid FROM pgq.retry_queue ORDER BY 1, 2, 3",
    "SELECT tableoid::regclass::text AS tbl, ev_id, ev_owner, ev_retry, ev_type, ev_data, ev_extra1, ev_extra2, "
    "ev_extra3, ev_extra4 FROM pgq.event_template ORDER BY 1, 2, 3 NULLS FIRST",
    "SELECT c.relname, pgq.seq_getval('pgq.' || c.relname) FROM pg_class c WHERE c.relkind = 'S' "
    "AND c.relnamespace = 'pgq'::regnamespace ORDER BY 1",
]

PGQ_NODE_STATE = [
    "SELECT * FROM pgq_node.node_location ORDER BY 1, 2",
    "SELECT * FROM pgq_node.node_info ORDER BY 1",
    "SELECT * FROM pgq_node.local_state ORDER BY 1, 2",
    "SELECT * FROM pgq_node.subscriber_info ORDER BY 1, 2",
]
