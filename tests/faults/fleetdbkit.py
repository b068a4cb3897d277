"""Pieces of the fleet database fault tests (tests/faults/test_fleet_db_faults.py) over a
FleetRig (tests/support/fleet.py): a balancer rotation without health checks and a rolling
start, /healthz read also when it answers 503, stopping every controller at once, an NJet that
loses its dynamic state, a thread that restarts the database once orders reach Pebble, a
thread that times /healthz, and the one-shot CLI run over a prefix whose DSN is wrong (and the
judgement of its output).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.e2e.harness import Prefix
from tests.faults import summary
from tests.support.fleet import FleetNode, FleetRig
from tests.support.pgcluster import PgCluster
from tests.support.procs import clean_env, controller_program, tail, wait_until
from tests.support.tomlgen import acme_section

_NEW_ORDER = re.compile(r"POST /order-plz ")
_ISSUED = re.compile(r"Issued certificate serial ([0-9a-f]+)", re.I)
FRONTENDS = {"http01": "httpChallengeServerAddress", "tlsalpn01": "tlsChallengeServerAddress"}
PASSWORD = "sekrit"  # the wrong password of the CLI cases: it must never be printed


# -- the rig --------------------------------------------------------------------------------------


def new_orders(pebble: Any) -> int:
    """newOrder requests Pebble received so far (its own log)."""
    return len(_NEW_ORDER.findall(Path(pebble.log_path).read_text(errors="replace")))


def balancer(rig: FleetRig, line: str) -> None:
    assert rig.haproxy is not None
    answer = rig.haproxy.command(line).strip()
    assert not answer, f"haproxy {line!r}: {answer}"


def in_rotation(rig: FleetRig, node: FleetNode, on: bool) -> None:
    """Put the node's challenge servers in (or take them out of) the balancer's rotation."""
    for frontend, key in FRONTENDS.items():
        server = f"{frontend}/{node.toml['acme'][key]}"
        balancer(rig, f"{'enable' if on else 'disable'} server {server}")


def fixed_rotation(rig: FleetRig) -> None:
    """Every server counts as up (no health check); in_rotation() decides who gets traffic."""
    for node in rig.nodes:
        for frontend, key in FRONTENDS.items():
            server = f"{frontend}/{node.toml['acme'][key]}"
            balancer(rig, f"disable health {server}")
            balancer(rig, f"set server {server} health up")


def db_fingerprints(rig: FleetRig) -> dict[str, str]:
    try:
        return rig.db_fingerprints()
    except psycopg.Error:  # not migrated yet, or the database is away
        return {}


def serves_db(rig: FleetRig, nodes: list[FleetNode], names: list[str]) -> bool:
    want = db_fingerprints(rig)
    return all(name in want and node.served(name) == want[name]
               for node in nodes for name in names)


def served(nodes: list[FleetNode], names: list[str]) -> dict[str, str | None]:
    return {f"{node.name} {name}": node.served(name) for node in nodes for name in names}


def healthz(node: FleetNode, timeout: float = 2.0) -> dict[str, Any] | None:
    """The node's /healthz document, also when it answers 503 (any status but "ok")."""
    url = f"http://127.0.0.1:{node.admin_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as exc:
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def wait_answering(node: FleetNode, timeout: float = 30) -> None:
    """Until the node's admin API answers /healthz, whatever its status (FleetNode.wait_up
    takes a 503, i.e. "degraded", for no answer)."""
    if not wait_until(lambda: healthz(node) is not None or node.exited(), timeout):
        raise AssertionError(f"{node.name}: no /healthz after {timeout}s\n{tail(node.log)}")
    if node.exited():
        raise AssertionError(f"{node.name} exited\n{tail(node.log)}")


def health(node: FleetNode) -> tuple[str | None, bool | None]:
    """(status, fleet.database_up) of the node's /healthz; (None, None) without an answer."""
    doc = healthz(node)
    if doc is None:
        return None, None
    return doc.get("status"), doc.get("fleet", {}).get("database_up")


def rolling_start(rig: FleetRig, names: list[str]) -> float:
    """Start the laid-out rig (njet.conf: one warm-up name): node-0 alone until it serves it
    (one order, one ACME account registration), then the others; then every node gets
    `names` too (hand_names). Seconds until every node serves every name."""
    started = time.monotonic()
    fixed_rotation(rig)
    first, rest = rig.nodes[0], rig.nodes[1:]
    for node in rest:
        in_rotation(rig, node, False)
    first.start()
    wait_answering(first)
    if not wait_until(lambda: serves_db(rig, [first], rig.names), 60, step=0.2):
        raise AssertionError(f"node-0 alone did not converge\n{rig.explain()}")
    for node in rest:
        in_rotation(rig, node, True)
        node.start()
    for node in rest:
        wait_answering(node)
    rig.wait_all_served(timeout=60)
    if names:
        hand_names(rig, [*rig.names, *names])
        rig.wait_all_served(timeout=60)
    return time.monotonic() - started


def hand_names(rig: FleetRig, names: list[str]) -> None:
    """Every node's njet.conf manages `names` now: written, NJet reloaded, the controller woken
    (SIGHUP: a probing pass, in case NJet's event was missed)."""
    for node in rig.nodes:
        node.write_conf(names)
        node.sim.reload()
    rig.names = list(names)
    for node in rig.nodes:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)


