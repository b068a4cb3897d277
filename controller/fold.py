"""fold(): pure update of per-certificate status from one pass's plan and outcomes.

Called by reconcile.py after execute(); the result is saved by adapters/store/statusfile.py.
Every change goes through CertStatus's named transitions (status.py). Last, each certificate's
conditions are set from the pass (`_conditions`): Ready is true when the pair is stored and
served (in store-only mode: stored) and nothing is pending for it, else false with the reason
of what is pending; Issuing is true from a failed issue/renew (with its reason) through its
backoff until an issuance succeeds or nothing is pending any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from controller.model import Desired, Observed
from controller.plan import Action, ActionKind, Plan, Waiting
from controller.reasons import Reason
from controller.status import ISSUING, READY, CaStreak, CertStatus


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
    # after issue/renew: the profile the newOrder asked for ("": none) and the one the CA's
    # order object named (None: none), from IssuedCert
    ordered_profile: str | None = None
    ca_profile: str | None = None
    # after issue/renew from an issuer of several CAs (ports.CaChoices): the directory URL of
    # the CA that issued the new pair, and after a failed order the consecutive failures per
    # CA it left (None: not counted)
    issuer_ca: str | None = None
    ca_failures: tuple[CaStreak, ...] | None = None


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
    for domain in desired.elsewhere:  # fleet mode: wanted by another live node
        cur = out.get(domain)
        if cur is not None and cur.orphaned_at is not None:
            out[domain] = cur.with_desired_again()

    # a probe that shows the stored cert served is as good as a verified apply (e.g. after a
    # crash between the apply and the status write)
    if observed is not None:
        for domain, served in observed.served.items():
            stored = observed.stored.get(domain)
            cur = out.get(domain)
            if stored is None or cur is None:
                continue
            if (served.fingerprint is not None
                    and served.fingerprint == stored.info.fingerprint
                    and cur.applied_fingerprint != served.fingerprint):
                out[domain] = cur.with_applied(served.fingerprint, at=now)
            elif (served.fingerprint != stored.info.fingerprint
                    and cur.applied_fingerprint == stored.info.fingerprint):
                # no longer served (NJet restarted with its config cert, a worker failed): forget
                # the old proof, or a failed re-apply would look served until the next probe
                out[domain] = cur.with_not_served()

    for item in plan.scheduled:
        cur = out.get(item.domain)
        if item.reason is Reason.ORPHAN_GRACE and cur is not None and cur.orphaned_at is None:
            out[item.domain] = cur.with_orphaned(now)

    outcomes = list(outcomes)
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

    _conditions(out, desired=desired, plan=plan, outcomes=outcomes, now=now, observed=observed)
    return out, removed


def _succeeded(cur: CertStatus, o: Outcome, now: datetime) -> CertStatus:
    new = cur.with_success(spec_hash=o.action.spec_hash, at=now)
    if o.action.kind in (ActionKind.ISSUE, ActionKind.RENEW):
        new = _issued(new, o, now)
    if o.served_fingerprint is not None:
        new = new.with_applied(o.served_fingerprint, at=now)
    return new


def _issued(cur: CertStatus, o: Outcome, now: datetime) -> CertStatus:
    """A new pair is stored: with the profile wanted for it and what the order carried."""
    return cur.with_issued(at=now, profile=o.action.profile, ordered=o.ordered_profile,
                           ca_profile=o.ca_profile).with_issuer_ca(o.issuer_ca)


def _failed(cur: CertStatus, o: Outcome, now: datetime) -> CertStatus:
    # an apply, or a new pair this node could not apply: this node's failure, not the order's
    own = o.action.kind is ActionKind.APPLY or o.stored_fingerprint is not None
    new = cur.with_failure(o.error or "unknown error", spec_hash=o.action.spec_hash, at=now,
                           retry_after=o.retry_after, node_only=own)
    if o.stored_fingerprint is not None and o.action.kind is not ActionKind.APPLY:
        # a new pair was stored but could not be applied: it is not what NJet serves
        new = _issued(new, o, now)
    elif o.ca_failures is not None:  # the order failed at every CA it was sent to
        new = new.with_ca_failures({s.ca: s.failures for s in o.ca_failures})
    if o.needs_new_key:  # after the reset above: the trap wins
        new = new.with_new_key_needed(of=o.stored_fingerprint or o.action.expected_fingerprint)
    return new


# -- conditions ----------------------------------------------------------------------------------

_DONE = {ActionKind.ISSUE: "Issued", ActionKind.RENEW: "Renewed", ActionKind.APPLY: "Applied"}


def _conditions(
    out: dict[str, CertStatus],
    *,
    desired: Desired,
    plan: Plan,
    outcomes: list[Outcome],
    now: datetime,
    observed: Observed | None,
) -> None:
    """Set Ready and Issuing of every status in `out` from this pass (in place)."""
    done = {o.action.domain: o for o in outcomes if not o.skipped}
    skipped = {o.action.domain for o in outcomes if o.skipped}
    waits: dict[str, list[Waiting]] = {}
    for w in plan.waiting:
        waits.setdefault(w.domain, []).append(w)
    later = {s.domain: s for s in plan.scheduled if s.reason is Reason.ORPHAN_GRACE}
    for domain, cur in out.items():
        o, wait = done.get(domain), waits.get(domain, [])
        if domain not in desired.specs:  # an orphan: on its way out
            why = wait[0] if wait else later.get(domain)
            if why is not None:
                cur = cur.with_condition(READY, true=False, reason=why.reason.value,
                                         message=why.message, at=now)
        elif o is not None:
            cur = _after_outcome(cur, o, wait, now)
        elif domain not in skipped:
            cur = _without_action(cur, domain, wait, now, observed)
        out[domain] = cur


def _after_outcome(cur: CertStatus, o: Outcome, wait: list[Waiting], now: datetime) -> CertStatus:
    kind = o.action.kind
    issuing = kind in (ActionKind.ISSUE, ActionKind.RENEW)
    if not o.ok:
        cur = cur.with_condition(READY, true=False, reason=o.action.reason.value,
                                 message=f"{kind} failed: {o.error or 'unknown error'}", at=now)
        if issuing:
            until = cur.backoff_until.isoformat() if cur.backoff_until else "the next pass"
            cur = cur.with_condition(
                ISSUING, true=True, reason=o.action.reason.value, at=now,
                message=f"attempt {cur.attempts} failed: {o.error or 'unknown error'}; "
                        f"next attempt after {until}")
        return cur
    if issuing:
        cur = cur.with_condition(ISSUING, true=False, reason=_DONE[kind], at=now,
                                 message=f"{kind} done ({o.action.reason.value})")
    if wait:
        return cur.with_condition(READY, true=False, reason=wait[0].reason.value,
                                  message=wait[0].message, at=now)
    if issuing and o.action.targets and o.served_fingerprint is None:
        return cur.with_condition(READY, true=False, reason=Reason.NOT_YET_VALID.value, at=now,
                                  message="stored; applied to NJet once its notBefore is reached")
    served = o.served_fingerprint is not None
    return cur.with_condition(
        READY, true=True, reason=_DONE.get(kind, "Ready"), at=now,
        message="stored and served by NJet (verified by a TLS handshake)" if served
        else "stored (store-only mode: nothing is applied)")


def _without_action(cur: CertStatus, domain: str, wait: list[Waiting], now: datetime,
                    observed: Observed | None) -> CertStatus:
    if wait:
        cur = cur.with_condition(READY, true=False, reason=wait[0].reason.value,
                                 message=wait[0].message, at=now)
        if any(w.reason is Reason.BACKOFF for w in wait):
            return cur  # Issuing stays as the failure that started the backoff set it
    elif observed is not None and domain in observed.stored:
        ready = cur.condition(READY)
        if ready is None or not ready.true:
            served = cur.applied_fingerprint == observed.stored[domain].info.fingerprint
            cur = cur.with_condition(
                READY, true=True, reason="InSync", at=now,
                message="stored and served by NJet" if served else "stored")
    else:
        return cur  # nothing known (no observation, or nothing stored and nothing planned)
    issuing = cur.condition(ISSUING)
    if issuing is None or issuing.true:
        cur = cur.with_condition(ISSUING, true=False, reason="Idle", at=now,
                                 message="no issuance pending")
    return cur
