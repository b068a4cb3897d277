"""Every Protocol between the steps and the adapters, each with its contract. No implementations.

Who implements what: CertStore (adapters/store/lego.py), Issuer (adapters/acme/client.py;
its CaChoices: adapters/acme/multi.py),
AriPoller (adapters/acme/ari.py),
NjetReader + NjetWriter (adapters/njet/api.py), Prober (app.tls_probe over
adapters/njet/probe.py), StatusPersistence (adapters/store/statusfile.py), RuntimeSpecs
(adapters/store/runtime.py), GcConfirmations (adapters/store/gcconfirm.py), QuarantineExpiry
(adapters/store/quarantine.py), RateLedger (adapters/store/ledger.py), ChallengeSolver +
LeftoverCleaner (adapters/challenges/, adapters/dns/solver.py), DnsProvider (adapters/dns/:
rfc2136.py, lexicon_provider.py, exec_provider.py), DesiredLoader (app.py over
desired_source.py), AdminBackend + PassObserver (admin_backend.py; the event log's PassEvents
in adapters/store/events.py is a PassObserver too), ActionProgress (cli_output.py;
tests/unit/test_cli_certs.py records one). tests/fakes.py holds an in-memory fake of each that
tests/unit/test_fakes.py checks against these Protocols (statically with mypy, and by
behaviour).

Rules for every port:
- All datetimes crossing these interfaces are timezone-aware UTC; "now" comes from one `Clock`.
- "Not found" is None (or False, or an empty result), never an exception.
- Real failures raise the errors of controller.errors: TemporaryError (worth retrying later,
  with an optional `retry_after`), PermanentError (the same request fails the same way),
  ConfigError (the operator must fix something), StoreError (the disk). Messages name the
  domain, file or address at fault and never carry private key material.
- Everything runs on one asyncio event loop. Synchronous CertStore writes are called through
  `asyncio.to_thread`, so they run in worker threads, concurrently for different domains; a
  plan holds at most one action per domain, so never two at once for the same domain.

Part of the pure core: imports only core modules, no adapter and no I/O library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from controller.fold import Outcome
from controller.model import (
    CertificateSpec,
    CertInfo,
    Desired,
    IssuedCert,
    KeyKind,
    KeyType,
    Observed,
    StoredCert,
)
from controller.njetmatch import NjetServer
from controller.plan import Plan
from controller.policies.ratelimits import LedgerEvent, LedgerSnapshot
from controller.policy import GcRelease
from controller.status import CertStatus

Clock = Callable[[], datetime]
"""Returns "now", timezone-aware UTC (the system one is controller.clock.utc_now). app.py hands
one clock to the reconciler and to every step that needs "now"; tests pass a FakeClock."""


# -- certificates ------------------------------------------------------------------------------


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
    - Thread-safe (see the module docstring).
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
    for a bad CA URL. `renewal_info(cert_pem)` asks about the leaf of `cert_pem` (leaf + chain
    as stored) with one unauthenticated GET and never raises for the CA's or the network's
    trouble (that is an AriAnswer with `error`), nor for a certificate without an ARI
    identifier (`cert_id` ""). Any number may run at once; `close` releases connections.
    """

    async def supported(self) -> bool: ...
    async def renewal_info(self, cert_pem: bytes) -> AriAnswer: ...
    async def close(self) -> None: ...


AriPollerFactory = Callable[[], Awaitable[AriPoller]]
"""Builds the ARI client on first use (app.py, over the issuer's directory) and returns the same
one after. May raise ConfigError or TemporaryError."""


# -- NJet --------------------------------------------------------------------------------------


class NjetReader(Protocol):
    """NJet's GET /api/v1/ssl (adapters/njet/api.py NjetClient).

    `get_ssl` returns every server block NJet runs, in config order, with its certificate
    entries (never a private key); an NJet that runs no TLS server returns (). What it lists is
    NJet's record, not what is served (the Prober tells that). Raises TemporaryError when NJet
    cannot be reached or answers 5xx, another ControllerError when the answer is not what the
    contract says; the Gatherer turns either into `Observed.njet_error`. Safe to call while an
    `add_cert` is in flight.
    """

    async def get_ssl(self) -> tuple[NjetServer, ...]: ...


class NjetWriter(Protocol):
    """NJet's PUT /api/v1/ssl type=add (adapters/njet/api.py NjetClient).

    `add_cert` pushes a certificate (leaf + chain PEM) and its key inline to the block addressed
    by `listens[0]` + `server_names[0]` (GET's own strings), for `cert_type` "rsa" or "ecc".
    Returning normally means NJet accepted it, NOT that it is served: NJet's workers apply it a
    moment later, or not at all, so every push is verified with the Prober. Raises
    TemporaryError when NJet cannot be reached (the push may or may not have landed; pushing the
    same pair again is safe), the adapter's "repeated" error (code 11: the body repeats the
    block's first dynamic certificate; the Executor is told that class as `repeated_error`),
    and another ControllerError when NJet refuses (unknown block, key and cert_type differ).
    Pushes for different blocks may run concurrently; one block gets one push at a time.
    """

    async def add_cert(
        self,
        *,
        listens: Sequence[str],
        server_names: Sequence[str],
        cert_type: str,
        cert_pem: bytes,
        key_pem: bytes,
    ) -> None: ...


