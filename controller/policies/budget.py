"""The rate-limit budget hold, and which orders take a short budget first. Pure.

`rate_budget` is a hold of the desired chain (policy.py): an issue or renew whose order would
spend from a full budget (`[acme.rateLimits]`, policies/ratelimits.py), or whose registered
domain the CA answered `rateLimited` for until a Retry-After that has not ended, waits with
Reason.RATE_LIMIT_BUDGET, naming the limit, what is used of it and for whom, until the window
frees a slot (the latest of those instants when several are full).

It reads `Subject.budget`: what the order would spend after the orders this pass admitted
before it. plan() fills it in after the per-subject chain, walking the orders it admitted by
`order_priority` (renewals of stored certificates first, the urgent ones ahead: expired, an
ARI-chosen renewal time reached, or less than a tenth of the lifetime left; then first
issuances by name), so that when the budget is short the renewals get it.
"""

from __future__ import annotations

from datetime import datetime

from controller.model import ActionKind
from controller.policies.ratelimits import BucketUse, Limit
from controller.policies.subject import Act, Subject, Wait
from controller.reasons import Reason
from controller.status import RENEWAL_SOURCE_ARI

ORDERS = (ActionKind.ISSUE, ActionKind.RENEW)
_MAX_SHOWN = 120  # a name set of 100 names is cut in the message


def rate_budget(s: Subject, act: Act) -> Wait | None:
    budget = s.budget
    if budget is None or act.kind not in ORDERS:
        return None
    refusals: list[tuple[datetime, str]] = [
        (until, f"the CA answered rateLimited for {domain}: no new order for it before its "
                "Retry-After ends")
        for domain, until in budget.blocked
    ]
    refusals += [(u.frees_at or s.now, f"{u.limit}: {u.used} of {u.allowed} used {_whose(u)}")
                 for u in budget.uses if u.full]
    if not refusals:
        return None
    until, why = max(refusals, key=lambda r: r[0])  # the order goes once every one has room
    return Wait(Reason.RATE_LIMIT_BUDGET, f"{why}; {act.kind} ({act.reason}) held back",
                until=until)


def _whose(u: BucketUse) -> str:
    if u.limit is Limit.NEW_ORDERS:
        return f"by account {u.key}" if u.key else "by the account"
    if u.limit is Limit.DUPLICATES:
        shown = u.key if len(u.key) <= _MAX_SHOWN else u.key[:_MAX_SHOWN] + "…"
        return f"for the name set {shown}"
    return f"for {u.key}"


def urgent_renewal(s: Subject, act: Act) -> bool:
    """An expired certificate, a renewal time chosen inside the CA's ARI window for the stored
    certificate (status.renewal_source) that has come, or less than a tenth of the lifetime
    left (the emergency rule)."""
    if act.kind is not ActionKind.RENEW or s.stored is None:
        return False
    if act.reason is Reason.EXPIRED:
        return True
    if act.reason is not Reason.RENEWAL_DUE:
        return False
    st = s.status
    if (st is not None and st.renewal_source == RENEWAL_SOURCE_ARI
            and st.renewal_for in (None, s.stored.info.fingerprint)):
        return True
    info = s.stored.info
    return info.not_after - s.now < (info.not_after - info.not_before) / 10


def order_priority(s: Subject, act: Act) -> tuple[int, float, str]:
    """Sort key of the orders of one pass: urgent renewals, other renewals of a stored
    certificate (soonest expiry first in both), then first issuances by name."""
    if act.kind is ActionKind.RENEW and s.stored is not None:
        return (0 if urgent_renewal(s, act) else 1, s.stored.info.not_after.timestamp(), s.domain)
    return (2, 0.0, s.domain)
