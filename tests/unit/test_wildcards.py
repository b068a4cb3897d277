"""Wildcards and dns-01 in the config and desired state: the `[dns]` section, `*.x` and `.x`
names with and without it, dns-01 chosen for every certificate holding a wildcard, `diff`'s
`challenge=dns`, and NJet's `.x` server names matching the x + *.x spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.config import parse_config
from controller.desired import desired_from_servers, merge_desired, usable_names
from controller.desired_source import CertSettings, DesiredSource, use_dns_for_wildcards
from controller.dnsconfig import split_host_port
from controller.errors import ConfigError
from controller.model import ActionKind, CertificateSpec, ChallengeType, Desired, KeyType, Source
from controller.njetconf import http_servers, parse_text
from controller.njetmatch import NjetServer, match_server
from controller.plan import Action, Plan
from controller.reasons import Reason
from controller.render import plan_to_text

RFC2136 = {"provider": "rfc2136", "nameserver": "127.0.0.1:5353", "tsigKeyName": "k",
           "tsigSecretFile": "k.secret", "resolvers": ["127.0.0.1:5353"]}


def parse(data: dict[str, Any]) -> Any:
    return parse_config(data, prefix=Path("/p"), source="t.toml")


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(data)
    return str(caught.value)


# -- [dns] -------------------------------------------------------------------------------------


def test_the_issues_rfc2136_section_loads_as_written() -> None:
    cfg = parse({"dns": {**RFC2136, "tsigAlgorithm": "HMAC-SHA256.", "propagationTimeout": "2m"}})
    dns = cfg.dns
    assert cfg.dns_configured and dns.nameserver == "127.0.0.1:5353"
    assert dns.tsigAlgorithm == "hmac-sha256" and dns.propagationTimeout.total_seconds() == 120
    assert dns.resolvers == ("127.0.0.1:5353",) and dns.checks_resolvers
    assert dns.ttl == 60 and dns.zone == ""
    assert not parse({}).dns_configured


@pytest.mark.parametrize(("keys", "why"), [
    ({"provider": "rfc2136"}, "needs nameserver"),
    ({"provider": "rfc2136", "nameserver": "1.2.3.4", "tsigKeyName": "k"}, "go together"),
    ({"provider": "exec"}, "needs command"),
    ({"provider": "exec", "command": "/bin/hook present"}, "list of strings"),
    ({"provider": "cloudflare"}, "needs credentialsFile"),
    ({"ttl": 60}, "provider is missing"),
    ({"provider": "no such!"}, "not a provider name"),
    ({**RFC2136, "resolvers": ["ns1.example.test"]}, "IP address"),
    ({**RFC2136, "nameserver": "1.2.3.4:99999"}, "port"),
    ({**RFC2136, "propagationTimeout": "0s"}, 'from "1s" to "1h"'),
    ({**RFC2136, "tsigAlgorithm": "hmac-sha3"}, "tsigAlgorithm"),
    ({**RFC2136, "zone": "a..test"}, "not a zone name"),
    ({**RFC2136, "resolvers": [], "propagationCheck": "resolvers"}, "needs resolvers"),
])
def test_a_bad_dns_section_names_the_key(keys: dict[str, Any], why: str) -> None:
    message = refused({"dns": keys})
    assert message.startswith("t.toml: dns") and why in message


def test_an_error_never_shows_the_value() -> None:
    message = refused({"dns": {**RFC2136, "nameserver": "s3cr3t value"}})
    assert "dns.nameserver" in message and "s3cr3t" not in message


def test_dns_challenges_need_a_dns_section() -> None:
    assert '"dns" (dns-01) needs a [dns] section' in refused({"acme": {"challengeType": "dns"}})
    assert parse({"acme": {"challengeType": "dns"}, "dns": RFC2136}).acme.challengeType is (
        ChallengeType.DNS)
    cfg = parse({"certificates": {"*.w.test": {"challengeType": "dns"}}, "dns": RFC2136})
    assert cfg.certificates["*.w.test"].challengeType is ChallengeType.DNS


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:53", ("127.0.0.1", 53)), ("127.0.0.1", ("127.0.0.1", 53)),
    ("[::1]:5353", ("::1", 5353)), ("::1", ("::1", 53)), ("NS1.Example.test.:54",
                                                           ("ns1.example.test", 54)),
])
def test_host_port_spellings(text: str, want: tuple[str, int]) -> None:
    assert split_host_port(text) == want


# -- desired state -----------------------------------------------------------------------------


def desired(text: str, *, wildcards: bool) -> Desired:
    return desired_from_servers(http_servers(parse_text(text, file="n.conf")),
                                wildcards=wildcards)


CONF = """http {
  server { listen 443 ssl; server_name *.Shop.test; ssl_certificate_management acme; }
  server { listen 443 ssl; server_name .blog.test www.blog.test; ssl_certificate_management acme; }
  server { listen 443 ssl; server_name plain.test x.* a.*.test *.*.w.test;
           ssl_certificate_management acme; }
}"""


def test_with_dns_wildcards_are_names_and_a_dot_name_is_the_base_plus_its_wildcard() -> None:
    d = desired(CONF, wildcards=True)
    assert d.specs["*.shop.test"].names == ("*.shop.test",)
    assert d.specs["blog.test"].names == ("blog.test", "*.blog.test", "www.blog.test")
    assert d.specs["plain.test"].names == ("plain.test",)
    reasons = {w.name: w.reason for w in d.warnings}
    assert set(reasons) == {"x.*", "a.*.test", "*.*.w.test"}
    assert all("cannot be issued by any CA" in r for r in reasons.values())


def test_without_dns_wildcards_warn_saying_what_to_configure() -> None:
    d = desired(CONF, wildcards=False)
    assert "*.shop.test" not in d.specs and d.specs["blog.test"].names == (
        "blog.test", "www.blog.test")
    reasons = {w.name: w.reason for w in d.warnings}
    assert "configure a DNS provider in a [dns] section" in reasons["*.Shop.test"]
    assert "[dns]" in reasons[".blog.test"] and "*.blog.test" in reasons[".blog.test"]
    assert "[dns]" not in reasons["x.*"]


def test_runtime_names_follow_the_same_rule() -> None:
    extra = [CertificateSpec("*.dyn.test", ("*.dyn.test",), source=Source.EVENT, origin="event")]
    assert "*.dyn.test" in merge_desired(Desired({}), extra, wildcards=True).specs
    assert "*.dyn.test" not in merge_desired(Desired({}), extra).specs
    assert usable_names([".a.test", "a.test", "*.a.test"], "o", wildcards=True)[0] == (
        "a.test", "*.a.test")


def spec(domain: str, *names: str, challenge: ChallengeType | None = None) -> CertificateSpec:
    return CertificateSpec(domain, names or (domain,), challenge_type=challenge)


def test_a_certificate_holding_a_wildcard_validates_through_dns01() -> None:
    d = Desired({
        "*.a.test": spec("*.a.test"),
        "b.test": spec("b.test", "b.test", "*.b.test", challenge=ChallengeType.TLS),
        "c.test": spec("c.test"),
    })
    out = use_dns_for_wildcards(d, default_challenge=ChallengeType.HTTP, origin="t.toml")
    assert out.specs["*.a.test"].challenge_type is ChallengeType.DNS
    assert out.specs["b.test"].challenge_type is ChallengeType.DNS
    assert out.specs["c.test"].challenge_type is None
    (warning,) = out.warnings
    assert warning.name == "b.test" and 'challengeType "tls" cannot prove a wildcard' in (
        warning.reason)
    as_default = use_dns_for_wildcards(d, default_challenge=ChallengeType.DNS)
    assert as_default.specs["*.a.test"].challenge_type is None


class NoRuntime:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[CertificateSpec, ...]:
        return ()


def test_the_desired_source_with_dns_issues_wildcards_and_applies_their_tables(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "njet.conf"
    conf.write_text(CONF)
    source = DesiredSource(conf, KeyType.EC256, NoRuntime(tmp_path / "r.json"),
                           settings={"*.shop.test": CertSettings(key_type=KeyType.RSA2048),
                                     ".blog.test": CertSettings(profile="short")},
                           wildcards=True)
    d = source.load()
    shop, blog = d.specs["*.shop.test"], d.specs["blog.test"]
    assert (shop.key_type, shop.challenge_type) == (KeyType.RSA2048, ChallengeType.DNS)
    assert (blog.profile, blog.challenge_type) == ("short", ChallengeType.DNS)
    assert d.specs["plain.test"].challenge_type is None


def test_diff_names_the_dns_solver() -> None:
    s = spec("blog.test", "blog.test", "*.blog.test", challenge=ChallengeType.DNS)
    action = Action(kind=ActionKind.ISSUE, domain="blog.test", reason=Reason.MISSING,
                    message="no certificate stored", spec=s, key_type=KeyType.EC256)
    text = plan_to_text(Plan(actions=(action,)))
    assert "+ issue  blog.test *.blog.test key=ec256 challenge=dns  [Missing]" in text


def test_njet_dot_server_names_match_the_base_plus_wildcard_spec() -> None:
    dot = NjetServer(("127.0.0.1:8443",), (".blog.test",))
    wild = NjetServer(("127.0.0.1:8443",), ("*.shop.test",))
    got = match_server(CertificateSpec("blog.test", ("blog.test", "*.blog.test"),
                                       listens=("127.0.0.1:8443",)), [wild, dot])
    assert got.found and got.server is dot and got.server_names == (".blog.test",)
    got = match_server(CertificateSpec("*.shop.test", ("*.shop.test",),
                                       listens=("127.0.0.1:8443",)), [wild, dot])
    assert got.found and got.server_names == ("*.shop.test",)
