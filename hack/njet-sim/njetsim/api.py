"""The ctrl API listener (NJet's `dyn_module_api`) and the sim-only control socket.

Called by master.py. Routes, statuses and content types as recorded: GET/PUT /api/v1/ssl
(other methods 500), GET /api/v1/config, /api/v1/config/ssl, /api/v1/config/http_log,
/api/v1/dyn_loc (POST add / PUT del, else 404), /api/v1/dyn_srv, anything else under /api 404.
Bodies are compact JSON with a bare `Content-Type: application/json` (or text/plain where NJet
says so). Other paths get the ctrl conf's `location … { return … }`. `/__sim/…` (control.py) is
served on this listener and on `<prefix>/data/njet-sim.sock`, which stays up while the API
listener is "down" (a fault that closes the TCP socket: connection refused).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from njetsim.conf import Listen, LocationConf, SimConfError
from njetsim.context import Reply, SimContext
from njetsim.dynapi import NOT_FOUND, dyn_loc, dyn_srv
from njetsim.httpd import match_location
from njetsim.sslapi import put_ssl

log = logging.getLogger("njetsim.api")
SERVER_ERROR = Reply(500, {"code": 500, "msg": "server error"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def to_response(reply: Reply) -> web.Response:
    body = json.dumps(reply.body, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=reply.status,
                        headers={"Content-Type": reply.content_type})


async def route(sim: SimContext, method: str, path: str, raw: bytes) -> Reply:
    path = path.rstrip("/") or "/"
    if path == "/api/v1/ssl":
        if method == "GET":
            return Reply(200, sim.runtime.ssl_doc())
        if method == "PUT":
            return await put_ssl(sim, raw)
        return SERVER_ERROR
    gets = {
        "/api/v1/config": lambda: ["njt_http_kv_module", "http_log"],
        "/api/v1/config/ssl": sim.runtime.ssl_doc,
        "/api/v1/config/http_log": sim.runtime.http_log_doc,
    }
    if path in gets:
        return Reply(200, gets[path]()) if method == "GET" else SERVER_ERROR
    if path == "/api/v1/dyn_loc":
        return await dyn_loc(sim, method, raw)
    if path == "/api/v1/dyn_srv":
        return await dyn_srv(sim, method, raw)
    return NOT_FOUND


def _remove_stale(path: Path) -> None:
    path.unlink(missing_ok=True)


class ApiServer:
    """The TCP ctrl listener plus the unix control socket, both served by aiohttp."""

    def __init__(self, sim: SimContext, control: Handler, locations: Callable[[], tuple[
            LocationConf, ...]]) -> None:
        self.sim = sim
        self.control = control
        self.locations = locations
        self.tcp: web.AppRunner | None = None
        self.tcp_listen: Listen | None = None
        self.unix: web.AppRunner | None = None
        self._reopen: asyncio.TimerHandle | None = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/__sim/"):
            return await self.control(request)
        if path == "/api" or path.startswith("/api/"):
            if self.sim.faults.slow > 0:
                await asyncio.sleep(self.sim.faults.slow)
            raw = await request.read()
            reply = await route(self.sim, request.method, path, raw)
            log.info("%s %s -> %d %s", request.method, path, reply.status,
                     reply.body.get("code", "") if isinstance(reply.body, dict) else "")
            return to_response(reply)
        loc = match_location(list(self.locations()), path)
        if loc is not None and loc.return_code:
            return web.Response(body=(loc.return_text or "").encode(), status=loc.return_code,
                                headers={"Content-Type": "text/plain"})
        return to_response(NOT_FOUND)

    def _app(self, handler: Handler) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handler)
        return app

    async def start_tcp(self, listen: Listen | None) -> None:
        await self.stop_tcp()
        self.tcp_listen = listen
        if listen is None:
            return
        runner = web.AppRunner(self._app(self._dispatch), access_log=None,
                               handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, listen.host, listen.port, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            raise SimConfError(f"[emerg] bind() to {listen.text} failed ({exc.errno}: "
                               f"{exc.strerror})") from None
        self.tcp = runner

    async def stop_tcp(self) -> None:
        if self.tcp is not None:
            runner, self.tcp = self.tcp, None
            await runner.cleanup()

    async def set_down(self, seconds: float | None) -> None:
        """Close the API socket (connection refused); reopen after `seconds` if given."""
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        listen = self.tcp_listen
        await self.stop_tcp()
        self.tcp_listen = listen
        if seconds is not None:
            loop = asyncio.get_running_loop()
            self._reopen = loop.call_later(
                seconds, lambda: loop.create_task(self.set_up()))

    async def set_up(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self.tcp is None and self.tcp_listen is not None:
            await self.start_tcp(self.tcp_listen)

    async def start_unix(self, path: Path) -> None:
        _remove_stale(path)
        runner = web.AppRunner(self._app(self.control), access_log=None, handle_signals=False)
        await runner.setup()
        await web.UnixSite(runner, str(path)).start()
        self.unix = runner

    async def close(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
        await self.stop_tcp()
        if self.unix is not None:
            await self.unix.cleanup()
            self.unix = None
