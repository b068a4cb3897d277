"""Fault injection, NJet misbehaves: the simulator's switches against the controller, repeated and
summarised (tests/e2e/test_njet_faults.py has the single cases).

Cases (mostly a forced renewal of a.test meeting the fault; then the fault is lifted and the
controller must converge): the control API down; the API slower than `[controller] probeTimeout`
(every call, seen by a converged name; or only while the PUT is in flight — the simulator drops a
PUT whose client gave up); code 4 on PUT /api/v1/ssl; a PUT that succeeds but is not served,
once (the in-call retry gets past it) or until lifted. While the fault lasts the controller
reports a clear error (and a backoff where an action failed), the store keeps every .crt with
its key, and NJet serves only the bootstrap or a certificate Pebble issued (and, for "never
served", still the previous one). Afterwards NJet serves the stored pair. No private key ever
reaches the controller's log.

The broker case runs the controller as a real `run` process: the simulator's Mosquitto goes down
and comes back, /healthz must report the MQTT link down and then up again, and a runtime server
added afterwards (announced only by an MQTT event; the resync timer is 1 h) is issued and served.

In-process runs use an injected clock for "after the backoff". The default run (`[sample]`)
meets each fault once and cycles the broker once; `-m slow` (`[full]`) repeats them (REPEAT, two
broker cycles). Counts scale with NJCM_FAULT_SCALE; everything adds up to one summary line
(njet-faults).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from controller.app import App
from controller.certinfo import fingerprint_pem
from controller.logs import reset_logging, setup_logging
from controller.reconcile import PassResult
from tests.e2e.harness import render_toml
from tests.faults import summary
from tests.faults.depth import DEPTHS, pick
from tests.faults.helpers import (
    CONFIG,
    block,
    boot_pairs,
    clocked_app,
    issued_by,
    leaked_private_key,
    managed_blocks,
    pebble_intermediate,
    public_key_of_cert,
    public_key_of_key,
    served_leaf,
    start_sim,
    stop_sim,
    store_problems,
)
from tests.fixtures.njetsim import NjetSim
from tests.fixtures.pebble import free_tcp_port

pytestmark = pytest.mark.pebble

FAMILY = "njet-faults"
NAME, DOMAIN = "a", "a.test"
TIMEOUT = 1.0  # [controller] probeTimeout: also the NJet API client's per-request timeout
WAIT = 30.0  # upper bound for polls of real state


@dataclass
class Rig:
    sim: NjetSim
    pebble: Any
    prefix: Path
    bootstrap_fp: str
    intermediate: x509.Certificate
    offset: timedelta = timedelta(0)
    apps: list[App] = field(default_factory=list)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def app(self) -> App:
        return clocked_app(self.prefix, self.now, self.apps)

    def after_backoff(self) -> None:
        st = self.app().status_files.load(DOMAIN)
        if st is not None and st.backoff_until is not None and st.backoff_until > self.now():
            self.offset += st.backoff_until - self.now() + timedelta(seconds=1)

    @property
    def https_port(self) -> int:
        return self.sim.ports["https"]

    def stored(self, domain: str = DOMAIN) -> tuple[bytes, bytes] | None:
        certs = self.prefix / ".lego" / "certificates"
        crt, key = certs / f"{domain}.crt", certs / f"{domain}.key"
        if not crt.exists() or not key.exists():
            return None
        return crt.read_bytes(), key.read_bytes()

    def stored_fp(self, domain: str = DOMAIN) -> str | None:
        pair = self.stored(domain)
        return fingerprint_pem(pair[0]) if pair else None

    def served_problems(self, sni: str = DOMAIN) -> list[str]:
        """NJet serves the bootstrap or a certificate Pebble issued (never anything else)."""
        der = served_leaf(self.https_port, sni)
        if der is None:
            return [f"no certificate served for {sni}"]
        from controller.certinfo import fingerprint_der

        if fingerprint_der(der) != self.bootstrap_fp and not issued_by(der, self.intermediate):
            return [f"NJet serves a certificate for {sni} that nobody issued"]
        return []

    def serves_stored(self, domain: str = DOMAIN) -> bool:
        """The served leaf belongs to the stored key (and is the stored certificate)."""
        pair = self.stored(domain)
        der = served_leaf(self.https_port, domain)
        if pair is None or der is None:
            return False
        return (public_key_of_cert(der) == public_key_of_key(pair[1])
                and public_key_of_cert(der) == public_key_of_cert(pair[0]))

    async def close(self) -> None:
        for app in self.apps:
            await app.close()
        self.apps.clear()


def controller_toml(pebble: Any, sim: NjetSim, **controller: Any) -> str:
    return render_toml({
        "acme": {
            "email": "njet-faults@example.test",
            "challengeType": "http",
            "acmeCaDir": pebble.directory_url,
            "caBundle": str(pebble.ca_bundle),
            "httpChallengeServerAddress": f"127.0.0.1:{pebble.http_port}",
            "tlsChallengeServerAddress": f"127.0.0.1:{pebble.tls_port}",
            "keyType": "ec256",
        },
        "njet": {"apiAddress": sim.api_url},
        "mqtt": {"mqttServerAddress": f"unix:{sim.broker_socket}"},
        "controller": {"probeTimeout": f"{TIMEOUT:g}s", **controller},
        "log": {"v": 1},
    })


def controller_prefix(root: Path, pebble: Any, sim: NjetSim, **controller: Any) -> Path:
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "conf" / "njet.conf").write_text("http {\n" + block(NAME, sim.ports["https"]) + "}\n")
    (root / CONFIG).write_text(controller_toml(pebble, sim, **controller))
    return root


@pytest.fixture(scope="module")
def world(pebble: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NjetSim, str]]:
    files, boot = boot_pairs((NAME,))
    sim = start_sim(tmp_path_factory.mktemp("njet-faults-sim"), managed_blocks((NAME,)), files)
    try:
        yield sim, boot[NAME]
    finally:
        stop_sim(sim)


@pytest.fixture
def rig(world: tuple[NjetSim, str], pebble: Any, tmp_path: Path) -> Iterator[Rig]:
    sim, boot_fp = world
    sim.reset_faults()
    prefix = controller_prefix(tmp_path / "njet", pebble, sim)
    yield Rig(sim, pebble, prefix, boot_fp, pebble_intermediate(pebble))
    sim.reset_faults()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    setup_logging(verbosity=1, stream=buf)
    yield buf
    reset_logging()


def texts_of(app: App, result: PassResult) -> str:
    """Everything the pass told the operator: notes, waits, failed outcomes, the status."""
    parts = list(result.plan.notes) + [w.message for w in result.plan.waiting]
    parts += [o.error or "" for o in result.outcomes]
    st = app.reconciler.statuses.get(DOMAIN)
    if st is not None and st.last_failure:
        parts.append(st.last_failure)
    return "\n".join(parts)


def served_fp_now(rig: Rig) -> str | None:
    from controller.certinfo import fingerprint_der

    der = served_leaf(rig.https_port, DOMAIN)
    return fingerprint_der(der) if der else None


# --- the cases --------------------------------------------------------------------------------


@dataclass
class Case:
    """`inject(rig, app)` switches the fault on (before the pass); `expect` must appear in what
    the controller reports; `backoff`: the failed action leaves a backoff in status."""

    name: str
    inject: Callable[[Rig, App], Awaitable[None]]
    expect: tuple[str, ...]
    backoff: bool
    in_sync: bool = False  # the controller's in-call retries get past it (no failure at all)
    renew: bool = True  # force a renewal first (else: a converged name meets the fault)


async def api_down(rig: Rig, app: App) -> None:
    rig.sim.set_fault(api="down")


async def slow_everything(rig: Rig, app: App) -> None:
    rig.sim.set_fault(slow=TIMEOUT * 1.6)


async def code_4(rig: Rig, app: App) -> None:
    rig.sim.set_fault(put_ssl_reply={"code": 4, "msg": " dyn ssl update fail", "count": 1})


async def not_served_once(rig: Rig, app: App) -> None:
    rig.sim.set_fault(not_served=1)


async def never_served(rig: Rig, app: App) -> None:
    rig.sim.set_fault(not_served=-1)


async def slow_put(rig: Rig, app: App) -> None:
    """NJet answers the observation in time, then turns slow: every PUT outlives the timeout."""
    gatherer = app.reconciler.gatherer
    original = gatherer.observe
    armed = [True]

    async def observe_then_slow(*args: Any, **kwargs: Any) -> Any:
        if not armed[0]:
            rig.sim.reset_faults()  # the next pass finds NJet quick again
        observed = await original(*args, **kwargs)
        if armed[0]:
            armed[0] = False
            rig.sim.set_fault(slow=TIMEOUT * 1.6)
        return observed

    gatherer.observe = observe_then_slow  # type: ignore[method-assign]


CASES = (
    Case("api-down", api_down, ("cannot connect",), backoff=False),
    Case("code-4-on-put", code_4, ("dyn ssl update fail",), backoff=True),
    Case("not-served-once", not_served_once, (), backoff=False, in_sync=True),
    Case("never-served", never_served, ("accepted it but serves",), backoff=True),
    Case("slow-put", slow_put, (f"no answer within {TIMEOUT:g} s",), backoff=True),
    Case("slow-api", slow_everything, (f"no answer within {TIMEOUT:g} s",), backoff=False,
         renew=False),
)
REPEAT = {"api-down": 3, "code-4-on-put": 3, "not-served-once": 1, "never-served": 1,
          "slow-put": 1, "slow-api": 1}


async def settle(rig: Rig) -> list[str]:
    """Converge with every fault off (after any backoff); [] when NJet serves the stored pair."""
    rig.sim.reset_faults()
    for _ in range(3):
        rig.after_backoff()
        result = await rig.app().reconciler.converge()
        if result.plan.in_sync and rig.serves_stored():
            return []
    return [f"no convergence with every fault off: {result.plan}"]


async def trial(rig: Rig, case: Case) -> tuple[list[str], bool, bool]:
    """One renewal under `case`; (problems, pair lost, NJet serves another pair afterwards)."""
    problems = await settle(rig)
    before = rig.stored_fp()
    app = rig.app()
    if case.renew:
        current = app.reconciler.statuses[DOMAIN]
        app.reconciler.update_status(replace(current, force_renew=True))
    await case.inject(rig, app)
    try:
        result = await app.reconciler.converge()
    finally:
        rig.sim.reset_faults()
    said = texts_of(app, result)
    if result.plan.in_sync != case.in_sync:
        problems.append("reported in sync while NJet was failing" if result.plan.in_sync
                        else f"not converged although in-call retries should do: {said!r}")
    elif case.in_sync and not rig.serves_stored():
        problems.append("converged but NJet does not serve the stored pair")
    if case.name == "never-served" and rig.stored_fp() != before and served_fp_now(rig) != before:
        problems.append("NJet serves the new certificate although the switch said not to")
    missing = [e for e in case.expect if e not in said]
    if missing:
        problems.append(f"no clear error (wanted {missing!r}); it said: {said[-500:]!r}")
    st = app.reconciler.statuses[DOMAIN]
    if case.backoff and (st.backoff_until is None or st.backoff_until <= rig.now()):
        problems.append(f"a failed action left no backoff: {st}")
    problems += [f"during the fault: {p}" for p in store_problems(rig.prefix)]
    problems += [f"during the fault: {p}" for p in rig.served_problems()]
    lost = rig.stored() is None and before is not None
    # a PUT the controller gave up on is dropped by the simulator (it never reads the body of
    # a request whose client left), so none can land late and overtake the next certificate;
    # if one ever did, the next trial's served-vs-stored check would report it
    healed = await settle(rig)
    problems += [f"after the fault: {p}" for p in healed]
    problems += [f"after the fault: {p}" for p in store_problems(rig.prefix)]
    status = app.status_files.load(DOMAIN)
    if status is not None and status.applied_fingerprint not in (None, rig.stored_fp()):
        problems.append("status claims another certificate is served than the stored one")
    return problems, lost, not rig.serves_stored()


@pytest.mark.parametrize("depth", DEPTHS)
async def test_njet_faults_each_report_clearly_and_converge_once_lifted(
    rig: Rig, logs: io.StringIO, depth: str
) -> None:
    failures: list[str] = []
    trials = converged = lost = mismatched = 0
    try:
        assert not await settle(rig), "the first issuance did not converge"
        for case in CASES:
            started = time.monotonic()
            repeat = summary.scaled(pick(depth, sample=1, full=REPEAT[case.name]))
            for _ in range(repeat):
                trials += 1
                problems, was_lost, was_mismatched = await trial(rig, case)
                lost += was_lost
                mismatched += was_mismatched
                if problems:
                    failures.append(f"[{case.name}] " + "; ".join(problems))
                else:
                    converged += 1
            print(f"\n{case.name}: {repeat} trials in "
                  f"{time.monotonic() - started:.1f}s", end="")
    finally:
        await rig.close()
    summary.record(FAMILY, trials=trials, converged=converged, lost=lost, mismatched=mismatched)
    assert not leaked_private_key(logs.getvalue()), "key material in the controller's log"
    assert not failures, "\n".join(failures)


# --- the broker goes away and comes back (real `run` process) ---------------------------------


class RunningController:
    def __init__(self, prefix: Path, admin_port: int) -> None:
        self.prefix = prefix
        self.admin_port = admin_port
        self.log = prefix / "logs" / "controller.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NJCM_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.cli", "-p", str(self.prefix), "-c", CONFIG,
                 "run"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/")

    def health(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.admin_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return None

    def wait(self, pred: Callable[[dict[str, Any]], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            h = self.health()
            if h is not None and pred(h):
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"controller: {what} not reached; health {self.health()}; log:\n"
                             + self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def poll(pred: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def issued_and_served(rig: Rig, domain: str) -> bool:
    return rig.stored_fp(domain) is not None and rig.serves_stored(domain)


def settled_store_problems(prefix: Path, timeout: float = 5.0) -> list[str]:
    """store_problems of a store a running controller writes to: [] once one look is clean
    (a look in the middle of an atomic write sees its temp file)."""
    deadline = time.monotonic() + timeout
    while True:
        problems = store_problems(prefix)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.05)


@pytest.mark.parametrize("depth", DEPTHS)
def test_broker_down_and_back_the_listener_reconnects_and_acts_on_the_next_event(
    world: tuple[NjetSim, str], pebble: Any, tmp_path: Path, depth: str
) -> None:
    sim, boot_fp = world
    sim.reset_faults()
    admin_port = free_tcp_port()
    prefix = controller_prefix(tmp_path / "njet", pebble, sim, interval="1h",
                               deleteGracePeriod="0s")
    with (prefix / CONFIG).open("a") as f:
        f.write(f'\n[admin]\naddress = "127.0.0.1:{admin_port}"\n')
    rig = Rig(sim, pebble, prefix, boot_fp, pebble_intermediate(pebble))
    ctl = RunningController(prefix, admin_port)
    cycles = summary.scaled(pick(depth, sample=1, full=2))
    converged = 0
    failures: list[str] = []
    ctl.start()
    try:
        ctl.wait(lambda h: h.get("mqtt_connected") is True and h.get("in_sync") is True,
                 "started, connected and in sync")
        assert rig.serves_stored()
        https = f"127.0.0.1:{sim.ports['https']}"
        crt = sim.prefix / "conf" / "certs" / f"boot-{NAME}.crt"
        key = sim.prefix / "conf" / "certs" / f"boot-{NAME}.key"
        for i in range(cycles):
            sim.set_fault(broker="down")
            ctl.wait(lambda h: h.get("mqtt_connected") is False, "MQTT link reported down")
            sim.set_fault(broker="up")
            ctl.wait(lambda h: h.get("mqtt_connected") is True, "MQTT link reported up again")
            name = f"dyn{i}-{depth}-{os.getpid()}.test"
            add = sim.api("POST", "/api/v1/dyn_srv", {
                "type": "add", "addr_port": https, "listen_option": "ssl", "server_name": name,
                "server_body": f"ssl_certificate {crt}; ssl_certificate_key {key}; "
                               "ssl_certificate_management acme;"})
            assert add.json["code"] == 0, add.json
            if poll(partial(issued_and_served, rig, name)):
                problems = settled_store_problems(prefix) + rig.served_problems(name)
                if not problems:
                    converged += 1
                    continue
            else:
                problems = [f"{name}, announced after the reconnect, was not issued and served"]
            failures.append(f"[broker cycle {i}] " + "; ".join(problems))
    finally:
        code = ctl.stop()
    log = ctl.log.read_text(errors="replace")
    summary.record(FAMILY, trials=cycles, converged=converged)
    assert code == 0, log[-3000:]
    assert not store_problems(prefix), store_problems(prefix)
    assert not leaked_private_key(log), "key material in the controller's log"
    assert "Traceback" not in log
    assert not failures, "\n".join(failures) + "\n" + log[-3000:]
