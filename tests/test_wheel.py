"""A wheel built from the checkout works from a virtual environment outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory, pg_tmp_root):
    work = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(work / "dist"), str(REPO)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named 'hatchling'" in build.stderr:
        pytest.skip("hatchling is not installed (pip install -e '.[test]' brings it)")
    assert build.returncode == 0, build.stderr
    wheel = next((work / "dist").glob("pgtt_tui-*.whl"))
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # dependencies come from the test environment; the project itself only from the wheel
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   timeout=300)
    home = pg_tmp_root / f"wheel-home-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "PYTHONPATH"}
    env["PGTT_EMBEDDED_HOME"] = str(home)
    yield venv, env
    subprocess.run([str(venv / "bin" / "pgtt-tui"), "db", "embedded", "stop"], env=env, cwd=work,
                   capture_output=True, timeout=60)


def _run(venv, env, *args):
    return subprocess.run([str(venv / "bin" / "pgtt-tui"), *args], env=env, cwd=str(venv.parent),
                          capture_output=True, text=True, timeout=300)


def test_wheel_carries_the_sql_and_imports_from_the_venv(wheel_venv):
    venv, env = wheel_venv
    code = "import engine, engine.paths as p; print(engine.__file__); print(p.sql_root())"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], env=env, cwd=str(venv.parent),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(venv)), out
    assert out[1].startswith(str(venv)) and out[1].endswith("engine/_sql"), out


def test_wheel_db_init_and_status_with_dsn(wheel_venv, empty_dsn):
    venv, env = wheel_venv
    init = _run(venv, env, "db", "init", "--dsn", empty_dsn)
    assert init.returncode == 0, init.stderr
    status = _run(venv, env, "db", "status", "--dsn", empty_dsn, "--json")
    rows = {r["module"]: r for r in json.loads(status.stdout)}
    assert all(r["state"] == "up to date" for r in rows.values() if r["available"]), rows


def test_wheel_db_init_and_status_on_the_embedded_server(wheel_venv):
    venv, env = wheel_venv
    init = _run(venv, env, "db", "init")
    assert init.returncode == 0, init.stderr
    status = _run(venv, env, "db", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)[0]["state"] == "up to date"
