"""http-01 through NJet: a dynamic `^~ /.well-known/acme-challenge/` location proxying to our
own challenge server, for hosts where NJet owns port 80 (`proxyHttpChallengeServerIp` set).

Called by the ACME issuer through the ChallengeSolver protocol (built in app.py). Locations
are shared per (listen, server): concurrent orders for names of the same block share one, the
last user removes it (after failures too). `remove_leftovers()` runs at start-up because NJet
keeps dynamic locations across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from controller.adapters.challenges.solvers import LocalHttp01Solver, parse_listen_address
from controller.adapters.njet.api import NjetClient
from controller.adapters.njet.wire import (
    NjetLocationExists,
    NjetLocationMissing,
    NjetNoServerForLocation,
)
from controller.errors import PermanentError
from controller.logs import log_event
from controller.njetmatch import ACME_CHALLENGE_PATH, challenge_server, has_location


def listen_string(ip: str, port: int) -> str:
    """NJet's spelling of a listen: "127.0.0.1:80", "[::1]:80", a bare "*"/"" → "0.0.0.0:80"."""
    ip = ip.strip()
    if ip in ("", "*"):
        ip = "0.0.0.0"
    if ":" in ip and not ip.startswith("["):
        ip = f"[{ip}]"
    return f"{ip}:{port}"


def upstream_url(address: str) -> str:
    """proxy_pass target for our challenge server; a wildcard host means 127.0.0.1."""
    host, port = parse_listen_address(address)
    if host in (None, "", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@dataclass
class NjetProxyHttp01Solver:
    local: LocalHttp01Solver
    njet: NjetClient
    listen_ip: str
    port: int
    upstream_address: str
    challenge_type: str = "http-01"
    _users: dict[tuple[str, str], int] = field(default_factory=dict)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    @property
    def addr_port(self) -> str:
        return listen_string(self.listen_ip, self.port)

    async def present(self, domain: str, token: str, key_authorization: str) -> None:
        await self.local.present(domain, token, key_authorization)
        try:
            await self._acquire(domain)
        except BaseException:
            await self.local.cleanup(domain, token, key_authorization)
            raise

    async def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        try:
            await self._release(domain)
        finally:
            await self.local.cleanup(domain, token, key_authorization)

    async def close(self) -> None:
        for (addr, name), users in list(self._users.items()):
            if users > 0:
                self._users[(addr, name)] = 1
                await self._release(name)
        await self.local.close()

    async def _acquire(self, domain: str) -> None:
        key = (self.addr_port, domain)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._users.get(key, 0) == 0:
                try:
                    await self.njet.add_location(addr_port=self.addr_port, server_name=domain,
                                                 proxy_pass=upstream_url(self.upstream_address))
                except NjetLocationExists:
                    if not await self._location_present(domain):
                        raise
                    log_event("challenge location already present; reusing it",
                              level=logging.DEBUG, domain=domain, listen=self.addr_port)
                except NjetNoServerForLocation:
                    # NJet looks the block up by exact listen + name, with no default server
                    raise PermanentError(
                        f"http-01 via NJet: no server for {domain} listens on {self.addr_port};"
                        f" add `server {{ listen {self.addr_port}; server_name {domain}; }}` to"
                        " njet.conf and reload NJet (the challenge location itself is added"
                        " automatically)"
                    ) from None
                log_event("challenge location added", domain=domain, listen=self.addr_port)
            self._users[key] = self._users.get(key, 0) + 1

    async def _release(self, domain: str) -> None:
        key = (self.addr_port, domain)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            users = self._users.get(key, 0) - 1
            if users > 0:
                self._users[key] = users
                return
            self._users.pop(key, None)
            with contextlib.suppress(NjetLocationMissing):
                await self.njet.del_location(addr_port=self.addr_port, server_name=domain)
            log_event("challenge location removed", domain=domain, listen=self.addr_port)

    async def _location_present(self, domain: str) -> bool:
        servers = await self.njet.http_log()
        server = challenge_server(domain, self.addr_port, servers)
        return server is not None and has_location(server)

    async def remove_leftovers(self) -> list[str]:
        """Delete challenge locations a previous run left on our listen (NJet keeps them)."""
        removed: list[str] = []
        for server in await self.njet.http_log():
            if self.addr_port not in server.listens or not has_location(server):
                continue
            for name in server.server_names[:1]:
                try:
                    await self.njet.del_location(addr_port=self.addr_port, server_name=name)
                    removed.append(f"{self.addr_port} {name} {ACME_CHALLENGE_PATH}")
                except NjetLocationMissing:
                    pass
        return removed
