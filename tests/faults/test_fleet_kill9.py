"""Fault injection in fleet mode: one controller of a three-node fleet is SIGKILLed (family
"fleet-kill9") or SIGSTOPped past its lease (family "fleet-fence") on the order path, and the
fleet must converge without a lost certificate, a mismatched pair or a needless order.

One rig per test (tests/support/fleet.py): three NJet simulators with their own `run`
controllers, the test's PostgreSQL database (`pg_dsn`), a Pebble of its own (no nonce
rejections, no authorization reuse: issued certificates are counted exactly from its log),
haproxy in front of Pebble's validation ports (no health checks: a refused connection goes to
the next node). Helpers: tests/faults/fleethelpers.py. node-1 and node-2 run from the start; the
trials of a test run one after another on its rig, each giving the fleet a batch of new
names: first to node-0 alone (restarted with NJCM_FAULT_POINT=<point> and `concurrency = 1`,
so the faulted order is the only one it runs; the leases table says which name), then, once
node-0 died (or stopped), to node-1 and node-2 too (njet.conf rewritten, SIGHUP). Earlier
batches must stay served.

fleet-kill9, per fault point of the order path (lease taken, CA issued, before / after the
fenced database write, after the mirror write): node-0 dies by SIGKILL there (exit -9) and is
restarted at once managing nothing (live again, its relay answers challenges, so only node-1 /
node-2 can take the killed order's name over: after its lease expired, unless the database
holds it already); node-1 and node-2 must serve every name with the database's certificate;
then node-0 gets the names back (SIGHUP) and all three do. Orders = those issued before the
kill + one per batch name the database did not hold at the kill (so at most batch + 1); every
database row's key opens with the fleet key and matches its certificate; no mirror holds a
mismatched pair; no challenge row is left; the logs are quiet afterwards. `[sample]` kills at
two points, `[full]` (`-m slow`) at all five in turn, max(5, 5 x NJCM_FAULT_SCALE) trials.

fleet-fence: node-0 is SIGSTOPped right after the CA issued (execute.after_order,
NJCM_FAULT_ACTION=stop), holding the lease with a new certificate in memory. node-1/node-2
must wait for the lease to expire (the leases row changes owner or generation), then order,
store and serve. Then node-0 gets SIGCONT: its fenced write must be refused ("fenced write
refused" in its log), the database keeps the other node's certificate (checked for
STEADY_SECONDS), all three nodes serve it within FENCED_CONVERGE seconds, the refusal leaves
no failure in the fleet-wide status of the name nor erases what the ordering node recorded
there, and Pebble issued exactly batch + 1 certificates.

Run by pytest (tests/faults/, marker `pebble`); tallies go to tests/faults/summary.py.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import controller.adapters.pg.certs
import controller.adapters.pg.leases
import controller.execute  # noqa: F401  (each registers its fault points)
from controller import faultpoints
from tests.faults import summary
from tests.faults.depth import DEPTHS, pick
from tests.faults.fleethelpers import (
    LeaseRow,
    await_or,
    cert_rows,
    db_problems,
    fenced,
    fleet_status,
    leases,
    noisy,
    proc_state,
    reload,
    restart,
    serves_all,
    start_idle,
    stop_in_parallel,
    the_lease_of,
    wait_serves_all,
)
from tests.support.fleet import FleetRig
from tests.support.procs import tail, wait_until

pytestmark = pytest.mark.pebble

KILL_FAMILY = "fleet-kill9"
FENCE_FAMILY = "fleet-fence"
POINTS = ("lease.after_acquire", "execute.after_order", "fleet.before_db_write",
          "fleet.after_db_write", "execute.after_store")
SAMPLE_POINTS = ("execute.after_order",)  # the default run; -m slow: every point
FULL_TRIALS = max(len(POINTS), summary.scaled(len(POINTS)))  # [full]: the points in turn
BATCH = 6  # names per trial
BATCHES = max(len(SAMPLE_POINTS), FULL_TRIALS)  # trials of one test (one rig each)
ALL_NAMES = [f"b{b}n{i}.fleet.test" for b in range(BATCHES) for i in range(BATCH)]
LEASE, NODE_TIMEOUT = "5s", "10s"
STEADY_SECONDS = 3.0  # how long the fenced-out certificate must stay out of the database
FENCED_CONVERGE = 20.0  # after SIGCONT, the fenced node serves the other node's certificate
LATE_CONVERGE = 90.0  # ... or, reported as late, at least by then


@dataclass
class Fleet:
    """The test's rig and what its nodes manage so far."""

    rig: FleetRig
    wanted: list[str] = field(default_factory=list)
    batches: int = 0

    def batch(self) -> list[str]:
        names = ALL_NAMES[self.batches * BATCH:(self.batches + 1) * BATCH]
        assert names, "more trials than BATCHES"
        self.batches += 1
        return names


