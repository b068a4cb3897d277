"""Per-certificate status: retry/backoff state and the renewal time chosen once, plus fold().

`CertStatus` is persisted as JSON in `<prefix>/.lego/status/<name>.json`
(adapters/store/statusfile.py).
`fold()` is pure: it folds execution outcomes into the status mapping; reconcile.py calls it
after each pass and saves the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, TypeAdapter


@dataclass(frozen=True, slots=True)
class CertStatus:
    """One certificate's status. A slotted dataclass in memory (10,000 of them stay small);
    validated by pydantic only where it crosses the disk boundary (status_from_json)."""

    domain: str
    # consecutive failed attempts of the current spec; 0 after a success
    attempts: int = 0
    last_failure: str | None = None
    last_failure_at: AwareDatetime | None = None
    # no new attempt before this instant (per-certificate backoff across passes)
    backoff_until: AwareDatetime | None = None
    # hash of the spec the attempts/backoff belong to; a changed spec resets the backoff
    spec_hash: str | None = None
    # the renewal instant chosen once (e.g. inside an ARI window); None = use the policy default
    renewal_at: AwareDatetime | None = None
    # fingerprint last verified as served by NJet, and when
    applied_fingerprint: str | None = None
    applied_at: AwareDatetime | None = None
    last_success_at: AwareDatetime | None = None
    # when the name left desired state (for deleteGracePeriod); None while desired
    orphaned_at: AwareDatetime | None = None
    # an operator asked for a renewal (admin API), or NJet's code-11 trap needs a fresh key;
    # cleared by the next successful issuance
    force_renew: bool = False
    # the stored certificate the renewal was asked for: once another one is stored (e.g. the
    # renewal completed but a crash came before this file was written) it is not repeated
    force_renew_of: str | None = None

    def evolve(self, **changes: Any) -> CertStatus:
        """A copy with `changes` applied."""
        return replace(self, **changes)


_ADAPTER: TypeAdapter[CertStatus] = TypeAdapter(CertStatus)


def status_from_json(data: bytes) -> CertStatus:
    """Parse and validate a status file (raises pydantic.ValidationError on bad content)."""
    return _ADAPTER.validate_json(data)


def status_to_json(status: CertStatus) -> bytes:
    return _ADAPTER.dump_json(status, indent=2)


def status_json_schema() -> dict[str, Any]:
    return _ADAPTER.json_schema()


BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=6)


def backoff_delay(attempts: int, *, retry_after: float | None = None) -> timedelta:
    """1m, 2m, 4m, … capped at 6h; a longer server-given Retry-After wins."""
    if attempts <= 0:
        return timedelta(0)
    delay = min(BACKOFF_BASE * (1 << min(attempts - 1, 20)), BACKOFF_CAP)
    if retry_after is not None and timedelta(seconds=retry_after) > delay:
        delay = timedelta(seconds=retry_after)
    return delay


def in_backoff(status: CertStatus | None, now: datetime) -> bool:
    return status is not None and status.backoff_until is not None and now < status.backoff_until
