"""Fault injection, kill -9: the controller is SIGKILLed at every named point of its
issue/renew → store swap → apply → status write path, then restarted, and must converge.

Each trial runs the real CLI (`python -m controller.cli -p PREFIX -c conf/cert-manager.toml
reconcile`) against Pebble and the NJet simulator with NJCM_FAULT_POINT=<point>[@N], checks it
died by SIGKILL at that point (returncode -9), restarts it without the variable and checks:
it converges (exit 0, then `diff` in sync); every .crt in the store has its matching key and no
temp file or journal is left; NJet serves the stored pair (the served leaf's public key is the
stored key's); whatever NJet served at any moment was the bootstrap certificate or one Pebble
issued to us; the status file is valid JSON.

Three phases: issue (no pair stored), renew (a valid pair, force_renew set in the status file)
and apply (a valid stored pair while NJet serves the bootstrap again, e.g. after a lost dynamic
record). The points are not a hand-kept list: an in-process reconcile records which points each
phase really passes (faultpoints.recording), in order, and each occurrence becomes a trial (a
point reached twice in one process gives `point@1` and `point@2`). A (phase, point) that no
trial killed at is reported as NOT hit and fails the test.

Two lanes run side by side to use both cores: two managed server blocks of one simulator, each
with its own controller prefix (lane 0 solves http-01, lane 1 tls-alpn-01, so their challenge
servers never share a port). Trials cycle over the (phase, point) list. The default run
(`[sample]`) kills at one point per phase and group of EXPECTED points (the middle one of a
swap, of an apply, of the status writes: 8 trials); `[full]` (`-m slow`) at every recorded
point, max(50 × NJCM_FAULT_SCALE, the list's length) trials. After a kill at a status-write
point the restart may find NJet already serving the stored pair and leave `applied_fingerprint`
unset (counted and printed; a stale fingerprint other than the stored one fails).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from controller import faultpoints
from controller.adapters.njet.api import NjetClient
from controller.app import App
from controller.certinfo import fingerprint_der, fingerprint_pem
from controller.config import load_config
from tests.e2e.harness import render_toml
from tests.faults import summary
from tests.faults.depth import DEPTHS, pick
from tests.faults.helpers import (
    CONFIG,
    block,
    boot_pairs,
    edit_status,
    issued_by,
    leaked_private_key,
    managed_blocks,
    pebble_intermediate,
    public_key_of_cert,
    public_key_of_key,
    run_cli_async,
    served_fp,
    served_leaf,
    start_sim,
    status_of,
    stop_sim,
    store_problems,
)
from tests.fixtures.njetsim import NjetSim

pytestmark = pytest.mark.pebble

FAMILY = "kill9"
BASE_TRIALS = 50
LANES = ("a", "b")  # lane i manages <lane>.test; lane 0 http-01, lane 1 tls-alpn-01
PHASES = ("issue", "renew", "apply")
_EVERY_PASS = {"reconcile.before_status_write", "reconcile.after_status_write"}
_APPLY = {"execute.after_apply", "execute.after_verify"}
_SWAP = {"execute.after_order", "execute.after_store", "store.put.after_journal",
         "store.put.after_rename_key", "store.put.after_rename_crt"}
# points each phase must pass (the recorded list may hold more; all of them become trials)
EXPECTED = {"issue": _EVERY_PASS | _APPLY | _SWAP, "renew": _EVERY_PASS | _APPLY | _SWAP,
            "apply": _EVERY_PASS | _APPLY}

@dataclass
class Lane:
    name: str
    domain: str
    prefix: Path
    https_port: int
    bootstrap_fp: str
    challenge: str


@dataclass
class World:
    sim: NjetSim
    pebble: Any
    lanes: list[Lane]
    intermediate: x509.Certificate


@pytest.fixture(scope="module")
def world(pebble: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    files, boot = boot_pairs(LANES)
    sim = start_sim(tmp_path_factory.mktemp("kill9-sim"), managed_blocks(LANES), files)
    try:
        lanes = []
        for i, name in enumerate(LANES):
            prefix = tmp_path_factory.mktemp(f"kill9-{name}")
            (prefix / "conf").mkdir()
            (prefix / "conf" / "njet.conf").write_text(
                "http {\n" + block(name, sim.ports["https"]) + "}\n")
            challenge = "http" if i == 0 else "tls"
            toml = {
                "acme": {
                    "email": "kill9@example.test",
                    "challengeType": challenge,
                    "acmeCaDir": pebble.directory_url,
                    "caBundle": str(pebble.ca_bundle),
                    "httpChallengeServerAddress": f"127.0.0.1:{pebble.http_port}",
                    "tlsChallengeServerAddress": f"127.0.0.1:{pebble.tls_port}",
                    "keyType": "ec256",
                },
                "njet": {"apiAddress": sim.api_url},
                "controller": {"probeTimeout": "3s"},
                "log": {"v": 1},
            }
            (prefix / CONFIG).write_text(render_toml(toml))
            lanes.append(Lane(name, f"{name}.test", prefix, sim.ports["https"], boot[name],
                              challenge))
        yield World(sim, pebble, lanes, pebble_intermediate(pebble))
    finally:
        stop_sim(sim)


# --- the points each phase passes ------------------------------------------------------------


async def converge_in_process(prefix: Path) -> tuple[bool, list[str]]:
    """One `reconcile` in this process; (in sync afterwards, the fault points passed in order)."""
    app = App(load_config(prefix / CONFIG, prefix=prefix))
    try:
        with faultpoints.recording() as reached:
            result = await app.reconciler.converge(probe=True)
        final = result if not result.plan.actions else await app.reconciler.compute()
        return final.plan.in_sync, list(reached)
    finally:
        await app.close()


async def in_sync(prefix: Path) -> bool:
    """`diff` (probe=True), in this process: the plan after the restart is empty."""
    app = App(load_config(prefix / CONFIG, prefix=prefix))
    try:
        return (await app.reconciler.compute(probe=True)).plan.in_sync
    finally:
        await app.close()


def sampled(recorded: dict[str, list[str]]) -> list[tuple[str, str]]:
    """The default run's points: per phase, the middle occurrence of each group of EXPECTED
    points it passes (a swap point, an apply point, a status write), in the recorded order."""
    out = []
    for phase in PHASES:
        passed = occurrences(recorded[phase])
        for group in (_SWAP, _APPLY, _EVERY_PASS):
            members = [p for p in passed if p.partition("@")[0] in group & EXPECTED[phase]]
            if members:
                out.append((phase, members[(len(members) - 1) // 2]))
    return out


def occurrences(reached: list[str]) -> list[str]:
    """['x', 'y', 'x'] -> ['x@1', 'y@1', 'x@2'] (what NJCM_FAULT_POINT selects)."""
    seen: Counter[str] = Counter()
    out = []
    for name in reached:
        seen[name] += 1
        out.append(f"{name}@{seen[name]}")
    return out


def reset_for_issue(lane: Lane) -> None:
    """No pair and no status for the lane's name: the next pass issues (Missing)."""
    certs = lane.prefix / ".lego" / "certificates"
    if certs.exists():
        for path in certs.glob(f"{lane.domain}.*"):
            path.unlink()
    status = lane.prefix / ".lego" / "status" / f"{lane.domain}.json"
    status.unlink(missing_ok=True)


