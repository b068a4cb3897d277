"""fold(): pure update of per-certificate status from one pass's plan and outcomes.

Called by reconcile.py after execute(); the result is saved by adapters/store/statusfile.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from controller.model import Desired, Observed
from controller.plan import Action, ActionKind, Plan
from controller.reasons import Reason
from controller.status import CertStatus, backoff_delay


@dataclass(frozen=True)
class Outcome:
    """What executing one action did. `ok` False carries the error and how to retry."""

    action: Action
    ok: bool
    error: str | None = None
    permanent: bool = False
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
            out[domain] = cur.evolve(orphaned_at=None)

    # a probe that shows the stored cert served is as good as a verified apply (e.g. after a
    # crash between the apply and the status write)
    if observed is not None:
        for domain, served in observed.served.items():
            stored = observed.stored.get(domain)
            cur = out.get(domain)
            if (stored is not None and cur is not None and served.fingerprint is not None
                    and served.fingerprint == stored.info.fingerprint
                    and cur.applied_fingerprint != served.fingerprint):
                out[domain] = cur.evolve(applied_fingerprint=served.fingerprint,
                                                  applied_at=now)

    for item in plan.scheduled:
        cur = out.get(item.domain)
        if item.reason is Reason.ORPHAN_GRACE and cur is not None and cur.orphaned_at is None:
            out[item.domain] = cur.evolve(orphaned_at=now)

    for o in outcomes:
        if o.skipped:
            continue
        domain = o.action.domain
        cur = out.get(domain) or CertStatus(domain=domain)
        if o.ok and o.action.kind is ActionKind.DELETE:
            out.pop(domain, None)
            removed.add(domain)
            continue
        if o.ok:
            update: dict[str, object] = {
                "attempts": 0,
                "last_failure": None,
                "last_failure_at": None,
                "backoff_until": None,
                "spec_hash": o.action.spec_hash or cur.spec_hash,
                "last_success_at": now,
            }
            if o.action.kind in (ActionKind.ISSUE, ActionKind.RENEW):
                update.update(force_renew=False, force_renew_of=None, renewal_at=None,
                              applied_fingerprint=None)
            if o.served_fingerprint is not None:
                update.update(applied_fingerprint=o.served_fingerprint, applied_at=now)
            out[domain] = cur.evolve(**update)
            continue
        attempts = cur.attempts + 1 if cur.spec_hash in (None, o.action.spec_hash) else 1
        update = {
            "attempts": attempts,
            "last_failure": o.error or "unknown error",
            "last_failure_at": now,
            "backoff_until": now + backoff_delay(attempts, retry_after=o.retry_after),
            "spec_hash": o.action.spec_hash or cur.spec_hash,
        }
        if o.stored_fingerprint is not None and o.action.kind is not ActionKind.APPLY:
            # a new pair was stored but could not be applied: it is not what NJet serves
            update.update(force_renew=False, force_renew_of=None, renewal_at=None,
                          applied_fingerprint=None)
        if o.needs_new_key:  # after the reset above: the trap wins
            update["force_renew"] = True
            update["force_renew_of"] = o.stored_fingerprint or o.action.expected_fingerprint
        out[domain] = cur.evolve(**update)

    return out, removed
