"""The reconcile pass, `converge` and the long-running `Loop` over the fakes (real plan and fold):
converging to an empty plan, an idempotent second pass, the precondition re-check inside a pass,
backoff by the injected clock, coalesced wake-ups, and a loop that survives an exception."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.errors import ConfigError, TemporaryError
from controller.execute import Executor
from controller.model import CertificateSpec, KeyType
from controller.observe import Gatherer
from controller.plan import ActionKind
from controller.policy import PolicySettings
from controller.reasons import Reason
from controller.reconcile import Loop, PassResult, Reconciler
from tests.certbuilder import make_cert
from tests.fakes import (
    FakeClock,
    FakeDesired,
    FakeIssuer,
    FakeNjet,
    FakeProber,
    FakeRepeated,
    MemoryStatus,
    MemoryStore,
    RecordingObserver,
    Watch,
    block_for,
    spec,
)

A = spec("a.test", "www.a.test")
B = spec("b.test", listens=("127.0.0.1:8444",))


@dataclass
class WatchedReconciler(Reconciler):
    """Counts the loop's look-ups of its next deadline: one per loop iteration, right before
    it waits for a wake-up, so `deadlines` tells how far the loop got without any timing."""

    deadlines: int = 0
    watch: Watch = field(default_factory=Watch)

    def next_deadline(self, result: PassResult | None, interval: timedelta) -> datetime:
        self.deadlines += 1
        self.watch.changed()
        return super().next_deadline(result, interval)

    async def until_iteration(self, n: int) -> None:
        await self.watch.until(lambda: self.deadlines >= n)


@dataclass
class World:
    clock: FakeClock
    store: MemoryStore
    issuer: FakeIssuer
    njet: FakeNjet
    prober: FakeProber
    statuses: MemoryStatus
    desired: FakeDesired
    observer: RecordingObserver
    rec: WatchedReconciler

    def fp(self, domain: str) -> str | None:
        got = self.store.get(domain)
        return got.info.fingerprint if got is not None else None


def world(*specs: CertificateSpec) -> World:
    specs = specs or (A, B)
    clock = FakeClock()
    store = MemoryStore()
    issuer = FakeIssuer(clock)
    njet = FakeNjet([block_for(s) for s in specs])
    prober = FakeProber(njet)
    statuses = MemoryStatus()
    desired = FakeDesired(specs)
    observer = RecordingObserver()
    settings = PolicySettings(default_key_type=KeyType.EC256, delete_grace=timedelta(hours=24),
                              store_only=False)

    async def no_sleep(_seconds: float) -> None:
        return None

    executor = Executor(store=store, issuer_factory=issuer.factory, njet=njet, prober=prober,
                        probe_timeout=1.0, repeated_error=FakeRepeated, clock=clock,
                        sleep=no_sleep)
    rec = WatchedReconciler(
        settings=settings,
        load_desired=desired,
        gatherer=Gatherer(store, settings, njet=njet, prober=prober, probe_timeout=1.0),
        executor=executor,
        status_store=statuses,
        clock=clock,
        observer=observer,
    )
    return World(clock, store, issuer, njet, prober, statuses, desired, observer, rec)


# -- passes and converge -----------------------------------------------------------------------


async def test_converge_issues_applies_and_stops_at_an_empty_plan() -> None:
    w = world()
    result = await w.rec.converge(probe=True)
    assert result.plan.actions == () and result.plan.in_sync
    assert [o.ok for o in w.observer.passes[0].outcomes] == [True, True]
    assert [a.kind for a in w.observer.passes[0].plan.actions] == [ActionKind.ISSUE] * 2
    assert w.rec.passes_run == len(w.observer.passes) == 2
    for domain, block in (("a.test", w.njet.blocks[0]), ("b.test", w.njet.blocks[1])):
        fp = w.fp(domain)
        assert fp is not None and block.served["ecc"] == fp
        assert w.statuses.records[domain].applied_fingerprint == fp
        assert w.statuses.records[domain].attempts == 0


async def test_a_second_converge_changes_nothing() -> None:
    w = world()
    await w.rec.converge(probe=True)
    orders, puts, saves = len(w.issuer.orders), len(w.njet.puts), len(w.statuses.saves)
    result = await w.rec.converge(probe=True)
    assert result.plan.actions == () and result.outcomes == []
    assert (len(w.issuer.orders), len(w.njet.puts), len(w.statuses.saves)) == (orders, puts,
                                                                               saves)
    assert w.rec.passes_run == 3  # one pass: nothing to do is noticed at once


async def test_the_store_changed_since_the_plan_was_made_is_skipped_in_a_pass() -> None:
    """Someone (lego by hand, a second controller) writes a pair right after the scan: the
    planned issue is skipped, nothing is ordered, no failure is counted; the next pass sees the
    new pair and applies it."""
    w = world(A)
    other = make_cert(["a.test", "www.a.test"],
                      not_before=w.clock() - timedelta(hours=1)).issued()  # valid by the clock

    def meanwhile() -> None:
        w.store.on_load_all = None
        w.store.put("a.test", other)

    w.store.on_load_all = meanwhile
    first = await w.rec.pass_once()
    assert [a.kind for a in first.plan.actions] == [ActionKind.ISSUE]
    (out,) = first.outcomes
    assert out.skipped and out.error == "store changed since the plan was made"
    assert w.issuer.orders == [] and w.njet.puts == []
    status = w.rec.statuses["a.test"]
    assert (status.attempts, status.backoff_until, status.last_failure) == (0, None, None)

    second = await w.rec.pass_once()
    assert [(a.kind, a.reason) for a in second.plan.actions] == [(ActionKind.APPLY,
                                                                  Reason.NOT_SERVED)]
    assert second.outcomes[0].ok and w.njet.blocks[0].served["ecc"] == w.fp("a.test")
    assert w.issuer.orders == []


async def test_a_failed_order_backs_off_by_the_injected_clock() -> None:
    w = world(A)
    w.issuer.fail = [TemporaryError("CA unreachable")]
    first = await w.rec.pass_once(probe=True)
    assert not first.outcomes[0].ok
    status = w.rec.statuses["a.test"]
    assert status.attempts == 1 and status.backoff_until == w.clock() + timedelta(minutes=1)
    waiting = await w.rec.converge()
    assert waiting.plan.actions == () and [x.reason for x in waiting.plan.waiting] == [
        Reason.BACKOFF]
    assert len(w.issuer.orders) == 1
    w.clock.advance(timedelta(minutes=2))
    done = await w.rec.converge()
    assert done.plan.in_sync and w.njet.blocks[0].served["ecc"] == w.fp("a.test")


async def test_a_status_that_cannot_be_saved_is_kept_in_memory() -> None:
    w = world(A)
    w.statuses.fail = True
    result = await w.rec.converge(probe=True)
    assert result.plan.in_sync and w.statuses.records == {}
    assert w.rec.statuses["a.test"].applied_fingerprint == w.fp("a.test")


async def test_a_broken_conf_keeps_the_last_good_desired_state() -> None:
    w = world(A)
    await w.rec.converge(probe=True)
    w.desired.fail = [ConfigError("conf/njet.conf:3: unexpected '}'")]
    result = await w.rec.converge(keep_last_good=True)
    assert set(result.desired.specs) == {"a.test"} and result.plan.in_sync
    assert w.desired.fail == []


# -- the long-running loop ---------------------------------------------------------------------


async def test_wake_ups_coalesce() -> None:
    w = world(A)
    gate = asyncio.Event()
    w.njet.gate = gate
    loop = Loop(w.rec, timedelta(hours=1), error_pause=0.0)
    task = asyncio.create_task(loop.run())
    try:
        await w.njet.entered.wait()  # the start-up reconcile is in progress
        for _ in range(5):
            loop.wake()
        gate.set()
        await w.rec.until_iteration(3)  # idle again, waiting for a wake-up
        assert loop.reconciles == 2 and not loop.pending  # five events during it: one more
        assert loop.last is not None and loop.last.plan.in_sync

        for _ in range(5):  # a burst while idle starts one reconcile
            loop.wake()
        await w.rec.until_iteration(4)
        assert loop.reconciles == 3 and not loop.pending
        assert len(w.issuer.orders) == 1
    finally:
        loop.stop()
        await task


async def test_the_loop_survives_an_exception() -> None:
    w = world(A)
    w.desired.fail = [RuntimeError("a bug in desired state")]
    loop = Loop(w.rec, timedelta(hours=1), error_pause=0.0)
    task = asyncio.create_task(loop.run())
    try:
        await w.rec.until_iteration(2)
        assert loop.reconciles == 1
        assert loop.last_error == "RuntimeError: a bug in desired state"
        assert w.issuer.orders == []

        loop.wake()
        await w.rec.until_iteration(3)
        assert loop.reconciles == 2 and loop.last_error is None
        assert w.njet.blocks[0].served["ecc"] == w.fp("a.test")
    finally:
        loop.stop()
        await task
    assert task.done() and task.exception() is None


async def test_a_resync_request_runs_the_resync_hook_at_once_not_after_the_interval() -> None:
    """The MQTT link came back: events sent meanwhile are lost, so the runtime servers are
    rebuilt from the retained records right away (service.on_connection asks for it)."""
    w = world(A)
    resyncs: list[int] = []

    async def on_resync() -> None:
        resyncs.append(len(resyncs))

    loop = Loop(w.rec, timedelta(hours=1), on_resync=on_resync, error_pause=0.0)
    task = asyncio.create_task(loop.run())
    try:
        await w.rec.until_iteration(2)
        assert resyncs == [0]  # at start
        loop.wake()  # an ordinary wake-up: no resync within the interval
        await w.rec.until_iteration(3)
        assert resyncs == [0]
        loop.resync()
        await w.rec.until_iteration(4)
        assert resyncs == [0, 1]
    finally:
        loop.stop()
        await task
