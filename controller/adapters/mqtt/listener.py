"""MQTT surface: NJet's certificate events (listener) and the retained /ins/* records (reader).

`MqttListener` stays subscribed to `/automaticcertificatemanagement/event/request` on NJet's
broker (`unix:<prefix>/data/mosquitto.sock` or `host:port`), parses each payload with
controller.events and hands `NjetEvent`s to `on_event`. Zero-length payloads (NJet clears the
retained slot before every event) are ignored; malformed ones are logged and counted, never
fatal. The connection is supervised here: one fresh gmqtt client per connection, resubscribe
after every CONNACK, exponential backoff between attempts. Events are not retained, so
anything published while disconnected is lost: `on_connection_change(True)` fires once the
subscription is acknowledged, the moment for the caller to resync (`read_retained("/ins/srv/#")`
+ GET /api/v1/ssl).

`read_retained()` connects once, collects the retained messages of a topic filter until the
broker goes quiet, and disconnects. Called by the controller's run loop (cli/reconcile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import uuid
from collections.abc import Callable
from typing import Any

from gmqtt.mqtt.handler import MQTTConnectError

from controller.adapters.mqtt.unix import (
    BrokerAddress,
    connect_client,
    make_client,
    parse_broker_address,
)
from controller.errors import TemporaryError
from controller.events import EVENT_TOPIC, EventError, NjetEvent, parse_event

log = logging.getLogger(__name__)

_CONNECT_ERRORS = (OSError, MQTTConnectError, TimeoutError, ConnectionError, EOFError)
_SUBACK_FAILURE = 0x80


class _Subscribed:
    """Waits for the SUBACK of one subscribe call."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.granted: tuple[int, ...] = ()

    def __call__(self, _client: Any, _mid: Any, qos: Any, *_rest: Any) -> None:
        self.granted = tuple(int(q) for q in qos) if isinstance(qos, list | tuple) else (int(qos),)
        self.event.set()

    @property
    def ok(self) -> bool:
        return bool(self.granted) and all(q < _SUBACK_FAILURE for q in self.granted)


async def _close(client: Any) -> None:
    """Disconnect politely when possible; never raises."""
    conn = getattr(client, "_connection", None)
    try:
        if conn is not None and not conn.is_closing():
            await asyncio.wait_for(client.disconnect(), timeout=2.0)
        elif conn is not None:
            client._is_active = False
            await asyncio.wait_for(conn.close(), timeout=2.0)
    except Exception as exc:  # a dying connection may fail in many ways; it is gone anyway
        log.debug("MQTT: ignored error while closing the connection: %r", exc)


async def _subscribe(client: Any, topic: str, *, limit: float) -> None:
    waiter = _Subscribed()
    client.on_subscribe = waiter
    client.subscribe(topic, qos=0)
    await asyncio.wait_for(waiter.event.wait(), timeout=limit)
    if not waiter.ok:
        raise ConnectionError(f"broker refused the subscription to {topic!r} ({waiter.granted})")


