"""plan(desired, observed, statuses, now) -> Plan: the pure heart of the controller.

No I/O, no clock, no randomness. Called by reconcile.py each pass, by `diff`, and by the admin
API's GET /api/v1/plan. An empty `Plan.actions` with no `waiting` means converged.
What is decided, and in which order, is the policy chains' business (policy.py); plan() only
builds one Subject per name, walks its chain and collects the decisions. A "name" here (the
keys of desired.specs and of Observed's maps, Action.domain, Waiting.domain, ...) is a store key
(CertificateSpec.key): the domain, or `<domain>@<slot>` for a dual block's second certificate;
DNS names, SNI and NJet targets come from the spec. policies/slots.py adds the pass's notes
about a key type removed from a dual block (NJet keeps serving its last certificate).

Orphans are decided twice: first without the pass-wide deletion figures (which deletions are
due), then the due ones again with `Subject.deletions` filled in, so the deletion guard (a hold
of the orphaned chain) sees how many of the stored certificates this pass would delete and
whether the operator's confirmation (`release`, read from `.lego/gc-confirm.json` by the
caller) covers them. `Plan.gc_hold` says what the guard holds; `Plan.gc_released` what a
confirmation let through.

The rate-limit budget works the same way (`budget`, the ledger snapshot the caller read, with
the limits in force): after the per-subject chain, the orders it admitted are decided again in
`order_priority` (renewals of stored certificates first, the urgent ones ahead, then first
issuances by name), each with `Subject.budget` saying what it would spend after the orders
before it, so the rate-budget hold (a hold of the desired chain) keeps back those that no
longer fit. Each CA has its own budget: an order spends from the budget of the CA it starts
at (`order_ca`, policies/fallback.py from the status's failure streaks), and a CA with no
limit holds nothing. `Plan.rate_budget` says what each limit of each CA has left after the
admitted orders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from controller.model import ActionKind as ActionKind
from controller.model import (
    CertificateSpec,
    Desired,
    KeyType,
    NameWarning,
    NjetTarget,
    Observed,
)
from controller.policies.budget import ORDERS, order_priority
from controller.policies.fallback import fallback_start
from controller.policies.ratelimits import BudgetBook, BudgetInput, BudgetRemaining
from controller.policies.renewal import replaces_id
from controller.policies.slots import slot_notes
from controller.policy import (
    DESIRED,
    ORPHANED,
    Decision,
    GcRelease,
    PassDeletions,
    PolicySettings,
    Subject,
    decide,
    keeps_key,
    pass_notes,
    renewal_time,
    wanted_profile,
)
from controller.reasons import Reason
from controller.status import CaStreak, CertStatus


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    domain: str
    reason: Reason
    message: str
    spec: CertificateSpec | None = None
    key_type: KeyType | None = None
    # fingerprint of the stored cert this action replaces / applies (precondition re-check)
    expected_fingerprint: str | None = None
    # the plan saw files it could not use (StoredUnusable): the executor quarantines them right
    # before ordering, unless the store holds a usable pair by then
    expected_unusable: bool = False
    spec_hash: str | None = None
    # where to apply in the running NJet (empty: store-only, or not in NJet yet)
    targets: tuple[NjetTarget, ...] = ()
    # issue/renew: the ACME profile wanted ("": the CA's default), recorded in the status
    profile: str | None = None
    # renew with the stored key (reuseKey; never across a key type change): the executor
    # reads it right before ordering
    reuse_key: bool = False
    # renew: the ARI identifier of the certificate it replaces (RFC 9773 `replaces`), when
    # the CA's renewal information was fetched for it
    replaces: str | None = None
    # renew: the CA that issued the certificate it replaces (status.issuer_ca; None: not
    # recorded, [acme]'s): `replaces` goes to that CA only (execute.py)
    replaces_ca: str | None = None
    # issue/renew: the certificate's consecutive failed orders per CA (from its status), from
    # which the executor picks the CA (policies/fallback.py)
    ca_failures: tuple[CaStreak, ...] = ()
    # issue/renew starting at a [[acme.fallback]] CA: its directory URL (`diff` shows it)
    ca: str | None = None


@dataclass(frozen=True)
class Waiting:
    """A name that needs something but cannot progress now, and until when."""

    domain: str
    reason: Reason
    message: str
    until: datetime | None = None


@dataclass(frozen=True)
class Scheduled:
    """Informational: something that will happen later without being a blocker."""

    domain: str
    reason: Reason
    message: str
    at: datetime | None = None


@dataclass(frozen=True)
class GcHold:
    """Deletions the deletion guard holds this pass: `pending` of `stored` managed certs."""

    pending: tuple[str, ...]
    stored: int


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    scheduled: tuple[Scheduled, ...] = ()
    warnings: tuple[NameWarning, ...] = ()
    notes: tuple[str, ...] = field(default=())
    gc_hold: GcHold | None = None  # what the deletion guard holds back (None: nothing)
    gc_released: tuple[str, ...] = ()  # deletions admitted by the operator's confirmation
    # what each configured rate limit has left after this pass's orders (metrics)
    rate_budget: tuple[BudgetRemaining, ...] = ()

    @property
    def in_sync(self) -> bool:
        return not self.actions and not self.waiting


def spec_hash(spec: CertificateSpec, key_type: KeyType, default_profile: str = "") -> str:
    """Identity of what is wanted; a change resets the per-certificate backoff. The profile
    wanted counts (the spec's, else `default_profile`, [acme]'s), and only when there is one:
    a certificate with no profile keeps the hash of before profiles. The challenge type,
    profileRequired and reuseKey do not (how to get it, not what is wanted)."""
    parts = [",".join(spec.names), key_type.value]
    profile = spec.profile if spec.profile is not None else default_profile
    if profile:
        parts.append(f"profile={profile}")
    text = "|".join(parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def wanted_key_type(
    spec: CertificateSpec, bootstrap: Mapping[str, KeyType], settings: PolicySettings
) -> KeyType:
    """keyType when configured, else the block's bootstrap cert type, else the default."""
    if spec.key_type is not None:
        return spec.key_type
    return bootstrap.get(spec.key, settings.default_key_type)


