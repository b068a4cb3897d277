"""In-memory fakes of the ports (controller/ports/) for step tests: no files, no sockets.

    clock = FakeClock()                       # Clock: a settable "now", aware UTC
    store = MemoryStore()                     # CertStore
    issuer = FakeIssuer(clock)                # Issuer: real certs from a throwaway CA
    njet = FakeNjet([FakeBlock(("127.0.0.1:8443",), ("a.test",))])   # NjetReader + NjetWriter
    prober = FakeProber(njet)                 # Prober: answers from njet's served state
    statuses = MemoryStatus()                 # StatusPersistence
    desired = FakeDesired(specs)              # DesiredLoader
    observer = RecordingObserver()            # PassObserver
    ledger = MemoryLedger(ca)                 # RateLedger
    gate = MemoryGate("node-a", shared)       # OrderGate: fleet mode's one holder per key

Each follows its Protocol's written contract, records what it was asked, and can be told to
fail. tests/unit/test_fakes.py checks every fake against its Protocol (mypy) and by behaviour.

FakeNjet keeps NJet's recorded quirks (shared/njet-contract §3): a PUT finds its block by
`listens[0]` + `server_names[0]` as exact strings; pushing the block's FIRST dynamic pair again
answers "repeated" (`FakeRepeated`, code 11) and changes nothing; and `not_served` makes the
next accepted pushes land in the record but not in what is served (a worker that failed to
load them). Together they reproduce the code-11 trap: the first push is accepted but not
served, its retry answers "repeated", and only a fresh key gets out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from controller.certinfo import fingerprint_pem, key_matches_cert, read_cert_info
from controller.errors import ControllerError, HandledElsewhere, StoreError, TemporaryError
from controller.fold import Outcome
from controller.model import (
    CertificateSpec,
    Desired,
    IssuedCert,
    KeyKind,
    KeyType,
    Observed,
    StoredCert,
)
from controller.njetmatch import NjetCertEntry, NjetServer, canonical_listen
from controller.plan import Plan
from controller.policies.ratelimits import LONGEST_WINDOW, LedgerEvent, LedgerSnapshot
from controller.policy import GcRelease
from controller.status import CertStatus
from tests.certbuilder import LocalCA, make_cert

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Watch:
    """Something tests wait on without polling: `until(predicate)` returns once the predicate
    holds, re-checking whenever the owner calls `changed()`."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()


class FakeClock:
    """A Clock that only moves when told to."""

    def __init__(self, now: datetime = START) -> None:
        if now.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


# -- CertStore ---------------------------------------------------------------------------------


@dataclass
class _Pair:
    issued: IssuedCert
    stored: StoredCert


