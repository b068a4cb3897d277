"""The ports of the files the loop keeps: the certificate store, the status records, the
deletion guard's confirmation, the quarantine, the rate-limit ledger (with the registered
domain it counts by) and the servers NJet announced at runtime.

Implemented by adapters/store/ (lego.py, statusfile.py, gcconfirm.py, quarantine.py, ledger.py,
psl.py, runtime.py); called by the steps (observe.py, execute.py, reconcile.py, ari.py),
desired_source.py (RuntimeSpecs), app.py, admin_backend.py and adapters/hooks/. Part of
controller/ports/ (which re-exports every name; the rules of every port are in its docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

from controller.model import CertificateSpec, IssuedCert, StoredCert
from controller.policies.ratelimits import LedgerEvent, LedgerSnapshot
from controller.policy import GcRelease
from controller.status import CertStatus


class CertStore(Protocol):
    """The lego-layout store (adapters/store/lego.py).

    Contract:
    - `recover()` is called once at startup before anything else; it rolls an interrupted
      swap forward or back so that every name holds a complete old or a complete new pair.
      Returns one human line per thing it did. It never raises for one journal entry: a
      record that names another entry, a path outside the store, or a symlink is moved to
      `journal-rejected/` and reported; only a store it cannot list at all raises StoreError.
    - Files are read only when they are regular files within the size caps (1 MiB per
      certificate, key or metadata file); anything else makes the pair a problem (below).
    - `load_all()` returns every usable pair; pairs that cannot be used (unparsable, key does not
      match) are returned in the second mapping with a human reason, never silently skipped.
      The result is a snapshot: later writes do not change it.
    - `get(domain)` returns None when no pair exists; a pair whose key does not match comes back
      with `key_matches=False`; a pair that cannot be parsed raises StoreError with the reason.
    - `put(domain, issued)` replaces the pair atomically (all-or-nothing across .crt/.key/
      .issuer.crt/.json, also across a crash); keys are mode 0600. Refuses (StoreError) a key
      that does not match the certificate; raises StoreError (e.g. disk full) leaving the old
      pair intact. Returns what is now stored.
    - `key_pem(domain)` / `cert_pem(domain)` return the file bytes (the .crt is leaf + chain),
      or None. Never log the key.
    - `delete(domain)` removes the pair atomically; True if there was one (missing is not an
      error). `quarantine(domain)` moves it out of certificates/ atomically and returns where to,
      or None if there was nothing.
    - Thread-safe (see controller/ports/'s docstring).
    """

    def recover(self) -> list[str]: ...
    def load_all(self) -> tuple[Mapping[str, StoredCert], Mapping[str, str]]: ...
    def get(self, domain: str) -> StoredCert | None: ...
    def put(self, domain: str, issued: IssuedCert) -> StoredCert: ...
    def key_pem(self, domain: str) -> bytes | None: ...
    def cert_pem(self, domain: str) -> bytes | None: ...
    def delete(self, domain: str) -> bool: ...
    def quarantine(self, domain: str) -> str | None: ...


class StatusPersistence(Protocol):
    """Per-certificate status records (adapters/store/statusfile.py).

    `load_all` returns every readable status keyed by domain; an unreadable record is logged
    and left out (that certificate starts fresh), never an exception; an unreadable folder
    raises StoreError. `save` replaces one record atomically. `delete` removes one; missing is
    not an error. Both raise StoreError naming the path (the reconciler keeps the status in
    memory and logs). Called from the event loop and (the reconciler's first `load_all`) from
    a daemon thread: thread-safe.
    """

    def load_all(self) -> dict[str, CertStatus]: ...
    def save(self, status: CertStatus) -> None: ...
    def delete(self, domain: str) -> None: ...


class GcConfirmations(Protocol):
    """The operator's release of deletions the deletion guard holds (adapters/store/
    gcconfirm.py: `.lego/gc-confirm.json`).

    `load` returns the confirmation on file, None when there is none or it cannot be used
    (logged; never an exception: the guard keeps holding). `save` replaces it atomically.
    `consume(release)` removes it if it still is `release` (not a newer one): True if removed.
    Both raise StoreError naming the file. Called from the event loop.
    """

    def load(self) -> GcRelease | None: ...
    def save(self, release: GcRelease, *, stored: int = 0) -> None: ...
    def consume(self, release: GcRelease) -> bool: ...


class QuarantineExpiry(Protocol):
    """Removes quarantined pairs kept longer than `[controller] quarantineRetention`
    (adapters/store/quarantine.py). `expire(now)` returns one human line per removed entry; an
    entry it cannot remove is logged and left; StoreError when quarantine/ cannot be listed."""

    def expire(self, now: datetime) -> list[str]: ...


class RateLedger(Protocol):
    """The rate-limit ledger of one CA (adapters/store/ledger.py: `.lego/ledger/<ca
    host_port>.json`; the shared store in fleet mode): what the CA counts against the budgets
    of `[acme.rateLimits]` (policies/ratelimits.py).

    `record(event)` adds one event of this ledger's CA (orders, failed validations, rateLimited
    answers) and forgets those older than the longest window; a record that cannot be written
    raises StoreError naming the file (the executor logs it; the event is still counted in
    memory). `snapshot(now)` returns the events within the longest window before `now` as
    pure data, never raises (an unreadable ledger is logged and read as empty). Called from the
    event loop and from worker threads: thread-safe.
    """

    def record(self, event: LedgerEvent) -> None: ...
    def snapshot(self, now: datetime) -> LedgerSnapshot: ...


RegisteredDomain = Callable[[str], str]
"""A DNS name's registered domain by the public suffix list ("a.example.co.uk" ->
"example.co.uk"; adapters/store/psl.py over the packaged list, never downloaded)."""


class RuntimeSpecs(Protocol):
    """The servers NJet announced at runtime (adapters/store/runtime.py).

    `path` is the file whose change means `load` may return something else (DesiredSource
    watches it). `load` returns the announced specs, () when there are none; a corrupt file is
    set aside and read as (); an unreadable one raises StoreError.
    """

    @property
    def path(self) -> Path: ...
    def load(self) -> tuple[CertificateSpec, ...]: ...
