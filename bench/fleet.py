"""Bench 8, fleet mode ([store] backend = "postgres"): several NJet nodes sharing one certificate
set through the machine's PostgreSQL (127.0.0.1:5432; each run its own databases, dropped after).

1. Convergence (tests/support/fleet.py's FleetRig: NJet simulators, one controller `run` each,
   a real haproxy round-robin in front of Pebble's validation ports): `names` names on 3 nodes.
   Orders issued, counted in Pebble's own log (the difference before/after: the bench's Pebble
   is shared by every bench); the time from launching the controllers until every node's NJet
   serves every name with the certificate the database holds (real TLS handshakes), against
   one node alone (same names, a fresh database); then, per trial, a forced renewal on one node
   (POST /api/v1/cert/<name>/renew?force=true): the time from the database having the new
   certificate (its row's written_at) until the two other nodes serve it, and from the request.
2. Cold start (bench/fleet_cold.py): `certs` certificates in the database; a new node's App and
   first `compute()` (its mirror empty: it pulls them all) and a no-op `compute()`, against the
   file backend's same figures over the same certificates.
Goals: orders == names; 3 nodes ≤ 1.2 × one node; renewal → other nodes < 2 s (median); cold
< 3 s; no-op < 150 ms. Called by bench/runner.py.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench.common import BenchError, Goal, ratio, summary
from tests.support.fleet import FleetRig, served_fingerprint

PG_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
CONVERGE_TIMEOUT = 600.0
RENEW_TIMEOUT = 60.0
POLL = 0.01
GOAL_RATIO = 1.2
GOAL_PROPAGATION = 2.0


# -- databases ---------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_database(server: str = PG_SERVER) -> Iterator[str]:
    """A fresh database on `server` for the duration (its sessions ended, then dropped)."""
    name = f"njcm_b_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        why = " ".join(str(exc).split())
        raise BenchError(f"the fleet bench needs PostgreSQL at {server} (trust auth, user "
                         f"postgres; hack/setup.sh starts it): {why}") from None
    try:
        yield psycopg.conninfo.make_conninfo(server, dbname=name)
    finally:
        with contextlib.suppress(psycopg.Error), \
                psycopg.connect(server, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def db_certs(dsn: str) -> dict[str, tuple[str, float]]:
    """key -> (fingerprint, written_at as a Unix time) of every row of `certs` (none before
    the first controller migrated the database)."""
    with psycopg.connect(dsn) as conn:
        try:
            rows = conn.execute("SELECT key, fingerprint, extract(epoch FROM written_at) "
                                "FROM certs").fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {str(k): (str(f), float(t)) for k, f, t in rows}


# -- convergence -------------------------------------------------------------------------------


def wait_served(rig: FleetRig, names: list[str], timeout: float) -> float:
    """Seconds until every node serves every name with the database's certificate. A pair
    once seen right is not handshaken again (each name is ordered once here)."""
    started = time.perf_counter()
    pending = {(node.index, name) for node in rig.nodes for name in names}
    by_index = {node.index: node for node in rig.nodes}
    deadline = time.monotonic() + timeout
    while pending:
        want = db_certs(rig.dsn)
        for index, name in sorted(pending):
            if name in want and by_index[index].served(name) == want[name][0]:
                pending.discard((index, name))
        if not pending:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{len(pending)} (node, name) pairs not served after "
                             f"{timeout:.0f}s:\n{rig.explain(names)[:3000]}")
        if any(node.exited() for node in rig.nodes):
            raise BenchError(f"a controller exited:\n{rig.explain(names)[:3000]}")
        time.sleep(0.05)
    return time.perf_counter() - started


def unchecked(rig: FleetRig) -> None:
    """haproxy without health checks of the challenge servers (the rig's default now; turned
    off through the runtime API when a rig still checks them): a node's challenge server
    listens only while a validation is pending, so a 500 ms TCP check holds it DOWN between
    validations, and a validation before the next check finds no server (EOF; the order then
    waits for its retry). Unchecked servers count as UP; a refused connection is retried on
    the next one (`retries 2`, redispatch)."""
    proxy = rig.haproxy
    assert proxy is not None
    for frontend in ("http01", "tlsalpn01"):
        for server, state in proxy.states(frontend).items():
            if state.startswith("no check"):
                continue
            for command in (f"disable health {frontend}/{server}",
                            f"set server {frontend}/{server} health up"):
                answer = proxy.command(command).strip()
                if answer:
                    raise BenchError(f"haproxy: {command}: {answer}")
        states = proxy.states(frontend)
        if any(not state.startswith(("UP", "no check")) for state in states.values()):
            raise BenchError(f"haproxy {frontend}: servers still checked: {states}")


def start_controllers(rig: FleetRig) -> float:
    """Launch every node's controller; returns the perf_counter of the launch."""
    launched = time.perf_counter()
    for node in rig.nodes:
        node.start()
    try:
        for node in rig.nodes:
            node.wait_up()
    except AssertionError as exc:
        raise BenchError(str(exc)[:3000]) from None
    return launched


