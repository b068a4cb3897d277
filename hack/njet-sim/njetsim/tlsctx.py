"""TLS contexts: one per server block (RSA and ECDSA slots), one per TLS listen socket.

Called by runtime.py (block contexts) and listeners.py (listen contexts). A block context holds
both the RSA and the ECDSA certificate when the block has both: OpenSSL keeps one slot per key
type and picks by the client's signature algorithms/ciphers, like NJet. Python's
load_cert_chain needs files, so material is written to a private 0700 directory as 0600 files
and removed right after loading. The listen context's SNI callback switches to the block
context; a block whose worker failed to load its key answers with alert 40 (handshake failure).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from njetsim.certs import LoadedCert

ALPN = ["http/1.1"]
# Resolves the SNI name (None: no SNI) to a block context, or None for "fail with alert 40".
Selector = Callable[[str | None], ssl.SSLContext | None]


class ContextFactory:
    """Builds block contexts from loaded material, through a private temp directory."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="njet-sim-tls-"))
        os.chmod(self._dir, 0o700)

    def build(self, certs: Mapping[str, LoadedCert]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_alpn_protocols(ALPN)
        for key_type in ("rsa", "ecc"):
            cert = certs.get(key_type)
            if cert is None:
                continue
            stem = self._dir / uuid.uuid4().hex
            crt, key = stem.with_suffix(".crt"), stem.with_suffix(".key")
            try:
                for path, data in ((crt, cert.chain_pem), (key, cert.key_pem)):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(data)
                ctx.load_cert_chain(str(crt), str(key))
            finally:
                for path in (crt, key):
                    path.unlink(missing_ok=True)
        return ctx

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def listen_context(select: Selector) -> ssl.SSLContext:
    """The context of one TLS listen socket: everything is decided in the SNI callback."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_alpn_protocols(ALPN)

    def on_sni(sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None,
               _base: ssl.SSLContext) -> int | None:
        try:
            chosen = select(name)
        except Exception:  # never let a bug turn into a hung handshake
            chosen = None
        if chosen is None:
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        sslobj.context = chosen
        return None

    ctx.sni_callback = on_sni
    return ctx


def send_alerts_on_failed_handshakes() -> None:
    """Make asyncio send the alert OpenSSL queued when a server handshake fails.

    asyncio (3.11+ sslproto) closes such a connection without writing out the pending TLS
    alert, so clients would see a bare EOF where NJet sends alert 40 (handshake_failure), e.g.
    for an ECDSA-only client on an RSA-only block or a block whose key the worker could not
    read. This wraps SSLProtocol._on_handshake_complete to flush the outgoing BIO first.
    A private-API patch, applied once, only inside the simulator process.
    """
    from asyncio import sslproto

    base: Any = sslproto.SSLProtocol
    if getattr(base, "_njetsim_flush", False) or not hasattr(base, "_process_outgoing"):
        return

    class FlushingSSLProtocol(base):  # type: ignore[misc]
        _njetsim_flush = True

        def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
            if handshake_exc is not None:
                with contextlib.suppress(Exception):
                    data = self._outgoing.read()
                    if data:
                        self._transport.write(data)
            super()._on_handshake_complete(handshake_exc)

    sslproto.SSLProtocol = FlushingSSLProtocol  # type: ignore[misc]
