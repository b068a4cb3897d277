"""The TLS probe against real Python TLS servers: a dual-cert (RSA + ECDSA) context like an NJet
block after an `ecc` add, SNI switching, wildcard and IPv6 listens, and failures as results."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.adapters.njet.probe import probe, probe_target
from controller.certinfo import fingerprint_pem
from controller.model import KeyType
from tests.certbuilder import MadeCert, cached_key, make_cert


@dataclass(frozen=True)
class Certs:
    rsa: MadeCert  # a.test, RSA leaf + CA chain
    ecc: MadeCert  # a.test, ECDSA leaf + CA chain
    other: MadeCert  # b.test, ECDSA (served only for SNI b.test)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs(
        rsa=make_cert(["a.test"], key_pem=cached_key(KeyType.RSA2048)),
        ecc=make_cert(["a.test"]),
        other=make_cert(["b.test"]),
    )


def server_context(tmp: Path, *pairs: MadeCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for i, pair in enumerate(pairs):
        crt, key = tmp / f"{id(ctx)}-{i}.crt", tmp / f"{id(ctx)}-{i}.key"
        crt.write_bytes(pair.fullchain_pem)
        key.write_bytes(pair.key_pem)
        ctx.load_cert_chain(crt, key)  # one slot per key type: RSA and ECDSA side by side
    return ctx


@dataclass
class TlsServer:
    port: int
    sni_seen: list[str | None] = field(default_factory=list)


async def serve(host: str, ctx: ssl.SSLContext) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the prober hangs up
        writer.close()

    server = await asyncio.start_server(handle, host, 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def tls_server(
    request: pytest.FixtureRequest, certs: Certs, tmp_path: Path
) -> AsyncIterator[TlsServer]:
    """A dual-cert a.test server on the host given by the test's parameter (127.0.0.1 default);
    SNI b.test switches to a context with b.test's certificate."""
    host = getattr(request, "param", "127.0.0.1")
    dual = server_context(tmp_path, certs.rsa, certs.ecc)
    other = server_context(tmp_path, certs.other)
    state = TlsServer(port=0)

    def on_sni(obj: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        state.sni_seen.append(name)
        if name == "b.test":
            obj.context = other

    dual.sni_callback = on_sni
    server, state.port = await serve(host, dual)
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def leaf_fp(cert: MadeCert) -> str:
    return fingerprint_pem(cert.cert_pem)


async def test_rsa_probe_gets_the_rsa_cert_of_a_dual_cert_server(
    tls_server: TlsServer, certs: Certs
) -> None:
    result = await probe(f"127.0.0.1:{tls_server.port}", "a.test", key_kind="rsa")
    assert result.error is None
    assert result.fingerprint == leaf_fp(certs.rsa)
    assert result.cipher is not None and "ECDHE-RSA" in result.cipher
    assert tls_server.sni_seen == ["a.test"]


async def test_ecc_probe_gets_the_ecdsa_cert_of_a_dual_cert_server(
    tls_server: TlsServer, certs: Certs
) -> None:
    result = await probe(f"127.0.0.1:{tls_server.port}", "a.test", key_kind="ecc")
    assert result.error is None
    assert result.fingerprint == leaf_fp(certs.ecc)
    assert result.cipher is not None and "ECDHE-ECDSA" in result.cipher


async def test_the_chain_the_server_sends_is_reported_leaf_first(
    tls_server: TlsServer, certs: Certs
) -> None:
    result = await probe(f"127.0.0.1:{tls_server.port}", "a.test", key_kind="rsa")
    assert result.chain_fingerprints[:1] == (leaf_fp(certs.rsa),)
    assert result.chain_fingerprints[1:] == (fingerprint_pem(certs.rsa.chain_pem),)


async def test_sni_selects_the_virtual_server(tls_server: TlsServer, certs: Certs) -> None:
    result = await probe(f"127.0.0.1:{tls_server.port}", "b.test", key_kind="ecc")
    assert result.fingerprint == leaf_fp(certs.other)
    assert tls_server.sni_seen == ["b.test"]


async def test_an_empty_sni_sends_none(tls_server: TlsServer, certs: Certs) -> None:
    result = await probe(f"127.0.0.1:{tls_server.port}", "", key_kind="ecc")
    assert result.fingerprint == leaf_fp(certs.ecc)
    assert tls_server.sni_seen == [None]


@pytest.mark.parametrize("tls_server", ["0.0.0.0"], indirect=True)
async def test_a_wildcard_listen_is_probed_over_loopback(
    tls_server: TlsServer, certs: Certs
) -> None:
    result = await probe(f"0.0.0.0:{tls_server.port}", "a.test", key_kind="rsa")
    assert result.error is None
    assert result.fingerprint == leaf_fp(certs.rsa)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")


@needs_ipv6
@pytest.mark.parametrize("tls_server", ["::1"], indirect=True)
async def test_an_ipv6_listen(tls_server: TlsServer, certs: Certs) -> None:
    result = await probe(f"[::1]:{tls_server.port}", "a.test", key_kind="ecc")
    assert result.error is None
    assert result.fingerprint == leaf_fp(certs.ecc)


@needs_ipv6
@pytest.mark.parametrize("tls_server", ["::"], indirect=True)
async def test_an_ipv6_wildcard_listen_is_probed_via_ipv6_loopback(
    tls_server: TlsServer, certs: Certs
) -> None:
    result = await probe(f"[::]:{tls_server.port}", "a.test", key_kind="rsa")
    assert result.fingerprint == leaf_fp(certs.rsa)


# --- failures are results ---------------------------------------------------------------------


@pytest.fixture
def alerting_server(certs: Certs, tmp_path: Path) -> Iterator[int]:
    """A blocking RSA-only TLS server in a thread: OpenSSL sends a real handshake_failure
    alert to a client that offers only ECDSA suites (as NJet does, alert 40)."""
    ctx = server_context(tmp_path, certs.rsa)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    alerts: list[str] = []

    def accept_one() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn, contextlib.suppress(OSError):
            conn.settimeout(10)
            try:
                ctx.wrap_socket(conn, server_side=True).close()
            except ssl.SSLError as exc:
                alerts.append(exc.reason or "")

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=10)
    assert alerts, "the server should have refused the handshake"