def admin_post(node: FleetNode, path: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{node.admin_port}{path}", data=b"",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return dict(json.loads(r.read()))


def logs(rig: FleetRig) -> str:
    return "\n".join(f"--- {n.name}: {health(n)}\n{tail(n.log, 2500)}" for n in rig.nodes)


def verdict(family: str, checks: dict[str, bool], rig: FleetRig) -> None:
    """Record the trial, then fail naming every check that did not hold."""
    mismatched = rig.mismatched_pairs()
    summary.record(family, trials=1, converged=int(all(checks.values()) and not mismatched),
                   mismatched=int(bool(mismatched)))
    failed = [name for name, ok in checks.items() if not ok]
    assert not failed and not mismatched, f"failed: {failed}, mismatched: {mismatched}\n" + \
        logs(rig)


def stop_all(nodes: list[FleetNode]) -> None:
    """SIGTERM every controller at once, then wait for each."""
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        node.stop()


def forget_dynamic_state(node: FleetNode) -> None:
    """Restart the node's NJet without its retained records: it serves the bootstrap
    certificate from njet.conf until a controller applies the managed one again."""
    node.sim.quit()
    (node.root / "data" / "mosquitto.db").unlink(missing_ok=True)
    node.sim.start()


# -- threads --------------------------------------------------------------------------------------


class Restarter:
    """From a thread: restart the cluster once Pebble got more than `orders` new orders."""

    def __init__(self, cluster: PgCluster, pebble: Any, orders: int) -> None:
        self.cluster, self.pebble, self.orders = cluster, pebble, orders
        self.done = threading.Event()
        self.error: str | None = None
        self.began = self.took = 0.0
        self.in_flight = self.issued = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            if not wait_until(lambda: new_orders(self.pebble) > self.orders, 30, step=0.02):
                return
            self.in_flight = new_orders(self.pebble) - self.orders
            self.issued = len(_ISSUED.findall(Path(self.pebble.log_path).read_text(
                errors="replace")))
            self.began = time.monotonic()
            self.cluster.restart("fast")
            self.took = time.monotonic() - self.began
        except Exception as exc:  # reported by the test
            self.error = repr(exc)
        finally:
            self.done.set()

    def __enter__(self) -> Restarter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(60)


class HealthWatch:
    """Polls one node's /healthz from a thread: every answer's latency, the misses."""

    def __init__(self, node: FleetNode) -> None:
        self.node = node
        self.latencies: list[float] = []
        self.misses = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            answer = healthz(self.node)  # 2 s timeout
            if answer is None:
                self.misses += 1
            else:
                self.latencies.append(time.monotonic() - started)
            self._stop.wait(0.25)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# -- the one-shot CLI over a wrong DSN -------------------------------------------------------------


@dataclass
class CliRun:
    dsn: str
    command: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    files: list[str] = field(default_factory=list)  # files under the prefix naming the password


def cli_prefix(root: Path, pebble: Any, dsn: str) -> Prefix:
    prefix = Prefix(root)
    prefix.write_conf("http {\n    server {\n        listen 127.0.0.1:8443 ssl;\n"
                      "        server_name a.dsnfault.test;\n"
                      "        ssl_certificate_management acme;\n    }\n}\n")
    key = root / "fleet.key"
    key.write_bytes(bytes(range(32)))
    key.chmod(0o600)
    prefix.write_toml({
        "acme": acme_section(pebble, email="dsn@example.test", keyType="ec256"),
        "njet": {"apiAddress": ""},
        "log": {"v": 1},
        "store": {"backend": "postgres", "dsn": dsn, "nodeName": "cli",
                  "encryptionKeyFile": str(key)},
    })
    return prefix


def run_cli(prefix: Prefix, dsn: str, *command: str) -> CliRun:
    started = time.monotonic()
    done = subprocess.run([controller_program(), "-p", str(prefix.root), "-c",
                           "conf/cert-manager.toml", *command], capture_output=True, text=True,
                          timeout=60, cwd="/", env=clean_env())
    leaked = [str(p) for p in prefix.root.rglob("*")
              if p.is_file() and PASSWORD.encode() in p.read_bytes() and p != prefix.toml]
    return CliRun(dsn, command, done.returncode, done.stdout, done.stderr,
                  time.monotonic() - started, leaked)


def judge(run: CliRun, reason: str, shown: list[str]) -> list[str]:
    """What is wrong with one run (empty: right): exit 1, stderr exactly one line `error:
    database <DSN without its password>: ... <reason>`, the password nowhere."""
    problems = []
    if run.returncode != 1:
        problems.append(f"exit {run.returncode}, not 1")
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    if len(lines) != 1:
        problems.append(f"stderr has {len(lines)} lines, not one")
    line = lines[-1] if lines else ""
    if not line.startswith("error: database "):
        problems.append("the last stderr line is not `error: database ...`")
    missing = [part for part in shown if part not in line]
    if missing:
        problems.append(f"the error line does not name {missing}")
    if reason not in line:
        problems.append(f"the error line does not say {reason!r}")
    if "Traceback" in run.stderr + run.stdout:
        problems.append("a traceback")
    if PASSWORD in run.stdout + run.stderr or "password=" in line:
        problems.append("the password is shown")
    if run.files:
        problems.append(f"the password is in {run.files}")
    if run.seconds > 20:
        problems.append(f"took {run.seconds:.1f}s")
    return problems
