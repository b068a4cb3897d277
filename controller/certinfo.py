"""Pure X.509 / PEM facts: key generation, CSRs, reading certificates, key matching.

No I/O beyond the bytes handed in. Called by the store, the ACME client, the NJet client and
observe. All datetimes returned are aware UTC.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from controller.model import KeyType

_CURVES: dict[KeyType, ec.EllipticCurve] = {KeyType.EC256: ec.SECP256R1(), KeyType.EC384: ec.SECP384R1()}


def generate_private_key(key_type: KeyType) -> bytes:
    """A fresh private key of `key_type` as unencrypted PKCS#8 PEM."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if key_type.is_ecdsa:
        key = ec.generate_private_key(_CURVES[key_type])
    else:
        bits = 4096 if key_type is KeyType.RSA4096 else 2048
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr_pem(key_pem: bytes, names: Sequence[str]) -> bytes:
    """A CSR with CN = names[0] and every name in the SAN, signed by `key_pem`."""
    if not names:
        raise ValueError("a CSR needs at least one name")
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("only RSA and ECDSA keys are supported")
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)
