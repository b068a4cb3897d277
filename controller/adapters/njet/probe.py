"""Proves which certificate NJet really serves: one TLS handshake per (listen, SNI, key type).

GET /api/v1/ssl is not the served state (njet-contract §3.1, §3.4) and a dual-cert block
serves RSA or ECDSA by the client's offer (§3.3), so the probe offers only the key type it
checks: TLS 1.2 with ECDHE-RSA suites only for "rsa", ECDHE-ECDSA suites only for "ecc". The
chain is not verified (we compare fingerprints: sha256 of the DER leaf, lowercase hex, as
CertInfo.fingerprint). Wildcard listens are reached over loopback. Network failures (refused,
alert, timeout) come back as a result with `error`, never as an exception.

Called by observe (served state) and execute (verify after an apply) through app.tls_probe.
"""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Literal

KeyKind = Literal["rsa", "ecc"]

_CIPHERS: dict[str, str] = {
    "rsa": "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384",
    "ecc": "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384",
}
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1", "": "127.0.0.1"}


@dataclass(frozen=True)
class ProbeResult:
    """`fingerprint` of the served leaf (None when the handshake failed, then `error` says why);
    `chain_fingerprints` of every certificate the server sent, leaf first (empty if unknown)."""

    fingerprint: str | None
    chain_fingerprints: tuple[str, ...] = ()
    error: str | None = None
    cipher: str | None = None


def probe_target(listen: str) -> tuple[str, int]:
    """Where to connect for an NJet listen string: "0.0.0.0:8444" -> ("127.0.0.1", 8444),
    "[::]:p" -> ("::1", p), "[::1]:8445" -> ("::1", 8445), a bare port -> 127.0.0.1.
    Raises ValueError for a string without a port."""
    text = listen.strip()
    if text.isdigit():
        host, port_text = "", text
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"listen {listen!r} has no port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"listen {listen!r}: port out of range")
    if host in _WILDCARDS:
        return _WILDCARDS[host], port
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_unspecified:
            return ("::1" if ":" in host else "127.0.0.1"), port
    return host, port


def client_context(key_kind: KeyKind) -> ssl.SSLContext:
    """A TLS 1.2-only client context offering only `key_kind`'s ECDHE suites, no verification."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_CIPHERS[key_kind])
    return ctx


def _sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _chain_fingerprints(obj: ssl.SSLObject) -> tuple[str, ...]:
    # Public in Python 3.13 (SSLSocket.get_unverified_chain); 3.11 has it on the C object.
    inner = getattr(obj, "_sslobj", None)
    getter = getattr(inner, "get_unverified_chain", None)
    if getter is None:
        return ()
    try:
        chain = getter() or []
        return tuple(_sha256_hex(c.public_bytes(_ssl.ENCODING_DER)) for c in chain)
    except (AttributeError, ValueError, ssl.SSLError):
        return ()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "no TLS handshake within the timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | EOFError):
        return "TLS handshake failed: the server closed the connection (no certificate for it?)"
    if isinstance(exc, OSError):
        return f"connection failed: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


async def probe(
    listen: str,
    sni: str,
    *,
    key_kind: KeyKind,
    timeout: float = 5.0,  # noqa: ASYNC109 - part of the Prober interface
) -> ProbeResult:
    """Handshake with NJet's `listen` (as GET /api/v1/ssl spells it) using `sni` ("" for none),
    offering only `key_kind`; returns the served leaf's fingerprint, or an error result."""
    where = f"{listen} (SNI {sni or '-'}, {key_kind})"
    try:
        host, port = probe_target(listen)
        ctx = client_context(key_kind)
    except (ValueError, KeyError, ssl.SSLError) as exc:
        return ProbeResult(fingerprint=None, error=f"{where}: cannot probe: {exc}")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ctx,
                server_hostname=sni or "",
                ssl_handshake_timeout=max(timeout, 0.01),
            )
        obj = writer.get_extra_info("ssl_object")
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        if not der:
            return ProbeResult(fingerprint=None, error=f"{where}: server sent no certificate")
        return ProbeResult(
            fingerprint=_sha256_hex(der),
            chain_fingerprints=_chain_fingerprints(obj),
            cipher=(obj.cipher() or (None,))[0],
        )
    except (OSError, TimeoutError, EOFError) as exc:
        return ProbeResult(fingerprint=None, error=f"{where} via {host}:{port}: {_describe(exc)}")
    finally:
        if writer is not None:
            # The certificate is all we want: no close_notify round trip to wait for.
            writer.transport.abort()
