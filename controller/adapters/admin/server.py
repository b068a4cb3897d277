"""The admin HTTP API (aiohttp): certificates, plan, reconcile/renew triggers, health, metrics.

Routes (NJet's docs print `/api/v1//cert…` with a double slash; both spellings work):
  GET    /api/v1/cert                  {"certificates": [CertView…]}
  GET    /api/v1/cert/{domain}         CertView | 404
  DELETE /api/v1/cert/{domain}         200 {deleted, still_desired, quarantined_to, message}
                                       | 404 (the pair moves to quarantine/, never unlinked);
                                       `?revoke=true` revokes at the CA first (502: the CA
                                       refused, nothing deleted)
  POST   /api/v1/cert/{domain}/renew   202 (requested, or already pending) | 404 (not a
                                       desired name) | 409 (refused: the hourly cap, or a
                                       young certificate without `?force=true`)
  GET    /api/v1/plan                  the backend's plan JSON
  GET    /api/v1/events?domain=&limit= {"events": [...]}: the event log's last `limit` (100,
                                       at most 1000) events, oldest first; of `domain` only
  POST   /api/v1/reconcile             202
  POST   /api/v1/gc/confirm            200 {released, count, stored} | 409 (nothing held)
  GET    /healthz                      backend.health(); 503 when it says "ok": false
  GET    /metrics                      Prometheus text format 0.0.4
  GET    /  (and /static/page.js, .css) the status page (page.py): HTML/JS/CSS without data,
                                       served without the token; the data comes from the API
Every call of a mutating route (POST, DELETE) that reaches its handler is written to the event
log through backend.record_event, with the peer's address and the answer's status and reason.
Errors are JSON `{"error": "<message>"}`. With a token set every route except /healthz needs
`Authorization: Bearer <token>` (401 otherwise; constant-time compare); /healthz stays open
for supervisors: without the token (when one is set) it shows only ports.PUBLIC_HEALTH_FIELDS.
Without a token, a bind that is not loopback answers only /healthz (public fields) and
/metrics; the page and /api/* are refused (403). Every route checks the `Host` header against
the bind address first (421 for a foreign name: no DNS rebinding) and every answer carries
page.SECURITY_HEADERS (CSP, nosniff, no-referrer).

Path safety: routing of /api/* is done on the raw request target (routes.py; aiohttp decodes
`%2e%2e` / `%2F` before its own matching). Any `%` or a `.`/`..` segment in the path is
answered 400 before a handler runs, and `{domain}` must pass controller.paths.validate_store_key
(lowercase hostname ≤ 253 chars, no `/`, `..`, unicode; a dual block's second certificate is
`<name>@ecc` / `<name>@rsa`, no other `@`), so nothing outside the store can be named.
Non-ASCII bytes are refused by aiohttp's HTTP parser (400) before reaching the app.

This module builds the app (build_app: the guard middleware, /healthz, /metrics, the page;
the /api/v1/* handlers are in routes.py) and serves it.
`start_admin()` binds in the background with retries when the port is busy (NJet starts the
next copilot ~0.1 s after SIGTERM of the old one, which may still hold the port); never
fatal. Connections are accepted by limits.ConnectionGate, not by aiohttp: at most
`[admin] maxConnections` at once, a header-read timeout and aiohttp's keep-alive timeout as
the idle timeout (limits.py says how). Called by the controller's run loop; its backend
implements `ports.AdminBackend` (the contract, and the CertView / DeleteResult values it
answers with, live in controller/ports/admin.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from controller.adapters.admin import page
from controller.adapters.admin.limits import ConnectionGate, ConnectionLimits
from controller.adapters.admin.routes import Api, ApiError, error_response, json_response
from controller.errors import ConfigError
from controller.ports import PUBLIC_HEALTH_FIELDS, AdminBackend
from controller.ports import CertView as CertView  # re-exported: admin_backend.py imports it here
from controller.ports import DeleteResult as DeleteResult  # likewise
from controller.promtext import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="njet-cert-manager"'}


def _unsafe_path(raw_path: str) -> str | None:
    path = raw_path.split("?", 1)[0]
    if "%" in path:
        return "percent-encoded characters are not accepted in the path"
    if any(seg in (".", "..") for seg in path.split("/")):
        return "'.' and '..' path segments are not accepted"
    return None


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def build_app(backend: AdminBackend, token: str, *, host: str = "127.0.0.1") -> web.Application:
    """The aiohttp application; `token` "" disables authentication; `host` is the bind host
    (the Host header check allows it; without a token a non-loopback one serves no data)."""
    api = Api(backend)
    exposed = not token and not page.is_loopback(host)
    bind = f"[{host}]" if ":" in host else host or "*"

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.raw_path.split("?", 1)[0]
        open_route = path == "/healthz" or (path in page.PUBLIC_PATHS
                                            and request.method == "GET")
        try:
            # machine endpoints are scraped by whatever name the scraper uses; /metrics still
            # needs the token when one is set, /healthz then shows only its public fields
            if (path not in page.EXPOSED_OPEN
                    and (why := page.host_refusal(request, host)) is not None):
                raise ApiError(421, why)
            if exposed and (why := page.exposed_refusal(path, bind)) is not None:
                raise ApiError(403, why)
            if token and not open_route and not _authorized(request, token):
                raise ApiError(401, "missing or wrong bearer token", **_CHALLENGE)
            if (why := _unsafe_path(request.raw_path)) is not None:
                raise ApiError(400, why)
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, str(exc), **exc.headers)
        except web.HTTPException as exc:
            return error_response(exc.status, exc.reason,
                                  **{k: v for k, v in exc.headers.items()
                                     if k.lower() == "allow"})  # fmt: skip
        except Exception:
            log.exception("admin API: %s %s failed", request.method, request.path[:200])
            return error_response(500, "internal error; see the controller log")

    async def healthz(request: web.Request) -> web.StreamResponse:
        health = backend.health()
        if exposed or (token and not _authorized(request, token)):
            health = {k: v for k, v in health.items() if k in PUBLIC_HEALTH_FIELDS}
        return json_response(health, 503 if health.get("ok") is False else 200)

    async def metrics(_request: web.Request) -> web.StreamResponse:
        text = backend.metrics_text()
        return web.Response(body=text.encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    app = web.Application(middlewares=[guard])
    app.on_response_prepare.append(page.add_security_headers)
    page.add_page_routes(app)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_route("*", "/api/{tail:.*}", api.dispatch)
    return app


# --- serving -------------------------------------------------------------------------------


def parse_listen_address(address: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all interfaces) → (host, port)."""
    text = address.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :].rstrip("/")
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"admin address {address!r} is not host:port (e.g. 127.0.0.1:2000)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


