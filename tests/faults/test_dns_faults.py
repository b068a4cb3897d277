"""Fault injection, dns-01: the DNS side misbehaves while the real controller (the CLI, store
only) issues wildcard certificates against Pebble and a real BIND (tests/fixtures/dns.py).

- a wrong TSIG secret: a clear error naming the keys to check (never a secret), one order,
  and a re-run inside the backoff orders nothing;
- the update server down: a TemporaryError naming it, a backoff, and once it is back the
  record noted for cleanup is removed and the certificate issued;
- kill -9 between present and cleanup (fault point dns01.after_present): the restart removes
  the record the dead run wrote and issues;
- hostile replies (garbage bytes, REFUSED, a forged TSIG): a clear error each.

Every ACME request goes through hack/pebble/faultproxy.py, which counts the newOrders. Each
scenario is one trial of the `dns-faults` family.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest

from controller.certinfo import read_cert_info
from tests.e2e.harness import render_toml
from tests.faults import summary
from tests.faults.helpers import (
    CONFIG,
    edit_status,
    leaked_private_key,
    run_cli,
    status_of,
    store_problems,
)
from tests.fixtures.dns import DnsWorld
from tests.support.bind import new_secret, txt
from tests.support.hackmods import free_tcp_port, load_hack_module
from tests.support.tomlgen import acme_section

pytestmark = pytest.mark.pebble

FAMILY = "dns-faults"
FaultProxy = load_hack_module("pebble/faultproxy.py").FaultProxy
_serial = itertools.count(1)


@pytest.fixture
def proxy(pebble_dns: Any) -> Iterator[Any]:
    state = pebble_dns.state_dir
    p = FaultProxy(pebble_dns.listen_port, cert=state / "server.pem", key=state / "server.key",
                   upstream_ca=pebble_dns.ca_bundle).start()
    yield p
    p.stop()


class Case:
    """One store-only prefix wanting `*.<label>.shop.test`."""

    def __init__(self, root: Path, proxy: Any, pebble: Any, world: DnsWorld) -> None:
        self.label = f"f{next(_serial)}-{time.monotonic_ns() % 10**7}"
        self.base = f"{self.label}.shop.test"
        self.domain = f"*.{self.base}"
        self.fqdn = f"_acme-challenge.{self.base}"
        self.prefix = root / self.label
        self.proxy, self.pebble, self.world = proxy, pebble, world
        (self.prefix / "conf").mkdir(parents=True)
        (self.prefix / "conf" / "njet.conf").write_text(
            "http {\n  server {\n    listen 127.0.0.1:8443 ssl;\n"
            f"    server_name {self.domain};\n    ssl_certificate_management acme;\n  }}\n}}\n")

    def configure(self, **dns: Any) -> None:
        section = self.world.dns_section(self.prefix, propagationTimeout="5s", **dns)
        acme = acme_section(self.pebble, email="dns-faults@example.test", keyType="ec256")
        acme["acmeCaDir"] = self.proxy.directory_url
        (self.prefix / CONFIG).write_text(render_toml({
            "acme": acme, "njet": {"apiAddress": ""}, "dns": section, "log": {"v": 1}}))

    def run(self, *, fault_point: str | None = None) -> Any:
        done = run_cli(self.prefix, "reconcile", fault_point=fault_point, timeout=90)
        assert not leaked_private_key(done.output)
        for secret in self.world.primary.keys.values():
            assert secret not in done.output
        return done

    def orders(self) -> int:
        return int(self.proxy.count(r"^/order-plz$"))

    def issued(self) -> bool:
        crt = self.prefix / ".lego" / "certificates" / f"_.{self.base}.crt"
        return crt.exists() and read_cert_info(crt.read_bytes()).names == (self.domain,)

    @property
    def pending(self) -> Path:
        return self.prefix / ".lego" / "dns-cleanups.json"

    def records(self) -> set[str]:
        return txt(self.world.primary.address, self.fqdn)


@pytest.fixture
def case(tmp_path: Path, proxy: Any, pebble_dns: Any, bind_dns: DnsWorld) -> Callable[[], Case]:
    return lambda: Case(tmp_path, proxy, pebble_dns, bind_dns)


def test_a_wrong_tsig_secret_is_one_order_a_clear_error_and_a_backoff(
    case: Callable[[], Case],
) -> None:
    c = case()
    wrong = c.world.secret_file(c.prefix, secret=new_secret(), name="wrong.secret")
    c.configure(tsigSecretFile=str(wrong))
    first = c.run()
    assert first.returncode == 1
    assert "TSIG" in first.output and "tsigSecretFile" in first.output and c.fqdn in first.output
    assert c.orders() == 1
    status = status_of(c.prefix, c.domain)
    assert status is not None and status["attempts"] == 1 and status["backoff_until"]
    again = c.run()
    assert again.returncode == 1 and "[Backoff]" in again.output
    assert c.orders() == 1, "a run inside the backoff ordered again"
    assert c.records() == set() and not c.issued()
    summary.record(FAMILY, trials=1, converged=1)


def test_the_update_server_down_backs_off_and_is_cleaned_up_once_it_is_back(
    case: Callable[[], Case],
) -> None:
    c = case()
    dead = f"127.0.0.1:{free_tcp_port()}"
    c.configure(nameserver=dead)
    down = c.run()
    assert down.returncode == 1
    assert f"rfc2136 server {dead}" in down.output and "connection refused" in down.output
    status = status_of(c.prefix, c.domain)
    assert status is not None and status["backoff_until"] and dead in status["last_failure"]
    assert c.pending.exists(), "a write that may have landed must stay noted"
    c.configure()  # the server is back (here: the right address)
    edit_status(c.prefix, c.domain, backoff_until=None)
    back = c.run()
    assert back.returncode == 0, back.output
    assert "removed a left-over dns-01 record" in back.output
    assert c.issued() and c.records() == set() and not c.pending.exists()
    assert store_problems(c.prefix) == []
    summary.record(FAMILY, trials=1, converged=1)


def test_a_kill_between_present_and_cleanup_is_cleaned_up_by_the_restart(
    case: Callable[[], Case],
) -> None:
    c = case()
    c.configure()
    killed = c.run(fault_point="dns01.after_present")
    assert killed.returncode == -9, killed.output
    assert len(c.records()) == 1, "the record the dead run wrote"
    assert c.pending.exists()
    restarted = c.run()
    assert restarted.returncode == 0, restarted.output
    assert "removed a left-over dns-01 record" in restarted.output
    assert c.issued() and c.records() == set() and not c.pending.exists()
    assert store_problems(c.prefix) == []
    summary.record(FAMILY, trials=1, converged=1)


class Hostile:
    """A DNS server on TCP+UDP that answers every query with `answer(request bytes)`."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        for _ in range(20):  # a port free for TCP and for UDP
            self.port = free_tcp_port()
            self.tcp = socket.create_server(("127.0.0.1", self.port))
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.udp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.tcp.close()
                self.udp.close()
        for target in (self._tcp, self._udp):
            threading.Thread(target=target, daemon=True).start()

    def _tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(2)
                if len(head) < 2:
                    continue
                want, data = struct.unpack("!H", head)[0], b""
                while len(data) < want and (chunk := conn.recv(want - len(data))):
                    data += chunk
                out = self.answer(data)
                conn.sendall(struct.pack("!H", len(out)) + out)

    def _udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            self.udp.sendto(self.answer(data), peer)

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


