"""Which certificate names a server block's `server_name` values stand for (pure).

The one naming rule of the controller, for njet.conf blocks (desired.py) and for servers NJet
announces at runtime (events.py: `dyn_srv` adds, MQTT `generateCertificate` events, the retained
`/ins/srv/*` records), so a name means the same wherever it was written. config_sections.py
and dnsconfig.py use name_problem/canonical_name to check names the TOML holds.

usable_names(names, origin, wildcards=...) -> (certificate names, warnings): names are
lowercased, one trailing dot stripped, de-duplicated in order; a name that cannot be issued
becomes a NameWarning (with `origin`), never silently dropped.

Wildcards: without a [dns] section (`wildcards=False`) `*.x.test` is a warning that says to
configure one, and a leading dot name `.x.test` (nginx: x.test and *.x.test) keeps x.test and
warns about the wildcard half. With one (`wildcards=True`, dns-01 can prove them) `*.x.test` is
issued as is (its store name is `_.x.test`) and `.x.test` as x.test plus *.x.test, in one
certificate; desired_source.py then makes every certificate holding a wildcard use dns-01.
NJet reports these names verbatim (in events and GET /api/v1/ssl) and resolves them through its
own virtual-host matching on PUT (njet-contract wildcard-server-names.json).
Other wildcard forms (`x.*`, `a.*.test`, `*.*.test`) no CA issues: always warnings.
Single-label names other than `localhost` are left to the CA to judge (private CAs issue them).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from controller.errors import ConfigError
from controller.model import NameWarning
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
