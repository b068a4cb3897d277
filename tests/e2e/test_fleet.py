"""Fleet mode end to end: three NJet simulators, each with its own controller (`run`), one real
PostgreSQL database, real Pebble, and a real haproxy (round robin, TCP) in front of Pebble's
validation ports, so a validation lands on whichever node the balancer picks.

What is checked: one order per name (counted in Pebble's own log), every node's NJet serves
every certificate (real TLS handshakes), validations really reached more than one node, a
renewal on one node is served by the others, and no node's mirror holds a mismatched pair.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fixtures.pg import pg_dsn  # noqa: F401
from tests.support.fleet import FleetRig
from tests.support.procs import clean_env, controller_program, wait_until

pytestmark = pytest.mark.pebble

NAMES = [f"n{i:02d}.fleet.test" for i in range(20)]


@pytest.fixture
def fleet_pebble(pebble_factory: Any) -> Any:
    # no nonce rejections: orders are counted exactly
    return pebble_factory(nonce_reject_percent=0)


@pytest.fixture
def rig(tmp_path: Path, fleet_pebble: Any, pg_dsn: str) -> Iterator[FleetRig]:  # noqa: F811
    rig = FleetRig(tmp_path / "fleet", fleet_pebble, pg_dsn, names=NAMES)
    try:
        yield rig.start()
    finally:
        rig.stop()


def cli(node: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([controller_program(), "-p", str(node.root), "-c",
                           "conf/cert-manager.toml", *args], capture_output=True, text=True,
                          timeout=60, cwd="/", env=clean_env())


def admin_post(node: Any, path: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{node.admin_port}{path}", data=b"",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(json.loads(r.read()))


def test_twenty_names_on_three_nodes_one_order_each_every_node_serves(rig: FleetRig) -> None:
    rig.wait_all_served(timeout=150)
    assert rig.orders_issued() == len(NAMES), rig.explain()
    assert sorted(rig.db_fingerprints()) == sorted(NAMES)
    assert rig.mismatched_pairs() == []
    assert rig.haproxy is not None
    hits = rig.haproxy.connections("http01")
    reached = [server for server, n in hits.items() if n > 0]
    assert len(reached) >= 2, f"validations reached only {reached}: {hits}"
    with psycopg.connect(rig.dsn) as conn:
        served = conn.execute(
            "SELECT count(DISTINCT node) FROM node_status WHERE fingerprint IS NOT NULL"
        ).fetchone()
        sealed = conn.execute("SELECT count(*) FROM certs WHERE key_alg = 'aes-256-gcm'"
                              ).fetchone()
        clear = conn.execute("SELECT count(*) FROM certs WHERE "
                             "position('PRIVATE KEY'::bytea in key_sealed) > 0").fetchone()
    assert served is not None and served[0] == 3  # each node recorded what its NJet serves
    assert sealed is not None and sealed[0] == len(NAMES)
    assert clear is not None and clear[0] == 0
    for node in rig.nodes:
        health = node.health() or {}
        assert health.get("fleet", {}).get("database_up") is True, health
        assert health.get("fleet", {}).get("live_nodes") == 3, health

    # what an operator sees on any node: the fleet's leases and nodes (diff), who serves
    # what (certs list, GET /api/v1/cert), per-node series (/metrics)
    node = rig.nodes[2]
    diff = cli(node, "diff", "-o", "json")
    assert diff.returncode == 0, diff.stdout + diff.stderr
    fleet = json.loads(diff.stdout)["fleet"]
    assert sorted(n["name"] for n in fleet["nodes"] if n["live"]) == [
        "node-0", "node-1", "node-2"]
    assert fleet["keys_encrypted"] is True and fleet["settings_agree"] is True
    assert fleet["pending_applies"] == [] and fleet["leases"] == []
    listing = json.loads(cli(node, "certs", "list", "-o", "json").stdout)["fleet"]
    assert len(listing["certificates"]) == len(NAMES)
    for cert in listing["certificates"]:
        assert sorted(n["node"] for n in cert["served_by"] if n["current"]) == [
            "node-0", "node-1", "node-2"], cert
    assert listing["disagreements"] == []
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/api/v1/cert/{NAMES[0]}",
                                timeout=5) as r:
        view = json.loads(r.read())
    assert len([s for s in view["served_by"] if s["current"]]) == 3, view
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'njcm_fleet_nodes_live{node="node-2"} 3' in metrics
    assert 'njcm_fleet_database_up{node="node-2"} 1' in metrics

    # a renewal asked on one node: one more order, and the other two serve it within seconds
    name = NAMES[3]
    old = rig.db_fingerprints()[name]
    before = rig.orders_issued()
    admin_post(rig.nodes[1], f"/api/v1/cert/{name}/renew?force=true")
    assert wait_until(lambda: rig.db_fingerprints().get(name) not in (None, old), 60), \
        rig.explain([name])
    stored_at = time.monotonic()
    took = rig.wait_all_served([name], timeout=30)
    assert rig.orders_issued() == before + 1
    assert rig.mismatched_pairs() == []
    print(f"renewal on node-1 served by all three {time.monotonic() - stored_at:.2f}s after "
          f"the database had it (waited {took:.2f}s)")