class MemoryStore:
    """A CertStore in a dict. `problems` are pairs `load_all` reports as unusable; `fail_put`
    makes the next `put` raise it (the old pair stays); `on_load_all` runs right after a scan
    has been taken (to change the store behind a plan's back). `put_unparsable(domain, why)`
    seeds files that cannot be parsed (a truncated .crt): `load_all` reports them, `get` raises
    StoreError(why) as LegoStore does, and `quarantine` moves them (to `quarantined_unparsable`);
    `put_unchecked` seeds a pair whose key does not match."""

    def __init__(self) -> None:
        self._pairs: dict[str, _Pair] = {}
        self._lock = threading.Lock()
        self.problems: dict[str, str] = {}
        self.fail_put: ControllerError | None = None
        self.on_load_all: Callable[[], None] | None = None
        self.puts: list[str] = []
        self.deleted: list[str] = []
        self.quarantined: dict[str, IssuedCert] = {}
        self.quarantined_unparsable: dict[str, str] = {}
        self._unparsable: dict[str, str] = {}
        self.recoveries = 0

    def recover(self) -> list[str]:
        self.recoveries += 1
        return []

    def load_all(self) -> tuple[Mapping[str, StoredCert], Mapping[str, str]]:
        with self._lock:
            snapshot = {d: p.stored for d, p in self._pairs.items() if p.stored.key_matches}
            problems = dict(self.problems)
            problems.update({d: "the key does not match the certificate"
                             for d, p in self._pairs.items() if not p.stored.key_matches})
            problems.update(self._unparsable)
        if self.on_load_all is not None:
            self.on_load_all()
        return snapshot, problems

    def get(self, domain: str) -> StoredCert | None:
        with self._lock:
            pair = self._pairs.get(domain)
            unparsable = self._unparsable.get(domain)
        if unparsable is not None:
            raise StoreError(unparsable)
        return pair.stored if pair is not None else None

    def put_unparsable(self, domain: str, why: str) -> None:
        """Seed files for `domain` that cannot be parsed (replacing any pair there)."""
        with self._lock:
            self._pairs.pop(domain, None)
            self._unparsable[domain] = why

    def put(self, domain: str, issued: IssuedCert) -> StoredCert:
        if self.fail_put is not None:
            exc, self.fail_put = self.fail_put, None
            raise exc
        try:
            matches = key_matches_cert(issued.key_pem, issued.cert_pem)
        except ValueError as exc:
            raise StoreError(f"refusing to store the certificate of {domain}: {exc}") from None
        if not matches:
            raise StoreError(
                f"refusing to store the certificate of {domain}: the key does not match it"
            )
        stored = self._set(domain, issued)
        self.puts.append(domain)
        return stored

    def put_unchecked(self, domain: str, issued: IssuedCert) -> StoredCert:
        """Seed a pair as something else wrote it, e.g. with a key that does not match."""
        return self._set(domain, issued)

    def _set(self, domain: str, issued: IssuedCert) -> StoredCert:
        info = read_cert_info(issued.cert_pem)
        stored = StoredCert(domain, info, key_matches_cert(issued.key_pem, issued.cert_pem),
                            cert_url=issued.cert_url)
        with self._lock:
            self._pairs[domain] = _Pair(issued, stored)
            self.problems.pop(domain, None)
            self._unparsable.pop(domain, None)
        return stored

    def key_pem(self, domain: str) -> bytes | None:
        with self._lock:
            pair = self._pairs.get(domain)
        return pair.issued.key_pem if pair is not None else None

    def cert_pem(self, domain: str) -> bytes | None:
        with self._lock:
            pair = self._pairs.get(domain)
        return pair.issued.cert_pem if pair is not None else None

    def delete(self, domain: str) -> bool:
        with self._lock:
            pair = self._pairs.pop(domain, None)
            unparsable = self._unparsable.pop(domain, None)
        if pair is not None or unparsable is not None:
            self.deleted.append(domain)
        return pair is not None or unparsable is not None

    def quarantine(self, domain: str) -> str | None:
        with self._lock:
            pair = self._pairs.pop(domain, None)
            unparsable = self._unparsable.pop(domain, None)
        if unparsable is not None:
            self.quarantined_unparsable[domain] = unparsable
            return f"memory://quarantine/{domain}"
        if pair is None:
            return None
        self.quarantined[domain] = pair.issued
        return f"memory://quarantine/{domain}"


# -- Issuer ------------------------------------------------------------------------------------


class FakeIssuer:
    """An Issuer that signs real certificates with a throwaway CA, valid from `clock()` - 1h.

    `fail` is a queue of errors the next orders raise (one each); `hold`, when set, makes every
    order wait for it (`watch` tells when `in_flight` changes). `factory` is an IssuerFactory.
    A `key_pem` handed in is used for the certificate (`reused` records, per order, whether one
    was). The profile ordered is spec.profile, else `profile` (this fake CA offers every one);
    `echo_profile` makes the CA's answer name it too (IssuedCert.ca_profile).
    """

    def __init__(self, clock: Callable[[], datetime] | None = None, *,
                 lifetime: timedelta = timedelta(days=90)) -> None:
        self.clock = clock or FakeClock()
        self.lifetime = lifetime
        self.ca = LocalCA.create("njcm fake acme ca")
        self.fail: list[BaseException] = []
        self.hold: asyncio.Event | None = None
        self.orders: list[tuple[str, KeyType]] = []
        self.reused: list[bool] = []  # per order: whether a key was handed in
        self.replaced: list[str | None] = []  # each order's `replaces` (ARI)
        self.profile = ""  # the [acme] profile of this fake CA's issuer
        self.echo_profile = False
        self.revoked: list[bytes] = []
        self.factory_calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.watch = Watch()
        self.closed = False
        self._serial = itertools.count(1)

    async def factory(self) -> FakeIssuer:
        self.factory_calls += 1
        return self

    async def issue(
        self, spec: CertificateSpec, key_type: KeyType, *, key_pem: bytes | None = None,
        replaces: str | None = None,
    ) -> IssuedCert:
        self.orders.append((spec.domain, key_type))
        self.reused.append(key_pem is not None)
        self.replaced.append(replaces)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.watch.changed()
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.fail:
                raise self.fail.pop(0)
            made = make_cert(spec.names, key_type=key_type, issuer=self.ca,
                             not_before=self.clock() - timedelta(hours=1),
                             lifetime=self.lifetime, key_pem=key_pem)
            profile = spec.profile or self.profile
            return replace(made.issued(f"https://ca.fake/cert/{next(self._serial)}"),
                           profile=profile,
                           ca_profile=(profile or None) if self.echo_profile else None)
        finally:
            self.in_flight -= 1
            self.watch.changed()

    async def revoke(self, cert_pem: bytes) -> None:
        self.revoked.append(cert_pem)

    async def close(self) -> None:
        self.closed = True


