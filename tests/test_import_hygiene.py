"""engine never imports the console side: checked in a fresh interpreter per module."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import engine

FORBIDDEN = ("textual", "rich", "pgtt_tui")


def _engine_modules() -> list[str]:
    root = Path(engine.__file__).parent
    names = ["engine"]
    for info in pkgutil.walk_packages([str(root)], prefix="engine."):
        names.append(info.name)
    return names


def test_importing_every_engine_module_leaves_the_console_out():
    modules = _engine_modules()
    code = (
        "import importlib, sys\n"
        f"mods = {modules!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(engine.__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"engine pulled in: {result.stdout.strip()}"


def test_the_check_itself_would_catch_a_console_import():
    code = "import sys, textual; print('textual' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True"
