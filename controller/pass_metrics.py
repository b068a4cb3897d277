"""The metrics a finished pass feeds beyond the per-certificate setters: what each action did,
NJet applies and TLS verifications, whether NJet serves the stored pair, since when a
certificate has been failing.

Called by admin_backend.ControllerBackend.on_pass after every reconcile pass (deploy/'s
dashboard and alert rules read these series). `PassFeed` keeps the two things that need memory
across passes: the last evidence of what NJet serves for a name (a probe or a verified apply;
before any, the status's applied fingerprint), and when a name's current failing streak began.
A name is failing while its last attempt failed (`attempts > 0`) and it still needs something
(an action or a wait in the plan, or unusable files): a probe that later finds it fine ends
the streak as a success does. The start is when the streak was first seen; after a restart,
the streak's latest failure (a later bound).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from controller.fold import Outcome
from controller.metrics import ActionResult, ControllerMetrics, VerifyResult
from controller.model import ActionKind, Observed
from controller.plan import Plan
from controller.status import CertStatus


def action_result(o: Outcome) -> ActionResult:
    if o.skipped:
        return ActionResult.SKIPPED
    return ActionResult.SUCCESS if o.ok else ActionResult.FAILURE


def apply_result(o: Outcome) -> ActionResult | None:
    """Whether the outcome pushed a pair to NJet, and how that went (None: no push). An apply
    succeeds only once a handshake proved it served (`served_fingerprint`); an issue or renew
    that stored a new pair and still failed, failed at its apply (fold.py reads it the same)."""
    if o.skipped:
        return None
    if o.action.kind is ActionKind.APPLY:
        return ActionResult.SUCCESS if o.ok else ActionResult.FAILURE
    if o.action.kind in (ActionKind.ISSUE, ActionKind.RENEW):
        if o.served_fingerprint is not None:
            return ActionResult.SUCCESS
        if not o.ok and o.stored_fingerprint is not None:
            return ActionResult.FAILURE
    return None


@dataclass
class PassFeed:
    """Feeds ControllerMetrics from one pass; one per controller (the backend holds it)."""

    _served: dict[str, str | None] = field(default_factory=dict)
    _gauged: set[str] = field(default_factory=set)
    _failing_since: dict[str, datetime] = field(default_factory=dict)

    def record(self, metrics: ControllerMetrics, *, plan: Plan, outcomes: Sequence[Outcome],
               observed: Observed, statuses: Mapping[str, CertStatus], store_only: bool,
               now: datetime) -> None:
        for o in outcomes:
            result = action_result(o)
            metrics.observe_action(o.action.kind.value, result)
            if o.action.kind is ActionKind.RENEW and result is not ActionResult.SKIPPED:
                metrics.observe_renewal(o.action.domain, result)
            applied = apply_result(o)
            if applied is not None:
                metrics.observe_njet_apply(applied)
        for domain, served in observed.served.items():
            stored = observed.stored.get(domain)
            if stored is None:
                continue
            metrics.observe_njet_verify(
                VerifyResult.ERROR if served.fingerprint is None
                else VerifyResult.MATCH if served.fingerprint == stored.info.fingerprint
                else VerifyResult.MISMATCH)
        if not store_only and observed.njet_error is None:  # NJet unreadable: keep the last
            self._served_matches(metrics, outcomes, observed, statuses)
        metrics.set_rate_budget((r.ca, r.limit.value, r.remaining) for r in plan.rate_budget)
        pending = {a.domain for a in plan.actions} | {w.domain for w in plan.waiting}
        self._failing(metrics, statuses, pending | set(observed.problems), now)

    def _served_matches(self, metrics: ControllerMetrics, outcomes: Sequence[Outcome],
                        observed: Observed, statuses: Mapping[str, CertStatus]) -> None:
        """njcm_certificate_served_matches_stored for every name the running NJet has a block
        for and the store a pair: the stored pair is the one after this pass's actions."""
        stored = {d: s.info.fingerprint for d, s in observed.stored.items()}
        for domain, served in observed.served.items():
            self._served[domain] = served.fingerprint
        for o in outcomes:
            if o.skipped:
                continue
            if o.stored_fingerprint is not None:
                stored[o.action.domain] = o.stored_fingerprint
            if o.served_fingerprint is not None:
                self._served[o.action.domain] = o.served_fingerprint
        gauged: set[str] = set()
        for domain in observed.njet_targets:
            fp = stored.get(domain)
            if fp is None:
                continue
            status = statuses.get(domain)
            fallback = status.applied_fingerprint if status is not None else None
            metrics.set_served_matches_stored(domain, self._served.get(domain, fallback) == fp)
            gauged.add(domain)
        for domain in self._gauged - gauged:
            metrics.set_served_matches_stored(domain, None)
        for domain in set(self._served) - set(observed.njet_targets):
            del self._served[domain]
        self._gauged = gauged

    def _failing(self, metrics: ControllerMetrics, statuses: Mapping[str, CertStatus],
                 pending: set[str], now: datetime) -> None:
        failing = {d: s for d, s in statuses.items() if s.attempts > 0 and d in pending}
        for domain in set(self._failing_since) - set(failing):
            del self._failing_since[domain]
            metrics.set_failing_since(domain, None)
        for domain, status in failing.items():
            since = self._failing_since.setdefault(domain, status.last_failure_at or now)
            metrics.set_failing_since(domain, since)