# -- NJet --------------------------------------------------------------------------------------


class FakeRepeated(ControllerError):
    """NJet's code 11 on add: the body repeats the block's first dynamic certificate."""


class FakeNjetRefused(ControllerError):
    """NJet answered and refused (e.g. no block for listens[0] + server_names[0])."""


@dataclass
class FakeBlock:
    """One running server block: what GET lists and what a handshake shows.

    `served` is the fingerprint each key kind's handshake shows (the bootstrap cert at start);
    `config_cert_type` is the type of the block's ssl_certificate in GET's list (None: none).
    """

    listens: tuple[str, ...]
    server_names: tuple[str, ...]
    served: dict[KeyKind, str] = field(default_factory=dict)
    config_cert_type: KeyKind | None = None
    # the dynamic records, oldest first: (cert_type, cert_pem, key_pem)
    dynamic: list[tuple[str, bytes, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Put:
    listens: tuple[str, ...]
    server_names: tuple[str, ...]
    cert_type: str
    fingerprint: str


class FakeNjet:
    """NjetReader + NjetWriter over FakeBlocks (see the module docstring for the quirks).

    `unreachable` makes every call raise TemporaryError; `fail_puts` is a queue of errors the
    next PUTs raise instead of landing; `answer_repeated` answers every PUT "repeated" (and
    lands nothing); `not_served` is how many of the next accepted PUTs are recorded but not
    served. `gate`, when set, makes get_ssl wait for it (after setting `entered`).
    """

    def __init__(self, blocks: Iterable[FakeBlock] = ()) -> None:
        self.blocks = list(blocks)
        self.unreachable = False
        self.fail_puts: list[ControllerError] = []
        self.answer_repeated = False
        self.not_served = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.puts: list[Put] = []
        self.gets = 0

    def _check_reachable(self) -> None:
        if self.unreachable:
            raise TemporaryError("NJet API http://127.0.0.1:8081 unreachable: connection refused")

    def block(self, listen: str, name: str) -> FakeBlock | None:
        """The block a PUT addressed with `listen` + `name` finds (exact strings)."""
        return next((b for b in self.blocks if listen in b.listens and name in b.server_names),
                    None)

    async def get_ssl(self) -> tuple[NjetServer, ...]:
        self.gets += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self._check_reachable()
        out = []
        for b in self.blocks:
            entries = [NjetCertEntry(b.config_cert_type, False, "conf/server.crt", None)
                       if b.config_cert_type else None]
            entries += [NjetCertEntry(t, True, None, fingerprint_pem(c)) for t, c, _ in b.dynamic]
            out.append(NjetServer(b.listens, b.server_names,
                                  tuple(e for e in entries if e is not None)))
        return tuple(out)

    async def add_cert(
        self,
        *,
        listens: Sequence[str],
        server_names: Sequence[str],
        cert_type: str,
        cert_pem: bytes,
        key_pem: bytes,
    ) -> None:
        self._check_reachable()
        if self.fail_puts:
            raise self.fail_puts.pop(0)
        block = self.block(listens[0], server_names[0])
        if block is None:
            raise FakeNjetRefused(f"can`t find server by listen[{listens[0]}] "
                                  f"server_name[{server_names[0]}]")
        entry = (cert_type, cert_pem, key_pem)
        if self.answer_repeated or (block.dynamic and block.dynamic[0] == entry):
            raise FakeRepeated(f"{listens[0]} {server_names[0]}: dyn ssl cert repeated")
        if cert_type not in ("rsa", "ecc"):
            raise FakeNjetRefused(f"unknown cert_type {cert_type!r}")
        kind: KeyKind = "ecc" if cert_type == "ecc" else "rsa"
        fp = fingerprint_pem(cert_pem)
        self.puts.append(Put(tuple(listens), tuple(server_names), cert_type, fp))
        block.dynamic.append(entry)
        if self.not_served > 0:
            self.not_served -= 1
            return
        block.served[kind] = fp


# -- Prober ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probed:
    """A ProbeOutcome."""

    fingerprint: str | None
    error: str | None = None


class FakeProber:
    """A Prober answering from a FakeNjet: the block on `listen` with `sni` among its names
    (case-insensitive), else the first block on that listen (NJet's default server). `down`
    listens refuse the connection. Every call is recorded as (listen, sni, key_kind)."""

    def __init__(self, njet: FakeNjet) -> None:
        self.njet = njet
        self.down: set[str] = set()
        self.calls: list[tuple[str, str, KeyKind]] = []

    async def __call__(
        self,
        *,
        listen: str,
        sni: str,
        key_kind: KeyKind,
        timeout: float,  # noqa: ASYNC109 - part of the ports.Prober interface
    ) -> Probed:
        self.calls.append((listen, sni, key_kind))
        where = f"{listen} (SNI {sni or '-'}, {key_kind})"
        if listen in self.down:
            return Probed(None, f"{where}: connection refused")
        here = canonical_listen(listen)
        on_listen = [b for b in self.njet.blocks
                     if here in {canonical_listen(x) for x in b.listens}]
        named = [b for b in on_listen if sni.lower() in {n.lower() for n in b.server_names}]
        candidates = named or on_listen
        if not candidates:
            return Probed(None, f"{where}: connection refused")
        fp = candidates[0].served.get(key_kind)
        if fp is None:
            return Probed(None, f"{where}: TLS handshake failed: no {key_kind} certificate")
        return Probed(fp)


# -- status, desired state, observers ----------------------------------------------------------


class MemoryStatus:
    """StatusPersistence in a dict. `fail` makes save/delete raise StoreError (disk full)."""

    def __init__(self, statuses: Iterable[CertStatus] = ()) -> None:
        self.records: dict[str, CertStatus] = {s.domain: s for s in statuses}
        self.fail = False
        self.saves: list[CertStatus] = []
        self.deletes: list[str] = []
        self.loads = 0

    def load_all(self) -> dict[str, CertStatus]:
        self.loads += 1
        return dict(self.records)

    def save(self, status: CertStatus) -> None:
        if self.fail:
            raise StoreError(f"cannot write memory://status/{status.domain}.json: disk full")
        self.records[status.domain] = status
        self.saves.append(status)

    def delete(self, domain: str) -> None:
        if self.fail:
            raise StoreError(f"cannot remove memory://status/{domain}.json: read-only")
        self.records.pop(domain, None)
        self.deletes.append(domain)


class FakeDesired:
    """A DesiredLoader over a settable list of specs. `fail` is a queue of errors the next
    loads raise (ConfigError for a broken njet.conf, anything else for a bug)."""

    def __init__(self, specs: Iterable[CertificateSpec] = ()) -> None:
        self.specs = list(specs)
        self.fail: list[BaseException] = []
        self.loads: list[bool] = []  # the `fresh` of every call

    def __call__(self, *, fresh: bool = False) -> Desired:
        self.loads.append(fresh)
        if self.fail:
            raise self.fail.pop(0)
        return Desired(specs={s.key: s for s in self.specs})  # store keys


@dataclass(frozen=True)
class PassRecord:
    plan: Plan
    outcomes: list[Outcome]
    observed: Observed
    statuses: dict[str, CertStatus]


class RecordingObserver:
    """A PassObserver that keeps every pass it is told about."""

    def __init__(self) -> None:
        self.passes: list[PassRecord] = []

    def on_pass(self, *, plan: Plan, outcomes: list[Outcome], seconds: float,
                observed: Observed, statuses: dict[str, CertStatus]) -> None:
        self.passes.append(PassRecord(plan, list(outcomes), observed, dict(statuses)))


# -- GcConfirmations, QuarantineExpiry --------------------------------------------------------


class MemoryGcConfirmations:
    """GcConfirmations in memory: `release` is what is on file."""

    def __init__(self) -> None:
        self.release: GcRelease | None = None

    def load(self) -> GcRelease | None:
        return self.release

    def save(self, release: GcRelease, *, stored: int = 0) -> None:
        self.release = release

    def consume(self, release: GcRelease) -> bool:
        if self.release != release:
            return False
        self.release = None
        return True


class MemoryLedger:
    """RateLedger in memory for the CA `ca`: `events` as recorded (those past the longest
    window forgotten at each record, as the file ledger does); `fail` makes the next records
    raise StoreError (one each)."""

    def __init__(self, ca: str = "https://ca.fake/dir") -> None:
        self.ca = ca
        self.events: list[LedgerEvent] = []
        self.fail = 0

    def record(self, event: LedgerEvent) -> None:
        if event.ca != self.ca:
            raise ValueError(f"the ledger of {self.ca} cannot record an event of {event.ca}")
        if self.fail:
            self.fail -= 1
            raise StoreError("cannot write memory://ledger: disk full (ENOSPC)")
        self.events = sorted([e for e in self.events if _ledger_alive(e, event.at)] + [event],
                             key=lambda e: e.at)

    def snapshot(self, now: datetime) -> LedgerSnapshot:
        return LedgerSnapshot(self.ca, now, tuple(e for e in self.events
                                                  if _ledger_alive(e, now)))


def _ledger_alive(e: LedgerEvent, now: datetime) -> bool:
    return e.at > now - LONGEST_WINDOW or (e.until is not None and e.until > now)


class RecordingExpiry:
    """QuarantineExpiry that removes nothing and records each `now` it was called with."""

    def __init__(self) -> None:
        self.calls: list[datetime] = []

    def expire(self, now: datetime) -> list[str]:
        self.calls.append(now)
        return []


# -- helpers -----------------------------------------------------------------------------------


def spec(domain: str, *names: str, listens: Sequence[str] = ("127.0.0.1:8443",),
         key_type: KeyType | None = KeyType.EC256) -> CertificateSpec:
    """A desired certificate for `domain` (+ `names`) on `listens`."""
    return CertificateSpec(domain=domain, names=(domain, *names), listens=tuple(listens),
                           key_type=key_type)


def block_for(s: CertificateSpec, *, bootstrap: KeyKind = "ecc") -> FakeBlock:
    """The running block of spec `s`, serving a self-signed bootstrap cert of `bootstrap`."""
    kt = KeyType.EC256 if bootstrap == "ecc" else KeyType.RSA2048
    boot = make_cert(s.names, key_type=kt, self_signed=True)
    return FakeBlock(s.listens, s.names, served={bootstrap: fingerprint_pem(boot.cert_pem)},
                     config_cert_type=bootstrap)


class MemoryGate:
    """ports.OrderGate in memory: one holder per key across every "node" sharing `shared`
    (a dict key -> node), `stored` the fleet store's fingerprints (key -> fingerprint).
    `order` raises HandledElsewhere while another node holds the key or when the fleet store
    holds another certificate than `expected`; `refuse` makes every order HandledElsewhere
    (this node's settings differ). `entered` counts the holds that went through."""

    def __init__(self, node: str = "node-a", shared: dict[str, str] | None = None,
                 stored: dict[str, str] | None = None) -> None:
        self.node = node
        self.shared = {} if shared is None else shared
        self.stored = {} if stored is None else stored
        self.refuse: str | None = None
        self.entered = 0

    @contextlib.asynccontextmanager
    async def order(self, key: str, *, expected: str | None) -> AsyncIterator[None]:
        if self.refuse is not None:
            raise HandledElsewhere(self.refuse)
        holder = self.shared.get(key)
        if holder is not None and holder != self.node:
            raise HandledElsewhere(f"the lease on {key} is held by {holder}")
        current = self.stored.get(key)
        if current is not None and current != expected:
            raise HandledElsewhere(f"another node stored a new certificate for {key}")
        self.shared[key] = self.node
        self.entered += 1
        try:
            yield
        finally:
            del self.shared[key]
