"""The controller's side of the admin API (adapters/admin/server.py) and metrics feed.

Built by service.py. Reads through the reconciler (store, status, desired), changes state only
through the store and status, and wakes the loop; it never reconciles inline. Forced renewals
go through `forced_renewal` (also used by `certs renew` when no controller runs), bounded by
`[controller] forceRenewPerHour` / `forceRenewMinAge`; mutating calls are written to the event
log (adapters/store/events.py) by `record_event`, and `recent_events` reads it back (GET
/api/v1/events). `revoke_stored` revokes a stored certificate at the CA before a delete (the
admin DELETE `?revoke=true`, and `certs delete --revoke` when no controller runs).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.adapters.admin.server import CertView, DeleteResult
from controller.adapters.store.events import EventLog
from controller.adapters.store.gcconfirm import confirm_held
from controller.config import Config
from controller.errors import ControllerError
from controller.fold import Outcome
from controller.logs import log_event
from controller.metrics import ControllerMetrics
from controller.model import Observed, StoredCert
from controller.pass_metrics import PassFeed
from controller.plan import Plan, next_renewal
from controller.ports import CertStore, GcConfirmResult, IssuerFactory, NodeServing, RenewResult
from controller.reasons import Reason
from controller.reconcile import Loop, Reconciler
from controller.render import plan_to_dict
from controller.renewal_requests import ForceRenewLimits, decide_forced_renewal
from controller.status import CertStatus

if TYPE_CHECKING:
    from controller.fleet import Fleet


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
    events: EventLog | None = None  # mutating calls are written here (service.py sets it)
    renew_limits: ForceRenewLimits = field(default_factory=ForceRenewLimits)
    pass_feed: PassFeed = field(default_factory=PassFeed)  # action/NJet/failing-since metrics
    fleet: Fleet | None = None  # fleet mode (service.py sets it): /healthz's fleet part

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
        return await self._with_fleet(self._views())

    async def get_cert(self, domain: str) -> CertView | None:
        views = await self._with_fleet(self._views(only=domain))
        return views[0] if views else None

    async def _with_fleet(self, views: list[CertView]) -> list[CertView]:
        """Fleet mode: each view with what every node's NJet serves (read off the loop; the
        views stay as they are while the database is away)."""
        if self.fleet is None or not views:
            return views
        try:
            served = await asyncio.to_thread(self.fleet.status.served_by)
        except ControllerError:
            return views
        return [replace(v, served_by=tuple(
            NodeServing(s.node, s.fingerprint, s.probed_at,
                        current=s.fingerprint is not None and s.fingerprint == v.fingerprint)
            for s in served.get(v.domain, ()))) for v in views]

    async def delete_cert(self, domain: str, *, revoke: bool = False) -> DeleteResult:
        # never unlinked: moved to quarantine/ (`certs quarantine restore` brings it back)
        store = self.reconciler.gatherer.store
        revoked = False
        if revoke:  # first: a revocation that fails deletes nothing
            revoked = await revoke_stored(store, self.reconciler.executor.issuer_factory,
                                          domain, now=self._now())
        where = await asyncio.to_thread(store.quarantine, domain)
        still = domain in self._desired_names()
        if still:
            self.loop.wake()
        return DeleteResult(deleted=where is not None, still_desired=still,
                            quarantined_to=f"quarantine/{os.path.basename(where)}/"
                            if where else None, revoked=revoked)

    async def recent_events(self, domain: str | None = None,
                            limit: int = 100) -> list[dict[str, Any]]:
        if self.events is None:
            return []
        return await asyncio.to_thread(self.events.recent, limit, domain=domain)

    async def gc_confirm(self, by: str) -> GcConfirmResult:
        """Release, once, the deletions the deletion guard holds now; wake the loop."""
        confirmations = self.reconciler.gc_confirmations
        if confirmations is None:
            return GcConfirmResult(released=())
        result = await self.reconciler.compute(probe=False, keep_last_good=True)
        released = confirm_held(result.plan, confirmations, now=self._now(), by=by)
        if released:
            self.loop.wake()
        hold = result.plan.gc_hold
        return GcConfirmResult(released=released, stored=hold.stored if hold else 0)

    async def plan_json(self) -> dict[str, Any]:
        result = await self.reconciler.compute(probe=False, keep_last_good=True)
        return plan_to_dict(result.plan, now=self._now())

    def request_reconcile(self) -> None:
        self.loop.wake(probe=True)

    async def force_renew(self, domain: str, *, force: bool = False) -> RenewResult:
        result = await forced_renewal(self.reconciler, domain, force=force,
                                      limits=self.renew_limits)
        if result.outcome == "requested":
            self.loop.wake()
        return result

    def record_event(self, *, peer: str, action: str, domain: str | None, result: str,
                     detail: str | None = None) -> None:
        record_event(self.events, kind="admin", peer=peer, action=action, domain=domain,
                     result=result, detail=detail)

    def health(self) -> dict[str, Any]:
        """/healthz's one document (README, Admin API): `ok`, `status`, then each part's fields.

        Each part says what it makes the whole status (HEALTH_STATUSES, the worst wins) and adds
        its fields; a new concern is one more part. `ok` is true only while the status is "ok"
        (the admin server answers 503 otherwise). No field ever carries an error's message or
        file contents (`last_error` is sanitized); the admin server shows an unauthenticated
        caller only ports.PUBLIC_HEALTH_FIELDS.
        """
        parts = (self._health_loop(), self._health_store(), self._health_gc(),
                 self._health_mqtt(), self._health_fleet())
        status = max((p.status for p in parts), key=HEALTH_STATUSES.index)
        doc: dict[str, Any] = {"ok": status == "ok", "status": status}
        for part in parts:
            doc.update(part.fields)
        return doc

    def _health_loop(self) -> HealthPart:
        last, loop = self.loop.last, self.loop
        status = "stopping" if loop.stopping else "degraded" if loop.last_error else "ok"
        return HealthPart(status, {
            "pid": os.getpid(),
            "reconciles": loop.reconciles,
            "last_error": safe_error(loop.last_error),
            "in_sync": last.plan.in_sync if last else None,
            "time": self._now().isoformat(),
        })

    def _health_store(self) -> HealthPart:
        """Pairs the last pass found unusable (until they are quarantined and reissued)."""
        last = self.loop.last
        problems = sorted(last.observed.problems.items()) if last else []
        return HealthPart("degraded" if problems else "ok", {
            "problem_count": len(problems),
            "problems": [{"domain": d, "reason": why} for d, why in problems],
        })

    def _health_gc(self) -> HealthPart:
        """Deletions the deletion guard holds until `gc confirm` (counts only, no names)."""
        last = self.loop.last
        hold = last.plan.gc_hold if last else None
        if hold is None:
            return HealthPart("ok", {"gc_hold": None})
        return HealthPart("degraded", {"gc_hold": {"pending": len(hold.pending),
                                                   "stored": hold.stored}})

    def _health_mqtt(self) -> HealthPart:
        # events only wake the loop (the periodic resync goes on): a lost link is not "degraded"
        return HealthPart("ok", {"mqtt_connected": self.mqtt_state.get("connected")})

    def _health_fleet(self) -> HealthPart:
        """Fleet mode: the database link, live nodes, whether this node's settings agree."""
        if self.fleet is None:
            return HealthPart("ok", {})
        status, fields = self.fleet.health()
        return HealthPart(status, fields)

    def metrics_text(self) -> str:
        return self.metrics.render()

    # -- PassObserver ------------------------------------------------------------------

    def on_pass(self, *, plan: Plan, outcomes: list[Outcome], seconds: float,
                observed: Observed, statuses: dict[str, CertStatus]) -> None:
        failed = any(not o.ok and not o.skipped for o in outcomes)
        self.metrics.observe_reconcile(seconds, failed=failed)
        if self.fleet is not None:
            self.fleet.observe(self.metrics)
        settings = self.reconciler.settings
        self.pass_feed.record(self.metrics, plan=plan, outcomes=outcomes, observed=observed,
                              statuses=statuses, store_only=settings.store_only, now=self._now())
        renewals = next_renewal(observed, statuses, settings)
        not_ready = not_ready_reasons(plan, observed)
        for domain, cert in observed.stored.items():
            self.metrics.set_certificate(domain, not_before=cert.info.not_before,
                                         not_after=cert.info.not_after,
                                         renewal_at=renewals.get(domain))
            ari = statuses[domain].ari if domain in statuses else None
            self.metrics.set_ari_next_poll(domain, ari.next_poll if ari is not None and ari.cert_id
                                           and ari.fingerprint == cert.info.fingerprint else None)
        names = set(observed.stored) | set(not_ready)
        for domain in sorted(names):
            self.metrics.set_certificate_ready(domain, domain not in not_ready,
                                               reason=not_ready.get(domain))
            status = statuses.get(domain)
            self.metrics.set_certificate_issuer(domain, status.issuer_ca if status else None)
        self.metrics.retain_certificates(names)


