"""Per-certificate settings (`[certificates."name"]`): parsing and its errors, the desired specs
that carry them, the spec identity, `diff`, and the solver set the issuer picks from.
(End to end against Pebble: tests/e2e/test_cert_settings.py.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.challenges.njet_http01 import NjetProxyHttp01Solver
from controller.adapters.challenges.solvers import (
    LocalHttp01Solver,
    LocalTlsAlpn01Solver,
    SolverSet,
)
from controller.adapters.njet.api import NjetClient
from controller.app import App, build_solvers
from controller.config import load_config, parse_config, unknown_keys
from controller.desired_source import CertSettings, DesiredSource, apply_settings
from controller.errors import ConfigError
from controller.model import (
    ActionKind,
    CertificateSpec,
    ChallengeType,
    Desired,
    KeyType,
    Source,
)
from controller.plan import Action, Plan, spec_hash
from controller.reasons import Reason
from controller.render import plan_to_dict, plan_to_text

CONF = """http {
    server { listen 443 ssl; server_name shop.test www.shop.test;
             ssl_certificate_management acme; }
    server { listen 443 ssl; server_name blog.test; ssl_certificate_management acme; }
    server { listen 443 ssl; server_name .dot.test; ssl_certificate_management acme; }
}
"""


def parse(certificates: Any, **acme: Any) -> Any:
    return parse_config({"acme": acme, "certificates": certificates}, prefix=Path("/p"),
                        source="cm.toml")


def refused(certificates: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse(certificates)
    message = str(err.value)
    assert message.startswith("cm.toml: "), message
    return message


# -- the TOML ------------------------------------------------------------------------------------


def test_a_table_per_first_server_name_is_read_with_canonical_names(tmp_path: Path) -> None:
    toml = tmp_path / "cm.toml"
    toml.write_text("""
