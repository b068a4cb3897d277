"""Per-certificate status: retry/backoff state, what NJet serves, the orphan and renewal marks.

`CertStatus` is persisted as JSON in `<prefix>/.lego/status/<name>.json`
(adapters/store/statusfile.py). It changes only through its named transitions (`with_...`),
so a misspelled field is a type error: fold.py applies them to a pass's outcomes, and
admin_backend.py records an operator's renewal request. Pure.
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
    # the renewal instant chosen once; None = use the policy default. No producer yet: the
    # renewal issue (ARI) will set it from the CA's suggested window; issuing clears it
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

    # -- transitions (each returns a copy) ---------------------------------------------------

    def with_success(self, *, spec_hash: str | None, at: datetime) -> CertStatus:
        """An action succeeded: the failures and the backoff are forgotten."""
        return replace(self, attempts=0, last_failure=None, last_failure_at=None,
                       backoff_until=None, spec_hash=spec_hash or self.spec_hash,
                       last_success_at=at)

    def with_failure(
        self, error: str, *, spec_hash: str | None, at: datetime, retry_after: float | None
    ) -> CertStatus:
        """An action failed: count the attempt (afresh for another spec) and back off."""
        attempts = self.attempts + 1 if self.spec_hash in (None, spec_hash) else 1
        return replace(self, attempts=attempts, last_failure=error, last_failure_at=at,
                       backoff_until=at + backoff_delay(attempts, retry_after=retry_after),
                       spec_hash=spec_hash or self.spec_hash)

    def with_issued(self) -> CertStatus:
        """A new pair was stored: a forced renewal is done, a chosen renewal time belonged to
        the old pair, and NJet does not serve the new one yet."""
        return replace(self, force_renew=False, force_renew_of=None, renewal_at=None,
                       applied_fingerprint=None)

    def with_applied(self, fingerprint: str, *, at: datetime) -> CertStatus:
        """A handshake proved NJet serves `fingerprint`."""
        return replace(self, applied_fingerprint=fingerprint, applied_at=at)

    def with_orphaned(self, at: datetime) -> CertStatus:
        """The name left desired state at `at`: its deleteGracePeriod starts."""
        return replace(self, orphaned_at=at)

    def with_desired_again(self) -> CertStatus:
        """The name is desired again: no deletion is pending."""
        return replace(self, orphaned_at=None)

    def with_forced_renewal(self, *, of: str | None) -> CertStatus:
        """An operator asked to renew the stored pair `of` (None: whatever is stored) now:
        the backoff is forgiven."""
        return replace(self, force_renew=True, force_renew_of=of, attempts=0, backoff_until=None)

    def with_new_key_needed(self, *, of: str | None) -> CertStatus:
        """NJet's code-11 trap: only a renewal with a fresh key gets the pair `of` served.
        The backoff stays."""
        return replace(self, force_renew=True, force_renew_of=of)


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
