"""A TCP forwarder that can fake network trouble between the controller and a server it
talks to (PostgreSQL, a broker, a CA): a partition, its healing, a cut connection.

`TcpProxy(target_host, target_port)` listens on 127.0.0.1:<free port> (`port`) at once and
forwards every connection to the target. It runs its own event loop in a daemon thread, so
it is driven the same way from sync and async tests; every method returns once it is in
effect:
- `blackhole()`: a partition. Nothing is forwarded any more in either direction and nothing
  more is read (the kernel buffers fill, so senders eventually block); connections stay
  open and hang. New connections are accepted but not connected upstream.
- `heal()`: forwarding resumes: held bytes flow, held new connections are connected.
- `cut()`: every current connection is aborted (both sides see a reset).
- `close()`: cut() and stop listening (also on leaving a `with` block).
`connections` is how many are open, `accepted` how many were accepted in all.

Used by the fleet outage tests (tests/integration/test_fleet_harness.py and others).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 65536


class _Link:
    """One proxied connection: the client side, the upstream side once connected."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    """See the module docstring."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.accepted = 0
        self._links: dict[asyncio.Task[None], _Link] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"tcpproxy->{target_host}:{target_port}")
        self._thread.start()
        self._open = self._call(self._make_event())
        self._server = self._call(asyncio.start_server(self._accept, host, port))
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._closed = False

    @staticmethod
    async def _make_event() -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        return event

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self._port)

    @property
    def connections(self) -> int:
        return len(self._links)

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    # -- controls -----------------------------------------------------------------------

    def blackhole(self) -> None:
        async def run() -> None:
            self._open.clear()

        self._call(run())

    def heal(self) -> None:
        async def run() -> None:
            self._open.set()

        self._call(run())

    def cut(self) -> None:
        self._call(self._cut())

    async def _cut(self) -> None:
        tasks = list(self._links)
        for task, link in list(self._links.items()):
            link.abort()
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def run() -> None:
            self._server.close()
            await self._cut()
            await self._server.wait_closed()

        try:
            self._call(run())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._loop.is_running():
                self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- the proxy itself (runs in the proxy's loop) ------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # our own task, not the one start_server makes of a coroutine callback: cancelling
        # that one makes Python 3.11's asyncio log a spurious error
        link = _Link(writer)
        task = asyncio.create_task(self._serve(reader, writer, link))
        self._links[task] = link
        self.accepted += 1
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._links.pop(task, None)  # an error _serve did not expect is logged by asyncio

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     link: _Link) -> None:
        try:
            await self._open.wait()  # a partition: the upstream connect waits for heal()
            try:
                up_reader, up_writer = await asyncio.open_connection(self.target_host,
                                                                     self.target_port)
            except OSError:
                link.abort()  # the target refuses: so does the proxy (the client sees a reset)
                return
            link.upstream = up_writer
            pumps = [asyncio.create_task(self._pump(reader, up_writer)),
                     asyncio.create_task(self._pump(up_reader, writer))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # a reset on either side: the finally closes the other
        finally:
            self._close(link)

    @staticmethod
    def _close(link: _Link) -> None:
        for w in (link.client, link.upstream):
            if w is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    w.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while True:
            await self._open.wait()
            data = await src.read(CHUNK)
            await self._open.wait()  # what was read when the partition began is held
            if not data:
                if dst.can_write_eof():
                    with contextlib.suppress(OSError, RuntimeError):
                        dst.write_eof()
                return
            dst.write(data)
            await dst.drain()
