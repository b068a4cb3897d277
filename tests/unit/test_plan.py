"""Table tests of plan(): one case per behaviour, with builders and an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.model import (
    CertificateSpec,
    CertInfo,
    Desired,
    KeyType,
    NjetTarget,
    Observed,
    ServedCert,
    StoredCert,
)
from controller.plan import ActionKind, plan, spec_hash
from controller.policy import PolicySettings, renewal_window
from controller.reasons import Reason
from controller.status import CertStatus

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
STORE_ONLY = PolicySettings(store_only=True)
WITH_NJET = PolicySettings(store_only=False)


def spec(*names: str, key_type: KeyType | None = None) -> CertificateSpec:
    return CertificateSpec(
        domain=names[0], names=tuple(names), listens=("127.0.0.1:8443",), key_type=key_type
    )


def stored(
    *names: str,
    age: timedelta = timedelta(days=1),
    lifetime: timedelta = timedelta(days=90),
    key_type: KeyType = KeyType.RSA2048,
    fp: str = "f" * 64,
) -> StoredCert:
    nb = NOW - age
    info = CertInfo(
        common_name=names[0],
        names=tuple(names),
        not_before=nb,
        not_after=nb + lifetime,
        key_type=key_type,
        serial="01",
        fingerprint=fp,
        issuer="CN=test CA",
    )
    return StoredCert(domain=names[0], info=info, key_matches=True)


def desired(*specs: CertificateSpec) -> Desired:
    return Desired(specs={s.domain: s for s in specs})


def observed(*certs: StoredCert, **kw: object) -> Observed:
    return Observed(stored={c.domain: c for c in certs}, **kw)  # type: ignore[arg-type]


def only(p_actions: tuple[object, ...]) -> object:
    assert len(p_actions) == 1, p_actions
    return p_actions[0]


def test_issues_when_no_certificate_is_stored() -> None:
    p = plan(desired(spec("a.test", "www.a.test")), observed(), {}, NOW, STORE_ONLY)
    a = only(p.actions)
    assert a.kind is ActionKind.ISSUE and a.reason is Reason.MISSING  # type: ignore[attr-defined]
    assert a.spec.names == ("a.test", "www.a.test")  # type: ignore[attr-defined]
    assert not p.in_sync


def test_does_nothing_when_converged() -> None:
    p = plan(desired(spec("a.test")), observed(stored("a.test")), {}, NOW, STORE_ONLY)
    assert p.actions == () and p.in_sync


def test_reissues_when_stored_files_are_unusable() -> None:
    obs = Observed(stored={}, problems={"a.test": "key does not match certificate"})
    a = only(plan(desired(spec("a.test")), obs, {}, NOW, STORE_ONLY).actions)
    assert a.kind is ActionKind.ISSUE and a.reason is Reason.STORED_UNUSABLE  # type: ignore[attr-defined]


def test_renews_when_a_name_is_added() -> None:
    p = plan(desired(spec("a.test", "new.a.test")), observed(stored("a.test")), {}, NOW, STORE_ONLY)
    a = only(p.actions)
    assert a.kind is ActionKind.RENEW and a.reason is Reason.NAMES_CHANGED  # type: ignore[attr-defined]
    assert "+new.a.test" in a.message  # type: ignore[attr-defined]


def test_renews_when_the_first_name_changes_order() -> None:
    d = desired(CertificateSpec(domain="a.test", names=("a.test", "b.test")))
    s = stored("b.test", "a.test")
    s = StoredCert(domain="a.test", info=s.info, key_matches=True)
    a = only(plan(d, observed(s), {}, NOW, STORE_ONLY).actions)
    assert a.reason is Reason.NAMES_CHANGED  # type: ignore[attr-defined]


def test_renews_when_the_key_type_changes() -> None:
    d = desired(spec("a.test", key_type=KeyType.EC256))
    a = only(plan(d, observed(stored("a.test")), {}, NOW, STORE_ONLY).actions)
    assert a.reason is Reason.KEY_TYPE_CHANGED and a.key_type is KeyType.EC256  # type: ignore[attr-defined]


def test_follows_the_bootstrap_key_type_when_none_is_configured() -> None:
    obs = observed(
        stored("a.test", key_type=KeyType.EC256), bootstrap_key_types={"a.test": KeyType.EC256}
    )
    assert plan(desired(spec("a.test")), obs, {}, NOW, STORE_ONLY).actions == ()


def test_renews_an_expired_certificate() -> None:
    s = stored("a.test", age=timedelta(days=91))
    a = only(plan(desired(spec("a.test")), observed(s), {}, NOW, STORE_ONLY).actions)
    assert a.reason is Reason.EXPIRED  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("lifetime", "renews_at_left"),
    [
        (timedelta(days=90), timedelta(days=30)),
        (timedelta(days=6), timedelta(days=3)),
        (timedelta(hours=160), timedelta(hours=80)),
        (timedelta(days=200), timedelta(days=30)),
    ],
    ids=[
        "90-day renews at 30 days left",
        "6-day renews at 3 days left",
        "160-hour renews at 80 hours left",
        "200-day renews at 30 days left",
    ],
)
def test_renewal_becomes_due_exactly_at_the_window(
    lifetime: timedelta, renews_at_left: timedelta
) -> None:
    assert renewal_window(lifetime, timedelta(days=30)) == renews_at_left
    just_before = stored(
        "a.test", age=lifetime - renews_at_left - timedelta(minutes=1), lifetime=lifetime
    )
    at = stored("a.test", age=lifetime - renews_at_left, lifetime=lifetime)
    d = desired(spec("a.test"))
    assert plan(d, observed(just_before), {}, NOW, STORE_ONLY).actions == ()
    a = only(plan(d, observed(at), {}, NOW, STORE_ONLY).actions)
    assert a.reason is Reason.RENEWAL_DUE  # type: ignore[attr-defined]


@pytest.mark.parametrize("lifetime", [timedelta(hours=160), timedelta(days=6), timedelta(days=1)])
def test_a_fresh_short_lived_certificate_never_loops(lifetime: timedelta) -> None:
    fresh = stored("a.test", age=timedelta(0), lifetime=lifetime)
    assert plan(desired(spec("a.test")), observed(fresh), {}, NOW, STORE_ONLY).actions == ()


def test_a_renewal_time_chosen_once_takes_over() -> None:
    s = stored("a.test", age=timedelta(days=10))
    chosen = NOW - timedelta(minutes=1)
    st = {"a.test": CertStatus(domain="a.test", renewal_at=chosen)}
    a = only(plan(desired(spec("a.test")), observed(s), st, NOW, STORE_ONLY).actions)
    assert a.reason is Reason.RENEWAL_DUE  # type: ignore[attr-defined]


def test_emergency_override_beats_a_late_chosen_renewal_time() -> None:
    s = stored("a.test", age=timedelta(days=85))  # 5 of 90 days left < 9 days
    st = {"a.test": CertStatus(domain="a.test", renewal_at=NOW + timedelta(days=30))}
    a = only(plan(desired(spec("a.test")), observed(s), st, NOW, STORE_ONLY).actions)
    assert a.reason is Reason.RENEWAL_DUE  # type: ignore[attr-defined]


def test_waits_during_backoff_for_the_same_spec() -> None:
    sp = spec("a.test")
    st = {
        "a.test": CertStatus(
            domain="a.test",
            attempts=2,
            last_failure="CA down",
            backoff_until=NOW + timedelta(minutes=5),
            spec_hash=spec_hash(sp, KeyType.RSA2048),
        )
    }
    p = plan(desired(sp), observed(), st, NOW, STORE_ONLY)
    assert p.actions == ()
    w = only(p.waiting)
    assert w.reason is Reason.BACKOFF and "CA down" in w.message  # type: ignore[attr-defined]
    assert not p.in_sync


def test_a_changed_spec_resets_the_backoff() -> None:
    st = {
        "a.test": CertStatus(
            domain="a.test",
            attempts=5,
            backoff_until=NOW + timedelta(hours=1),
            spec_hash=spec_hash(spec("a.test"), KeyType.RSA2048),
        )
    }
    p = plan(desired(spec("a.test", "b.test")), observed(), st, NOW, STORE_ONLY)
    assert only(p.actions).kind is ActionKind.ISSUE  # type: ignore[attr-defined]


def test_backoff_over_allows_a_new_attempt() -> None:
    sp = spec("a.test")
    st = {
        "a.test": CertStatus(
            domain="a.test", attempts=1, backoff_until=NOW, spec_hash=spec_hash(sp, KeyType.RSA2048)
        )
    }
    assert only(plan(desired(sp), observed(), st, NOW, STORE_ONLY).actions)


def test_forced_renewal_renews_a_valid_certificate() -> None:
    st = {"a.test": CertStatus(domain="a.test", force_renew=True)}
    a = only(plan(desired(spec("a.test")), observed(stored("a.test")), st, NOW, STORE_ONLY).actions)
    assert a.kind is ActionKind.RENEW and a.reason is Reason.FORCED  # type: ignore[attr-defined]


def test_applies_a_valid_stored_cert_that_njet_does_not_serve() -> None:
    tgt = {"a.test": (NjetTarget(("127.0.0.1:8443",), ("a.test",)),)}
    served = {"a.test": ServedCert("a.test", "127.0.0.1:8443", "0" * 64)}
    obs = observed(stored("a.test"), njet_targets=tgt, served=served)
    a = only(plan(desired(spec("a.test")), obs, {}, NOW, WITH_NJET).actions)
    assert a.kind is ActionKind.APPLY and a.reason is Reason.NOT_SERVED  # type: ignore[attr-defined]
    assert a.expected_fingerprint == "f" * 64  # type: ignore[attr-defined]


def test_remembers_the_applied_fingerprint_between_probes() -> None:
    tgt = {"a.test": (NjetTarget(("127.0.0.1:8443",), ("a.test",)),)}
    st = {"a.test": CertStatus(domain="a.test", applied_fingerprint="f" * 64)}
    obs = observed(stored("a.test"), njet_targets=tgt)
    assert plan(desired(spec("a.test")), obs, st, NOW, WITH_NJET).in_sync


def test_never_applies_in_store_only_mode() -> None:
    obs = observed(stored("a.test"))
    assert plan(desired(spec("a.test")), obs, {}, NOW, STORE_ONLY).in_sync


def test_a_block_not_yet_in_the_running_njet_waits_for_a_reload() -> None:
    obs = observed(
        stored("a.test"), njet_unmatched={"a.test": "no server a.test on 127.0.0.1:8443"}
    )
    p = plan(desired(spec("a.test")), obs, {}, NOW, WITH_NJET)
    assert p.actions == ()
    w = only(p.waiting)
    assert w.reason is Reason.WAITING_FOR_RELOAD and "127.0.0.1:8443" in w.message  # type: ignore[attr-defined]


def test_a_missing_cert_is_issued_even_before_the_reload() -> None:
    obs = observed(njet_unmatched={"a.test": "not in NJet yet"})
    p = plan(desired(spec("a.test")), obs, {}, NOW, WITH_NJET)
    assert only(p.actions).kind is ActionKind.ISSUE  # type: ignore[attr-defined]
    assert only(p.waiting).reason is Reason.WAITING_FOR_RELOAD  # type: ignore[attr-defined]


def test_certs_we_never_managed_are_left_alone() -> None:
    p = plan(desired(), observed(stored("lego-made.test")), {}, NOW, STORE_ONLY)
    assert p.in_sync and p.scheduled == ()


def test_a_name_that_left_desired_state_is_deleted_after_the_grace_period() -> None:
    # a second, still desired certificate: deleting one of two is below the deletion guard
    obs = observed(stored("old.test"), stored("keep.test"))
    keep = {"keep.test": CertStatus(domain="keep.test")}
    first = plan(desired(spec("keep.test")), obs,
                 {"old.test": CertStatus(domain="old.test"), **keep}, NOW, STORE_ONLY)
    assert first.actions == () and only(first.scheduled).reason is Reason.ORPHAN_GRACE  # type: ignore[attr-defined]
    st = {"old.test": CertStatus(domain="old.test", orphaned_at=NOW - timedelta(hours=25)),
          **keep}
    a = only(plan(desired(spec("keep.test")), obs, st, NOW, STORE_ONLY).actions)
    assert a.kind is ActionKind.DELETE and a.reason is Reason.NOT_DESIRED  # type: ignore[attr-defined]


def test_plan_is_deterministic() -> None:
    d = desired(spec("b.test"), spec("a.test"))
    assert plan(d, observed(), {}, NOW, STORE_ONLY) == plan(d, observed(), {}, NOW, STORE_ONLY)
    assert [a.domain for a in plan(d, observed(), {}, NOW, STORE_ONLY).actions] == [
        "a.test",
        "b.test",
    ]


def test_a_forced_renewal_is_not_repeated_once_another_cert_is_stored() -> None:
    st = {"a.test": CertStatus(domain="a.test", force_renew=True, force_renew_of="0" * 64)}
    p = plan(desired(spec("a.test")), observed(stored("a.test")), st, NOW, STORE_ONLY)
    assert p.in_sync  # the renewal completed; only the status write was lost
    st = {"a.test": CertStatus(domain="a.test", force_renew=True, force_renew_of="f" * 64)}
    a = only(plan(desired(spec("a.test")), observed(stored("a.test")), st, NOW, STORE_ONLY).actions)
    assert a.reason is Reason.FORCED  # type: ignore[attr-defined]


def test_a_key_type_other_than_the_bootstrap_one_is_warned_about() -> None:
    obs = observed(stored("a.test", key_type=KeyType.EC256),
                   bootstrap_key_types={"a.test": KeyType.RSA2048},
                   njet_targets={"a.test": (NjetTarget(("127.0.0.1:8443",), ("a.test",)),)})
    st = {"a.test": CertStatus(domain="a.test", applied_fingerprint="f" * 64)}
    p = plan(desired(spec("a.test", key_type=KeyType.EC256)), obs, st, NOW, WITH_NJET)
    assert p.actions == ()
    assert any("RSA-only clients keep the old cert" in n for n in p.notes)
    same = plan(desired(spec("a.test", key_type=KeyType.RSA4096)), obs, st, NOW, WITH_NJET)
    assert not any("RSA-only" in n for n in same.notes)
