"""The admin API over real HTTP, with a backend over a real lego-layout directory."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.admin.server import AdminServer, start_admin
from controller.certinfo import read_cert_info
from controller.metrics import ControllerMetrics
from controller.paths import StorePaths
from controller.ports import CertView, DeleteResult, GcConfirmResult, RenewResult
from tests.certbuilder import make_cert

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class DiskBackend:
    """A minimal AdminBackend over <tmp>/.lego/certificates; records every call."""

    def __init__(self, paths: StorePaths, desired: set[str]) -> None:
        self.paths = paths
        self.desired = desired
        self.calls: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str | None, str]] = []
        self.reconciles = 0
        self.metrics = ControllerMetrics()
        self.plan: bytes | dict[str, Any] = {"actions": [{"kind": "issue", "name": "new.test"}]}

    def _view(self, domain: str) -> CertView | None:
        crt = self.paths.cert(domain)
        if not crt.is_file():
            return None
        info = read_cert_info(crt.read_bytes())
        return CertView.from_info(
            domain, info, now=datetime.now(UTC), desired=domain in self.desired
        )

    async def list_certs(self) -> list[CertView]:
        self.calls.append(("list", ""))
        names = sorted(
            p.name[: -len(".crt")]
            for p in self.paths.certificates.glob("*.crt")
            if not p.name.endswith(".issuer.crt")
        )
        return [v for n in names if (v := self._view(n)) is not None]

    async def get_cert(self, domain: str) -> CertView | None:
        self.calls.append(("get", domain))
        return self._view(domain)

    async def delete_cert(self, domain: str, *, revoke: bool = False) -> DeleteResult:
        self.calls.append(("delete", domain))
        existed = self.paths.cert(domain).exists()
        for p in (self.paths.cert(domain), self.paths.key(domain), self.paths.issuer(domain)):
            p.unlink(missing_ok=True)
        return DeleteResult(deleted=existed, still_desired=domain in self.desired)

    async def plan_json(self) -> bytes | dict[str, Any]:
        self.calls.append(("plan", ""))
        return self.plan

    def request_reconcile(self) -> None:
        self.reconciles += 1

    async def force_renew(self, domain: str, *, force: bool = False) -> RenewResult:
        self.calls.append(("renew", domain))
        return RenewResult("requested" if domain in self.desired else "unknown")

    def record_event(self, *, peer: str, action: str, domain: str | None, result: str,
                     detail: str | None = None) -> None:
        self.events.append((peer, action, domain, result))

    async def recent_events(self, domain: str | None = None,
                            limit: int = 100) -> list[dict[str, Any]]:
        self.calls.append(("events", domain or ""))
        return [{"action": a, "domain": d, "result": r} for _, a, d, r in self.events
                if domain is None or d == domain][-limit:]

    async def gc_confirm(self, by: str) -> GcConfirmResult:
        self.calls.append(("gc confirm", by))
        return GcConfirmResult(released=())

    def health(self) -> dict[str, Any]:
        return {"ok": True, "mqtt_connected": False}

    def metrics_text(self) -> str:
        return self.metrics.render()


def put_cert(paths: StorePaths, domain: str) -> None:
    made = make_cert([domain, f"www.{domain}"])
    paths.certificates.mkdir(parents=True, exist_ok=True)
    paths.cert(domain).write_bytes(made.fullchain_pem)
    paths.key(domain).write_bytes(made.key_pem)
    paths.issuer(domain).write_bytes(made.chain_pem)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def store(tmp_path: Path) -> StorePaths:
    paths = StorePaths(tmp_path / "njet")
    put_cert(paths, "a.test")
    put_cert(paths, "b.test")
    (tmp_path / "secret.key").write_text("outside the store")
    (paths.prefix / "conf").mkdir()
    (paths.prefix / "conf" / "njet.conf").write_text("events {}\n")
    return paths


@pytest.fixture
def backend(store: StorePaths) -> DiskBackend:
    return DiskBackend(store, desired={"a.test"})


@pytest.fixture
async def server(backend: DiskBackend) -> AsyncIterator[AdminServer]:
    srv = await start_admin(backend, "127.0.0.1:0", TOKEN)
    await asyncio.wait_for(srv.wait_bound(), 5)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def http(server: AdminServer) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{server.port}"


async def raw_request(port: int, method: str, target: bytes, token: str | None = TOKEN) -> tuple[
    int, bytes
]:  # fmt: skip
    """Send the request target byte-for-byte (no client-side normalisation or quoting)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (method.encode() + b" " + target
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n".encode()
    writer.write(head + b"Content-Length: 0\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_list_and_get_show_certificate_facts_but_never_a_key(
    http: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = http
    async with session.get(f"{base}/api/v1/cert", headers=AUTH) as r:
        assert r.status == 200 and r.content_type == "application/json"
        body = await r.read()
    listed = orjson.loads(body)["certificates"]
    assert [c["domain"] for c in listed] == ["a.test", "b.test"]
    assert listed[0]["names"] == ["a.test", "www.a.test"]
    assert listed[0]["key_type"] == "ec256" and len(listed[0]["fingerprint"]) == 64
    assert 89 < listed[0]["days_left"] < 90
    assert listed[0]["desired"] is True and listed[1]["desired"] is False
    assert b"PRIVATE KEY" not in body
    async with session.get(f"{base}/api/v1/cert/A.Test", headers=AUTH) as r:
        assert r.status == 200
        view = await r.json()
    assert view["domain"] == "a.test" and view["not_after"].endswith("+00:00")
    async with session.get(f"{base}/api/v1/cert/none.test", headers=AUTH) as r:
        assert r.status == 404
        assert "none.test" in (await r.json())["error"]


async def test_the_double_slash_spelling_from_njets_docs_is_accepted(
    server: AdminServer, backend: DiskBackend
) -> None:
    assert server.port is not None
    status, body = await raw_request(server.port, "GET", b"/api/v1//cert")
    assert status == 200 and len(orjson.loads(body)["certificates"]) == 2
    status, body = await raw_request(server.port, "GET", b"/api/v1//cert/b.test")
    assert status == 200 and orjson.loads(body)["domain"] == "b.test"
    status, _ = await raw_request(server.port, "DELETE", b"/api/v1//cert/b.test")
    assert status == 200
    assert not backend.paths.cert("b.test").exists()


async def test_delete_says_when_the_name_is_still_desired_and_will_be_reissued(
    http: tuple[aiohttp.ClientSession, str], backend: DiskBackend
) -> None:
    session, base = http
    async with session.delete(f"{base}/api/v1/cert/a.test", headers=AUTH) as r:
        assert r.status == 200
        body = await r.json()
    assert body["deleted"] is True and body["still_desired"] is True
    assert "issued again" in body["message"]
    assert not backend.paths.cert("a.test").exists() and not backend.paths.key("a.test").exists()
    async with session.delete(f"{base}/api/v1/cert/b.test", headers=AUTH) as r:
        body = await r.json()
    assert body == {"domain": "b.test", "deleted": True, "still_desired": False}
    async with session.delete(f"{base}/api/v1/cert/b.test", headers=AUTH) as r:
        assert r.status == 404
        assert (await r.json())["deleted"] is False


async def test_plan_reconcile_and_renew_routes(
    http: tuple[aiohttp.ClientSession, str], backend: DiskBackend
) -> None:
    session, base = http
    async with session.get(f"{base}/api/v1/plan", headers=AUTH) as r:
        assert r.status == 200 and (await r.json()) == backend.plan
    backend.plan = b'{"actions":[]}'
    async with session.get(f"{base}/api/v1/plan", headers=AUTH) as r:
        assert await r.read() == b'{"actions":[]}'
    async with session.post(f"{base}/api/v1/reconcile", headers=AUTH) as r:
        assert r.status == 202
    assert backend.reconciles == 1
    async with session.post(f"{base}/api/v1/cert/a.test/renew", headers=AUTH) as r:
        assert r.status == 202 and (await r.json())["domain"] == "a.test"
    async with session.post(f"{base}/api/v1/cert/b.test/renew", headers=AUTH) as r:
        assert r.status == 404 and "not a desired" in (await r.json())["error"]


async def test_healthz_is_open_and_metrics_serve_the_prometheus_format(
    http: tuple[aiohttp.ClientSession, str], backend: DiskBackend
) -> None:
    session, base = http
    async with session.get(f"{base}/healthz") as r:
        assert r.status == 200 and (await r.json())["ok"] is True
    backend.metrics.set_mqtt_connected(True)
    async with session.get(f"{base}/metrics", headers=AUTH) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["njcm_mqtt_connected"].samples[0].value == 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": f"Bearer {TOKEN}x"}, 401),
        ({"Authorization": f"bearer {TOKEN}"}, 200),
        (AUTH, 200),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/cert", "/metrics", "/api/v1/plan"])
async def test_the_bearer_token_guards_every_route_but_healthz(
    http: tuple[aiohttp.ClientSession, str], headers: dict[str, str], status: int, path: str
) -> None:
    session, base = http
    async with session.get(f"{base}{path}", headers=headers) as r:
        assert r.status == status
        if status == 401:
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["error"] == "missing or wrong bearer token"


async def test_an_unauthenticated_delete_touches_nothing(
    server: AdminServer, backend: DiskBackend, tmp_path: Path
) -> None:
    assert server.port is not None
    before = snapshot(tmp_path)
    status, _ = await raw_request(server.port, "DELETE", b"/api/v1/cert/a.test", token=None)
    assert status == 401
    assert snapshot(tmp_path) == before and backend.calls == []


BAD_TARGETS = [
    b"/api/v1/cert/..",
    b"/api/v1/cert/../../../secret.key",
    b"/api/v1/cert/%2e%2e",
    b"/api/v1/cert/%2E%2E",
    b"/api/v1/cert/%2e%2e%2f%2e%2e%2fsecret.key",
    b"/api/v1/cert/a.test%2F..%2F..%2Fsecret",
    b"/api/v1/cert/%2F",
    b"/api/v1/cert//",
    b"/api/v1/cert/.",
    b"/api/v1/cert/" + b"a" * 300,
    b"/api/v1/cert/" + b"a." * 150 + b"test",
    "/api/v1/cert/é.test".encode(),
    b"/api/v1/cert/%C3%A9.test",
    b"/api/v1/cert/xn--\xff.test",
    b"/api/v1/cert/a_b.test",
    b"/api/v1/cert/-a.test",
    b"/api/v1//cert/..",
    b"/api/v1/cert/a.test@foo",  # "@" only as a dual block's <name>@ecc / <name>@rsa
    b"/api/v1/cert/a.test@ecc@rsa",
    b"/api/v1/cert/@ecc",
]


@pytest.mark.parametrize("target", BAD_TARGETS, ids=lambda t: t.decode("latin-1")[13:45])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_bad_domain_values_get_400_and_touch_nothing(
    server: AdminServer, backend: DiskBackend, tmp_path: Path, target: bytes, method: str
) -> None:
    assert server.port is not None
    before = snapshot(tmp_path)
    status, _ = await raw_request(server.port, method, target)
    assert status == 400
    assert backend.calls == []
    assert snapshot(tmp_path) == before


async def test_a_dual_blocks_second_certificate_is_named_by_its_store_key(
    http: tuple[aiohttp.ClientSession, str], backend: DiskBackend
) -> None:
    session, base = http
    put_cert(backend.paths, "a.test@ecc")
    async with session.get(f"{base}/api/v1/cert/A.test@ECC", headers=AUTH) as r:
        assert r.status == 200
        assert (await r.json())["domain"] == "a.test@ecc"
    assert ("get", "a.test@ecc") in backend.calls


async def test_bad_domain_values_on_renew_get_400(
    server: AdminServer, backend: DiskBackend
) -> None:
    assert server.port is not None
    for target in (
        b"/api/v1/cert/%2e%2e/renew",
        b"/api/v1/cert/../renew",
        b"/api/v1/cert/a%2Fb/renew",
    ):
        status, body = await raw_request(server.port, "POST", target)
        assert status == 400, target
        assert "error" in orjson.loads(body)
    assert backend.calls == []


async def test_unknown_routes_and_methods_answer_json_errors(
    http: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = http
    async with session.get(f"{base}/api/v1/nothing", headers=AUTH) as r:
        assert r.status == 404 and "no such route" in (await r.json())["error"]
    async with session.get(f"{base}/elsewhere", headers=AUTH) as r:
        assert r.status == 404 and "error" in await r.json()
    async with session.put(f"{base}/api/v1/cert/a.test", headers=AUTH) as r:
        assert r.status == 405 and r.headers["Allow"] == "DELETE, GET"
    async with session.get(f"{base}/api/v1/cert/a.test/extra", headers=AUTH) as r:
        assert r.status == 404
    async with session.post(f"{base}/healthz") as r:
        assert r.status == 405 and "error" in await r.json()


async def test_a_failing_backend_gives_a_500_without_details(
    http: tuple[aiohttp.ClientSession, str], backend: DiskBackend
) -> None:
    async def broken() -> list[CertView]:
        raise RuntimeError("disk on fire /very/secret/path")

    backend.list_certs = broken  # type: ignore[method-assign]
    session, base = http
    async with session.get(f"{base}/api/v1/cert", headers=AUTH) as r:
        assert r.status == 500
        body = await r.text()
    assert "secret" not in body and "error" in orjson.loads(body)


async def test_a_busy_port_is_retried_in_the_background_until_free(backend: DiskBackend) -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    srv = await start_admin(backend, f"127.0.0.1:{port}", "", max_retry_delay=0.1)
    try:
        assert srv.port is None and not srv.bound.is_set()
        blocker.close()
        await asyncio.wait_for(srv.wait_bound(), 10)
        assert srv.port == port
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/api/v1/cert") as r,
        ):
            assert r.status == 200  # no token configured: open
    finally:
        blocker.close()
        await srv.stop()
