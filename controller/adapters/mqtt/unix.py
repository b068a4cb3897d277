"""gmqtt over TCP or a unix socket, without forking gmqtt.

NJet's embedded broker listens only on `<prefix>/data/mosquitto.sock`; gmqtt opens TCP only.
`make_client()` returns a gmqtt Client subclass whose connection factory uses
`loop.create_unix_connection` when the address is `unix:<path>`. gmqtt's own automatic
reconnect is disabled in that subclass (every loss is reported through `on_lost`): the
listener in adapters/mqtt/listener.py reconnects with its own backoff and a fresh client each time.

Called by adapters/mqtt/listener.py only. gmqtt internals used (checked against gmqtt 0.8.0):
`MQTTConnection(transport, protocol, clean_session, keepalive, package_handler=, logger=)`,
`MQTTProtocol(connection_state=, id_generator=)`, and the bookkeeping of
`Client._create_connection`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from gmqtt import Client
from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.protocol import MQTTProtocol

from controller.errors import ConfigError

UNIX_PREFIX = "unix:"


@dataclass(frozen=True)
class BrokerAddress:
    """`host:port` (TCP; `[v6]:port` too) or `unix:<path>`."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"{UNIX_PREFIX}{self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_broker_address(address: str) -> BrokerAddress:
    """Parse a broker address; raises ConfigError with the accepted forms."""
    text = address.strip()
    if text.startswith(UNIX_PREFIX):
        path = text[len(UNIX_PREFIX) :]
        if not path:
            raise ConfigError(f"MQTT address {address!r}: empty unix socket path")
        return BrokerAddress(unix_path=path)
    for scheme in ("tcp://", "mqtt://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"MQTT address {address!r} is neither host:port nor unix:<socket path>")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return BrokerAddress(host=host, port=int(port_text))


async def _open_unix(
    path: str,
    clean_session: bool,
    keepalive: int,
    *,
    connection_state: Any,
    package_handler: Any,
    logger: Any,
) -> Any:
    loop = asyncio.get_running_loop()
    factory = partial(
        MQTTProtocol,
        connection_state=connection_state,
        id_generator=package_handler.id_generator,
    )
    transport, protocol = await loop.create_unix_connection(factory, path)
    return MQTTConnection(
        transport, protocol, clean_session, keepalive, package_handler=package_handler,
        logger=logger,
    )  # fmt: skip


class _Client(Client):  # type: ignore[misc]
    """A one-connection gmqtt client: unix sockets allowed, no internal reconnect."""

    _njcm_unix_path: str | None = None
    _njcm_on_lost: Callable[[], None] | None = None

    async def _create_connection(
        self, host: Any, port: Any, ssl: Any, clean_session: Any, keepalive: Any
    ) -> Any:
        if self._njcm_unix_path is None:
            return await super()._create_connection(host, port, ssl, clean_session, keepalive)
        # The same bookkeeping as gmqtt's Client._create_connection, then a unix transport.
        self._exit_reconnecting_state()
        self._package_handler.clear_topics_aliases()
        self._connack_received.clear()
        self._connection_lost.clear()
        return await _open_unix(
            self._njcm_unix_path,
            clean_session,
            keepalive,
            connection_state=self._connection_state,
            package_handler=self._package_handler,
            logger=self._logger,
        )

    async def reconnect(self, delay: bool = False) -> None:
        # gmqtt calls this on every connection loss / refused CONNACK; the owner reconnects.
        if self._njcm_on_lost is not None:
            self._njcm_on_lost()


def make_client(
    client_id: str, address: BrokerAddress, *, on_lost: Callable[[], None] | None = None
) -> Any:
    """A gmqtt client for `address`; connect it with `connect_client`."""
    client = _Client(client_id, clean_session=True)
    client._njcm_unix_path = address.unix_path
    client._njcm_on_lost = on_lost
    return client


async def connect_client(client: Any, address: BrokerAddress, *, keepalive: int = 30) -> None:
    """Connect with MQTT 3.1.1 (what every mosquitto speaks); raises OSError / MQTTConnectError."""
    from gmqtt.mqtt.constants import MQTTv311

    host = address.host if address.unix_path is None else "localhost"
    port = address.port if address.unix_path is None else 0
    await client.connect(host, port, keepalive=keepalive, version=MQTTv311)
