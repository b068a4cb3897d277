"""The small Protocols every adapter implements, with their contracts. No implementations here.

All datetimes crossing these interfaces are timezone-aware UTC. "Not found" is `None` (never an
exception); real failures raise the errors of controller.errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from controller.model import CertificateSpec, IssuedCert, KeyType, StoredCert


class CertStore(Protocol):
    """The lego-layout store (adapters/store/lego.py).

    Contract:
    - `recover()` is called once at startup before anything else; it rolls an interrupted
      swap forward or back so that every name holds a complete old or a complete new pair.
    - `load_all()` returns every usable pair; pairs that cannot be used (unparsable, key does not
      match) are returned in the second mapping with a human reason, never silently skipped.
    - `get(domain)` returns None when no pair exists.
    - `put(domain, issued)` replaces the pair atomically (all-or-nothing across .crt/.key/
      .issuer.crt/.json); keys are mode 0600. Raises StoreError (e.g. disk full) leaving the
      old pair intact.
    - `key_pem(domain)` returns the private key bytes, or None. Never log them.
    - `delete(domain)` removes the pair atomically; missing is not an error.
    - `quarantine(domain)` moves the pair out of certificates/ atomically and returns where to.
    """

    def recover(self) -> list[str]: ...
    def load_all(self) -> tuple[Mapping[str, StoredCert], Mapping[str, str]]: ...
    def get(self, domain: str) -> StoredCert | None: ...
    def put(self, domain: str, issued: IssuedCert) -> StoredCert: ...
    def key_pem(self, domain: str) -> bytes | None: ...
    def cert_pem(self, domain: str) -> bytes | None: ...
    def delete(self, domain: str) -> bool: ...
    def quarantine(self, domain: str) -> str | None: ...


class Issuer(Protocol):
    """An ACME client bound to one CA and account (adapters/acme/client.py).

    `issue` orders a certificate for spec.names (CN = names[0]) with a fresh key of `key_type`,
    solves the challenges and returns the result. Raises TemporaryError (connection, 5xx,
    badNonce, rateLimited with retry_after) or PermanentError (rejectedIdentifier,
    unauthorized, malformed), ConfigError for a bad CA URL or EAB.
    `revoke` revokes a certificate we issued; "already revoked" is not an error.
    """

    async def issue(self, spec: CertificateSpec, key_type: KeyType) -> IssuedCert: ...
    async def revoke(self, cert_pem: bytes) -> None: ...
    async def close(self) -> None: ...