@pytest.fixture
def fleet(tmp_path: Path, pebble_factory: Any, pg_dsn: str) -> Iterator[Fleet]:
    # no nonce rejections, no authorization reuse: every order validates, counted exactly
    pebble = pebble_factory(nonce_reject_percent=0)
    rig = FleetRig(tmp_path / "fleet", pebble, pg_dsn, names=list(ALL_NAMES), nodes_count=3,
                   lease=LEASE, node_timeout=NODE_TIMEOUT)
    try:
        rig.start(controllers=False)
        rig.nodes[0].toml["controller"]["concurrency"] = 1
        start_idle(rig.nodes[1:])
        yield Fleet(rig)
    finally:
        try:
            stop_in_parallel(rig)
        finally:
            rig.stop()


def takeover_problems(dsn: str, held: LeaseRow, victim: str) -> list[str]:
    """The victim's lease on `held.key` must have passed to another node, taken only once
    it had expired (database clock)."""
    now = leases(dsn)[held.key]
    if now.owner == victim:
        return [f"{held.key}: the lease is still {victim}'s after the others converged: {now}"]
    if now.taken_at < held.expires_at:
        return [f"{held.key}: {now.owner} took the lease {held.expires_at - now.taken_at:.2f}s "
                f"before {victim}'s expired: {held} -> {now}"]
    return []


@dataclass
class Trial:
    label: str
    problems: list[str] = field(default_factory=list)
    lost: bool = False
    mismatched: bool = False
    figures: dict[str, Any] = field(default_factory=dict)

    def final_checks(self, fleet: Fleet) -> None:
        rig = fleet.rig
        assert rig.key_file is not None
        bad = rig.mismatched_pairs()
        if bad:
            self.mismatched = True
            self.problems.append(f"mismatched pairs: {bad}")
        problems, lost = db_problems(rig.dsn, rig.key_file, fleet.wanted)
        self.lost = self.lost or lost
        self.problems += problems + noisy(rig.nodes)


def registrations(fleet: Fleet) -> int:
    """ACME accounts the nodes registered (one fleet, one account: more is reported)."""
    return sum(node.log_text().count("acme account registered") for node in fleet.rig.nodes)


def run_trial(label: str, body: Callable[[Trial], None]) -> Trial:
    trial = Trial(label)
    started = time.monotonic()
    try:
        body(trial)
    except AssertionError as exc:  # did not converge: counted, reported with the others
        trial.problems.append(str(exc))
        trial.mismatched = True
    trial.figures["total_s"] = round(time.monotonic() - started, 1)
    return trial


# --- fleet-kill9 --------------------------------------------------------------------------


