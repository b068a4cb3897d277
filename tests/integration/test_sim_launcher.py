"""The NJet simulator's launcher runs with the project's interpreter however it is started.

`hack/njet-sim/njet-sim` starts with `#!/usr/bin/env python3`; on a bare PATH that is the
system Python, which lacks aiohttp (the fresh-machine failure of hack/bench.sh). The launcher
re-executes itself with the repository's .venv/bin/python; inside another virtual environment,
or without .venv, it keeps the current interpreter and says clearly what is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "hack" / "njet-sim" / "njet-sim"
BARE = {"PATH": "/usr/bin:/bin"}  # what `env -i PATH=/usr/bin:/bin` leaves

pytestmark = [
    pytest.mark.skipif(shutil.which("python3", path=BARE["PATH"]) is None,
                       reason="no python3 on /usr/bin:/bin for the launcher's shebang"),
    pytest.mark.skipif(not (REPO / ".venv" / "bin" / "python").exists(),
                       reason="no .venv (bash hack/setup.sh creates it)"),
]


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=BARE, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_env_i_bare_path_help_works() -> None:
    run = _run([str(LAUNCHER), "--help"])
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: njet-sim ")
    assert "-p PREFIX" in run.stdout and "--replay-delay" in run.stdout


def test_env_i_bare_path_checks_a_conf_with_the_project_interpreter(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "njet.conf").write_text(
        "pid logs/njet.pid;\nevents { worker_connections 64; }\n"
        'http {\n  server {\n    listen 127.0.0.1:8080;\n    server_name a.test;\n'
        '    location / { return 200 "a.test\\n"; }\n  }\n}\n')
    run = _run([str(LAUNCHER), "-p", str(tmp_path), "-c", "conf/njet.conf", "-t"],
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"configuration file {tmp_path}/conf/njet.conf test is successful" in run.stderr


def test_inside_another_venv_without_aiohttp_it_stays_and_says_what_is_missing(
        tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=120)
    run = _run([str(venv / "bin" / "python"), str(LAUNCHER), "--help"])
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert f"Python module 'aiohttp' is missing from {venv}/bin/python" in run.stderr
    assert f"start it with {REPO}/.venv/bin/python" in run.stderr


def test_without_a_venv_next_to_it_it_keeps_the_current_interpreter(tmp_path: Path) -> None:
    copy = tmp_path / "hack" / "njet-sim"
    shutil.copytree(LAUNCHER.parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    run = _run([str(copy / "njet-sim"), "--help"])
    assert "Traceback" not in run.stderr
    if run.returncode == 0:  # the system python3 happens to have every requirement
        assert run.stdout.startswith("usage: njet-sim ")
    else:
        assert run.returncode == 1
        assert "is missing from" in run.stderr
        assert "run `bash hack/setup.sh` in the repository to create .venv" in run.stderr