[acme]
keyType = "ec256"
[certificates."Shop.Test."]
keyType = "rsa4096"
profile = "shortlived"
challengeType = "tls"
[certificates."blog.test"]
challengeType = "http"
[certificates."*.wild.test"]
[certificates.".dot.test"]
keyType = "ec384"
""")
    cfg = load_config(toml, prefix=tmp_path)
    assert sorted(cfg.certificates) == ["*.wild.test", ".dot.test", "blog.test", "shop.test"]
    shop = cfg.certificates["shop.test"]
    assert (shop.keyType, shop.profile, shop.challengeType) == (
        KeyType.RSA4096, "shortlived", ChallengeType.TLS)
    blog = cfg.certificates["blog.test"]
    assert (blog.keyType, blog.profile, blog.challengeType) == (None, None, ChallengeType.HTTP)
    assert cfg.certificates[".dot.test"].keyType is KeyType.EC384
    assert unknown_keys(cfg) == []
    assert parse_config({}, prefix=tmp_path).certificates == {}


def test_unknown_keys_in_a_table_are_warnings_naming_the_table() -> None:
    cfg = parse({"shop.test": {"keytype": "ec256", "challengeType": "tls"}})
    assert unknown_keys(cfg) == ['certificates."shop.test".keytype']
    assert cfg.certificates["shop.test"].keyType is None


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("shop test", "characters not allowed"),
        ("", "empty name"),
        ("~^re$", "regular expression"),
        ("127.0.0.1", "IP addresses"),
        ("a..test", "empty label"),
        ("*.*.test", "wildcard"),
        ("localhost", "localhost"),
    ],
)
def test_a_key_that_is_no_host_name_is_an_error_naming_it(key: str, why: str) -> None:
    message = refused({key: {"keyType": "ec256"}})
    assert f"certificates.{json.dumps(key)}: not a host name" in message
    assert why in message


def test_a_wrong_value_names_the_key_and_never_the_value() -> None:
    message = refused({"shop.test": {"keyType": "secret-looking-value"}})
    assert 'certificates."shop.test".keyType:' in message
    assert "rsa2048" in message and "secret-looking-value" not in message
    message = refused({"shop.test": {"challengeType": "s3cr3t"}})
    assert 'certificates."shop.test".challengeType:' in message and "s3cr3t" not in message
    message = refused({"shop.test": {"profile": 7}})
    assert 'certificates."shop.test".profile:' in message
    assert 'certificates."shop.test".profile:' in refused({"shop.test": {"profile": ""}})
    assert 'certificates."shop.test".profile:' in refused({"shop.test": {"profile": "  "}})
    assert parse({"shop.test": {"profile": " classic "}}).certificates["shop.test"].profile == (
        "classic")


def test_a_list_of_two_key_types_of_different_families_is_a_dual_certificate() -> None:
    assert parse({"shop.test": {"keyType": ["rsa2048", "ec256"]}}).certificates[
        "shop.test"].keyType == (KeyType.RSA2048, KeyType.EC256)
    message = refused({"shop.test": {"keyType": ["rsa2048", "rsa4096"]}})
    assert 'certificates."shop.test".keyType:' in message
    assert "one RSA and one ECDSA" in message


def test_dns_01_is_refused_saying_it_needs_a_dns_section() -> None:
    message = refused({"shop.test": {"challengeType": "dns"}})
    assert 'certificates."shop.test".challengeType:' in message
    assert "[dns]" in message and "dns-01" in message


def test_tables_that_are_not_tables_or_name_one_certificate_twice_are_errors() -> None:
    assert "[certificates] must be a table, got list" in refused(["shop.test"])
    assert 'certificates."shop.test" must be a table, got str' in refused({"shop.test": "ec256"})
    message = refused({"shop.test": {}, "SHOP.test.": {}})
    assert 'certificates."shop.test" and certificates."SHOP.test." name the same' in message


# -- desired state -------------------------------------------------------------------------------


class NoRuntime:
    def __init__(self, path: Path, specs: tuple[CertificateSpec, ...] = ()) -> None:
        self.path = path
        self.specs = specs

    def load(self) -> tuple[CertificateSpec, ...]:
        return self.specs


def source(tmp_path: Path, settings: dict[str, CertSettings], **kw: Any) -> DesiredSource:
    conf = tmp_path / "njet.conf"
    conf.write_text(CONF)
    runtime = kw.pop("runtime", NoRuntime(tmp_path / "runtime.json"))
    return DesiredSource(conf, KeyType.EC256, runtime, settings=settings,
                         settings_origin="/p/conf/cert-manager.toml", **kw)


def test_desired_specs_carry_the_settings_of_their_table(tmp_path: Path) -> None:
    desired = source(tmp_path, {
        "shop.test": CertSettings(KeyType.RSA2048, ChallengeType.TLS, "shortlived"),
        "blog.test": CertSettings(challenge_type=ChallengeType.HTTP),  # = [acme]'s: not set
        ".dot.test": CertSettings(key_type=KeyType.EC384),  # `.dot.test` is the spec dot.test
    }).load()
    shop, blog, dot = (desired.specs[d] for d in ("shop.test", "blog.test", "dot.test"))
    assert (shop.key_type, shop.challenge_type, shop.profile) == (
        KeyType.RSA2048, ChallengeType.TLS, "shortlived")
    assert shop.names == ("shop.test", "www.shop.test")
    assert (blog.key_type, blog.challenge_type, blog.profile) == (KeyType.EC256, None, None)
    assert dot.key_type is KeyType.EC384
    assert not [w for w in desired.warnings if w.origin.endswith("cert-manager.toml")]


def test_a_setting_equal_to_the_acme_default_is_left_unset(tmp_path: Path) -> None:
    desired = source(
        tmp_path, {"shop.test": CertSettings(challenge_type=ChallengeType.TLS, profile="p1")},
        default_challenge=ChallengeType.TLS, default_profile="p1",
    ).load()
    spec = desired.specs["shop.test"]
    assert (spec.challenge_type, spec.profile) == (None, None)


def test_runtime_announced_certificates_get_their_table_too(tmp_path: Path) -> None:
    announced = CertificateSpec(domain="new.test", names=("new.test",), source=Source.EVENT,
                                origin="event")
    desired = source(
        tmp_path, {"new.test": CertSettings(challenge_type=ChallengeType.TLS)},
        runtime=NoRuntime(tmp_path / "runtime.json", (announced,)),
    ).load()
    assert desired.specs["new.test"].challenge_type is ChallengeType.TLS


def test_a_table_naming_no_desired_certificate_is_a_warning_from_the_toml(
    tmp_path: Path,
) -> None:
    desired = source(tmp_path, {
        "shop.tset": CertSettings(key_type=KeyType.RSA2048),
        "www.shop.test": CertSettings(key_type=KeyType.RSA2048),
        "*.wild.test": CertSettings(key_type=KeyType.RSA2048),
    }).load()
    by_name = {w.name: w for w in desired.warnings}
    assert {by_name[n].origin for n in ("shop.tset", "www.shop.test", "*.wild.test")} == {
        "/p/conf/cert-manager.toml"}
    assert "a typo?" in by_name["shop.tset"].reason
    assert '[certificates."shop.tset"] has no effect' in by_name["shop.tset"].reason
    assert "of the certificate shop.test" in by_name["www.shop.test"].reason
    assert "dns-01" in by_name["*.wild.test"].reason
    assert all(s.key_type is KeyType.EC256 for s in desired.specs.values())
    text = plan_to_text(Plan(warnings=desired.warnings))
    assert "warning: /p/conf/cert-manager.toml: shop.tset: [certificates." in text


def test_no_tables_leave_the_desired_state_as_it_is() -> None:
    desired = Desired(specs={"a.test": CertificateSpec("a.test", ("a.test",))})
    assert apply_settings(desired, {}) is desired


def test_the_app_applies_the_tomls_tables(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "njet.conf").write_text(CONF)
    toml = tmp_path / "conf" / "cert-manager.toml"
    toml.write_text('[njet]\napiAddress = ""\n[acme]\nchallengeType = "tls"\n'
                    '[certificates."shop.test"]\nchallengeType = "http"\nkeyType = "ec384"\n'
                    '[certificates."nowhere.test"]\n')
    app = App(load_config(toml, prefix=tmp_path), read_only=True)
    desired = app.load_desired()
    shop = desired.specs["shop.test"]
    assert (shop.challenge_type, shop.key_type) == (ChallengeType.HTTP, KeyType.EC384)
    assert desired.specs["blog.test"].challenge_type is None
    assert [w.origin for w in desired.warnings if w.name == "nowhere.test"] == [str(toml)]


# -- the spec identity ---------------------------------------------------------------------------


def test_the_profile_is_part_of_the_spec_identity_and_the_challenge_type_is_not() -> None:
    base = CertificateSpec("a.test", ("a.test", "www.a.test"))
    before = hashlib.sha256(b"a.test,www.a.test|ec256").hexdigest()[:16]
    assert spec_hash(base, KeyType.EC256) == before  # no profile: the hash of before profiles
    with_profile = CertificateSpec("a.test", base.names, profile="shortlived")
    assert spec_hash(with_profile, KeyType.EC256) != before
    other = CertificateSpec("a.test", base.names, profile="tlsserver")
    assert spec_hash(other, KeyType.EC256) != spec_hash(with_profile, KeyType.EC256)
    tls = CertificateSpec("a.test", base.names, challenge_type=ChallengeType.TLS)
    assert spec_hash(tls, KeyType.EC256) == before


# -- diff ----------------------------------------------------------------------------------------


def one(kind: ActionKind, spec: CertificateSpec) -> Plan:
    return Plan(actions=(Action(kind, spec.domain, Reason.MISSING, "no certificate stored",
                                spec=spec, key_type=KeyType.EC256),))


def test_diff_names_a_challenge_type_other_than_the_acme_one() -> None:
    tls = CertificateSpec("a.test", ("a.test",), challenge_type=ChallengeType.TLS,
                          profile="shortlived")
    assert plan_to_text(one(ActionKind.ISSUE, tls)) == (
        "+ issue  a.test key=ec256 challenge=tls profile=shortlived  "
        "[Missing] no certificate stored")
    assert " challenge=tls" in plan_to_text(one(ActionKind.RENEW, tls))
    assert "challenge=" not in plan_to_text(one(ActionKind.APPLY, tls))
    plain = CertificateSpec("a.test", ("a.test",))
    assert "challenge=" not in plan_to_text(one(ActionKind.ISSUE, plain))
    [action] = plan_to_dict(one(ActionKind.ISSUE, tls))["actions"]
    assert (action["challenge_type"], action["profile"]) == ("tls", "shortlived")
    [action] = plan_to_dict(one(ActionKind.ISSUE, plain))["actions"]
    assert (action["challenge_type"], action["profile"]) == (None, None)


# -- the solver set ------------------------------------------------------------------------------


async def test_solvers_are_built_per_challenge_type_on_first_use(tmp_path: Path) -> None:
    cfg = parse_config({"acme": {"httpChallengeServerAddress": "127.0.0.1:0",
                                 "tlsChallengeServerAddress": "127.0.0.1:0"}},
                       prefix=tmp_path)
    solvers = build_solvers(cfg, None)
    assert solvers.types == {ChallengeType.HTTP, ChallengeType.TLS}
    assert solvers.built() == ()
    http = solvers.get(ChallengeType.HTTP)
    assert isinstance(http, LocalHttp01Solver) and solvers.built() == (http,)
    assert solvers.get(ChallengeType.HTTP) is http
    tls = solvers.get(ChallengeType.TLS)
    assert isinstance(tls, LocalTlsAlpn01Solver) and tls.ports == []  # listens only when needed
    await solvers.close()


async def test_http_01_goes_through_njet_when_proxied(tmp_path: Path) -> None:
    cfg = parse_config({"acme": {"proxyHttpChallengeServerIp": "127.0.0.1",
                                 "httpChallengeServerAddress": "127.0.0.1:0"}},
                       prefix=tmp_path)
    njet = NjetClient("http://127.0.0.1:9", timeout=1)
    try:
        solvers = build_solvers(cfg, njet)
        assert isinstance(solvers.get(ChallengeType.HTTP), NjetProxyHttp01Solver)
        assert isinstance(solvers.get(ChallengeType.TLS), LocalTlsAlpn01Solver)
        await solvers.close()
    finally:
        await njet.close()


def test_a_set_of_one_solver_refuses_the_other_type_naming_it() -> None:
    solvers = SolverSet.of(LocalHttp01Solver("127.0.0.1:0"))
    assert solvers.types == {ChallengeType.HTTP}
    with pytest.raises(ConfigError, match=r"no tls-alpn-01 solver is configured"):
        solvers.get(ChallengeType.TLS)


async def test_start_up_still_removes_what_the_njet_proxied_solver_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[NjetProxyHttp01Solver] = []

    async def remove_leftovers(self: NjetProxyHttp01Solver) -> list[str]:
        calls.append(self)
        return ["a location"]

    monkeypatch.setattr(NjetProxyHttp01Solver, "remove_leftovers", remove_leftovers)
    (tmp_path / "conf").mkdir()
    toml = tmp_path / "conf" / "cert-manager.toml"
    toml.write_text('[njet]\napiAddress = "http://127.0.0.1:9"\n[acme]\n'
                    'proxyHttpChallengeServerIp = "127.0.0.1"\n'
                    'httpChallengeServerAddress = "127.0.0.1:0"\n')
    app = App(load_config(toml, prefix=tmp_path))
    try:
        await app.prepare()
        assert len(calls) == 1 and calls[0] is app.solvers.get(ChallengeType.HTTP)
        assert [type(s) for s in app.solvers.built()] == [NjetProxyHttp01Solver]  # no tls one
    finally:
        await app.close()
