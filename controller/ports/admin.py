"""The port of the admin HTTP API: AdminBackend, what the server asks of the controller, and
the values it answers with (CertView, DeleteResult, GcConfirmResult, RenewResult), with the
/healthz fields shown without the token (PUBLIC_HEALTH_FIELDS).

Implemented by admin_backend.py; called by adapters/admin/ (server.py, routes.py). Part of
controller/ports/ (which re-exports every name; the rules of every port are in its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from controller.model import CertInfo


@dataclass(frozen=True)
class NodeServing:
    """Fleet mode: what one node's NJet was last proved to serve for a certificate, and
    whether that is the fingerprint the fleet's store holds (`current`)."""

    node: str
    fingerprint: str | None
    probed_at: datetime | None
    current: bool


@dataclass(frozen=True)
class CertView:
    """What the admin API shows of one certificate. Never carries a private key. In fleet
    mode `served_by` lists every node's NJet (empty otherwise)."""

    domain: str
    names: tuple[str, ...]
    not_before: datetime | None
    not_after: datetime | None
    days_left: float | None
    key_type: str | None
    serial: str | None
    fingerprint: str | None
    issuer: str | None
    served_fingerprint: str | None = None
    desired: bool = True
    source: str | None = None
    ready: bool | None = None
    renewal_at: datetime | None = None
    attempts: int = 0
    last_failure: str | None = None
    backoff_until: datetime | None = None
    problem: str | None = None
    served_by: tuple[NodeServing, ...] = ()

    @classmethod
    def from_info(cls, domain: str, info: CertInfo, *, now: datetime, **status: Any) -> CertView:
        """A view of a stored certificate; `status` fills the optional fields (ready, …)."""
        return cls(
            domain=domain,
            names=info.names,
            not_before=info.not_before,
            not_after=info.not_after,
            days_left=round((info.not_after - now).total_seconds() / 86400, 2),
            key_type=info.key_type.value if info.key_type is not None else None,
            serial=info.serial,
            fingerprint=info.fingerprint,
            issuer=info.issuer,
            **status,
        )


@dataclass(frozen=True)
class DeleteResult:
    deleted: bool  # a pair was removed from the store
    still_desired: bool  # the name is still wanted: the next pass issues it again
    quarantined_to: str | None = None  # where the pair was moved (quarantine/<name>.<time>/)
    revoked: bool = False  # revoked at the CA before it was moved


@dataclass(frozen=True)
class GcConfirmResult:
    """What POST /api/v1/gc/confirm released: the names the deletion guard held (empty: it
    held nothing, and nothing was saved), of `stored` managed certificates."""

    released: tuple[str, ...]
    stored: int = 0


@dataclass(frozen=True)
class RenewResult:
    """The answer to a forced-renewal request: "requested" (recorded, the loop woken),
    "pending" (one is already waiting: no second order), "refused" (`reason` says why: the
    hourly cap, or a young certificate without `force`), "unknown" (not a desired name)."""

    outcome: str
    reason: str = ""


PUBLIC_HEALTH_FIELDS = frozenset(
    {"ok", "status", "time", "reconciles", "in_sync", "mqtt_connected", "problem_count",
     "gc_hold"}
)
"""The /healthz fields an unauthenticated caller sees while `[admin] token` is set (the admin
server drops every other one): states and counts, never a name, a path or an error. A field
added to `AdminBackend.health()` stays private unless it is named here."""


class AdminBackend(Protocol):
    """What the admin HTTP API (adapters/admin/server.py) asks of the controller.

    `domain` arguments are already validated and lowercased. Reads (`list_certs`, `get_cert`,
    `plan_json`, `health`, `metrics_text`) change nothing; `get_cert` is None for a name with no
    stored pair. `delete_cert` moves the pair to quarantine/ atomically (`deleted` False when
    there was none); with `revoke` it revokes the certificate at the CA first (an expired one is
    not revoked), and a revocation that fails raises its ControllerError, deleting nothing.
    `recent_events` returns the event log's last `limit` events (oldest first), those of
    `domain` only when given. `gc_confirm` releases, once, the deletions the deletion guard
    holds now (`by` says who asked, for the log) and wakes the loop. `request_reconcile` and
    `force_renew` only wake the loop (never reconcile inline);
    `force_renew` answers a RenewResult (`force` lifts the minimum-age refusal, never the
    hourly cap; concurrent requests for one name record one renewal). `record_event` writes
    one mutating call (what the server answered, and the peer's address) to the event log and
    never raises. Any number of requests may be in flight at once. An exception becomes a 500
    with its message. `health` returns /healthz's one document: `ok` (bool), `status` ("ok",
    "degraded", "stopping"), then the fields of README's table; no field carries an error
    message or anything read from a file (PUBLIC_HEALTH_FIELDS: what is shown without the token).
    """

    async def list_certs(self) -> list[CertView]: ...
    async def get_cert(self, domain: str) -> CertView | None: ...
    async def delete_cert(self, domain: str, *, revoke: bool = False) -> DeleteResult: ...
    async def recent_events(self, domain: str | None = None,
                            limit: int = 100) -> list[dict[str, Any]]: ...
    async def plan_json(self) -> bytes | dict[str, Any]: ...
    def request_reconcile(self) -> None: ...
    async def force_renew(self, domain: str, *, force: bool = False) -> RenewResult: ...
    def record_event(self, *, peer: str, action: str, domain: str | None, result: str,
                     detail: str | None = None) -> None: ...
    async def gc_confirm(self, by: str) -> GcConfirmResult: ...
    def health(self) -> dict[str, Any]: ...
    def metrics_text(self) -> str: ...
