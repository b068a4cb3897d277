"""The ACME account on disk, in lego's layout, so NJet's Go cert-manager and we share it.

Used by acme/connection.py (AcmeIssuer's base), from a worker thread. The layout
(StorePaths.account_dir):
    accounts/<ca host_port>/<email>/account.json      {"email", "registration": {"body", "uri"}}
    accounts/<ca host_port>/<email>/keys/<email>.key  PEM, "EC PRIVATE KEY" (lego reads SEC1/PKCS1)
Both files are mode 0600 in 0700 directories, written atomically (fsutil.atomic_write). A lego-
written account (RSA or EC key) is reused as it is. A missing or unreadable account.json with a
usable key means "register again with this key"; an unusable key file is a ConfigError (we never
overwrite somebody's account key). Both are read with fsutil.read_regular: a symlink, FIFO or
device, or a file over 1 MiB, is refused with the file named (the key: ConfigError).
Also: the EAB settings check and the registration body kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acme import messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy import b64
from josepy.jwa import ES256, ES384, ES512, RS256, JWASignature
from josepy.jwk import JWK, JWKEC, JWKRSA

from controller.adapters.store.fsutil import atomic_write, make_dirs, read_regular, store_error
from controller.errors import ConfigError
from controller.paths import StorePaths

NO_EMAIL = "noemail@example.com"
_EMAIL_RE = re.compile(r"^[^\s/\\@]+@[^\s/\\@]+$")
# Registration body fields worth keeping (lego's acme.Account); the CA's "key" echo is dropped.
_BODY_FIELDS = ("status", "contact", "termsOfServiceAgreed", "orders")


@dataclass(frozen=True)
class AccountFiles:
    directory: Path
    account_json: Path
    key: Path


@dataclass(frozen=True)
class StoredAccount:
    key_pem: bytes
    uri: str | None  # None: only the key exists, (re-)register with it
    body: dict[str, Any]


def validate_email(email: str) -> str:
    """The account email ("" allowed); ConfigError for anything unsafe as a directory name."""
    email = email.strip()
    if email and (not _EMAIL_RE.match(email) or email.startswith(".") or len(email) > 254):
        raise ConfigError(f"[acme] email {email!r} is not a valid email address")
    return email


def account_files(paths: StorePaths, directory_url: str, email: str) -> AccountFiles:
    directory = paths.account_dir(directory_url, email)
    user = email or NO_EMAIL
    return AccountFiles(directory, directory / "account.json", directory / "keys" / f"{user}.key")


def new_account_key() -> bytes:
    """A fresh P-256 account key as lego writes it (SEC1 "EC PRIVATE KEY" PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def jwk_for(key_pem: bytes, where: Path) -> tuple[JWK, JWASignature]:
    """The JWK and JWS algorithm for an account key (RSA -> RS256, EC -> ES256/384/512)."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"account key {where} is not a usable PEM private key ({type(exc).__name__}); move it"
            " away to register a new account"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        return JWKRSA(key=key), RS256
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = {256: ES256, 384: ES384, 521: ES512}.get(key.curve.key_size)
        if alg is not None:
            return JWKEC(key=key), alg
    raise ConfigError(f"account key {where}: unsupported key type (use RSA or EC P-256/384/521)")


def load_account(files: AccountFiles) -> StoredAccount | None:
    """The stored account, or None when there is no key yet."""
    try:
        key_pem = read_regular(files.key)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read account key {files.key}: {exc.strerror}") from None
    try:
        data = json.loads(read_regular(files.account_json).decode("utf-8"))
        reg = data.get("registration") or {}
        uri = reg.get("uri") or None
        body = reg.get("body") or {}
        if not isinstance(uri, str | None) or not isinstance(body, dict):
            uri, body = None, {}
    except (OSError, ValueError, AttributeError):
        uri, body = None, {}
    return StoredAccount(key_pem=key_pem, uri=uri, body=body)


def save_key(files: AccountFiles, key_pem: bytes) -> None:
    _write(files.key, key_pem)


def save_registration(files: AccountFiles, email: str, uri: str, body: dict[str, Any]) -> None:
    kept = {k: body[k] for k in _BODY_FIELDS if k in body}
    doc = {"email": email, "registration": {"body": kept, "uri": uri}}
    _write(files.account_json, (json.dumps(doc, indent="\t") + "\n").encode("utf-8"))


def _write(path: Path, data: bytes) -> None:
    try:
        make_dirs(path.parent, mode=0o700)
        atomic_write(path, data, mode=0o600)
    except OSError as exc:
        raise store_error("write", path, exc) from None


def registration_body(reg: messages.Registration) -> dict[str, Any]:
    """lego's registration body fields from the CA's answer."""
    body: dict[str, Any] = {}
    if reg.status is not None:
        # acme declares a Status but decodes no "status" field of a Registration: a str
        body["status"] = str(getattr(reg.status, "name", reg.status))
    if reg.contact:
        body["contact"] = list(reg.contact)
    if reg.terms_of_service_agreed is not None:
        body["termsOfServiceAgreed"] = bool(reg.terms_of_service_agreed)
    return body


def check_eab(kid: str, hmac_key: str) -> tuple[str, str]:
    """The stripped (eabKid, eabHmacKey); ConfigError unless both or neither are set."""
    kid, hmac_key = kid.strip(), hmac_key.strip()
    if bool(kid) != bool(hmac_key):
        raise ConfigError("[acme] eabKid and eabHmacKey must be set together")
    if hmac_key:
        try:
            decoded = b64.b64decode(hmac_key)
        except (ValueError, TypeError):
            decoded = b""
        if not decoded:
            raise ConfigError("[acme] eabHmacKey is not base64url")
    return kid, hmac_key
