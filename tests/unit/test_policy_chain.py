"""The policy chains are the spec: their order, and which check wins when several would fire.

Like cert-manager's policy chain test: a table of subjects for which two or more checks fire,
with the one that must decide. Plus the exact order of every chain part, and proof that every
check handles any subject on its own (none relies on its position in a chain).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.model import ActionKind, CertificateSpec, CertInfo, KeyType, StoredCert
from controller.plan import spec_hash
from controller.policies.ratelimits import BucketUse, Limit, OrderBudget
from controller.policies.renewal import names_changed
from controller.policies.subject import Act, Wait
from controller.policy import DESIRED, ORPHANED, Chain, PolicySettings, Subject, decide
from controller.reasons import Reason
from controller.status import FAILURE_NODE, CertStatus

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SPEC = CertificateSpec(domain="a.test", names=("a.test",), listens=("127.0.0.1:8443",))
HASH = spec_hash(SPEC, KeyType.RSA2048)
FP = "f" * 64


def pair(
    *names: str,
    age: timedelta = timedelta(days=1),
    key_type: KeyType = KeyType.RSA2048,
) -> StoredCert:
    names = names or ("a.test",)
    info = CertInfo(common_name=names[0], names=names, not_before=NOW - age,
                    not_after=NOW - age + timedelta(days=90), key_type=key_type, serial="01",
                    fingerprint=FP, issuer="CN=test CA")
    return StoredCert(domain="a.test", info=info, key_matches=True)


# a desired name, stored, fresh, served, in a running NJet: converged
BASE = Subject(
    domain="a.test",
    spec=SPEC,
    stored=pair(),
    problem=None,
    status=None,
    wanted_key_type=KeyType.RSA2048,
    spec_hash=HASH,
    served_fingerprint=FP,
    njet_present=True,
    targets=(),
    njet_error=None,
    njet_unmatched=None,
    bootstrap_key_type=None,
    now=NOW,
    settings=PolicySettings(store_only=False),
)
EXPIRED = pair(age=timedelta(days=91))
NOT_YET_VALID = pair(age=-timedelta(hours=2))  # notBefore two hours ahead
FORCED = CertStatus(domain="a.test", force_renew=True)
BACKING_OFF = CertStatus(domain="a.test", attempts=3, last_failure="CA down",
                         backoff_until=NOW + timedelta(minutes=4), spec_hash=HASH)
NOT_IN_NJET = {"njet_present": False, "served_fingerprint": None}
FULL = OrderBudget((BucketUse(Limit.NEW_ORDERS, "", 5, 5, NOW + timedelta(hours=1)),))
ROOM = OrderBudget((BucketUse(Limit.NEW_ORDERS, "", 4, 5),))
# the stored pair was ordered with the "classic" profile; [acme] profile now wants "shortlived"
CLASSIC = CertStatus(domain="a.test", profile="classic", profile_ordered="classic")
SHORTLIVED = PolicySettings(store_only=False, default_profile="shortlived")
ORPHAN = replace(BASE, spec=None, wanted_key_type=None, spec_hash=None, njet_present=False)


def names(part: tuple[object, ...]) -> tuple[str, ...]:
    return tuple(f.__name__ for f in part)  # type: ignore[attr-defined]


def test_the_desired_chain_order() -> None:
    assert names(DESIRED.checks) == (
        "cert_missing",
        "stored_unusable",
        "forced_renewal",
        "names_changed",
        "key_type_changed",
        "profile_changed",
        "expired",
        "renewal_due",
        "not_yet_valid",
        "njet_unreachable",
        "waiting_for_reload",
        "not_served",
    )
    assert names(DESIRED.holds) == ("backoff", "rate_budget")
    assert names(DESIRED.caveats) == ("issued_not_applied",)
    assert names(DESIRED.notes) == ("bootstrap_key_type_differs", "profile_not_offered")


def test_the_orphaned_chain_order() -> None:
    assert names(ORPHANED.checks) == ("grace_starts", "grace_over", "in_grace")
    assert names(ORPHANED.holds) == ("deletion_guard",)
    assert (ORPHANED.caveats, ORPHANED.notes) == ((), ())


@dataclass(frozen=True)
class Case:
    id: str
    subject: Subject
    fire: frozenset[str]  # every check of the chain that finds something on its own
    first: str  # the one that decides (a check or a hold)
    reason: Reason
    waits: tuple[Reason, ...] = ()  # the decision's waits (a hold's, or the caveats')


def case(id: str, fire: set[str], first: str, reason: Reason, *, waits: tuple[Reason, ...] = (),
         **changes: object) -> Case:
    return Case(id, replace(BASE, **changes), frozenset(fire), first, reason, waits)  # type: ignore[arg-type]


CASES = [
    case("forced beats names, key type, expiry and apply",
         {"forced_renewal", "names_changed", "key_type_changed", "expired", "renewal_due",
          "not_served"},
         "forced_renewal", Reason.FORCED, status=FORCED, wanted_key_type=KeyType.EC256,
         stored=replace(EXPIRED, info=replace(EXPIRED.info, names=("a.test", "old.test"))),
         served_fingerprint="0" * 64),
    case("names beat key type and expiry",
         {"names_changed", "key_type_changed", "expired", "renewal_due"},
         "names_changed", Reason.NAMES_CHANGED, wanted_key_type=KeyType.EC256,
         stored=replace(EXPIRED, info=replace(EXPIRED.info, names=("a.test", "old.test")))),
    case("key type beats expiry", {"key_type_changed", "expired", "renewal_due"},
         "key_type_changed", Reason.KEY_TYPE_CHANGED, stored=EXPIRED,
         wanted_key_type=KeyType.EC256),
    case("expiry beats the renewal time", {"expired", "renewal_due"}, "expired", Reason.EXPIRED,
         stored=EXPIRED),
    case("key type beats profile", {"key_type_changed", "profile_changed"}, "key_type_changed",
         Reason.KEY_TYPE_CHANGED, wanted_key_type=KeyType.EC256, status=CLASSIC,
         settings=SHORTLIVED),
    case("profile beats expiry", {"profile_changed", "expired", "renewal_due"},
         "profile_changed", Reason.PROFILE_CHANGED, stored=EXPIRED, status=CLASSIC,
         settings=SHORTLIVED),
    case("an unknown recorded profile changes nothing", {"expired", "renewal_due"}, "expired",
         Reason.EXPIRED, stored=EXPIRED, status=CertStatus(domain="a.test"),
         settings=SHORTLIVED),
    case("a renewal beats applying the old pair", {"renewal_due", "not_served"}, "renewal_due",
         Reason.RENEWAL_DUE, stored=pair(age=timedelta(days=70)), served_fingerprint="0" * 64),
    case("a renewal beats waiting for the reload, which becomes its caveat",
         {"renewal_due", "waiting_for_reload"}, "renewal_due", Reason.RENEWAL_DUE,
         waits=(Reason.WAITING_FOR_RELOAD,), stored=pair(age=timedelta(days=70)),
         **NOT_IN_NJET),
    case("a renewal beats an unreachable NJet, which becomes its caveat",
         {"expired", "renewal_due", "njet_unreachable"}, "expired", Reason.EXPIRED,
         waits=(Reason.NJET_UNREACHABLE,), stored=EXPIRED, njet_error="connection refused",
         **NOT_IN_NJET),
    case("the backoff holds a renewal back", {"expired", "renewal_due"}, "backoff",
         Reason.BACKOFF, waits=(Reason.BACKOFF,), stored=EXPIRED, status=BACKING_OFF),
    case("the backoff holds a forced renewal back", {"forced_renewal"}, "backoff",
         Reason.BACKOFF, waits=(Reason.BACKOFF,),
         status=replace(BACKING_OFF, force_renew=True)),
    case("the backoff of a failed apply holds the next apply back", {"not_served"}, "backoff",
         Reason.BACKOFF, waits=(Reason.BACKOFF,),
         status=replace(BACKING_OFF, failure_scope=FAILURE_NODE), served_fingerprint="0" * 64),
    case("a failed order does not hold back applying the stored pair", {"not_served"},
         "not_served", Reason.NOT_SERVED, status=BACKING_OFF, served_fingerprint="0" * 64),
    case("the backoff holds before the caveat is looked at", {"cert_missing"}, "backoff",
         Reason.BACKOFF, waits=(Reason.BACKOFF,), stored=None, status=BACKING_OFF,
         **NOT_IN_NJET),
    case("a pair not valid yet waits instead of being applied", {"not_yet_valid", "not_served"},
         "not_yet_valid", Reason.NOT_YET_VALID, waits=(Reason.NOT_YET_VALID,),
         stored=NOT_YET_VALID, served_fingerprint="0" * 64),
    case("a pair not valid yet waits for its notBefore, not for the reload",
         {"not_yet_valid", "waiting_for_reload"}, "not_yet_valid", Reason.NOT_YET_VALID,
         waits=(Reason.NOT_YET_VALID,), stored=NOT_YET_VALID, **NOT_IN_NJET),
    case("changed names renew a pair not valid yet", {"names_changed", "not_yet_valid"},
         "names_changed", Reason.NAMES_CHANGED,
         stored=replace(NOT_YET_VALID, info=replace(NOT_YET_VALID.info,
                                                     names=("a.test", "old.test")))),
    case("the backoff of another spec holds nothing back", {"expired", "renewal_due"},
         "expired", Reason.EXPIRED, stored=EXPIRED,
         status=replace(BACKING_OFF, spec_hash="another")),
    case("a full rate budget holds a renewal back", {"expired", "renewal_due"}, "rate_budget",
         Reason.RATE_LIMIT_BUDGET, waits=(Reason.RATE_LIMIT_BUDGET,), stored=EXPIRED,
         budget=FULL),
    case("a full rate budget holds a first issuance back before its caveat", {"cert_missing"},
         "rate_budget", Reason.RATE_LIMIT_BUDGET, waits=(Reason.RATE_LIMIT_BUDGET,),
         stored=None, budget=FULL, **NOT_IN_NJET),
    case("the backoff holds before the rate budget is looked at", {"expired", "renewal_due"},
         "backoff", Reason.BACKOFF, waits=(Reason.BACKOFF,), stored=EXPIRED,
         status=BACKING_OFF, budget=FULL),
    case("a rate budget with room holds nothing back", {"expired", "renewal_due"}, "expired",
         Reason.EXPIRED, stored=EXPIRED, budget=ROOM),
    case("a full rate budget never holds an apply back", {"not_served"}, "not_served",
         Reason.NOT_SERVED, served_fingerprint="0" * 64, budget=FULL),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_the_first_finding_decides(c: Case) -> None:
    fired = {f.__name__ for f in DESIRED.checks if f(c.subject) is not None}
    assert fired == c.fire
    d = decide(DESIRED, c.subject)
    assert d.decided_by == c.first
    assert tuple(w.reason for w in d.waits) == c.waits
    decider = {f.__name__: f for f in DESIRED.checks}.get(c.first)
    if c.first in names(DESIRED.holds) or (
            decider is not None and isinstance(decider(c.subject), Wait)):
        assert d.act is None and d.waits[0].reason is c.reason
    else:
        assert d.act is not None and d.act.reason is c.reason


def test_a_wait_finding_is_never_held_back_by_the_backoff() -> None:
    s = replace(BASE, status=BACKING_OFF, **NOT_IN_NJET)  # type: ignore[arg-type]
    d = decide(DESIRED, s)
    assert d.decided_by == "waiting_for_reload" and d.act is None
    assert [w.reason for w in d.waits] == [Reason.WAITING_FOR_RELOAD]


def test_the_backoff_message_names_what_it_holds_back() -> None:
    d = decide(DESIRED, replace(BASE, stored=EXPIRED, status=BACKING_OFF))
    (w,) = d.waits
    assert w.message.startswith("renew (Expired) after 3 failed attempt(s): CA down")
    assert w.until == BACKING_OFF.backoff_until


def test_notes_come_whatever_is_decided() -> None:
    s = replace(BASE, stored=None, bootstrap_key_type=KeyType.EC256)
    d = decide(DESIRED, s)
    assert d.decided_by == "cert_missing" and len(d.notes) == 1
    assert "RSA-only clients keep the old cert" in d.notes[0]


@pytest.mark.parametrize(
    ("status", "first", "kind"),
    [
        (None, None, None),  # never managed by us: left alone
        (CertStatus(domain="a.test"), "grace_starts", None),
        (CertStatus(domain="a.test", orphaned_at=NOW - timedelta(hours=1)), "in_grace", None),
        (CertStatus(domain="a.test", orphaned_at=NOW - timedelta(hours=24)), "grace_over",
         ActionKind.DELETE),
    ],
    ids=["unmanaged", "just orphaned", "in grace", "grace over"],
)
def test_the_orphan_lifecycle(status: CertStatus | None, first: str | None,
                              kind: ActionKind | None) -> None:
    s = replace(ORPHAN, stored=EXPIRED, status=status)  # expired, yet never renewed
    fired = [f.__name__ for f in ORPHANED.checks if f(s) is not None]
    assert fired == ([first] if first else [])
    d = decide(ORPHANED, s)
    assert d.decided_by == first
    assert (d.act.kind if d.act else None) is kind


# Subjects no check should trip over: nothing stored, orphans, store-only, NJet unreachable.
ODD_SUBJECTS = [
    BASE,
    replace(BASE, stored=None),
    replace(BASE, stored=None, problem="key does not match certificate", status=FORCED),
    replace(BASE, stored=EXPIRED, status=FORCED, settings=PolicySettings(store_only=True),
            **NOT_IN_NJET),  # type: ignore[arg-type]
    replace(BASE, njet_error="timeout", **NOT_IN_NJET),  # type: ignore[arg-type]
    replace(ORPHAN, stored=EXPIRED, status=FORCED),
    replace(ORPHAN, stored=None, status=CertStatus(domain="a.test", orphaned_at=NOW)),
]
EVERY_CHAIN: list[Chain] = [DESIRED, ORPHANED]


@pytest.mark.parametrize("s", ODD_SUBJECTS)
def test_every_check_handles_any_subject_on_its_own(s: Subject) -> None:
    act = Act(ActionKind.RENEW, Reason.EXPIRED, "")
    for chain in EVERY_CHAIN:
        for check in (*chain.checks, *chain.notes):
            found = check(s)
            if s.spec is None:
                assert chain is ORPHANED or found is None, check.__name__
            elif chain is ORPHANED:
                assert found is None, check.__name__
        for hold in (*chain.holds, *chain.caveats):
            hold(s, act)
        decide(chain, s)


def test_nothing_applies_to_a_desired_name_in_store_only_mode() -> None:
    s = replace(BASE, settings=PolicySettings(store_only=True), served_fingerprint=None,
                njet_present=False, bootstrap_key_type=KeyType.EC256)
    assert decide(DESIRED, s) == decide(DESIRED, replace(s, njet_error="not asked"))
    assert decide(DESIRED, s).decided_by is None and decide(DESIRED, s).notes == ()


def test_a_pair_not_valid_yet_waits_until_its_not_before_and_is_applied_after() -> None:
    ahead = replace(BASE, stored=NOT_YET_VALID, served_fingerprint="0" * 64)
    (w,) = decide(DESIRED, ahead).waits
    assert (w.reason, w.until) == (Reason.NOT_YET_VALID, NOT_YET_VALID.info.not_before)
    assert decide(DESIRED, ahead).act is None
    then = decide(DESIRED, replace(ahead, now=NOT_YET_VALID.info.not_before))
    assert then.act is not None and then.act.reason is Reason.NOT_SERVED
    # served already, or in store-only mode: still not in sync until then
    served = decide(DESIRED, replace(ahead, served_fingerprint=FP))
    store_only = decide(DESIRED, replace(ahead, settings=PolicySettings(store_only=True),
                                         **NOT_IN_NJET))  # type: ignore[arg-type]
    assert [x.reason for x in served.waits] == [x.reason for x in store_only.waits] == [
        Reason.NOT_YET_VALID]


LONG = "a" * 60 + ".long.test"  # 70 characters: cannot be a CN


@pytest.mark.parametrize("cn", [None, "www.a.test", LONG])
def test_a_first_name_too_long_for_the_cn_agrees_with_any_cn_the_ca_gave(cn: str | None) -> None:
    """Our CSR asks for the first name that fits (or none); whatever a CA puts there among
    the names must not renew on every pass."""
    want = CertificateSpec(domain=LONG, names=(LONG, "www.a.test"))
    stored = pair(LONG, "www.a.test")
    s = replace(BASE, domain=LONG, spec=want,
                stored=replace(stored, info=replace(stored.info, common_name=cn)))
    assert names_changed(s) is None
    assert decide(DESIRED, s).act is None


def test_a_first_name_too_long_for_the_cn_still_renews_for_a_foreign_cn() -> None:
    want = CertificateSpec(domain=LONG, names=(LONG, "www.a.test"))
    stored = pair(LONG, "www.a.test")
    s = replace(BASE, domain=LONG, spec=want,
                stored=replace(stored, info=replace(stored.info, common_name="other.test")))
    found = names_changed(s)
    assert found is not None and found.message == "names changed: CN other.test -> www.a.test"
    # a first name that fits must still be the CN
    base = pair()
    fits = replace(BASE, stored=replace(base, info=replace(base.info, common_name=None)))
    assert names_changed(fits) is not None
