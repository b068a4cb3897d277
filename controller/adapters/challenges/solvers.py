"""ACME challenge solving: the controller's own http-01 server (a `ports.ChallengeSolver`).

Called by adapters/acme/client.py (AcmeIssuer): for every pending authorization it calls
`solver.present(domain, token, key_authorization)`, answers the challenge, and finally
`solver.cleanup(...)` with the same arguments. The NJet-proxied wrapper
(challenges/njet_http01.py) implements the same Protocol and delegates to `LocalHttp01Solver`.
Listening plumbing is in challenges/server.py; the tls-alpn-01 solver is in
challenges/tls_alpn.py (re-exported here).

`LocalHttp01Solver(address)` serves GET /.well-known/acme-challenge/<token> on `address`
(":80" = every interface, "127.0.0.1:8099", "[::1]:8099") with the key authorization. It never
looks at the Host header (NJet's proxy sends Host = the upstream address), answers any number of
concurrent and repeated requests (a CA validates several times) and says 404 for unknown tokens.
The listener exists only while at least one challenge is presented: concurrent orders share it
(a reference count); the last cleanup closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from controller.adapters.challenges.server import (
    HTTP_01,
    TLS_ALPN_01,
    SharedListener,
    parse_listen_address,
)
from controller.adapters.challenges.tls_alpn import LocalTlsAlpn01Solver
from controller.logs import log_event

__all__ = [
    "HTTP_01",
    "TLS_ALPN_01",
    "LocalHttp01Solver",
    "LocalTlsAlpn01Solver",
    "SharedListener",
    "parse_listen_address",
]

CHALLENGE_PATH = "/.well-known/acme-challenge/"
_READ_TIMEOUT = 10.0
_MAX_HEAD = 16 * 1024


class LocalHttp01Solver:
    """http-01 answered by the controller's own HTTP server on `address`."""

    challenge_type: str = HTTP_01

    def __init__(self, address: str = ":80") -> None:
        self._tokens: dict[str, str] = {}
        self._listener = SharedListener(address, "http-01 challenge server", self._serve)

    @property
    def address(self) -> str:
        return self._listener.address

    @property
    def ports(self) -> list[int]:
        return self._listener.ports

    async def present(self, domain: str, token: str, key_authorization: str) -> None:
        self._tokens[token] = key_authorization
        try:
            await self._listener.acquire()
        except BaseException:
            self._tokens.pop(token, None)
            raise
        log_event("http-01 challenge presented", level=logging.DEBUG, domain=domain)

    async def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        if self._tokens.get(token) == key_authorization:
            del self._tokens[token]
        await self._listener.release_quietly()

    async def close(self) -> None:
        self._tokens.clear()
        await self._listener.close()

    async def _serve(self, host: str | None, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._handle, host, port, reuse_address=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
            status, body, method = self._respond(head)
            reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Not Allowed"}[status]
            headers = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("ascii")
            writer.write(headers if method == "HEAD" else headers + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2)

    def _respond(self, head: bytes) -> tuple[int, bytes, str]:
        if len(head) > _MAX_HEAD:
            return 400, b"request too large\n", "GET"
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, b"bad request\n", "GET"
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, b"only GET\n", method
        path = urlsplit(target).path  # origin-form or absolute-form; the host part is ignored
        if path.startswith(CHALLENGE_PATH):
            key_authorization = self._tokens.get(path[len(CHALLENGE_PATH) :])
            if key_authorization is not None:
                return 200, key_authorization.encode("ascii"), method
        return 404, b"no such challenge\n", method
