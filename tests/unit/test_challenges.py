"""The challenge responders over real sockets: http-01 (Host ignored, concurrent, 404s, shared
listener) and tls-alpn-01 (real TLS handshakes with Python's ssl: ALPN acme-tls/1 and the
RFC 8737 certificate per SNI name)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl

import pytest
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ObjectIdentifier
from josepy.jwk import JWKEC

from controller.adapters.challenges import server as challenge_server
from controller.adapters.challenges.solvers import (
    LocalHttp01Solver,
    LocalTlsAlpn01Solver,
    parse_listen_address,
)
from controller.adapters.challenges.tls_alpn import TLSALPN01
from controller.errors import ConfigError, TemporaryError
from tests.fixtures.pebble import free_tcp_port

ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTH = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


def free_port() -> int:
    return free_tcp_port()


async def http_get(port: int, path: str, *, host: str, method: str = "GET") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


# -- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        (":80", (None, 80)),
        ("80", (None, 80)),
        ("127.0.0.1:5002", ("127.0.0.1", 5002)),
        ("[::1]:5002", ("::1", 5002)),
        ("localhost:8099", ("localhost", 8099)),
    ],
)
def test_listen_addresses_are_parsed_like_the_go_cert_manager(
    address: str, expected: tuple[str | None, int]
) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["", "host", "::1:80", "[::1]80", "h:99999", "h:x"])
def test_bad_listen_addresses_are_config_errors(address: str) -> None:
    with pytest.raises(ConfigError, match="bad listen address"):
        parse_listen_address(address)


# -- http-01 -----------------------------------------------------------------------------------


async def test_http01_answers_any_host_header_and_many_concurrent_requests() -> None:
    port = free_port()
    solver = LocalHttp01Solver(f"127.0.0.1:{port}")
    await solver.present("a.test", TOKEN, KEY_AUTH)
    try:
        hosts = ["a.test", "127.0.0.1:8099", "upstream", "b.test:80", ""] * 6
        path = f"/.well-known/acme-challenge/{TOKEN}"
        results = await asyncio.gather(*(http_get(port, path, host=h) for h in hosts))
        assert results == [(200, KEY_AUTH.encode())] * len(hosts)
        # repeated validations keep working
        assert await http_get(port, path, host="a.test") == (200, KEY_AUTH.encode())
    finally:
        await solver.cleanup("a.test", TOKEN, KEY_AUTH)


async def test_http01_says_404_for_unknown_tokens_and_paths_and_405_for_posts() -> None:
    port = free_port()
    solver = LocalHttp01Solver(f"127.0.0.1:{port}")
    await solver.present("a.test", TOKEN, KEY_AUTH)
    try:
        status, _ = await http_get(port, "/.well-known/acme-challenge/unknown", host="a.test")
        assert status == 404
        assert (await http_get(port, "/", host="a.test"))[0] == 404
        path = f"/.well-known/acme-challenge/{TOKEN}"
        assert (await http_get(port, path, host="a.test", method="POST"))[0] == 405
        assert await http_get(port, path, host="a.test", method="HEAD") == (200, b"")
        # absolute-form request target: the authority in it is ignored as well
        absolute = f"http://other.example{path}"
        assert await http_get(port, absolute, host="x") == (200, KEY_AUTH.encode())
    finally:
        await solver.cleanup("a.test", TOKEN, KEY_AUTH)


async def test_http01_listener_is_shared_and_closed_by_the_last_cleanup() -> None:
    port = free_port()
    solver = LocalHttp01Solver(f"127.0.0.1:{port}")
    other_token, other_auth = "T" * 43, "T" * 43 + ".thumb"
    await solver.present("a.test", TOKEN, KEY_AUTH)
    await solver.present("b.test", other_token, other_auth)
    assert solver.ports == [port]

    await solver.cleanup("a.test", TOKEN, KEY_AUTH)
    path = "/.well-known/acme-challenge/"
    assert (await http_get(port, path + TOKEN, host="a.test"))[0] == 404
    assert await http_get(port, path + other_token, host="b.test") == (200, other_auth.encode())

    await solver.cleanup("b.test", other_token, other_auth)
    assert solver.ports == []
    assert await refused(port)


async def test_http01_port_in_use_is_a_temporary_error_naming_the_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(challenge_server, "BIND_RETRY_SECONDS", 0.3)
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        solver = LocalHttp01Solver(address)
        with pytest.raises(TemporaryError, match=f"cannot listen on {address}.*in use"):
            await solver.present("a.test", TOKEN, KEY_AUTH)
    # nothing half-presented: a later present on a free port works from a clean state
    assert solver.ports == []


async def test_a_port_freed_during_the_retry_window_is_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On `njet -s reload` the old instance may hold the port for a moment: wait for it."""
    monkeypatch.setattr(challenge_server, "BIND_RETRY_SECONDS", 5.0)
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    address = f"127.0.0.1:{busy.getsockname()[1]}"
    solver = LocalHttp01Solver(address)
    asyncio.get_running_loop().call_later(0.4, busy.close)
    await solver.present("a.test", TOKEN, KEY_AUTH)
    assert solver.ports == [int(address.rsplit(":", 1)[1])]
    await solver.cleanup("a.test", TOKEN, KEY_AUTH)
    await solver.close()


