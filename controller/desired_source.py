"""Desired state as the loop sees it: njet.conf (+ includes) merged with runtime-announced
servers, re-parsed only when one of its files changed.

Parsing a 10,000-block njet.conf takes about a second, so an unchanged conf is not parsed again:
the cache key is the (size, mtime, inode) of every file the parse read, of their folders (a new
file matching an include glob changes its folder), and of the runtime store. Passes that probe
(start-up, the periodic resync, NJet's events) ask for `fresh=True` and always re-parse.

The TOML's `[certificates."name"]` tables (`settings`, as CertSettings) are applied to every
spec built, conf and runtime alike (apply_settings): a table's keyType overrides the global one;
its challengeType and profile are set on the spec only where they differ from [acme]'s, its
profileRequired and reuseKey when the table sets them. A table
that names no desired certificate is a warning (it may be a typo) whose origin is the TOML file.

With a [dns] section (`wildcards=True`) wildcard names are issued (desired.py), and a
certificate holding one validates all its names through dns-01 (one mechanism per order:
use_dns_for_wildcards); a table asking for another challenge type for it gets a warning.

Dual certificates (expand_dual, the last step): a block whose keyType (its table's, else the
global `[acme] keyType`) is a list of two gets two specs, everything else alike: the first key
type's under the domain (store key `<name>`, `<name>.crt`), the second's under the store key
`<name>@<slot>` (slot: NJet's cert_type of the second key type, "ecc" or "rsa"). Both have
explicit key types, so neither follows the bootstrap certificate (`bootstrap_cert` None).

`load` may be called from the event loop and from a daemon thread (reconcile.py parses off the
loop); a lock makes one load at a time.

Called by reconcile.py through app.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from controller.desired import is_wildcard, load_desired_and_files, merge_desired
from controller.model import (
    ChallengeType,
    Desired,
    KeyTypes,
    NameWarning,
    first_key_type,
)
from controller.njetconf import DEFAULT_MAX_CONF_BYTES
from controller.ports import RuntimeSpecs

Signature = tuple[tuple[str, int, int, int], ...]


def _signature(paths: Iterable[str]) -> Signature:
    out: list[tuple[str, int, int, int]] = []
    for p in sorted(set(paths)):
        try:
            st = os.stat(p)
        except OSError:
            out.append((p, -1, -1, -1))
            continue
        out.append((p, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


@dataclass(frozen=True)
class CertSettings:
    """One `[certificates."name"]` table (config_sections.CertificateSettings); None = not set."""

    key_type: KeyTypes | None = None  # a tuple of two: a dual certificate (expand_dual)
    challenge_type: ChallengeType | None = None
    profile: str | None = None
    profile_required: bool | None = None
    reuse_key: bool | None = None


def apply_settings(
    desired: Desired,
    settings: Mapping[str, CertSettings],
    *,
    default_challenge: ChallengeType = ChallengeType.HTTP,
    default_profile: str = "",
    origin: str = "",
    wildcards: bool = False,
) -> Desired:
    """`desired` with each table applied to the spec of its name (a `.x.test` table also to
    the spec x.test), plus a warning per table no spec uses (`origin`: the TOML file)."""
    if not settings:
        return desired
    specs = dict(desired.specs)
    used: set[str] = set()
    for domain, spec in desired.specs.items():
        key, entry = _table_of(domain, settings)
        if entry is None:
            continue
        used.add(key)
        challenge = entry.challenge_type
        profile = entry.profile
        specs[domain] = replace(
            spec,
            key_type=first_key_type(entry.key_type) or spec.key_type,
            challenge_type=None if challenge in (None, default_challenge) else challenge,
            profile=None if profile in (None, default_profile) else profile,
            profile_required=entry.profile_required,
            reuse_key=entry.reuse_key,
        )
    unused = [NameWarning(key, _unused(key, desired, wildcards=wildcards), origin)
              for key in sorted(set(settings) - used)]
    return replace(desired, specs=specs, warnings=(*desired.warnings, *unused))


def _table_of(
    domain: str, settings: Mapping[str, CertSettings]
) -> tuple[str, CertSettings | None]:
    """The [certificates] table of `domain` (a `.x.test` table is also x.test's), and its key."""
    key = domain if domain in settings else f".{domain}"
    return key, settings.get(key)


def expand_dual(
    desired: Desired, settings: Mapping[str, CertSettings], default: KeyTypes | None = None
) -> Desired:
    """Each spec whose keyType (its table's, else `default`, [acme]'s) is a list of two as
    two specs: the first key type's under its domain and the second's under `domain@slot`
    (see the module docstring); every other spec as it is."""
    specs = dict(desired.specs)
    for domain, spec in desired.specs.items():
        entry = _table_of(domain, settings)[1]
        wanted = entry.key_type if entry is not None and entry.key_type is not None else default
        if not isinstance(wanted, tuple):
            continue
        first = replace(spec, key_type=wanted[0], bootstrap_cert=None, dual=True)
        second = replace(first, key_type=wanted[1], slot=wanted[1].njet_cert_type)
        specs[domain] = first
        specs[second.key] = second
    return replace(desired, specs=specs)


def use_dns_for_wildcards(
    desired: Desired, *, default_challenge: ChallengeType = ChallengeType.HTTP, origin: str = "",
) -> Desired:
    """Every spec holding a wildcard name validated through dns-01 (None when that is
    [acme]'s challengeType); a table's other challengeType for one is overridden, with a
    warning (`origin`: the TOML file)."""
    specs = dict(desired.specs)
    warnings = list(desired.warnings)
    wanted = None if default_challenge is ChallengeType.DNS else ChallengeType.DNS
    for domain, spec in desired.specs.items():
        if not any(is_wildcard(n) for n in spec.names) or spec.challenge_type is wanted:
            continue
        if spec.challenge_type not in (None, ChallengeType.DNS):
            warnings.append(NameWarning(domain, (
                f'challengeType "{spec.challenge_type.value}" cannot prove a wildcard name:'
                " this certificate is validated through dns-01"), origin))
        specs[domain] = replace(spec, challenge_type=wanted)
    return replace(desired, specs=specs, warnings=tuple(warnings))


def _unused(key: str, desired: Desired, *, wildcards: bool = False) -> str:
    what = f'[certificates."{key}"] has no effect'
    if key.startswith("*.") and not wildcards:
        return (f"{what}: wildcard certificates need dns-01: configure a DNS provider in a"
                " [dns] section")
    for domain, spec in sorted(desired.specs.items()):
        if key in spec.names:
            return f"{what}: {key} is a name of the certificate {domain}; name that instead"
    return f"{what}: no managed server block has this first server_name (a typo?)"


@dataclass
class DesiredSource:
    conf_path: Path
    key_type: KeyTypes | None  # [acme] keyType (two: every block without its own is dual)
    runtime: RuntimeSpecs
    max_conf_bytes: int = DEFAULT_MAX_CONF_BYTES  # [njet] maxConfBytes
    # [certificates."name"] tables and the [acme] values they are compared with
    settings: Mapping[str, CertSettings] = field(default_factory=dict)
    default_challenge: ChallengeType = ChallengeType.HTTP
    default_profile: str = ""
    settings_origin: str = ""  # the TOML file, for the unused-table warnings
    wildcards: bool = False  # a [dns] section exists: wildcard names are issued (dns-01)
    _files: frozenset[str] = field(default=frozenset())
    _signature: Signature | None = None
    _value: Desired | None = None
    parses: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _watched(self) -> list[str]:
        files = set(self._files) | {str(self.conf_path), str(self.runtime.path)}
        return [*files, *{os.path.dirname(f) for f in files}]

    def load(self, *, fresh: bool = False) -> Desired:
        with self._lock:
            return self._load(fresh=fresh)

    def _load(self, *, fresh: bool) -> Desired:
        if (
            not fresh
            and self._value is not None
            and _signature(self._watched()) == self._signature
        ):
            return self._value
        base, files = load_desired_and_files(self.conf_path,
                                             key_type=first_key_type(self.key_type),
                                             max_conf_bytes=self.max_conf_bytes,
                                             wildcards=self.wildcards)
        self.parses += 1
        extra = self.runtime.load()
        value = apply_settings(
            merge_desired(base, extra, wildcards=self.wildcards) if extra else base,
            self.settings, default_challenge=self.default_challenge,
            default_profile=self.default_profile, origin=self.settings_origin,
            wildcards=self.wildcards,
        )
        if self.wildcards:
            value = use_dns_for_wildcards(value, default_challenge=self.default_challenge,
                                          origin=self.settings_origin)
        value = expand_dual(value, self.settings, self.key_type)
        self._files = files
        self._value = value
        self._signature = _signature(self._watched())
        return value
