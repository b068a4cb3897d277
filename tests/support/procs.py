"""Child processes for the tests and bench/: find the controller's program, wait for a
condition, stop a child, give it a clean environment, read the tail of its log.

Used by tests/e2e/, tests/fixtures/, tests/faults/ and bench/ (common.py, simenv.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class MissingProgram(RuntimeError):
    """A program the harness runs is not installed."""


def beside_python(name: str) -> Path | None:
    """A console script installed with the running interpreter, else the repo's .venv one."""
    for candidate in (Path(sys.executable).parent / name, ROOT / ".venv" / "bin" / name):
        if candidate.exists() and os.access(candidate, os.X_OK):
            return candidate
    return None


def controller_program() -> str:
    """The console script NJet would launch: beside the interpreter, in .venv, else on PATH."""
    found = beside_python("njet-cert-manager") or shutil.which("njet-cert-manager")
    if found is None:
        raise MissingProgram("njet-cert-manager is not installed (pip install -e .)")
    return str(found)


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, step: float = 0.2) -> bool:
    """Poll `pred` every `step` seconds until it holds (True) or `timeout` passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 15.0) -> int | None:
    """SIGTERM a running child, SIGKILL it after `timeout` s; its exit code (None: no child)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without NJCM_* overrides, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NJCM_")}
    env.update(extra)
    return env


def tail(path: Path, chars: int = 2000) -> str:
    """The last `chars` characters of a log file ('' when it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
