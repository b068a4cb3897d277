"""Bench 2, time to served: NJet announces a new managed server → its certificate is served.

Each trial adds a managed server with a new name through the simulator's POST /api/v1/dyn_srv
(NJet publishes `generateCertificate` on its broker before it answers) and times from that HTTP
call until a TLS handshake with that SNI returns a leaf other than the bootstrap one (a Python
ssl client polling every 10 ms). The controller runs as `run` (bench/simenv.py). Compared with
the floor's median (bench/floor.py); goal ≤ 1.3×. A per-phase breakdown (event received,
decision, issued, stored+applied+verified, seen) is read from the controller's INFO log lines.
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


def one_trial(env: SimEnv, name: str) -> tuple[float, dict[str, float]]:
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
    return took, phases(env, name, wall=wall, log_offset=log_offset, took=took)


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d)\s")


def phases(env: SimEnv, name: str, *, wall: float, log_offset: int,
           took: float) -> dict[str, float]:
    """Where a trial's time went, from the controller's INFO log lines (ms resolution)."""
    with env.log.open("rb") as fh:
        fh.seek(log_offset)
        lines = fh.read().decode(errors="replace").splitlines()
    marks: dict[str, float] = {}
    for line in lines:
        m = _STAMP.match(line)
        if m is None:
            continue
        at = datetime.fromisoformat(m.group(1)).timestamp() - wall
        if "njet event" in line and "event" not in marks:
            marks["event"] = at
        elif f"domain={name} " in line and "decision" in line and "decision" not in marks:
            marks["decision"] = at
        elif f"names={name} " in line and "certificate issued" in line:
            marks["issued"] = at
        elif f"domain={name} " in line and "issue done" in line:
            marks["done"] = at
    order = ["event", "decision", "issued", "done"]
    if any(k not in marks for k in order):
        return {}
    out = {"http_call_to_event_received": marks["event"]}
    for a, b in zip(order, order[1:], strict=False):
        out[f"{a}_to_{b}"] = marks[b] - marks[a]
    out["done_to_handshake_seen"] = took - marks["done"]
    return out


def run_served(env: SimEnv, *, trials: int, floor_median: float) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    times: list[float] = []
    breakdown: dict[str, list[float]] = {}
    for i in range(trials):
        env.wait_quiet()
        took, parts = one_trial(env, f"srv{i}-{tag}.bench.test")
        times.append(took)
        for k, v in parts.items():
            breakdown.setdefault(k, []).append(v)
    env.wait_quiet()
    stats = summary(times)
    r = ratio(stats["median"], floor_median)
    return {
        "figures": {
            "served_seconds": stats,
            "floor_median_seconds": floor_median,
            "ratio_to_floor": r,
            "phase_medians_seconds": {k: round(statistics.median(v), 4)
                                      for k, v in breakdown.items()},
        },
        "goals": [Goal("time to served / floor (medians)", "<=", GOAL_RATIO, r, "x").as_dict()],
        "notes": ["trigger: POST /api/v1/dyn_srv (managed) → generateCertificate on the sim's "
                  "broker; end: a TLS handshake with the new SNI shows the stored leaf"],
    }
