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

Path safety: routing of /api/* is done here on the raw request target (aiohttp decodes
`%2e%2e` / `%2F` before its own matching). Any `%` or a `.`/`..` segment in the path is
answered 400 before a handler runs, and `{domain}` must pass controller.paths.validate_store_key
(lowercase hostname ≤ 253 chars, no `/`, `..`, unicode; a dual block's second certificate is
`<name>@ecc` / `<name>@rsa`, no other `@`), so nothing outside the store can be named.
Non-ASCII bytes are refused by aiohttp's HTTP parser (400) before reaching the app.

`start_admin()` binds in the background with retries when the port is busy (NJet starts the
next copilot ~0.1 s after SIGTERM of the old one, which may still hold the port); never
fatal. Connections are accepted by limits.ConnectionGate, not by aiohttp: at most
`[admin] maxConnections` at once, a header-read timeout and aiohttp's keep-alive timeout as
the idle timeout (limits.py says how). Called by the controller's run loop; its backend
implements `ports.AdminBackend` (the contract, and the CertView / DeleteResult values it
answers with, live in controller/ports.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from controller.adapters.admin import page
from controller.adapters.admin.limits import ConnectionGate, ConnectionLimits
from controller.errors import ConfigError, ControllerError
from controller.paths import validate_store_key
from controller.ports import PUBLIC_HEALTH_FIELDS, AdminBackend
from controller.ports import CertView as CertView  # re-exported: admin_backend.py imports it here
from controller.ports import DeleteResult as DeleteResult  # likewise
from controller.promtext import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

_API = "/api/v1/"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="njet-cert-manager"'}
_Handler = Callable[[web.Request, str | None], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, **headers: str) -> web.Response:
    return _json({"error": message}, status, **headers)


class _ApiError(Exception):
    def __init__(self, status: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def _domain(segment: str) -> str:
    try:
        return validate_store_key(segment)  # a dual block's second certificate: <name>@<slot>
    except ConfigError:
        shown = segment if len(segment) <= 80 else segment[:80] + "…"
        raise _ApiError(400, f"not a valid certificate name: {shown!r}") from None


class _Api:
    def __init__(self, backend: AdminBackend) -> None:
        self.b = backend
        # (route key) -> {method: handler}; the handler gets the validated domain or None.
        self.routes: dict[str, dict[str, _Handler]] = {
            "cert": {"GET": self.list_certs},
            "cert/{d}": {"GET": self.get_cert, "DELETE": self.delete_cert},
            "cert/{d}/renew": {"POST": self.renew},
            "plan": {"GET": self.plan},
            "events": {"GET": self.events},
            "reconcile": {"POST": self.reconcile},
            "gc/confirm": {"POST": self.gc_confirm},
        }

    def resolve(self, raw_path: str) -> tuple[str, str | None]:
        path = raw_path.split("?", 1)[0]
        if path.startswith("/api/v1//"):
            path = _API + path[len("/api/v1//") :]
        if not path.startswith(_API):
            raise _ApiError(404, f"no such route: {path[:100]}")
        parts = path[len(_API) :].split("/")
        if parts and parts[-1] == "" and len(parts) > 1:
            parts = parts[:-1]  # one trailing slash is tolerated
        if parts[0] != "cert" or len(parts) == 1:
            key = "/".join(parts)
            if key not in self.routes:
                raise _ApiError(404, f"no such route: {path[:100]}")
            return key, None
        domain = _domain(parts[1])
        key = "/".join(["cert", "{d}", *parts[2:]])
        if key not in self.routes:
            raise _ApiError(404, f"no such route: {path[:100]}")
        return key, domain

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        key, domain = self.resolve(request.raw_path)
        methods = self.routes[key]
        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            raise _ApiError(405, f"{request.method} is not allowed here (use {allowed})",
                            Allow=allowed)  # fmt: skip
        if request.method not in _MUTATING:
            return await handler(request, domain)
        action = _action(key, request.method)
        try:
            response = await handler(request, domain)
        except _ApiError as exc:
            self._record(request, action, domain, exc.status, str(exc))
            raise
        except Exception as exc:
            self._record(request, action, domain, 500, f"internal error: {type(exc).__name__}")
            raise
        self._record(request, action, domain, response.status, _summary(response))
        return response

    def _record(self, request: web.Request, action: str, domain: str | None, status: int,
                text: str) -> None:
        self.b.record_event(peer=_peer(request), action=action, domain=domain,
                            result=str(status), detail=text or None)

    async def list_certs(self, _r: web.Request, _d: str | None) -> web.StreamResponse:
        return _json({"certificates": await self.b.list_certs()})

    async def get_cert(self, _r: web.Request, d: str | None) -> web.StreamResponse:
        assert d is not None
        view = await self.b.get_cert(d)
        if view is None:
            raise _ApiError(404, f"no certificate for {d} in the store")
        return _json(view)

    async def delete_cert(self, r: web.Request, d: str | None) -> web.StreamResponse:
        assert d is not None
        revoke = _flag(r, "revoke")
        try:
            res = await self.b.delete_cert(d, revoke=revoke)
        except ControllerError as exc:
            if not revoke:
                raise
            raise _ApiError(502, f"{d} not deleted: revoking it failed: {exc}") from None
        body: dict[str, Any] = {
            "domain": d,
            "deleted": res.deleted,
            "still_desired": res.still_desired,
        }
        if res.quarantined_to:
            body["quarantined_to"] = res.quarantined_to
        if revoke:
            body["revoked"] = res.revoked
        if res.still_desired:
            body["message"] = (
                f"{d} is still wanted by NJet's configuration or events; "
                "it will be issued again on the next reconcile pass"
            )
        if not res.deleted:
            body["error"] = f"no certificate for {d} in the store"
            return _json(body, 404)
        return _json(body)

    async def renew(self, r: web.Request, d: str | None) -> web.StreamResponse:
        assert d is not None
        result = await self.b.force_renew(d, force=_flag(r, "force"))
        if result.outcome == "unknown":
            raise _ApiError(404, f"{d} is not a desired certificate; nothing to renew")
        if result.outcome == "refused":
            raise _ApiError(409, f"renewal of {d} refused: {result.reason}")
        status = "already pending" if result.outcome == "pending" else "renewal requested"
        return _json({"domain": d, "status": status}, 202)

    async def plan(self, _r: web.Request, _d: str | None) -> web.StreamResponse:
        plan = await self.b.plan_json()
        if isinstance(plan, bytes | bytearray):
            return web.Response(body=bytes(plan), content_type="application/json")
        return _json(plan)

    async def events(self, r: web.Request, _d: str | None) -> web.StreamResponse:
        domain = r.query.get("domain", "").strip().lower().rstrip(".")
        raw = r.query.get("limit", "").strip() or str(_EVENTS_DEFAULT)
        if not raw.isdigit() or not 1 <= int(raw) <= _EVENTS_MAX:
            raise _ApiError(400, f"query parameter 'limit' must be a number from 1 to "
                                 f"{_EVENTS_MAX}")
        events = await self.b.recent_events(_domain(domain) if domain else None, int(raw))
        return _json({"events": events})

    async def reconcile(self, _r: web.Request, _d: str | None) -> web.StreamResponse:
        self.b.request_reconcile()
        return _json({"status": "reconcile requested"}, 202)

    async def gc_confirm(self, r: web.Request, _d: str | None) -> web.StreamResponse:
        res = await self.b.gc_confirm(by=f"admin {_peer(r)}")
        if not res.released:
            raise _ApiError(409, "the deletion guard holds no deletion; nothing to confirm")
        return _json({"released": list(res.released), "count": len(res.released),
                      "stored": res.stored,
                      "message": "released once: the next reconcile pass moves these "
                                 "certificates to quarantine/"})


_MUTATING = frozenset({"POST", "DELETE", "PUT", "PATCH"})
_EVENTS_DEFAULT, _EVENTS_MAX = 100, 1000
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def _flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (`?force=true`); absent is False, a bad value a 400."""
    values = request.query.getall(name, [])
    if not values:
        return False
    value = values[-1].strip().lower()
    if value not in _TRUE | _FALSE:
        raise _ApiError(400, f"query parameter {name!r} must be true or false")
    return value in _TRUE


def _action(key: str, method: str) -> str:
    """The event log's name of a mutating call: "renew", "delete", "reconcile", "gc confirm"."""
    if key == "cert/{d}":
        return method.lower()
    return key.removeprefix("cert/{d}/").replace("/", " ")


def _peer(request: web.Request) -> str:
    """The caller's address as "host:port" ("unknown" when the transport has none)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return request.remote or "unknown"


def _summary(response: web.StreamResponse) -> str:
    """What a JSON answer says in a few words: its "status", else its "error"."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes):
        return ""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(doc, dict):
        return ""
    text = doc.get("status") or doc.get("message") or doc.get("error") or ""
    return str(text)


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
    api = _Api(backend)
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
                raise _ApiError(421, why)
            if exposed and (why := page.exposed_refusal(path, bind)) is not None:
                raise _ApiError(403, why)
            if token and not open_route and not _authorized(request, token):
                raise _ApiError(401, "missing or wrong bearer token", **_CHALLENGE)
            if (why := _unsafe_path(request.raw_path)) is not None:
                raise _ApiError(400, why)
            return await handler(request)
        except _ApiError as exc:
            return _error(exc.status, str(exc), **exc.headers)
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason, **{k: v for k, v in exc.headers.items()
                                                     if k.lower() == "allow"})  # fmt: skip
        except Exception:
            log.exception("admin API: %s %s failed", request.method, request.path[:200])
            return _error(500, "internal error; see the controller log")

    async def healthz(request: web.Request) -> web.StreamResponse:
        health = backend.health()
        if exposed or (token and not _authorized(request, token)):
            health = {k: v for k, v in health.items() if k in PUBLIC_HEALTH_FIELDS}
        return _json(health, 503 if health.get("ok") is False else 200)

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
