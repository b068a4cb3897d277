"""Wildcard and dot-prefixed names of servers NJet announces at runtime, through the real
runtime store file, the desired source and the service's event handler: with a [dns] section
they become certificates validated through dns-01, exactly as the same njet.conf block would;
without one they stay warnings (controller/servernames.py is the one rule)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.adapters.store.runtime import RuntimeStore
from controller.config import parse_config
from controller.desired_source import DesiredSource
from controller.events import EventAction, EventDomain, NjetEvent
from controller.model import ChallengeType, KeyType, Source
from controller.paths import StorePaths

RFC2136 = {"provider": "rfc2136", "nameserver": "127.0.0.1:5353", "tsigKeyName": "k",
           "tsigSecretFile": "k.secret", "resolvers": ["127.0.0.1:5353"]}
LISTEN = "127.0.0.1:8443"
CONF = ("http { server { listen 127.0.0.1:8443 ssl; server_name .blog.test;"
        " ssl_certificate_management acme; } }\n")


def event(action: EventAction, *names: str) -> NjetEvent:
    return NjetEvent(action, tuple(EventDomain((n,), (LISTEN,), "acme") for n in names))


def stored(store: RuntimeStore) -> list[tuple[str, tuple[str, ...]]]:
    return [(s.domain, s.names) for s in store.load()]


def test_the_runtime_store_keeps_an_announced_wildcard_only_with_dns(tmp_path: Path) -> None:
    with_dns = RuntimeStore(StorePaths(tmp_path / "a"), wildcards=True)
    assert with_dns.apply(event(EventAction.GENERATE, "*.RT.test", ".dot.test"))
    assert stored(RuntimeStore(StorePaths(tmp_path / "a"))) == [
        ("*.rt.test", ("*.rt.test",)), ("dot.test", ("dot.test", "*.dot.test"))]
    assert with_dns.apply(event(EventAction.DELETE, "*.rt.test"))
    assert stored(with_dns) == [("dot.test", ("dot.test", "*.dot.test"))]

    without = RuntimeStore(StorePaths(tmp_path / "b"))
    assert without.apply(event(EventAction.GENERATE, "*.rt.test", ".dot.test"))
    assert stored(without) == [("dot.test", ("dot.test",))]
    assert not without.apply(event(EventAction.DELETE, "*.rt.test"))


def test_a_stored_runtime_wildcard_becomes_a_dns01_certificate(tmp_path: Path) -> None:
    conf = tmp_path / "njet.conf"
    conf.write_text(CONF)
    runtime = RuntimeStore(StorePaths(tmp_path), wildcards=True)
    runtime.apply(event(EventAction.GENERATE, "*.rt.test"))
    desired = DesiredSource(conf, KeyType.EC256, runtime, wildcards=True).load()
    rt = desired.specs["*.rt.test"]
    assert (rt.names, rt.listens, rt.source) == (("*.rt.test",), (LISTEN,), Source.EVENT)
    assert rt.challenge_type is ChallengeType.DNS
    assert desired.specs["blog.test"].names == ("blog.test", "*.blog.test")
    assert desired.warnings == ()


def test_a_runtime_wildcard_stored_with_dns_is_a_warning_once_dns_is_gone(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "njet.conf"
    conf.write_text(CONF)
    runtime = RuntimeStore(StorePaths(tmp_path), wildcards=True)
    runtime.apply(event(EventAction.GENERATE, "*.rt.test"))
    desired = DesiredSource(conf, KeyType.EC256, runtime).load()
    assert set(desired.specs) == {"blog.test"}
    assert "configure a DNS provider" in {w.name: w.reason for w in desired.warnings}["*.rt.test"]


def service(tmp_path: Path, **toml: Any) -> Any:
    from controller.service import Service  # the composition root: imported by this test alone

    prefix = tmp_path / "njet"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(CONF)
    return Service(parse_config({"njet": {"apiAddress": ""}, **toml}, prefix=prefix))


def test_the_service_hands_the_dns_switch_to_the_names_of_events(tmp_path: Path) -> None:
    svc = service(tmp_path / "dns", dns=RFC2136)
    # NJet announces the conf's own `.blog.test` block at start: njet.conf has it, not runtime
    svc.on_event(event(EventAction.GENERATE, ".blog.test", "*.rt.test"))
    assert stored(svc.app.runtime) == [("*.rt.test", ("*.rt.test",))]
    assert svc.app.reconciler.desired().specs["*.rt.test"].challenge_type is ChallengeType.DNS

    plain = service(tmp_path / "plain")
    plain.on_event(event(EventAction.GENERATE, ".blog.test", "*.rt.test"))
    assert stored(plain.app.runtime) == []
    assert set(plain.app.reconciler.desired().specs) == {"blog.test"}
