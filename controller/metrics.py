"""The controller's metric set: the `njcm_*` series, with typed setters for every caller.

`ControllerMetrics` creates them on a promtext.Registry (the generic registry and the text
format 0.0.4); the reconcile loop (through admin_backend's pass observer and
pass_metrics.PassFeed), the ACME client wrapper and the MQTT listener call its setters, and the
admin API serves `render()` on GET /metrics (deploy/ reads them). Thread-safe (the registry's
lock) so executor threads may record too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from controller.promtext import Registry


class AcmeOutcome(StrEnum):
    SUCCESS = "success"
    TEMPORARY_ERROR = "temporary_error"
    PERMANENT_ERROR = "permanent_error"
    CONFIG_ERROR = "config_error"


class ActionResult(StrEnum):
    """`result` of njcm_actions_total, njcm_certificate_renewals_total, njcm_njet_apply_total."""

    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"  # the precondition no longer held: nothing was done (actions only)


class VerifyResult(StrEnum):
    """`result` of njcm_njet_verify_total: what a TLS probe saw against the stored pair."""

    MATCH = "match"
    MISMATCH = "mismatch"
    ERROR = "error"  # the handshake failed


class ControllerMetrics:
    """The `njcm_*` metric set, with typed methods for every caller."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        self._not_before = r.gauge(
            "njcm_certificate_not_before_timestamp_seconds",
            "The not-before time of the stored certificate, as a unix timestamp.",
            ("name",),
        )
        self._expiration = r.gauge(
            "njcm_certificate_expiration_timestamp_seconds",
            "The not-after time of the stored certificate, as a unix timestamp.",
            ("name",),
        )
        self._renewal = r.gauge(
            "njcm_certificate_renewal_timestamp_seconds",
            "When the controller will renew the certificate, as a unix timestamp.",
            ("name",),
        )
        self._ready = r.gauge(
            "njcm_certificate_ready_status",
            "1 for the certificate's current Ready condition (stored, valid and served).",
            ("name", "condition"),
        )
        self._not_ready = r.gauge(
            "njcm_certificate_not_ready",
            "1 while the certificate is not ready, labelled with why (a reason of the plan, "
            "e.g. StoredUnusable for files that cannot be used, Missing, RenewalDue).",
            ("name", "reason"),
        )
        self._acme_requests = r.counter(
            "njcm_acme_client_requests_total",
            "ACME certificate orders by outcome.",
            ("outcome",),
        )
        self._acme_duration = r.histogram(
            "njcm_acme_client_request_duration_seconds",
            "Duration of ACME certificate orders (account, order, challenges, download).",
        )
        self._reconciles = r.counter("njcm_reconciles_total", "Reconcile passes run.")
        self._reconcile_duration = r.histogram(
            "njcm_reconcile_duration_seconds", "Duration of reconcile passes."
        )
        self._reconcile_failures = r.counter(
            "njcm_reconcile_failures_total", "Reconcile passes with at least one failed action."
        )
        self._mqtt_connected = r.gauge(
            "njcm_mqtt_connected", "1 while subscribed to NJet's MQTT broker, else 0."
        )
        self._actions = r.counter(
            "njcm_actions_total",
            "Planned actions executed, by kind (issue, renew, apply, delete) and result "
            "(success, failure, skipped).",
            ("action", "result"),
        )
        self._renewals = r.counter(
            "njcm_certificate_renewals_total",
            "Renewals of the certificate (renew actions) by result (success, failure).",
            ("name", "result"),
        )
        self._njet_apply = r.counter(
            "njcm_njet_apply_total",
            "Pairs pushed to NJet's API, by result: success once a TLS handshake proved NJet "
            "serves the pair, failure otherwise.",
            ("result",),
        )
        self._njet_verify = r.counter(
            "njcm_njet_verify_total",
            "TLS probes of what NJet serves against the stored pair, by result (match, "
            "mismatch, error).",
            ("result",),
        )
        self._served_matches = r.gauge(
            "njcm_certificate_served_matches_stored",
            "1 while NJet serves the stored certificate, 0 while it serves something else "
            "(absent in store-only mode and for names the running NJet has no block for).",
            ("name",),
        )
        self._failing_since = r.gauge(
            "njcm_certificate_failing_since_timestamp_seconds",
            "When the certificate's current streak of failed actions began, as a unix "
            "timestamp (absent while its last action succeeded).",
            ("name",),
        )
        self._ari_next_poll = r.gauge(
            "njcm_certificate_ari_next_poll_timestamp_seconds",
            "When the controller next asks the CA's renewal information (ARI) about the stored "
            "certificate, as a unix timestamp (absent while the CA offers none).",
            ("name",),
        )
        self._ari_requests = r.counter(
            "njcm_ari_requests_total",
            "renewalInfo requests to the CA (ARI, RFC 9773) by result (ok: a suggested window, "
            "error: none).",
            ("result",),
        )
        self._per_cert = (self._not_before, self._expiration, self._renewal, self._ready,
                          self._not_ready, self._renewals, self._served_matches,
                          self._failing_since, self._ari_next_poll)
        self._names: set[str] = set()
        self._issuer_info = r.gauge(
            "njcm_certificate_issuer_info",
            "1 for the CA that issued the stored certificate, labelled with its ACME directory "
            "URL ([acme] acmeCaDir or a [[acme.fallback]] one; absent while not known).",
            ("name", "ca"),
        )
        self._hook_runs = r.counter(
            "njcm_hook_runs_total",
            "[hooks] commands by hook (onIssued, onRenewed, onFailed, onDeleted) and result "
            "(success, failure, timeout, dropped: the queue was full).",
            ("hook", "result"),
        )
        self._notifications = r.counter(
            "njcm_notifications_total",
            "[notify] webhook deliveries by result (success, failure after the retries, "
            "dropped: the queue was full).",
            ("result",),
        )
        self._rate_budget = r.gauge(
            "njcm_acme_rate_budget_remaining",
            "What each configured rate limit of the CA has left after the last pass's orders "
            "(limit: newOrdersPer3h, certificatesPerDomainPerWeek, duplicatesPerWeek, "
            "failedValidationsPerHostPerHour; for the last three the least any registered "
            "domain, name set or host has left).",
            ("ca", "limit"),
        )
        self._rate_budget_series: set[tuple[str, str]] = set()
        # fleet mode ([store] backend = "postgres"): this node's view, labelled by node name
        self._fleet_db_up = r.gauge(
            "njcm_fleet_database_up", "1 while this node reaches the fleet database, else 0.",
            ("node",))
        self._fleet_live = r.gauge(
            "njcm_fleet_nodes_live", "Nodes of the fleet whose heartbeat is recent.", ("node",))
        self._fleet_leases = r.gauge(
            "njcm_fleet_leases_held", "Certificate leases this node holds (orders running).",
            ("node",))
        self._fleet_settings = r.gauge(
            "njcm_fleet_settings_agree",
            "1 while this node's [acme] settings are the fleet's (it may order), else 0.",
            ("node",))
        self._fleet_served = r.gauge(
            "njcm_fleet_certificates_served",
            "Certificates each node's NJet was last proved to serve (the fingerprint stored).",
            ("node",))

    def set_certificate(
        self,
        name: str,
        *,
        not_before: datetime,
        not_after: datetime,
        renewal_at: datetime | None = None,
    ) -> None:
        self._names.add(name)
        self._not_before.set(not_before.timestamp(), name=name)
        self._expiration.set(not_after.timestamp(), name=name)
        if renewal_at is None:
            self._renewal.remove(name=name)
        else:
            self._renewal.set(renewal_at.timestamp(), name=name)

    def set_ari_next_poll(self, name: str, at: datetime | None) -> None:
        """When `name`'s renewal information is asked for next; None removes the series."""
        if at is None:
            self._ari_next_poll.remove(name=name)
            return
        self._names.add(name)
        self._ari_next_poll.set(at.timestamp(), name=name)

    def observe_ari_request(self, result: str) -> None:
        """One renewalInfo request: "ok" or "error"."""
        self._ari_requests.inc(result=result)

    def set_certificate_ready(self, name: str, ready: bool, *, reason: str | None = None) -> None:
        """The Ready condition of `name`; when not ready, `reason` (a plan Reason) also sets
        njcm_certificate_not_ready{name, reason} to 1 (the previous reason's series goes)."""
        self._names.add(name)
        self._ready.set(1.0 if ready else 0.0, name=name, condition="True")
        self._ready.set(0.0 if ready else 1.0, name=name, condition="False")
        self._not_ready.remove_matching(name=name)
        if not ready and reason is not None:
            self._not_ready.set(1.0, name=name, reason=reason)

    def drop_certificate(self, name: str) -> None:
        """Remove every per-certificate series of `name` (the name left desired state)."""
        self._names.discard(name)
        for metric in (*self._per_cert, self._issuer_info):
            metric.remove_matching(name=name)

    def retain_certificates(self, names: Iterable[str]) -> None:
        """Drop the series of every certificate name not in `names`."""
        keep = set(names)
        for name in sorted(self._names - keep):
            self.drop_certificate(name)

    def observe_acme_request(self, outcome: AcmeOutcome | str, duration_seconds: float) -> None:
        self._acme_requests.inc(outcome=str(outcome))
        self._acme_duration.observe(duration_seconds)

    def observe_reconcile(self, duration_seconds: float, *, failed: bool) -> None:
        self._reconciles.inc()
        self._reconcile_duration.observe(duration_seconds)
        if failed:
            self._reconcile_failures.inc()

    def observe_action(self, action: str, result: ActionResult) -> None:
        self._actions.inc(action=action, result=result.value)

    def observe_renewal(self, name: str, result: ActionResult) -> None:
        self._names.add(name)
        self._renewals.inc(name=name, result=result.value)

    def observe_njet_apply(self, result: ActionResult) -> None:
        self._njet_apply.inc(result=result.value)

    def observe_njet_verify(self, result: VerifyResult) -> None:
        self._njet_verify.inc(result=result.value)

    def set_served_matches_stored(self, name: str, matches: bool | None) -> None:
        """Whether NJet serves `name`'s stored pair; None removes the series (unknown)."""
        if matches is None:
            self._served_matches.remove(name=name)
            return
        self._names.add(name)
        self._served_matches.set(1.0 if matches else 0.0, name=name)

    def set_failing_since(self, name: str, since: datetime | None) -> None:
        """The start of `name`'s failing streak; None (it succeeded) removes the series."""
        if since is None:
            self._failing_since.remove(name=name)
            return
        self._names.add(name)
        self._failing_since.set(since.timestamp(), name=name)

    def set_certificate_issuer(self, name: str, ca: str | None) -> None:
        """njcm_certificate_issuer_info{name, ca} = 1 for the CA that issued `name`'s stored
        certificate (the previous CA's series goes); None (not known) removes it."""
        self._issuer_info.remove_matching(name=name)
        if ca:
            self._names.add(name)
            self._issuer_info.set(1.0, name=name, ca=ca)

    def set_mqtt_connected(self, connected: bool) -> None:
        self._mqtt_connected.set(1.0 if connected else 0.0)

    def observe_hook_run(self, hook: str, result: str) -> None:
        self._hook_runs.inc(hook=hook, result=result)

    def observe_notification(self, result: str) -> None:
        self._notifications.inc(result=result)

    def set_rate_budget(self, remaining: Iterable[tuple[str, str, int]]) -> None:
        """njcm_acme_rate_budget_remaining from (ca, limit, remaining) of the last pass; the
        series of a limit no longer in force go."""
        now = {(ca, limit): left for ca, limit, left in remaining}
        for ca, limit in self._rate_budget_series - set(now):
            self._rate_budget.remove(ca=ca, limit=limit)
        for (ca, limit), left in now.items():
            self._rate_budget.set(float(left), ca=ca, limit=limit)
        self._rate_budget_series = set(now)

    def set_fleet(self, node: str, *, db_up: bool, live: int, leases: int,
                  settings_agree: bool | None, served: dict[str, int]) -> None:
        """Fleet mode: this node's gauges, and per node how many certificates it serves."""
        self._fleet_db_up.set(1.0 if db_up else 0.0, node=node)
        self._fleet_live.set(float(live), node=node)
        self._fleet_leases.set(float(leases), node=node)
        if settings_agree is not None:
            self._fleet_settings.set(1.0 if settings_agree else 0.0, node=node)
        for name, count in served.items():
            self._fleet_served.set(float(count), node=name)

    def render(self) -> str:
        return self.registry.render()
