"""NjetClient against NJet's recorded behaviour: every exchange of the contract that touches
/api/v1/ssl, /api/v1/dyn_loc or /api/v1/config/http_log is played back by a tiny local aiohttp
server; the client must send the recorded request and map the recorded reply to the right
result or typed error. Plus: unreachable NJet, timeouts, retries, and no private key anywhere.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controller.adapters.njet.api import (
    LocationServer,
    NjetApiError,
    NjetApplyError,
    NjetBadResponse,
    NjetClient,
    NjetDeleteFailed,
    NjetLocationExists,
    NjetLocationMissing,
    NjetMethodError,
    NjetNoServerForLocation,
    NjetRepeated,
    NjetSchemaError,
    NjetServer,
    NjetServerExists,
    NjetUnavailable,
    parse_ssl_servers,
)
from controller.adapters.njet.wire import error_for_reply
from controller.errors import ConfigError, TemporaryError
from tests.contract import CONTRACT
from tests.logcapture import CapturedLogs, capture_logs

CERTS = CONTRACT / "certs"
ENDPOINTS = ("/api/v1/ssl", "/api/v1/config/ssl", "/api/v1/dyn_loc", "/api/v1/config/http_log")

Outcome = type[NjetApiError] | tuple[type[NjetApiError], bool] | None
# What each recorded reply means; (NjetApplyError, server_not_found) for code 4 on /ssl.
EXPECTED: dict[str, Outcome] = {
    "01": None, "02": None, "03": NjetRepeated, "04": None, "05": NjetRepeated, "06": None,
    "07": None, "08": (NjetApplyError, False), "09": (NjetApplyError, False),
    "10": (NjetApplyError, False), "11": (NjetApplyError, True), "12": (NjetApplyError, True),
    "13": (NjetApplyError, True), "14": (NjetApplyError, True), "15": None,
    "16": (NjetApplyError, True), "17": None, "18": None, "19": None, "20": None, "21": None,
    "22": NjetSchemaError, "23": NjetSchemaError, "24": NjetSchemaError, "25": NjetSchemaError,
    "26": (NjetApplyError, False), "27": None, "28": None, "29": None, "30": None, "31": None,
    "32": None, "33": NjetDeleteFailed, "34": NjetDeleteFailed, "35": NjetMethodError,
    "36": NjetMethodError, "37": None, "38": None, "40": None, "41": NjetLocationExists,
    "42": None, "43": NjetMethodError, "44": NjetMethodError, "45": NjetNoServerForLocation,
    "46": NjetNoServerForLocation, "47": NjetApplyError, "48": NjetSchemaError, "50": None,
    "51": None, "52": None, "53": NjetLocationMissing, "54": NjetMethodError, "60": None,
    "61": None, "70": None, "71": None, "72": None, "73": NjetServerExists, "74": None,
    "75": None, "76": None, "77": (NjetApplyError, True), "78": NjetApplyError, "79": None,
    "80": None, "81": None, "82": None,
}


def exchanges() -> list[Path]:
    return sorted(CONTRACT.glob("[0-9][0-9]-*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def recorded_reply(prefix: str) -> Any:
    return load(next(CONTRACT.glob(f"{prefix}-*.json")))["response"]["body"]


def op_of(request: dict[str, Any]) -> str:
    """The client operation a recorded request corresponds to (for code meanings)."""
    body = request["body"] if isinstance(request["body"], dict) else {}
    kind = body.get("type", "add" if request["method"] == "POST" else "del")
    if request["method"] == "GET":
        return "get " + str(request["path"]).rsplit("/", 1)[-1]
    noun = {"ssl": "cert", "dyn_loc": "location", "dyn_srv": "server"}
    return f"{kind} {noun.get(request['path'].rsplit('/', 1)[-1], 'thing')}"


def check_outcome(exc: BaseException | None, expected: Outcome, recorded: dict[str, Any]) -> None:
    if expected is None:
        assert exc is None, f"unexpected {exc!r}"
        return
    cls, not_found = expected if isinstance(expected, tuple) else (expected, None)
    assert type(exc) is cls, f"got {exc!r}, want {cls.__name__}"
    assert isinstance(exc, NjetApiError)
    assert exc.code == recorded["body"]["code"]
    assert exc.http_status == recorded["status"]
    if not_found is not None:
        assert isinstance(exc, NjetApplyError)
        assert exc.server_not_found is not_found


@pytest.mark.parametrize("path", exchanges(), ids=lambda p: p.stem)
def test_every_recorded_reply_maps_to_its_typed_outcome(path: Path) -> None:
    ex = load(path)
    prefix = path.name[:2]
    assert prefix in EXPECTED, f"{path.name} has no expected outcome in this table"
    error = error_for_reply(
        op_of(ex["request"]),
        what="test",
        url="http://njet.invalid" + ex["request"]["path"],
        http_status=ex["response"]["status"],
        data=ex["response"]["body"],
        content_type=ex["response"]["content_type"],
    )
    check_outcome(error, EXPECTED[prefix], ex["response"])


# --- playback server ------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    body: bytes


@dataclass
class Playback:
    """Answers every request with `reply` (or runs `handler`), recording what it received."""

    received: list[Received] = field(default_factory=list)
    reply: tuple[int, str, bytes] = (200, "application/json", b'{"code":0,"msg":"success."}')
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, response: dict[str, Any]) -> None:
        body = json.dumps(response["body"]).encode()
        self.reply = (response["status"], response["content_type"], body)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        self.received.append(Received(request.method, request.path, await request.read()))
        if self.handler is not None:
            return await self.handler(request)
        status, ctype, body = self.reply
        return web.Response(status=status, body=body, content_type=ctype)


@pytest.fixture
async def playback() -> AsyncIterator[tuple[Playback, NjetClient]]:
    pb = Playback()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", pb.serve)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = NjetClient(str(server.make_url("/")), timeout=2.0)
    try:
        yield pb, client
    finally:
        pb.release.set()
        await client.close()
        await server.close()


@pytest.fixture
def logs() -> Iterator[CapturedLogs]:
    """Debug lines included, through the controller's own handler."""
    with capture_logs(verbosity=2) as captured:
        yield captured


