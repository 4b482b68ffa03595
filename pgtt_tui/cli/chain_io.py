"""``pgtt-tui chain import FILE`` and ``pgtt-tui chain export [NAME…]`` (pg_timetable YAML format).

Registered on the ``chain`` group by ``register(chain_app)`` (called from pgtt_tui/cli/chain.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from engine.db import connect, guard_write
from engine.timetable import chainfile
from engine.timetable.secrets import check_may_reveal
from pgtt_tui.cli.common import DsnOpt, JsonOpt, emit, global_options, settings_from, want_json
from pgtt_tui.cli.progress import Progress


def import_(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="YAML chain files (.yaml/.yml) or SQL scripts (.sql), "
                                                     "in order", show_default=False)],
    validate: Annotated[bool, typer.Option("--validate", help="only check the files; change nothing (YAML alone: "
                                                          "offline; with SQL scripts: every file is tried in the "
                                                          "database in one transaction that is rolled back)")]
    = False,
    replace: Annotated[bool, typer.Option("--replace", help="replace chains with the same name "
                                                            "(timetable.delete_job first)")] = False,
    dsn: DsnOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import pg_timetable YAML chain files (each file in one transaction) or run SQL scripts."""
    if validate:
        if any(f.suffix.lower() == ".sql" for f in files):  # scripts need the database: a rolled-back dry run
            with connect(settings_from(ctx, dsn, application_name="pgtt-tui chain import --validate")) as conn:
                report = chainfile.load_files(conn, [str(f) for f in files], validate_only=True, replace=replace)
        else:
            for f in files:
                chainfile.load_chain_file(f)
            report = [{"file": str(f), "action": "valid"} for f in files]
        emit([{"file": r["file"], "action": r["action"]} for r in report], want_json(ctx, as_json),
             ["file", "action"])
        return
    settings = settings_from(ctx, dsn, application_name="pgtt-tui chain import")
    guard_write(settings, "chain import")
    specs_by_file = {f: chainfile.load_chain_file(f) for f in files if f.suffix.lower() != ".sql"}  # check all first
    report = []
    with connect(settings) as conn:
        for f in files:
            if f.suffix.lower() == ".sql":
                chainfile.run_sql_file(conn, f)
                report.append({"file": str(f), "chain": "", "chain_id": None, "action": "ran"})
                continue
            progress = Progress(f"importing {f.name}", total=len(specs_by_file[f]))
            try:
                imported = chainfile.import_chains(conn, specs_by_file[f], replace=replace,
                                                   on_progress=lambda n, total, name: progress.update(n + 1, name))
            finally:
                progress.close()
            for done in imported:
                report.append({"file": str(f), "chain": done["name"], "chain_id": done["chain_id"],
                               "action": "replaced" if done["replaced"] else "created"})
    emit(report, want_json(ctx, as_json), ["file", "chain", "chain_id", "action"])


def export(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="chain names (default: every chain)",
                                                      show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write to this file instead of stdout")] = None,
    secrets: Annotated[bool, typer.Option("--show-secrets", help="include passwords from connect_string and "
                                                                 "SendMail parameters (masked by default)")] = False,
    dsn: DsnOpt = None,
) -> None:
    """Print chains as a pg_timetable YAML chain file (what `chain import` reads back)."""
    if secrets:
        check_may_reveal(global_options(ctx).read_only)
    with connect(settings_from(ctx, dsn, read_only=True, application_name="pgtt-tui chain export")) as conn:
        text = chainfile.export_chains(conn, names or None, secrets=secrets)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def register(chain_app: typer.Typer) -> None:
    chain_app.command("import")(import_)
    chain_app.command("export")(export)