def plan(
    desired: Desired,
    observed: Observed,
    statuses: Mapping[str, CertStatus],
    now: datetime,
    settings: PolicySettings,
    *,
    release: GcRelease | None = None,
    budget: BudgetInput | Sequence[BudgetInput] | None = None,
) -> Plan:
    """`release`: the operator's confirmation on file (`gc confirm`), None when there is none;
    `budget`: the rate-limit ledger and limits of each CA with a limit ([acme]'s first), None
    or empty when no limit applies."""
    out = _Collected(notes=[*pass_notes(observed, settings), *slot_notes(
        desired, observed,
        lambda spec: wanted_key_type(spec, observed.bootstrap_key_types, settings).njet_cert_type)])
    decided = [(s, decide(DESIRED, s)) for s in (
        subject(d, desired.specs[d], observed, statuses.get(d), now, settings)
        for d in sorted(desired.specs))]
    remaining: tuple[BudgetRemaining, ...] = ()
    budgets = (budget,) if isinstance(budget, BudgetInput) else tuple(budget or ())
    if budgets:
        decided, remaining = _spend_budget(decided, budgets, now)
    for s, d in decided:
        out.add(s, d)
    orphans = [subject(d, None, observed, statuses.get(d), now, settings)
               for d in sorted(set(observed.stored) - set(desired.specs) - set(desired.elsewhere))]
    first = [decide(ORPHANED, s) for s in orphans]
    deletions = PassDeletions(
        pending=frozenset(s.domain for s, d in zip(orphans, first, strict=True)
                          if d.act is not None and d.act.kind is ActionKind.DELETE),
        stored=sum(1 for d in observed.stored if d in statuses),
        release=release,
    )
    held: list[str] = []
    for s, d in zip(orphans, first, strict=True):
        if s.domain in deletions.pending:
            d = decide(ORPHANED, replace(s, deletions=deletions))
            if d.act is None:
                held.append(s.domain)
        out.add(s, d)
    in_grace = frozenset(x.domain for x in out.scheduled if x.reason is Reason.ORPHAN_GRACE)
    ahead = replace(deletions, pending=deletions.pending | in_grace, release=None)
    if in_grace and not held and ahead.too_many(settings.max_delete_share):
        out.notes.append(  # said during the grace period already, not only once it is over
            f"{len(ahead.pending)} of {ahead.stored} stored certificates are no longer desired "
            "and scheduled for deletion; the deletion guard will hold them until an operator "
            "confirms (`njet-cert-manager gc confirm`)")
    return Plan(
        actions=tuple(out.actions),
        waiting=tuple(out.waiting),
        scheduled=tuple(out.scheduled),
        warnings=tuple(desired.warnings),
        notes=tuple(out.notes),
        gc_hold=GcHold(tuple(held), deletions.stored) if held else None,
        gc_released=(tuple(sorted(deletions.pending))
                     if deletions.too_many(settings.max_delete_share) and not held else ()),
        rate_budget=remaining,
    )