def kill_trial(fleet: Fleet, point: str, trial: Trial) -> None:
    rig = fleet.rig
    victim, others = rig.nodes[0], rig.nodes[1:]
    batch = fleet.batch()
    names = fleet.wanted + batch
    base = rig.orders_issued()
    started = time.monotonic()
    restart(victim, names, {faultpoints.ENV_VAR: point})
    await_or(f"{victim.name} killed at {point}", victim.exited, 60, victim)
    assert victim.proc is not None
    if victim.proc.returncode != -9:
        raise AssertionError(f"{victim.name} exited {victim.proc.returncode}, not killed at "
                             f"{point}\n{tail(victim.log)}")
    held = the_lease_of(rig.dsn, victim.name, batch)
    if held is None:
        raise AssertionError(f"{victim.name} died at {point} with no lease: {leases(rig.dsn)}")
    key = held.key
    issued_at_kill = rig.orders_issued() - base
    stored_at_kill = {k: v for k, v in cert_rows(rig.dsn).items() if k in batch}
    trial.figures.update(key=key, issued_at_kill=issued_at_kill,
                         stored_at_kill=len(stored_at_kill),
                         kill_s=round(time.monotonic() - started, 1))

    reload(others, names)
    fleet.wanted = names
    reloaded = time.monotonic()
    # back at once, managing nothing: live again (no order waits for a dead node's challenge
    # confirmation), so the killed order's name can only be taken over by node-1 / node-2
    restart(victim, [], {})
    victim.wait_up()
    wait_serves_all(rig, others, names, 90)
    trial.figures["others_s"] = round(time.monotonic() - reloaded, 1)
    rows = cert_rows(rig.dsn)
    if key not in stored_at_kill:  # the killed order's certificate is gone: another node's
        if rows[key][1] == victim.name:
            trial.problems.append(f"{key}: the database holds {victim.name}'s certificate "
                                  "although it was killed before writing it")
        trial.problems += takeover_problems(rig.dsn, held, victim.name)
    elif rows[key][0] != stored_at_kill[key][0]:
        trial.problems.append(f"{key}: the certificate {victim.name} stored before its death "
                              "was replaced (a needless order)")

    reload([victim], names)
    trial.figures["rejoin_s"] = round(wait_serves_all(rig, rig.nodes, names, 60), 1)
    orders = rig.orders_issued() - base
    expected = issued_at_kill + len(batch) - len(stored_at_kill)
    trial.figures["orders"] = orders
    if orders != expected or orders > len(batch) + 1:
        trial.problems.append(f"Pebble issued {orders} certificates for {len(batch)} names, "
                              f"expected {expected} ({issued_at_kill} before the kill, one per "
                              f"name the database lacked then; at most {len(batch) + 1})")
    trial.figures["no_issued_at"] = [n for n in batch if n != key
                                     and "issued_at" not in fleet_status(rig.dsn, n)]
    trial.final_checks(fleet)


@pytest.mark.parametrize("depth", DEPTHS)
def test_fleet_node_killed_on_the_order_path_the_fleet_converges_without_extra_orders(
    fleet: Fleet, depth: str
) -> None:
    missing = set(POINTS) - faultpoints.KNOWN_POINTS
    assert not missing, f"fault points no longer registered: {sorted(missing)}"
    points = pick(depth, sample=list(SAMPLE_POINTS),
                  full=[POINTS[i % len(POINTS)] for i in range(FULL_TRIALS)])
    started = time.monotonic()
    trials = [run_trial(f"[{p}]", functools.partial(kill_trial, fleet, p)) for p in points]
    failed = [t for t in trials if t.problems]
    summary.record(KILL_FAMILY, trials=len(trials), converged=len(trials) - len(failed),
                   lost=sum(t.lost for t in trials),
                   mismatched=sum(t.mismatched for t in trials))
    print(f"\nfleet-kill9: {len(trials)} trials in {time.monotonic() - started:.1f}s; "
          f"{registrations(fleet)} ACME account registrations")
    for t in trials:
        print(f"  {t.label} {t.figures}")
    assert not failed, "\n\n".join(f"{t.label} " + "\n".join(t.problems) for t in failed)


# --- fleet-fence --------------------------------------------------------------------------