async def test_a_key_type_the_server_lacks_fails_the_handshake_with_an_alert(
    alerting_server: int,
) -> None:
    result = await probe(f"127.0.0.1:{alerting_server}", "a.test", key_kind="ecc")
    assert result.fingerprint is None and result.chain_fingerprints == ()
    assert result.error is not None and "TLS handshake failed" in result.error
    assert "ALERT" in result.error.upper()
    assert f"127.0.0.1:{alerting_server}" in result.error and "ecc" in result.error


async def test_a_server_closing_during_the_handshake_is_a_failed_handshake(
    certs: Certs, tmp_path: Path
) -> None:
    server, port = await serve("127.0.0.1", server_context(tmp_path, certs.rsa))
    try:
        result = await probe(f"127.0.0.1:{port}", "a.test", key_kind="ecc")
    finally:
        server.close()
        await server.wait_closed()
    assert result.fingerprint is None
    assert result.error is not None and "TLS handshake failed" in result.error


@pytest.fixture
def refused_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def test_a_refused_port_is_an_error_result(refused_port: int) -> None:
    result = await probe(f"127.0.0.1:{refused_port}", "a.test", key_kind="rsa")
    assert result.fingerprint is None
    assert result.error is not None and "connection refused" in result.error


async def test_a_server_that_never_answers_times_out_as_an_error_result() -> None:
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await probe(f"127.0.0.1:{port}", "a.test", key_kind="rsa", timeout=0.3)
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert result.fingerprint is None
    assert result.error is not None and "timeout" in result.error


async def test_a_plain_http_port_is_an_error_result() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await probe(f"127.0.0.1:{port}", "a.test", key_kind="rsa")
    finally:
        server.close()
        await server.wait_closed()
    assert result.fingerprint is None and result.error


async def test_a_listen_without_port_is_an_error_result() -> None:
    result = await probe("127.0.0.1", "a.test", key_kind="rsa")
    assert result.fingerprint is None
    assert result.error is not None and "no port" in result.error


# --- where to connect -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "target"),
    [
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("0.0.0.0:8444", ("127.0.0.1", 8444)),
        ("*:8444", ("127.0.0.1", 8444)),
        ("8444", ("127.0.0.1", 8444)),
        ("[::1]:8445", ("::1", 8445)),
        ("[::]:8446", ("::1", 8446)),
        ("[0:0::0]:8446", ("::1", 8446)),
        ("192.0.2.7:443", ("192.0.2.7", 443)),
    ],
)
def test_probe_target_maps_wildcards_to_loopback(listen: str, target: tuple[str, int]) -> None:
    assert probe_target(listen) == target


@pytest.mark.parametrize("listen", ["127.0.0.1", "[::1]", "a.test:http", "127.0.0.1:70000"])
def test_probe_target_rejects_a_listen_without_a_valid_port(listen: str) -> None:
    with pytest.raises(ValueError):
        probe_target(listen)
