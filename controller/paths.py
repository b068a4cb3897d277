"""Every on-disk location the controller uses, derived from the NJet prefix in one place.

The layout under `<prefix>/.lego/` is lego's (and so NJet's own Go cert-manager's):
  certificates/<name>.crt|.key|.issuer.crt|.json   the live pairs
  certificates/<name>@<slot>.crt|...  the second certificate of a dual block (`keyType` a list
                           of two): <slot> is NJet's cert_type of its key type, "ecc" or "rsa"
  accounts/<ca-host>/<email>/account.json, keys/<email>.key
  status/<name>.json       our per-certificate retry / renewal status (<name>@<slot>.json too)
  quarantine/<name>.<ts>/  pairs taken out of service, kept quarantineRetention (adapters/store/
                           quarantine.py lists, restores and expires them)
  gc-confirm.json          an operator's release of deletions the deletion guard holds
  ledger/<ca host_port>.json  the rate-limit ledger of each CA (adapters/store/ledger.py)
  dns-cleanups.json        dns-01 TXT records written and not yet removed (adapters/dns/pending.py)
  journal/                 the swap journal (adapters/store/journal.py)
  journal-rejected/        journal entries recovery refused to act on, kept for inspection
  runtime/                 event-sourced desired state (servers announced at runtime)
  index.json               what each stored pair meant when last parsed (speeds up start)
  lock                     the single-writer lock

A certificate's store key (what names it in the store, the status, the plan, metrics and the
admin API) is its domain, or `<domain>@<slot>` for the second certificate of a dual block
(store_key / split_store_key / validate_store_key). "@" never occurs in a host name, so such a
key can never be mistaken for another domain; the slot must be "ecc" or "rsa", and "@" is
refused anywhere else (validate_domain, and so every path built from a name).
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from controller.errors import ConfigError

# A store name: a lowercase hostname (optionally with a leading "*." turned into "_.").
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}$")


def validate_domain(name: str) -> str:
    """Return `name` lowercased if it is a usable hostname, else raise ConfigError.

    Guards every path built from a name: no "/", "..", "%", unicode, or >253 chars.
    """
    lowered = name.strip().lower().rstrip(".")
    if not lowered or len(lowered) > 253 or not _HOSTNAME_RE.match(lowered):
        raise ConfigError(f"not a valid DNS name: {name!r}")
    return lowered


SLOTS: tuple[str, ...] = ("ecc", "rsa")
"""The second-slot names of a dual block's store key: NJet's cert_type of its key type."""
SLOT_SEP = "@"


def store_key(domain: str, slot: str | None = None) -> str:
    """The store key of a certificate: `domain`, or `domain@slot` for a dual block's second."""
    return domain if slot is None else f"{domain}{SLOT_SEP}{slot}"


def split_store_key(key: str) -> tuple[str, str | None]:
    """(domain, slot) of a store key: "a.test@ecc" -> ("a.test", "ecc"), "a.test" -> (.., None).
    Not validated (validate_store_key is)."""
    domain, sep, slot = key.partition(SLOT_SEP)
    return (domain, slot) if sep else (key, None)


def validate_store_key(key: str) -> str:
    """`key` lowercased if it is a store key: a valid domain (validate_domain), or one followed
    by exactly "@ecc" or "@rsa"; else ConfigError naming it."""
    domain, slot = split_store_key(key.strip().lower())
    if slot is None:
        return validate_domain(domain)
    bad = ConfigError(f"not a valid certificate name: {key!r} (a dual block's second"
                      " certificate is <name>@ecc or <name>@rsa)")
    if slot not in SLOTS or SLOT_SEP in domain:
        raise bad
    try:
        return store_key(validate_domain(domain), slot)
    except ConfigError:
        raise bad from None


def safe_file_name(domain: str) -> str:
    """lego's sanitized file name: "*" becomes "_" (a store key's "@<slot>" is kept)."""
    name, slot = split_store_key(validate_store_key(domain))
    return store_key(name.replace("*", "_"), slot)


