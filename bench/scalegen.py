"""Fixtures of bench 4: a prefix with N managed blocks and N stored, valid certificates.

Fast on purpose: one throwaway EC CA signs every leaf, and the leaves share a few P-256 keys
(generating 10,000 keys is what would be slow). Files are written directly in lego's layout
(`<name>.crt` = leaf + chain, `.key` PKCS#8 0600, `.issuer.crt`, `.json`) without fsync: this is
test data, not a store under protection. Also builds the simulator conf with N TLS servers for
the NJet I/O figure. Called by bench/scale.py.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SHARED_KEYS = 4


def scale_name(i: int) -> str:
    return f"s{i}.scale.test"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class ThrowawayCA:
    """An in-memory EC CA that signs leaves for any names, 90 days from an hour ago."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "njcm bench scale CA")])
        start = datetime.now(UTC) - timedelta(days=1)
        self.cert_pem = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )
        self.leaf_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(SHARED_KEYS)]
        self.leaf_key_pems = [_key_pem(k) for k in self.leaf_keys]
        self.start = datetime.now(UTC) - timedelta(hours=1)

    def leaf(self, names: list[str], serial: int, slot: int) -> bytes:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.name).public_key(self.leaf_keys[slot].public_key())
            .serial_number(serial).not_valid_before(self.start)
            .not_valid_after(self.start + timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        )


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def scale_conf(n: int, *, listen: str = "127.0.0.1:8443") -> str:
    parts = ["http {\n"]
    parts.extend(
        f"    server {{\n        listen {listen} ssl;\n        server_name {scale_name(i)};\n"
        "        ssl_certificate_management acme;\n    }\n"
        for i in range(n)
    )
    parts.append("}\n")
    return "".join(parts)


def write_store(prefix: Path, n: int, ca: ThrowawayCA) -> None:
    """N valid pairs under <prefix>/.lego/certificates in lego's layout."""
    certs = prefix / ".lego" / "certificates"
    certs.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = scale_name(i)
        slot = i % SHARED_KEYS
        leaf = ca.leaf([name], i + 1, slot)
        url = f"https://ca.scale.test/cert/{i + 1}"
        _write(certs / f"{name}.crt", leaf + ca.cert_pem, 0o644)
        _write(certs / f"{name}.issuer.crt", ca.cert_pem, 0o644)
        _write(certs / f"{name}.key", ca.leaf_key_pems[slot], 0o600)
        _write(certs / f"{name}.json", json.dumps(
            {"domain": name, "certUrl": url, "certStableUrl": url}, indent="\t").encode(), 0o600)


def sim_scale_conf(n: int) -> str:
    """A simulator njet.conf with N managed TLS servers on one port sharing one cert."""
    head = ("pid logs/njet.pid;\nerror_log logs/error.log info;\n{{helpers}}\n"
            "events { worker_connections 1024; }\nhttp {\n"
            "    ssl_certificate     certs/scale.crt;\n"
            "    ssl_certificate_key certs/scale.key;\n")
    body = "".join(
        f"    server {{\n        listen 127.0.0.1:{{{{port:https}}}} ssl;\n"
        f"        server_name {scale_name(i)};\n        ssl_certificate_management acme;\n"
        "    }\n"
        for i in range(n)
    )
    return head + body + "}\n"