HEALTH_STATUSES = ("ok", "degraded", "stopping")
"""/healthz `status` values, least to most severe: the most severe of the parts' is shown."""


@dataclass(frozen=True)
class HealthPart:
    """One concern's contribution to /healthz: what it makes the status, and its fields."""

    status: str
    fields: dict[str, Any]


def safe_error(text: str | None) -> str | None:
    """An error for /healthz without its message, which may quote a file (a config line with a
    password): the exception type and, when the message starts with one (njet.conf errors
    do), the file:line — never the line itself. The full message is in the controller log."""
    if text is None:
        return None
    kind, sep, message = text.partition(": ")
    if not sep or not _ERROR_TYPE.fullmatch(kind):
        return "error (the message is in the controller log)"
    where = _WHERE.match(message)
    at = f" at {where.group(1)}" if where else ""
    return f"{kind}{at} (the message is in the controller log)"


_ERROR_TYPE = re.compile(r"[A-Z][A-Za-z0-9_]*")
# "<path>:<line>: " or "<path>: " where the path has a "/" or a .conf/.toml name
_WHERE = re.compile(r"((?:[^\s:]*/[^\s:]*|[^\s:/]+\.(?:conf|toml))(?::\d+)?): ")


def not_ready_reasons(plan: Plan, observed: Observed) -> dict[str, str]:
    """Why each certificate that is not ready is not: files it cannot use (StoredUnusable),
    else the reason of its action, else of its wait. A name missing here is ready."""
    out = {d: Reason.STORED_UNUSABLE.value for d in observed.problems}
    for a in plan.actions:
        out.setdefault(a.domain, a.reason.value)
    for w in plan.waiting:
        out.setdefault(w.domain, w.reason.value)
    return out


