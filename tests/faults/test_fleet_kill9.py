"""Fault injection in fleet mode: one controller of a three-node fleet is SIGKILLed (family
"fleet-kill9") or SIGSTOPped past its lease (family "fleet-fence") on the order path, and the
fleet must converge without a lost certificate, a mismatched pair or a needless order.

The rig (tests/support/fleet.py): three NJet simulators with their own `run` controllers, one
real PostgreSQL database (a fresh one per trial), a fresh Pebble per test, haproxy in front of
Pebble's validation ports. node-0 starts alone with NJCM_FAULT_POINT=<point> and
`concurrency = 1`, so the only order it runs is the one the fault hits (the leases table says
which name); node-1 and node-2 start once it died (or stopped).

fleet-kill9, per fault point of the order path (lease taken, CA issued, before / after the
fenced database write, after the mirror write): node-0 dies by SIGKILL there (exit -9); the two
others must serve every name with the database's certificate; then node-0 restarts without the
fault and all three serve every name. Orders (Pebble's own log) = those issued before the kill
+ one per name the database did not hold at the kill (so at most names + 1); every database
row's key opens with the fleet key and matches its certificate; no node's mirror holds a
mismatched pair; no challenge row is left over. `[sample]` kills at two points,
`[full]` (`-m slow`) at all five.

fleet-fence: node-0 is SIGSTOPped right after the CA issued (execute.after_order,
NJCM_FAULT_ACTION=stop) holding the lease, a new certificate in memory. node-1/node-2 wait for
the lease to expire (the leases row changes owner or generation), order, store and serve. Then
node-0 gets SIGCONT: its fenced write must be refused ("fenced write refused" in its log), the
database keeps the other node's certificate (checked for a few seconds), all three nodes serve
it, and Pebble issued exactly names + 1 certificates.

Run by pytest (tests/faults/, marker `pebble`); tallies go to tests/faults/summary.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

import controller.adapters.pg.certs
import controller.adapters.pg.leases
import controller.execute  # noqa: F401  (registers the execute.* fault points)
from controller import faultpoints
from controller.adapters.pg.crypto import KeySealer, load_key_file
from controller.certinfo import key_matches_cert
from controller.errors import StoreError
from tests.faults import summary
from tests.faults.depth import DEPTHS, pick
from tests.fixtures.pg import drop_database, dsn_of, fresh_database
from tests.support.fleet import FleetNode, FleetRig
from tests.support.procs import tail, wait_until

pytestmark = pytest.mark.pebble

KILL_FAMILY = "fleet-kill9"
FENCE_FAMILY = "fleet-fence"
POINTS = ("lease.after_acquire", "execute.after_order", "fleet.before_db_write",
          "fleet.after_db_write", "execute.after_store")
SAMPLE_POINTS = ("execute.after_order", "fleet.after_db_write")
NAMES = [f"k{i}.fleet.test" for i in range(6)]
LEASE, NODE_TIMEOUT = "5s", "15s"
LEASE_SECONDS = 5.0
STEADY_SECONDS = 3.0  # how long the fenced-out certificate must stay out of the database


@pytest.fixture
def fleet_pebble(pebble_factory: Any) -> Any:
    # no nonce rejections, no authorization reuse: every order validates, counted exactly
    return pebble_factory(nonce_reject_percent=0)


# --- observation --------------------------------------------------------------------------


def proc_state(node: FleetNode) -> str | None:
    """The kernel's state letter of the node's controller ('T': stopped); None: no process."""
    if node.proc is None or node.proc.poll() is not None:
        return None
    try:
        stat = Path(f"/proc/{node.proc.pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def serves_all(rig: FleetRig, nodes: Sequence[FleetNode], names: Sequence[str]) -> bool:
    """Every node in `nodes` serves every name with the certificate the database holds."""
    want = rig.db_fingerprints()
    return all(name in want for name in names) and all(
        node.served(name) == want[name] for node in nodes for name in names)


def wait_serves_all(rig: FleetRig, nodes: Sequence[FleetNode], names: Sequence[str],
                    timeout: float) -> float:
    started = time.monotonic()
    if not wait_until(lambda: serves_all(rig, nodes, names), timeout, step=0.2):
        raise AssertionError(f"not served by {[n.name for n in nodes]} after {timeout}s\n"
                             + rig.explain(names))
    return time.monotonic() - started


def leases(dsn: str) -> dict[str, tuple[str, int, bool]]:
    """key -> (owner, generation, live by the database's clock)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT key, owner, generation, expires_at > now() FROM leases"
                            ).fetchall()
    return {str(k): (str(o), int(g), bool(live)) for k, o, g, live in rows}


