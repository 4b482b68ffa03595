"""Options of the timetable engine (pg_timetable's flag names where they exist)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from engine.errors import InputError

LOG_DATABASE_LEVELS = ("none", "error", "info", "debug")


@dataclass
class TimetableOptions:
    client_name: str = ""
    cron_workers: int = 16          # --cron-workers: cron, @reboot and ad-hoc chains at once
    interval_workers: int = 16      # --interval-workers: @every / @after chains at once
    chain_timeout_ms: int = 0       # --chain-timeout: default for chain.timeout = 0 (0: none)
    task_timeout_ms: int = 0        # --task-timeout: default for task.timeout = 0 (0: none)
    log_database_level: str = "info"  # --log-database-level: none | error | info | debug
    default_max_instances: int = 16  # chain.max_instances NULL means this (as pg_timetable)
    poll_seconds: float = 1.0       # fallback poll when no NOTIFY arrives (real seconds)
    reap_seconds: float = 2.0       # how often dead runs are looked for (real seconds)
    missed_grace_seconds: float = 10.0  # a firing later than this is "missed" (policy applies)
    #: missed_runs = run_all runs at most this many missed firings per catch-up (oldest first)
    missed_run_all_limit: int = 100
    claim_batch: int = 1000
    #: firings are claimed up to this long before they are due and wait in the worker for
    #: their due time, so a run starts the instant it is due (not one claim round trip later)
    claim_ahead_ms: int = 100
    no_program_tasks: bool = False  # --no-program-tasks (enforced by the PROGRAM/BUILTIN kinds)
    #: options of other timetable pieces (files, REST, retention ...), passed through untouched
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "TimetableOptions":
        if not self.client_name:
            raise InputError("--clientname", "is required for the timetable engine")
        for name in ("cron_workers", "interval_workers"):
            if int(getattr(self, name)) < 1:
                raise InputError("--" + name.replace("_", "-"), "must be 1 or more")
        for name, flag in (("chain_timeout_ms", "--chain-timeout"), ("task_timeout_ms", "--task-timeout")):
            if int(getattr(self, name)) < 0:
                raise InputError(flag, "must be 0 (no limit) or a positive number of milliseconds")
        if int(self.missed_run_all_limit) < 1:
            raise InputError("missed_run_all_limit", "must be 1 or more")
        if self.log_database_level not in LOG_DATABASE_LEVELS:
            raise InputError("--log-database-level", f"{self.log_database_level!r} is not one of "
                                                     f"{', '.join(LOG_DATABASE_LEVELS)}")
        return self

    @classmethod
    def from_mapping(cls, client_name: str, values: dict[str, Any]) -> "TimetableOptions":
        known = {f.name for f in fields(cls)} - {"extra", "client_name"}
        mine = {k: v for k, v in values.items() if k in known}
        extra = {k: v for k, v in values.items() if k not in known and k != "client_name"}
        return cls(client_name=client_name, extra=extra, **mine).validate()
