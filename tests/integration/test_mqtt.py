"""MqttListener and read_retained against a real Mosquitto (TCP and unix socket)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from controller.adapters.mqtt.listener import MqttListener, read_retained
from controller.errors import ConfigError, TemporaryError
from controller.events import EventAction, NjetEvent, parse_srv_record
from tests.contract import CONTRACT
from tests.fixtures.mqtt import MosquittoBroker, mqtt_publish

TOPIC = "/automaticcertificatemanagement/event/request"
GENERATE = json.dumps(
    {
        "action": "generateCertificate",
        "domains": [
            {"server_name": ["a.test", "www.a.test"], "server_addr": ["127.0.0.1:8443"],
             "ca_type": "acme"},
        ],
    }
).encode()  # fmt: skip
DELETE = b'{"action":"deleteCertificate","domains":[{"server_name":["dyn.test"],"server_addr":[]}]}'


class Recorder:
    def __init__(self) -> None:
        self.events: asyncio.Queue[NjetEvent] = asyncio.Queue()
        self.links: asyncio.Queue[bool] = asyncio.Queue()

    def on_event(self, event: NjetEvent) -> None:
        self.events.put_nowait(event)

    def on_link(self, up: bool) -> None:
        self.links.put_nowait(up)

    async def next_event(self) -> NjetEvent:
        return await asyncio.wait_for(self.events.get(), 5.0)

    async def next_link(self) -> bool:
        return await asyncio.wait_for(self.links.get(), 15.0)


async def publish(address: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
    await asyncio.to_thread(mqtt_publish, address, topic, payload, retain=retain)


def make_listener(address: str, rec: Recorder, topic: str = TOPIC) -> MqttListener:
    return MqttListener(
        address,
        on_event=rec.on_event,
        on_connection_change=rec.on_link,
        topic=topic,
        reconnect_min=0.05,
        reconnect_max=0.5,
    )


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_listener_delivers_njet_events_and_ignores_the_empty_clearing_payload(
    mosquitto: MosquittoBroker, transport: str
) -> None:
    address = mosquitto.unix_address if transport == "unix" else mosquitto.tcp_address
    rec = Recorder()
    listener = make_listener(address, rec)
    await listener.start()
    try:
        assert await rec.next_link() is True
        assert listener.connected
        # NJet's sequence: empty retained payload, then the event.
        await publish(address, TOPIC, b"", retain=True)
        await publish(address, TOPIC, GENERATE)
        event = await rec.next_event()
        assert event.action is EventAction.GENERATE
        assert event.domains[0].server_names == ("a.test", "www.a.test")
        assert event.domains[0].server_addrs == ("127.0.0.1:8443",)
        assert listener.events_received == 1
        assert rec.events.empty()
    finally:
        await listener.stop()
    assert not listener.connected
    assert await rec.next_link() is False


async def test_listener_counts_malformed_payloads_and_keeps_running(
    mosquitto: MosquittoBroker,
) -> None:
    rec = Recorder()
    listener = make_listener(mosquitto.unix_address, rec)
    await listener.start()
    try:
        await asyncio.wait_for(listener.wait_connected(), 10)
        for bad in (b"{not json", b'{"action":"renewEverything","domains":[]}', b"[1,2]"):
            await publish(mosquitto.unix_address, TOPIC, bad)
        await publish(mosquitto.unix_address, TOPIC, DELETE)
        event = await rec.next_event()
        assert event.action is EventAction.DELETE
        assert event.domains[0].server_addrs == ()
        assert listener.malformed_payloads == 3
        assert listener.connected
    finally:
        await listener.stop()


async def test_listener_survives_a_broker_restart_and_resubscribes(
    mosquitto: MosquittoBroker,
) -> None:
    rec = Recorder()
    listener = make_listener(mosquitto.unix_address, rec)
    await listener.start()
    try:
        assert await rec.next_link() is True
        await asyncio.to_thread(mosquitto.stop)
        assert await rec.next_link() is False
        assert not listener.connected
        await asyncio.to_thread(mosquitto.start)
        assert await rec.next_link() is True
        assert listener.connections == 2
        # The restarted broker kept no session (persistence off): only a resubscribe
        # makes this event arrive.
        await publish(mosquitto.unix_address, TOPIC, GENERATE)
        event = await rec.next_event()
        assert event.domains[0].server_names[0] == "a.test"
    finally:
        await listener.stop()


async def test_listener_keeps_trying_when_the_broker_is_down_at_start(
    mosquitto: MosquittoBroker,
) -> None:
    await asyncio.to_thread(mosquitto.stop)
    rec = Recorder()
    listener = make_listener(mosquitto.tcp_address, rec)
    await listener.start()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(listener.wait_connected(), 0.3)
        await asyncio.to_thread(mosquitto.start)
        assert await rec.next_link() is True
        await publish(mosquitto.tcp_address, TOPIC, GENERATE)
        assert (await rec.next_event()).action is EventAction.GENERATE
    finally:
        await listener.stop()


async def test_listener_over_tcp_on_the_machine_broker(machine_mqtt_address: str) -> None:
    topic = f"/njcm-test/{uuid.uuid4().hex}/event/request"
    rec = Recorder()
    listener = make_listener(machine_mqtt_address, rec, topic=topic)
    await listener.start()
    try:
        await asyncio.wait_for(listener.wait_connected(), 10)
        await publish(machine_mqtt_address, topic, GENERATE)
        assert (await rec.next_event()).domains[0].server_names[0] == "a.test"
    finally:
        await listener.stop()


def _contract_srv_adds() -> list[tuple[str, bytes]]:
    """The retained /ins/srv records NJet published in the recording (adds only)."""
    out = []
    for line in (CONTRACT / "mqtt-all-topics.jsonl").read_text().splitlines():
        msg = json.loads(line)
        if msg["topic"].startswith("/ins/srv/") and msg["retain"] and msg["payload"]:
            out.append((msg["topic"], json.dumps(msg["payload"]).encode()))
    return out


async def test_read_retained_returns_live_srv_records_and_omits_cleared_ones(
    mosquitto: MosquittoBroker,
) -> None:
    records = dict(_contract_srv_adds())
    assert len(records) >= 3
    for topic, payload in records.items():
        await publish(mosquitto.unix_address, topic, payload, retain=True)
    cleared = next(iter(records))
    await publish(mosquitto.unix_address, cleared, b"", retain=True)
    await publish(mosquitto.unix_address, "/ins/ssl/l_1", b'{"x":1}', retain=True)

    found = await read_retained(mosquitto.unix_address, "/ins/srv/#", settle=0.2)

    assert set(found) == set(records) - {cleared}
    for topic, payload in found.items():
        assert payload == records[topic]
    servers = {parse_srv_record(p) for p in found.values()}
    assert any(s is not None and s.server_name == "newport.test" and s.managed for s in servers)


async def test_read_retained_on_an_empty_filter_returns_nothing(mosquitto: MosquittoBroker) -> None:
    found = await read_retained(mosquitto.tcp_address, f"/empty/{uuid.uuid4().hex}/#", settle=0.1)
    assert found == {}


async def test_read_retained_raises_a_temporary_error_when_the_broker_is_down(
    tmp_path: Path,
) -> None:
    with pytest.raises(TemporaryError, match="cannot read retained"):
        await read_retained(f"unix:{tmp_path}/absent.sock", "/ins/srv/#", timeout=1.0)


async def test_stop_returns_promptly_while_a_connect_attempt_hangs() -> None:
    accepted = asyncio.Event()

    async def silent(_r: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
        accepted.set()  # never answers CONNECT

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rec = Recorder()
    listener = MqttListener(f"127.0.0.1:{port}", on_event=rec.on_event, connect_timeout=60)
    await listener.start()
    try:
        await asyncio.wait_for(accepted.wait(), 5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await listener.stop()
        assert loop.time() - started < 5
        assert not listener.connected
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:1883", "127.0.0.1:1883"),
        ("[::1]:1884", "[::1]:1884"),
        ("tcp://broker.test:1885", "broker.test:1885"),
        ("unix:/usr/local/njet/data/mosquitto.sock", "unix:/usr/local/njet/data/mosquitto.sock"),
    ],
)
def test_broker_addresses_are_parsed(address: str, expected: str) -> None:
    listener = MqttListener(address, on_event=lambda _e: None)
    assert listener.address == expected


@pytest.mark.parametrize("address", ["", "unix:", "localhost", "host:0", "host:99999", ":1883"])
def test_bad_broker_addresses_are_config_errors(address: str) -> None:
    with pytest.raises(ConfigError, match="MQTT address"):
        MqttListener(address, on_event=lambda _e: None)


async def test_a_record_published_while_the_retained_records_are_read_counts(
    mosquitto: MosquittoBroker,
) -> None:
    """NJet sends the event first and updates the record after: a record that lands during the
    read (forwarded live, without the retain flag) is the current one, not a stray message."""
    base = f"/ins/srv/{uuid.uuid4().hex}"
    await publish(mosquitto.unix_address, f"{base}/old", b'{"v":1}', retain=True)
    reading = asyncio.ensure_future(
        read_retained(mosquitto.unix_address, f"{base}/#", settle=1.0, timeout=5.0))
    await asyncio.sleep(0.3)  # subscribed, the retained batch delivered, still settling
    await publish(mosquitto.unix_address, f"{base}/new", b'{"v":2}', retain=True)
    await publish(mosquitto.unix_address, f"{base}/old", b'{"v":3}', retain=True)
    found = await reading
    assert found == {f"{base}/old": b'{"v":3}', f"{base}/new": b'{"v":2}'}