class MqttListener:
    """Keeps a subscription to NJet's event topic; reports parsed events and link changes."""

    def __init__(
        self,
        address: str,
        *,
        on_event: Callable[[NjetEvent], None],
        on_connection_change: Callable[[bool], None] | None = None,
        topic: str = EVENT_TOPIC,
        client_id: str | None = None,
        keepalive: int = 30,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._address: BrokerAddress = parse_broker_address(address)
        self._on_event = on_event
        self._on_connection_change = on_connection_change
        self._topic = topic
        # Unique by default: NJet starts the next copilot while the old one may still be
        # connected, and a shared client id would make the broker kick them in turns.
        self._client_id = client_id or f"njcm-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._keepalive = keepalive
        self._reconnect_min = reconnect_min
        self._reconnect_max = max(reconnect_max, reconnect_min)
        self._connect_timeout = connect_timeout
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._connected = False
        self._connected_event = asyncio.Event()
        self.events_received = 0
        self.malformed_payloads = 0
        self.callback_errors = 0
        self.connections = 0

    @property
    def connected(self) -> bool:
        """True while connected and subscribed."""
        return self._connected

    @property
    def address(self) -> str:
        return str(self._address)

    async def start(self) -> None:
        """Start the supervised connection in the background; never waits for the broker."""
        if self._task is not None and not self._task.done():
            return
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name=f"mqtt-listener {self._address}")

    async def stop(self) -> None:
        """Disconnect and stop reconnecting; idempotent."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            # A connect attempt in progress does not watch the stop flag: cut it short.
            await asyncio.wait_for(asyncio.shield(task), timeout=2.0)
        except TimeoutError:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def wait_connected(self) -> None:
        """Return once connected and subscribed (wrap in asyncio.wait_for for a limit)."""
        await self._connected_event.wait()

    # --- internals ---------------------------------------------------------------------------

    def _set_connected(self, value: bool) -> None:
        if value == self._connected:
            return
        self._connected = value
        if value:
            self._connected_event.set()
        else:
            self._connected_event.clear()
        if self._on_connection_change is not None:
            try:
                self._on_connection_change(value)
            except Exception:
                self.callback_errors += 1
                log.exception("MQTT: on_connection_change(%s) failed", value)

    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        if topic != self._topic or not payload:
            return 0
        try:
            event = parse_event(bytes(payload))
        except EventError as exc:
            self.malformed_payloads += 1
            log.warning("MQTT: ignored a message on %s: %s", topic, exc)
            return 0
        if event is None:
            return 0
        self.events_received += 1
        try:
            self._on_event(event)
        except Exception:
            self.callback_errors += 1
            log.exception("MQTT: the event handler failed for a %s event", event.action)
        return 0

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _run(self) -> None:
        delay = self._reconnect_min
        failures = 0
        while not self._stop.is_set():
            lost = asyncio.Event()
            client = make_client(self._client_id, self._address, on_lost=lost.set)
            client.on_message = self._on_message
            try:
                await asyncio.wait_for(
                    connect_client(client, self._address, keepalive=self._keepalive),
                    timeout=self._connect_timeout,
                )
                if lost.is_set():
                    raise ConnectionError("connection lost right after CONNACK")
                await _subscribe(client, self._topic, limit=self._connect_timeout)
            except asyncio.CancelledError:
                await _close(client)
                raise
            except Exception as exc:  # whatever goes wrong, the listener must keep trying
                failures += 1
                expected = isinstance(exc, _CONNECT_ERRORS)
                noteworthy = not expected or failures in (1, 10) or failures % 100 == 0
                log.log(
                    logging.WARNING if noteworthy else logging.DEBUG,
                    "MQTT: cannot subscribe to %s at %s (attempt %d, next in %.1fs): %s",
                    self._topic, self._address, failures, delay, exc or type(exc).__name__,
                    exc_info=not expected,
                )  # fmt: skip
                await _close(client)
                await self._sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._reconnect_max)
                continue
            log.info("MQTT: subscribed to %s at %s", self._topic, self._address)
            failures = 0
            delay = self._reconnect_min
            self.connections += 1
            self._set_connected(True)
            stop_wait = asyncio.ensure_future(self._stop.wait())
            lost_wait = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                lost_wait.cancel()
                self._set_connected(False)
                await _close(client)
            if not self._stop.is_set():
                log.warning("MQTT: lost the connection to %s; reconnecting", self._address)


async def read_retained(
    address: str,
    topic_filter: str,
    *,
    settle: float = 0.3,
    timeout: float = 3.0,  # noqa: ASYNC109 (a total budget spanning connect + settle)
) -> dict[str, bytes]:
    """Every retained message under `topic_filter`, topic → payload (cleared records omitted).

    Collects until no message arrived for `settle` seconds after the SUBACK, or `timeout`
    seconds in all. A record published while we read (the broker forwards it live, without the
    retain flag) is newer than the retained copy and replaces it: NJet sends an event before it
    updates the record, so a read that ignored it would rebuild from a stale record (see
    adapters/store/runtime.py). Raises TemporaryError when the broker cannot be reached.
    """
    addr = parse_broker_address(address)
    found: dict[str, bytes] = {}
    last = asyncio.Event()

    def on_message(_c: Any, topic: str, payload: bytes, _q: int, _props: Any) -> int:
        if not payload:
            found.pop(topic, None)  # a record cleared while we read
        else:  # the retained copy, or a newer record published while we read
            found[topic] = bytes(payload)
        last.set()
        return 0

    client = make_client(f"njcm-read-{uuid.uuid4().hex[:12]}", addr)
    client.on_message = on_message
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await asyncio.wait_for(connect_client(client, addr), timeout=timeout)
        await _subscribe(client, topic_filter, limit=max(0.1, deadline - loop.time()))
        while (remaining := deadline - loop.time()) > 0:
            last.clear()
            try:
                await asyncio.wait_for(last.wait(), timeout=min(settle, remaining))
            except TimeoutError:
                break
    except _CONNECT_ERRORS as exc:
        raise TemporaryError(
            f"cannot read retained {topic_filter!r} from MQTT broker {addr}: "
            f"{exc or type(exc).__name__}"
        ) from exc
    finally:
        await _close(client)
    return found