def ask_renewal(lane: Lane) -> None:
    edit_status(lane.prefix, lane.domain, force_renew=True)


async def serve_bootstrap_again(world: World, lane: Lane) -> None:
    """NJet serves the block's bootstrap pair again (as after a lost dynamic record): the
    stored, valid certificate only needs to be applied (NotServed)."""
    certs = world.sim.prefix / "conf" / "certs"
    client = NjetClient(world.sim.api_url, timeout=5.0)
    try:
        await client.add_cert(
            listens=[f"127.0.0.1:{lane.https_port}"],
            server_names=[lane.domain, f"www.{lane.domain}"], cert_type="ecc",
            cert_pem=(certs / f"boot-{lane.name}.crt").read_bytes(),
            key_pem=(certs / f"boot-{lane.name}.key").read_bytes())
    finally:
        await client.close()
    assert served_fp(lane.https_port, lane.domain) == lane.bootstrap_fp


async def prepare(world: World, lane: Lane, phase: str) -> None:
    if phase == "issue":
        reset_for_issue(lane)
    elif phase == "renew":
        ask_renewal(lane)
    else:
        await serve_bootstrap_again(world, lane)


# --- one trial --------------------------------------------------------------------------------


@dataclass
class Tally:
    trials: int = 0
    converged: int = 0
    lost: int = 0
    mismatched: int = 0
    hit: Counter[str] = field(default_factory=Counter)
    not_hit: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    torn_pending: int = 0
    status_lags: int = 0


def check_served(world: World, lane: Lane, what: str) -> tuple[bytes | None, list[str]]:
    der = served_leaf(lane.https_port, lane.domain)
    if der is None:
        return None, [f"{what}: no certificate served for {lane.domain}"]
    fp = fingerprint_der(der)
    if fp != lane.bootstrap_fp and not issued_by(der, world.intermediate):
        return der, [f"{what}: NJet serves {fp[:16]}, neither the bootstrap nor a Pebble cert"]
    return der, []


