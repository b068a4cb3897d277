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

`SolverSet` maps each ChallengeType to a factory (built in app.py, or by AcmeIssuer.from_config)
and builds a type's solver on its first use, so no tls-alpn-01 solver exists, let alone listens,
until a certificate validated that way is ordered; `close` closes the ones it built. The
dns-01 entry (ChallengeType.DNS) exists only when the TOML has a [dns] section.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from controller.adapters.challenges.server import (
    HTTP_01,
    TLS_ALPN_01,
    SharedListener,
    parse_listen_address,
)
from controller.adapters.challenges.tls_alpn import LocalTlsAlpn01Solver
from controller.errors import ConfigError
from controller.logs import log_event
from controller.model import ChallengeType
from controller.ports import ChallengeSolver

__all__ = [
    "DNS_01",
    "HTTP_01",
    "TLS_ALPN_01",
    "LocalHttp01Solver",
    "LocalTlsAlpn01Solver",
    "SharedListener",
    "SolverFactory",
    "SolverSet",
    "parse_listen_address",
]

SolverFactory = Callable[[], ChallengeSolver]
DNS_01 = "dns-01"  # solved by adapters/dns/solver.py (Dns01Solver), built by app.py
ACME_TYPE = {ChallengeType.HTTP: HTTP_01, ChallengeType.TLS: TLS_ALPN_01,
             ChallengeType.DNS: DNS_01}


class SolverSet:
    """One solver per challenge type, each built by its factory on first use."""

    def __init__(self, factories: Mapping[ChallengeType, SolverFactory]) -> None:
        self._factories = dict(factories)
        self._built: dict[ChallengeType, ChallengeSolver] = {}

    @classmethod
    def of(cls, solver: ChallengeSolver) -> SolverSet:
        """A set of one solver, already built, for the challenge type it solves."""
        for kind, acme_type in ACME_TYPE.items():
            if acme_type == solver.challenge_type:
                out = cls({kind: lambda: solver})
                out._built[kind] = solver
                return out
        raise ConfigError(f"no challenge type solves {solver.challenge_type!r}")

    @property
    def types(self) -> frozenset[ChallengeType]:
        return frozenset(self._factories)

    def get(self, kind: ChallengeType) -> ChallengeSolver:
        solver = self._built.get(kind)
        if solver is None:
            factory = self._factories.get(kind)
            if factory is None:
                offered = ", ".join(sorted(t.value for t in self._factories)) or "none"
                hint = " (dns-01 needs a [dns] section)" if kind is ChallengeType.DNS else ""
                raise ConfigError(f"no {ACME_TYPE[kind]} solver is configured (offered: "
                                  f"{offered}){hint}")
            solver = self._built[kind] = factory()
        return solver

    def built(self) -> tuple[ChallengeSolver, ...]:
        """The solvers built so far (for start-up chores and close)."""
        return tuple(self._built.values())

    async def close(self) -> None:
        for solver in self.built():
            await solver.close()

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
