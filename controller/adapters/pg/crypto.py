"""Private keys at rest in the fleet database: AES-256-GCM under a key the nodes hold outside the
database (`[store] encryptionKeyFile`), or in clear when none is configured.

Used by certs.py (certificate keys) and the account sync (account keys). `seal(data, label)`
returns (algorithm, bytes): "aes-256-gcm" with a fresh 12-byte nonce before the ciphertext, the
label (the store key or account path) bound as associated data, so a sealed key copied to
another row does not open; "none" keeps the bytes as they are. `open_(alg, blob, label)`
reverses it and raises StoreError naming the label (never the key) when it cannot: a wrong
encryption key, a row sealed for another label, a clear row while encryption is required is
still read (a store migrated before the key file was set), a sealed row without a key file is
refused. The key file holds 32 bytes: raw, or as 64 hex digits or base64 text.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.errors import ConfigError, StoreError

AES_GCM = "aes-256-gcm"
CLEAR = "none"
_NONCE = 12


def load_key_file(path: Path) -> bytes:
    """The 32-byte encryption key in `path` (ConfigError naming the file otherwise)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"[store] encryptionKeyFile {path}: {exc.strerror or exc}") from None
    if len(raw) == 32 and not all(c in b"0123456789abcdefABCDEF" for c in raw):
        return raw  # (32 hex digits would be a 16-byte key written as text: refused below)
    text = raw.strip()
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            key = decode(text.decode("ascii"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            continue
        if len(key) == 32:
            return key
    raise ConfigError(f"[store] encryptionKeyFile {path}: expected 32 bytes (raw, 64 hex digits "
                      "or base64); make one with `head -c 32 /dev/urandom > FILE`")


class KeySealer:
    """Seals and opens private keys (see the module docstring); `key` None: in clear."""

    def __init__(self, key: bytes | None) -> None:
        self._aead = AESGCM(key) if key is not None else None

    @property
    def encrypts(self) -> bool:
        return self._aead is not None

    def seal(self, data: bytes, label: str) -> tuple[str, bytes]:
        if self._aead is None:
            return CLEAR, data
        nonce = os.urandom(_NONCE)
        return AES_GCM, nonce + self._aead.encrypt(nonce, data, b"njcm:" + label.encode())

    def open_(self, alg: str, blob: bytes, label: str) -> bytes:
        if alg == CLEAR:
            return bytes(blob)
        if alg != AES_GCM:
            raise StoreError(f"the key of {label} is sealed with unknown algorithm {alg!r}")
        if self._aead is None:
            raise StoreError(f"the key of {label} is encrypted in the database, and this node "
                             "has no [store] encryptionKeyFile to open it")
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], b"njcm:" + label.encode())
        except InvalidTag:
            raise StoreError(f"the key of {label} does not open with this node's "
                             "encryptionKeyFile (another key, or a row of another name)") from None
