"""The dns-01 solver's bookkeeping with an in-memory provider: the TXT value, the pending
cleanups file across failures, and what is removed when (the DNS side is tests/integration/
test_dns01.py, against a real BIND)."""

from __future__ import annotations

from pathlib import Path

import pytest
from acme import challenges
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.jwk import JWKRSA

from controller.adapters.dns import solver as solver_module
from controller.adapters.dns.lookup import DnsLookup, Server
from controller.adapters.dns.pending import PendingCleanups, PendingRecord
from controller.adapters.dns.solver import Dns01Solver, record_name, txt_value
from controller.errors import ConfigError, TemporaryError
from controller.ports import ChallengeSolver, DnsProvider, LeftoverCleaner


class MemoryDns:
    """A DnsProvider holding TXT values in memory; `fail` makes the next calls raise."""

    def __init__(self) -> None:
        self.records: dict[str, set[str]] = {}
        self.fail_present: Exception | None = None
        self.fail_cleanup: Exception | None = None
        self.closed = False

    async def present(self, *, zone: str, fqdn: str, value: str) -> None:
        if self.fail_present is not None:
            raise self.fail_present
        self.records.setdefault(fqdn, set()).add(value)

    async def cleanup(self, *, zone: str, fqdn: str, value: str) -> None:
        if self.fail_cleanup is not None:
            raise self.fail_cleanup
        self.records.get(fqdn, set()).discard(value)

    async def close(self) -> None:
        self.closed = True


class StaticLookup(DnsLookup):
    """Every name in zone shop.test, no CNAME, one checked server."""

    def __init__(self) -> None:
        super().__init__([("192.0.2.1", 53)])

    async def zone_for(self, name: str) -> str:
        return "shop.test"

    async def follow_cname(self, name: str) -> str:
        return name


def make(tmp_path: Path, provider: MemoryDns, seen: list[str] | None = None,
         *, visible: bool = True, monkeypatch: pytest.MonkeyPatch) -> Dns01Solver:
    async def wait(fqdn: str, value: str, servers: list[Server], **_: object) -> int:
        if seen is not None:
            seen.append(value)
        if not visible:
            raise TemporaryError(f"dns-01: {fqdn} lagging: 192.0.2.1:53")
        assert value in provider.records.get(fqdn, set()), "checked before it was written"
        return 1

    monkeypatch.setattr(solver_module, "wait_visible", wait)
    return Dns01Solver(provider, provider_name="memory", lookup=StaticLookup(),
                       pending=PendingCleanups(tmp_path / "dns-cleanups.json"))


def test_the_txt_value_is_acmes_dns01_validation() -> None:
    key = JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    chall = challenges.DNS01(token=b"x" * 32)
    assert txt_value(chall.key_authorization(key)) == chall.validation(key)
    assert record_name("*.Shop.test.") == record_name("shop.test") == "_acme-challenge.shop.test"


def test_the_solver_and_providers_are_their_ports(tmp_path: Path) -> None:
    provider: DnsProvider = MemoryDns()
    solver: ChallengeSolver = Dns01Solver(provider, provider_name="m", lookup=StaticLookup(),
                                          pending=PendingCleanups(tmp_path / "p.json"))
    assert isinstance(solver, LeftoverCleaner) and solver.challenge_type == "dns-01"


async def test_present_notes_writes_and_waits_then_cleanup_removes_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = MemoryDns()
    seen: list[str] = []
    s = make(tmp_path, provider, seen, monkeypatch=monkeypatch)
    await s.present("*.shop.test", "tok", "tok.k")
    fqdn = "_acme-challenge.shop.test"
    assert provider.records[fqdn] == {txt_value("tok.k")} and seen == [txt_value("tok.k")]
    assert s.pending.load() == [PendingRecord("shop.test", fqdn, txt_value("tok.k"), "memory")]
    assert PendingCleanups(s.pending.path).load() == s.pending.load()  # on disk too
    await s.cleanup("*.shop.test", "tok", "tok.k")
    assert provider.records[fqdn] == set() and not s.pending.path.exists()
    await s.cleanup("*.shop.test", "tok", "tok.k")  # once more: nothing to do, no error
    await s.close()
    assert provider.closed


async def test_a_record_that_does_not_propagate_is_removed_before_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = MemoryDns()
    s = make(tmp_path, provider, visible=False, monkeypatch=monkeypatch)
    with pytest.raises(TemporaryError, match="lagging"):
        await s.present("shop.test", "tok", "tok.k")
    assert provider.records["_acme-challenge.shop.test"] == set()
    assert s.pending.load() == []


async def test_a_failed_write_that_cannot_be_undone_stays_noted_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = MemoryDns()
    provider.fail_present = provider.fail_cleanup = TemporaryError("rfc2136: timeout")
    s = make(tmp_path, provider, monkeypatch=monkeypatch)
    with pytest.raises(TemporaryError, match="timeout"):
        await s.present("shop.test", "tok", "tok.k")
    assert len(s.pending.load()) == 1  # the write may have landed: retried at start
    provider.fail_present = provider.fail_cleanup = None
    again = make(tmp_path, provider, monkeypatch=monkeypatch)  # the next run
    lines = await again.remove_leftovers()
    assert len(lines) == 1 and "_acme-challenge.shop.test" in lines[0]
    assert again.pending.load() == []


async def test_a_cleanup_that_fails_is_logged_not_raised_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider = MemoryDns()
    s = make(tmp_path, provider, monkeypatch=monkeypatch)
    await s.present("shop.test", "tok", "tok.k")
    provider.fail_cleanup = ConfigError("rfc2136: NOTAUTH")
    await s.cleanup("shop.test", "tok", "tok.k")
    assert len(s.pending.load()) == 1
    assert await s.remove_leftovers() == []  # still failing: still noted


def test_an_unreadable_pending_file_is_read_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "dns-cleanups.json"
    path.write_text("{not json")
    pending = PendingCleanups(path)
    assert pending.load() == []
    pending.add(PendingRecord("z.test", "_acme-challenge.z.test", "v", "rfc2136"))
    assert PendingCleanups(path).load()[0].value == "v"
    assert path.stat().st_mode & 0o777 == 0o600


def test_build_provider_builds_the_configured_kind_with_paths_from_the_prefix(
    tmp_path: Path,
) -> None:
    from controller.adapters.dns.exec_provider import ExecProvider
    from controller.adapters.dns.lexicon_provider import LexiconProvider
    from controller.adapters.dns.providers import build_provider
    from controller.adapters.dns.rfc2136 import Rfc2136Provider
    from controller.config import parse_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "k.secret").write_text("c2VjcmV0\n")
    (tmp_path / "conf" / "cf.toml").write_text('auth_token = "t0ken-value"\n')
    (tmp_path / "conf" / "cf.toml").chmod(0o600)

    def built(**dns: object) -> object:
        cfg = parse_config({"dns": dns}, prefix=tmp_path)
        assert cfg.dns is not None
        return build_provider(cfg.dns, tmp_path)

    assert isinstance(built(provider="rfc2136", nameserver="127.0.0.1:5353",
                            tsigKeyName="k", tsigSecretFile="conf/k.secret"), Rfc2136Provider)
    assert isinstance(built(provider="exec", command=["hooks/dns.sh", "-v"]), ExecProvider)
    assert isinstance(built(provider="cloudflare", credentialsFile="conf/cf.toml"),
                      LexiconProvider)
    with pytest.raises(ConfigError, match=r"tsigSecretFile .*cannot read"):
        built(provider="rfc2136", nameserver="127.0.0.1", tsigKeyName="k",
              tsigSecretFile="conf/missing")
