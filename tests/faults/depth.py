"""How deep a fault family goes: a sample in the default run, the whole matrix under `-m slow`.

A family's test takes `@pytest.mark.parametrize("depth", DEPTHS)`: `[sample]` runs in the
README's test command (`bash hack/test.sh`: a few points or trials per family, the same code
path), `[full]` carries the `slow` marker and runs every point and the full case counts
(`bash hack/test.sh -m slow`; `.ci/run` runs it after the default command). NJCM_FAULT_SCALE
(tests/faults/summary.py) multiplies the counts of both, and the `[full]` timeout (FULL_TIMEOUT
seconds, instead of pyproject's 120, as the full matrices share the cores with each other).
No I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import pytest

from tests.faults import summary

T = TypeVar("T")

SAMPLE, FULL = "sample", "full"
FULL_TIMEOUT = 900
DEPTHS = [
    pytest.param(SAMPLE, id=SAMPLE),
    pytest.param(FULL, id=FULL, marks=[
        pytest.mark.slow, pytest.mark.timeout(round(FULL_TIMEOUT * max(1.0, summary.scale())))]),
]


def pick(depth: str, *, sample: T, full: T) -> T:
    """`sample` in the default run, `full` under `-m slow`."""
    if depth not in (SAMPLE, FULL):
        raise ValueError(f"unknown depth {depth!r} (want {SAMPLE!r} or {FULL!r})")
    return full if depth == FULL else sample


def spread(items: Sequence[T], count: int) -> list[T]:
    """`count` items spread evenly over `items` (the first and the last among them), in order;
    all of them when there are no more than `count`."""
    if count >= len(items):
        return list(items)
    if count <= 1:
        return list(items[:count])
    last = len(items) - 1
    return [items[round(i * last / (count - 1))] for i in range(count)]
