"""ACME profiles (preferred or required, recorded per certificate, a change renews) and keys (a
fresh one per renewal unless reuseKey) through plan, fold, the executor and the issuer's profile
choice. (End to end against Pebble behind a profiles shim: tests/e2e/test_profiles_keys.py.)"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.adapters.acme.checks import check_reused_key
from controller.adapters.acme.client import AcmeIssuer
from controller.adapters.challenges.solvers import LocalHttp01Solver
from controller.app import cert_settings, policy_settings
from controller.config import parse_config
from controller.desired_source import CertSettings, apply_settings
from controller.errors import ConfigError, PermanentError
from controller.execute import Executor
from controller.fold import Outcome, fold
from controller.model import (
    CertificateSpec,
    CertInfo,
    Desired,
    KeyType,
    Observed,
    StoredCert,
)
from controller.paths import StorePaths
from controller.plan import Action, ActionKind, Plan, plan, spec_hash
from controller.policy import PolicySettings
from controller.reasons import Reason
from controller.status import CertStatus
from tests.certbuilder import make_cert
from tests.fakes import FakeClock, FakeIssuer, MemoryStore
from tests.logcapture import capture_logs

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SPEC = CertificateSpec("a.test", ("a.test", "www.a.test"))
FP = "f" * 64


def settings(profile: str = "", *, reuse: bool = False) -> PolicySettings:
    return PolicySettings(store_only=True, default_profile=profile, reuse_key=reuse)


def stored(key_type: KeyType = KeyType.RSA2048, age: timedelta = timedelta(days=1)) -> StoredCert:
    info = CertInfo(common_name="a.test", names=SPEC.names, not_before=NOW - age,
                    not_after=NOW - age + timedelta(days=90), key_type=key_type, serial="01",
                    fingerprint=FP, issuer="CN=test CA")
    return StoredCert(domain="a.test", info=info, key_matches=True)


def plan_for(status: CertStatus | None, policy: PolicySettings, *,
             spec: CertificateSpec = SPEC, pair: StoredCert | None = None) -> Plan:
    statuses = {"a.test": status} if status is not None else {}
    return plan(Desired(specs={"a.test": spec}), Observed(stored={"a.test": pair or stored()}),
                statuses, NOW, policy)


def ordered_with(profile: str, ordered: str | None = None) -> CertStatus:
    return CertStatus(domain="a.test", profile=profile,
                      profile_ordered=profile if ordered is None else ordered)


# -- the spec identity -----------------------------------------------------------------------


def test_a_certificate_without_a_profile_keeps_its_hash_of_before_profiles() -> None:
    before = hashlib.sha256(b"a.test,www.a.test|rsa2048").hexdigest()[:16]
    assert spec_hash(SPEC, KeyType.RSA2048) == before
    assert spec_hash(SPEC, KeyType.RSA2048, "") == before
    # a stored backoff of before the upgrade still belongs to the spec: it keeps holding
    backing_off = CertStatus(domain="a.test", attempts=2, backoff_until=NOW + timedelta(hours=1),
                             spec_hash=before, force_renew=True)
    p = plan_for(backing_off, settings())
    assert p.actions == () and [w.reason for w in p.waiting] == [Reason.BACKOFF]


def test_the_global_profile_counts_in_the_hash_as_a_certificates_own_does() -> None:
    own = replace(SPEC, profile="classic")
    assert spec_hash(SPEC, KeyType.RSA2048, "classic") == spec_hash(own, KeyType.RSA2048)
    assert spec_hash(own, KeyType.RSA2048, "shortlived") == spec_hash(own, KeyType.RSA2048)
    assert spec_hash(SPEC, KeyType.RSA2048, "classic") != spec_hash(SPEC, KeyType.RSA2048)
    reuse = replace(SPEC, reuse_key=True, profile_required=True)
    assert spec_hash(reuse, KeyType.RSA2048) == spec_hash(SPEC, KeyType.RSA2048)


# -- a profile change renews ----------------------------------------------------------------


def test_a_profile_change_renews_once_then_is_in_sync() -> None:
    status = ordered_with("classic")
    (a,) = plan_for(status, settings("shortlived")).actions
    assert (a.kind, a.reason, a.profile) == (ActionKind.RENEW, Reason.PROFILE_CHANGED,
                                            "shortlived")
    assert a.message == "profile classic -> shortlived"
    outcome = Outcome(a, ok=True, stored_fingerprint="e" * 64, ordered_profile="shortlived")
    statuses, _ = fold({"a.test": status}, desired=Desired(specs={"a.test": SPEC}),
                       plan=Plan(actions=(a,)), outcomes=[outcome], now=NOW)
    after = statuses["a.test"]
    assert (after.profile, after.profile_ordered, after.profile_ca) == (
        "shortlived", "shortlived", None)
    assert plan_for(after, settings("shortlived")).in_sync


def test_a_certificates_own_profile_wins_and_dropping_every_profile_renews_too() -> None:
    own = replace(SPEC, profile="tlsserver")
    (a,) = plan_for(ordered_with("classic"), settings("classic"), spec=own).actions
    assert (a.reason, a.profile) == (Reason.PROFILE_CHANGED, "tlsserver")
    (b,) = plan_for(ordered_with("classic"), settings("")).actions
    assert b.message == "profile classic -> (CA default)" and b.profile == ""
    assert plan_for(ordered_with(""), settings("")).in_sync


def test_an_unknown_recorded_profile_never_renews() -> None:
    adopted = CertStatus(domain="a.test")  # e.g. a pair lego issued, adopted as it is
    assert plan_for(adopted, settings("shortlived")).in_sync
    assert plan_for(None, settings("shortlived")).in_sync


def test_the_ca_answer_is_recorded_and_a_first_issuance_records_the_profile() -> None:
    p = plan(Desired(specs={"a.test": SPEC}), Observed(stored={}), {}, NOW,
             settings("classic"))
    (a,) = p.actions
    assert (a.kind, a.profile, a.reuse_key) == (ActionKind.ISSUE, "classic", False)
    outcome = Outcome(a, ok=True, stored_fingerprint=FP, ordered_profile="classic",
                      ca_profile="classic")
    statuses, _ = fold({}, desired=Desired(specs={"a.test": SPEC}), plan=p, outcomes=[outcome],
                       now=NOW)
    st = statuses["a.test"]
    assert (st.profile, st.profile_ordered, st.profile_ca) == ("classic", "classic", "classic")


# -- preferred, not offered -------------------------------------------------------------------


def test_a_preferred_profile_the_ca_did_not_offer_is_a_note_not_a_renewal_loop() -> None:
    without = ordered_with("shortlived", ordered="")  # the order went without it
    p = plan_for(without, settings("shortlived"))
    assert p.in_sync
    (note,) = p.notes
    assert note.startswith("a.test: the CA did not offer the profile 'shortlived'")
    assert "profileRequired = true" in note
    assert plan_for(ordered_with("shortlived"), settings("shortlived")).notes == ()


def issuer(tmp_path: Path, profile: str = "", *, required: bool = False) -> AcmeIssuer:
    return AcmeIssuer(directory_url="https://ca.test/dir", email="", paths=StorePaths(tmp_path),
                      solver=LocalHttp01Solver("127.0.0.1:0"), profile=profile,
                      profile_required=required)


def directory(*profiles: str) -> messages.Directory:
    meta = {"profiles": {p: f"the {p} profile" for p in profiles}} if profiles else {}
    return messages.Directory.from_json({"newNonce": "https://ca.test/nonce",
                                         "newAccount": "https://ca.test/acct",
                                         "newOrder": "https://ca.test/order", "meta": meta})


def test_a_preferred_profile_the_ca_does_not_offer_is_warned_once_and_not_sent(
    tmp_path: Path,
) -> None:
    iss = issuer(tmp_path, "shortlived")
    with capture_logs() as logs:
        assert iss._profile_to_order(directory("classic"), SPEC) == ""
        assert iss._profile_to_order(directory("classic"), SPEC) == ""
    warned = [ln for ln in logs.lines() if "does not offer the profile" in ln]
    assert len(warned) == 1 and "shortlived" in warned[0] and "[acme] profile" in warned[0]
    assert iss._profile_to_order(directory("classic", "shortlived"), SPEC) == "shortlived"


def test_a_required_profile_the_ca_does_not_offer_is_a_config_error_naming_the_key(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"^\[acme\] profile 'shortlived' is not offered .*"
                                          r"it offers: classic"):
        issuer(tmp_path, "shortlived", required=True)._profile_to_order(directory("classic"),
                                                                         SPEC)
    # the certificate's own profileRequired decides for it, either way
    own = replace(SPEC, profile="tlsserver", profile_required=True)
    with pytest.raises(ConfigError, match=r'^\[certificates\."a\.test"\] profile .*offers none'):
        issuer(tmp_path)._profile_to_order(directory(), own)
    lenient = replace(SPEC, profile_required=False)
    assert issuer(tmp_path, "x", required=True)._profile_to_order(directory(), lenient) == ""
    assert issuer(tmp_path)._profile_to_order(directory(), SPEC) == ""  # no profile: none sent


# -- keys ----------------------------------------------------------------------------------------


def test_a_renewal_makes_a_new_key_unless_reuse_key_is_on() -> None:
    due = stored(age=timedelta(days=70))
    (fresh,) = plan_for(None, settings(), pair=due).actions
    assert fresh.reason is Reason.RENEWAL_DUE and not fresh.reuse_key
    (kept,) = plan_for(None, settings(reuse=True), pair=due).actions
    assert kept.reuse_key
    own = replace(SPEC, reuse_key=False)  # the table's setting wins over [acme]'s
    (off,) = plan_for(None, settings(reuse=True), spec=own, pair=due).actions
    assert not off.reuse_key
    (on,) = plan_for(None, settings(), spec=replace(SPEC, reuse_key=True), pair=due).actions
    assert on.reuse_key


def test_a_key_type_change_and_the_code_11_trap_always_make_a_new_key() -> None:
    ec = replace(SPEC, key_type=KeyType.EC256, reuse_key=True)
    (a,) = plan_for(None, settings(reuse=True), spec=ec).actions
    assert a.reason is Reason.KEY_TYPE_CHANGED and not a.reuse_key
    trapped = CertStatus(domain="a.test").with_new_key_needed(of=FP)
    (b,) = plan_for(trapped, settings(reuse=True)).actions
    assert b.reason is Reason.FORCED and not b.reuse_key
    assert not trapped.with_issued(at=NOW).new_key
    forced = CertStatus(domain="a.test").with_forced_renewal(of=FP, at=NOW)  # an operator's
    (c,) = plan_for(forced, settings(reuse=True)).actions
    assert c.reason is Reason.FORCED and c.reuse_key


def spki(cert_pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("reuse", [False, True], ids=["new key", "reuse key"])
async def test_the_executor_hands_the_stored_key_to_the_issuer_only_for_reuse(
    reuse: bool,
) -> None:
    clock = FakeClock()
    store, fake = MemoryStore(), FakeIssuer(clock)
    old = store.put("a.test", make_cert(SPEC.names, key_type=KeyType.EC256).issued())
    executor = Executor(store=store, issuer_factory=fake.factory, clock=clock)
    renew = Action(ActionKind.RENEW, "a.test", Reason.RENEWAL_DUE, "due", spec=SPEC,
                   key_type=KeyType.EC256, expected_fingerprint=old.info.fingerprint,
                   profile="", reuse_key=reuse)
    old_pem = store.cert_pem("a.test")
    (out,) = await executor.execute([renew])
    new_pem = store.cert_pem("a.test")
    assert out.ok and old_pem is not None and new_pem is not None
    assert fake.reused == [reuse]
    assert (spki(new_pem) == spki(old_pem)) is reuse
    assert out.ordered_profile == ""


async def test_a_stored_key_of_another_type_is_not_reused() -> None:
    clock = FakeClock()
    store, fake = MemoryStore(), FakeIssuer(clock)
    old = store.put("a.test", make_cert(SPEC.names, key_type=KeyType.RSA2048).issued())
    executor = Executor(store=store, issuer_factory=fake.factory, clock=clock)
    renew = Action(ActionKind.RENEW, "a.test", Reason.RENEWAL_DUE, "due", spec=SPEC,
                   key_type=KeyType.EC256, expected_fingerprint=old.info.fingerprint,
                   reuse_key=True)
    with capture_logs() as logs:
        (out,) = await executor.execute([renew])
    assert out.ok and fake.reused == [False]
    assert "the stored key cannot be reused" in logs.text and "PRIVATE" not in logs.text


def test_the_issuer_refuses_a_key_to_reuse_of_another_type_without_quoting_it() -> None:
    key = make_cert(["a.test"], key_type=KeyType.RSA2048).key_pem
    check_reused_key(key, KeyType.RSA2048, ("a.test",))
    with pytest.raises(PermanentError, match=r"reuse for a\.test is rsa2048, not ec256") as err:
        check_reused_key(key, KeyType.EC256, ("a.test",))
    with pytest.raises(PermanentError, match="cannot be parsed") as bad:
        check_reused_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                         KeyType.EC256, ("a.test",))
    assert "BEGIN" not in str(err.value) + str(bad.value)


# -- the TOML -----------------------------------------------------------------------------------


def test_profile_required_and_reuse_key_from_the_toml(tmp_path: Path) -> None:
    cfg = parse_config({
        "acme": {"profile": " classic ", "profileRequired": True, "reuseKey": True},
        "certificates": {"shop.test": {"reuseKey": False, "profileRequired": False},
                         "blog.test": {"profile": "classic"}},
    }, prefix=tmp_path)
    policy = policy_settings(cfg)
    assert (policy.default_profile, policy.reuse_key) == ("classic", True)
    assert AcmeIssuer.from_config(cfg, StorePaths(tmp_path)).profile_required
    desired = Desired(specs={d: CertificateSpec(d, (d,)) for d in ("shop.test", "blog.test")})
    specs = apply_settings(desired, cert_settings(cfg), default_profile="classic").specs
    shop, blog = specs["shop.test"], specs["blog.test"]
    assert (shop.reuse_key, shop.profile_required, shop.profile) == (False, False, None)
    assert (blog.reuse_key, blog.profile_required, blog.profile) == (None, None, None)
    defaults = parse_config({}, prefix=tmp_path).acme
    assert (defaults.profileRequired, defaults.reuseKey) == (False, False)
    assert apply_settings(desired, {"shop.test": CertSettings(reuse_key=True)}).specs[
        "shop.test"].reuse_key is True
    with pytest.raises(ConfigError, match=r'certificates\."shop\.test"\.reuseKey: '):
        parse_config({"certificates": {"shop.test": {"reuseKey": "often"}}}, prefix=tmp_path)