def cert_rows(dsn: str) -> dict[str, tuple[str, str, int]]:
    """key -> (fingerprint, written_by, generation)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT key, fingerprint, written_by, generation FROM certs"
                            ).fetchall()
    return {str(k): (str(f), str(b), int(g)) for k, f, b, g in rows}


def db_problems(dsn: str, key_file: Path, names: Sequence[str]) -> tuple[list[str], bool]:
    """What is wrong with the database's certificates of `names` (a missing row, a key that
    does not open with the fleet key or does not match its certificate, a challenge row left
    over); second: whether a certificate is lost (missing or unusable)."""
    sealer = KeySealer(load_key_file(key_file))
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT key, cert_pem, key_sealed, key_alg FROM certs").fetchall()
        left = conn.execute("SELECT token, owner FROM challenges").fetchall()
    got = {str(r[0]): r for r in rows}
    problems = []
    for name in names:
        row = got.get(name)
        if row is None:
            problems.append(f"{name}: not in the database")
            continue
        try:
            key_pem = sealer.open_(str(row[3]), bytes(row[2]), label=name)
            if not key_matches_cert(key_pem, bytes(row[1])):
                problems.append(f"{name}: the database's key does not match its certificate")
        except (StoreError, ValueError) as exc:
            problems.append(f"{name}: the database's key does not open: {exc}")
    lost = bool(problems)
    problems += [f"challenge row left over: token {t[:12]}... of {o}" for t, o in left]
    return problems, lost


def the_lease_of(dsn: str, node: str) -> tuple[str, int] | None:
    """(key, generation) of the one lease `node` took (node-0 runs one order at a time)."""
    mine = [(k, g) for k, (o, g, _) in leases(dsn).items() if o == node]
    return mine[0] if len(mine) == 1 else None


def start_nodes(nodes: Sequence[FleetNode]) -> None:
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_up()


def await_or(what: str, pred: Callable[[], bool], timeout: float, node: FleetNode) -> float:
    started = time.monotonic()
    if not wait_until(pred, timeout, step=0.1):
        raise AssertionError(f"{what} not within {timeout}s\n{node.name}:\n{tail(node.log)}")
    return time.monotonic() - started


@dataclass
class Trial:
    label: str
    problems: list[str] = field(default_factory=list)
    lost: bool = False
    mismatched: bool = False
    figures: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def fresh_rig(workdir: Path, pebble: Any) -> Iterator[FleetRig]:
    """A rig over a database of its own (dropped afterwards), controllers not started; node-0
    runs one order at a time (the faulted order is its only one)."""
    name = fresh_database()
    rig = FleetRig(workdir, pebble, dsn_of(name), names=list(NAMES), nodes_count=3,
                   lease=LEASE, node_timeout=NODE_TIMEOUT)
    try:
        rig.start(controllers=False)
        rig.nodes[0].toml["controller"]["concurrency"] = 1
        yield rig
    finally:
        rig.stop()
        drop_database(name)


# --- fleet-kill9 --------------------------------------------------------------------------


def kill_trial(workdir: Path, pebble: Any, point: str) -> Trial:
    trial = Trial(f"[{point}]")
    with fresh_rig(workdir, pebble) as rig:
        try:
            run_kill_trial(rig, point, trial)
        except AssertionError as exc:
            trial.problems.append(str(exc))
            trial.mismatched = True
    return trial


def run_kill_trial(rig: FleetRig, point: str, trial: Trial) -> None:
    victim, others = rig.nodes[0], rig.nodes[1:]
    assert rig.key_file is not None
    base = rig.orders_issued()
    victim.env = {faultpoints.ENV_VAR: point}
    started = time.monotonic()
    victim.start()
    await_or(f"{victim.name} killed at {point}", victim.exited, 60, victim)
    assert victim.proc is not None
    if victim.proc.returncode != -9:
        raise AssertionError(f"{victim.name} exited {victim.proc.returncode}, not killed at "
                             f"{point}\n{tail(victim.log)}")
    held = the_lease_of(rig.dsn, victim.name)
    if held is None:
        raise AssertionError(f"{victim.name} died at {point} holding {leases(rig.dsn)}")
    key = held[0]
    issued_at_kill = rig.orders_issued() - base
    stored_at_kill = cert_rows(rig.dsn)
    trial.figures.update(key=key, issued_at_kill=issued_at_kill,
                         stored_at_kill=len(stored_at_kill),
                         kill_s=round(time.monotonic() - started, 1))

    start_nodes(others)
    trial.figures["others_s"] = round(wait_serves_all(rig, others, NAMES, 90), 1)
    rows = cert_rows(rig.dsn)
    if key not in stored_at_kill:  # the killed order's certificate is gone: another node's
        if rows[key][1] == victim.name:
            trial.problems.append(f"{key}: the database holds {victim.name}'s certificate "
                                  "although it was killed before writing it")
        owner = leases(rig.dsn).get(key, ("?", 0, False))[0]
        if owner == victim.name:
            trial.problems.append(f"{key}: the lease is still {victim.name}'s after the "
                                  "others converged")
    elif rows[key][0] != stored_at_kill[key][0]:
        trial.problems.append(f"{key}: the certificate {victim.name} stored before its death "
                              "was replaced (a needless order)")

    victim.env = {}
    victim.start()
    victim.wait_up()
    trial.figures["restart_s"] = round(wait_serves_all(rig, rig.nodes, NAMES, 60), 1)
    orders = rig.orders_issued() - base
    expected = issued_at_kill + len(NAMES) - len(stored_at_kill)
    trial.figures.update(orders=orders, total_s=round(time.monotonic() - started, 1))
    if orders != expected or orders > len(NAMES) + 1:
        trial.problems.append(f"Pebble issued {orders} certificates, expected {expected} "
                              f"({issued_at_kill} before the kill, one per name the database "
                              f"lacked then; at most {len(NAMES) + 1})")
    bad = rig.mismatched_pairs()
    if bad:
        trial.mismatched = True
        trial.problems.append(f"mismatched pairs: {bad}")
    problems, trial.lost = db_problems(rig.dsn, rig.key_file, NAMES)
    trial.problems += problems


@pytest.mark.parametrize("depth", DEPTHS)
def test_fleet_node_killed_on_the_order_path_the_fleet_converges_without_extra_orders(
    tmp_path: Path, fleet_pebble: Any, depth: str
) -> None:
    missing = set(POINTS) - faultpoints.KNOWN_POINTS
    assert not missing, f"fault points no longer registered: {sorted(missing)}"
    points = pick(depth, sample=SAMPLE_POINTS, full=POINTS)
    started = time.monotonic()
    trials = [kill_trial(tmp_path / f"t{i}", fleet_pebble, point)
              for i, point in enumerate(points)]
    failed = [t for t in trials if t.problems]
    summary.record(KILL_FAMILY, trials=len(trials), converged=len(trials) - len(failed),
                   lost=sum(t.lost for t in trials),
                   mismatched=sum(t.mismatched for t in trials))
    print(f"\nfleet-kill9: {len(trials)} trials in {time.monotonic() - started:.1f}s")
    for t in trials:
        print(f"  {t.label} {t.figures}")
    assert not failed, "\n\n".join(f"{t.label} " + "\n".join(t.problems) for t in failed)


# --- fleet-fence --------------------------------------------------------------------------


def test_fleet_node_stopped_past_its_lease_is_fenced_out_on_resume(
    tmp_path: Path, fleet_pebble: Any
) -> None:
    trial = Trial("[execute.after_order stop]")
    started = time.monotonic()
    with fresh_rig(tmp_path / "fence", fleet_pebble) as rig:
        try:
            run_fence_trial(rig, trial)
        except AssertionError as exc:
            trial.problems.append(str(exc))
            trial.mismatched = True
    summary.record(FENCE_FAMILY, trials=1, converged=0 if trial.problems else 1,
                   lost=int(trial.lost), mismatched=int(trial.mismatched))
    print(f"\nfleet-fence: {time.monotonic() - started:.1f}s {trial.figures}")
    assert not trial.problems, "\n".join(trial.problems)


def run_fence_trial(rig: FleetRig, trial: Trial) -> None:
    victim, others = rig.nodes[0], rig.nodes[1:]
    assert rig.key_file is not None
    base = rig.orders_issued()
    victim.env = {faultpoints.ENV_VAR: "execute.after_order", faultpoints.ACTION_VAR: "stop"}
    started = time.monotonic()
    victim.start()
    await_or(f"{victim.name} stopped after its order", lambda: proc_state(victim) == "T", 60,
             victim)
    paused = time.monotonic()
    held = the_lease_of(rig.dsn, victim.name)
    if held is None:
        raise AssertionError(f"{victim.name} stopped holding {leases(rig.dsn)}")
    key, generation = held
    trial.figures.update(key=key, pause_s=round(paused - started, 1),
                         issued_at_pause=rig.orders_issued() - base)

    start_nodes(others)

    def taken_over() -> bool:
        owner, gen, _ = leases(rig.dsn).get(key, (victim.name, generation, True))
        return owner != victim.name or gen != generation

    trial.figures["takeover_s"] = round(await_or(
        f"the lease on {key} taken from {victim.name}", taken_over, 60, others[0]), 1)
    trial.figures["served_s"] = round(wait_serves_all(rig, others, NAMES, 90), 1)
    lease_now = leases(rig.dsn)[key]
    if lease_now[0] == victim.name:
        raise AssertionError(f"{key}: the lease went back to {victim.name}: {lease_now}")
    theirs = cert_rows(rig.dsn)[key]
    if theirs[1] == victim.name:
        raise AssertionError(f"{key}: the database holds {victim.name}'s certificate")
    trial.figures["paused_for_s"] = round(time.monotonic() - paused, 1)

    victim.resume()
    resumed = time.monotonic()
    await_or(f"{victim.name}: fenced write refused", lambda: fenced(victim, key), 30, victim)
    trial.figures["refused_s"] = round(time.monotonic() - resumed, 1)
    steady_until = time.monotonic() + STEADY_SECONDS
    while time.monotonic() < steady_until:
        now = cert_rows(rig.dsn).get(key)
        if now is None or now[:2] != theirs[:2]:
            trial.lost = now is None
            raise AssertionError(f"{key}: the database's certificate changed after the resume:"
                                 f" {theirs} -> {now}\n{tail(victim.log)}")
        time.sleep(0.2)
    trial.figures["all_served_s"] = round(wait_serves_all(rig, rig.nodes, NAMES, 60), 1)
    if cert_rows(rig.dsn)[key][:2] != theirs[:2]:
        raise AssertionError(f"{key}: the database's certificate changed after the resume")
    orders = rig.orders_issued() - base
    trial.figures.update(orders=orders, total_s=round(time.monotonic() - started, 1))
    if orders != len(NAMES) + 1:
        trial.problems.append(f"Pebble issued {orders} certificates, expected "
                              f"{len(NAMES) + 1} (one per name + the fenced-out one)")
    bad = rig.mismatched_pairs()
    if bad:
        trial.mismatched = True
        trial.problems.append(f"mismatched pairs: {bad}")
    problems, trial.lost = db_problems(rig.dsn, rig.key_file, NAMES)
    trial.problems += problems


def fenced(node: FleetNode, key: str) -> bool:
    """The node logged the refusal of its fenced write of `key`."""
    return any("fenced write refused" in line and key in line
               for line in node.log_text().splitlines())
