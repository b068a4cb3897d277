"""dns-01 against a real BIND (tests/fixtures/dns.py): the RFC 2136 provider, the solver's
delegation, propagation and cleanup, and the lookups, each checked by asking the server."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.dns.lookup import DnsLookup
from controller.adapters.dns.pending import PendingCleanups, PendingRecord
from controller.adapters.dns.providers import build_provider, build_solver
from controller.adapters.dns.rfc2136 import Rfc2136Provider, load_tsig_secret
from controller.adapters.dns.solver import Dns01Solver, record_name, txt_value
from controller.config import parse_config
from controller.errors import ConfigError, TemporaryError
from tests.fixtures.dns import DnsWorld
from tests.support.bind import ACME_KEY, ADMIN_KEY, new_secret, txt, update
from tests.support.hackmods import free_tcp_port

_serial = itertools.count(1)


def label() -> str:
    return f"i{next(_serial)}-{time.monotonic_ns() % 10**7}"


def dns_config(world: DnsWorld, tmp_path: Path, **keys: Any) -> Any:
    cfg = parse_config({"dns": world.dns_section(tmp_path, **keys)}, prefix=tmp_path)
    assert cfg.dns is not None
    return cfg.dns


def solver(world: DnsWorld, tmp_path: Path, **keys: Any) -> Dns01Solver:
    return build_solver(dns_config(world, tmp_path, **keys), tmp_path,
                        tmp_path / ".lego" / "dns-cleanups.json")


async def test_the_provider_adds_and_removes_exactly_its_value(
    bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    provider = build_provider(dns_config(bind_dns, tmp_path), tmp_path)
    fqdn = f"_acme-challenge.{label()}.shop.test"
    server = bind_dns.primary.address
    update(server, "shop.test", bind_dns.primary.key(ADMIN_KEY),
           add=[(fqdn, 60, "TXT", '"not-ours"')])
    await provider.present(zone="shop.test", fqdn=fqdn, value="value-one")
    await provider.present(zone="shop.test", fqdn=fqdn, value="value-two")
    assert txt(server, fqdn) == {"not-ours", "value-one", "value-two"}
    await provider.cleanup(zone="shop.test", fqdn=fqdn, value="value-one")
    await provider.cleanup(zone="shop.test", fqdn=fqdn, value="value-one")  # gone: no error
    assert txt(server, fqdn) == {"not-ours", "value-two"}
    await provider.cleanup(zone="shop.test", fqdn=fqdn, value="value-two")
    assert txt(server, fqdn) == {"not-ours"}
    await provider.close()


async def test_a_wrong_tsig_secret_is_a_config_error_naming_the_keys(
    bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    provider = Rfc2136Provider(bind_dns.primary.address, key_name=ACME_KEY,
                               secret=load_tsig_secret(bind_dns.secret_file(
                                   tmp_path, secret=new_secret())))
    fqdn = f"_acme-challenge.{label()}.shop.test"
    with pytest.raises(ConfigError) as caught:
        await provider.present(zone="shop.test", fqdn=fqdn, value="v")
    message = str(caught.value)
    assert "tsigKeyName" in message and "tsigSecretFile" in message and fqdn in message
    assert bind_dns.primary.keys[ACME_KEY] not in message
    unknown = Rfc2136Provider(bind_dns.primary.address, key_name="nobody", secret=b"k" * 32)
    with pytest.raises(ConfigError, match="TSIG"):
        await unknown.present(zone="shop.test", fqdn=fqdn, value="v")
    assert txt(bind_dns.primary.address, fqdn) == set()


async def test_refused_updates_are_config_errors_saying_what_to_check(
    bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    provider = build_provider(dns_config(bind_dns, tmp_path), tmp_path)
    with pytest.raises(ConfigError, match=r"NOTZONE .*set \[dns\] zone"):
        await provider.present(zone="blog.test", fqdn=f"x.{label()}.other.test", value="v")
    with pytest.raises(ConfigError, match=r"REFUSED .*update-policy"):  # "." allows no update
        await provider.present(zone=".", fqdn=f"x.{label()}.invalid", value="v")


async def test_a_server_that_is_down_is_a_temporary_error(tmp_path: Path) -> None:
    provider = Rfc2136Provider(("127.0.0.1", free_tcp_port()))
    with pytest.raises(TemporaryError, match="connection refused"):
        await provider.present(zone="shop.test", fqdn="_acme-challenge.x.shop.test", value="v")


def test_the_secret_file_is_read_as_base64_or_a_bind_key_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("c2VjcmV0LXNlY3JldA==\n")
    assert load_tsig_secret(plain) == b"secret-secret"
    bind = tmp_path / "bind.key"
    bind.write_text('key "acme-key" {\n\talgorithm hmac-sha256;\n'
                    '\tsecret "c2VjcmV0LXNlY3JldA==";\n};\n')
    assert load_tsig_secret(bind) == b"secret-secret"
    bad = tmp_path / "bad"
    bad.write_text("not base64 at all!!\n")
    with pytest.raises(ConfigError, match=r"tsigSecretFile .*not a base64 secret") as caught:
        load_tsig_secret(bad)
    assert "at all" not in str(caught.value)
    link = tmp_path / "link"
    link.symlink_to(plain)
    with pytest.raises(ConfigError, match="symbolic link"):
        load_tsig_secret(link)
    with pytest.raises(ConfigError, match="cannot read"):
        load_tsig_secret(tmp_path / "missing")


async def test_lookups_find_the_zone_the_delegation_and_the_nameservers(
    bind_dns: DnsWorld,
) -> None:
    lookup = DnsLookup([bind_dns.primary.address])
    name = label()
    assert await lookup.zone_for(f"_acme-challenge.{name}.shop.test") == "shop.test"
    assert await lookup.zone_for("blog.test") == "blog.test"
    assert await lookup.follow_cname(f"_acme-challenge.{name}.shop.test") == (
        f"_acme-challenge.{name}.shop.test")
    target = f"{name}.acme-dns.test"
    update(bind_dns.primary.address, "shop.test", bind_dns.primary.key(ADMIN_KEY),
           add=[(f"_acme-challenge.{name}.shop.test", 60, "CNAME", target + ".")])
    assert await lookup.follow_cname(f"_acme-challenge.{name}.shop.test") == target
    assert await lookup.zone_for(target) == "acme-dns.test"
    ns1, ns2 = bind_dns.need_ns()
    assert await lookup.nameservers("multi.test") == (ns1, ns2)


async def test_a_cname_loop_is_an_error_naming_the_chain(bind_dns: DnsWorld) -> None:
    name = label()
    a, b = f"_acme-challenge.{name}.shop.test", f"{name}-b.shop.test"
    update(bind_dns.primary.address, "shop.test", bind_dns.primary.key(ADMIN_KEY),
           add=[(a, 60, "CNAME", b + "."), (b, 60, "CNAME", a + ".")])
    with pytest.raises(TemporaryError, match="loops"):
        await DnsLookup([bind_dns.primary.address]).follow_cname(a)


async def test_present_writes_where_the_cname_points_and_cleanup_removes_it(
    bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    name = f"{label()}.shop.test"
    target = f"{label()}.acme-dns.test"
    server = bind_dns.primary.address
    update(server, "shop.test", bind_dns.primary.key(ADMIN_KEY),
           add=[(record_name(name), 60, "CNAME", target + ".")])
    s = solver(bind_dns, tmp_path)
    await s.present(name, "tok", "tok.thumb")
    assert txt(server, target) == {txt_value("tok.thumb")}
    pending = s.pending.load()
    assert [(r.zone, r.fqdn) for r in pending] == [("acme-dns.test", target)]
    await s.cleanup(name, "tok", "tok.thumb")
    assert txt(server, target) == set()
    assert not s.pending.path.exists()


async def test_a_wildcard_and_its_base_put_two_values_at_one_name_at_once(
    bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    base = f"{label()}.blog.test"
    s = solver(bind_dns, tmp_path)
    await s.present(base, "t1", "t1.k")
    await s.present(f"*.{base}", "t2", "t2.k")
    fqdn = record_name(base)
    assert txt(bind_dns.primary.address, fqdn) == {txt_value("t1.k"), txt_value("t2.k")}
    await s.cleanup(base, "t1", "t1.k")
    assert txt(bind_dns.primary.address, fqdn) == {txt_value("t2.k")}
    await s.cleanup(f"*.{base}", "t2", "t2.k")
    assert txt(bind_dns.primary.address, fqdn) == set()
    await s.close()


async def test_a_lagging_authoritative_server_delays_present_until_it_has_the_record(
    bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    ns1, ns2 = bind_dns.need_ns()
    assert bind_dns.secondary is not None
    name = f"{label()}.multi.test"
    fqdn = record_name(name)
    s = solver(bind_dns, tmp_path, resolvers=[f"{ns1[0]}:53"], propagationCheck="authoritative")
    copied = threading.Event()

    def copy_late() -> None:  # what a slow zone transfer would do, a second later
        while not txt(ns1, fqdn):
            time.sleep(0.02)
        time.sleep(1.0)
        update(ns2, "multi.test", bind_dns.secondary.key(ADMIN_KEY),  # type: ignore[union-attr]
               add=[(fqdn, 60, "TXT", f'"{v}"') for v in txt(ns1, fqdn)])
        copied.set()

    thread = threading.Thread(target=copy_late, daemon=True)
    thread.start()
    await s.present(name, "tok", "tok.k")
    assert copied.is_set(), "present returned before the lagging server had the record"
    assert txt_value("tok.k") in txt(ns2, fqdn)
    await s.cleanup(name, "tok", "tok.k")
    assert txt(ns1, fqdn) == set()
    update(ns2, "multi.test", bind_dns.secondary.key(ADMIN_KEY), delete=[(fqdn, "TXT", None)])


async def test_a_record_that_never_propagates_fails_naming_the_server_and_is_removed(
    bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    ns1, ns2 = bind_dns.need_ns()
    name = f"{label()}.multi.test"
    s = solver(bind_dns, tmp_path, resolvers=[f"{ns1[0]}:53"], propagationCheck="authoritative",
               propagationTimeout="1s")
    with pytest.raises(TemporaryError) as caught:
        await s.present(name, "tok", "tok.k")
    message = str(caught.value)
    assert f"{ns2[0]}:53" in message and f"{ns1[0]}:53" not in message
    assert "propagationTimeout" in message and "no TXT record yet" in message
    assert txt(ns1, record_name(name)) == set()
    assert s.pending.load() == []


async def test_left_over_records_of_a_dead_run_are_removed_and_others_kept(
    bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    fqdn = f"_acme-challenge.{label()}.shop.test"
    server = bind_dns.primary.address
    update(server, "shop.test", bind_dns.primary.key(ADMIN_KEY),
           add=[(fqdn, 60, "TXT", '"ours"'), (fqdn, 60, "TXT", '"someone-elses"')])
    path = tmp_path / ".lego" / "dns-cleanups.json"
    PendingCleanups(path).add(PendingRecord("shop.test", fqdn, "ours", "rfc2136"))
    s = build_solver(dns_config(bind_dns, tmp_path), tmp_path, path)
    lines = await s.remove_leftovers()
    assert len(lines) == 1 and fqdn in lines[0]
    assert txt(server, fqdn) == {"someone-elses"}
    assert not path.exists()


async def test_concurrent_presents_of_many_names_all_land_and_all_go(
    bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    s = solver(bind_dns, tmp_path)
    names = [f"{label()}.wild.test" for _ in range(12)]
    await asyncio.gather(*(s.present(f"*.{n}", n, f"{n}.k") for n in names))
    assert all(txt(bind_dns.primary.address, record_name(n)) == {txt_value(f"{n}.k")}
               for n in names)
    await asyncio.gather(*(s.cleanup(f"*.{n}", n, f"{n}.k") for n in names))
    assert all(txt(bind_dns.primary.address, record_name(n)) == set() for n in names)
    assert s.pending.load() == []