async def _bind(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, type_, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class AdminServer:
    """A running (or still binding) admin API."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, max_delay: float,
                 limits: ConnectionLimits) -> None:  # fmt: skip
        self._runner = runner
        self.host = host
        self.requested_port = port
        self.port: int | None = None  # the bound port, once bound
        self.bound = asyncio.Event()
        self._max_delay = max_delay
        self._task: asyncio.Task[None] | None = None
        self._last_error: OSError | None = None
        assert runner.server is not None, "runner.setup() first"
        self.gate = ConnectionGate(runner.server, limits)
        self._sock: socket.socket | None = None
        self._serving: asyncio.Task[None] | None = None

    async def _try_bind(self) -> bool:
        try:
            sock = await _bind(self.host, self.requested_port)
        except OSError as exc:
            self._last_error = exc
            return False
        self._sock = sock
        self._serving = asyncio.create_task(self.gate.serve(sock), name="admin-accept")
        self.port = int(sock.getsockname()[1])
        self.bound.set()
        log.info("admin API listening on %s:%d", self.host or "*", self.port)
        return True

    async def _retry(self) -> None:
        delay, waited, next_note = 0.1, 0.0, 30.0
        while not await self._try_bind():
            if waited >= next_note:
                log.warning("admin API: still cannot bind %s:%d after %.0fs: %s",
                            self.host, self.requested_port, waited, self._last_error)  # fmt: skip
                next_note *= 2
            await asyncio.sleep(delay)  # waiting for the old process to release the port
            waited += delay
            delay = min(delay * 2, self._max_delay)

    async def start(self) -> None:
        if await self._try_bind():
            return
        log.warning("admin API: cannot bind %s:%d yet (%s); retrying in the background",
                    self.host, self.requested_port, self._last_error)  # fmt: skip
        self._task = asyncio.create_task(self._retry(), name="admin-bind-retry")

    async def wait_bound(self) -> None:
        """Return once the port is bound (wrap in asyncio.wait_for for a limit)."""
        await self.bound.wait()

    async def stop(self) -> None:
        for task in (self._task, self._serving):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._serving = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        await self._runner.cleanup()
        self.gate.abort_all()


async def start_admin(
    backend: AdminBackend, address: str, token: str, *, max_retry_delay: float = 2.0,
    limits: ConnectionLimits | None = None,
) -> AdminServer:
    """Serve the admin API on `address`; a busy port is retried in the background forever.

    `limits` (default: the config defaults) caps connections and times out slow or idle ones.
    """
    host, port = parse_listen_address(address)
    if not token and not page.is_loopback(host):
        log.warning("admin API on %s without a token: only /healthz and /metrics answer there; "
                    "set [admin] token to use the page and the API", address)  # fmt: skip
    limits = limits or ConnectionLimits()
    runner = web.AppRunner(build_app(backend, token, host=host), access_log=None,
                           shutdown_timeout=1.0,
                           keepalive_timeout=limits.idle_timeout)  # fmt: skip
    await runner.setup()
    server = AdminServer(runner, host, port, max_delay=max_retry_delay, limits=limits)
    await server.start()
    return server