def data_pem(value: str) -> bytes:
    assert value.startswith("data:")
    return value[len("data:") :].encode()


def file_pem(contract_path: str) -> bytes:
    return (CERTS / Path(contract_path).name).read_bytes()


def pem_of(value: str | None, fallback: str) -> bytes:
    if value is None:
        return (CERTS / fallback).read_bytes()
    return data_pem(value) if value.startswith("data:") else file_pem(value)


@dataclass
class Call:
    run: Callable[[NjetClient], Awaitable[Any]]
    method: str
    path: str
    exact: bool  # the client can produce the recorded request byte-for-byte (as JSON)


def ssl_put_call(request: dict[str, Any]) -> Call:
    raw = request["body"]
    body = raw if isinstance(raw, dict) else {}
    info = body.get("cert_info", {})
    kind = body.get("type") if body.get("type") in ("add", "del") else "add"
    exact = (
        request["method"] == "PUT"
        and body.get("type") in ("add", "del")
        and "cert_type" in info
        and all(str(info.get(k, "")).startswith("data:") for k in ("certificate", "certificateKey"))
    )
    kwargs: dict[str, Any] = {
        "listens": body.get("listens", ["127.0.0.1:8443"]),
        "server_names": body.get("serverNames", ["a.test"]),
        "cert_type": info.get("cert_type", "rsa"),
        "cert_pem": pem_of(info.get("certificate"), "put-a-rsa3.crt"),
        "key_pem": pem_of(info.get("certificateKey"), "put-a-rsa3.key"),
    }

    async def run(client: NjetClient) -> None:
        await (client.add_cert if kind == "add" else client.del_cert)(**kwargs)

    return Call(run, "PUT", "/api/v1/ssl", exact)


