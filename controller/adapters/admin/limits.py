"""Connection limits for the admin API: a cap, a header-read timeout, quiet accept errors.

aiohttp has neither a header-read timeout nor a cap on concurrent connections, so server.py
does not hand its listening socket to aiohttp. `ConnectionGate.serve(sock)` runs the accept
loop itself and gives each admitted connection to aiohttp's protocol (`AppRunner.server`)
through a thin wrapper protocol:

- at most `max_connections` are open at once; one more is answered `503` and closed at
  once, before any of its bytes are read (its file descriptor is freed immediately);
- a connection must deliver a complete request header block (up to the blank line) within
  `header_timeout` of being opened, and each later request on a keep-alive connection within
  `header_timeout` of its first byte; otherwise it is closed (a slowloris client);
- `idle_timeout` is aiohttp's own keep-alive timeout (server.py passes it to the AppRunner):
  a connection with no request in progress is closed after that long;
- accept errors (EMFILE when the process is out of file descriptors, ENFILE, ENOBUFS) pause
  accepting for ACCEPT_PAUSE seconds and are logged once per LOG_INTERVAL with a count, as
  are refusals and header timeouts: a flood writes a few lines, never one per connection.

Request bodies are framed by Content-Length so that body bytes never count as a new header;
a request with Transfer-Encoding (or an unreadable length) ends the header tracking of its
connection, which stays bounded by `idle_timeout`. HTTP semantics stay aiohttp's: this
module never answers a request, it only counts bytes and closes connections.
Used by server.py (AdminServer) only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

LOG_INTERVAL = 60.0  # seconds between two lines about the same repeating event
ACCEPT_PAUSE = 0.5  # seconds without accepting after an accept error (out of descriptors)
MAX_HEAD = 64 * 1024  # header bytes kept to find Content-Length; beyond, only the end is sought
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n"
         b"Retry-After: 1\r\n\r\n")  # fmt: skip
# errors of one half-open connection, not of the listening socket: accept the next one at once
_PEER_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR}


@dataclass(frozen=True)
class ConnectionLimits:
    """`[admin] maxConnections`, `headerTimeout` and `idleTimeout`, in connections / seconds."""

    max_connections: int = 256
    header_timeout: float = 10.0
    idle_timeout: float = 60.0


class Throttled:
    """One log line per `interval` for an event that may repeat thousands of times a second.

    The first event is logged at once; later ones within the interval are only counted, and
    the next line after the interval says how many there were.
    """

    def __init__(self, message: str, *, level: int = logging.WARNING,
                 interval: float = LOG_INTERVAL) -> None:  # fmt: skip
        self.message = message
        self.level = level
        self.interval = interval
        self.total = 0
        self._unlogged = 0
        self._last: float | None = None

    def hit(self, detail: object = "") -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return
        first, count, self._unlogged, self._last = self._last is None, self._unlogged, 0, now
        text = f"admin API: {self.message}" + (f": {detail}" if detail != "" else "")
        if first:
            log.log(self.level, "%s (logged at most once every %.0fs from now on, with a count)",
                    text, self.interval)  # fmt: skip
        else:
            log.log(self.level, "%s (%d times since the last such line)", text, count)


class HeaderWatch:
    """Where a connection's byte stream is: inside a request header, a body, or between requests.

    `feed(data)` returns True while a header block has started (or, right after the connection
    opened, is expected) and is not complete yet.
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self._body_left = 0
        self._head_cut = False  # header bytes were dropped (over MAX_HEAD): length unknown
        self._tracking = True
        self.in_header = True  # a fresh connection owes its first header

    def feed(self, data: bytes) -> bool:
        view = memoryview(data)
        while view and self._tracking:
            if self._body_left:
                take = min(self._body_left, len(view))
                self._body_left -= take
                view = view[take:]
                continue
            self.in_header = True
            start = max(0, len(self._head) - 3)  # "\r\n\r\n" may straddle two chunks
            self._head += view
            end = self._head.find(b"\r\n\r\n", start)
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    del self._head[: len(self._head) - 3]  # keep what may begin the end marker
                    self._head_cut = True
                return self.in_header
            rest = bytes(self._head[end + 4 :])
            self._finish(bytes(self._head[:end]))
            view = memoryview(rest)
        return self.in_header

    def _finish(self, head: bytes) -> None:
        cut, self._head, self._head_cut, self.in_header = self._head_cut, bytearray(), False, False
        length = _body_length(head)
        if cut or length is None:
            self._tracking = False  # framing unknown: only idle_timeout applies from here on
        else:
            self._body_left = length


def _body_length(head: bytes) -> int | None:
    """Content-Length of a header block (0 when absent); None when framing is not by length."""
    lengths: set[bytes] = set()
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"transfer-encoding" or (not sep and line.strip()):
            return None
        if key == b"content-length":
            lengths.add(value.strip())
    if not lengths:
        return 0
    if len(lengths) > 1 or not (only := lengths.pop()).isdigit() or len(only) > 15:
        return None  # aiohttp answers 400 and closes
    return int(only)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, plus the header timer; the gate counts it."""

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol) -> None:
        self._gate = gate
        self._inner = inner
        self._watch = HeaderWatch()
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._gate.open.add(self)
        self._arm()
        self._inner.connection_made(transport)

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._gate.limits.header_timeout, self._header_late)

    def _header_late(self) -> None:
        self._timer = None
        self._gate.header_timeouts.hit(f"no complete request header within "
                                       f"{self._gate.limits.header_timeout:g}s")  # fmt: skip
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._watch.feed(data):
            if self._timer is None:
                self._arm()
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gate.open.discard(self)
        self.transport = None
        self._inner.connection_lost(exc)


class ConnectionGate:
    """The accept loop of one listening socket, in front of aiohttp's protocol factory."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], limits: ConnectionLimits) -> None:
        self._factory = factory
        self.limits = limits
        self.open: set[_Guarded] = set()
        self.refused = Throttled(f"connection refused: {limits.max_connections} connections "
                                 "are open ([admin] maxConnections)")  # fmt: skip
        self.header_timeouts = Throttled("connection closed", level=logging.INFO)
        self.accept_errors = Throttled("cannot accept connections", level=logging.ERROR)

    async def serve(self, sock: socket.socket) -> None:
        """Accept on `sock` (non-blocking, listening) until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _peer = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in _PEER_ERRNOS:
                    continue
                self.accept_errors.hit(exc.strerror or exc)  # EMFILE, ENFILE, ENOBUFS, ENOMEM
                await asyncio.sleep(ACCEPT_PAUSE)
                continue
            if len(self.open) >= self.limits.max_connections:
                self._refuse(conn)
                continue
            try:
                conn.setblocking(False)
                await loop.connect_accepted_socket(lambda: _Guarded(self, self._factory()), conn)
            except Exception as exc:  # one connection never ends the accept loop
                conn.close()
                self.accept_errors.hit(getattr(exc, "strerror", None) or exc)

    def _refuse(self, conn: socket.socket) -> None:
        self.refused.hit()
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(_BUSY)
        conn.close()

    def abort_all(self) -> None:
        """Drop every connection still open (after aiohttp's own graceful shutdown)."""
        for guarded in list(self.open):
            if guarded.transport is not None:
                guarded.transport.abort()
