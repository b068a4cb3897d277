"""Stopping: a stop signal cancels the pass in flight instead of waiting for the order, the store
lock is released only after a store write the pass started has finished, and /healthz says
"stopping". The real-process check against a hanging CA is tests/faults/test_signals.py."""

from __future__ import annotations

import asyncio
import signal
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.store.lock import StoreLock
from controller.admin_backend import ControllerBackend
from controller.config import parse_config
from controller.execute import Executor, store_write
from controller.metrics import ControllerMetrics
from controller.model import IssuedCert, KeyType, StoredCert
from controller.observe import Gatherer
from controller.policy import PolicySettings
from controller.reconcile import Loop, Reconciler
from controller.service import Service
from tests.fakes import FakeClock, FakeDesired, FakeIssuer, MemoryStatus, MemoryStore
from tests.faults.helpers import store_problems
from tests.support.hackmods import free_tcp_port

CONF = """http {
    server {
        listen 127.0.0.1:8443 ssl;
        server_name a.test www.a.test;
        ssl_certificate_management acme;
    }
}
"""


async def test_a_cancelled_store_write_finishes_before_the_cancellation_goes_on() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def put(domain: str) -> str:  # stands in for LegoStore.put, a journaled swap
        started.set()
        release.wait(30)
        finished.append(domain)
        return domain

    task = asyncio.ensure_future(store_write(put, "a.test"))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not task.done(), "the cancellation went on while the write was still running"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["a.test"]


def test_healthz_says_stopping_once_the_loop_is_asked_to_stop() -> None:
    clock = FakeClock()
    store = MemoryStore()
    settings = PolicySettings(default_key_type=KeyType.EC256, delete_grace=timedelta(hours=24),
                              store_only=True)
    executor = Executor(store=store, issuer_factory=FakeIssuer(clock).factory, clock=clock)
    reconciler = Reconciler(settings=settings, load_desired=FakeDesired(),
                            gatherer=Gatherer(store, settings), executor=executor,
                            status_store=MemoryStatus(), clock=clock)
    loop = Loop(reconciler, timedelta(minutes=1))
    backend = ControllerBackend(reconciler, loop, ControllerMetrics(), {})
    assert backend.health()["status"] == "ok" and not loop.stopping
    loop.stop()
    assert loop.stopping
    assert backend.health()["status"] == "stopping"


def store_only_service(tmp_path: Path) -> Service:
    prefix = tmp_path / "njet"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(CONF)
    config = parse_config(
        {"njet": {"apiAddress": ""}, "acme": {"keyType": "ec256"},
         "admin": {"address": f"127.0.0.1:{free_tcp_port()}"}},
        prefix=prefix,
    )
    return Service(config)


async def test_a_stop_signal_cancels_the_order_in_flight_and_releases_the_lock(
    tmp_path: Path,
) -> None:
    service = store_only_service(tmp_path)
    issuer = FakeIssuer()
    issuer.hold = asyncio.Event()  # a CA that never answers
    service.app._issuer = issuer
    run = asyncio.ensure_future(service.run())
    try:
        await asyncio.wait_for(issuer.watch.until(lambda: issuer.in_flight == 1), 10)
        service.stop(signal.SIGTERM)
        assert service.backend.health()["status"] == "stopping"
        # without the cancellation, run() waits for the order for ever
        done, _ = await asyncio.wait([run], timeout=10)
        assert run in done, "run() still waits for the order"
        assert run.result() == 0
    finally:
        run.cancel()
    assert issuer.in_flight == 0 and issuer.closed
    assert StoreLock(service.app.paths).try_acquire(), "the store lock was not released"


class HeldPut:
    """The real store, with `put` held until `release` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.started = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, domain: str, issued: IssuedCert) -> StoredCert:
        self.started.set()
        self.release.wait(30)
        stored: StoredCert = self.inner.put(domain, issued)
        return stored


async def test_a_stop_signal_during_a_store_write_keeps_the_lock_until_the_write_is_done(
    tmp_path: Path,
) -> None:
    service = store_only_service(tmp_path)
    service.app._issuer = FakeIssuer()
    held = HeldPut(service.app.store)
    service.app.reconciler.executor.store = held
    run = asyncio.ensure_future(service.run())
    try:
        assert await asyncio.to_thread(held.started.wait, 10)
        service.stop(signal.SIGTERM)
        done, _ = await asyncio.wait([run], timeout=1.0)
        assert not done, "run() ended while the store write was still running"
        assert not StoreLock(service.app.paths).try_acquire(), "the lock was released early"
        held.release.set()
        done, _ = await asyncio.wait([run], timeout=10)
        assert run in done and run.result() == 0
    finally:
        held.release.set()
        run.cancel()
    assert (service.app.paths.certificates / "a.test.crt").exists()
    assert not store_problems(service.app.paths.prefix)


async def test_a_planted_lock_is_reported_and_retried_and_run_starts_once_it_is_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run` never exits on a store error at start-up: NJet does not restart a copilot."""
    import controller.service as service_module
    from tests.logcapture import capture_logs

    monkeypatch.setattr(service_module, "START_RETRY", 0.05)
    service = store_only_service(tmp_path)
    service.app._issuer = FakeIssuer()
    lock_path = service.app.paths.lego / "lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    target = tmp_path / "outside-target"
    target.write_text("keep me\n")
    lock_path.symlink_to(target)  # someone planted the lock as a link to another file
    with capture_logs() as logs:
        run = asyncio.ensure_future(service.run())
        try:
            for _ in range(200):
                if logs.text.count("cannot start") >= 2:
                    break
                await asyncio.sleep(0.02)
            assert not run.done(), "run() ended instead of waiting for the store to be fixed"
            assert logs.text.count("cannot start") >= 2 and str(lock_path) in logs.text
            lock_path.unlink()  # the operator removes the planted link
            for _ in range(200):
                if "controller started" in logs.text:
                    break
                await asyncio.sleep(0.02)
            assert "controller started" in logs.text
            service.stop(signal.SIGTERM)
            assert await asyncio.wait_for(run, 10) == 0
        finally:
            run.cancel()
    assert target.read_text() == "keep me\n"
