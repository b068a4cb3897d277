"""The ports of the CA: the Issuer (one CA and account) and how it is built, its optional
capabilities (CaChoices: several CAs; Stoppable: SIGTERM ends its calls), and the CA's renewal
information (AriPoller, AriAnswer).

Implemented by adapters/acme/ (client.py, multi.py, ari.py); called by execute.py (issue,
revoke, the CA to order from), ari.py (renewal information), app.py and admin_backend.py. Part
of controller/ports/ (which re-exports every name; the rules of every port are in its
docstring).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from controller.model import CertificateSpec, IssuedCert, KeyType


class Issuer(Protocol):
    """An ACME client bound to one CA and account (adapters/acme/client.py).

    `issue` orders a certificate for spec.names (CN: certinfo.csr_common_name) with a fresh key
    of `key_type`, or with `key_pem` when given (reuseKey: the stored key, of `key_type`; it is
    never logged), solves the challenges and returns the result, with the profile the order
    asked for and the one the CA named (IssuedCert.profile, ca_profile); it never touches the
    store. A profile ([acme]'s, else spec.profile) the CA does not offer is a ConfigError when
    required (profileRequired), else a warning and an order without one. Raises
    TemporaryError (connection, 5xx, badNonce, rateLimited with retry_after) or PermanentError
    (rejectedIdentifier, unauthorized, malformed), ConfigError for a bad CA URL or EAB.
    `replaces` (a renewal, RFC 9773 §5) is the ARI identifier of the certificate being
    replaced, sent as the newOrder's `replaces`; a CA that rejects it (already replaced, not
    known) gets the same order once more without it.
    Several orders may be in flight at once (up to the executor's concurrency).
    `revoke` revokes a certificate we issued; "already revoked" is not an error.
    `close` releases connections; called once at shutdown.
    """

    async def issue(
        self, spec: CertificateSpec, key_type: KeyType, *, key_pem: bytes | None = None,
        replaces: str | None = None,
    ) -> IssuedCert: ...
    async def revoke(self, cert_pem: bytes) -> None: ...
    async def close(self) -> None: ...


IssuerFactory = Callable[[], Awaitable[Issuer]]
"""Builds the issuer on first use and returns the same one after (so `diff` never registers an
ACME account). May raise ConfigError (bad CA URL, unreadable caBundle) or TemporaryError."""


@runtime_checkable
class CaChoices(Protocol):
    """An optional capability of an Issuer (check with isinstance): it stands for an ordered
    list of CAs, [acme]'s first, then the `[[acme.fallback]]` ones (adapters/acme/multi.py).

    `cas` are their directory URLs, in order (at least one, each once); `fallback_after` is
    `[acme] fallbackAfter`. `for_ca(i)` returns the Issuer of `cas[i]`, each with its own
    account, built on first use and the same one after; it raises ConfigError when that CA
    cannot be used as configured (e.g. an unreadable caBundle). Which CA an order goes to is
    policies/fallback.py's decision, made by the Executor; `issue` itself orders from `cas[0]`.
    """

    @property
    def cas(self) -> tuple[str, ...]: ...
    @property
    def fallback_after(self) -> int: ...
    async def for_ca(self, index: int) -> Issuer: ...


@dataclass(frozen=True)
class AriAnswer:
    """What the CA's renewal information (RFC 9773) said about one certificate: the one whose
    SHA-256 fingerprint is `fingerprint` and whose ARI identifier is `cert_id` ("" when it has
    none: no authority key identifier). Either a suggested window (`window_start` <
    `window_end`, aware UTC) with an optional `explanation_url`, or an `error` saying why
    there is none; `retry_after` is the CA's Retry-After in seconds (None: it sent none)."""

    fingerprint: str
    cert_id: str
    window_start: datetime | None = None
    window_end: datetime | None = None
    explanation_url: str | None = None
    retry_after: float | None = None
    error: str | None = None


class AriPoller(Protocol):
    """The CA's renewal information, ARI (adapters/acme/ari.py AriClient).

    `supported()` says whether the CA's directory offers `renewalInfo` (fetched once, shared
    with the Issuer); it raises TemporaryError when the directory cannot be read, ConfigError
    for a bad CA URL (of several CAs: [acme]'s). `renewal_info(cert_pem, ca=...)` asks the CA
    whose directory URL is `ca` (the one that issued the certificate, status.issuer_ca; None or
    a CA not configured: [acme]'s; a poller bound to one CA asks that one) about the leaf of
    `cert_pem` (leaf + chain as stored) with one unauthenticated GET and never raises for the
    CA's or the network's trouble (that is an AriAnswer with `error`), nor for a certificate
    without an ARI identifier (`cert_id` ""). Any number may run at once; `close` releases
    connections.
    """

    async def supported(self) -> bool: ...
    async def renewal_info(self, cert_pem: bytes, *, ca: str | None = None) -> AriAnswer: ...
    async def close(self) -> None: ...


AriPollerFactory = Callable[[], Awaitable[AriPoller]]
"""Builds the ARI client on first use (app.py, over the issuer's directory) and returns the same
one after. May raise ConfigError or TemporaryError."""


@runtime_checkable
class Stoppable(Protocol):
    """An optional capability of an Issuer (check with isinstance): `stop()` makes every call
    in flight give up at its next request and refuses new ones at once (SIGTERM must end the
    process within seconds even while a CA hangs). Synchronous, idempotent, never raises."""

    def stop(self) -> None: ...
