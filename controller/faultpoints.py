"""Named crash points for fault-injection tests: kill the process at an exact instant.

Code that must survive a kill at any moment (adapters/store/lego.py) calls `fault_point("name")`
between two file operations. When the environment variable NJCM_FAULT_POINT equals that name,
the process sends itself SIGKILL right there; `name@N` kills at the N-th time the point is
reached in this process (1-based). With NJCM_FAULT_ACTION=stop the process sends itself SIGSTOP
instead (a pause at that instant: a fleet test resumes it with SIGCONT after its lease ran
out). Otherwise the call is a dictionary lookup and a return.

Every point is declared once with `register(...)` at import time of the module that uses it, so
`KNOWN_POINTS` lists them all and a test can run one crash scenario per point. Calling an
undeclared point raises, so the registry cannot drift from the code.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

ENV_VAR = "NJCM_FAULT_POINT"
ACTION_VAR = "NJCM_FAULT_ACTION"  # "kill" (the default) or "stop"

KNOWN_POINTS: set[str] = set()

_hits: dict[str, int] = {}
_recorders: list[list[str]] = []


def register(*names: str) -> tuple[str, ...]:
    """Declare fault points (idempotent); returns the names for a module-level tuple."""
    for name in names:
        if not name or "@" in name or name != name.strip():
            raise ValueError(f"invalid fault point name {name!r}")
        KNOWN_POINTS.add(name)
    return names


def fault_point(name: str) -> None:
    """Die by SIGKILL here if NJCM_FAULT_POINT selects this point; otherwise do nothing."""
    if name not in KNOWN_POINTS:
        raise RuntimeError(f"fault point {name!r} was never registered")
    for recorder in _recorders:
        recorder.append(name)
    wanted = os.environ.get(ENV_VAR)
    if not wanted:
        return
    target, _, nth = wanted.partition("@")
    if target != name:
        return
    count = _hits.get(name, 0) + 1
    _hits[name] = count
    if nth and count != int(nth):
        return
    stop = os.environ.get(ACTION_VAR, "kill") == "stop"
    os.kill(os.getpid(), signal.SIGSTOP if stop else signal.SIGKILL)


@contextmanager
def recording() -> Iterator[list[str]]:
    """Collect the names of the points reached inside the block, in order (for tests)."""
    reached: list[str] = []
    _recorders.append(reached)
    try:
        yield reached
    finally:
        _recorders.remove(reached)