def stem_domain(stem: str) -> str:
    """The store key a store file name stands for: "_.a.test" -> "*.a.test" (the inverse)."""
    return "*" + stem[1:] if stem.startswith("_.") else stem


def is_store_name(stem: str) -> bool:
    """True when `stem` is exactly what safe_file_name gives for some store key: a single, safe
    path component (no "/", "..", NUL, upper case; "@" only before "ecc" or "rsa" at the end),
    so journal records and store scans can be checked."""
    try:
        return safe_file_name(stem_domain(stem)) == stem
    except ConfigError:
        return False


@dataclass(frozen=True)
class StorePaths:
    prefix: Path

    @property
    def lego(self) -> Path:
        return self.prefix / ".lego"

    @property
    def certificates(self) -> Path:
        return self.lego / "certificates"

    @property
    def accounts(self) -> Path:
        return self.lego / "accounts"

    @property
    def status(self) -> Path:
        return self.lego / "status"

    @property
    def quarantine(self) -> Path:
        return self.lego / "quarantine"

    def quarantine_entry(self, entry: str) -> Path:
        """quarantine/<entry>/, one quarantined pair (entry = `<name>.<UTC stamp>[-N]`)."""
        return self.quarantine / entry

    @property
    def gc_confirm(self) -> Path:
        """The deletion guard's release (adapters/store/gcconfirm.py); holds no key material."""
        return self.lego / "gc-confirm.json"

    @property
    def dns_cleanups(self) -> Path:
        """dns-01 records to remove (adapters/dns/pending.py); names and TXT values only."""
        return self.lego / "dns-cleanups.json"

    @property
    def ledger(self) -> Path:
        """The rate-limit ledgers (adapters/store/ledger.py); names and times, no key."""
        return self.lego / "ledger"

    def ledger_file(self, ca_dir_url: str) -> Path:
        """ledger/<ca host_port>.json, named like lego's account folder of the CA."""
        host = (urlsplit(ca_dir_url).netloc or "ca").replace(":", "_")
        return self.ledger / f"{host}.json"

    @property
    def journal(self) -> Path:
        return self.lego / "journal"

    @property
    def journal_rejected(self) -> Path:
        """Where recovery moves journal entries it refuses to act on (adapters/store/journal.py)."""
        return self.lego / "journal-rejected"

    @property
    def runtime(self) -> Path:
        return self.lego / "runtime"

    @property
    def index(self) -> Path:
        """The store's parse index (adapters/store/index.py); holds no key material."""
        return self.lego / "index.json"

    @property
    def lock(self) -> Path:
        return self.lego / "lock"

    def cert(self, domain: str) -> Path:
        return self.certificates / f"{safe_file_name(domain)}.crt"

    def key(self, domain: str) -> Path:
        return self.certificates / f"{safe_file_name(domain)}.key"

    def issuer(self, domain: str) -> Path:
        return self.certificates / f"{safe_file_name(domain)}.issuer.crt"

    def resource(self, domain: str) -> Path:
        return self.certificates / f"{safe_file_name(domain)}.json"

    def status_file(self, domain: str) -> Path:
        return self.status / f"{safe_file_name(domain)}.json"

    def account_dir(self, ca_dir_url: str, email: str) -> Path:
        """lego's account folder: accounts/<ca host_port>/<email or 'noemail@example.com'>/."""
        parts = urlsplit(ca_dir_url)
        host = (parts.netloc or "ca").replace(":", "_")
        return self.accounts / host / (email or "noemail@example.com")


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def file_kind(mode: int, *, otherwise: str = "not a regular file") -> str:
    """What a non-regular file is, from its st_mode, for messages: "a FIFO", "a directory"..."""
    return next((name for test, name in _FILE_KINDS if test(mode)), otherwise)
