"""Per-certificate status: retry/backoff state, what NJet serves, the orphan and renewal marks,
the ACME profile of the stored pair.

`CertStatus` is persisted as JSON in `<prefix>/.lego/status/<name>.json`
(adapters/store/statusfile.py). It changes only through its named transitions (`with_...`),
so a misspelled field is a type error: fold.py applies them to a pass's outcomes, and
admin_backend.py (and `certs renew`) records an operator's renewal request, after
renewal_requests.py allowed it (at most `per_hour` forced renewals per certificate, none of
a certificate younger than `min_age` unless forced). Backoffs are bounded: a Retry-After counts
up to MAX_RETRY_AFTER (24 h), so no CA answer and no hand-edited file blocks a name for longer.
Its `conditions` (Ready, Issuing: `Condition`) are set by fold.py after each pass through
`with_condition`, which moves a condition's last transition only when its status flips; `certs
show` prints them. The ARI step (controller/ari.py) records the CA's renewal information
(`AriState`: the suggested window of the stored certificate, the next poll) and the renewal
time it chose inside that window through `with_ari`. With `[[acme.fallback]]` CAs, fold.py
records which CA issued the stored pair (`with_issuer_ca`, which ends the failure streaks) and
the consecutive failures per CA (`with_ca_failures`: `CaStreak`). Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, TypeAdapter

READY = "Ready"
ISSUING = "Issuing"
CONDITION_TYPES = (READY, ISSUING)
MAX_CONDITION_MESSAGE = 512  # an error quoted in a message never makes a status file large


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of a certificate, as cmctl shows them: `type` READY or ISSUING, `status`
    "True" or "False", why (`reason`: one CamelCase word, `message`: a sentence) and when
    `status` last flipped (`last_transition`; a new reason alone does not move it)."""

    type: str
    status: Literal["True", "False"]
    reason: str
    message: str
    last_transition: AwareDatetime

    @property
    def true(self) -> bool:
        return self.status == "True"


FAILURE_NODE = "node"
"""`CertStatus.failure_scope` of a failure of one node's own NJet (fleet mode splits by it)."""

RENEWAL_SOURCE_ARI = "ari"
"""`CertStatus.renewal_source` of a renewal time chosen inside the CA's ARI window."""


@dataclass(frozen=True, slots=True)
class CaStreak:
    """Consecutive failed orders of one certificate from the CA at `ca` (a directory URL)."""

    ca: str
    failures: int


