"""An in-memory ports.AriPoller for step tests and bench/ari.py: a CA's renewal information
without a network.

    ari = FakeAri(clock)                           # every certificate: the middle of its lifetime
    ari = FakeAri(clock, window=lambda info: (info.not_before, info.not_after))
    ari.retry_after = 3600                          # Retry-After of every answer (None: none)
    ari.move(cert_id, start, end)                   # this certificate's window from now on
    ari.fail = "503"                                # every answer an error until cleared
    ari.offered = False                             # the directory has no renewalInfo

The ARI identifier is "fake." + the serial in hex (tests/certbuilder.py's certificates carry no
authority key identifier); `requests` lists (time, cert_id) of every renewal_info call.
tests/unit/test_ari_step.py checks it against its Protocol.

`ari_world(*specs, lifetime=...)` is a store-only Reconciler over tests/fakes.py with an AriStep
asking a FakeAri (seeded randomness), for the step tests and the renewal-timing simulations.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.ari import AriStep
from controller.certinfo import read_cert_info
from controller.errors import TemporaryError
from controller.execute import Executor
from controller.model import CertificateSpec, CertInfo, KeyType, StoredCert
from controller.observe import Gatherer
from controller.policy import PolicySettings
from controller.ports import AriAnswer
from controller.reconcile import Reconciler
from controller.status import CertStatus
from tests.fakes import FakeClock, FakeDesired, FakeIssuer, MemoryStatus, MemoryStore

WindowRule = Callable[[CertInfo], tuple[datetime, datetime]]


def middle_third(info: CertInfo) -> tuple[datetime, datetime]:
    """A window over the middle third of the lifetime (about where CAs suggest renewal)."""
    life = info.not_after - info.not_before
    return info.not_before + life / 3, info.not_before + life * 2 / 3


def fake_cert_id(info: CertInfo) -> str:
    return f"fake.{info.serial}"


class FakeAri:
    def __init__(self, clock: Callable[[], datetime], *, window: WindowRule = middle_third,
                 retry_after: float | None = None, explanation_url: str | None = None) -> None:
        self.clock = clock
        self.window = window
        self.retry_after = retry_after
        self.explanation_url = explanation_url
        self.offered = True
        self.unreachable = False  # supported() raises TemporaryError (no directory)
        self.fail: str | None = None
        self.moved: dict[str, tuple[datetime, datetime]] = {}
        self.requests: list[tuple[datetime, str]] = []
        self.asked_ca: list[str | None] = []  # the `ca` of every renewal_info call
        self.closed = False

    def move(self, cert_id: str, start: datetime, end: datetime) -> None:
        self.moved[cert_id] = (start, end)

    async def supported(self) -> bool:
        if self.unreachable:
            raise TemporaryError("cannot load the ACME directory https://ca.fake/dir: refused")
        return self.offered

    async def renewal_info(self, cert_pem: bytes, *, ca: str | None = None) -> AriAnswer:
        info = read_cert_info(cert_pem)
        ident = fake_cert_id(info)
        self.requests.append((self.clock(), ident))
        self.asked_ca.append(ca)
        if self.fail is not None:
            return AriAnswer(fingerprint=info.fingerprint, cert_id=ident,
                             retry_after=self.retry_after, error=self.fail)
        start, end = self.moved.get(ident) or self.window(info)
        return AriAnswer(fingerprint=info.fingerprint, cert_id=ident, window_start=start,
                         window_end=end, explanation_url=self.explanation_url,
                         retry_after=self.retry_after)

    async def factory(self) -> FakeAri:
        return self

    async def close(self) -> None:
        self.closed = True


# -- a store-only controller over the fakes, with the ARI step ----------------------------------


@dataclass
class AriWorld:
    """A Reconciler over tests/fakes.py (store-only) with an AriStep asking `ari`."""

    clock: FakeClock
    store: MemoryStore
    issuer: FakeIssuer
    statuses: MemoryStatus
    desired: FakeDesired
    ari: FakeAri
    step: AriStep
    rec: Reconciler

    def stored(self, domain: str) -> StoredCert:
        got = self.store.get(domain)
        assert got is not None, f"nothing stored for {domain}"
        return got

    def status(self, domain: str) -> CertStatus:
        return self.rec.statuses[domain]


def ari_world(*specs: CertificateSpec, lifetime: timedelta = timedelta(days=90),
              window: WindowRule = middle_third, retry_after: float | None = None,
              seed: int = 7, statuses: Iterable[CertStatus] = ()) -> AriWorld:
    clock = FakeClock()
    store = MemoryStore()
    issuer = FakeIssuer(clock, lifetime=lifetime)
    memory = MemoryStatus(statuses)
    desired = FakeDesired(specs)
    ari = FakeAri(clock, window=window, retry_after=retry_after)
    settings = PolicySettings(default_key_type=KeyType.EC256, store_only=True)
    step = AriStep(ari.factory, store, clock=clock, rng=random.Random(seed))
    rec = Reconciler(
        settings=settings, load_desired=desired, gatherer=Gatherer(store, settings),
        executor=Executor(store=store, issuer_factory=issuer.factory, clock=clock),
        status_store=memory, clock=clock, ari=step)
    return AriWorld(clock, store, issuer, memory, desired, ari, step, rec)
