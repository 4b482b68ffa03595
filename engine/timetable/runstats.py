"""Run timings of one timetable engine for ``/metrics``: durations and start lag as histograms.

- ``pgtt_timetable_run_duration_seconds``: from the start of a chain run to its end;
- ``pgtt_timetable_start_lag_seconds``: from a scheduled firing's due time to the start of
  its run (ad-hoc runs have no due time and are not counted).

Rendered by engine/http.py in the Prometheus text format (``_bucket`` / ``_sum`` / ``_count``).
"""

from __future__ import annotations

import bisect
import math

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        value = max(0.0, float(value))
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def metrics(self, name: str, labels: dict[str, str], help: str) -> list:
        from engine.worker import Metric  # noqa: PLC0415 - avoid an import cycle

        out, running = [], 0
        for bound, n in zip((*self.buckets, math.inf), self.counts):
            running += n
            le = "+Inf" if math.isinf(bound) else repr(bound)
            out.append(Metric(f"{name}_bucket", float(running), {**labels, "le": le}, "histogram", help))
        out.append(Metric(f"{name}_sum", self.sum, labels, "histogram", help))
        out.append(Metric(f"{name}_count", float(self.count), labels, "histogram", help))
        return out


class RunTimings:
    def __init__(self):
        self.duration = Histogram()
        self.lag = Histogram()

    def metrics(self, labels: dict[str, str]) -> list:
        return [*self.duration.metrics("pgtt_timetable_run_duration_seconds", labels,
                                       "chain run duration (start to end)"),
                *self.lag.metrics("pgtt_timetable_start_lag_seconds", labels,
                                  "delay from a scheduled firing's due time to the start of its run")]