@dataclass(frozen=True, slots=True)
class AriState:
    """What the CA's renewal information (ARI, RFC 9773) said about one stored certificate,
    and when to ask again; set by the ARI step (controller/ari.py) through `with_ari`.

    `fingerprint` is the stored certificate it belongs to (a new pair clears it: with_issued),
    `cert_id` that certificate's ARI identifier (the `replaces` of its renewal order).
    `window_start`/`window_end`: the suggested window (None: no answer yet, or the last poll
    failed before any), `explanation_url` the CA's explanation, `next_poll` when to ask again
    (from the CA's Retry-After, jittered), `errors` the failed polls in a row (they back off).
    """

    fingerprint: str
    cert_id: str
    next_poll: AwareDatetime
    window_start: AwareDatetime | None = None
    window_end: AwareDatetime | None = None
    explanation_url: str | None = None
    polled_at: AwareDatetime | None = None
    errors: int = 0
    last_error: str | None = None

    @property
    def has_window(self) -> bool:
        return self.window_start is not None and self.window_end is not None


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
    # FAILURE_NODE when the last failure was this node's own (an apply, or a new pair that
    # could not be applied): in fleet mode its backoff holds this node only (adapters/pg/
    # status.py); None: the order failed, which holds the whole fleet
    failure_scope: str | None = None
    # hash of the spec the attempts/backoff belong to; a changed spec resets the backoff
    spec_hash: str | None = None
    # the renewal instant chosen once; None = use the policy default. Set by the ARI step
    # (controller/ari.py) inside the CA's suggested window; issuing clears it
    renewal_at: AwareDatetime | None = None
    # where renewal_at came from (RENEWAL_SOURCE_ARI) and the stored certificate (fingerprint)
    # it was chosen for: the policy ignores a time chosen for another certificate
    renewal_source: str | None = None
    renewal_for: str | None = None
    # what the CA's renewal information (ARI, RFC 9773) said about the stored certificate
    ari: AriState | None = None
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
    # when operators asked for forced renewals within the last FORCE_RENEW_WINDOW (oldest
    # first): the per-certificate cap `[controller] forceRenewPerHour` counts these
    forced_renewals: tuple[AwareDatetime, ...] = ()
    # when this controller last stored a new pair for the name (the certificate's age for
    # `forceRenewMinAge`; a CA may backdate notBefore)
    issued_at: AwareDatetime | None = None
    # the directory URL of the CA ([acme]'s or a [[acme.fallback]] one) that issued the stored
    # pair; None: not known (adopted from lego, or stored before this was recorded)
    issuer_ca: str | None = None
    # consecutive failed orders per CA since the last issuance (policies/fallback.py)
    ca_failures: tuple[CaStreak, ...] = ()
    # the ACME profile wanted when this controller ordered the stored pair ("": the CA's
    # default); None = unknown (adopted from lego, or stored before profiles were recorded),
    # which never triggers a renewal (policies/renewal.py profile_changed)
    profile: str | None = None
    # what that newOrder asked for ("": no profile; differs from `profile` when the wanted one
    # was only preferred and the CA did not offer it), and the profile the CA's order object
    # named (None: it named none)
    profile_ordered: str | None = None
    profile_ca: str | None = None
    # NJet's code-11 trap: the next renewal needs a fresh key even with reuseKey; cleared by
    # the next issuance
    new_key: bool = False
    # Ready and Issuing, set by fold.py after each pass (at most one of each type)
    conditions: tuple[Condition, ...] = ()

    def condition(self, type_: str) -> Condition | None:
        """The condition of type `type_` (READY, ISSUING), None before it was first set."""
        return next((c for c in self.conditions if c.type == type_), None)

    # -- transitions (each returns a copy) ---------------------------------------------------

    def with_success(self, *, spec_hash: str | None, at: datetime) -> CertStatus:
        """An action succeeded: the failures and the backoff are forgotten."""
        return replace(self, attempts=0, last_failure=None, last_failure_at=None,
                       backoff_until=None, failure_scope=None,
                       spec_hash=spec_hash or self.spec_hash, last_success_at=at)

    def with_failure(
        self, error: str, *, spec_hash: str | None, at: datetime, retry_after: float | None,
        node_only: bool = False,
    ) -> CertStatus:
        """An action failed: count the attempt (afresh for another spec) and back off;
        `node_only`: a failure of this node's own NJet, not of the order (failure_scope)."""
        attempts = self.attempts + 1 if self.spec_hash in (None, spec_hash) else 1
        return replace(self, attempts=attempts, last_failure=error, last_failure_at=at,
                       backoff_until=at + backoff_delay(attempts, retry_after=retry_after),
                       failure_scope=FAILURE_NODE if node_only else None,
                       spec_hash=spec_hash or self.spec_hash)

    def with_issued(self, *, at: datetime | None = None, profile: str | None = None,
                    ordered: str | None = None, ca_profile: str | None = None) -> CertStatus:
        """A new pair was stored (at `at`), ordered while `profile` was wanted (None: unknown),
        with `ordered` in the newOrder and `ca_profile` in the CA's answer: a forced renewal
        (or a fresh key) is done, a chosen renewal time and the CA's renewal information
        belonged to the old pair, and NJet does not serve the new one yet."""
        return replace(self, force_renew=False, force_renew_of=None, renewal_at=None,
                       renewal_source=None, renewal_for=None, ari=None,
                       applied_fingerprint=None, issued_at=at or self.issued_at,
                       profile=profile, profile_ordered=ordered, profile_ca=ca_profile,
                       new_key=False)

    def with_applied(self, fingerprint: str, *, at: datetime) -> CertStatus:
        """A handshake proved NJet serves `fingerprint`."""
        return replace(self, applied_fingerprint=fingerprint, applied_at=at)

    def with_not_served(self) -> CertStatus:
        """A handshake showed NJet does not serve the certificate last proved served."""
        return replace(self, applied_fingerprint=None)

    def with_orphaned(self, at: datetime) -> CertStatus:
        """The name left desired state at `at`: its deleteGracePeriod starts."""
        return replace(self, orphaned_at=at)

    def with_desired_again(self) -> CertStatus:
        """The name is desired again: no deletion is pending."""
        return replace(self, orphaned_at=None)

    def with_ari(self, ari: AriState, *, renewal_at: datetime | None) -> CertStatus:
        """The CA's renewal information for the stored certificate `ari.fingerprint`, with the
        renewal time chosen inside its window (`renewal_at`; None: no window this time, so a
        time chosen before for the same certificate stays and one for another goes)."""
        if renewal_at is not None:
            return replace(self, ari=ari, renewal_at=renewal_at,
                           renewal_source=RENEWAL_SOURCE_ARI, renewal_for=ari.fingerprint)
        if self.renewal_for in (None, ari.fingerprint):
            return replace(self, ari=ari)
        return replace(self, ari=ari, renewal_at=None, renewal_source=None, renewal_for=None)

    def with_forced_renewal(self, *, of: str | None, at: datetime) -> CertStatus:
        """An operator asked at `at` to renew the stored pair `of` (None: whatever is stored)
        now: the backoff is forgiven, and the request counts towards the hourly cap (requests
        older than FORCE_RENEW_WINDOW are forgotten)."""
        recent = sorted((*self.forced_renewals_since(at - FORCE_RENEW_WINDOW), at))
        return replace(self, force_renew=True, force_renew_of=of, attempts=0, backoff_until=None,
                       forced_renewals=tuple(recent[-MAX_FORCED_RENEWALS_KEPT:]))

    def forced_renewals_since(self, since: datetime) -> tuple[datetime, ...]:
        """The recorded forced-renewal requests at or after `since`."""
        return tuple(t for t in self.forced_renewals if t >= since)

    def forced_renewal_pending(self, stored_fingerprint: str | None) -> bool:
        """A forced renewal (or a fresh key) was asked for the pair stored now and is not done."""
        return self.force_renew and self.force_renew_of in (None, stored_fingerprint)

    def with_condition(self, type_: str, *, true: bool, reason: str, message: str,
                       at: datetime) -> CertStatus:
        """Set condition `type_`: its last transition becomes `at` only when its status flips
        (or it is new); the same status, reason and message is no change (the same object)."""
        old = self.condition(type_)
        status: Literal["True", "False"] = "True" if true else "False"
        if len(message) > MAX_CONDITION_MESSAGE:
            message = message[:MAX_CONDITION_MESSAGE] + "…"
        if old is not None and (old.status, old.reason, old.message) == (status, reason, message):
            return self
        since = old.last_transition if old is not None and old.status == status else at
        new = Condition(type_, status, reason, message, since)
        rest = tuple(c for c in self.conditions if c.type != type_)
        return replace(self, conditions=tuple(sorted((*rest, new), key=_condition_order)))

    def with_issuer_ca(self, ca: str | None) -> CertStatus:
        """A new pair ordered from the CA at `ca` (its directory URL; None: not known) was
        stored: every CA's failure streak ends, so the next order starts at [acme]'s CA."""
        return replace(self, issuer_ca=ca, ca_failures=())

    def with_ca_failures(self, failures: Mapping[str, int]) -> CertStatus:
        """An order failed: the consecutive failures per CA directory URL it left."""
        streaks = tuple(CaStreak(ca, n) for ca, n in sorted(failures.items()) if n > 0)
        return replace(self, ca_failures=streaks)

    def ca_failure_counts(self) -> dict[str, int]:
        """`ca_failures` as {directory URL: consecutive failures}."""
        return {s.ca: s.failures for s in self.ca_failures}

    def with_new_key_needed(self, *, of: str | None) -> CertStatus:
        """NJet's code-11 trap: only a renewal with a fresh key gets the pair `of` served.
        The backoff stays, and the renewal makes a new key even with reuseKey."""
        return replace(self, force_renew=True, force_renew_of=of, new_key=True)


