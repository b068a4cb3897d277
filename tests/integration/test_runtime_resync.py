"""The runtime-server rebuild against a real Mosquitto, through the running Service: the retained
/ins/srv records are read for real, then the reader is held while NJet's next event reaches the
Service over its real MQTT listener; the event is not undone when the rebuild finishes.

NJet's API points at a closed port (the reconcile passes fail and are retried; not what is
tested here) and the CA is tests.fakes.FakeIssuer. The store-level cases are
tests/unit/test_runtime_rebuild.py."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from controller.adapters.mqtt.listener import read_retained
from controller.adapters.store.runtime import RuntimeStore
from controller.config import parse_config
from controller.events import EVENT_TOPIC, NjetEvent
from controller.paths import StorePaths
from controller.service import Service
from tests.fakes import FakeIssuer
from tests.fixtures.mqtt import MosquittoBroker, mqtt_publish
from tests.support.hackmods import free_tcp_port

LISTEN = "127.0.0.1:8443"
CONF = ("http { server { listen 127.0.0.1:8443 ssl; server_name static.test;"
        " ssl_certificate_management acme; } }\n")
GUARD = 15.0  # seconds: only so that a broken test fails instead of hanging


def srv_record(name: str) -> bytes:
    return json.dumps({"type": "add", "addr_port": LISTEN, "server_name": name,
                       "listen_option": "ssl",
                       "server_body": "ssl_certificate_management acme;"}).encode()


def njet_event(action: str, name: str) -> bytes:
    return json.dumps({"action": action, "domains": [
        {"server_name": [name], "server_addr": [LISTEN], "ca_type": "acme"}]}).encode()


async def publish(address: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
    await asyncio.to_thread(mqtt_publish, address, topic, payload, retain=retain)


class HeldAfterRead:
    """read_retained for real, then held until released: events come in after the snapshot."""

    def __init__(self) -> None:
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    def rearm(self) -> None:
        self.read.clear()
        self.release.clear()

    async def __call__(self, address: str, topic_filter: str) -> dict[str, bytes]:
        found = await read_retained(address, topic_filter, settle=0.2)
        self.read.set()
        await self.release.wait()
        return found


def on_disk(prefix: Path) -> list[str]:
    """A fresh store's view of servers.json: what a crash here would leave."""
    return sorted(s.domain for s in RuntimeStore(StorePaths(prefix)).load())


async def test_events_that_arrive_while_the_retained_records_are_read_are_kept(
    tmp_path: Path, mosquitto: MosquittoBroker,
) -> None:
    broker = mosquitto.tcp_address
    await publish(broker, "/ins/srv/s_a", srv_record("a.test"), retain=True)
    await publish(broker, "/ins/srv/s_b", srv_record("b.test"), retain=True)
    prefix = tmp_path / "njet"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(CONF)
    config = parse_config({"njet": {"apiAddress": f"http://127.0.0.1:{free_tcp_port()}"},
                           "mqtt": {"mqttServerAddress": broker},
                           "acme": {"keyType": "ec256"},
                           "admin": {"address": f"127.0.0.1:{free_tcp_port()}"}}, prefix=prefix)
    reader = HeldAfterRead()
    svc = Service(config, read_records=reader)
    svc.app._issuer = FakeIssuer()

    applied: asyncio.Queue[NjetEvent] = asyncio.Queue()
    linked = asyncio.Event()
    resynced = asyncio.Event()

    def on_event(event: NjetEvent) -> None:
        Service.on_event(svc, event)
        applied.put_nowait(event)

    def on_connection(connected: bool) -> None:
        Service.on_connection(svc, connected)
        if connected:
            linked.set()

    async def on_resync() -> None:  # the Loop's start-up resync, told when it is done
        await svc.refresh_runtime()
        resynced.set()

    svc.on_event = on_event  # type: ignore[method-assign]
    svc.on_connection = on_connection  # type: ignore[method-assign]
    svc.loop.on_resync = on_resync
    runtime = svc.app.runtime
    run = asyncio.ensure_future(svc.run())
    try:
        # start-up: the records are read; NJet adds new.test before the rebuild is written
        await asyncio.wait_for(reader.read.wait(), GUARD)
        await asyncio.wait_for(linked.wait(), GUARD)
        await publish(broker, EVENT_TOPIC, njet_event("generateCertificate", "new.test"))
        await asyncio.wait_for(applied.get(), GUARD)
        reader.release.set()
        await asyncio.wait_for(resynced.wait(), GUARD)
        assert sorted(s.domain for s in runtime.load()) == ["a.test", "b.test", "new.test"]
        assert on_disk(prefix) == ["a.test", "b.test", "new.test"]

        # a later resync: NJet deletes b.test, clearing its record only after our read
        await publish(broker, "/ins/srv/s_new", srv_record("new.test"), retain=True)
        reader.rearm()
        rebuild = asyncio.ensure_future(svc.refresh_runtime())
        await asyncio.wait_for(reader.read.wait(), GUARD)
        await publish(broker, EVENT_TOPIC, njet_event("deleteCertificate", "b.test"))
        await asyncio.wait_for(applied.get(), GUARD)
        reader.release.set()
        await asyncio.wait_for(rebuild, GUARD)
        assert sorted(s.domain for s in runtime.load()) == ["a.test", "new.test"]
        assert on_disk(prefix) == ["a.test", "new.test"]
    finally:
        reader.release.set()
        svc.stop(signal.SIGTERM)
        done, _ = await asyncio.wait([run], timeout=GUARD)
        if run not in done:
            run.cancel()
    assert run.result() == 0
