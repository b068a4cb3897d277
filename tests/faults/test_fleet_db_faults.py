"""Fault injection, fleet database: the fleet's PostgreSQL is down at start, restarted while
orders run, misnamed in the DSN (unknown database, unknown role, wrong password), or cut off
from one node.

Real parts only: three NJet simulators with their own controllers (`run`, fleet mode), real
Pebble, a real haproxy in front of Pebble's validation ports (tests/support/fleet.py), and a real
PostgreSQL: a throwaway cluster (tests/fixtures/pgcluster.py) when a test stops or restarts it,
the machine's server on 5432 otherwise, reached through a TcpProxy (tests/support/tcpproxy.py)
for the partition.

Families (tests/faults/summary.py; one trial per scenario, or per CLI run):
- `fleet-db-faults`: the database down at start (each node degraded, serving its mirror, even
  re-applying it to an NJet that lost its dynamic state, no order, the outage logged once, ok
  again once the database is back), restarted while orders are in flight (the fleet converges
  with at most a few extra orders), and the one-shot CLI (`reconcile`, `diff`) over a DSN naming
  an unknown database, an unknown role or a wrong password (exit 1, one line on stderr naming
  the DSN without its password and the reason, never the password, no traceback).
- `fleet-partition`: one node's database link black-holed (its admin API keeps answering, it
  reports the database down, its NJet keeps serving, the others are unaffected and renew
  without it), then healed (it catches up with the renewal).
`mismatched` counts trials after which a node's mirror held a certificate without its key.

How the fleets are started (fleetdbkit.rolling_start): node-0 alone first (the others out of
the balancer's rotation) with one warm-up name, so that one order registers the fleet's one
ACME account; then the other two; then every node gets the names under test. The balancer's
health checks are replaced by a fixed rotation: the nodes' challenge servers listen only while
an order is pending, so a 500 ms check lags an order's first validation (EOF, then a 60 s
backoff). Nodes started together, or one node's first concurrent orders, race to register the
ACME account and leave mismatched account files (JWS verification errors later). Neither race
is what these tests are about. During the partition the cut-off node is taken out of the
rotation, as a health-checked balancer would (it cannot see the fleet's challenges, so its
challenge servers do not listen).
Default run: tests 1-3 (about 80 s once they pass); the partition test is `slow`.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from tests.faults import summary
from tests.faults.fleetdbkit import (
    PASSWORD,
    CliRun,
    HealthWatch,
    Restarter,
    admin_post,
    cli_prefix,
    db_fingerprints,
    forget_dynamic_state,
    hand_names,
    health,
    in_rotation,
    judge,
    new_orders,
    rolling_start,
    run_cli,
    served,
    serves_db,
    stop_all,
    verdict,
    wait_answering,
)
from tests.support.fleet import FleetRig
from tests.support.pgcluster import PgCluster
from tests.support.procs import wait_until
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.pebble

DB_FAMILY = "fleet-db-faults"
PARTITION_FAMILY = "fleet-partition"
UNREACHABLE = "fleet database unreachable"
WARM_UP = "warm-up.dbfaults.test"  # ordered by node-0 alone: the fleet's one ACME account


# -- the rig -----------------------------------------------------------------------------------


@pytest.fixture
def fleet_pebble(pebble_factory: Any) -> Any:
    # no nonce rejections: Pebble's log counts orders exactly
    return pebble_factory(nonce_reject_percent=0)


@pytest.fixture
def cluster_rig(tmp_path: Path, fleet_pebble: Any, pg_cluster: PgCluster,
                pg_cluster_dsn: str) -> Iterator[FleetRig]:
    """Three nodes over a fresh database of the throwaway cluster, laid out, not started."""
    rig = FleetRig(tmp_path / "fleet", fleet_pebble, pg_cluster_dsn, names=[WARM_UP])
    try:
        yield rig
    finally:
        rig.stop()
        pg_cluster.start()


# -- 1. the database down at start -------------------------------------------------------------


DOWN_NAMES = [f"d{i}.dbdown.test" for i in range(3)]


@pytest.mark.slow  # about 50 s each: the long set (CI runs it after the README's command)
@pytest.mark.timeout(240)
def test_database_down_at_start_nodes_serve_their_mirror_and_recover(
        cluster_rig: FleetRig, pg_cluster: PgCluster) -> None:
    rig = cluster_rig
    rig.start(controllers=False)
    took = rolling_start(rig, DOWN_NAMES)
    names = rig.names
    before = served(rig.nodes, names)
    orders, issued = new_orders(rig.pebble), rig.orders_issued()
    stop_all(rig.nodes)
    pg_cluster.stop("fast")
    lost = rig.nodes[0]
    forget_dynamic_state(lost)
    assert all(lost.served(n) != before[f"{lost.name} {n}"] for n in names), \
        "node-0's NJet still serves the managed certificates after losing its state"
    checks: dict[str, bool] = {}
    marks = [len(node.log_text()) for node in rig.nodes]
    restarted = time.monotonic()
    for node in rig.nodes:
        node.start()
    for node in rig.nodes:
        wait_answering(node)

    def degraded() -> bool:
        return all(health(n) == ("degraded", False) for n in rig.nodes)

    checks["degraded"] = wait_until(degraded, 30)
    degraded_after = time.monotonic() - restarted
    window = [len(node.log_text()) for node in rig.nodes]
    time.sleep(10)  # a hot loop would log (or retry) many times over these 10 s
    checks["still degraded"] = degraded()
    window_lines = [n.log_text()[m:].count("\n") for n, m in zip(rig.nodes, window, strict=True)]
    checks["mirror served"] = served(rig.nodes, names) == before
    checks["no order"] = (new_orders(rig.pebble), rig.orders_issued()) == (orders, issued)
    said = [n.log_text()[m:].count(UNREACHABLE) for n, m in zip(rig.nodes, marks, strict=True)]
    checks["said once"] = said == [1, 1, 1]

    pg_cluster.start()
    back = time.monotonic()
    checks["recovered"] = wait_until(lambda: all(health(n) == ("ok", True) for n in rig.nodes),
                                     40)
    recovered_after = time.monotonic() - back
    checks["all served after"] = wait_until(rig.all_served, 10)
    hint = ""
    if not checks["all served after"]:  # a diagnosis for the report, not a repair
        for node in rig.nodes:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGHUP)
        hint = f"; all served after a SIGHUP (a probing pass): {wait_until(rig.all_served, 10)}"
    checks["no order after"] = new_orders(rig.pebble) == orders
    print(f"\nrolling start {took:.1f}s; degraded {degraded_after:.1f}s after the start; log "
          f"lines in 10 s per node {window_lines}; '{UNREACHABLE}' x {said}; ok again "
          f"{recovered_after:.1f}s after the database was; orders {orders}; {checks}{hint}")
    verdict(DB_FAMILY, checks, rig)


# -- 2. the database restarted while orders run ------------------------------------------------


RESTART_NAMES = [f"r{i:02d}.dbrestart.test" for i in range(10)]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_database_restarted_while_orders_run_fleet_converges(
        cluster_rig: FleetRig, pg_cluster: PgCluster) -> None:
    rig = cluster_rig
    rig.start(controllers=False)
    rolling_start(rig, [])  # the fleet's ACME account and three live nodes first
    orders, issued = new_orders(rig.pebble), rig.orders_issued()
    names = [WARM_UP, *RESTART_NAMES]
    marks = [len(node.log_text()) for node in rig.nodes]
    restart = Restarter(pg_cluster, rig.pebble, orders)
    with restart:  # restarts the cluster as soon as the first of these orders reaches Pebble
        hand_names(rig, names)
        assert restart.done.wait(30), "no order reached Pebble"
    assert restart.error is None, restart.error
    began = restart.began
    checks = {"converged within 45 s": wait_until(lambda: rig.all_served(names), 45, step=0.2)}
    converged_after = time.monotonic() - began
    extra_orders = new_orders(rig.pebble) - orders - len(RESTART_NAMES)
    extra_issued = rig.orders_issued() - issued - len(RESTART_NAMES)
    checks["orders <= names + 3"] = extra_orders <= 3
    checks["issued <= names + 3"] = extra_issued <= 3
    checks["one certificate per name"] = sorted(db_fingerprints(rig)) == sorted(names)
    texts = [n.log_text()[m:] for n, m in zip(rig.nodes, marks, strict=True)]
    interrupted = sum(t.count("WARNING issue failed") for t in texts)
    fenced = sum(t.count("fenced write refused") for t in texts)
    print(f"\nrestart with {restart.in_flight} orders at Pebble, {restart.issued - issued} "
          f"issued; orders failed by it {interrupted}, fenced writes {fenced}; it "
          f"took {restart.took:.1f}s; "
          f"converged {converged_after:.1f}s after it began; orders: {len(RESTART_NAMES)} "
          f"names + {extra_orders} (certificates issued: + {extra_issued}); {checks}")
    verdict(DB_FAMILY, checks, rig)


# -- 3. a DSN naming what does not exist, or with a wrong password ----------------------------


PW_ROLE = "njcm_pw_role"


@pytest.fixture
def password_role(pg_cluster: PgCluster) -> Iterator[str]:
    """A role of the throwaway cluster that must give a password (scram), on 127.0.0.1; its
    DSN with a wrong one. The cluster's pg_hba.conf is restored afterwards."""
    pg_cluster.start()
    hba = pg_cluster.data_dir / "pg_hba.conf"
    original = hba.read_text()
    admin = pg_cluster.dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(PW_ROLE)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'the-right-one'").format(
            sql.Identifier(PW_ROLE)))
    dsn = conninfo.make_conninfo(admin, user=PW_ROLE, password=PASSWORD)
    try:
        with hba.open("w") as f:  # keeps the file's owner (postgres) and mode
            f.write(f"host all {PW_ROLE} 127.0.0.1/32 scram-sha-256\n{original}")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")

        def refused() -> bool:
            try:
                psycopg.connect(dsn, connect_timeout=3).close()
            except psycopg.OperationalError as exc:
                return "password authentication failed" in str(exc)
            return False

        assert wait_until(refused, 10), "the cluster did not start asking for a password"
        yield dsn
    finally:
        with hba.open("w") as f:
            f.write(original)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(PW_ROLE)))


