"""Make a throw-away CA and a TLS server certificate for Pebble's own HTTPS listeners.

Debian's pebble ships no test certificate, so hack/pebble/run.py (and through it the pytest
fixture in tests/fixtures/pebble.py) calls `make_certs(state_dir)`. The controller trusts the CA
via `caBundle`. Usable alone too:  python3 hack/pebble/mkcerts.py OUT_DIR

The certificate covers localhost, 127.0.0.1 and ::1. Files are reused while valid for another day.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DNS_NAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path  # give this to the controller as caBundle
    server_cert: Path
    server_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _still_valid(cert_path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def make_certs(out_dir: Path, *, days: int = 30) -> CertPaths:
    """Create (or reuse) ca.pem, server.pem and server.key in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(out_dir / "ca.pem", out_dir / "server.pem", out_dir / "server.key")
    if paths.server_key.exists() and _still_valid(paths.server_cert) and paths.ca_cert.exists():
        return paths

    now = datetime.now(UTC) - timedelta(minutes=5)
    until = now + timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "njet-cert-manager test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in IP_ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths.server_key, _pem_key(key), 0o600)
    _write(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: mkcerts.py OUT_DIR")
    made = make_certs(Path(sys.argv[1]))
    print(f"caBundle: {made.ca_cert}\ncert: {made.server_cert}\nkey: {made.server_key}")
