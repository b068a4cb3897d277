"""Whether an operator's forced renewal may go ahead: at most `[controller] forceRenewPerHour`
per certificate within status.FORCE_RENEW_WINDOW, whatever `force` says; none of a certificate
younger than `forceRenewMinAge` unless forced; no second request while one is pending for the
stored pair.

Called by admin_backend.py (`forced_renewal`, for the admin API's POST /api/v1/cert/{d}/renew
and for `certs renew`), with the limits of the config (ForceRenewLimits). A request allowed
comes back as the CertStatus to save: its forced-renewal transition and its Issuing condition
(status.py). Pure: `now` is passed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.reasons import Reason
from controller.status import FORCE_RENEW_WINDOW, ISSUING, CertStatus


@dataclass(frozen=True, slots=True)
class ForceRenewLimits:
    """`[controller] forceRenewPerHour` and `forceRenewMinAge`."""

    per_hour: int = 6
    min_age: timedelta = timedelta(minutes=10)


def forced_renewal_refusal(
    status: CertStatus | None,
    *,
    not_before: datetime | None,
    now: datetime,
    limits: ForceRenewLimits,
    force: bool,
) -> str | None:
    """Why a forced renewal must be refused now, or None when it may go ahead.

    At most `limits.per_hour` per certificate within FORCE_RENEW_WINDOW, whatever `force` says;
    a certificate younger than `limits.min_age` (since this controller stored it, or since its
    notBefore, whichever is later) only with `force`. `not_before` None: nothing is stored.
    """
    if limits.per_hour <= 0:
        return "forced renewals are switched off ([controller] forceRenewPerHour = 0)"
    recent = sorted(status.forced_renewals_since(now - FORCE_RENEW_WINDOW)) if status else []
    if len(recent) >= limits.per_hour:
        again = recent[len(recent) - limits.per_hour] + FORCE_RENEW_WINDOW
        return (f"{len(recent)} forced renewals within the last hour: at most "
                f"{limits.per_hour} per hour ([controller] forceRenewPerHour); the next one "
                f"is possible at {again.isoformat()}")
    if force or not_before is None:
        return None
    born = max(not_before, status.issued_at) if status and status.issued_at else not_before
    age = now - born
    if age < limits.min_age:
        return (f"the certificate is only {_short(age)} old (less than forceRenewMinAge "
                f"{_short(limits.min_age)}); force it to renew anyway (admin API ?force=true, "
                "certs renew --force)")
    return None


def _short(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class ForcedRenewalDecision:
    """What to do with one forced-renewal request: "requested" (save `status`), "pending"
    (one is already waiting for the stored pair: nothing to save, no second order) or
    "refused" (`reason` says why)."""

    outcome: str
    reason: str = ""
    status: CertStatus | None = None


def decide_forced_renewal(
    status: CertStatus | None,
    *,
    domain: str,
    stored_fingerprint: str | None,
    not_before: datetime | None,
    now: datetime,
    limits: ForceRenewLimits,
    force: bool,
) -> ForcedRenewalDecision:
    """The admin API's and `certs renew`'s one rule for a forced renewal of `domain`, whose
    stored pair is `stored_fingerprint` (None: nothing stored) with `not_before`."""
    if status is not None and status.forced_renewal_pending(stored_fingerprint):
        return ForcedRenewalDecision("pending", "a forced renewal is already pending")
    why = forced_renewal_refusal(status, not_before=not_before, now=now, limits=limits,
                                 force=force)
    if why is not None:
        return ForcedRenewalDecision("refused", why)
    cur = (status or CertStatus(domain=domain)).with_forced_renewal(of=stored_fingerprint, at=now)
    issuing = cur.with_condition(ISSUING, true=True, reason=Reason.FORCED.value,
                                 message="an operator asked for a renewal; the next pass orders it",
                                 at=now)
    return ForcedRenewalDecision("requested", status=issuing)