def test_cli_with_a_wrong_dsn_exits_1_naming_it_without_the_password(
        tmp_path: Path, pebble: Any, password_role: str, pg_cluster: PgCluster) -> None:
    machine = "host=127.0.0.1 port=5432"
    cases = [
        (f"{machine} user=postgres dbname=njcm_no_such_db",
         'database "njcm_no_such_db" does not exist',
         ["dbname=njcm_no_such_db", "host=127.0.0.1", "port=5432", "user=postgres"]),
        (f"{machine} user=njcm_no_such_user password={PASSWORD} dbname=postgres",
         'role "njcm_no_such_user" does not exist',
         ["user=njcm_no_such_user", "dbname=postgres", "port=5432"]),
        (password_role, f'password authentication failed for user "{PW_ROLE}"',
         [f"user={PW_ROLE}", f"port={pg_cluster.port}"]),
    ]
    commands = [("reconcile",), ("diff",), ("diff", "-o", "json")]
    problems: dict[str, list[str]] = {}
    runs: list[CliRun] = []
    for i, (dsn, reason, shown) in enumerate(cases):
        prefix = cli_prefix(tmp_path / f"p{i}", pebble, dsn)
        for command in commands:
            run = run_cli(prefix, dsn, *command)
            runs.append(run)
            wrong = judge(run, reason, shown)
            summary.record(DB_FAMILY, trials=1, converged=int(not wrong))
            if wrong:
                problems[f"{' '.join(command)} over {reason}"] = [
                    *wrong, f"stdout: {run.stdout[-800:]!r}", f"stderr: {run.stderr[-1500:]!r}"]
    print(f"\n{len(runs)} CLI runs, {min(r.seconds for r in runs):.1f}-"
          f"{max(r.seconds for r in runs):.1f}s each; e.g. {runs[-1].stderr.strip()!r}")
    assert not problems, json.dumps(problems, indent=1)