def renew_limits(config: Config) -> ForceRenewLimits:
    """`[controller] forceRenewPerHour` and `forceRenewMinAge`."""
    return ForceRenewLimits(per_hour=config.controller.forceRenewPerHour,
                            min_age=config.controller.forceRenewMinAge)


async def forced_renewal(reconciler: Reconciler, domain: str, *, force: bool,
                         limits: ForceRenewLimits) -> RenewResult:
    """Record a forced renewal of `domain` when renewal_requests.decide_forced_renewal allows it
    (the admin API, and `certs renew` when no controller runs). The decision and the status
    write follow each other with no await between, so concurrent requests record one renewal."""
    desired = await reconciler.desired_async(keep_last_good=True)
    if domain not in desired.specs:
        return RenewResult("unknown", f"{domain} is not a desired certificate")
    stored = reconciler.gatherer.store.get(domain)
    decision = decide_forced_renewal(
        reconciler.statuses.get(domain), domain=domain,
        stored_fingerprint=stored.info.fingerprint if stored else None,
        not_before=stored.info.not_before if stored else None,
        now=reconciler.clock(), limits=limits, force=force)
    if decision.status is not None:
        reconciler.update_status(decision.status)
    return RenewResult(decision.outcome, decision.reason)


async def revoke_stored(store: CertStore, issuer_factory: IssuerFactory, domain: str, *,
                        now: datetime) -> bool:
    """Revoke the certificate stored for `domain` at the CA (admin DELETE ?revoke=true, `certs
    delete --revoke`): True when revoked; False when nothing is stored or it has expired (a
    CA does not revoke those). The CA's refusal raises its ControllerError."""
    stored = store.get(domain)
    cert_pem = store.cert_pem(domain) if stored is not None else None
    if stored is None or cert_pem is None or stored.info.not_after <= now:
        return False
    issuer = await issuer_factory()
    await issuer.revoke(cert_pem)
    log_event("certificate revoked", domain=domain, serial=stored.info.serial)
    return True


def record_event(events: EventLog | None, *, kind: str, peer: str, action: str,
                 domain: str | None, result: str, detail: str | None = None) -> None:
    """Append one event; a log that cannot be written is a warning, never a failed call."""
    if events is None:
        return
    try:
        events.append(kind=kind, peer=peer, action=action, domain=domain, result=result,
                      detail=detail)
    except ControllerError as exc:
        log_event("event log not written", level=logging.WARNING, action=action,
                  domain=domain, error=str(exc))
