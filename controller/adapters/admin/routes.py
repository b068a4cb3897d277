"""The admin API's /api/v1/* routes: the raw request target resolved to a route and a
validated `{domain}`, the handlers, and the event-log record of every mutating call.

Used by server.py, whose build_app mounts `Api.dispatch` on /api/{tail} behind its guard
middleware (Host, token and path checks first; it answers an ApiError with its status) and
whose handlers share json_response / error_response. Routing is done on the raw request
target, not by aiohttp (which decodes `%2e%2e` / `%2F` before its own matching); NJet's
double-slash spelling `/api/v1//cert…` is the same route, and one trailing slash is tolerated.
`{domain}` must pass controller.paths.validate_store_key (lowercase hostname ≤ 253 chars, no
`/`, `..`, unicode; a dual block's second certificate is `<name>@ecc` / `<name>@rsa`, no other
`@`), so nothing outside the store can be named. Every call of a mutating route (POST, DELETE)
that reaches its handler is written to the event log through backend.record_event, with the
peer's address and the answer's status and reason. The handlers ask a ports.AdminBackend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from controller.errors import ConfigError, ControllerError
from controller.paths import validate_store_key
from controller.ports import AdminBackend

_API = "/api/v1/"
_Handler = Callable[[web.Request, str | None], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, message: str, **headers: str) -> web.Response:
    return json_response({"error": message}, status, **headers)


class ApiError(Exception):
    def __init__(self, status: int, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def _domain(segment: str) -> str:
    try:
        return validate_store_key(segment)  # a dual block's second certificate: <name>@<slot>
    except ConfigError:
        shown = segment if len(segment) <= 80 else segment[:80] + "…"
        raise ApiError(400, f"not a valid certificate name: {shown!r}") from None


class Api:
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
            raise ApiError(404, f"no such route: {path[:100]}")
        parts = path[len(_API) :].split("/")
        if parts and parts[-1] == "" and len(parts) > 1:
            parts = parts[:-1]  # one trailing slash is tolerated
        if parts[0] != "cert" or len(parts) == 1:
            key = "/".join(parts)
            if key not in self.routes:
                raise ApiError(404, f"no such route: {path[:100]}")
            return key, None
        domain = _domain(parts[1])
        key = "/".join(["cert", "{d}", *parts[2:]])
        if key not in self.routes:
            raise ApiError(404, f"no such route: {path[:100]}")
        return key, domain

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        key, domain = self.resolve(request.raw_path)
        methods = self.routes[key]
        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            raise ApiError(405, f"{request.method} is not allowed here (use {allowed})",
                            Allow=allowed)  # fmt: skip
        if request.method not in _MUTATING:
            return await handler(request, domain)
        action = _action(key, request.method)
        try:
            response = await handler(request, domain)
        except ApiError as exc:
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
        return json_response({"certificates": await self.b.list_certs()})

    async def get_cert(self, _r: web.Request, d: str | None) -> web.StreamResponse:
        assert d is not None
        view = await self.b.get_cert(d)
        if view is None:
            raise ApiError(404, f"no certificate for {d} in the store")
        return json_response(view)

    async def delete_cert(self, r: web.Request, d: str | None) -> web.StreamResponse:
        assert d is not None
        revoke = _flag(r, "revoke")
        try:
            res = await self.b.delete_cert(d, revoke=revoke)
        except ControllerError as exc:
            if not revoke:
                raise
            raise ApiError(502, f"{d} not deleted: revoking it failed: {exc}") from None
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
            return json_response(body, 404)
        return json_response(body)

    async def renew(self, r: web.Request, d: str | None) -> web.StreamResponse:
        assert d is not None
        result = await self.b.force_renew(d, force=_flag(r, "force"))
        if result.outcome == "unknown":
            raise ApiError(404, f"{d} is not a desired certificate; nothing to renew")
        if result.outcome == "refused":
            raise ApiError(409, f"renewal of {d} refused: {result.reason}")
        status = "already pending" if result.outcome == "pending" else "renewal requested"
        return json_response({"domain": d, "status": status}, 202)

    async def plan(self, _r: web.Request, _d: str | None) -> web.StreamResponse:
        plan = await self.b.plan_json()
        if isinstance(plan, bytes | bytearray):
            return web.Response(body=bytes(plan), content_type="application/json")
        return json_response(plan)

    async def events(self, r: web.Request, _d: str | None) -> web.StreamResponse:
        domain = r.query.get("domain", "").strip().lower().rstrip(".")
        raw = r.query.get("limit", "").strip() or str(_EVENTS_DEFAULT)
        if not raw.isdigit() or not 1 <= int(raw) <= _EVENTS_MAX:
            raise ApiError(400, f"query parameter 'limit' must be a number from 1 to "
                                 f"{_EVENTS_MAX}")
        events = await self.b.recent_events(_domain(domain) if domain else None, int(raw))
        return json_response({"events": events})

    async def reconcile(self, _r: web.Request, _d: str | None) -> web.StreamResponse:
        self.b.request_reconcile()
        return json_response({"status": "reconcile requested"}, 202)

    async def gc_confirm(self, r: web.Request, _d: str | None) -> web.StreamResponse:
        res = await self.b.gc_confirm(by=f"admin {_peer(r)}")
        if not res.released:
            raise ApiError(409, "the deletion guard holds no deletion; nothing to confirm")
        return json_response({"released": list(res.released), "count": len(res.released),
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
        raise ApiError(400, f"query parameter {name!r} must be true or false")
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

