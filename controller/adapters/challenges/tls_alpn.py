"""tls-alpn-01 (RFC 8737): the ACME challenge type and the controller's own TLS responder.

acme 5.x dropped tls-alpn-01, so this module registers `TLSALPN01` in acme's challenge registry
on import (adapters/acme/client.py imports it) so authorizations deserialize it as a
`KeyAuthorizationChallenge`. `LocalTlsAlpn01Solver(address)` implements ports.ChallengeSolver
(and is re-exported by challenges/solvers.py):
while a challenge is presented it runs a TLS server on `address` that negotiates ALPN
`acme-tls/1` and, chosen per SNI name in an `sni_callback`, presents a self-signed certificate
whose only SAN is that name and which carries the critical acmeIdentifier extension
(1.3.6.1.5.5.7.1.31) = DER OCTET STRING of SHA-256(key authorization). Unknown SNI names get an
`unrecognized_name` alert. Concurrent orders share the listener
(challenge_server.SharedListener).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from acme import challenges as acme_challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from josepy.jwk import JWK

from controller.adapters.challenges.server import TLS_ALPN_01, SharedListener
from controller.clock import utc_now
from controller.logs import log_event

ALPN_PROTOCOL = "acme-tls/1"
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
_HANDSHAKE_TIMEOUT = 10.0


class TLSALPN01Response(acme_challenges.KeyAuthorizationChallengeResponse):
    """ACME tls-alpn-01 challenge response (the POSTed body is `{}`)."""

    typ = TLS_ALPN_01


class TLSALPN01(acme_challenges.KeyAuthorizationChallenge):
    """ACME tls-alpn-01 challenge."""

    response_cls = TLSALPN01Response
    typ = TLS_ALPN_01

    def validation(self, account_key: JWK, **unused_kwargs: Any) -> bytes:
        """SHA-256 of the key authorization: the acmeIdentifier extension's content."""
        return hashlib.sha256(self.key_authorization(account_key).encode("ascii")).digest()


if TLS_ALPN_01 not in acme_challenges.Challenge.TYPES:
    acme_challenges.ChallengeResponse.register(TLSALPN01Response)
    acme_challenges.Challenge.register(TLSALPN01)


def acme_identifier_value(key_authorization: str) -> bytes:
    """DER OCTET STRING holding SHA-256(key authorization)."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return bytes([0x04, len(digest)]) + digest


def challenge_certificate(
    domain: str, key_authorization: str, *, now: datetime
) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) of the RFC 8737 validation certificate for `domain`, valid from an
    hour before `now` to a week after."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, domain)] if len(domain) <= 64 else []
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .add_extension(
            x509.UnrecognizedExtension(
                ACME_IDENTIFIER_OID, acme_identifier_value(key_authorization)
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ALPN_PROTOCOL])
    return ctx


def _context_for(domain: str, key_authorization: str, now: datetime) -> ssl.SSLContext:
    cert_pem, key_pem = challenge_certificate(domain, key_authorization, now=now)
    ctx = _server_context()
    # ssl can only load a chain from files: a private temp dir, removed right away.
    with tempfile.TemporaryDirectory(prefix="tls-alpn-") as tmp:
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_bytes(cert_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _normalize(name: str) -> str:
    return name.strip().lower().rstrip(".")


class LocalTlsAlpn01Solver:
    """tls-alpn-01 answered by the controller's own TLS server on `address`."""

    challenge_type: str = TLS_ALPN_01

    def __init__(self, address: str = ":443", *, clock: Callable[[], datetime] = utc_now) -> None:
        self._clock = clock  # the validation certificates' validity starts from it
        # domain -> [(key authorization, context)]; the last presented one is served.
        self._contexts: dict[str, list[tuple[str, ssl.SSLContext]]] = {}
        self._listener = SharedListener(address, "tls-alpn-01 challenge server", self._serve)
        self._base = _server_context()
        self._base.sni_callback = self._select

    @property
    def address(self) -> str:
        return self._listener.address

    @property
    def ports(self) -> list[int]:
        return self._listener.ports

    async def present(self, domain: str, token: str, key_authorization: str) -> None:
        name = _normalize(domain)
        entry = (key_authorization, _context_for(name, key_authorization, self._clock()))
        self._contexts.setdefault(name, []).append(entry)
        try:
            await self._listener.acquire()
        except BaseException:
            self._drop(name, key_authorization)
            raise
        log_event("tls-alpn-01 challenge presented", level=logging.DEBUG, domain=name)

    async def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        self._drop(_normalize(domain), key_authorization)
        await self._listener.release_quietly()

    async def close(self) -> None:
        self._contexts.clear()
        await self._listener.close()

    def _drop(self, name: str, key_authorization: str) -> None:
        entries = self._contexts.get(name, [])
        for i, (ka, _) in enumerate(entries):
            if ka == key_authorization:
                del entries[i]
                break
        if not entries:
            self._contexts.pop(name, None)

    def _select(
        self, ssl_obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        entries = self._contexts.get(_normalize(server_name or ""))
        if not entries:
            log_event("tls-alpn-01: no challenge for this SNI name", level=logging.DEBUG,
                      sni=server_name)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_obj.context = entries[-1][1]
        return None

    async def _serve(self, host: str | None, port: int) -> asyncio.Server:
        return await asyncio.start_server(
            self._handle, host, port, ssl=self._base, reuse_address=True,
            ssl_handshake_timeout=_HANDSHAKE_TIMEOUT,
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The validation is the handshake itself; wait briefly for the client to hang up.
        try:
            with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):
                await asyncio.wait_for(reader.read(1024), 5)
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                await asyncio.wait_for(writer.wait_closed(), 2)