# -- 4. one node cut off from the database ------------------------------------------------------


PART_NAMES = [f"p{i}.partition.test" for i in range(3)]


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", 5432) as p:
        yield p


@pytest.fixture
def partition_rig(tmp_path: Path, fleet_pebble: Any, pg_dsn: str,
                  proxy: TcpProxy) -> Iterator[FleetRig]:
    """Three nodes over a fresh database of the machine's server; node-2 through `proxy`."""
    rig = FleetRig(tmp_path / "fleet", fleet_pebble, pg_dsn, names=[WARM_UP])
    try:
        rig.start(controllers=False)
        rig.nodes[2].toml["store"]["dsn"] = conninfo.make_conninfo(
            pg_dsn, host="127.0.0.1", port=str(proxy.port))
        yield rig
    finally:
        rig.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_partitioned_node_keeps_serving_and_catches_up(partition_rig: FleetRig,
                                                        proxy: TcpProxy) -> None:
    rig = partition_rig
    took = rolling_start(rig, PART_NAMES)
    cut, renewer, other = rig.nodes[2], rig.nodes[1], rig.nodes[0]
    before = served(rig.nodes, PART_NAMES)
    orders = new_orders(rig.pebble)
    checks: dict[str, bool] = {}
    with HealthWatch(cut) as watch:
        in_rotation(rig, cut, False)  # its challenge servers cannot answer: out of rotation
        proxy.blackhole()
        cut_at = time.monotonic()
        checks["reports the database down"] = wait_until(
            lambda: health(cut) == ("degraded", False), 35)
        detected = time.monotonic() - cut_at
        checks["others unaffected"] = all(health(n) == ("ok", True) for n in (other, renewer))
        checks["cut node keeps serving"] = served([cut], PART_NAMES) == {
            k: v for k, v in before.items() if k.startswith(f"{cut.name} ")}
        name = PART_NAMES[0]
        old = db_fingerprints(rig)[name]
        admin_post(renewer, f"/api/v1/cert/{name}/renew?force=true")
        renew_at = time.monotonic()
        checks["renewed"] = wait_until(
            lambda: db_fingerprints(rig).get(name) not in (None, old), 60)
        checks["live nodes serve it"] = wait_until(
            lambda: serves_db(rig, [other, renewer], [name]), 30)
        renewed = time.monotonic() - renew_at
        checks["cut node still serves the old one"] = cut.served(name) == old
        proxy.heal()
        in_rotation(rig, cut, True)
        healed_at = time.monotonic()
        checks["caught up"] = wait_until(lambda: serves_db(rig, [cut], PART_NAMES), 35)
        caught_up = time.monotonic() - healed_at
        checks["ok again"] = wait_until(lambda: health(cut) == ("ok", True), 30)
    checks["admin API answered"] = watch.misses == 0 and max(watch.latencies, default=99.0) < 2.0
    checks["one order for the renewal"] = new_orders(rig.pebble) == orders + 1
    print(f"\nrolling start {took:.1f}s; partition seen {detected:.1f}s after it began; "
          f"renewal served by the live nodes {renewed:.1f}s after it was asked; node-2 "
          f"caught up {caught_up:.1f}s after the heal; /healthz of the cut node: "
          f"{len(watch.latencies)} answers, max {max(watch.latencies, default=99.0):.2f}s, "
          f"{watch.misses} misses; orders +{new_orders(rig.pebble) - orders}; {checks}")
    verdict(PARTITION_FAMILY, checks, rig)
