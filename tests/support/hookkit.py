"""The store-only world the hook and notification tests run real passes in: a Reconciler over
the fakes (MemoryStore, FakeIssuer, FakeDesired, MemoryStatus), its own observers first and a
RecordingObserver last. Used by tests/unit/test_hooks.py, tests/unit/test_hooks_runner.py and
tests/integration/test_webhook.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from controller.execute import Executor
from controller.model import CertificateSpec
from controller.observe import Gatherer
from controller.policy import PolicySettings
from controller.ports import PassObserver
from controller.reconcile import Reconciler
from tests.fakes import FakeClock, FakeDesired, FakeIssuer, MemoryStatus, MemoryStore, spec

A = spec("a.test", "www.a.test")
B = spec("b.test")


def store_only_reconciler(specs: Sequence[CertificateSpec], *, clock: FakeClock,
                          store: MemoryStore, issuer: FakeIssuer,
                          observers: Sequence[PassObserver],
                          delete_grace: timedelta | None = None) -> tuple[Reconciler, FakeDesired]:
    """A store-only Reconciler over `specs` (`delete_grace`: PolicySettings' own when None)."""
    settings = (PolicySettings(store_only=True) if delete_grace is None
                else PolicySettings(store_only=True, delete_grace=delete_grace))
    desired = FakeDesired(specs)
    rec = Reconciler(settings=settings, load_desired=desired,
                     gatherer=Gatherer(store, settings),
                     executor=Executor(store=store, issuer_factory=issuer.factory, clock=clock),
                     status_store=MemoryStatus(), clock=clock, observers=list(observers))
    return rec, desired
