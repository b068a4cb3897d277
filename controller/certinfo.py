"""Pure X.509 / PEM facts: key generation, CSRs, reading certificates, key matching.

No I/O beyond the bytes handed in. Called by the store, the ACME client, the NJet client and
observe. All datetimes returned are aware UTC. Unparsable input raises ValueError with a message
that names what could not be read and never includes key material.

Key types: P-256 and P-384 map to ec256/ec384; RSA maps by strength class: 2048 <= bits < 4096
is rsa2048 and bits >= 4096 is rsa4096 (so an adopted lego RSA-3072 cert satisfies an rsa2048
wish and an RSA-8192 one an rsa4096 wish instead of being re-issued); RSA under 2048 bits, other
curves and Ed25519/Ed448 are None (a type we do not manage, so it is replaced).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from controller.model import CertInfo, KeyType

_CURVES: dict[KeyType, ec.EllipticCurve] = {
    KeyType.EC256: ec.SECP256R1(),
    KeyType.EC384: ec.SECP384R1(),
}
_CURVE_TYPES: dict[str, KeyType] = {"secp256r1": KeyType.EC256, "secp384r1": KeyType.EC384}
_PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL
)


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


CN_MAX_LENGTH = 64
"""RFC 5280's upper bound on a commonName (ub-common-name); a DNS name may be up to 253."""


def csr_common_name(names: Sequence[str]) -> str | None:
    """The CN a CSR for `names` carries: names[0], or when that is longer than CN_MAX_LENGTH
    the first name that fits; None when none fits (the CSR then has an empty subject, and the
    names are in the SAN only, which is what clients check)."""
    return next((n for n in names if len(n) <= CN_MAX_LENGTH), None)


def make_csr_pem(key_pem: bytes, names: Sequence[str]) -> bytes:
    """A CSR with CN = csr_common_name(names) and every name in the SAN, signed by `key_pem`."""
    if not names:
        raise ValueError("a CSR needs at least one name")
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("only RSA and ECDSA keys are supported")
    cn = csr_common_name(names)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn is not None else []
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(subject))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def split_pem_chain(pem: bytes) -> list[bytes]:
    """Every CERTIFICATE block of `pem`, in order, each ending with a newline.

    Text outside the blocks (comments, keys, blank lines) is dropped; an empty list means none.
    """
    return [m.group(0) + b"\n" for m in _PEM_CERT_RE.finditer(pem)]


def _load_first_cert(pem: bytes) -> x509.Certificate:
    blocks = split_pem_chain(pem)
    if not blocks:
        raise ValueError("no PEM certificate block found")
    try:
        return x509.load_pem_x509_certificate(blocks[0])
    except ValueError as exc:
        raise ValueError(f"the first PEM certificate cannot be parsed: {exc}") from None


def _load_private_key(key_pem: bytes) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None:
    """The key, or None for a valid key of another algorithm. ValueError when unreadable."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted (a passphrase is not supported)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        # The library's messages describe the format problem, never the key bytes.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"the private key cannot be parsed: {reason}") from None
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    return None


def _key_type_of_public(public: object) -> KeyType | None:
    if isinstance(public, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        bits = public.key_size
        if bits >= 4096:
            return KeyType.RSA4096
        return KeyType.RSA2048 if bits >= 2048 else None
    if isinstance(public, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return _CURVE_TYPES.get(public.curve.name)
    return None


def fingerprint_der(der: bytes) -> str:
    """SHA-256 of DER bytes as lowercase hex (what `CertInfo.fingerprint` holds)."""
    return hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: bytes) -> str:
    """SHA-256 fingerprint of the first certificate of `pem`."""
    return fingerprint_der(_load_first_cert(pem).public_bytes(serialization.Encoding.DER))


def read_cert_info(pem: bytes) -> CertInfo:
    """Facts of the first (leaf) certificate of `pem`; the rest of a chain is ignored.

    `names` are the DNS SANs in certificate order, or the CN alone when there is no SAN.
    """
    cert = _load_first_cert(pem)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    except ValueError as exc:
        raise ValueError(f"the certificate's subjectAltName cannot be parsed: {exc}") from None
    if not names and common_name:
        names = (common_name,)
    try:
        public: object = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        public = None
    return CertInfo(
        common_name=common_name,
        names=names,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_type=_key_type_of_public(public),
        serial=format(cert.serial_number, "x"),
        fingerprint=fingerprint_der(cert.public_bytes(serialization.Encoding.DER)),
        issuer=cert.issuer.rfc4514_string(),
    )


def key_type_of_key(key_pem: bytes) -> KeyType | None:
    """KeyType of a PEM private key (PKCS#8, PKCS#1 "RSA PRIVATE KEY" or SEC1 "EC PRIVATE KEY").

    None for a readable key we do not manage (see the module docstring for the RSA sizes).
    """
    return _key_type_of_public(_load_private_key(key_pem))


def key_type_of_cert(cert_pem: bytes) -> KeyType | None:
    """KeyType of the first certificate's public key (None: not a type we manage)."""
    return read_cert_info(cert_pem).key_type


def key_matches_cert(key_pem: bytes, cert_pem: bytes) -> bool:
    """True when the private key belongs to the first certificate of `cert_pem`.

    Compares the public keys (SubjectPublicKeyInfo DER). Raises ValueError when either side
    cannot be parsed; a readable key of another algorithm simply does not match.
    """
    cert = _load_first_cert(cert_pem)
    key = _load_private_key(key_pem)
    if key is None:
        return False
    try:
        cert_public = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == cert_public.public_bytes(*spki)
