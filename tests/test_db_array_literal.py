"""engine.db.array_literal: what the server reads back is exactly what was sent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine.db import array_literal


def test_text_elements_round_trip_through_the_server(conn):
    values = ['plain', 'with "double" quotes', "with 'single' quotes", "back\\slash", "a,b", "{braces}", "NULL",
              "", " spaced ", "ünïcode ☃", "new\nline", None]
    got = conn.execute("SELECT %s::text[]", (array_literal(values),)).fetchone()[0]
    assert got == values


def test_ints_and_timestamps_round_trip(conn):
    zone = timezone(timedelta(hours=5, minutes=30))
    stamps = [datetime(2030, 1, 1, tzinfo=timezone.utc), datetime(2030, 6, 1, 12, 30, 0, 123456, tzinfo=zone), None]
    assert conn.execute("SELECT %s::timestamptz[]", (array_literal(stamps),)).fetchone()[0] == stamps
    ints = [1, -2, 2**62, None]
    assert conn.execute("SELECT %s::bigint[]", (array_literal(ints),)).fetchone()[0] == ints
    assert conn.execute("SELECT %s::bigint[]", (array_literal([]),)).fetchone()[0] == []


def test_a_naive_timestamp_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        array_literal([datetime(2030, 1, 1)])