def dyn_loc_call(request: dict[str, Any]) -> Call:
    raw = request["body"]
    body = raw if isinstance(raw, dict) else {}
    loc = (body.get("locations") or [{}])[0]
    common: dict[str, Any] = {
        "addr_port": body.get("addr_port", "127.0.0.1:8080"),
        "server_name": body.get("server_name", "a.test"),
    }
    rule = body.get("location_rule", loc.get("location_rule", "^~"))
    name = body.get("location_name", loc.get("location_name", "/.well-known/acme-challenge/"))
    if request["method"] == "POST":
        exact = body.get("type") == "add"

        async def add(client: NjetClient) -> None:
            await client.add_location(
                **common,
                proxy_pass=loc.get("proxy_pass", "http://127.0.0.1:8099"),
                rule=rule,
                name=name,
                location_body=loc.get("location_body"),
            )

        return Call(add, "POST", "/api/v1/dyn_loc", exact)
    exact = request["method"] == "PUT" and body.get("type") == "del"

    async def delete(client: NjetClient) -> None:
        await client.del_location(**common, rule=rule, name=name)

    return Call(delete, "PUT", "/api/v1/dyn_loc", exact)


def call_for(request: dict[str, Any]) -> Call:
    """The client call that produces the recorded request or, for requests the client never
    sends (wrong method, broken JSON, GET on dyn_loc), the nearest call on that endpoint."""
    path, method = request["path"], request["method"]
    if path == "/api/v1/config/http_log" or (path == "/api/v1/dyn_loc" and method == "GET"):

        async def log(client: NjetClient) -> tuple[LocationServer, ...]:
            return await client.http_log()

        return Call(log, "GET", "/api/v1/config/http_log", path == "/api/v1/config/http_log")
    if path == "/api/v1/dyn_loc":
        return dyn_loc_call(request)
    if method == "GET" or (method == "DELETE" and request["body"] is None):

        async def get(client: NjetClient) -> tuple[NjetServer, ...]:
            return await client.get_ssl()

        return Call(get, "GET", "/api/v1/ssl", path == "/api/v1/ssl" and method == "GET")
    return ssl_put_call(request)


def endpoint_exchanges() -> list[Path]:
    out = []
    for path in exchanges():
        req = load(path)["request"]
        if req["path"] in ENDPOINTS or (req["path"] == "/api/v1/config" and req["method"] == "GET"):
            out.append(path)
    return out


@pytest.mark.parametrize("path", endpoint_exchanges(), ids=lambda p: p.stem)
async def test_client_sends_the_recorded_request_and_maps_the_recorded_reply(
    path: Path, playback: tuple[Playback, NjetClient], logs: CapturedLogs
) -> None:
    pb, client = playback
    ex = load(path)
    request, response = ex["request"], ex["response"]
    pb.answer(response)
    call = call_for(request)
    result: Any = None
    error: BaseException | None = None
    try:
        result = await call.run(client)
    except NjetApiError as exc:
        error = exc

    # sent: once (NJet's answers are never transient), on the right method and path
    assert len(pb.received) == 1
    sent = pb.received[0]
    assert (sent.method, sent.path) == (call.method, call.path)
    if call.method != "GET":
        sent_body = json.loads(sent.body)
        recorded = request["body"]
        if call.exact:
            assert json.dumps(sent_body) == json.dumps(recorded)
        elif isinstance(recorded, dict):
            for key in ("listens", "serverNames", "addr_port", "server_name"):
                if key in recorded:
                    assert sent_body[key] == recorded[key]

    # replied: the mapped outcome
    prefix = path.name[:2]
    if prefix == "38":  # GET /api/v1/config's list is not a server document
        assert type(error) is NjetBadResponse
    else:
        check_outcome(error, EXPECTED[prefix], response)
    if error is not None:
        assert isinstance(error, NjetApiError)
        assert error.url == client.base_url + call.path
        assert call.path in str(error)
        assert "PRIVATE KEY" not in str(error) and "PRIVATE KEY" not in repr(error)
    if request["method"] == "GET" and error is None and "servers" in response["body"]:
        recorded_servers = response["body"]["servers"]
        assert [list(s.listens) for s in result] == [s["listens"] for s in recorded_servers]
        assert [list(s.server_names) for s in result] == [
            s["serverNames"] for s in recorded_servers
        ]
        assert "PRIVATE KEY" not in repr(result)
    assert "PRIVATE KEY" not in logs.text


# --- the parsed GET model ---------------------------------------------------------------------


def sha256_of(served: dict[str, Any]) -> str:
    return str(served["sha256"]).replace(":", "").lower()