# -- tls-alpn-01 -------------------------------------------------------------------------------


def client_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the validation cert is self-signed by design
    ctx.set_alpn_protocols(alpn if alpn is not None else ["acme-tls/1"])
    return ctx


async def handshake(
    port: int, sni: str, alpn: list[str] | None = None
) -> tuple[bytes, str | None]:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(alpn), server_hostname=sni
    )
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    protocol = ssl_object.selected_alpn_protocol()
    writer.close()
    return der, protocol


def assert_rfc8737_certificate(der: bytes, name: str, key_authorization: str) -> None:
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [name]
    ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
    assert ext.critical
    digest = hashlib.sha256(key_authorization.encode()).digest()
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == b"\x04\x20" + digest  # DER OCTET STRING of SHA-256(keyAuth)


async def test_tls_alpn01_serves_the_rfc8737_certificate_per_sni_name() -> None:
    port = free_port()
    solver = LocalTlsAlpn01Solver(f"127.0.0.1:{port}")
    other_auth = "U" * 43 + ".thumb"
    await solver.present("a.test", TOKEN, KEY_AUTH)
    await solver.present("WWW.A.test", "U" * 43, other_auth)
    try:
        der, protocol = await handshake(port, "a.test")
        assert protocol == "acme-tls/1"
        assert_rfc8737_certificate(der, "a.test", KEY_AUTH)

        der, protocol = await handshake(port, "www.a.test", ["http/1.1", "acme-tls/1"])
        assert protocol == "acme-tls/1"
        assert_rfc8737_certificate(der, "www.a.test", other_auth)

        # unknown name: the handshake is refused (unrecognized_name alert / reset)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await handshake(port, "unknown.test")
    finally:
        await solver.cleanup("a.test", TOKEN, KEY_AUTH)
        await solver.cleanup("WWW.A.test", "U" * 43, other_auth)
    assert solver.ports == []
    assert await refused(port)


async def test_tls_alpn01_handles_concurrent_handshakes() -> None:
    port = free_port()
    solver = LocalTlsAlpn01Solver(f"127.0.0.1:{port}")
    await solver.present("a.test", TOKEN, KEY_AUTH)
    try:
        results = await asyncio.gather(*(handshake(port, "a.test") for _ in range(12)))
        for der, protocol in results:
            assert protocol == "acme-tls/1"
            assert_rfc8737_certificate(der, "a.test", KEY_AUTH)
    finally:
        await solver.cleanup("a.test", TOKEN, KEY_AUTH)


def test_tls_alpn01_is_a_registered_acme_challenge_type() -> None:
    body = messages.ChallengeBody.from_json(
        {"type": "tls-alpn-01", "url": "https://ca/chall/1", "status": "pending", "token": TOKEN}
    )
    assert isinstance(body.chall, TLSALPN01)
    assert body.chall.encode("token") == TOKEN
    # the answer POSTed to the CA is an empty object (RFC 8555 §7.5.1)
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    assert body.chall.response(key).to_partial_json() == {}
    key_auth = body.chall.key_authorization(key)
    assert body.chall.validation(key) == hashlib.sha256(key_auth.encode()).digest()
