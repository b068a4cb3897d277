"""Certificate/key material as NJet sees it: inline `data:` PEM or a file path.

Called by sslapi.py, dynsrv.py and runtime.py. The "agent" (root) reads any path; the
simulated unprivileged worker (`nobody`) can only read a path whose mode has the world-read
bit (worker_can_read). Error texts never contain key material.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


class CertLoadError(Exception):
    """`kind` is "cert" (certificate unreadable/invalid), "type" (cert_type does not match the
    key type; `real_type` says which it is) or "key" (key unreadable/invalid/not matching)."""

    def __init__(self, kind: str, detail: str, *, real_type: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.real_type = real_type


@dataclass(frozen=True)
class LoadedCert:
    key_type: str  # "rsa" | "ecc"
    chain_pem: bytes
    key_pem: bytes
    sha256: str  # leaf fingerprint, upper-case hex with colons (openssl's spelling)
    subject: str  # RFC 4514, e.g. "O=boot-a,CN=a.test"
    serial: str  # upper-case hex
    not_after: str  # ISO 8601 UTC

    def describe(self) -> dict[str, str]:
        return {"key_type": self.key_type, "sha256": self.sha256, "subject": self.subject,
                "serial": self.serial, "not_after": self.not_after}


def _hex_serial(n: int) -> str:
    """A serial as openssl prints it: upper-case hex, an even number of digits."""
    h = f"{n:X}"
    return "0" + h if len(h) % 2 else h


def read_material(value: str) -> bytes:
    """The PEM bytes behind a `data:` string or a path (read with the sim's own rights)."""
    if value.startswith("data:"):
        return value[5:].encode()
    with open(value, "rb") as fh:
        return fh.read()


def worker_can_read(value: str) -> bool:
    """Whether NJet's worker (user `nobody`) could open this: data: always, a path only when
    the file has the world-read bit (its directories are assumed searchable)."""
    if value.startswith("data:"):
        return True
    try:
        mode = os.stat(value).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_IROTH)


def _key_type(key: object) -> str | None:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "ecc"
    return None


def _spki(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_pair(cert_value: str, key_value: str, *, expect_type: str | None) -> LoadedCert:
    """Load and check one cert/key pair; `expect_type` None accepts either key type."""
    try:
        chain_pem = read_material(cert_value)
        chain = x509.load_pem_x509_certificates(chain_pem)
    except (OSError, ValueError) as exc:
        raise CertLoadError("cert", f"cannot load certificate: {type(exc).__name__}") from None
    leaf = chain[0]
    public = leaf.public_key()
    real = _key_type(public)
    if real is None:
        raise CertLoadError("type", "unsupported public key algorithm", real_type="unknown")
    if expect_type is not None and real != expect_type:
        raise CertLoadError("type", f"certinfo shows real type is {real}", real_type=real)
    try:
        key_pem = read_material(key_value)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CertLoadError("key", f"cannot load certificate key: {type(exc).__name__}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertLoadError("key", "unsupported private key algorithm")
    assert isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    if _spki(key.public_key()) != _spki(public):
        raise CertLoadError("key", "the private key does not match the certificate")
    pem_chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return LoadedCert(
        key_type=real,
        chain_pem=pem_chain,
        key_pem=key_pem,
        sha256=":".join(f"{b:02X}" for b in leaf.fingerprint(hashes.SHA256())),
        subject=leaf.subject.rfc4514_string(),
        serial=_hex_serial(leaf.serial_number),
        not_after=leaf.not_valid_after_utc.isoformat(),
    )


def cert_type_of(cert_value: str) -> str:
    """The key type of a certificate for GET listings; "rsa" when it cannot be read."""
    try:
        leaf = x509.load_pem_x509_certificates(read_material(cert_value))[0]
    except (OSError, ValueError):
        return "rsa"
    return _key_type(leaf.public_key()) or "rsa"
