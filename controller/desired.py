"""The desired state: which certificates should exist, built from njet.conf and runtime events.

Called by reconcile (load_desired at every pass, merge_desired for servers NJet announced at
runtime) and by the CLI's `diff`. Pure apart from reading the conf files through conffiles.

Rules: one CertificateSpec per managed server block with an `ssl` listen; its domain (store
key, CN) is the block's first usable server_name, its SAN every usable name (lowercased, trailing
dot stripped, de-duplicated in order). Blocks whose first usable name is the same share ONE spec
(names and listens united, first block first), so the result never flips between them. Names
that cannot be issued become NameWarnings, never silently dropped.

Wildcards: without a [dns] section (`wildcards=False`) `*.x.test` is a warning that says to
configure one, and a leading dot name `.x.test` (nginx: x.test and *.x.test) keeps x.test and
warns about the wildcard half. With one (`wildcards=True`, dns-01 can prove them) `*.x.test` is
issued as is (its store name is `_.x.test`) and `.x.test` as x.test plus *.x.test, in one
certificate; desired_source.py then makes every certificate holding a wildcard use dns-01.
Other wildcard forms (`x.*`, `a.*.test`, `*.*.test`) no CA issues: always warnings.
Single-label names other than `localhost` are left to the CA to judge (private CAs issue them).
Conf-level warnings (an include glob matching nothing) travel the same way: a NameWarning whose
name is the directive (`include conf.d/*.conf`) and whose origin is its file:line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from controller.conffiles import ConfWarning, load_conf
from controller.errors import ConfigError
from controller.gcpause import gc_paused
from controller.model import CertificateSpec, Desired, KeyType, NameWarning, Source
from controller.njetconf import DEFAULT_MAX_CONF_BYTES, ServerBlock, http_servers
from controller.paths import validate_domain

_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")
_NO_WILDCARD = ("wildcard names need dns-01: configure a DNS provider in a [dns] section of"
                " the TOML (README: dns-01 and wildcards)")
_BAD_WILDCARD = ("wildcard names other than *.<name> (one leading label) cannot be issued by any"
                 " CA")


def is_wildcard(name: str) -> bool:
    """`*.x.test`: a name whose first label is `*` (the one wildcard form CAs issue)."""
    return name.startswith("*.")


def wildcard_base(name: str) -> str | None:
    """The issuable base of a wildcard spelling: "x.test" for `*.x.test` and `.x.test`, None
    for anything else (including `x.*` and `*.*.test`)."""
    base = name[2:] if name.startswith("*.") else name[1:] if name.startswith(".") else None
    if base is None or name_problem(base) is not None:
        return None
    return base


def canonical_name(name: str) -> str:
    """How a server_name is compared and issued: lowercased, one trailing dot removed."""
    lowered = name.strip().lower()
    return lowered[:-1] if lowered.endswith(".") else lowered


def name_problem(name: str) -> str | None:
    """Why `name` cannot be issued with http-01/tls-alpn-01, or None when it can."""
    if name.strip() == "":
        return 'empty name ("" matches requests without a Host header)'
    if name == "_":
        return '"_" is a catch-all placeholder, not a host name'
    if name.startswith("~"):
        return "regular expression names match many hosts and cannot be issued"
    if "$" in name:
        return "names with variables are only known at request time"
    if "*" in name:
        return _NO_WILDCARD if wildcard_base(canonical_name(name)) else _BAD_WILDCARD
    if name.startswith("."):
        return f"a leading dot means {name[1:]} and *{name} ({_NO_WILDCARD})"
    host = canonical_name(name)
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return "IP addresses are not issued here, only DNS names"
    if not host.isascii():
        return "non-ASCII name: write its punycode (xn--) form"
    bad = sorted(set(host) - _HOST_CHARS)
    if bad:
        return f"characters not allowed in a host name: {' '.join(repr(c) for c in bad)}"
    if len(host) > 253:
        return f"too long ({len(host)} characters, at most 253)"
    for label in host.split("."):
        if not label:
            return "empty label (two dots in a row, or a leading/trailing dot)"
        if len(label) > 63:
            return f"label {label[:20]}… is too long ({len(label)} characters, at most 63)"
        if not _LABEL_RE.match(label):
            return f'label "{label}" starts or ends with "-"'
    if host.rsplit(".", 1)[-1].isdigit():
        return "the last label is numeric (looks like an IP address)"
    if host == "localhost" or host.endswith(".localhost"):
        return "localhost names are reserved (RFC 6761); no CA issues them"
    try:
        validate_domain(host)
    except ConfigError as exc:
        return str(exc)
    return None


def usable_names(
    names: Iterable[str], origin: str, *, wildcards: bool = False
) -> tuple[tuple[str, ...], tuple[NameWarning, ...]]:
    """The issuable names (canonical, de-duplicated, in order) and a warning for each other;
    `wildcards`: dns-01 is configured, so `*.x` and `.x` (= x, *.x) are issuable too."""
    out: list[str] = []
    warnings: list[NameWarning] = []
    for raw in names:
        reason = name_problem(raw)
        candidate = canonical_name(raw)
        base = wildcard_base(candidate) if wildcards and reason is not None else None
        if base is not None:
            wanted = (base, f"*.{base}") if candidate.startswith(".") else (candidate,)
            out.extend(n for n in wanted if n not in out)
            continue
        if reason is not None:
            warnings.append(NameWarning(raw, reason, origin))
            if not (raw.startswith(".") and name_problem(raw[1:]) is None):
                continue
            candidate = canonical_name(raw[1:])
        if candidate not in out:
            out.append(candidate)
    return tuple(out), tuple(warnings)


def _unite(first: Iterable[str], second: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def _add(specs: dict[str, CertificateSpec], spec: CertificateSpec) -> None:
    old = specs.get(spec.domain)
    if old is None:
        specs[spec.domain] = spec
        return
    specs[spec.domain] = replace(
        old,
        names=_unite(old.names, spec.names),
        listens=_unite(old.listens, spec.listens),
        key_type=old.key_type or spec.key_type,
        bootstrap_cert=old.bootstrap_cert or spec.bootstrap_cert,
    )


def desired_from_servers(
    servers: Sequence[ServerBlock], *, key_type: KeyType | None = None, wildcards: bool = False
) -> Desired:
    """One spec per managed block with an ssl listen (merged by first usable name);
    `wildcards`: see the module docstring."""
    specs: dict[str, CertificateSpec] = {}
    warnings: list[NameWarning] = []
    for block in servers:
        if not block.managed or not block.has_ssl_listen:
            continue
        origin = f"{block.file}:{block.line}"
        if not block.names:
            warnings.append(NameWarning("", "managed server block has no server_name", origin))
            continue
        names, problems = usable_names(block.names, origin, wildcards=wildcards)
        warnings.extend(problems)
        if not names:
            continue
        listens = _unite((), (listen.address for listen in block.listens if listen.ssl))
        _add(specs, CertificateSpec(
            domain=names[0],
            names=names,
            listens=listens,
            key_type=key_type,
            source=Source.CONF,
            origin=origin,
            bootstrap_cert=block.ssl_certificate,
        ))
    return Desired(specs=specs, warnings=tuple(warnings))


def load_desired(conf_path: Path, *, key_type: KeyType | None = None,
                 max_conf_bytes: int = DEFAULT_MAX_CONF_BYTES, wildcards: bool = False) -> Desired:
    """Parse njet.conf (includes expanded) into the desired state.

    Relative ssl_certificate paths resolve against the main conf file's directory, which is
    what nginx/NJet use (their conf_prefix). Raises ConfSyntaxError (a ConfigError) on a broken
    conf, naming file:line, and when the conf breaks one of conffiles' bounds (`max_conf_bytes`
    is [njet] maxConfBytes).
    """
    return load_desired_and_files(conf_path, key_type=key_type,
                                  max_conf_bytes=max_conf_bytes, wildcards=wildcards)[0]


def load_desired_and_files(
    conf_path: Path, *, key_type: KeyType | None = None,
    max_conf_bytes: int = DEFAULT_MAX_CONF_BYTES, wildcards: bool = False,
) -> tuple[Desired, frozenset[str]]:
    """load_desired, plus every file the parse read (njet.conf and its includes) and every
    folder an include glob looked into (what a cache of the result must watch)."""
    conf_dir = Path(os.path.abspath(conf_path)).parent
    with gc_paused():
        loaded = load_conf(conf_path, max_bytes=max_conf_bytes)
        servers = http_servers(loaded.directives, conf_dir=conf_dir)
        base = desired_from_servers(servers, key_type=key_type, wildcards=wildcards)
        if loaded.warnings:
            base = replace(base, warnings=(*map(_conf_warning, loaded.warnings),
                                           *base.warnings))
        return base, loaded.files


def _conf_warning(w: ConfWarning) -> NameWarning:
    return NameWarning(w.subject, w.reason, w.origin)


def merge_desired(base: Desired, extra: Iterable[CertificateSpec], *,
                  wildcards: bool = False) -> Desired:
    """Unite runtime-announced specs into `base`: same domain -> names and listens united (base
    first, base's other fields kept). Extra names are cleaned like conf names (`wildcards` as
    there); unusable ones become warnings with the spec's origin."""
    specs = dict(base.specs)
    warnings = list(base.warnings)
    for spec in extra:
        origin = spec.origin or spec.source.value
        names, problems = usable_names(spec.names, origin, wildcards=wildcards)
        warnings.extend(problems)
        if not names:
            continue
        _add(specs, replace(spec, domain=names[0], names=names, listens=_unite((), spec.listens)))
    return Desired(specs=specs, warnings=tuple(warnings))
