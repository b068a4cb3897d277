"""Wildcard servers announced at runtime, end to end: the controller as a long-running process
(`run`) against the NJet simulator, Pebble and a real BIND (dns-01 through RFC 2136). A
`dyn_srv` add of `server_name *.<x>` (its MQTT `generateCertificate` event, and its retained
`/ins/srv/*` record read at start) gets a wildcard certificate through dns-01, applied and
served by SNI for a name under it, and one of `.<y>` a certificate for y and *.y; a delete
removes the wildcard one. The names live under the fixture's
shop.test zone (tests/fixtures/dns.py: tests use names of their own there)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.certinfo import fingerprint_pem, key_matches_cert, read_cert_info
from tests.e2e.harness import Prefix
from tests.e2e.njet_harness import controller_toml, served_fingerprint, wait_until
from tests.e2e.test_events import Controller
from tests.fixtures.dns import DnsWorld
from tests.fixtures.pebble import free_tcp_port
from tests.support.bind import txt
from tests.support.njetsim import ec_cert

pytestmark = pytest.mark.pebble

# one unmanaged TLS server on the https port: the listen the dynamic servers join
CONF = """pid logs/njet.pid;
error_log logs/error.log info;
{{helpers}}
events { worker_connections 64; }
http {
    server {
        listen 127.0.0.1:{{port:https}} ssl;
        server_name boot.test;
        ssl_certificate     certs/boot.crt;
        ssl_certificate_key certs/boot.key;
        location / { return 200 "boot\\n"; }
    }
}
"""


@pytest.fixture
def world(
    pebble_dns: Any, bind_dns: DnsWorld, njetsim_factory: Any, tmp_path: Path,
) -> Iterator[tuple[Any, Prefix, Controller]]:
    crt, key = ec_cert(["boot.test"], "boot")
    sim = njetsim_factory(CONF, files={"conf/certs/boot.crt": crt, "conf/certs/boot.key": key})
    prefix = Prefix(sim.prefix)
    admin_port = free_tcp_port()
    toml = controller_toml(pebble_dns, sim)
    toml["controller"].update(interval="1h", deleteGracePeriod="0s")
    toml["admin"] = {"address": f"127.0.0.1:{admin_port}"}
    toml["dns"] = bind_dns.dns_section(tmp_path)
    toml["log"] = {"v": 2}  # the dns-01 record lines
    prefix.write_toml(toml)
    ctl = Controller(prefix, admin_port)
    yield sim, prefix, ctl
    ctl.stop()
    log = ctl.log.read_text()
    assert "Traceback" not in log and "PRIVATE KEY" not in log
    assert bind_dns.primary.keys["acme-key"] not in log


def unique(label: str) -> str:
    """A name of this run under shop.test (the BIND server is shared by the session)."""
    return f"{label}{time.monotonic_ns() % 10**8}.shop.test"


def dyn_srv(sim: Any, method: str, kind: str, name: str) -> None:
    certs = sim.prefix / "conf" / "certs"
    body: dict[str, str] = {"type": kind, "addr_port": f"127.0.0.1:{sim.ports['https']}",
                            "server_name": name}
    if kind == "add":
        body.update(listen_option="ssl", server_body=(
            f"ssl_certificate {certs / 'boot.crt'}; ssl_certificate_key {certs / 'boot.key'}; "
            'ssl_certificate_management acme; return 200 "wild";'))
    answer = sim.api(method, "/api/v1/dyn_srv", body)
    assert answer.json["code"] == 0, answer.json


def stored(prefix: Prefix, store_name: str) -> tuple[str, tuple[str, ...]] | None:
    path = prefix.certs / f"{store_name}.crt"
    if not path.exists():
        return None
    crt = path.read_bytes()
    assert key_matches_cert((prefix.certs / f"{store_name}.key").read_bytes(), crt)
    return fingerprint_pem(crt), read_cert_info(crt).names


def served_wildcard(sim: Any, prefix: Prefix, base: str) -> bool:
    got = stored(prefix, f"_.{base}")
    return got is not None and served_fingerprint(sim, sni=f"a.{base}") == got[0]


def test_runtime_wildcard_and_dot_servers_get_dns01_certificates_applied_and_served(
    world: Any, bind_dns: DnsWorld,
) -> None:
    sim, prefix, ctl = world
    ctl.start()
    # the start-up pass (and its rebuild from the retained records) is over: the adds below
    # reach the controller as events
    assert wait_until(lambda: (ctl.health() or {}).get("reconciles", 0) >= 1
                      and (ctl.health() or {}).get("mqtt_connected") is True, 20)
    wild, dot = unique("rt"), unique("dot")
    dyn_srv(sim, "POST", "add", f"*.{wild}")
    dyn_srv(sim, "POST", "add", f".{dot}")

    def dot_served() -> bool:
        got = stored(prefix, dot)
        return got is not None and all(served_fingerprint(sim, sni=n) == got[0]
                                       for n in (dot, f"y.{dot}"))

    assert wait_until(lambda: served_wildcard(sim, prefix, wild) and dot_served(), 60), (
        ctl.log.read_text()[-3000:])
    wild_cert, dot_cert = stored(prefix, f"_.{wild}"), stored(prefix, dot)
    assert wild_cert is not None and wild_cert[1] == (f"*.{wild}",)
    assert dot_cert is not None and set(dot_cert[1]) == {dot, f"*.{dot}"}
    runtime = json.loads((prefix.root / ".lego" / "runtime" / "servers.json").read_text())
    assert sorted(s["names"] for s in runtime["servers"]) == sorted([
        [dot, f"*.{dot}"], [f"*.{wild}"]])
    for name in (wild, dot):
        assert txt(bind_dns.primary.address, f"_acme-challenge.{name}") == set()
    log = ctl.log.read_text()
    assert "skipped name" not in log
    assert f"dns-01 record written domain=*.{wild} name=_acme-challenge.{wild}" in log
    assert f"dns-01 record removed name=_acme-challenge.{wild}" in log

    dyn_srv(sim, "PUT", "del", f"*.{wild}")
    assert wait_until(lambda: stored(prefix, f"_.{wild}") is None, 30), (
        ctl.log.read_text()[-3000:])
    assert stored(prefix, dot) == dot_cert


def test_a_wildcard_server_added_while_the_controller_was_down_converges_from_its_record(
    world: Any,
) -> None:
    sim, prefix, ctl = world
    base = unique("late")
    dyn_srv(sim, "POST", "add", f"*.{base}")  # its event reaches nobody: only the record stays
    ctl.start()
    assert wait_until(lambda: served_wildcard(sim, prefix, base), 60), (
        ctl.log.read_text()[-3000:])