def fence_trial(fleet: Fleet, trial: Trial) -> None:
    rig = fleet.rig
    victim, others = rig.nodes[0], rig.nodes[1:]
    batch = fleet.batch()
    names = fleet.wanted + batch
    base = rig.orders_issued()
    started = time.monotonic()
    restart(victim, names, {faultpoints.ENV_VAR: "execute.after_order",
                            faultpoints.ACTION_VAR: "stop"})
    await_or(f"{victim.name} stopped after its order", lambda: proc_state(victim) == "T", 60,
             victim)
    paused = time.monotonic()
    held = the_lease_of(rig.dsn, victim.name, batch)
    if held is None:
        raise AssertionError(f"{victim.name} stopped with no lease: {leases(rig.dsn)}")
    key = held.key
    trial.figures.update(key=key, pause_s=round(paused - started, 1),
                         issued_at_pause=rig.orders_issued() - base)

    reload(others, names)
    fleet.wanted = names

    def taken_over() -> bool:
        now = leases(rig.dsn).get(key, held)
        return now.owner != held.owner or now.generation != held.generation

    trial.figures["takeover_s"] = round(await_or(
        f"the lease on {key} taken from {victim.name}", taken_over, 60, others[0]), 1)
    trial.figures["served_s"] = round(wait_serves_all(rig, others, names, 90), 1)
    trial.problems += takeover_problems(rig.dsn, held, victim.name)
    theirs = cert_rows(rig.dsn)[key]
    if theirs[1] == victim.name:
        raise AssertionError(f"{key}: the database holds {victim.name}'s certificate")
    trial.figures["paused_for_s"] = round(time.monotonic() - paused, 1)
    status_before = fleet_status(rig.dsn, key)

    victim.resume()
    resumed = time.monotonic()
    await_or(f"{victim.name}: fenced write refused", lambda: fenced(victim, key), 30, victim)
    trial.figures["refused_s"] = round(time.monotonic() - resumed, 1)

    def settled() -> bool:
        now = cert_rows(rig.dsn).get(key)
        if now is None or now[:2] != theirs[:2]:
            trial.lost = now is None
            raise AssertionError(f"{key}: the database's certificate changed after the resume:"
                                 f" {theirs} -> {now}\n{tail(victim.log)}")
        return (time.monotonic() - resumed >= STEADY_SECONDS
                and serves_all(rig, rig.nodes, names))

    if not wait_until(settled, FENCED_CONVERGE, step=0.2):
        trial.mismatched = True
        trial.problems.append(
            f"{victim.name} does not serve the other node's certificate of {key} "
            f"{FENCED_CONVERGE}s after its fenced write was refused; fleet status of {key}: "
            f"{fleet_status(rig.dsn, key)}\n{rig.explain(batch)}")
        wait_until(settled, LATE_CONVERGE, step=0.2)  # the remaining checks on a settled fleet
    trial.figures["all_served_s"] = round(time.monotonic() - resumed, 1)
    body = fleet_status(rig.dsn, key)
    if "fenced" in str(body.get("last_failure") or ""):
        trial.problems.append(f"{key}: the refused write left a failure in the fleet-wide "
                              f"status every node reads: {body}")
    lost_fields = {k: v for k, v in status_before.items()
                   if k in ("issued_at", "issuer_ca") and body.get(k) != v}
    if lost_fields:
        trial.problems.append(f"{key}: the fenced node's status write replaced what the "
                              f"ordering node recorded in the fleet-wide status: {lost_fields} "
                              f"-> {body}")
    orders = rig.orders_issued() - base
    trial.figures["orders"] = orders
    if orders != len(batch) + 1:
        trial.problems.append(f"Pebble issued {orders} certificates, expected "
                              f"{len(batch) + 1} (one per name + the fenced-out one)")
    trial.final_checks(fleet)


@pytest.mark.slow  # about 40 s: the long set (CI runs it after the README's command)
def test_fleet_node_stopped_past_its_lease_is_fenced_out_on_resume(fleet: Fleet) -> None:
    trial = run_trial("[execute.after_order stop]", lambda t: fence_trial(fleet, t))
    summary.record(FENCE_FAMILY, trials=1, converged=0 if trial.problems else 1,
                   lost=int(trial.lost), mismatched=int(trial.mismatched))
    print(f"\nfleet-fence: {trial.figures}; {registrations(fleet)} ACME account registrations")
    assert not trial.problems, "\n".join(trial.problems)
