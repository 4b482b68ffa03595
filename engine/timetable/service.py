"""The timetable engine as a worker Service (registered as "timetable" in engine/worker.py)."""

from __future__ import annotations

import time
from typing import Any

from engine.timetable.options import TimetableOptions
from engine.timetable.scheduler import Scheduler


class TimetableService:
    name = "timetable"

    def __init__(self, options: TimetableOptions):
        self.options = options
        self.scheduler: Scheduler | None = None
        self.session_id: int | None = None  # kept across restarts: the same engine session
        self.started_at = time.time()

    async def run(self, ctx) -> None:
        options = self.options
        if not options.client_name:
            options.client_name = ctx.client_name
        options.validate()
        self.scheduler = Scheduler(ctx.settings, options, ctx.clock, ctx.log.getChild("timetable"),
                                   session_id=self.session_id)
        self.session_id = self.scheduler.session_id
        self.scheduler.abort_reason_of = lambda: getattr(ctx, "stop_reason", None) or None
        await self.scheduler.run(ctx.stopping)

    def cancel_runs(self, reason: str, keep_run: int | None = None) -> int:
        """Service hook the worker calls when the engine is asked to exit at once."""
        return 0 if self.scheduler is None else self.scheduler.stop_all(reason, except_run=keep_run)

    def health(self) -> dict[str, Any]:
        if self.scheduler is None:
            return {"ok": False, "detail": "not started"}
        return self.scheduler.health()

    def metrics(self) -> list:
        from engine.worker import Metric  # noqa: PLC0415 - avoid an import cycle

        if self.scheduler is None:
            return []
        s = self.scheduler
        labels = {"client_name": self.options.client_name}
        out = [Metric("pgtt_timetable_running_chains", float(len(s.running)), labels, "gauge",
                      "chain runs in progress in this engine")]
        for key, value in s.stats.items():
            out.append(Metric(f"pgtt_timetable_runs_{key}_total", float(value), labels, "counter",
                              f"chain runs {key} by this engine"))
        if hasattr(s, "timing"):  # run durations and start lag (timetable tasks engineer)
            out.extend(s.timing.metrics(labels))
        return out


def build_services(options) -> list[TimetableService]:
    """Factory for engine.worker.SERVICE_FACTORIES["timetable"]."""
    from engine.worker import default_client_name  # noqa: PLC0415

    values = dict(options.for_module("timetable"))
    from engine.timetable.retention import build_services as retention  # noqa: PLC0415 - log retention (tasks eng.)

    return [TimetableService(TimetableOptions.from_mapping(options.client_name or default_client_name(), values)),
            *retention(options)]
