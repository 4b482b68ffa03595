"""Long CLI operations show progress: a bar redrawn in place on a terminal, one plain line
per step anywhere else (no carriage returns in a log), always on stderr so --json output
stays data."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from pgtt_tui.cli.progress import Progress, behind_bar

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pgtt_tui", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=str(REPO), timeout=120)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_redrawn_in_place():
    screen = Terminal()
    progress = Progress("importing", total=4, stream=screen)
    for n in range(1, 5):
        progress.update(n, f"chain-{n}")
    progress.close()
    text = screen.getvalue()
    assert text.count("\r") >= 4 and "\n" not in text
    assert "importing [##########----------] 2/4 chain-2" in text and "4/4 chain-4" in text
    assert behind_bar(3, 10, width=10) == " [#######---] 3 behind (of 10)"


def test_elsewhere_one_plain_line_per_step():
    log = io.StringIO()
    progress = Progress("importing", total=2, stream=log)
    progress.update(1, "a\x1b[2Jb")
    progress.update(1, "a\x1b[2Jb")  # the same again: not repeated
    progress.update(2, "c")
    progress.close()
    assert log.getvalue() == "importing: 1/2 a\\x1b[2Jb\nimporting: 2/2 c\n"


def test_db_init_and_chain_import_report_each_step_as_lines(empty_dsn, tmp_path):
    init = cli("db", "init", "--dsn", empty_dsn, "--json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["changes"]  # stdout stays JSON
    lines = [line for line in init.stderr.splitlines() if line.startswith("db init: applying")]
    assert "\r" not in init.stderr and any("timetable/0001_timetable.sql" in line for line in lines)
    chains = tmp_path / "three.yaml"
    chains.write_text("chains:\n" + "\n".join(f"  - name: c{n}\n    schedule: '@daily'\n    tasks:\n"
                                             f"      - command: SELECT {n}" for n in range(3)) + "\n")
    done = cli("chain", "import", str(chains), "--dsn", empty_dsn)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("importing")] == [
        "importing three.yaml: 1/3 c0", "importing three.yaml: 2/3 c1", "importing three.yaml: 3/3 c2"]
