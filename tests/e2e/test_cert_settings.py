"""Per-certificate settings end to end against a real Pebble, store-only: one run issues one
certificate through http-01 and one through tls-alpn-01 (Pebble validates both on the harness's
ports), each with its own key type; `diff` shows the choice before; the profile sent in newOrder
is the certificate's own, else [acme]'s."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from acme import client as acme_client
from acme import messages

from controller import app as app_module
from controller.adapters.acme.client import AcmeIssuer
from controller.adapters.acme.order import OrderDriver
from controller.adapters.challenges.solvers import SolverSet
from controller.certinfo import read_cert_info
from controller.config import load_config, parse_config
from controller.errors import ConfigError
from controller.model import CertificateSpec, ChallengeType, KeyType
from controller.paths import StorePaths
from controller.ports import ChallengeSolver
from tests.e2e.harness import Prefix, render_toml, store_only_toml
from tests.support.tomlgen import acme_section

pytestmark = pytest.mark.pebble


class Recording:
    """A real solver, and a record of every challenge it presented: (ACME type, name)."""

    def __init__(self, inner: ChallengeSolver, log: list[tuple[str, str]]) -> None:
        self.inner = inner
        self.challenge_type = inner.challenge_type
        self.log = log

    async def present(self, domain: str, token: str, key_authorization: str) -> None:
        await self.inner.present(domain, token, key_authorization)
        self.log.append((self.challenge_type, domain))

    async def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        await self.inner.cleanup(domain, token, key_authorization)

    async def close(self) -> None:
        await self.inner.close()


def recording_solvers(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[tuple[str, str]], list[ChallengeType]]:
    """Wrap app.py's solver set: (presented challenges, challenge types whose solver was built)."""
    presented: list[tuple[str, str]] = []
    built: list[ChallengeType] = []
    original = app_module.build_solvers

    def build(config: Any, njet: Any, fleet: Any = None) -> SolverSet:
        real = original(config, njet, fleet)

        def factory(kind: ChallengeType) -> Callable[[], ChallengeSolver]:
            def make() -> ChallengeSolver:
                built.append(kind)
                return Recording(real.get(kind), presented)

            return make

        return SolverSet({kind: factory(kind) for kind in real.types})

    monkeypatch.setattr(app_module, "build_solvers", build)
    return presented, built


def unique(label: str) -> str:
    return f"{label}-{time.monotonic_ns() % 10**9}.test"


