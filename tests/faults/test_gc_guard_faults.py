"""Fault family gc-guard (issue 13 item 1): random stores lose random shares of their desired
names, and the garbage collection must never delete more than maxDeleteShare of the managed
certificates (or all of them) without a confirmation, and never lose a pair: whatever leaves
certificates/ is in quarantine/, byte for byte.

Each trial: N managed certificates (1-8) issued into a real LegoStore (tests/unit/
test_gc_guard.Site: store-only, FakeIssuer, a zero grace period), a random share, then K of the
names leave desired state. Expected: held exactly when K == N or K > share * N; a held pass
changes nothing on disk; after `confirm_held` the next pass quarantines the K pairs. `lost` =
trials after which some pair is in neither place; `mismatched` = the guard decided otherwise.
Prints `faults: gc-guard: ...` through tests/faults/summary.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from controller.adapters.store.gcconfirm import confirm_held
from tests.fakes import spec
from tests.faults import summary
from tests.faults.depth import DEPTHS, pick
from tests.unit.test_gc_guard import Site

SHARES = (0.1, 0.25, 0.5, 0.75, 1.0)
SLOTS = (".crt", ".key", ".issuer.crt", ".json")


def files(site: Site, name: str) -> dict[str, bytes]:
    return {s: (site.paths.certificates / f"{name}{s}").read_bytes() for s in SLOTS}


def lost(site: Site, kept: dict[str, dict[str, bytes]]) -> list[str]:
    """Names whose files are neither in certificates/ nor, byte for byte, in quarantine/."""
    out = []
    entries = {q.domain: q.entry for q in site.quarantine.entries()}
    for name, data in kept.items():
        live = site.paths.certificates / f"{name}.crt"
        where = site.paths.certificates if live.exists() else (
            site.paths.quarantine / entries[name] if name in entries else None)
        if where is None or any((where / f"{name}{s}").read_bytes() != d
                                for s, d in data.items()):
            out.append(name)
    return out


@pytest.mark.parametrize("depth", DEPTHS)
async def test_random_mass_deletions_are_held_and_nothing_is_ever_lost(
    tmp_path: Path, depth: str
) -> None:
    rng = random.Random(13)
    trials = summary.scaled(pick(depth, sample=12, full=80))
    failures: list[str] = []
    converged = lost_trials = mismatched = 0
    for trial in range(trials):
        total, share = rng.randint(1, 8), rng.choice(SHARES)
        gone = rng.randint(1, total)
        site = Site(tmp_path / f"t{trial}", share=share)
        names = [f"n{i}.test" for i in range(total)]
        site.desired.specs = [spec(n) for n in names]
        await site.rec.converge()
        kept = {n: files(site, n) for n in names}
        leaving = sorted(rng.sample(names, gone))
        site.desired.specs = [spec(n) for n in names if n not in leaving]
        result = await site.rec.converge()
        expect_held = gone == total or gone > share * total
        held = result.plan.gc_hold is not None
        ok = held == expect_held
        if held:
            ok = ok and len(site.crts()) == total and site.quarantined() == []
            confirm_held(result.plan, site.confirmations, now=site.clock(), by="fault suite")
            await site.rec.pass_once()
        ok = ok and site.quarantined() == leaving and len(site.crts()) == total - gone
        missing = lost(site, kept)
        converged += int(ok and not missing)
        lost_trials += int(bool(missing))
        mismatched += int(not ok and not missing)
        if not ok or missing:
            failures.append(f"trial {trial}: {gone} of {total} at share {share}: held={held} "
                            f"(expected {expect_held}), lost {missing}")
    summary.record("gc-guard", trials=trials, converged=converged, lost=lost_trials,
                   mismatched=mismatched)
    assert not failures, failures
