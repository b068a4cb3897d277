"""Test helper: mint certificates from a throwaway local CA (any names, dates, key types).

Used by unit, integration and e2e tests that need real PEMs without an ACME server:

    cert = make_cert(["a.test", "www.a.test"])                    # EC256 leaf, 90 days
    cert = make_cert(["a.test"], key_type=KeyType.RSA2048, lifetime=timedelta(hours=160))
    ca = LocalCA.create("Other CA"); cert = make_cert(["b.test"], issuer=ca)
    sub = ca.intermediate("Sub CA");  cert = make_cert(["c.test"], issuer=sub)
    store.put("a.test", cert.issued())                             # an IssuedCert for the store

`MadeCert.cert_pem` is the leaf alone, `chain_pem` the issuing CA certificates (what lego writes
as <domain>.issuer.crt), `fullchain_pem` = leaf + chain (what lego writes as <domain>.crt).
RSA key generation is slow; `cached_key(key_type, slot)` hands out one key per (type, slot) per
process so tests that only need "an RSA-4096 key" pay for it once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.certinfo import generate_private_key
from controller.model import IssuedCert, KeyType

_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _load_key(key_pem: bytes) -> _PrivateKey:
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@functools.cache
def cached_key(key_type: KeyType = KeyType.EC256, slot: int = 0) -> bytes:
    """A PKCS#8 PEM key of `key_type`, the same bytes for the same (type, slot) in a process."""
    return generate_private_key(key_type)


@functools.cache
def _ca_key(key_type: KeyType, name: str) -> bytes:
    return generate_private_key(key_type)


@dataclass(frozen=True)
class LocalCA:
    """A CA that lives only in memory. `chain_pem` = its own cert + its parents' (root last)."""

    name: str
    key_pem: bytes
    cert_pem: bytes
    chain_pem: bytes

    @classmethod
    def create(
        cls,
        name: str = "njcm test root",
        *,
        key_type: KeyType = KeyType.EC256,
        not_before: datetime | None = None,
        lifetime: timedelta = timedelta(days=3650),
    ) -> LocalCA:
        """A self-signed root CA."""
        key_pem = _ca_key(key_type, name)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start = not_before or datetime.now(UTC) - timedelta(days=1)
        cert = _ca_builder(subject, subject, _load_key(key_pem), start, lifetime).sign(
            _load_key(key_pem), hashes.SHA256()
        )
        pem = _pem(cert)
        return cls(name=name, key_pem=key_pem, cert_pem=pem, chain_pem=pem)

    def intermediate(self, name: str, *, key_type: KeyType = KeyType.EC256) -> LocalCA:
        """A sub-CA signed by this one (to test chains with more than one issuer cert)."""
        key_pem = _ca_key(key_type, name)
        parent = x509.load_pem_x509_certificate(self.cert_pem)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start = datetime.now(UTC) - timedelta(days=1)
        cert = _ca_builder(subject, parent.subject, _load_key(key_pem), start, timedelta(days=1825))
        signed = cert.sign(_load_key(self.key_pem), hashes.SHA256())
        pem = _pem(signed)
        return LocalCA(name=name, key_pem=key_pem, cert_pem=pem, chain_pem=pem + self.chain_pem)


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: _PrivateKey,
    start: datetime,
    lifetime: timedelta,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


@functools.cache
def default_ca() -> LocalCA:
    """The process-wide default issuer of `make_cert`."""
    return LocalCA.create()


@dataclass(frozen=True)
class MadeCert:
    cert_pem: bytes  # the leaf alone
    key_pem: bytes  # PKCS#8 unless a key was handed in
    chain_pem: bytes  # the issuer certificates (lego's <domain>.issuer.crt)
    fullchain_pem: bytes  # leaf + chain (lego's <domain>.crt)

    def issued(self, cert_url: str = "https://ca.test/acme/cert/1") -> IssuedCert:
        """The same certificate as an ACME order would hand it to the store."""
        return IssuedCert(
            cert_pem=self.fullchain_pem,
            issuer_pem=self.chain_pem,
            key_pem=self.key_pem,
            cert_url=cert_url,
        )


def make_cert(
    names: Sequence[str],
    *,
    key_type: KeyType = KeyType.EC256,
    not_before: datetime | None = None,
    lifetime: timedelta = timedelta(days=90),
    issuer: LocalCA | None = None,
    key_pem: bytes | None = None,
    common_name: str | None = None,
    with_san: bool = True,
    with_cn: bool = True,
    self_signed: bool = False,
) -> MadeCert:
    """A leaf for `names` (CN = names[0] unless `common_name`, SAN = names unless not with_san).

    `with_cn=False` leaves the subject without a CN (SAN only, as some CAs issue).

    `not_before` defaults to one hour ago (aware UTC); not_after = not_before + lifetime.
    `key_pem` reuses a key (its type wins over `key_type`); otherwise a fresh key is made.
    `self_signed` makes the leaf its own issuer (like NJet's bootstrap certs; chain empty).
    """
    if not names and common_name is None:
        raise ValueError("make_cert needs at least one name or a common_name")
    key_bytes = key_pem if key_pem is not None else generate_private_key(key_type)
    key = _load_key(key_bytes)
    start = not_before if not_before is not None else datetime.now(UTC) - timedelta(hours=1)
    cn = common_name if common_name is not None else names[0]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if with_cn else [])
    ca = None if self_signed else (issuer or default_ca())
    issuer_name = subject if ca is None else x509.load_pem_x509_certificate(ca.cert_pem).subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if with_san and names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    signer = key if ca is None else _load_key(ca.key_pem)
    leaf = _pem(builder.sign(signer, hashes.SHA256()))
    chain = b"" if ca is None else ca.chain_pem
    return MadeCert(cert_pem=leaf, key_pem=key_bytes, chain_pem=chain, fullchain_pem=leaf + chain)


def rsa_pkcs1_pem(key_pem: bytes) -> bytes:
    """The same RSA key as a PKCS#1 "RSA PRIVATE KEY" PEM (what `openssl genrsa` used to write)."""
    key = _load_key(key_pem)
    assert isinstance(key, rsa.RSAPrivateKey), "rsa_pkcs1_pem needs an RSA key"
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def ec_sec1_pem(key_pem: bytes) -> bytes:
    """The same EC key as a SEC1 "EC PRIVATE KEY" PEM (what `openssl ecparam -genkey` writes)."""
    key = _load_key(key_pem)
    assert isinstance(key, ec.EllipticCurvePrivateKey), "ec_sec1_pem needs an EC key"
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