class ProbeOutcome(Protocol):
    """What one TLS handshake showed: `fingerprint` of the served leaf (sha256 of its DER,
    lowercase hex, as CertInfo.fingerprint), or None with `error` saying why."""

    @property
    def fingerprint(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...


class Prober(Protocol):
    """One TLS handshake with NJet's `listen` (as GET /api/v1/ssl spells it; wildcards are
    reached over loopback) with SNI `sni`, offering only `key_kind`'s cipher suites, so a
    dual-cert block shows the certificate of that type.

    Never raises for network trouble (refused, reset, alert, timeout after `timeout` seconds):
    that is a ProbeOutcome with `fingerprint` None and an `error`. Any number may run at once.
    """

    async def __call__(
        self,
        *,
        listen: str,
        sni: str,
        key_kind: KeyKind,
        timeout: float,  # noqa: ASYNC109 - the handshake's own budget, part of the contract
    ) -> ProbeOutcome: ...


# -- status and desired state ------------------------------------------------------------------


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


class DesiredLoader(Protocol):
    """Loads desired state (app.App.load_desired over desired_source.DesiredSource).

    With `fresh=False` it may return the previous, unchanged value when no file it read
    changed; `fresh=True` always re-parses. Raises ConfigError naming the file and line when
    njet.conf cannot be used.
    """

    def __call__(self, *, fresh: bool = False) -> Desired: ...


class PassObserver(Protocol):
    """Told about every finished reconcile pass (admin_backend.py feeds metrics from it).

    Called on the event loop after the pass's status was folded (and saved where possible);
    must be quick and must not raise (an exception fails the pass's caller, which logs it).
    """

    def on_pass(self, *, plan: Plan, outcomes: list[Outcome], seconds: float,
                observed: Observed, statuses: dict[str, CertStatus]) -> None: ...


class ActionProgress(Protocol):
    """Told as one pass's actions run (the CLI's `reconcile`: a progress bar on a terminal,
    one line per finished action otherwise; cli_output.py). The Executor calls `started(total)`
    once before the first action, `finished(outcome)` as each one ends (in any order) and
    `ended()` after the last, also when the pass is cancelled. On the event loop; quick; never
    raises."""

    def started(self, total: int) -> None: ...
    def finished(self, outcome: Outcome) -> None: ...
    def ended(self) -> None: ...


# -- ACME challenges ---------------------------------------------------------------------------


class ChallengeSolver(Protocol):
    """Makes one challenge answerable, then removes it (adapters/challenges/).

    Contract: `challenge_type` is the ACME type solved ("http-01", "tls-alpn-01" or "dns-01";
    the dns-01 solver, adapters/dns/solver.py, writes TXT records through a DnsProvider and
    gets the identifier's base name: "shop.test" for `*.shop.test` too).
    `present` returns only once the CA can validate (the server is listening); it raises
    TemporaryError (e.g. address in use) or ConfigError (e.g. no permission for the port).
    `cleanup` gets the same arguments, never raises, and is called exactly once per successful
    `present`. `close` stops everything at shutdown. Several orders may be in flight at once,
    also for the same domain.
    """

    challenge_type: str

    async def present(self, domain: str, token: str, key_authorization: str) -> None: ...
    async def cleanup(self, domain: str, token: str, key_authorization: str) -> None: ...
    async def close(self) -> None: ...


class DnsProvider(Protocol):
    """Writes and removes one TXT value. `zone` is the zone apex without trailing dot
    ("shop.test"), `fqdn` the record's absolute name without trailing dot
    ("_acme-challenge.shop.test"), `value` the TXT value (the base64url digest).
    present() adds the value, keeping other TXT values at that name (two values at once for
    `*.x` + `x`); cleanup() removes exactly that value, and a value that is not there is not an
    error. Both raise TemporaryError (unreachable, 5xx, timeout) or ConfigError (bad
    credentials, unknown zone) with a message naming the provider and the name, never a
    credential. Safe to call concurrently for different names."""
    async def present(self, *, zone: str, fqdn: str, value: str) -> None: ...
    async def cleanup(self, *, zone: str, fqdn: str, value: str) -> None: ...
    async def close(self) -> None: ...


@runtime_checkable
class LeftoverCleaner(Protocol):
    """An optional capability of a ChallengeSolver (check with isinstance): it leaves state
    outside the process (NJet keeps dynamic challenge locations across restarts).

    `remove_leftovers` removes what a previous run left and returns one human line per removed
    thing; nothing left is (). Raises ControllerError when it cannot look (NJet unreachable):
    start-up logs that and goes on. Called once at start-up, before any order.
    """

    async def remove_leftovers(self) -> list[str]: ...


@runtime_checkable
class Stoppable(Protocol):
    """An optional capability of an Issuer (check with isinstance): `stop()` makes every call
    in flight give up at its next request and refuses new ones at once (SIGTERM must end the
    process within seconds even while a CA hangs). Synchronous, idempotent, never raises."""

    def stop(self) -> None: ...


# -- the admin API -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CertView:
    """What the admin API shows of one certificate. Never carries a private key."""

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