async def test_one_run_issues_each_certificate_with_its_own_challenge_and_key_type(
    tmp_path: Path, pebble: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    web, shop = unique("web"), unique("shop")
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(f"""
http {{
    server {{ listen 127.0.0.1:8443 ssl; server_name {web}; ssl_certificate_management acme; }}
    server {{ listen 127.0.0.1:8444 ssl; server_name {shop} www.{shop};
             ssl_certificate_management acme; }}
}}
""")
    # [acme]: http-01 and ec256 for every certificate that does not say otherwise
    toml = render_toml(store_only_toml(pebble)) + f"""
[certificates."{web}"]
challengeType = "http"
[certificates."{shop.upper()}"]
challengeType = "tls"
keyType = "rsa2048"
colour = "blue"
[certificates."shop.tset"]
keyType = "rsa4096"
"""
    prefix.toml.parent.mkdir(parents=True, exist_ok=True)
    prefix.toml.write_text(toml)

    before = prefix.cli("diff")
    assert before.returncode == 2, before.stderr
    lines = before.stdout.splitlines()
    [web_line] = [ln for ln in lines if ln.startswith(f"+ issue  {web}")]
    [shop_line] = [ln for ln in lines if ln.startswith(f"+ issue  {shop}")]
    assert " key=ec256 " in web_line and "challenge=" not in web_line
    assert f"{shop} www.{shop} key=rsa2048 challenge=tls  [Missing]" in shop_line
    [typo] = [ln for ln in lines if "shop.tset" in ln]
    assert typo.startswith(f"warning: {prefix.toml}: shop.tset: ") and "a typo?" in typo
    assert f'certificates."{shop}".colour' in before.stderr  # the unknown key, by its table

    presented, built = recording_solvers(monkeypatch)
    app = app_module.App(load_config(prefix.toml, prefix=prefix.root))
    try:
        result = await app.reconciler.pass_once()
    finally:
        await app.close()
    assert sorted(o.action.domain for o in result.outcomes if o.ok) == sorted([web, shop])
    assert sorted(presented) == sorted([
        ("http-01", web), ("tls-alpn-01", shop), ("tls-alpn-01", f"www.{shop}")])
    assert sorted(built) == [ChallengeType.HTTP, ChallengeType.TLS]

    web_info = read_cert_info((prefix.certs / f"{web}.crt").read_bytes())
    shop_info = read_cert_info((prefix.certs / f"{shop}.crt").read_bytes())
    assert web_info.key_type is KeyType.EC256
    assert shop_info.key_type is KeyType.RSA2048
    assert set(shop_info.names) == {shop, f"www.{shop}"} and "Pebble" in shop_info.issuer

    after = prefix.cli("diff")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "in sync" in after.stdout and "shop.tset" in after.stdout


def advertise_profiles(monkeypatch: pytest.MonkeyPatch, *profiles: str) -> list[str | None]:
    """Pebble 2.4 has no profiles: add them to the directory it serves, and record the profile
    of every newOrder (which Pebble accepts and ignores)."""
    original = acme_client.ClientV2.get_directory
    sent: list[str | None] = []

    def get_directory(cls: type, url: str, net: Any) -> messages.Directory:
        directory = original(url, net)
        fields = {k: v for k, v in directory.to_partial_json().items() if k != "meta"}
        meta = {"profiles": {p: f"the {p} profile" for p in profiles}}
        return messages.Directory.from_json({**fields, "meta": meta})

    original_order = OrderDriver.new_order

    def new_order(self: OrderDriver, csr_pem: bytes, profile: str | None, *args: Any) -> Any:
        sent.append(profile)
        return original_order(self, csr_pem, profile, *args)

    monkeypatch.setattr(acme_client.ClientV2, "get_directory", classmethod(get_directory))
    monkeypatch.setattr(OrderDriver, "new_order", new_order)
    return sent


def issuer_for(pebble: Any, tmp_path: Path, **acme: Any) -> AcmeIssuer:
    section = acme_section(pebble, email="profiles@example.test", **acme)
    return AcmeIssuer.from_config(parse_config({"acme": section}, prefix=tmp_path),
                                  StorePaths(tmp_path))


async def test_the_order_carries_the_certificates_profile_else_the_acme_one(
    tmp_path: Path, pebble: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = advertise_profiles(monkeypatch, "classic", "shortlived")
    issuer = issuer_for(pebble, tmp_path, profile="classic", profileRequired=True)
    try:
        own = unique("own")
        await issuer.issue(CertificateSpec(own, (own,), profile="shortlived"), KeyType.EC256)
        default = unique("default")
        await issuer.issue(CertificateSpec(default, (default,)), KeyType.EC256)
        assert sent == ["shortlived", "classic"]
        with pytest.raises(ConfigError) as err:
            await issuer.issue(CertificateSpec("x.test", ("x.test",), profile="nope"),
                               KeyType.EC256)
        assert str(err.value).startswith("[certificates.\"x.test\"] profile 'nope' is not offered")
        assert "classic, shortlived" in str(err.value)
        assert len(sent) == 2  # refused before any order
        # only http-01 was needed: no tls-alpn-01 solver was ever built
        assert [s.challenge_type for s in issuer.solvers.built()] == ["http-01"]
    finally:
        await issuer.close()


async def test_a_certificates_profile_the_ca_does_not_offer_is_a_config_error(
    tmp_path: Path, pebble: Any
) -> None:
    issuer = issuer_for(pebble, tmp_path)
    try:
        with pytest.raises(ConfigError, match=r'\[certificates\."p\.test"\] profile .*offers none'):
            await issuer.issue(CertificateSpec("p.test", ("p.test",), profile="shortlived",
                                               profile_required=True), KeyType.EC256)
        plain = unique("plain")
        await issuer.issue(CertificateSpec(plain, (plain,)), KeyType.EC256)
    finally:
        await issuer.close()
