"""plan(desired, observed, statuses, now) -> Plan: the pure heart of the controller.

No I/O, no clock, no randomness. Called by reconcile.py each pass, by `diff`, and by the admin
API's GET /api/v1/plan. An empty `Plan.actions` with no `waiting` means converged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from controller.model import CertificateSpec, Desired, KeyType, NameWarning, NjetTarget, Observed
from controller.policy import (
    APPLY_CHAIN,
    ISSUE_CHAIN,
    RENEW_CHAIN,
    PolicySettings,
    Subject,
    first_finding,
    renewal_time,
)
from controller.reasons import Reason
from controller.status import CertStatus, in_backoff


class ActionKind(StrEnum):
    ISSUE = "issue"
    RENEW = "renew"
    APPLY = "apply"
    DELETE = "delete"


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
    spec_hash: str | None = None
    # where to apply in the running NJet (empty: store-only, or not in NJet yet)
    targets: tuple[NjetTarget, ...] = ()


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
class Plan:
    actions: tuple[Action, ...] = ()
    waiting: tuple[Waiting, ...] = ()
    scheduled: tuple[Scheduled, ...] = ()
    warnings: tuple[NameWarning, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def in_sync(self) -> bool:
        return not self.actions and not self.waiting


def spec_hash(spec: CertificateSpec, key_type: KeyType) -> str:
    """Identity of what is wanted; a change resets the per-certificate backoff."""
    text = "|".join([",".join(spec.names), key_type.value])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def wanted_key_type(
    spec: CertificateSpec, bootstrap: Mapping[str, KeyType], settings: PolicySettings
) -> KeyType:
    """keyType when configured, else the block's bootstrap cert type, else the default."""
    if spec.key_type is not None:
        return spec.key_type
    return bootstrap.get(spec.domain, settings.default_key_type)


def plan(
    desired: Desired,
    observed: Observed,
    statuses: Mapping[str, CertStatus],
    now: datetime,
    settings: PolicySettings,
) -> Plan:
    actions: list[Action] = []
    waiting: list[Waiting] = []
    scheduled: list[Scheduled] = []
    notes: list[str] = []

    if observed.njet_error and not settings.store_only:
        notes.append(f"NJet API unreachable: {observed.njet_error}")

    for domain in sorted(desired.specs):
        spec = desired.specs[domain]
        status = statuses.get(domain)
        key_type = wanted_key_type(spec, observed.bootstrap_key_types, settings)
        digest = spec_hash(spec, key_type)
        stored = observed.stored.get(domain)
        target_known = domain in observed.njet_targets
        served = observed.served.get(domain)
        served_fp = (
            served.fingerprint
            if served is not None
            else (status.applied_fingerprint if status is not None else None)
        )
        subject = Subject(
            spec=spec,
            stored=stored,
            problem=observed.problems.get(domain),
            status=status,
            wanted_key_type=key_type,
            served_fingerprint=served_fp,
            njet_present=target_known,
            now=now,
            settings=settings,
        )
        bootstrap = observed.bootstrap_key_types.get(domain)
        if (
            not settings.store_only
            and bootstrap is not None
            and bootstrap.njet_cert_type != key_type.njet_cert_type
        ):
            notes.append(
                f"{domain}: keyType {key_type} differs from the block's bootstrap "
                f"{bootstrap}: NJet would serve both, RSA-only clients keep the old cert"
            )

        action = _decide(subject, digest)
        if action is not None and domain in observed.njet_targets:
            action = replace(action, targets=observed.njet_targets[domain])
        if action is None:
            if not settings.store_only and stored is not None and not target_known:
                _wait_for_njet(domain, observed, waiting)
            continue
        if action.kind is ActionKind.APPLY and not target_known:
            _wait_for_njet(domain, observed, waiting)
            continue
        backoff_applies = status is not None and status.spec_hash in (None, digest)
        if backoff_applies and in_backoff(status, now):
            assert status is not None
            waiting.append(
                Waiting(
                    domain,
                    Reason.BACKOFF,
                    f"{action.kind} ({action.reason}) after {status.attempts} failed "
                    f"attempt(s): {status.last_failure or 'unknown error'}",
                    until=status.backoff_until,
                )
            )
            continue
        actions.append(action)
        if action.kind is not ActionKind.APPLY and not settings.store_only and not target_known:
            _wait_for_njet(domain, observed, waiting, after_issue=True)

    for domain in sorted(set(observed.stored) - set(desired.specs)):
        status = statuses.get(domain)
        if status is None:
            continue  # never managed by us (e.g. written by hand with lego): leave it alone
        if status.orphaned_at is None:
            scheduled.append(
                Scheduled(
                    domain,
                    Reason.ORPHAN_GRACE,
                    "no longer desired; grace period starts",
                    at=now + settings.delete_grace,
                )
            )
            continue
        delete_at = status.orphaned_at + settings.delete_grace
        if now >= delete_at:
            stored = observed.stored[domain]
            actions.append(
                Action(
                    ActionKind.DELETE,
                    domain,
                    Reason.NOT_DESIRED,
                    f"not desired since {status.orphaned_at.isoformat()}",
                    expected_fingerprint=stored.info.fingerprint,
                )
            )
        else:
            scheduled.append(
                Scheduled(domain, Reason.ORPHAN_GRACE, "no longer desired", at=delete_at)
            )

    return Plan(
        actions=tuple(actions),
        waiting=tuple(waiting),
        scheduled=tuple(scheduled),
        warnings=tuple(desired.warnings),
        notes=tuple(notes),
    )


def _decide(s: Subject, digest: str) -> Action | None:
    def act(kind: ActionKind, reason: Reason, message: str) -> Action:
        fp = s.stored.info.fingerprint if s.stored is not None else None
        return Action(kind, s.spec.domain, reason, message, spec=s.spec,
                      key_type=s.wanted_key_type, expected_fingerprint=fp, spec_hash=digest)

    found = first_finding(ISSUE_CHAIN, s)
    if found is not None:
        return act(ActionKind.ISSUE, *found)
    if (
        s.status is not None
        and s.status.force_renew
        and s.status.force_renew_of in (None, s.stored.info.fingerprint if s.stored else None)
    ):
        return act(ActionKind.RENEW, Reason.FORCED, "renewal requested")
    found = first_finding(RENEW_CHAIN, s)
    if found is not None:
        return act(ActionKind.RENEW, *found)
    found = first_finding(APPLY_CHAIN, s)
    if found is not None:
        return act(ActionKind.APPLY, *found)
    return None


def _wait_for_njet(
    domain: str, observed: Observed, waiting: list[Waiting], *, after_issue: bool = False
) -> None:
    if observed.njet_error:
        reason, why = Reason.NJET_UNREACHABLE, observed.njet_error
    else:
        reason = Reason.WAITING_FOR_RELOAD
        why = observed.njet_unmatched.get(domain, "the running NJet has no such server")
    prefix = "issued cert will not be applied: " if after_issue else "cannot apply: "
    waiting.append(Waiting(domain, reason, prefix + why))


def next_renewal(
    observed: Observed, statuses: Mapping[str, CertStatus], settings: PolicySettings
) -> dict[str, datetime]:
    """Renewal instant of every stored certificate (for `certs list`, metrics, the timer)."""
    return {
        d: renewal_time(s, statuses.get(d), settings.renew_before)
        for d, s in observed.stored.items()
    }
