"""The status page's server side over real HTTP (adapters/admin/page.py through build_app):
its files, the Host check against DNS rebinding, the tokenless non-loopback refusal, the
security headers, and what the shipped page files may not contain. The page in a browser is
tests/e2e/test_status_page.py."""

from __future__ import annotations

import re
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from controller.adapters.admin import page
from controller.adapters.admin.page import SECURITY_HEADERS
from controller.adapters.admin.server import build_app
from controller.ports import PUBLIC_HEALTH_FIELDS
from tests.integration.test_healthz import backend

TOKEN = "page-token"
Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(token: str = "", host: str = "127.0.0.1") -> str:
        srv = TestServer(build_app(backend(), token, host=host), host="127.0.0.1")
        await srv.start_server()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.port}"

    yield start
    for srv in servers:
        await srv.close()


async def fetch(url: str, *, method: str = "GET", host: str | None = None,
                token: str | None = None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    headers = {"Host": host} if host else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as s, s.request(method, url, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def test_the_page_files_are_served_without_the_token_and_the_data_is_not(
    serve: Serve,
) -> None:
    base = await serve(TOKEN)
    for path, ctype in (("/", "text/html"), ("/static/page.js", "text/javascript"),
                        ("/static/page.css", "text/css")):
        status, headers, body = await fetch(base + path)
        assert status == 200 and headers["Content-Type"].startswith(ctype), path
        assert body and b"a.test" not in body
    assert (await fetch(base + "/favicon.ico"))[0] == 204
    assert (await fetch(base + "/api/v1/cert"))[0] == 401
    assert (await fetch(base + "/static/other.js"))[0] == 401  # not a page file: the token
    assert (await fetch(base + "/static/other.js", token=TOKEN))[0] == 404
    assert (await fetch(base + "/", method="POST"))[0] == 401
    status, _, body = await fetch(base + "/api/v1/cert", token=TOKEN)
    assert status == 200 and orjson.loads(body)["certificates"] is not None


@pytest.mark.parametrize("host", [
    None, "127.0.0.1", "127.0.0.1:2000", "localhost:2000", "LOCALHOST.:9", "[::1]:2000",
    "[::1]", "127.0.0.2:2000", "localhost:8080",
])  # fmt: skip
async def test_hosts_naming_this_server_are_served(serve: Serve, host: str | None) -> None:
    base = await serve()
    assert (await fetch(base + "/api/v1/cert", host=host))[0] == 200


@pytest.mark.parametrize("host", [
    "evil.test", "evil.test:2000", "127.0.0.1.evil.test", "localhost.evil.test:2000",
    "[::2]:2000", "10.0.0.1:2000", "admin.example.test:2000",
])  # fmt: skip
async def test_other_hosts_are_refused_on_every_route(serve: Serve, host: str) -> None:
    base = await serve(TOKEN)
    for path in ("/", "/static/page.js", "/api/v1/cert", "/api/v1/plan"):
        status, headers, body = await fetch(base + path, host=host, token=TOKEN)
        assert status == 421, (host, path, status)
        assert headers["Content-Type"].startswith("application/json")
        error = orjson.loads(body)["error"]
        assert "DNS rebinding" in error and "127.0.0.1" in error
    assert (await fetch(base + "/api/v1/cert/a.test/renew", method="POST", host=host,
                        token=TOKEN))[0] == 421


async def test_scrapers_and_health_checks_may_name_the_host_as_they_like(serve: Serve) -> None:
    """Prometheus names a target by DNS or container name: /metrics and /healthz skip the Host
    check, and /metrics still needs the token."""
    base = await serve(TOKEN)
    for host in ("njcm:2000", "node-1.example.test:2000"):
        assert (await fetch(base + "/metrics", host=host, token=TOKEN))[0] == 200
        assert (await fetch(base + "/metrics", host=host))[0] == 401
        assert (await fetch(base + "/healthz", host=host))[0] in (200, 503)


async def test_the_configured_bind_host_is_accepted(serve: Serve) -> None:
    base = await serve(TOKEN, host="admin.example.test")
    assert (await fetch(base + "/api/v1/cert", host="admin.example.test:2000",
                        token=TOKEN))[0] == 200
    assert (await fetch(base + "/api/v1/cert", host="evil.test", token=TOKEN))[0] == 421


async def test_a_tokenless_non_loopback_bind_serves_only_health_and_metrics(
    serve: Serve,
) -> None:
    base = await serve("", host="0.0.0.0")
    for method, path in (("GET", "/"), ("GET", "/static/page.js"), ("GET", "/api/v1/cert"),
                         ("GET", "/api/v1/plan"), ("POST", "/api/v1/cert/a.test/renew"),
                         ("DELETE", "/api/v1/cert/a.test"), ("POST", "/api/v1/reconcile")):
        status, _, body = await fetch(base + path, method=method)
        assert status == 403, (method, path, status)
        assert "[admin] token" in orjson.loads(body)["error"]
    status, _, body = await fetch(base + "/healthz")
    assert status in (200, 503) and set(orjson.loads(body)) <= PUBLIC_HEALTH_FIELDS
    assert (await fetch(base + "/metrics"))[0] == 200
    # the same bind with a token: the token decides, as on loopback
    with_token = await serve(TOKEN, host="0.0.0.0")
    assert (await fetch(with_token + "/api/v1/cert", token=TOKEN))[0] == 200
    assert (await fetch(with_token + "/"))[0] == 200


async def test_every_answer_carries_the_security_headers(serve: Serve) -> None:
    base = await serve(TOKEN)
    for path in ("/", "/api/v1/cert", "/healthz", "/nothing-here"):
        _, headers, _ = await fetch(base + path)
        for name, value in SECURITY_HEADERS.items():
            assert headers[name] == value, (path, name)
    assert SECURITY_HEADERS["Content-Security-Policy"].startswith("default-src 'self'")


def test_the_shipped_page_has_no_inline_script_style_or_html_injection() -> None:
    static = resources.files("controller.adapters.admin").joinpath("static")
    html = static.joinpath("index.html").read_text()
    js = "\n".join(line.partition("//")[0] for line in  # the code, without its comments
                   static.joinpath("page.js").read_text().splitlines())
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/page.js" defer>']
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+\s*=", html), "an inline event handler"
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                      "eval(", "new Function", "http://", "https://", "localStorage",
                      "document.cookie"):
        assert forbidden not in js, forbidden
    assert "http" not in static.joinpath("page.css").read_text()


def test_every_page_file_is_package_data_so_a_wheel_carries_it() -> None:
    root = Path(__file__).resolve().parents[2]
    doc = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = doc["tool"]["setuptools"]["package-data"]["controller.adapters.admin"]
    files = sorted(Path(page.__file__).with_name("static").iterdir())
    assert [f.name for f in files] == ["index.html", "page.css", "page.js"]
    for f in files:
        assert any(fnmatch(f"static/{f.name}", p) for p in patterns), f.name
