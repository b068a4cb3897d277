"""The status page at `/` and the admin API's request guards that are not about the token.

Routes added by `add_page_routes` (server.build_app calls it):
  GET /                    static/index.html
  GET /static/{name}       page.js and page.css (a fixed list: no path is ever built from
                           the request)
  GET /favicon.ico         204 (so a browser's automatic request is not an error)
These files hold no data: the page's script fetches everything from the JSON API
(/healthz, /api/v1/cert, /api/v1/plan, /api/v1/events, POST …/renew) with the token the user
typed once, kept in the tab's sessionStorage and sent as `Authorization: Bearer` (no cookie,
so another site cannot make the browser act with it). They are shipped as package data
(pyproject.toml [tool.setuptools.package-data]) and read once through importlib.resources.

Guards (server.py's middleware runs them for every route, before the token check):
- `host_refusal`: the `Host` header must name this server: 127.0.0.1 (any loopback address),
  localhost, [::1], the configured bind host, or the address the connection arrived on.
  Anything else (a DNS name an attacker points at 127.0.0.1: DNS rebinding) is refused. The
  port is not compared, so an SSH tunnel or a port forward to another local port still works.
  /healthz and /metrics are exempt: Prometheus and health checks name the host as they like
  (a DNS name, a container name), and neither gives a browser anything to act with.
- `exposed_refusal`: without a token, a bind that is not loopback serves only /healthz (its
  public fields) and /metrics; the page and the API are refused with the reason.
`SECURITY_HEADERS` go on every answer (server.py adds them in on_response_prepare).
"""

from __future__ import annotations

import functools
import ipaddress
from importlib import resources

from aiohttp import hdrs, web

_FILES = {  # request path -> (file in static/, content type)
    "/": ("index.html", "text/html"),
    "/static/page.js": ("page.js", "text/javascript"),
    "/static/page.css": ("page.css", "text/css"),
}
PUBLIC_PATHS = frozenset([*_FILES, "/favicon.ico"])
"""Paths answered without the token: the page's own files, which hold no data."""

EXPOSED_OPEN = frozenset({"/healthz", "/metrics"})
"""What a tokenless, non-loopback bind still serves (supervisors and scrapers)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_LOOPBACK_NAMES = frozenset({"localhost"})


@functools.cache
def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


async def _serve(request: web.Request) -> web.StreamResponse:
    name, ctype = _FILES[request.path]
    return web.Response(body=_static(name), content_type=ctype, charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def _favicon(_request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


def add_page_routes(app: web.Application) -> None:
    for path in _FILES:
        app.router.add_get(path, _serve, allow_head=False)
    app.router.add_get("/favicon.ico", _favicon, allow_head=False)


async def add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the headers of SECURITY_HEADERS on every answer."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def is_loopback(host: str) -> bool:
    """`host` (a name or an IP literal, without brackets) is this machine's loopback."""
    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host part of a Host header: "[::1]:2000" -> "::1", "a.test:80" -> "a.test"."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    name, _, _port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    return name.rstrip(".")


def _same_ip(a: str, b: str) -> bool:
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped is not None:
        x = x.ipv4_mapped
    if isinstance(y, ipaddress.IPv6Address) and y.ipv4_mapped is not None:
        y = y.ipv4_mapped
    return x == y


def host_refusal(request: web.Request, bind_host: str) -> str | None:
    """Why the request's Host header is refused (None: it names this server)."""
    given = request.headers.get(hdrs.HOST)
    if given is None:
        return None  # HTTP/1.0 or a raw client: no browser sends a request without it
    name = _host_name(given)
    if not name:
        return None
    if is_loopback(name) or name == bind_host.lower().rstrip("."):
        return None
    if _same_ip(name, bind_host):
        return None
    local = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(local, tuple) and local and _same_ip(name, str(local[0])):
        return None
    shown = given if len(given) <= 100 else given[:100] + "…"
    ours = ", ".join(["127.0.0.1", "localhost", "[::1]"]
                     + ([_bracket(bind_host)] if bind_host and not _wildcard(bind_host) else [])
                     + ["this server's IP address"])
    return (f"Host {shown!r} is not an address of this admin API (use {ours}); other names "
            "are refused against DNS rebinding")


def exposed_refusal(path: str, bind: str) -> str | None:
    """Why `path` is refused on a tokenless non-loopback bind (None: it is served)."""
    if path in EXPOSED_OPEN:
        return None
    return (f"the admin API is bound to {bind} without [admin] token: the status page and the "
            "API answer without a token only on a loopback address; set [admin] token (and "
            "send it as Authorization: Bearer) or bind to 127.0.0.1")


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "*")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
