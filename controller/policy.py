"""Small, pure, named checks over one desired certificate; the chain order is the spec.

Each check returns a `Reason` (with a human message) or None. plan.py walks CHAIN in order and
the first hit wins. Also `renewal_time()`: when a certificate should be renewed.
No I/O, no clock, no randomness: `now` is always passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.model import CertificateSpec, KeyType, StoredCert
from controller.reasons import Reason
from controller.status import CertStatus

SHORT_LIFETIME = timedelta(days=10)


@dataclass(frozen=True)
class PolicySettings:
    renew_before: timedelta = timedelta(days=30)
    default_key_type: KeyType = KeyType.RSA2048
    delete_grace: timedelta = timedelta(hours=24)
    store_only: bool = True


@dataclass(frozen=True)
class Subject:
    """Everything the checks may look at for one desired name (assembled by plan.py)."""

    spec: CertificateSpec
    stored: StoredCert | None
    problem: str | None  # why stored files are unusable, if they are
    status: CertStatus | None
    wanted_key_type: KeyType
    served_fingerprint: str | None  # best knowledge of what NJet serves (None = unknown)
    njet_present: bool  # the running NJet has the block (always False in store-only mode)
    now: datetime
    settings: PolicySettings


Finding = tuple[Reason, str]
Check = Callable[[Subject], Finding | None]


def renewal_window(lifetime: timedelta, renew_before: timedelta) -> timedelta:
    """How long before not_after to renew.

    min(renewBefore, 1/3 of the lifetime — 1/2 for lifetimes under 10 days), so a 90-day cert
    renews at 30 days left and a 6-day one at 3 days left instead of looping.
    """
    fraction = lifetime / 2 if lifetime < SHORT_LIFETIME else lifetime / 3
    return min(renew_before, fraction)


def renewal_time(
    stored: StoredCert, status: CertStatus | None, renew_before: timedelta
) -> datetime:
    """The instant renewal becomes due.

    A time chosen once and persisted in status (e.g. inside an ARI window) takes over, unless
    less than a tenth of the lifetime would be left then (emergency override).
    """
    info = stored.info
    lifetime = info.not_after - info.not_before
    default = info.not_after - renewal_window(lifetime, renew_before)
    if status is not None and status.renewal_at is not None:
        emergency = info.not_after - lifetime / 10
        return min(status.renewal_at, emergency)
    return default


def cert_missing(s: Subject) -> Finding | None:
    if s.stored is None and s.problem is None:
        return Reason.MISSING, "no certificate stored"
    return None


def stored_unusable(s: Subject) -> Finding | None:
    if s.stored is None and s.problem is not None:
        return Reason.STORED_UNUSABLE, s.problem
    return None


def names_changed(s: Subject) -> Finding | None:
    assert s.stored is not None
    have = s.stored.info
    want = s.spec.names
    if set(have.names) != set(want) or (have.common_name or "") != want[0]:
        gained = sorted(set(want) - set(have.names))
        lost = sorted(set(have.names) - set(want))
        parts = [f"+{','.join(gained)}" if gained else "", f"-{','.join(lost)}" if lost else ""]
        detail = " ".join(p for p in parts if p) or f"CN {have.common_name} -> {want[0]}"
        return Reason.NAMES_CHANGED, f"names changed: {detail}"
    return None


def key_type_changed(s: Subject) -> Finding | None:
    assert s.stored is not None
    have = s.stored.info.key_type
    if have != s.wanted_key_type:
        return Reason.KEY_TYPE_CHANGED, f"key type {have or 'unknown'} -> {s.wanted_key_type}"
    return None


def expired(s: Subject) -> Finding | None:
    assert s.stored is not None
    if s.now >= s.stored.info.not_after:
        return Reason.EXPIRED, f"expired at {s.stored.info.not_after.isoformat()}"
    return None


def renewal_due(s: Subject) -> Finding | None:
    assert s.stored is not None
    due = renewal_time(s.stored, s.status, s.settings.renew_before)
    if s.now >= due:
        left = s.stored.info.not_after - s.now
        return Reason.RENEWAL_DUE, f"renewal due since {due.isoformat()} ({_days(left)} left)"
    return None


def not_served(s: Subject) -> Finding | None:
    assert s.stored is not None
    if s.settings.store_only or not s.njet_present:
        return None
    if s.served_fingerprint != s.stored.info.fingerprint:
        shown = s.served_fingerprint[:16] if s.served_fingerprint else "unknown/other"
        return Reason.NOT_SERVED, f"NJet serves {shown}, stored {s.stored.info.fingerprint[:16]}"
    return None


# The order is the spec: the first hit decides the action.
ISSUE_CHAIN: tuple[Check, ...] = (cert_missing, stored_unusable)
RENEW_CHAIN: tuple[Check, ...] = (names_changed, key_type_changed, expired, renewal_due)
APPLY_CHAIN: tuple[Check, ...] = (not_served,)


def first_finding(chain: tuple[Check, ...], subject: Subject) -> Finding | None:
    for check in chain:
        found = check(subject)
        if found is not None:
            return found
    return None


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f}d" if abs(days) >= 1 else f"{delta.total_seconds() / 3600:.1f}h"
