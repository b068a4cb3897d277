"""fold(): pure update of per-certificate status from one pass's plan and outcomes.

Called by reconcile.py after execute(); the result is saved by adapters/store/statusfile.py.
Every change goes through CertStatus's named transitions (status.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from controller.model import Desired, Observed
from controller.plan import Action, ActionKind, Plan
from controller.reasons import Reason
from controller.status import CertStatus


@dataclass(frozen=True)
class Outcome:
    """What executing one action did. `ok` False carries the error and when to retry: every
    failure backs off the same way (status.backoff_delay), a Retry-After from the CA may
    lengthen it."""

    action: Action
    ok: bool
    error: str | None = None
    retry_after: float | None = None
    # fingerprint of the pair now stored for the domain (after issue/renew)
    stored_fingerprint: str | None = None
    # fingerprint a TLS handshake proved NJet serves (after an apply)
    served_fingerprint: str | None = None
    # NJet answered "repeated" and does not serve it: only a fresh key gets out of the trap
    needs_new_key: bool = False
    # the precondition no longer held right before acting: nothing was done
    skipped: bool = False


def fold(
    statuses: Mapping[str, CertStatus],
    *,
    desired: Desired,
    plan: Plan,
    outcomes: Iterable[Outcome],
    now: datetime,
    observed: Observed | None = None,
) -> tuple[dict[str, CertStatus], set[str]]:
    """Return (new statuses, domains whose status file should be removed)."""
    out = dict(statuses)
    removed: set[str] = set()

    for domain in desired.specs:
        cur = out.get(domain)
        if cur is None:
            out[domain] = CertStatus(domain=domain)
        elif cur.orphaned_at is not None:
            out[domain] = cur.with_desired_again()

    # a probe that shows the stored cert served is as good as a verified apply (e.g. after a
    # crash between the apply and the status write)
    if observed is not None:
        for domain, served in observed.served.items():
            stored = observed.stored.get(domain)
            cur = out.get(domain)
            if (stored is not None and cur is not None and served.fingerprint is not None
                    and served.fingerprint == stored.info.fingerprint
                    and cur.applied_fingerprint != served.fingerprint):
                out[domain] = cur.with_applied(served.fingerprint, at=now)

    for item in plan.scheduled:
        cur = out.get(item.domain)
        if item.reason is Reason.ORPHAN_GRACE and cur is not None and cur.orphaned_at is None:
            out[item.domain] = cur.with_orphaned(now)

    for o in outcomes:
        if o.skipped:
            continue
        domain = o.action.domain
        cur = out.get(domain) or CertStatus(domain=domain)
        if o.ok and o.action.kind is ActionKind.DELETE:
            out.pop(domain, None)
            removed.add(domain)
            continue
        out[domain] = _succeeded(cur, o, now) if o.ok else _failed(cur, o, now)

    return out, removed


def _succeeded(cur: CertStatus, o: Outcome, now: datetime) -> CertStatus:
    new = cur.with_success(spec_hash=o.action.spec_hash, at=now)
    if o.action.kind in (ActionKind.ISSUE, ActionKind.RENEW):
        new = new.with_issued(at=now)
    if o.served_fingerprint is not None:
        new = new.with_applied(o.served_fingerprint, at=now)
    return new


def _failed(cur: CertStatus, o: Outcome, now: datetime) -> CertStatus:
    new = cur.with_failure(o.error or "unknown error", spec_hash=o.action.spec_hash, at=now,
                           retry_after=o.retry_after)
    if o.stored_fingerprint is not None and o.action.kind is not ActionKind.APPLY:
        # a new pair was stored but could not be applied: it is not what NJet serves
        new = new.with_issued(at=now)
    if o.needs_new_key:  # after the reset above: the trap wins
        new = new.with_new_key_needed(of=o.stored_fingerprint or o.action.expected_fingerprint)
    return new
