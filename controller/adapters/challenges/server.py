"""Listening plumbing shared by the challenge responders (solvers.py, tls_alpn.py).

`parse_listen_address` reads the config's address spelling (":80", "127.0.0.1:5002",
"[::1]:5002"); `SharedListener` runs an asyncio server only while someone holds it (reference
count), so concurrent orders share one listener and the last cleanup closes it. Bind failures
become ConfigError (no permission, address not on this host) or TemporaryError (in use).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from controller.errors import ConfigError, TemporaryError
from controller.logs import log_event

HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"

BIND_RETRY_SECONDS = 5.0


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """":80" -> (None, 80) (all interfaces); "h:p", "[v6]:p" -> (host, port); "80" -> (None, 80)."""
    text = address.strip()
    if text.isdigit():
        host, port_text = "", text
    elif text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise ConfigError(f"bad listen address {address!r}: expected [ipv6]:port")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ConfigError(f"bad listen address {address!r}: expected host:port or :port")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"bad listen address {address!r}: port must be 0-65535")
    return (host or None), int(port_text)


ServerFactory = Callable[[str | None, int], Awaitable[asyncio.Server]]


class SharedListener:
    """A server that runs while at least one user holds it (reference count)."""

    def __init__(self, address: str, purpose: str, factory: ServerFactory) -> None:
        self.address = address
        self._host, self._port = parse_listen_address(address)
        self._purpose = purpose
        self._factory = factory
        self._server: asyncio.Server | None = None
        self._users = 0
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def ports(self) -> list[int]:
        """The bound ports (useful with port 0); empty while not running."""
        if self._server is None:
            return []
        return sorted({int(s.getsockname()[1]) for s in self._server.sockets})

    async def acquire(self) -> None:
        async with self._lock:
            if self._server is None:
                self._server = await self._start()
                log_event(
                    f"{self._purpose} listening", level=logging.DEBUG, address=self.address
                )
            self._users += 1

    async def release(self) -> None:
        async with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                await self._stop()

    async def release_quietly(self) -> None:
        """release() for a solver's cleanup, which must never raise: failures are logged."""
        try:
            await self.release()
        except Exception as exc:
            log_event(f"closing the {self._purpose} failed", level=logging.ERROR,
                      error=repr(exc))

    async def close(self) -> None:
        async with self._lock:
            self._users = 0
            await self._stop()

    async def _start(self) -> asyncio.Server:
        """Bind, retrying a busy port for a few seconds: on `njet -s reload` the previous
        instance may still hold it while it shuts down."""
        deadline = time.monotonic() + BIND_RETRY_SECONDS
        while True:
            try:
                return await self._bind_once()
            except TemporaryError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)

    async def _bind_once(self) -> asyncio.Server:
        where = f"{self.address} ({self._purpose})"
        try:
            return await self._factory(self._host, self._port)
        except PermissionError:
            raise ConfigError(
                f"cannot listen on {where}: permission denied (ports below 1024 need root or"
                " CAP_NET_BIND_SERVICE)"
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise TemporaryError(f"cannot listen on {where}: address already in use") from None
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
            raise TemporaryError(f"cannot listen on {where}: {exc.strerror or exc}") from None

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
            log_event(f"{self._purpose} closed", level=logging.DEBUG, address=self.address)


