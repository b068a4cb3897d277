"""Step 3 end to end: the controller as a long-running process, woken by NJet's MQTT events.

The periodic interval is 1 h in these tests, so every convergence seen here was triggered by an
event (or start-up), never by the timer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from controller.certinfo import fingerprint_pem
from tests.e2e.harness import Prefix
from tests.e2e.njet_harness import (
    boot_files,
    controller_toml,
    served_fingerprint,
    sim_conf,
    wait_until,
)
from tests.fixtures.pebble import free_tcp_port

pytestmark = pytest.mark.pebble


class Controller:
    def __init__(self, prefix: Prefix, admin_port: int) -> None:
        self.prefix = prefix
        self.admin_port = admin_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = prefix.root / "logs" / "controller.log"

    def start(self) -> Controller:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("NJCM_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller.cli",
                "-p",
                str(self.prefix.root),
                "-c",
                "conf/cert-manager.toml",
                "run",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        assert wait_until(lambda: self.health() is not None, 20), self.log.read_text()
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}/healthz", timeout=2
            ) as r:
                return dict(json.loads(r.read()))
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc is None or self.proc.returncode in (0, -9), self.log.read_text()


@pytest.fixture
def setup(pebble: Any, njetsim_factory: Any) -> Iterator[tuple[Any, Prefix, Controller]]:
    sim = njetsim_factory(sim_conf(), files=boot_files())
    prefix = Prefix(sim.prefix)
    admin_port = free_tcp_port()
    toml = controller_toml(pebble, sim)
    toml["controller"].update(interval="1h", deleteGracePeriod="0s")
    toml["admin"] = {"address": f"127.0.0.1:{admin_port}"}
    prefix.write_toml(toml)
    ctl = Controller(prefix, admin_port)
    yield sim, prefix, ctl
    ctl.stop()
    assert "Traceback" not in ctl.log.read_text()
    assert "PRIVATE KEY" not in ctl.log.read_text()


def stored(prefix: Prefix, name: str) -> str | None:
    p = prefix.certs / f"{name}.crt"
    return fingerprint_pem(p.read_bytes()) if p.exists() else None


def test_a_server_name_change_and_reload_is_served_without_a_timer(setup: Any) -> None:
    sim, prefix, ctl = setup
    ctl.start()
    assert wait_until(
        lambda: (
            stored(prefix, "a.test") is not None
            and served_fingerprint(sim) == stored(prefix, "a.test")
        ),
        30,
    )
    conf = sim.prefix / "conf" / "njet.conf"
    conf.write_text(conf.read_text().replace("a.test www.a.test;", "a2.test www.a.test;", 1))
    reloaded = time.monotonic()
    sim.reload()
    assert wait_until(
        lambda: (
            stored(prefix, "a2.test") is not None
            and served_fingerprint(sim, sni="a2.test") == stored(prefix, "a2.test")
        ),
        30,
    )
    took = time.monotonic() - reloaded
    print(f"served {took:.2f}s after the reload (event delay {sim.event_delay}s)")
    health = ctl.health()
    assert health is not None and health["reconciles"] >= 2


def test_a_runtime_server_add_and_delete_each_converge(setup: Any) -> None:
    sim, prefix, ctl = setup
    ctl.start()
    assert wait_until(lambda: served_fingerprint(sim) == stored(prefix, "a.test"), 30)
    crt = sim.prefix / "conf" / "certs" / "boot-a.crt"
    key = sim.prefix / "conf" / "certs" / "boot-a.key"
    https = f"127.0.0.1:{sim.ports['https']}"
    add = sim.api(
        "POST",
        "/api/v1/dyn_srv",
        {
            "type": "add",
            "addr_port": https,
            "listen_option": "ssl",
            "server_name": "dyn.test",
            "server_body": f"ssl_certificate {crt}; ssl_certificate_key {key}; "
            'ssl_certificate_management acme; return 200 "dyn";',
        },
    )
    assert add.json["code"] == 0
    assert wait_until(
        lambda: (
            stored(prefix, "dyn.test") is not None
            and served_fingerprint(sim, sni="dyn.test") == stored(prefix, "dyn.test")
        ),
        30,
    ), ctl.log.read_text()[-3000:]
    runtime = json.loads((prefix.root / ".lego" / "runtime" / "servers.json").read_text())
    assert "dyn.test" in json.dumps(runtime)

    gone = sim.api(
        "PUT", "/api/v1/dyn_srv", {"type": "del", "addr_port": https, "server_name": "dyn.test"}
    )
    assert gone.json["code"] == 0
    assert wait_until(lambda: stored(prefix, "dyn.test") is None, 30), ctl.log.read_text()[-3000:]
    assert stored(prefix, "a.test") is not None


def test_a_controller_that_was_down_during_an_event_converges_from_retained_records(
    setup: Any,
) -> None:
    sim, prefix, ctl = setup
    https = f"127.0.0.1:{sim.ports['https']}"
    crt = sim.prefix / "conf" / "certs" / "boot-a.crt"
    key = sim.prefix / "conf" / "certs" / "boot-a.key"
    add = sim.api(
        "POST",
        "/api/v1/dyn_srv",
        {
            "type": "add",
            "addr_port": https,
            "listen_option": "ssl",
            "server_name": "late.test",
            "server_body": f"ssl_certificate {crt}; ssl_certificate_key {key}; "
            "ssl_certificate_management acme;",
        },
    )
    assert add.json["code"] == 0  # its event went nowhere: nobody was subscribed
    ctl.start()
    assert wait_until(
        lambda: (
            served_fingerprint(sim, sni="late.test") == stored(prefix, "late.test")
            and stored(prefix, "late.test") is not None
        ),
        30,
    ), ctl.log.read_text()[-3000:]


def test_a_burst_of_1000_events_leads_to_one_or_two_reconciles(setup: Any) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    sim, prefix, ctl = setup
    ctl.start()
    assert wait_until(lambda: served_fingerprint(sim) == stored(prefix, "a.test"), 30)
    assert wait_until(lambda: (ctl.health() or {}).get("mqtt_connected") is True, 10)
    time.sleep(0.5)
    before = ctl.health()["reconciles"]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, transport="unix")
    client.connect(str(sim.broker_socket))
    client.loop_start()
    event = json.dumps(
        {
            "action": "generateCertificate",
            "domains": [
                {
                    "server_name": ["a.test", "www.a.test"],
                    "server_addr": [f"127.0.0.1:{sim.ports['https']}"],
                    "ca_type": "acme",
                }
            ],
        }
    )
    infos = [
        client.publish("/automaticcertificatemanagement/event/request", event, qos=0)
        for _ in range(1000)
    ]
    for info in infos:
        info.wait_for_publish(5)
    client.loop_stop()
    client.disconnect()
    time.sleep(2.0)
    after = ctl.health()
    assert after is not None
    ran = after["reconciles"] - before
    assert 1 <= ran <= 2, f"{ran} reconciles for 1000 events"
    assert after["in_sync"] is True


def admin(ctl: Controller, method: str, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{ctl.admin_port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    ctype = "json"
    try:
        return status, json.loads(body)
    except ValueError:
        ctype = "text"
    return status, body.decode() if ctype == "text" else body


def test_the_admin_api_and_metrics_of_a_running_controller(setup: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    sim, prefix, ctl = setup
    ctl.start()
    assert wait_until(lambda: served_fingerprint(sim) == stored(prefix, "a.test"), 30)
    first = stored(prefix, "a.test")

    status, certs = admin(ctl, "GET", "/api/v1/cert")
    assert status == 200
    assert "PRIVATE KEY" not in json.dumps(certs)
    status, one = admin(ctl, "GET", "/api/v1//cert/a.test")  # NJet's docs print "//"
    assert status == 200 and json.dumps(one).count("www.a.test") >= 1

    status, _ = admin(ctl, "POST", "/api/v1/cert/a.test/renew?force=true")  # a fresh cert
    assert status == 202
    assert wait_until(lambda: stored(prefix, "a.test") not in (None, first)
                      and served_fingerprint(sim) == stored(prefix, "a.test"), 30)
    renewed = stored(prefix, "a.test")

    status, answer = admin(ctl, "DELETE", "/api/v1/cert/a.test")
    assert status == 200 and "desired" in json.dumps(answer)
    assert wait_until(lambda: stored(prefix, "a.test") not in (None, renewed)
                      and served_fingerprint(sim) == stored(prefix, "a.test"), 30)

    status, plan = admin(ctl, "GET", "/api/v1/plan")
    assert status == 200 and plan["in_sync"] is True
    assert admin(ctl, "GET", "/api/v1/cert/..%2f..%2fetc")[0] == 400
    assert admin(ctl, "GET", "/api/v1/cert/nope.test")[0] == 404

    status, text = admin(ctl, "GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expiry = families["njcm_certificate_expiration_timestamp_seconds"]
    assert any(s.labels.get("name") == "a.test" for s in expiry.samples)
    ready = families["njcm_certificate_ready_status"]
    assert any(s.labels == {"name": "a.test", "condition": "True"} and s.value == 1
               for s in ready.samples)
    assert families["njcm_mqtt_connected"].samples[0].value == 1
    assert any(s.value >= 1 for s in families["njcm_reconciles"].samples)
