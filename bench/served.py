"""Bench 2, time to served: NJet announces a new managed server → its certificate is served.

Each trial adds a managed server with a new name through the simulator's POST /api/v1/dyn_srv
(NJet publishes `generateCertificate` on its broker before it answers) and times from that HTTP
call until a TLS handshake with that SNI returns a leaf other than the bootstrap one (a Python
ssl client polling every 10 ms). The controller runs as `run` (bench/simenv.py). Compared with
the floor's median (bench/floor.py); goal ≤ 1.3×. When each step happened (event received,
decision, issued, stored+applied+verified, served seen) is read from the controller's INFO log
lines.
Called by bench/__main__.py.
"""

from __future__ import annotations

import re
import secrets
import statistics
import time
from datetime import datetime
from typing import Any

from bench.common import BenchError, Goal, ratio, summary
from bench.simenv import SimEnv

POLL = 0.010
TRIAL_TIMEOUT = 60.0
GOAL_RATIO = 1.3


def one_trial(env: SimEnv, name: str) -> tuple[float, float, int]:
    """(seconds to served, wall-clock start, controller log offset at the start)."""
    wall = time.time()
    log_offset = env.log.stat().st_size
    started = time.perf_counter()
    env.add_managed_server(name)
    deadline = time.monotonic() + TRIAL_TIMEOUT
    while True:
        fp = env.served(name)
        if fp is not None and fp != env.boot_fp:
            took = time.perf_counter() - started
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{name} was not served a new certificate within {TRIAL_TIMEOUT}s")
        time.sleep(POLL)
    stored = env.stored_fingerprint(name)
    if stored != fp:
        raise BenchError(f"{name}: the served leaf {fp} is not the stored one {stored}")
    return took, wall, log_offset


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d)\s")
MARKS = ("event_received", "decision", "issued", "issue_done", "served_seen")


def marks(env: SimEnv, name: str, *, wall: float, log_offset: int,
          took: float) -> dict[str, float]:
    """When (seconds after the HTTP call) the controller logged each step of a trial.

    From its INFO lines (millisecond timestamps): the event arrived, the issue was decided, the
    CA issued, the action finished (stored, applied, verified); and when our handshake saw it.
    """
    with env.log.open("rb") as fh:
        fh.seek(log_offset)
        lines = fh.read().decode(errors="replace").splitlines()
    found: dict[str, float] = {}
    for line in lines:
        m = _STAMP.match(line)
        if m is None:
            continue
        at = datetime.fromisoformat(m.group(1)).timestamp() - wall
        if "njet event" in line:
            found.setdefault("event_received", at)
        elif "decision" in line and f"domain={name} " in line:
            found.setdefault("decision", at)
        elif "certificate issued" in line and f"names={name} " in line:
            found.setdefault("issued", at)
        elif "issue done" in line and f"domain={name} " in line:
            found.setdefault("issue_done", at)
    found["served_seen"] = took
    return found if all(k in found for k in MARKS) else {}


def run_served(env: SimEnv, *, trials: int, floor_median: float) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    times: list[float] = []
    breakdown: dict[str, list[float]] = {}
    env.wait_quiet()
    for i in range(trials):
        name = f"srv{i}-{tag}.bench.test"
        took, wall, offset = one_trial(env, name)
        times.append(took)
        env.wait_quiet()  # also: the controller has logged the whole trial
        for k, v in marks(env, name, wall=wall, log_offset=offset, took=took).items():
            breakdown.setdefault(k, []).append(v)
    stats = summary(times)
    r = ratio(stats["median"], floor_median)
    return {
        "figures": {
            "served_seconds": stats,
            "floor_median_seconds": floor_median,
            "ratio_to_floor": r,
            "marks_median_seconds": {k: round(statistics.median(breakdown[k]), 4)
                                     for k in MARKS if k in breakdown},
        },
        "goals": [Goal("time to served / floor (medians)", "<=", GOAL_RATIO, r, "x").as_dict()],
        "notes": ["trigger: POST /api/v1/dyn_srv (managed) → generateCertificate on the sim's "
                  "broker; end: a TLS handshake with the new SNI shows the stored leaf"],
    }