def _condition_order(c: Condition) -> tuple[int, str]:
    """Ready first, then Issuing, then any other type by name."""
    known = CONDITION_TYPES.index(c.type) if c.type in CONDITION_TYPES else len(CONDITION_TYPES)
    return known, c.type


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
# the longest backoff a server's Retry-After can ask for; longer ones are clamped to it (the
# adapters that parse one log that), and so is a loaded backoff_until beyond
# MAX_RETRY_AFTER + BACKOFF_CAP from now (statusfile.py)
MAX_RETRY_AFTER = timedelta(hours=24)


def clamp_retry_after(seconds: float) -> float:
    """`seconds` bounded to [0, MAX_RETRY_AFTER] (NaN counts as 0, infinity as the bound)."""
    if math.isnan(seconds) or seconds <= 0:
        return 0.0
    return min(seconds, MAX_RETRY_AFTER.total_seconds())


def backoff_delay(attempts: int, *, retry_after: float | None = None) -> timedelta:
    """1m, 2m, 4m, … capped at 6h; a longer server-given Retry-After wins, up to 24 h."""
    if attempts <= 0:
        return timedelta(0)
    delay = min(BACKOFF_BASE * (1 << min(attempts - 1, 20)), BACKOFF_CAP)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=clamp_retry_after(retry_after)))
    return delay


def in_backoff(status: CertStatus | None, now: datetime) -> bool:
    return status is not None and status.backoff_until is not None and now < status.backoff_until


# -- forced renewals (whether one may go ahead: renewal_requests.py) -------------------------------

FORCE_RENEW_WINDOW = timedelta(hours=1)  # what `forceRenewPerHour` counts over
MAX_FORCED_RENEWALS_KEPT = 64  # a status file never grows with the requests