def test_get_model_keeps_fingerprints_and_paths_but_no_private_key() -> None:
    ex = load(next(CONTRACT.glob("30-*.json")))
    assert "PRIVATE KEY" in json.dumps(ex["response"]["body"])  # NJet does echo the keys
    servers = parse_ssl_servers(ex["response"]["body"])
    assert "PRIVATE KEY" not in repr(servers)
    a_test = servers[0]
    assert a_test.certificates[0].inline is False
    assert a_test.certificates[0].path == "/usr/local/njet/certs/contract/boot-a.crt"
    assert a_test.certificates[0].fingerprint is None
    inline = [c for c in a_test.certificates if c.inline]
    assert inline and all(c.path is None and c.fingerprint for c in inline)
    # the last entry of each type is what s_client saw served ([30] served_certs)
    served = ex["served_certs"]
    last_rsa = [c for c in inline if c.cert_type == "rsa"][-1]
    last_ecc = [c for c in inline if c.cert_type == "ecc"][-1]
    assert last_ecc.fingerprint == sha256_of(served["a.test via 127.0.0.1:8443"])
    rsa_key = next(k for k in served if "rsa_pss" in k)
    assert last_rsa.fingerprint == sha256_of(served[rsa_key])
    plain = [s for s in servers if s.listens == ("127.0.0.1:8080",)]
    assert len(plain) == 2 and all(s.certificates == () for s in plain)


def test_inline_fingerprint_of_a_full_chain_is_the_leaf() -> None:
    ex = load(next(CONTRACT.glob("29-*.json")))
    leaf_pem = (CERTS / "put-a-chain.leaf.crt").read_bytes()
    from controller.certinfo import fingerprint_pem

    document = {"servers": [{"listens": ["127.0.0.1:8443"], "serverNames": ["a.test"],
                             "certificates": [ex["request"]["body"]["cert_info"]]}]}
    (server,) = parse_ssl_servers(document)
    assert server.certificates[0].fingerprint == fingerprint_pem(leaf_pem)


async def test_a_get_document_of_the_wrong_shape_never_echoes_a_key(
    playback: tuple[Playback, NjetClient],
) -> None:
    pb, client = playback
    key = (CERTS / "put-a-rsa1.key").read_text()
    pb.reply = (200, "application/json",
                json.dumps({"servers": [{"listens": {"oops": "data:" + key}}]}).encode())
    with pytest.raises(NjetBadResponse) as info:
        await client.get_ssl()
    assert "PRIVATE KEY" not in str(info.value) and key[40:80] not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_an_njet_message_carrying_a_key_is_redacted(
    playback: tuple[Playback, NjetClient],
) -> None:
    pb, client = playback
    key = (CERTS / "put-a-rsa1.key").read_text()
    pb.reply = (200, "application/json", json.dumps(
        {"code": 4, "msg": " dyn ssl update fail", "data": [" bad key " + key]}).encode())
    with pytest.raises(NjetApplyError) as info:
        await client.add_cert(listens=["127.0.0.1:8443"], server_names=["a.test"],
                              cert_type="rsa", cert_pem=(CERTS / "put-a-rsa1.crt").read_bytes(),
                              key_pem=key.encode())
    text = str(info.value) + repr(info.value) + repr(info.value.data)
    assert "PRIVATE KEY" not in text and key[40:80] not in text
    assert "bad key" in text


# --- unreachable NJet, timeouts, retries ------------------------------------------------------


@pytest.fixture
def refused_url() -> Iterator[str]:
    # Bound but not listening: connections are refused, and the port stays ours meanwhile.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


async def test_connection_refused_is_unavailable_naming_the_url(refused_url: str) -> None:
    async with NjetClient(refused_url, timeout=1.0) as client:
        with pytest.raises(NjetUnavailable) as info:
            await client.get_ssl()
    assert isinstance(info.value, TemporaryError)
    assert info.value.url == refused_url + "/api/v1/ssl"
    assert refused_url + "/api/v1/ssl" in str(info.value)
    assert "cannot connect" in str(info.value)
    assert info.value.maybe_applied is False


async def test_a_put_to_a_refused_port_is_unavailable_too(refused_url: str) -> None:
    async with NjetClient(refused_url, timeout=1.0) as client:
        with pytest.raises(NjetUnavailable, match="cannot connect"):
            await client.del_location(addr_port="127.0.0.1:8080", server_name="a.test")


