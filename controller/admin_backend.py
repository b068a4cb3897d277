"""The controller's side of the admin API (adapters/admin/server.py) and metrics feed.

Built by service.py. Reads through the reconciler (store, status, desired), changes state only
through the store and status, and wakes the loop; it never reconciles inline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.adapters.admin.server import CertView, DeleteResult
from controller.fold import Outcome
from controller.metrics import ControllerMetrics
from controller.model import Observed, StoredCert
from controller.plan import Plan, next_renewal
from controller.reconcile import Loop, Reconciler
from controller.render import plan_to_dict
from controller.status import CertStatus


def cert_view(
    domain: str,
    stored: StoredCert | None,
    status: CertStatus | None,
    *,
    desired: bool,
    problem: str | None = None,
    renewal_at: datetime | None = None,
    now: datetime,
) -> CertView:
    info = stored.info if stored else None
    return CertView(
        domain=domain,
        names=info.names if info else (),
        not_before=info.not_before if info else None,
        not_after=info.not_after if info else None,
        days_left=round((info.not_after - now).total_seconds() / 86400, 2) if info else None,
        key_type=info.key_type.value if info and info.key_type else None,
        serial=info.serial if info else None,
        fingerprint=info.fingerprint if info else None,
        issuer=info.issuer if info else None,
        served_fingerprint=status.applied_fingerprint if status else None,
        desired=desired,
        renewal_at=renewal_at,
        attempts=status.attempts if status else 0,
        last_failure=status.last_failure if status else None,
        backoff_until=status.backoff_until if status else None,
        problem=problem,
    )


@dataclass
class ControllerBackend:
    reconciler: Reconciler
    loop: Loop
    metrics: ControllerMetrics
    mqtt_state: dict[str, Any]

    def _now(self) -> datetime:
        return self.reconciler.clock()

    def _desired_names(self) -> set[str]:
        try:
            return set(self.reconciler.desired(keep_last_good=True).specs)
        except Exception:
            return set()

    def _views(self, only: str | None = None) -> list[CertView]:
        """Views of every stored (or unusable) certificate, or of `only` that one."""
        stored, problems = self.reconciler.gatherer.store.load_all()
        domains = sorted(set(stored) | set(problems))
        if only is not None:
            domains = [d for d in domains if d == only]
            stored = {d: stored[d] for d in domains if d in stored}
        wanted = self._desired_names()
        statuses = self.reconciler.statuses
        renewals = next_renewal(Observed(stored=stored), statuses, self.reconciler.settings)
        now = self._now()
        return [
            cert_view(d, stored.get(d), statuses.get(d), desired=d in wanted,
                      problem=problems.get(d), renewal_at=renewals.get(d), now=now)
            for d in domains
        ]

    async def list_certs(self) -> list[CertView]:
        return self._views()

    async def get_cert(self, domain: str) -> CertView | None:
        views = self._views(only=domain)
        return views[0] if views else None

    async def delete_cert(self, domain: str) -> DeleteResult:
        deleted = self.reconciler.gatherer.store.delete(domain)
        still = domain in self._desired_names()
        if still:
            self.loop.wake()
        return DeleteResult(deleted=deleted, still_desired=still)

    async def plan_json(self) -> dict[str, Any]:
        result = await self.reconciler.compute(probe=False, keep_last_good=True)
        return plan_to_dict(result.plan, now=self._now())

    def request_reconcile(self) -> None:
        self.loop.wake(probe=True)

    async def force_renew(self, domain: str) -> bool:
        if domain not in self._desired_names():
            return False
        cur = self.reconciler.statuses.get(domain) or CertStatus(domain=domain)
        stored = self.reconciler.gatherer.store.get(domain)
        self.reconciler.update_status(
            cur.with_forced_renewal(of=stored.info.fingerprint if stored else None))
        self.loop.wake()
        return True

    def health(self) -> dict[str, Any]:
        last = self.loop.last
        return {
            "status": "stopping" if self.loop.stopping
            else "ok" if self.loop.last_error is None else "degraded",
            "pid": os.getpid(),
            "reconciles": self.loop.reconciles,
            "last_error": self.loop.last_error,
            "in_sync": last.plan.in_sync if last else None,
            "mqtt_connected": self.mqtt_state.get("connected"),
            "time": self._now().isoformat(),
        }

    def metrics_text(self) -> str:
        return self.metrics.render()

    # -- PassObserver ------------------------------------------------------------------

    def on_pass(self, *, plan: Plan, outcomes: list[Outcome], seconds: float,
                observed: Observed, statuses: dict[str, CertStatus]) -> None:
        failed = any(not o.ok and not o.skipped for o in outcomes)
        self.metrics.observe_reconcile(seconds, failed=failed)
        settings = self.reconciler.settings
        renewals = next_renewal(observed, statuses, settings)
        pending = {a.domain for a in plan.actions} | {w.domain for w in plan.waiting}
        for domain, cert in observed.stored.items():
            self.metrics.set_certificate(domain, not_before=cert.info.not_before,
                                         not_after=cert.info.not_after,
                                         renewal_at=renewals.get(domain))
            self.metrics.set_certificate_ready(domain, domain not in pending)
        self.metrics.retain_certificates(observed.stored)
