"""The data-plane listening sockets (http plain/TLS and stream), kept across reloads.

Called by master.py after a (re)load and after dyn servers came or went. Like NJet, a socket
that is still wanted stays open across a reload (no refused connections); handlers look up the
current generation for every connection. Bind failures raise SimConfError with nginx's wording.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from functools import partial

from njetsim.conf import SimConfError, StreamMap, StreamServer
from njetsim.httpd import serve_connection
from njetsim.runtime import Block, Runtime
from njetsim.stream import serve_stream
from njetsim.tlsctx import listen_context

log = logging.getLogger("njetsim.listeners")
Key = tuple[str, int]


class Listeners:
    def __init__(self, current: Callable[[], Runtime]) -> None:
        self._current = current
        self._servers: dict[Key, tuple[str, asyncio.Server]] = {}

    def wanted(self) -> dict[Key, str]:
        rt = self._current()
        out = {key: "tls" if tls else "http" for key, tls in rt.wanted_sockets().items()}
        for s in rt.conf.stream_servers:
            out[(s.listen.host, s.listen.port)] = "stream"
        return out

    def kinds(self) -> dict[str, str]:
        return {f"{h}:{p}": kind for (h, p), (kind, _s) in self._servers.items()}

    async def sync(self) -> None:
        wanted = self.wanted()
        for key, (kind, server) in list(self._servers.items()):
            if wanted.get(key) != kind:
                server.close()
                del self._servers[key]
                log.info("closed listening socket %s:%d", *key)
        for key, kind in wanted.items():
            if key not in self._servers:
                self._servers[key] = (kind, await self._open(key, kind))
                log.info("listening on %s:%d (%s)", key[0], key[1], kind)

    async def _open(self, key: Key, kind: str) -> asyncio.Server:
        host, port = key
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if kind == "stream":
            handler = partial(serve_stream, partial(self._stream_for, key))
            ssl_ctx = None
        else:
            handler = partial(serve_connection, partial(self._block_for, key))
            ssl_ctx = listen_context(partial(self._tls_for, key)) if kind == "tls" else None
        try:
            if ssl_ctx is None:
                return await asyncio.start_server(handler, host, port, family=family,
                                                  reuse_address=True)
            return await asyncio.start_server(handler, host, port, family=family, ssl=ssl_ctx,
                                              reuse_address=True, ssl_handshake_timeout=10)
        except OSError as exc:
            raise SimConfError(f'[emerg] bind() to {host}:{port} failed ({exc.errno}: '
                               f"{exc.strerror})") from None

    def _block_for(self, key: Key, host: str | None) -> Block | None:
        return self._current().pick(key[0], key[1], host)

    def _tls_for(self, key: Key, sni: str | None) -> ssl.SSLContext | None:
        return self._current().select_tls(key[0], key[1], sni)

    def _stream_for(self, key: Key) -> tuple[StreamServer, tuple[StreamMap, ...]] | None:
        conf = self._current().conf
        server = next((s for s in conf.stream_servers
                       if (s.listen.host, s.listen.port) == key), None)
        return None if server is None else (server, conf.stream_maps)

    def close(self) -> None:
        for _kind, server in self._servers.values():
            server.close()
        self._servers.clear()