def run_converge(pebble: Any, workdir: Path, dsn: str, names: list[str], nodes: int,
                 *, trials: int = 0) -> dict[str, Any]:
    rig = FleetRig(workdir, pebble, dsn, names=list(names), nodes_count=nodes)
    before = rig.orders_issued()
    try:
        try:
            rig.start(controllers=False)
        except Exception as exc:
            raise BenchError(f"fleet rig of {nodes} nodes did not start: {exc}") from None
        unchecked(rig)
        launched = start_controllers(rig)
        wait_served(rig, names, CONVERGE_TIMEOUT)
        seconds = time.perf_counter() - launched
        time.sleep(1.0)  # a late duplicate order would show up here
        orders = rig.orders_issued() - before
        out: dict[str, Any] = {"nodes": nodes, "names": len(names), "orders": orders,
                               "all_served_seconds": round(seconds, 4),
                               "mismatched_pairs": len(rig.mismatched_pairs())}
        if trials:
            out["renewal"] = renewals(rig, names, trials)
        return out
    finally:
        rig.stop()


def admin_post(port: int, path: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as err:
        raise BenchError(f"POST {path} on 127.0.0.1:{port}: {err.code} "
                         f"{err.read()[:300]!r}") from None


def renewals(rig: FleetRig, names: list[str], trials: int) -> dict[str, Any]:
    """Per trial a forced renewal of a new name on node `trial % nodes`; when the others serve
    it (from the row's written_at, and from the request)."""
    propagation: list[float] = []
    from_request: list[float] = []
    before = rig.orders_issued()
    for trial in range(trials):
        name = names[trial % len(names)]
        node = rig.nodes[trial % len(rig.nodes)]
        others = [n for n in rig.nodes if n is not node]
        old = db_certs(rig.dsn)[name][0]
        asked = time.time()
        admin_post(node.admin_port, f"/api/v1/cert/{name}/renew?force=true")
        deadline = time.monotonic() + RENEW_TIMEOUT
        while True:
            fp, written = db_certs(rig.dsn).get(name, (old, 0.0))
            if fp != old:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"the forced renewal of {name} on {node.name} was not stored "
                                 f"within {RENEW_TIMEOUT:.0f}s:\n{rig.explain([name])[:3000]}")
            time.sleep(POLL)
        waiting = {n.index for n in others}
        while waiting:
            for other in others:
                if other.index in waiting and \
                        served_fingerprint(other.https_port, name, timeout=1.0) == fp:
                    waiting.discard(other.index)
            if waiting and time.monotonic() > deadline:
                raise BenchError(f"the renewal of {name} was not served by every other node "
                                 f"within {RENEW_TIMEOUT:.0f}s:\n{rig.explain([name])[:3000]}")
            if waiting:
                time.sleep(POLL)
        seen = time.time()
        propagation.append(seen - written)
        from_request.append(seen - asked)
        wait_served_one(rig, node, name, fp, deadline)
    return {"trials": trials, "orders": rig.orders_issued() - before,
            "propagation_seconds": summary(propagation),
            "request_to_served_seconds": summary(from_request)}


def wait_served_one(rig: FleetRig, node: Any, name: str, fp: str, deadline: float) -> None:
    while node.served(name) != fp:
        if time.monotonic() > deadline:
            raise BenchError(f"{node.name} does not serve its own renewal of {name}:\n"
                             + rig.explain([name])[:3000])
        time.sleep(POLL)


# -- the bench ---------------------------------------------------------------------------------


def run_fleet(pebble: Any, workdir: Path, *, names: int, certs: int,
              trials: int) -> dict[str, Any]:
    from bench.fleet_cold import run_cold

    tag = secrets.token_hex(2)
    wanted = [f"f{i:04d}-{tag}.fleet.test" for i in range(names)]
    with bench_database() as dsn:
        three = run_converge(pebble, workdir / "three", dsn, wanted, 3,
                             trials=min(trials, names))
    alone_names = [n.replace(".fleet.test", ".alone.test") for n in wanted]
    with bench_database() as dsn:
        one = run_converge(pebble, workdir / "one", dsn, alone_names, 1)
    with bench_database() as dsn:
        cold = run_cold(workdir / "cold", dsn, certs)
    r = ratio(three["all_served_seconds"], one["all_served_seconds"])
    prop = three["renewal"]["propagation_seconds"]["median"]
    fl, fi = cold["postgres"], cold["file"]
    goals = [
        Goal("orders issued beyond or short of the names, 3 nodes", "<=", 0,
             abs(three["orders"] - names)),
        Goal("all served, 3 nodes / 1 node", "<=", GOAL_RATIO, r, "x"),
        Goal("renewal stored → other nodes serve it (median)", "<", GOAL_PROPAGATION, prop,
             " s"),
        Goal(f"cold start, {certs} certs in the database (App + first compute)", "<", 3.0,
             fl["cold_seconds"], " s"),
        Goal(f"no-op compute, {certs} certs, fleet (median)", "<", 0.150,
             fl["noop_seconds"]["median"], " s"),
    ]
    return {
        "figures": {"three_nodes": three, "one_node": one, "three_over_one": r,
                    "cold": cold,
                    "cold_ratio_to_file": ratio(fl["cold_seconds"], fi["cold_seconds"]),
                    "noop_ratio_to_file": ratio(fl["noop_seconds"]["median"],
                                                fi["noop_seconds"]["median"])},
        "goals": [g.as_dict() for g in goals],
        "notes": ["convergence: from launching the controllers (they start, register, order, "
                  "store, pull, apply) until every node's NJet simulator serves every name "
                  "with the database's certificate; validations go through haproxy "
                  "round-robin to any node",
                  "renewal: from the new row's written_at (database clock, same host) until "
                  "both other nodes' handshakes show it; request_to_served adds the order",
                  "cold: in process, store-only ([njet] apiAddress = \"\"), a fresh node "
                  "prefix whose mirror is empty; the file backend's figures are App + first "
                  "compute over the same certificates already on disk"],
    }