async def trial(world: World, lane: Lane, phase: str, point: str, tally: Tally) -> None:
    tally.trials += 1
    label = f"[{phase} {lane.domain} {point}]"
    await prepare(world, lane, phase)
    killed = await run_cli_async(lane.prefix, fault_point=point)
    problems: list[str] = []
    if killed.returncode == -9:
        tally.hit[f"{phase} {point}"] += 1
    else:
        tally.not_hit[f"{phase} {point}"] += 1
        problems.append(f"not killed at {point} (exit {killed.returncode}): "
                        f"{killed.stderr[-400:]}")
    torn = store_problems(lane.prefix, allow_pending_journal=True)
    problems += [f"after the kill: {p}" for p in torn]
    if any((lane.prefix / ".lego" / "journal").glob("*/JOURNAL")):
        tally.torn_pending += 1
    problems += check_served(world, lane, "after the kill")[1]

    restart = await run_cli_async(lane.prefix)
    if restart.returncode != 0:
        problems.append(f"restart exit {restart.returncode}: {restart.stderr[-600:]}")
    if not await in_sync(lane.prefix):
        problems.append("diff after the restart is not in sync")
    lost = store_problems(lane.prefix)
    problems += [f"after the restart: {p}" for p in lost]
    certs = lane.prefix / ".lego" / "certificates"
    crt, key = certs / f"{lane.domain}.crt", certs / f"{lane.domain}.key"
    mismatched = False
    if not crt.exists() or not key.exists():
        problems.append("no pair stored after the restart")
        lost = lost or ["missing"]
    else:
        der, bad = check_served(world, lane, "after the restart")
        problems += bad
        if der is not None and public_key_of_cert(der) != public_key_of_key(key.read_bytes()):
            mismatched = True
            problems.append("the served leaf does not belong to the stored key")
        status = status_of(lane.prefix, lane.domain)
        applied = (status or {}).get("applied_fingerprint")
        if applied is None:
            # served == stored was proved by the restart's probe; the status only lags
            tally.status_lags += 1
        elif applied != fingerprint_pem(crt.read_bytes()):
            problems.append(f"status claims {applied[:16]} is served, the store holds another")
    for run in (killed, restart):
        if leaked_private_key(run.output):
            problems.append("a private key in the controller's output")
    if lost:
        tally.lost += 1
    if mismatched:
        tally.mismatched += 1
    if problems:
        tally.failures.append(f"{label} " + "; ".join(problems))
    else:
        tally.converged += 1


async def run_lane(world: World, lane: Lane, plan: list[tuple[str, str]], tally: Tally) -> None:
    for phase, point in plan:
        await trial(world, lane, phase, point, tally)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_kill9_at_every_point_of_issue_renewal_and_apply_then_restart_converges(
    world: World, depth: str
) -> None:
    started = time.monotonic()
    # record the points: lane 0 issues (no pair stored), renews, then re-applies, in this process
    first = world.lanes[0]
    recorded: dict[str, list[str]] = {}
    for phase in PHASES:
        await prepare(world, first, phase)
        synced, recorded[phase] = await converge_in_process(first.prefix)
        assert synced, f"the in-process {phase} did not converge"
    for lane in world.lanes[1:]:
        assert (await converge_in_process(lane.prefix))[0]
    for phase, reached in recorded.items():
        missing = EXPECTED[phase] - set(reached)
        assert not missing, f"the {phase} path no longer passes {sorted(missing)}"
    every = [(phase, p) for phase in PHASES for p in occurrences(recorded[phase])]
    combos = pick(depth, sample=sampled(recorded), full=every)
    total = max(summary.scaled(pick(depth, sample=len(combos), full=BASE_TRIALS)), len(combos))
    schedule = [combos[i % len(combos)] for i in range(total)]
    plans: list[list[tuple[str, str]]] = [schedule[i::len(world.lanes)]
                                          for i in range(len(world.lanes))]
    tally = Tally()
    await asyncio.gather(*(run_lane(world, lane, plans[i], tally)
                           for i, lane in enumerate(world.lanes)))
    summary.record(FAMILY, trials=tally.trials, converged=tally.converged, lost=tally.lost,
                   mismatched=tally.mismatched)
    never = sorted({f"{phase} {p}" for phase, p in combos} - set(tally.hit))
    by_point: Counter[str] = Counter()
    for combo, n in tally.hit.items():
        by_point[combo.split(" ", 1)[1].partition("@")[0]] += n
    print(f"\nkill9: {tally.trials} trials in {time.monotonic() - started:.1f}s; "
          f"{tally.torn_pending} left a journaled swap for recovery, {tally.status_lags} ended "
          "with a status that does not yet record the applied fingerprint")
    for name in sorted({p.partition("@")[0] for _, p in combos}):
        print(f"  {name}: " + (f"hit {by_point[name]}x" if by_point[name] else "NOT hit"))
    for combo in never:
        print(f"  NOT hit: {combo}")
    assert not never, f"never killed at: {never}"
    assert not tally.failures, "\n".join(tally.failures[:20])
    assert tally.converged == tally.trials and tally.lost == 0 and tally.mismatched == 0
