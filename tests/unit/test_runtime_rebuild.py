"""A rebuild of the runtime servers from NJet's retained records never loses an event that
arrived while the records were read: RuntimeStore.rebuilding() + replace_all(since=...) on the
real servers.json, then the same race through the real Service with a reader held mid-read.
The real-broker version is tests/integration/test_runtime_resync.py."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from controller.adapters.store import runtime as runtime_module
from controller.adapters.store.runtime import RuntimeStore
from controller.config import parse_config
from controller.errors import StoreError, TemporaryError
from controller.events import EventAction, EventDomain, NjetEvent
from controller.model import CertificateSpec
from controller.paths import StorePaths
from controller.service import SRV_TOPICS, Service

LISTEN = "127.0.0.1:8443"
CONF = ("http { server { listen 127.0.0.1:8443 ssl; server_name static.test;"
        " ssl_certificate_management acme; } }\n")


def event(action: EventAction, name: str) -> NjetEvent:
    return NjetEvent(action, (EventDomain((name,), (LISTEN,), "acme"),))


def spec(name: str) -> CertificateSpec:
    return CertificateSpec(name, (name,), (LISTEN,), origin="/ins/srv/s_" + name)


def domains(store: RuntimeStore) -> list[str]:
    return sorted(s.domain for s in store.load())


def on_disk(store: RuntimeStore) -> list[str]:
    """What a fresh instance reads: the state a crash at this point leaves."""
    return sorted(s["domain"] for s in json.loads(store.path.read_bytes())["servers"])


def store_with(tmp_path: Path, *names: str) -> RuntimeStore:
    store = RuntimeStore(StorePaths(tmp_path))
    for name in names:
        store.apply(event(EventAction.GENERATE, name))
    return store


def test_an_add_applied_between_the_snapshot_read_and_replace_all_survives(
    tmp_path: Path,
) -> None:
    store = store_with(tmp_path, "a.test", "gone.test")
    with store.rebuilding() as since:
        snapshot = [spec("a.test")]  # read before the event: gone.test was removed meanwhile
        assert store.apply(event(EventAction.GENERATE, "new.test"))
        assert on_disk(store) == ["a.test", "gone.test", "new.test"]  # a crash here keeps it
        assert store.replace_all(snapshot, since=since)
    assert domains(store) == ["a.test", "new.test"]
    assert on_disk(store) == ["a.test", "new.test"]


def test_a_delete_applied_between_the_snapshot_read_and_replace_all_stays_deleted(
    tmp_path: Path,
) -> None:
    store = store_with(tmp_path, "a.test", "b.test")
    with store.rebuilding() as since:
        snapshot = [spec("a.test"), spec("b.test")]  # read before b.test was deleted
        assert store.apply(event(EventAction.DELETE, "b.test"))
        assert on_disk(store) == ["a.test"]
        store.replace_all(snapshot, since=since)  # the snapshot, then the delete again
    assert domains(store) == ["a.test"]
    assert on_disk(store) == ["a.test"]


@pytest.mark.parametrize(("actions", "kept"), [
    ((EventAction.GENERATE, EventAction.DELETE), []),
    ((EventAction.DELETE, EventAction.GENERATE), ["x.test"]),
])
def test_events_during_a_rebuild_are_replayed_in_the_order_they_came(
    tmp_path: Path, actions: tuple[EventAction, ...], kept: list[str],
) -> None:
    store = store_with(tmp_path)
    with store.rebuilding() as since:
        snapshot = [] if kept else [spec("x.test")]  # the opposite of the last event
        for action in actions:
            store.apply(event(action, "x.test"))
        store.replace_all(snapshot, since=since)
    assert domains(store) == kept == on_disk(store)


def test_an_event_that_changed_nothing_is_still_replayed_over_a_stale_snapshot(
    tmp_path: Path,
) -> None:
    store = store_with(tmp_path)  # b.test never reached the store (e.g. a filtered add)
    with store.rebuilding() as since:
        assert not store.apply(event(EventAction.DELETE, "b.test"))
        store.replace_all([spec("a.test"), spec("b.test")], since=since)
    assert domains(store) == ["a.test"]


def test_events_before_the_rebuild_started_are_left_to_the_snapshot(tmp_path: Path) -> None:
    store = store_with(tmp_path, "old.test")
    with store.rebuilding() as since:
        assert since == store.sequence == 1
        assert store.replace_all([spec("a.test")], since=since)
    assert domains(store) == ["a.test"] == on_disk(store)


def test_overlapping_rebuilds_each_replay_the_events_after_their_own_mark(
    tmp_path: Path,
) -> None:
    store = store_with(tmp_path)
    with store.rebuilding() as first:
        store.apply(event(EventAction.GENERATE, "one.test"))
        with store.rebuilding() as second:
            store.apply(event(EventAction.GENERATE, "two.test"))
            assert store.replace_all([], since=second)
            assert domains(store) == ["two.test"]
        store.replace_all([], since=first)  # still complete after `second` was left
    assert domains(store) == ["one.test", "two.test"]


def test_replace_all_refuses_a_mark_whose_rebuild_is_over(tmp_path: Path) -> None:
    store = store_with(tmp_path, "a.test")
    with store.rebuilding() as since:
        store.apply(event(EventAction.GENERATE, "b.test"))
    with pytest.raises(ValueError, match=r"since=1\).*servers\.json.*rebuilding"):
        store.replace_all([], since=since)
    assert domains(store) == ["a.test", "b.test"]


def test_a_failed_rebuild_write_leaves_the_file_with_every_event_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = store_with(tmp_path, "a.test")
    with store.rebuilding() as since:
        store.apply(event(EventAction.GENERATE, "new.test"))

        def failing(path: Path, data: bytes, *, mode: int = 0o600) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        with monkeypatch.context() as m:
            m.setattr(runtime_module, "atomic_write", failing)
            with pytest.raises(StoreError, match=r"servers\.json"):
                store.replace_all([], since=since)
        assert domains(store) == ["a.test", "new.test"] == on_disk(store)
        assert store.replace_all([spec("b.test")], since=since)  # the retry replays it too
    assert domains(store) == ["b.test", "new.test"] == on_disk(store)


# -- through the Service ------------------------------------------------------------------


def srv_record(name: str) -> bytes:
    return json.dumps({"type": "add", "addr_port": LISTEN, "server_name": name,
                       "listen_option": "ssl",
                       "server_body": "ssl_certificate_management acme;"}).encode()


class HeldReader:
    """A retained-record reader that says when it has read and returns only once released."""

    def __init__(self, records: Mapping[str, bytes]) -> None:
        self.records = dict(records)
        self.calls: list[tuple[str, str]] = []
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, address: str, topic_filter: str) -> dict[str, bytes]:
        self.calls.append((address, topic_filter))
        snapshot = dict(self.records)  # taken now, before the events the test sends
        self.reading.set()
        await self.release.wait()
        return snapshot


def service(tmp_path: Path, reader: HeldReader) -> Service:
    prefix = tmp_path / "njet"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(CONF)
    config = parse_config({"njet": {"apiAddress": "http://127.0.0.1:9"},
                           "mqtt": {"mqttServerAddress": "127.0.0.1:9"}}, prefix=prefix)
    return Service(config, read_records=reader)


async def rebuild_with_event_mid_read(svc: Service, reader: HeldReader, ev: NjetEvent) -> None:
    reader.reading.clear()
    reader.release.clear()
    task = asyncio.ensure_future(svc.refresh_runtime())
    await reader.reading.wait()
    svc.on_event(ev)
    reader.release.set()
    await task


async def test_the_service_keeps_an_add_and_a_delete_that_arrive_during_the_rebuild(
    tmp_path: Path,
) -> None:
    reader = HeldReader({"/ins/srv/s_a": srv_record("a.test"),
                         "/ins/srv/s_b": srv_record("b.test")})
    svc = service(tmp_path, reader)
    runtime = svc.app.runtime

    await rebuild_with_event_mid_read(svc, reader, event(EventAction.GENERATE, "new.test"))
    assert reader.calls == [("127.0.0.1:9", SRV_TOPICS)]
    assert domains(runtime) == ["a.test", "b.test", "new.test"] == on_disk(runtime)
    desired = svc.app.reconciler.desired(fresh=True).specs
    assert {"a.test", "b.test", "new.test", "static.test"} <= set(desired)

    # NJet retains new.test's record, then deletes b.test, whose record is cleared only
    # after our next read took it
    reader.records["/ins/srv/s_new"] = srv_record("new.test")
    await rebuild_with_event_mid_read(svc, reader, event(EventAction.DELETE, "b.test"))
    assert domains(runtime) == ["a.test", "new.test"] == on_disk(runtime)
    assert "b.test" not in svc.app.reconciler.desired(fresh=True).specs


async def test_a_failed_read_keeps_the_events_and_closes_the_rebuild(tmp_path: Path) -> None:
    async def unreachable(address: str, topic_filter: str) -> dict[str, bytes]:
        svc.on_event(event(EventAction.GENERATE, "new.test"))
        raise TemporaryError(f"cannot read retained {topic_filter!r} from {address}")

    svc = service(tmp_path, HeldReader({}))
    svc._read_records = unreachable
    await svc.refresh_runtime()  # logged, the known set kept
    assert domains(svc.app.runtime) == ["new.test"] == on_disk(svc.app.runtime)
    with pytest.raises(ValueError, match="no rebuild"):  # the rebuild was closed
        svc.app.runtime.replace_all([], since=0)
