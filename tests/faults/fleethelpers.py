"""Pieces of the fleet fault tests (tests/faults/test_fleet_kill9.py) over a FleetRig
(tests/support/fleet.py): driving its nodes (restart with a fault point, hand them names with
a reload, stop them in parallel) and reading what the fleet did (the database's leases,
certificates and statuses, what each node serves, whether a key opens, whether a log keeps
growing).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from controller.adapters.pg.crypto import KeySealer, load_key_file
from controller.certinfo import key_matches_cert
from controller.errors import StoreError
from tests.support.fleet import FleetNode, FleetRig
from tests.support.procs import tail, wait_until

QUIET_SECONDS, QUIET_LINES = 1.5, 20  # a converged node logs fewer lines than that meanwhile


# --- the rig ------------------------------------------------------------------------------


def stop_in_parallel(rig: FleetRig) -> None:
    """Each node's controller, then its simulator, stopped in a thread of its own (a
    simulator takes over a second to quit); FleetRig.stop does the rest."""
    def stop(node: FleetNode) -> None:
        if node.proc is not None and node.proc.poll() is None:
            node.resume()
        node.stop()
        node.sim.quit()

    if rig.nodes:  # none when the rig did not start
        with ThreadPoolExecutor(len(rig.nodes)) as pool:
            list(pool.map(stop, rig.nodes))


def start_idle(nodes: Sequence[FleetNode]) -> None:
    """Start the nodes with no managed server in their njet.conf: live fleet members whose
    challenge relays answer node-0's orders, ordering nothing themselves."""
    for node in nodes:
        node.write_conf([])
        node.start()
    for node in nodes:
        node.wait_up()


def reload(nodes: Sequence[FleetNode], names: Sequence[str]) -> None:
    """`names` into the nodes' njet.conf, then SIGHUP (NJet's reload): they want them now."""
    for node in nodes:
        node.write_conf(names)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)


def restart(node: FleetNode, names: Sequence[str], env: dict[str, str]) -> None:
    """Stop the node's controller (continued first when it is stopped), start it anew with
    `env` and `names` in its njet.conf."""
    if node.proc is not None and node.proc.poll() is None:
        node.resume()  # a stopped process acts on SIGTERM only once continued
        node.stop()
    node.env = dict(env)
    node.write_conf(names)
    node.start()


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


def await_or(what: str, pred: Callable[[], bool], timeout: float, node: FleetNode) -> float:
    started = time.monotonic()
    if not wait_until(pred, timeout, step=0.1):
        raise AssertionError(f"{what} not within {timeout}s\n{node.name}:\n{tail(node.log)}")
    return time.monotonic() - started


@dataclass(frozen=True)
class LeaseRow:
    """One `leases` row; times in epoch seconds of the database's clock."""

    key: str
    owner: str
    generation: int
    taken_at: float
    expires_at: float


def leases(dsn: str) -> dict[str, LeaseRow]:
    """Every lease row by key."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT key, owner, generation, extract(epoch FROM taken_at), "
                            "extract(epoch FROM expires_at) FROM leases").fetchall()
    return {str(r[0]): LeaseRow(str(r[0]), str(r[1]), int(r[2]), float(r[3]), float(r[4]))
            for r in rows}


def the_lease_of(dsn: str, node: str, keys: Sequence[str]) -> LeaseRow | None:
    """The lease on one of `keys` that `node` took last."""
    mine = [row for row in leases(dsn).values() if row.owner == node and row.key in keys]
    return max(mine, key=lambda row: row.taken_at) if mine else None


def cert_rows(dsn: str) -> dict[str, tuple[str, str, int]]:
    """key -> (fingerprint, written_by, generation)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT key, fingerprint, written_by, generation FROM certs"
                            ).fetchall()
    return {str(k): (str(f), str(b), int(g)) for k, f, b, g in rows}


def fleet_status(dsn: str, key: str) -> dict[str, Any]:
    """The fleet-wide part of the key's status (cert_status.body; {}: none)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT body FROM cert_status WHERE key = %s", (key,)).fetchone()
    return dict(row[0]) if row is not None and isinstance(row[0], dict) else {}


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


def noisy(nodes: Sequence[FleetNode]) -> list[str]:
    """Nodes whose log grew by QUIET_LINES lines or more in QUIET_SECONDS (a hot loop)."""
    before = [len(n.log_text().splitlines()) for n in nodes]
    time.sleep(QUIET_SECONDS)
    grew = [len(n.log_text().splitlines()) - b for n, b in zip(nodes, before, strict=True)]
    return [f"{n.name} logged {g} lines in {QUIET_SECONDS}s after converging:\n"
            f"{tail(n.log, 1500)}" for n, g in zip(nodes, grew, strict=True) if g >= QUIET_LINES]


def fenced(node: FleetNode, key: str) -> bool:
    """The node logged the refusal of its fenced write of `key`."""
    return any("fenced write refused" in line and key in line
               for line in node.log_text().splitlines())
