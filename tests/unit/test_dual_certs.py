"""Dual certificates (`keyType = ["rsa2048", "ec256"]`): the setting, the desired expansion into
two specs (`<name>` and `<name>@<slot>`), store keys and the lego store's scan, the plan per slot,
a reconcile pass over the fakes that applies each slot with its own cert_type and probes each
with its own key type, and the `diff` note when a key type leaves the list.
(End to end against Pebble and the NJet simulator: tests/e2e/test_dual_certs.py.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.store.lego import LegoStore
from controller.adapters.store.quarantine import Quarantine, parse_entry
from controller.adapters.store.statusfile import StatusFiles
from controller.app import App
from controller.certinfo import fingerprint_pem, read_cert_info
from controller.config import load_config, parse_config
from controller.desired_source import CertSettings, DesiredSource, expand_dual
from controller.errors import ConfigError
from controller.execute import Executor
from controller.model import (
    ActionKind,
    CertificateSpec,
    Desired,
    KeyType,
    NjetTarget,
    Observed,
    ServedCert,
    StoredCert,
)
from controller.observe import Gatherer
from controller.paths import (
    StorePaths,
    is_store_name,
    safe_file_name,
    split_store_key,
    store_key,
    validate_domain,
    validate_store_key,
)
from controller.plan import plan
from controller.policy import PolicySettings
from controller.reasons import Reason
from controller.reconcile import Reconciler
from controller.render import plan_to_dict, plan_to_text
from controller.status import CertStatus
from tests.certbuilder import make_cert
from tests.fakes import (
    FakeBlock,
    FakeClock,
    FakeDesired,
    FakeIssuer,
    FakeNjet,
    FakeProber,
    FakeRepeated,
    MemoryStatus,
    MemoryStore,
)

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
DUAL = (KeyType.RSA2048, KeyType.EC256)
CONF = """http {
    server { listen 127.0.0.1:8443 ssl; server_name shop.test www.shop.test;
             ssl_certificate certs/boot.crt; ssl_certificate_key certs/boot.key;
             ssl_certificate_management acme; }
    server { listen 127.0.0.1:8443 ssl; server_name blog.test; ssl_certificate_management acme; }
}
"""
SETTINGS = PolicySettings(store_only=False, default_key_type=KeyType.RSA2048,
                          delete_grace=timedelta(hours=24))


# -- the setting ---------------------------------------------------------------------------------


def config(**sections: Any) -> Any:
    return parse_config(sections, prefix=Path("/p"), source="cm.toml")


def test_key_type_lists_of_one_rsa_and_one_ecdsa_are_dual_globally_and_per_certificate() -> None:
    assert config(acme={"keyType": ["rsa2048", "ec256"]}).acme.keyType == DUAL
    assert config(acme={"keyType": ["ec384", "rsa4096"]}).acme.keyType == (
        KeyType.EC384, KeyType.RSA4096)
    table = config(certificates={"shop.test": {"keyType": ["ec256", "rsa2048"]}})
    assert table.certificates["shop.test"].keyType == (KeyType.EC256, KeyType.RSA2048)
    assert config(acme={"keyType": "ec256"}).acme.keyType is KeyType.EC256


@pytest.mark.parametrize(("value", "why"), [
    (["rsa2048", "rsa4096"], "not two RSA ones"),
    (["ec256", "ec256"], "not two ECDSA ones"),
    (["ec256"], "exactly two"),
    (["rsa2048", "ec256", "ec384"], "exactly two"),
    (["rsa2048", "s3cr3t"], "each key type of the list is one of rsa2048"),
])
def test_other_lists_are_errors_naming_the_key(value: list[str], why: str) -> None:
    for sections, key in (({"acme": {"keyType": value}}, "acme.keyType"),
                          ({"certificates": {"shop.test": {"keyType": value}}},
                           'certificates."shop.test".keyType')):
        with pytest.raises(ConfigError) as err:
            config(**sections)
        message = str(err.value)
        assert message.startswith(f"cm.toml: {key}: "), message
        assert why in message and "s3cr3t" not in message


# -- store keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", ["shop.test@ecc", "shop.test@rsa", "_.w.test@ecc", "a@rsa"])
def test_a_second_slot_store_name_is_a_store_name(stem: str) -> None:
    assert is_store_name(stem)


@pytest.mark.parametrize("stem", ["shop.test@foo", "shop.test@ecc@rsa", "@ecc", "shop.test@",
                                  "Shop.test@ecc", "shop.test@ECC", "shop.test.@ecc",
                                  "shop@test.ecc", "*.w.test@ecc", "../x@ecc"])
def test_any_other_at_sign_is_no_store_name(stem: str) -> None:
    assert not is_store_name(stem)


def test_store_keys_split_validate_and_name_their_files() -> None:
    assert store_key("shop.test", "ecc") == "shop.test@ecc"
    assert store_key("shop.test") == "shop.test"
    assert split_store_key("*.w.test@rsa") == ("*.w.test", "rsa")
    assert validate_store_key("Shop.Test@ECC") == "shop.test@ecc"
    assert safe_file_name("*.w.test@ecc") == "_.w.test@ecc"
    paths = StorePaths(Path("/p"))
    assert paths.cert("shop.test@ecc") == Path("/p/.lego/certificates/shop.test@ecc.crt")
    assert paths.status_file("shop.test@ecc") == Path("/p/.lego/status/shop.test@ecc.json")
    for bad in ("shop.test@foo", "shop.test@ecc@rsa", "@ecc"):
        with pytest.raises(ConfigError, match="<name>@ecc or <name>@rsa"):
            validate_store_key(bad)
    with pytest.raises(ConfigError, match="not a valid DNS name"):
        validate_domain("shop.test@ecc")  # a host name never has one
    with pytest.raises(ConfigError):
        safe_file_name("shop.test@foo")


# -- the lego store ------------------------------------------------------------------------------


def write_pair(paths: StorePaths, stem: str, names: list[str], key_type: KeyType) -> str:
    made = make_cert(names, key_type=key_type)
    paths.certificates.mkdir(parents=True, exist_ok=True)
    (paths.certificates / f"{stem}.crt").write_bytes(made.fullchain_pem)
    (paths.certificates / f"{stem}.key").write_bytes(made.key_pem)
    (paths.certificates / f"{stem}.key").chmod(0o600)
    return fingerprint_pem(made.cert_pem)


def test_the_scan_keys_a_second_slot_by_its_store_key_and_refuses_other_at_signs(
    tmp_path: Path,
) -> None:
    paths = StorePaths(tmp_path)
    rsa = write_pair(paths, "shop.test", ["shop.test"], KeyType.RSA2048)
    ecc = write_pair(paths, "shop.test@ecc", ["shop.test"], KeyType.EC256)
    write_pair(paths, "shop.test@foo", ["shop.test"], KeyType.EC256)
    write_pair(paths, "shop.test@ecc@rsa", ["shop.test"], KeyType.RSA2048)
    usable, problems = LegoStore(paths).load_all()
    assert set(usable) == {"shop.test", "shop.test@ecc"}
    assert usable["shop.test"].info.fingerprint == rsa
    assert usable["shop.test@ecc"].info.fingerprint == ecc
    assert usable["shop.test@ecc"].domain == "shop.test@ecc"
    assert set(problems) == {"shop.test@foo", "shop.test@ecc@rsa"}
    assert "<name>@ecc or <name>@rsa" in problems["shop.test@foo"]
    assert str(paths.certificates / "shop.test@foo.crt") in problems["shop.test@foo"]


def test_a_second_slot_is_stored_in_its_own_files_with_its_domain_in_the_json(
    tmp_path: Path,
) -> None:
    paths = StorePaths(tmp_path)
    store = LegoStore(paths)
    made = make_cert(["shop.test", "www.shop.test"], key_type=KeyType.EC256)
    stored = store.put("shop.test@ecc", made.issued("https://ca.test/cert/9"))
    assert stored.domain == "shop.test@ecc"
    assert sorted(p.name for p in paths.certificates.iterdir()) == [
        "shop.test@ecc.crt", "shop.test@ecc.issuer.crt", "shop.test@ecc.json",
        "shop.test@ecc.key"]
    doc = json.loads((paths.certificates / "shop.test@ecc.json").read_text())
    assert doc["domain"] == "shop.test" and doc["certUrl"] == "https://ca.test/cert/9"
    got = store.get("shop.test@ecc")
    assert got is not None and got.info.key_type is KeyType.EC256
    assert store.get("shop.test") is None  # the first slot is another certificate

    where = store.quarantine("shop.test@ecc")
    assert where is not None and not (paths.certificates / "shop.test@ecc.crt").exists()
    entry = Path(where).name
    parsed = parse_entry(entry)
    assert parsed is not None and parsed[0] == "shop.test@ecc"
    [pair] = Quarantine(paths).entries()
    assert pair.domain == "shop.test@ecc" and pair.names == ("shop.test", "www.shop.test")


def test_a_second_slot_has_its_own_status_file(tmp_path: Path) -> None:
    paths = StorePaths(tmp_path)
    files = StatusFiles(paths)
    files.save(CertStatus(domain="shop.test@ecc", attempts=1))
    files.save(CertStatus(domain="shop.test"))
    assert sorted(p.name for p in paths.status.iterdir()) == ["shop.test.json",
                                                              "shop.test@ecc.json"]
    assert StatusFiles(paths).load_all()["shop.test@ecc"].attempts == 1


# -- desired -------------------------------------------------------------------------------------


class NoRuntime:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[CertificateSpec, ...]:
        return ()


def source(tmp_path: Path, key_type: Any, settings: dict[str, CertSettings] | None = None,
           ) -> DesiredSource:
    conf = tmp_path / "njet.conf"
    conf.write_text(CONF)
    return DesiredSource(conf, key_type, NoRuntime(tmp_path / "runtime.json"),
                         settings=settings or {})


def test_a_global_pair_of_key_types_makes_two_specs_per_block(tmp_path: Path) -> None:
    desired = source(tmp_path, DUAL).load()
    assert sorted(desired.specs) == ["blog.test", "blog.test@ecc", "shop.test", "shop.test@ecc"]
    first, second = desired.specs["shop.test"], desired.specs["shop.test@ecc"]
    assert (first.key, first.key_type, first.slot, first.dual) == (
        "shop.test", KeyType.RSA2048, None, True)
    assert (second.key, second.key_type, second.slot, second.dual) == (
        "shop.test@ecc", KeyType.EC256, "ecc", True)
    assert second.domain == "shop.test"  # the DNS name, SNI and NJet target stay the domain's
    assert first.names == second.names == ("shop.test", "www.shop.test")
    assert first.listens == second.listens == ("127.0.0.1:8443",)
    assert first.bootstrap_cert is None and second.bootstrap_cert is None


def test_a_table_sets_or_overrides_the_pair_per_certificate(tmp_path: Path) -> None:
    desired = source(tmp_path, KeyType.EC256, {
        "shop.test": CertSettings(key_type=(KeyType.EC384, KeyType.RSA4096))}).load()
    assert sorted(desired.specs) == ["blog.test", "shop.test", "shop.test@rsa"]
    assert desired.specs["shop.test"].key_type is KeyType.EC384
    assert desired.specs["shop.test@rsa"].key_type is KeyType.RSA4096
    assert not desired.specs["blog.test"].dual
    single = source(tmp_path, DUAL, {"blog.test": CertSettings(key_type=KeyType.EC256)}).load()
    assert sorted(single.specs) == ["blog.test", "shop.test", "shop.test@ecc"]
    assert single.specs["blog.test"].key_type is KeyType.EC256


def test_expand_dual_leaves_single_certificates_alone() -> None:
    desired = Desired(specs={"a.test": CertificateSpec("a.test", ("a.test",))})
    assert expand_dual(desired, {}, KeyType.EC256).specs == desired.specs
    assert expand_dual(desired, {}, None).specs == desired.specs


def test_the_app_reads_a_dual_key_type_from_the_toml(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "njet.conf").write_text(CONF)
    toml = tmp_path / "conf" / "cert-manager.toml"
    toml.write_text('[njet]\napiAddress = ""\n[acme]\nkeyType = ["rsa2048", "ec256"]\n'
                    '[certificates."blog.test"]\nkeyType = ["ec384", "rsa4096"]\n')
    app = App(load_config(toml, prefix=tmp_path), read_only=True)
    assert sorted(app.load_desired().specs) == [
        "blog.test", "blog.test@rsa", "shop.test", "shop.test@ecc"]
    assert app.reconciler.settings.default_key_type is KeyType.RSA2048


# -- the plan per slot ---------------------------------------------------------------------------


def dual_desired(first: KeyType = KeyType.RSA2048, second: KeyType = KeyType.EC256) -> Desired:
    base = CertificateSpec("shop.test", ("shop.test", "www.shop.test"),
                           listens=("127.0.0.1:8443",))
    return expand_dual(Desired(specs={"shop.test": base}), {}, (first, second))


def stored(key: str, key_type: KeyType, *, lifetime: timedelta = timedelta(days=90),
           ) -> StoredCert:
    made = make_cert(["shop.test", "www.shop.test"], key_type=key_type,
                     not_before=NOW - timedelta(days=1), lifetime=lifetime)
    return StoredCert(key, read_cert_info(made.fullchain_pem), key_matches=True)


TARGET = (NjetTarget(("127.0.0.1:8443",), ("shop.test", "www.shop.test")),)


def test_the_plan_issues_each_slot_under_its_store_key_to_the_same_block() -> None:
    desired = dual_desired()
    observed = Observed(stored={}, njet_targets={k: TARGET for k in desired.specs})
    p = plan(desired, observed, {}, NOW, SETTINGS)
    assert [(a.kind, a.domain, a.key_type) for a in p.actions] == [
        (ActionKind.ISSUE, "shop.test", KeyType.RSA2048),
        (ActionKind.ISSUE, "shop.test@ecc", KeyType.EC256)]
    assert all(a.targets == TARGET for a in p.actions)
    assert p.actions[0].spec_hash != p.actions[1].spec_hash
    assert not p.notes  # no bootstrap note: both key types are configured
    text = plan_to_text(p)
    assert "+ issue  shop.test www.shop.test key=ec256 store=shop.test@ecc  [" in text
    assert "+ issue  shop.test www.shop.test key=rsa2048  [" in text
    assert [a["slot"] for a in plan_to_dict(p)["actions"]] == [None, "ecc"]


def test_a_slot_that_is_not_served_is_applied_alone() -> None:
    desired = dual_desired()
    pairs = {"shop.test": stored("shop.test", KeyType.RSA2048),
             "shop.test@ecc": stored("shop.test@ecc", KeyType.EC256)}
    served = {"shop.test": ServedCert("shop.test", "127.0.0.1:8443",
                                      pairs["shop.test"].info.fingerprint),
              "shop.test@ecc": ServedCert("shop.test@ecc", "127.0.0.1:8443", "0" * 64)}
    statuses = {k: CertStatus(domain=k) for k in pairs}
    observed = Observed(stored=pairs, served=served,
                        njet_targets={k: TARGET for k in desired.specs})
    p = plan(desired, observed, statuses, NOW, SETTINGS)
    assert [(a.kind, a.domain) for a in p.actions] == [(ActionKind.APPLY, "shop.test@ecc")]
    served["shop.test@ecc"] = ServedCert("shop.test@ecc", "127.0.0.1:8443",
                                         pairs["shop.test@ecc"].info.fingerprint)
    assert plan(desired, observed, statuses, NOW, SETTINGS).in_sync


def test_a_key_type_removed_from_the_list_orphans_its_slot_and_diff_says_it_stays_served(
) -> None:
    single = {"shop.test": CertificateSpec("shop.test", ("shop.test", "www.shop.test"),
                                           listens=("127.0.0.1:8443",),
                                           key_type=KeyType.RSA2048)}
    pairs = {"shop.test": stored("shop.test", KeyType.RSA2048),
             "shop.test@ecc": stored("shop.test@ecc", KeyType.EC256)}
    statuses = {k: CertStatus(domain=k, applied_fingerprint=v.info.fingerprint)
                for k, v in pairs.items()}
    observed = Observed(stored=pairs, njet_targets={"shop.test": TARGET})
    p = plan(Desired(specs=single), observed, statuses, NOW, SETTINGS)
    assert p.actions == ()
    assert [(s.domain, s.reason) for s in p.scheduled] == [
        ("shop.test@ecc", Reason.ORPHAN_GRACE)]
    [note] = p.notes
    expires = pairs["shop.test@ecc"].info.not_after.isoformat()
    assert note.startswith("shop.test@ecc: keyType no longer has an ECDSA key type")
    assert f"until it expires ({expires})" in note and "ECDSA-capable clients" in note
    assert f"warning: {note}" in plan_to_text(p)
    # once its grace period is over it goes to quarantine like any undesired certificate
    orphaned = {**statuses, "shop.test@ecc": CertStatus(domain="shop.test@ecc",
                                                        orphaned_at=NOW - timedelta(days=2))}
    later = plan(Desired(specs=single), observed, orphaned, NOW, SETTINGS)
    assert [(a.kind, a.domain) for a in later.actions] == [(ActionKind.DELETE, "shop.test@ecc")]
    assert later.notes == p.notes


def test_when_the_first_key_type_goes_the_old_first_certificate_is_the_one_left_served() -> None:
    """[rsa2048, ec256] -> ec256: the first certificate is renewed as ECDSA (taking the ECDSA
    slot over from shop.test@ecc), and the RSA one NJet served stays served."""
    single = {"shop.test": CertificateSpec("shop.test", ("shop.test", "www.shop.test"),
                                           listens=("127.0.0.1:8443",),
                                           key_type=KeyType.EC256)}
    pairs = {"shop.test": stored("shop.test", KeyType.RSA2048),
             "shop.test@ecc": stored("shop.test@ecc", KeyType.EC256)}
    statuses = {k: CertStatus(domain=k) for k in pairs}
    observed = Observed(stored=pairs, njet_targets={"shop.test": TARGET})
    p = plan(Desired(specs=single), observed, statuses, NOW, SETTINGS)
    assert [(a.kind, a.domain, a.reason) for a in p.actions] == [
        (ActionKind.RENEW, "shop.test", Reason.KEY_TYPE_CHANGED)]
    [note] = p.notes
    assert note.startswith("shop.test: keyType no longer has an RSA key type")
    assert "RSA-only clients" in note


def test_no_note_while_both_slots_are_wanted_or_when_the_whole_block_left() -> None:
    pairs = {"shop.test": stored("shop.test", KeyType.RSA2048),
             "shop.test@ecc": stored("shop.test@ecc", KeyType.EC256)}
    statuses = {k: CertStatus(domain=k) for k in pairs}
    desired = dual_desired()
    both = plan(desired, Observed(stored=pairs), statuses, NOW, SETTINGS)
    assert not both.notes
    gone = plan(Desired(specs={}), Observed(stored=pairs), statuses, NOW, SETTINGS)
    assert not [n for n in gone.notes if "keyType" in n]
    assert {s.domain for s in gone.scheduled} == {"shop.test", "shop.test@ecc"}


# -- a pass over the fakes -----------------------------------------------------------------------


async def test_a_pass_applies_each_slot_with_its_cert_type_and_probes_each_with_its_key_type(
) -> None:
    clock = FakeClock()
    store, issuer, statuses = MemoryStore(), FakeIssuer(clock), MemoryStatus()
    desired = dual_desired()
    boot = make_cert(["shop.test"], key_type=KeyType.EC256, self_signed=True)
    block = FakeBlock(("127.0.0.1:8443",), ("shop.test", "www.shop.test"),
                      served={"ecc": fingerprint_pem(boot.cert_pem)},
                      config_cert_type="ecc")
    njet = FakeNjet([block])
    prober = FakeProber(njet)

    async def no_sleep(_seconds: float) -> None:
        return None

    executor = Executor(store=store, issuer_factory=issuer.factory, njet=njet,
                        prober=prober, probe_timeout=1.0, repeated_error=FakeRepeated,
                        clock=clock, sleep=no_sleep)
    rec = Reconciler(settings=SETTINGS, load_desired=FakeDesired(desired.specs.values()),
                     gatherer=Gatherer(store, SETTINGS, njet=njet, prober=prober,
                                       probe_timeout=1.0),
                     executor=executor, status_store=statuses, clock=clock)
    result = await rec.converge(probe=True)
    assert result.plan.in_sync
    assert sorted(issuer.orders) == [("shop.test", KeyType.EC256),
                                     ("shop.test", KeyType.RSA2048)]
    rsa, ecc = store.get("shop.test"), store.get("shop.test@ecc")
    assert rsa is not None and rsa.info.key_type is KeyType.RSA2048
    assert ecc is not None and ecc.info.key_type is KeyType.EC256
    assert sorted((p.cert_type, p.fingerprint) for p in njet.puts) == sorted(
        [("rsa", rsa.info.fingerprint), ("ecc", ecc.info.fingerprint)])
    assert all(p.server_names[0] == "shop.test" for p in njet.puts)
    assert block.served == {"rsa": rsa.info.fingerprint, "ecc": ecc.info.fingerprint}
    assert statuses.records["shop.test"].applied_fingerprint == rsa.info.fingerprint
    assert statuses.records["shop.test@ecc"].applied_fingerprint == ecc.info.fingerprint

    prober.calls.clear()
    again = await rec.pass_once(probe=True)
    assert again.plan.in_sync and again.outcomes == []
    assert sorted(prober.calls) == [("127.0.0.1:8443", "shop.test", "ecc"),
                                    ("127.0.0.1:8443", "shop.test", "rsa")]
    assert again.observed.served["shop.test@ecc"].fingerprint == ecc.info.fingerprint
    assert again.observed.served["shop.test"].fingerprint == rsa.info.fingerprint


async def test_the_repeated_trap_of_one_slot_renews_that_slot_only() -> None:
    """NJet restarted and serves its config certificate again: re-adding the block's first
    dynamic certificate (the RSA one, pushed first) is answered "repeated" and not served, so
    that slot alone gets a fresh key and certificate; the ECDSA slot is re-applied as it is."""
    clock = FakeClock()
    store, issuer, statuses = MemoryStore(), FakeIssuer(clock), MemoryStatus()
    desired = dual_desired()
    boot = fingerprint_pem(make_cert(["shop.test"], key_type=KeyType.EC256,
                                     self_signed=True).cert_pem)
    block = FakeBlock(("127.0.0.1:8443",), ("shop.test", "www.shop.test"),
                      served={"ecc": boot}, config_cert_type="ecc")
    njet = FakeNjet([block])
    prober = FakeProber(njet)

    async def no_sleep(_seconds: float) -> None:
        return None

    executor = Executor(store=store, issuer_factory=issuer.factory, njet=njet, prober=prober,
                        probe_timeout=1.0, repeated_error=FakeRepeated, clock=clock,
                        sleep=no_sleep, concurrency=1)  # the RSA slot is pushed first
    rec = Reconciler(settings=SETTINGS, load_desired=FakeDesired(desired.specs.values()),
                     gatherer=Gatherer(store, SETTINGS, njet=njet, prober=prober,
                                       probe_timeout=1.0),
                     executor=executor, status_store=statuses, clock=clock)
    assert (await rec.converge(probe=True)).plan.in_sync
    assert [p.cert_type for p in njet.puts] == ["rsa", "ecc"]
    old_rsa, old_ecc = (store.get(k) for k in ("shop.test", "shop.test@ecc"))
    assert old_rsa is not None and old_ecc is not None

    block.served = {"ecc": boot}  # a restart without the retained records
    trapped = await rec.pass_once(probe=True)
    by_key = {o.action.domain: o for o in trapped.outcomes}
    assert by_key["shop.test"].needs_new_key and not by_key["shop.test"].ok
    assert by_key["shop.test@ecc"].ok
    assert statuses.records["shop.test"].new_key
    assert not statuses.records["shop.test@ecc"].new_key

    backoff = statuses.records["shop.test"].backoff_until
    assert backoff is not None
    clock.now = backoff  # the per-certificate backoff of the failed apply is over
    renewed = await rec.pass_once(probe=False)
    assert [(a.kind, a.domain) for a in renewed.plan.actions] == [
        (ActionKind.RENEW, "shop.test")]
    new_rsa = store.get("shop.test")
    assert new_rsa is not None and new_rsa.info.fingerprint != old_rsa.info.fingerprint
    assert block.served == {"rsa": new_rsa.info.fingerprint, "ecc": old_ecc.info.fingerprint}


def test_a_gc_confirmation_may_name_a_second_slot(tmp_path: Path) -> None:
    from controller.adapters.store.gcconfirm import GcConfirmFile
    from controller.policy import GcRelease

    files = GcConfirmFile(StorePaths(tmp_path))
    files.save(GcRelease(names=frozenset({"shop.test@ecc", "blog.test"}), confirmed_at=NOW,
                         by="cli"))
    got = files.load()
    assert got is not None and got.names == {"shop.test@ecc", "blog.test"}