def _garbage(request: bytes) -> bytes:
    return request[:2] + b"\x84\x00\xff\xff\x00\x09garbage, not DNS"


def _refused(request: bytes) -> bytes:
    reply = dns.message.Message(id=struct.unpack("!H", request[:2])[0])
    reply.flags = dns.flags.QR
    reply.set_opcode(dns.opcode.UPDATE)
    reply.set_rcode(dns.rcode.REFUSED)
    return reply.to_wire()


def _echo_signed(request: bytes) -> bytes:  # the request back as its "answer": a forged TSIG
    return request[:2] + bytes([request[2] | 0x80, (request[3] & 0xF0) | 5]) + request[4:]


@pytest.mark.parametrize(("answer", "signed", "expected"), [
    (_garbage, True, "not a usable DNS reply"),
    (_refused, False, "REFUSED (the server does not allow unsigned updates"),
    (_echo_signed, True, "TSIG signature does not verify"),
])
def test_a_hostile_update_server_is_a_clear_error(
    case: Callable[[], Case], answer: Callable[[bytes], bytes], signed: bool, expected: str,
) -> None:
    server = Hostile(answer)
    try:
        c = case()
        keys: dict[str, Any] = {"nameserver": f"127.0.0.1:{server.port}"}
        if not signed:
            keys.update(tsigKeyName="", tsigSecretFile="")
        c.configure(**keys)
        done = c.run()
        assert done.returncode == 1
        assert f"rfc2136 server 127.0.0.1:{server.port}" in done.output and expected in (
            done.output), done.output
        assert c.orders() == 1 and not c.issued(), done.output
    finally:
        server.close()
    summary.record(FAMILY, trials=1, converged=1)


def test_hostile_lookups_name_the_resolver(case: Callable[[], Case]) -> None:
    server = Hostile(_garbage)
    try:
        c = case()
        c.configure(resolvers=[f"127.0.0.1:{server.port}"])
        done = c.run()
        assert done.returncode == 1
        assert f"127.0.0.1:{server.port}: not a usable DNS reply" in done.output, done.output
        assert c.records() == set() and not c.pending.exists()
    finally:
        server.close()
    summary.record(FAMILY, trials=1, converged=1)
