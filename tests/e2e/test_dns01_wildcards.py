"""dns-01 end to end: the real CLI against Pebble (asking a real BIND for the TXT records the
controller writes there through RFC 2136) and the NJet simulator. Wildcard and dot-prefixed
blocks get certificates with the right SANs, applied and served by SNI; the records are gone
afterwards; a CNAME delegation to another zone and a lagging authoritative server work."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller.certinfo import fingerprint_pem, key_matches_cert, read_cert_info
from tests.e2e.harness import Prefix
from tests.e2e.njet_harness import controller_toml, served_fingerprint
from tests.fixtures.dns import DnsWorld
from tests.support.bind import ADMIN_KEY, txt, update
from tests.support.njetsim import ec_cert
from tests.support.tomlgen import acme_section

pytestmark = pytest.mark.pebble

BLOCK = """
    server {{
        listen 127.0.0.1:{{{{port:https}}}} ssl;
        server_name {names};
        ssl_certificate     certs/boot.crt;
        ssl_certificate_key certs/boot.key;
        ssl_certificate_management acme;
        location / {{ return 200 "ok\\n"; }}
    }}
"""


def conf(*names: str) -> str:
    return ("pid logs/njet.pid;\nerror_log logs/error.log info;\n{{helpers}}\n"
            "events { worker_connections 64; }\nhttp {\n"
            + "".join(BLOCK.format(names=n) for n in names) + "}\n")


def boot() -> dict[str, bytes]:
    crt, key = ec_cert(["boot.test"], "boot")
    return {"conf/certs/boot.crt": crt, "conf/certs/boot.key": key}


def stored(prefix: Prefix, store_name: str) -> tuple[str, tuple[str, ...]]:
    crt = (prefix.certs / f"{store_name}.crt").read_bytes()
    assert key_matches_cert((prefix.certs / f"{store_name}.key").read_bytes(), crt)
    return fingerprint_pem(crt), read_cert_info(crt).names


def test_wildcard_and_dot_blocks_are_issued_through_dns01_applied_and_served(
    pebble_dns: Any, bind_dns: DnsWorld, njetsim_factory: Any, tmp_path: Path,
) -> None:
    sim = njetsim_factory(conf("*.shop.test", ".blog.test"), files=boot())
    prefix = Prefix(sim.prefix)
    toml = controller_toml(pebble_dns, sim)
    toml["dns"] = bind_dns.dns_section(tmp_path)
    prefix.write_toml(toml)

    diff = prefix.cli("diff")
    assert diff.returncode == 2, diff.stderr
    assert "+ issue  *.shop.test key=ec256 challenge=dns" in diff.stdout
    assert "+ issue  blog.test *.blog.test key=ec256 challenge=dns" in diff.stdout
    assert "warning" not in diff.stdout

    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    shop_fp, shop_names = stored(prefix, "_.shop.test")
    blog_fp, blog_names = stored(prefix, "blog.test")
    assert shop_names == ("*.shop.test",)
    assert set(blog_names) == {"blog.test", "*.blog.test"}
    assert served_fingerprint(sim, sni="x.shop.test") == shop_fp
    assert served_fingerprint(sim, sni="blog.test") == blog_fp
    assert served_fingerprint(sim, sni="y.blog.test") == blog_fp

    for name in ("_acme-challenge.shop.test", "_acme-challenge.blog.test"):
        assert txt(bind_dns.primary.address, name) == set(), f"{name} left behind"
    assert not (prefix.root / ".lego" / "dns-cleanups.json").exists()
    assert prefix.cli("diff").returncode == 0
    assert "PRIVATE KEY" not in run.stderr and bind_dns.primary.keys["acme-key"] not in run.stderr


def test_without_a_dns_section_wildcards_stay_warnings_saying_what_to_configure(
    pebble: Any, njetsim_factory: Any,
) -> None:
    sim = njetsim_factory(conf("*.shop.test", ".blog.test"), files=boot())
    prefix = Prefix(sim.prefix)
    prefix.write_toml(controller_toml(pebble, sim))
    diff = prefix.cli("diff")
    assert "+ issue  blog.test key=ec256  [Missing]" in diff.stdout
    assert "*.shop.test: wildcard names need dns-01: configure a DNS provider in a [dns]" in (
        diff.stdout)
    assert ".blog.test: a leading dot means blog.test and *.blog.test" in diff.stdout


def store_only(pebble: Any, world: DnsWorld, tmp_path: Path, names: str,
               **dns: Any) -> Prefix:
    prefix = Prefix(tmp_path / "prefix")
    prefix.write_conf("http {\n" + BLOCK.format(names=names).replace(
        "{{port:https}}", "8443") + "}\n")
    prefix.write_toml({
        "acme": acme_section(pebble, email="dns@example.test", challenge="dns",
                             keyType="ec256"),
        "njet": {"apiAddress": ""},
        "dns": world.dns_section(tmp_path, **dns),
        "log": {"v": 2},
    })
    return prefix


def test_a_cname_delegation_to_another_zone_is_followed(
    pebble_dns: Any, bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    name = f"deleg-{time.monotonic_ns() % 10**8}.shop.test"
    target = f"{name.split('.')[0]}.acme-dns.test"
    update(bind_dns.primary.address, "shop.test", bind_dns.primary.key(ADMIN_KEY),
           add=[(f"_acme-challenge.{name}", 60, "CNAME", target + ".")])
    prefix = store_only(pebble_dns, bind_dns, tmp_path, name)
    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    assert f"delegated_from=_acme-challenge.{name}" in run.stderr
    assert stored(prefix, name)[1] == (name,)
    assert txt(bind_dns.primary.address, target) == set()


def test_a_lagging_authoritative_server_delays_validation_instead_of_failing_it(
    pebble_dns: Any, bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    ns1, ns2 = bind_dns.need_ns()
    secondary = bind_dns.secondary
    assert secondary is not None
    name = f"lag-{time.monotonic_ns() % 10**8}.multi.test"
    fqdn = f"_acme-challenge.{name}"
    copied: list[set[str]] = []

    def copy_late() -> None:
        deadline = time.monotonic() + 60
        while not (values := txt(ns1, fqdn)) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.5)
        update(ns2, "multi.test", secondary.key(ADMIN_KEY),
               add=[(fqdn, 60, "TXT", f'"{v}"') for v in values])
        copied.append(values)

    thread = threading.Thread(target=copy_late, daemon=True)
    thread.start()
    prefix = store_only(pebble_dns, bind_dns, tmp_path, f"*.{name}",
                        resolvers=[f"{ns1[0]}:53"], propagationCheck="authoritative")
    run = prefix.cli("reconcile")
    thread.join(5)
    assert run.returncode == 0, run.stderr
    assert copied, "the record was never copied to the lagging server"
    assert f"lagging={ns2[0]}:53" in run.stderr
    assert stored(prefix, f"_.{name}")[1] == (f"*.{name}",)
    assert txt(ns1, fqdn) == set()
    update(ns2, "multi.test", secondary.key(ADMIN_KEY), delete=[(fqdn, "TXT", None)])
