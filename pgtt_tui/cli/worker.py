"""``pgtt-tui worker``: the engine process (timetable scheduler, job manager, ticker, cascade).

Each module's flags sit in its own marked section and are handed to the services through
``WorkerOptions.module_options[module]``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer

from engine import schema
from engine.db import connect, connect_waiting
from engine.errors import InputError
from pgtt_tui.cli.common import DsnOpt, ReadOnlyOpt, refuse_read_only, settings_from

LOG_LEVELS = ("debug", "info", "notice", "warn", "error")


def worker(
    ctx: typer.Context,
    dsn: DsnOpt = None,
    clientname: Annotated[str, typer.Option("--clientname", "-c", help="unique name of this engine "
                                            "(default: host-pid); chains with a client_name run only here")] = "",
    modules: Annotated[str, typer.Option("--modules", help="comma-separated engine services to run "
                                         "(default: every module installed in the database)")] = "",
    log_level: Annotated[str, typer.Option("--log-level", help="console log level: debug, info, warn, error")] = "info",
    startup_wait: Annotated[float, typer.Option("--startup-wait", min=0, help="seconds to wait for the database "
                                                "to come up at start (0: fail at once); later losses are "
                                                "always retried")] = 60.0,
    # ---- timetable (pg_timetable-compatible options) -----------------------------------------
    cron_workers: Annotated[int, typer.Option("--cron-workers", min=1, help="timetable: cron, @reboot and "
                                              "ad-hoc chains run at once")] = 16,
    interval_workers: Annotated[int, typer.Option("--interval-workers", min=1, help="timetable: @every / @after "
                                                  "chains run at once")] = 16,
    chain_timeout: Annotated[int, typer.Option("--chain-timeout", min=0, help="timetable: default chain timeout "
                                               "in ms for chains with timeout 0 (0: none)")] = 0,
    task_timeout: Annotated[int, typer.Option("--task-timeout", min=0, help="timetable: default task timeout "
                                              "in ms for tasks with timeout 0 (0: none)")] = 0,
    log_database_level: Annotated[str, typer.Option("--log-database-level", help="timetable: what goes to "
                                                    "timetable.log / execution_log: none, error, info, debug")] = "info",
    # ---- end timetable -----------------------------------------------------------------------
    # ---- timetable: files, programs, REST, log retention (timetable tasks engineer) -------------
    files: Annotated[list[str] | None, typer.Option(
        "--file", "-f", help="timetable: run this SQL script or import this YAML chain file at start-up "
        "(repeatable, in order)")] = None,
    validate_files: Annotated[bool, typer.Option(
        "--validate", help="timetable: only validate the --file files, then exit: YAML files are parsed and "
        "SQL scripts run in one transaction that is rolled back (sequences and effects outside the database "
        "are not undone)")] = False,
    replace_chains: Annotated[bool, typer.Option(
        "--replace", help="timetable: --file YAML chains replace chains with the same name")] = False,
    no_program_tasks: Annotated[bool, typer.Option(
        "--no-program-tasks", envvar="PGTT_NOPROGRAMTASKS", help="timetable: start no programs at all "
        "(PROGRAM tasks and the CopyToProgram / CopyFromProgram builtins fail)")] = False,
    rest_port: Annotated[int, typer.Option(
        "--rest-port", envvar="PGTT_RESTPORT", min=0, max=65535, help="HTTP endpoint port for /liveness, "
        "/readiness, /startchain, /stopchain, /metrics (0: off)")] = 0,
    rest_host: Annotated[str, typer.Option(
        "--rest-host", help="address the HTTP endpoint binds to (anything but loopback needs --rest-token)")
    ] = "127.0.0.1",
    rest_token: Annotated[str, typer.Option(
        "--rest-token", envvar="PGTT_REST_TOKEN", show_default=False,
        help="bearer token /startchain and /stopchain require (Authorization: Bearer ...); required when "
             "--rest-host is not loopback; prefer the environment variable (the command line shows in ps)")] = "",
    rest_allowed_hosts: Annotated[list[str] | None, typer.Option(
        "--rest-allowed-host", help="another name clients use in the Host header to reach the endpoint "
                                    "(repeatable; the bound address, and localhost on loopback, always are)")
    ] = None,
    log_retention_days: Annotated[float, typer.Option(
        "--log-retention-days", min=0, help="timetable: delete timetable.log / execution_log rows older than "
        "this many days (0: keep)")] = 0,
    log_max_rows: Annotated[int, typer.Option(
        "--log-max-rows", min=0, help="timetable: keep at most this many rows in each of timetable.log and "
        "execution_log (0: no limit)")] = 0,
    # ---- end timetable files/programs/REST/retention ---------------------------------------------
    # ---- schedule (pgpro_scheduler job manager) ------------------------------------------------
    schedule_nodename: Annotated[str, typer.Option(
        "--schedule-nodename", help="schedule: run jobs of this node (default: the schedule.nodename setting, "
        "else 'primary')")] = "",
    schedule_databases: Annotated[str, typer.Option(
        "--schedule-databases", help="schedule: comma-separated databases to serve (default: the "
        "schedule.database setting, else the --dsn database)")] = "",
    schedule_poll: Annotated[float, typer.Option(
        "--schedule-poll", min=0.05, help="schedule: seconds between passes when nothing is due")] = 1.0,
    # ---- end schedule ----------------------------------------------------------------------------
    # ---- pgq (ticker and maintenance) ------------------------------------------------------------
    pgq_databases: Annotated[list[str] | None, typer.Option(
        "--pgq-database", help="pgq: another DSN to tick and maintain as well (repeatable)")] = None,
    pgq_ticker_period: Annotated[float, typer.Option("--ticker-period", help="pgq: seconds between ticks")] = 1.0,
    pgq_maint_period: Annotated[float, typer.Option("--maint-period", help="pgq: seconds between maintenance")] = 120.0,
    pgq_retry_period: Annotated[float, typer.Option("--retry-period", help="pgq: seconds between retry runs")] = 30.0,
    # ---- cascade (pgq_node workers) --------------------------------------------------------------
    cascade_queue: Annotated[list[str] | None, typer.Option(
        "--cascade-queue", help="cascade: run this node's worker for the queue (repeatable)")] = None,
    cascade_sink_table: Annotated[str, typer.Option(
        "--cascade-sink-table", help="cascade leaf: store data events in this table, in the batch transaction")] = "",
    cascade_consumer: Annotated[str, typer.Option(
        "--cascade-consumer", help="cascade: run as this plain cascaded consumer instead of the node's worker")] = "",
    cascade_loop_delay: Annotated[float, typer.Option(
        "--cascade-loop-delay", min=0.01, help="cascade: seconds to sleep when there is no batch")] = 1.0,
    cascade_wm_period: Annotated[float, typer.Option(
        "--cascade-wm-period", min=0.0, help="cascade: seconds between watermark publications")] = 60.0,
    cascade_root_ticker: Annotated[bool, typer.Option(
        "--cascade-root-ticker", help="cascade: on the root, tick the queue in the worker loop")] = False,
    # ---- end cascade -------------------------------------------------------------------------------
    read_only: ReadOnlyOpt = False,
) -> None:
    """Run the engine: schedulers, job manager, ticker and cascade workers for this database."""
    # the engine writes (claims, run state, logs, heartbeats): refused at once, not retried
    refuse_read_only(ctx, read_only, "running the engine (it records runs, logs and heartbeats)")
    from engine.worker import SERVICE_FACTORIES, WorkerOptions, run_worker  # noqa: PLC0415 - heavy

    from engine.timetable.validate import check_name  # noqa: PLC0415

    if clientname:
        check_name("--clientname", clientname)  # no control characters, not only spaces
    if log_level.lower() not in LOG_LEVELS:
        raise InputError("--log-level", f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    level = {"warn": "WARNING", "notice": "INFO"}.get(log_level.lower(), log_level.upper())
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if rest_port:
        from engine.http import require_token  # noqa: PLC0415

        require_token(rest_host, rest_token or None)  # before anything connects
    settings = settings_from(ctx, dsn, application_name=f"pgtt-tui worker {clientname}".strip())
    # the schema check reads, so any server of a multi-host DSN will do: with
    # target_session_attrs=read-write and the primary down, the engine starts and idles
    # like one on a standby until a standby is promoted
    with connect_waiting(settings, startup_wait, target_session_attrs="any") as conn:
        installed = [s.module for s in schema.status(conn) if s.state in ("up to date", "extension", "outdated")]
        wanted = [m.strip() for m in modules.split(",") if m.strip()] if modules else \
            [m for m in installed if m in SERVICE_FACTORIES]
        schema.require_current(conn, ["pgtt", *[m for m in wanted if m in schema.MODULES]])
    module_options: dict[str, dict] = {}
    module_options["timetable"] = {  # timetable section
        "cron_workers": cron_workers, "interval_workers": interval_workers, "chain_timeout_ms": chain_timeout,
        "task_timeout_ms": task_timeout, "log_database_level": log_database_level.lower()}
    module_options["pgq"] = {"databases": pgq_databases or [], "ticker_period": pgq_ticker_period,  # pgq
                             "maint_period": pgq_maint_period, "retry_period": pgq_retry_period}
    module_options["schedule"] = {  # schedule section
        "nodename": schedule_nodename or None, "databases": schedule_databases or None,
        "poll_seconds": schedule_poll}
    if cascade_queue:  # cascade section
        module_options["cascade"] = {
            "queues": list(cascade_queue), "sink_table": cascade_sink_table or None,
            "consumer": cascade_consumer or None, "loop_delay": cascade_loop_delay,
            "wm_publish_period": cascade_wm_period, "global_wm_period": cascade_wm_period,
            "root_ticker": cascade_root_ticker}
        if "cascade" not in wanted:
            wanted.append("cascade")
    # ---- timetable: files, programs, REST, log retention (timetable tasks engineer) -------------
    if no_program_tasks:
        from engine.timetable import programs  # noqa: PLC0415

        programs.set_programs_allowed(False)
        module_options.setdefault("timetable", {})["no_program_tasks"] = True
    if files:
        from engine.timetable import chainfile  # noqa: PLC0415

        with connect(settings) as conn:
            for entry in chainfile.load_files(conn, list(files), validate_only=validate_files,
                                              replace=replace_chains):
                logging.getLogger("pgtt.worker").info("--file %s: %s", entry["file"], entry["action"])
        if validate_files:
            raise typer.Exit(0)
    module_options["http"] = {"rest_port": rest_port, "rest_host": rest_host, "rest_token": rest_token or None,
                              "rest_allowed_hosts": list(rest_allowed_hosts or [])}
    module_options["timetable_retention"] = {"log_retention_days": log_retention_days or None,
                                             "log_max_rows": log_max_rows or None}
    # ---- end timetable files/programs/REST/retention ---------------------------------------------
    options = WorkerOptions(settings=settings, client_name=clientname, modules=wanted, module_options=module_options)
    supervisor = asyncio.run(run_worker(options))
    if getattr(supervisor, "exit_code", None) is not None:  # e.g. 5 after the Shutdown builtin (timetable)
        raise typer.Exit(supervisor.exit_code)
    raise typer.Exit(0 if supervisor.health().get("ok", True) or supervisor.state == "stopped" else 1)


def register(root: typer.Typer) -> None:
    root.command("worker")(worker)
