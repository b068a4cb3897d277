"""Frozen value types shared by every layer: desired specs, observed certs, actions.

Pure data only. Datetimes are always timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal

from controller.paths import store_key

KeyKind = Literal["rsa", "ecc"]
"""NJet's `cert_type` of a key, and the key type a TLS probe offers."""


class KeyType(StrEnum):
    RSA2048 = "rsa2048"
    RSA4096 = "rsa4096"
    EC256 = "ec256"
    EC384 = "ec384"

    @property
    def is_ecdsa(self) -> bool:
        return self in (KeyType.EC256, KeyType.EC384)

    @property
    def njet_cert_type(self) -> KeyKind:
        """NJet's `cert_type` for a key of this type ("rsa" or "ecc")."""
        return "ecc" if self.is_ecdsa else "rsa"


DEFAULT_KEY_TYPE = KeyType.RSA2048
"""The key type of a block with neither `keyType` nor a readable bootstrap certificate."""

KeyTypes = KeyType | tuple[KeyType, KeyType]
"""A `keyType` setting: one key type, or two (one RSA, one ECDSA: a dual certificate)."""


def first_key_type(value: KeyTypes | None) -> KeyType | None:
    """The key type of a `keyType` setting's first certificate (`<name>.crt`)."""
    return value[0] if isinstance(value, tuple) else value


class ActionKind(StrEnum):
    """What a planned action does (plan.Action); chosen by the policy chains (policy.py)."""

    ISSUE = "issue"
    RENEW = "renew"
    APPLY = "apply"
    DELETE = "delete"


class ChallengeType(StrEnum):
    HTTP = "http"  # http-01
    TLS = "tls"  # tls-alpn-01
    DNS = "dns"  # dns-01: a TXT record through the [dns] provider (adapters/dns/)


class Source(StrEnum):
    CONF = "njet.conf"  # a static server block
    EVENT = "event"  # a server announced at runtime by NJet (dyn_srv, MQTT)


@dataclass(frozen=True)
class CertificateSpec:
    """One wanted certificate: CN = names[0] (certinfo.csr_common_name: the first name of at
    most 64 characters), SAN = names.

    `domain` is the block's first name (= names[0]): what SNI, NJet targets and the
    [certificates] table use. `key` is the store key: `domain`, or `domain@<slot>` for the
    second certificate of a dual block (`keyType` a list of two, desired_source.expand_dual):
    `slot` is NJet's cert_type of that certificate's key type, and `dual` is set on both of the
    block's certificates. Desired.specs, the store, status and plan actions are keyed by `key`.
    `listens` are NJet's listen strings as GET
    /api/v1/ssl spells them ("127.0.0.1:8443", "0.0.0.0:8444", "[::1]:8445").
    `key_type` None means "follow the block's bootstrap certificate, else rsa2048".
    `bootstrap_cert` is the path of the block's `ssl_certificate` (for that detection).
    `challenge_type`, `profile`, `profile_required` and `reuse_key` come from the block's
    `[certificates."name"]` table; None means the [acme] value (desired_source.py sets the first
    two only when they differ from it, the others as the table says).
    """

    domain: str
    names: tuple[str, ...]
    listens: tuple[str, ...] = ()
    key_type: KeyType | None = None
    source: Source = Source.CONF
    origin: str = ""  # "conf/njet.conf:12" or "event"
    bootstrap_cert: str | None = None
    challenge_type: ChallengeType | None = None
    profile: str | None = None
    profile_required: bool | None = None  # a profile the CA does not offer is a ConfigError
    reuse_key: bool | None = None  # a renewal keeps the stored key (same key type only)
    slot: KeyKind | None = None  # the second certificate of a dual block: its cert_type
    dual: bool = False  # one of a dual block's two certificates (key types are explicit)

    @property
    def key(self) -> str:
        """The store key: `domain`, or `domain@slot` (paths.store_key)."""
        return store_key(self.domain, self.slot)


@dataclass(frozen=True)
class NameWarning:
    """A name that cannot be handled (wildcard, regex, `_`, empty), with why and where."""

    name: str
    reason: str
    origin: str


@dataclass(frozen=True)
class Desired:
    """The certificates this node wants (`specs`, by store key). In fleet mode (adapters/pg/
    nodes.py) `elsewhere` holds the keys only other live nodes want, each with those nodes:
    this node neither orders nor applies them, and does not count them as orphaned."""

    specs: Mapping[str, CertificateSpec]
    warnings: tuple[NameWarning, ...] = ()
    elsewhere: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class CertInfo:
    """Facts read from one leaf certificate (see certinfo.py)."""

    common_name: str | None
    names: tuple[str, ...]  # DNS SANs in certificate order
    not_before: datetime
    not_after: datetime
    key_type: KeyType | None  # None: a key type we do not manage (e.g. ed25519)
    serial: str  # hex
    fingerprint: str  # sha256 of the DER leaf, lowercase hex
    issuer: str  # RFC 4514 string

    @property
    def lifetime_seconds(self) -> float:
        return (self.not_after - self.not_before).total_seconds()


@dataclass(frozen=True)
class StoredCert:
    """A cert+key pair found in the store. `key_matches` False means: report, never use."""

    domain: str
    info: CertInfo
    key_matches: bool
    cert_url: str | None = None


@dataclass(frozen=True)
class ServedCert:
    """What a real TLS handshake to one of the block's listens showed (step 2)."""

    domain: str
    listen: str
    fingerprint: str | None  # None: the handshake failed
    error: str | None = None


@dataclass(frozen=True)
class NjetTarget:
    """Where to apply a certificate in the running NJet: GET /api/v1/ssl's own strings."""

    listens: tuple[str, ...]
    server_names: tuple[str, ...]


@dataclass(frozen=True)
class Observed:
    stored: Mapping[str, StoredCert]
    # domain -> served facts; empty in store-only mode
    served: Mapping[str, ServedCert] = field(default_factory=dict)
    # domains whose files exist but could not be used, with a human reason
    problems: Mapping[str, str] = field(default_factory=dict)
    # key type of each desired block's bootstrap certificate (ssl_certificate), when readable
    bootstrap_key_types: Mapping[str, KeyType] = field(default_factory=dict)
    # NJet view (empty in store-only mode): domain -> the server block(s) to PUT to, as GET
    # spells them (several when njet.conf blocks sharing a first name were merged)
    njet_targets: Mapping[str, tuple[NjetTarget, ...]] = field(default_factory=dict)
    # domain -> why the running NJet has no matching server (e.g. waiting for a reload)
    njet_unmatched: Mapping[str, str] = field(default_factory=dict)
    # set when NJet's API could not be read this pass
    njet_error: str | None = None


@dataclass(frozen=True)
class IssuedCert:
    """What an ACME order hands back, ready for the store."""

    cert_pem: bytes  # leaf + chain, as lego writes <domain>.crt
    issuer_pem: bytes  # the chain without the leaf (<domain>.issuer.crt)
    key_pem: bytes
    cert_url: str
    # the profile the newOrder asked for ("": none, the CA's default), and the one the CA's
    # order object named (None: it named none)
    profile: str = ""
    ca_profile: str | None = None