def _spend_budget(
    decided: list[tuple[Subject, Decision]], budgets: Sequence[BudgetInput], now: datetime
) -> tuple[list[tuple[Subject, Decision]], tuple[BudgetRemaining, ...]]:
    """The orders the chain admitted, decided again in `order_priority` with what each would
    spend of the budget of the CA it goes to (`order_ca`) after those before it
    (`Subject.budget`; a CA without a budget holds nothing); an order still admitted spends it."""
    books: dict[str, BudgetBook] = {}
    for b in budgets:  # [acme]'s first; a CA listed twice keeps its first budget
        books.setdefault(b.scope.ca, BudgetBook(b, now))
    primary = books[budgets[0].scope.ca]
    orders = [(order_priority(s, d.act), i) for i, (s, d) in enumerate(decided)
              if d.act is not None and d.act.kind in ORDERS and s.spec is not None]
    out = list(decided)
    for _, i in sorted(orders):
        s = decided[i][0]
        assert s.spec is not None
        ca = order_ca(s)
        book = primary if ca is None else books.get(ca)
        d = decide(DESIRED, replace(s, budget=book.for_order(s.spec.names) if book else None))
        if book is not None and d.act is not None and d.act.kind in ORDERS:
            book.spend(s.spec.names)
        out[i] = (s, d)
    return out, tuple(r for b in books.values() for r in b.remaining())


def order_ca(s: Subject) -> str | None:
    """The directory URL of the CA `s`'s order starts at (policies/fallback.py over its
    status's failure streaks; None: no CA list in the settings, the one CA)."""
    cas = s.settings.cas
    if not cas:
        return None
    failures = s.status.ca_failure_counts() if s.status is not None else {}
    return fallback_start(cas, failures, s.settings.fallback_after) or cas[0]


def subject(
    domain: str,
    spec: CertificateSpec | None,
    observed: Observed,
    status: CertStatus | None,
    now: datetime,
    settings: PolicySettings,
) -> Subject:
    """What the checks see of `domain` (`spec` None: a stored name no longer desired)."""
    key_type: KeyType | None = None
    digest: str | None = None
    if spec is not None:
        key_type = wanted_key_type(spec, observed.bootstrap_key_types, settings)
        digest = spec_hash(spec, key_type, settings.default_profile)
    served = observed.served.get(domain)
    return Subject(
        domain=domain,
        spec=spec,
        stored=observed.stored.get(domain),
        problem=observed.problems.get(domain),
        status=status,
        wanted_key_type=key_type,
        spec_hash=digest,
        served_fingerprint=(
            served.fingerprint
            if served is not None
            else (status.applied_fingerprint if status is not None else None)
        ),
        njet_present=domain in observed.njet_targets,
        # an orphan is not applied anywhere
        targets=observed.njet_targets.get(domain, ()) if spec is not None else (),
        njet_error=observed.njet_error,
        njet_unmatched=observed.njet_unmatched.get(domain),
        bootstrap_key_type=observed.bootstrap_key_types.get(domain),
        now=now,
        settings=settings,
    )


@dataclass
class _Collected:
    actions: list[Action] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    scheduled: list[Scheduled] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, s: Subject, d: Decision) -> None:
        self.notes.extend(d.notes)
        if d.act is not None:
            self.actions.append(Action(
                d.act.kind, s.domain, d.act.reason, d.act.message, spec=s.spec,
                key_type=s.wanted_key_type,
                expected_fingerprint=s.stored.info.fingerprint if s.stored else None,
                expected_unusable=s.stored is None and s.problem is not None,
                spec_hash=s.spec_hash, targets=s.targets,
                profile=(wanted_profile(s.spec, s.settings)
                         if s.spec is not None and d.act.kind in ORDERS else None),
                reuse_key=keeps_key(s, d.act),
                replaces=replaces_id(s) if d.act.kind is ActionKind.RENEW else None,
                replaces_ca=(s.status.issuer_ca if s.status is not None
                             and d.act.kind is ActionKind.RENEW else None),
                ca_failures=(s.status.ca_failures
                             if s.status is not None and d.act.kind in ORDERS else ()),
                ca=(fallback_start(s.settings.cas, s.status.ca_failure_counts(),
                                   s.settings.fallback_after)
                    if s.status is not None and d.act.kind in ORDERS else None),
            ))
        self.waiting.extend(Waiting(s.domain, w.reason, w.message, w.until) for w in d.waits)
        self.scheduled.extend(Scheduled(s.domain, x.reason, x.message, x.at) for x in d.later)


def next_renewal(
    observed: Observed, statuses: Mapping[str, CertStatus], settings: PolicySettings
) -> dict[str, datetime]:
    """Renewal instant of every stored certificate (for `certs list`, metrics, the timer)."""
    return {
        d: renewal_time(s, statuses.get(d), settings.renew_before, ari=settings.ari)
        for d, s in observed.stored.items()
    }
