"""Per-family tallies of the fault-injection suite, printed as one line each at session end.

Fault tests call `record(family, trials=..., converged=..., lost=..., mismatched=...)` once per
test (or more: counts of the same family add up). tests/fixtures/faults.py (a pytest plugin)
prints `lines()` in the terminal summary:

    faults: bad-input-conf: trials=3000 converged=3000 lost=0 mismatched=0

`converged` = trials that ended in an accepted state (a clean result or a clean error),
`lost` = trials after which data (e.g. a stored certificate) was gone, `mismatched` = trials that
ended in a state other than the expected one. A passing run has converged == trials.
Families about planted paths also count `outside` = files created, changed or removed outside
the store (a sentinel tree next to it); their line ends with `outside=N`, which must be 0.
The floods family (test_floods.py) records one trial per flood scenario, converged when the
controller kept answering, writing its status files and its log quiet.
The gc-guard family (test_gc_guard_faults.py) records one trial per random mass deletion:
converged when the deletion guard held exactly when it must and no pair was lost.
Pure bookkeeping in process memory; no pytest import, no I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SCALE_ENV = "NJCM_FAULT_SCALE"


@dataclass
class FamilyTally:
    trials: int = 0
    converged: int = 0
    lost: int = 0
    mismatched: int = 0
    outside: int | None = None  # None: the family does not watch outside the store


_TALLIES: dict[str, FamilyTally] = {}


def record(
    family: str, *, trials: int, converged: int, lost: int = 0, mismatched: int = 0,
    outside: int | None = None,
) -> None:
    """Add one test's counts to `family` (created on first use)."""
    tally = _TALLIES.setdefault(family, FamilyTally())
    tally.trials += trials
    tally.converged += converged
    tally.lost += lost
    tally.mismatched += mismatched
    if outside is not None:
        tally.outside = (tally.outside or 0) + outside


def tallies() -> dict[str, FamilyTally]:
    """A copy of every family's tally, in the order families were first recorded."""
    return {name: FamilyTally(**vars(t)) for name, t in _TALLIES.items()}


def lines() -> list[str]:
    """One summary line per family."""
    return [
        f"faults: {name}: trials={t.trials} converged={t.converged} lost={t.lost} "
        f"mismatched={t.mismatched}" + (f" outside={t.outside}" if t.outside is not None else "")
        for name, t in _TALLIES.items()
    ]


def scale() -> float:
    """The NJCM_FAULT_SCALE multiplier for case counts (default 1.0; e.g. 10 for a long run)."""
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV}={raw!r} is not a number (e.g. 1, 0.5, 10)") from None
    if not value > 0:
        raise ValueError(f"{SCALE_ENV}={raw!r} must be greater than 0")
    return value


def scaled(base: int) -> int:
    """`base` cases times NJCM_FAULT_SCALE, at least 1."""
    return max(1, round(base * scale()))
