"""Checks of what AcmeIssuer (acme/client.py) is given and gets back: the CA URL, the caBundle
file, the names of a spec, a key handed in for reuse, and that an issued leaf carries our key.
Each raises a ConfigError or PermanentError naming the key or names at fault, never a private
key.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.certinfo import key_type_of_key
from controller.errors import ConfigError, PermanentError
from controller.model import CertificateSpec, KeyType
from controller.paths import validate_domain


def names_of(spec: CertificateSpec) -> tuple[str, ...]:
    raw = spec.names or (spec.domain,)
    return tuple(dict.fromkeys(validate_domain(n) for n in raw))


def check_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigError(f"[acme] acmeCaDir {url!r} is not an http(s) URL")
    return url


def check_ca_bundle(path: Path | None, key: str = "[acme] caBundle") -> Path | None:
    """`path` when it holds PEM certificates; `key` names the setting in errors (a
    [[acme.fallback]] CA's: "acme.fallback[0].caBundle")."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key} {path}: cannot read it ({exc.strerror})") from None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{key} {path}: no PEM certificate in it") from None
    return path


def check_reused_key(key_pem: bytes, key_type: KeyType, names: tuple[str, ...]) -> None:
    """A key handed in for reuse (reuseKey) is readable and of the key type ordered."""
    try:
        have = key_type_of_key(key_pem)
    except ValueError as exc:  # says what is wrong with the format, never the key
        raise PermanentError(f"the key to reuse for {', '.join(names)}: {exc}") from None
    if have is not key_type:
        raise PermanentError(f"the key to reuse for {', '.join(names)} is "
                             f"{have or 'of an unmanaged type'}, not {key_type}")


def check_key_matches(leaf_pem: bytes, key_pem: bytes, names: tuple[str, ...]) -> None:
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise PermanentError(
            f"the CA returned a certificate for {', '.join(names)} that does not match our key"
        )