def hang_until_released(pb: Playback) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        await pb.release.wait()
        return web.Response(status=200, body=b'{"code":0,"msg":"success."}')

    return handler


async def test_a_get_that_times_out_is_retried_then_unavailable(
    playback: tuple[Playback, NjetClient],
) -> None:
    pb, _ = playback
    pb.handler = hang_until_released(pb)
    url = str(pb_url(playback))
    async with NjetClient(url, timeout=0.2, attempts=3) as client:
        with pytest.raises(NjetUnavailable, match=r"no answer within 0\.2 s") as info:
            await client.get_ssl()
    assert len(pb.received) == 3
    assert info.value.url.endswith("/api/v1/ssl")


async def test_a_put_that_times_out_is_not_repeated(playback: tuple[Playback, NjetClient]) -> None:
    pb, _ = playback
    pb.handler = hang_until_released(pb)
    async with NjetClient(str(pb_url(playback)), timeout=0.2, attempts=3) as client:
        with pytest.raises(NjetUnavailable) as info:
            await client.add_cert(listens=["127.0.0.1:8443"], server_names=["a.test"],
                                  cert_type="rsa", cert_pem=b"-", key_pem=b"-")
    assert len(pb.received) == 1
    assert info.value.maybe_applied is True


def pb_url(playback: tuple[Playback, NjetClient]) -> str:
    return playback[1].base_url


@pytest.mark.parametrize(
    ("status", "method", "requests"),
    [
        pytest.param(502, "GET", 3, id="a proxy's 502 on GET is retried"),
        pytest.param(503, "PUT", 3, id="a proxy's 503 on PUT is retried (never forwarded)"),
        pytest.param(502, "PUT", 1, id="a proxy's 502 on PUT is not (may have been applied)"),
    ],
)
async def test_a_proxy_error_page_is_unavailable(
    playback: tuple[Playback, NjetClient], status: int, method: str, requests: int
) -> None:
    pb, client = playback
    pb.reply = (status, "text/html", b"<html><body>Bad Gateway</body></html>")
    with pytest.raises(NjetUnavailable, match=f"HTTP {status}"):
        if method == "GET":
            await client.get_ssl()
        else:
            await client.add_cert(listens=["127.0.0.1:8443"], server_names=["a.test"],
                                  cert_type="rsa", cert_pem=b"-", key_pem=b"-")
    assert len(pb.received) == requests


async def test_a_transient_failure_then_success_returns_the_servers(
    playback: tuple[Playback, NjetClient],
) -> None:
    pb, client = playback
    body = json.dumps(recorded_reply("01")).encode()

    async def flaky(request: web.Request) -> web.StreamResponse:
        if len(pb.received) == 1:
            return web.Response(status=503, body=b"starting")
        return web.Response(status=200, body=body, content_type="application/json")

    pb.handler = flaky
    servers = await client.get_ssl()
    assert len(pb.received) == 2
    assert servers[1].listens == ("0.0.0.0:8444",)


async def test_a_non_json_success_is_a_bad_response(
    playback: tuple[Playback, NjetClient],
) -> None:
    pb, client = playback
    pb.reply = (200, "text/html", b"<html>login</html>")
    with pytest.raises(NjetBadResponse, match="unexpected answer"):
        await client.del_location(addr_port="127.0.0.1:8080", server_name="a.test")
    assert len(pb.received) == 1


# --- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["", "   "])
def test_an_empty_address_is_store_only_mode_and_builds_no_client(address: str) -> None:
    with pytest.raises(ConfigError, match="store-only"):
        NjetClient(address)


def test_an_address_without_scheme_means_http_and_loses_its_trailing_slash() -> None:
    assert NjetClient("127.0.0.1:8081/").base_url == "http://127.0.0.1:8081"


def test_a_non_http_address_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        NjetClient("ftp://127.0.0.1:8081")


def test_cert_calls_need_element_zero() -> None:
    async def call() -> None:
        async with NjetClient("http://127.0.0.1:1") as client:
            await client.add_cert(listens=[], server_names=["a.test"], cert_type="rsa",
                                  cert_pem=b"-", key_pem=b"-")

    with pytest.raises(ValueError, match="must not be empty"):
        asyncio.run(call())
