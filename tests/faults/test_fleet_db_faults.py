"""Fault injection, fleet database: the fleet's PostgreSQL is down at start, restarted mid-run,
misnamed (unknown database, unknown role, wrong password) or cut off from one node.

Real parts only: three NJet simulators with their own controllers (`run`, fleet mode), real
Pebble, a real haproxy in front of Pebble's validation ports (tests/support/fleet.py), and a
real PostgreSQL: a throwaway cluster (tests/fixtures/pgcluster.py) when the test stops or
restarts it, the machine's server on 5432 otherwise, reached through a TcpProxy
(tests/support/tcpproxy.py) for the partition.

Families (tests/faults/summary.py):
- `fleet-db-faults`: the database down at start (each node degraded, serving its mirror, no
  order, one log line, back to ok once it is up), restarted while orders are in flight (the
  fleet converges, at most a few extra orders), and the one-shot CLI over a DSN naming an
  unknown database / role or a wrong password (exit 1, one line, never the password).
- `fleet-partition`: one node's database link black-holed (its admin API keeps answering, it
  says the database is down, its NJet keeps serving; the others renew and serve without it),
  then healed (it catches up with the renewal).
A trial is converged when every check of it held, mismatched when a node's mirror held a
certificate whose key does not match it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from tests.e2e.harness import Prefix
from tests.faults import summary
from tests.fixtures.pg import MACHINE_DSN
from tests.support.fleet import FleetNode, FleetRig
from tests.support.pgcluster import PgCluster
from tests.support.procs import controller_program, clean_env, tail, wait_until
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.pebble

UNREACHABLE = "fleet database unreachable"
_ORDER = re.compile(r"POST /order-plz")


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def fleet_pebble(pebble_factory: Any) -> Any:
    # no nonce rejections: Pebble's log counts orders exactly
    return pebble_factory(nonce_reject_percent=0)


def new_orders(pebble: Any) -> int:
    """newOrder requests Pebble received (its own log)."""
    return len(_ORDER.findall(Path(pebble.log_path).read_text(errors="replace")))


def served_all(rig: FleetRig, nodes: list[FleetNode], names: list[str]) -> dict[str, str | None]:
    return {f"{node.name}/{name}": node.served(name) for node in nodes for name in names}


def fleet_health(node: FleetNode) -> tuple[str | None, bool | None]:
    """(status, fleet.database_up) of the node's /healthz; (None, None) when it did not answer."""
    doc = node.health()
    if doc is None:
        return None, None
    return doc.get("status"), doc.get("fleet", {}).get("database_up")


def log_since(node: FleetNode, mark: int) -> str:
    return node.log_text()[mark:]


def admin_post(node: FleetNode, path: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{node.admin_port}{path}", data=b"",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(json.loads(r.read()))


def start_controllers(rig: FleetRig) -> None:
    for node in rig.nodes:
        node.start()
    for node in rig.nodes:
        node.wait_up()


@pytest.fixture
def cluster_rig(tmp_path: Path, fleet_pebble: Any, pg_cluster: PgCluster,
                pg_cluster_dsn: str) -> Iterator[FleetRig]:
    """Three nodes over a fresh database of the throwaway cluster; controllers not started."""
    rig = FleetRig(tmp_path / "fleet", fleet_pebble, pg_cluster_dsn, names=[])
    try:
        yield rig
    finally:
        rig.stop()
        pg_cluster.start()


# -- 1. the database down at start -------------------------------------------------------------


DOWN_NAMES = [f"d{i}.dbdown.test" for i in range(3)]


def test_database_down_at_start_nodes_serve_their_mirror_then_recover(
        cluster_rig: FleetRig, pg_cluster: PgCluster) -> None:
    rig = cluster_rig
    rig.names = list(DOWN_NAMES)
    rig.start(controllers=False)
    start_controllers(rig)
    took = rig.wait_all_served(timeout=90)
    served_before = served_all(rig, rig.nodes, DOWN_NAMES)
    orders_before, issued_before = new_orders(rig.pebble), rig.orders_issued()
    for node in rig.nodes:
        node.stop()
    pg_cluster.stop("fast")
    marks = [len(node.log_text()) for node in rig.nodes]
    restarted = time.monotonic()
    start_controllers(rig)
    checks: dict[str, bool] = {}

    def all_degraded() -> bool:
        return all(fleet_health(n) == ("degraded", False) for n in rig.nodes)

    checks["degraded"] = wait_until(all_degraded, 30)
    degraded_after = time.monotonic() - restarted
    time.sleep(10)  # a hot loop would log the outage (or retry) many times over these 10 s
    checks["still degraded"] = all_degraded()
    checks["mirror served"] = served_all(rig, rig.nodes, DOWN_NAMES) == served_before
    checks["no order"] = (new_orders(rig.pebble), rig.orders_issued()) == (orders_before,
                                                                          issued_before)
    outage_logs = [log_since(n, m) for n, m in zip(rig.nodes, marks, strict=True)]
    said = [text.count(UNREACHABLE) for text in outage_logs]
    lines = [text.count("\n") for text in outage_logs]
    checks["said once"] = said == [1] * len(rig.nodes)

    pg_cluster.start()
    back = time.monotonic()
    checks["recovered"] = wait_until(
        lambda: all(fleet_health(n) == ("ok", True) for n in rig.nodes), 30)
    recovered_after = time.monotonic() - back
    checks["no order after"] = new_orders(rig.pebble) == orders_before
    mismatched = rig.mismatched_pairs()
    print(f"first convergence {took:.1f}s; degraded {degraded_after:.1f}s after the restart; "
          f"outage log lines per node {lines} ('{UNREACHABLE}' x {said}); back to ok "
          f"{recovered_after:.1f}s after the database; orders {orders_before}")
    summary.record("fleet-db-faults", trials=1, converged=int(all(checks.values())),
                   mismatched=int(bool(mismatched)))
    failed = [k for k, ok in checks.items() if not ok]
    assert not failed, f"{failed}\n" + "\n".join(
        f"{n.name}: {fleet_health(n)}\n{tail(n.log, 3000)}" for n in rig.nodes)
    assert mismatched == []
