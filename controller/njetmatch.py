"""Which running NJet server a desired block is, and the exact arrays to address it with (pure).

NJet's GET /api/v1/ssl lists the server blocks it runs (see njet-contract §3.1); a PUT finds its
block by `listens[0]` + `serverNames[0]` only, compared as exact strings (§3.2: "0.0.0.0:8444",
never "127.0.0.1:8444", for `listen 8444`), and stores the retained record under a CRC of the
full arrays sent (§7). This module holds the key-free view of those servers (parsed by
adapters/njet/wire.py) and decides, without any I/O:

- `match_server`: the running server of a `CertificateSpec`, plus the `listens`/`serverNames` to
  PUT. They are GET's own arrays (= the arrays of NJet's MQTT events and of NJet's Go
  cert-manager, so one retained record per block and key type), with `listens[0]` rotated to a
  listen the spec also has and `serverNames[0]` to an exact name the spec also has, so the
  record still finds its block after a reload that renames or drops the other entries ([60]).
- `match_blocks`: every running block of a spec that unites several njet.conf blocks.
- `challenge_server`: the plain-HTTP server that takes the http-01 proxy location (exact
  `addr_port` + server name, as /api/v1/dyn_loc looks it up, §4).

Called by observe/execute (server lookup before apply and probe) and the http-01 challenge code.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from controller.model import CertificateSpec

ACME_CHALLENGE_RULE = "^~"
ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/"


@dataclass(frozen=True)
class NjetCertEntry:
    """One `certificates[]` entry of GET /api/v1/ssl, without the private key.

    `inline` is True for `data:` PEM entries (then `path` is None and `fingerprint` is the
    sha256 of the leaf's DER, lowercase hex, or None if the PEM could not be read); for
    file-path entries `path` is the certificate path and `fingerprint` is None (not read).
    """

    cert_type: str
    inline: bool
    path: str | None
    fingerprint: str | None


@dataclass(frozen=True)
class NjetServer:
    """One server block as GET /api/v1/ssl reports it (strings verbatim, config order)."""

    listens: tuple[str, ...]
    server_names: tuple[str, ...]
    certificates: tuple[NjetCertEntry, ...] = ()


@dataclass(frozen=True)
class LocationServer:
    """One server block of GET /api/v1/config/http_log with its location strings
    ("/", "^~ /.well-known/acme-challenge/")."""

    listens: tuple[str, ...]
    server_names: tuple[str, ...]
    locations: tuple[str, ...] = ()


class MatchStatus(StrEnum):
    FOUND = "found"
    # njet.conf has the block but the running NJet does not (edited, not reloaded yet)
    WAITING_FOR_RELOAD = "waiting for reload"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class MatchResult:
    """The outcome of `match_server`.

    FOUND: `server` is the running block; `listens`/`server_names` are the arrays to PUT.
    Otherwise `server` is None, the arrays are empty and `reason` says why, naming what NJet
    has instead; `candidates` lists the servers involved (all matches when AMBIGUOUS, the
    near misses - same names elsewhere, or same listen with other names - when waiting).
    """

    status: MatchStatus
    reason: str = ""
    server: NjetServer | None = None
    listens: tuple[str, ...] = ()
    server_names: tuple[str, ...] = ()
    candidates: tuple[NjetServer, ...] = ()

    @property
    def found(self) -> bool:
        return self.status is MatchStatus.FOUND


def canonical_listen(listen: str) -> str:
    """A listen string in one spelling for comparisons: "0.0.0.0:8444", "[::1]:8445".

    `*:p` and a bare port are the IPv4 wildcard (as NJet shows `listen 8444`); IPv6 is
    compressed and bracketed. Anything unparsable is returned lower-cased as is. Wildcard and
    specific addresses stay different: "127.0.0.1:8444" never equals "0.0.0.0:8444".
    """
    text = listen.strip().lower()
    if text.isdigit():
        return f"0.0.0.0:{int(text)}"
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return text
    if host in ("*", ""):
        return f"0.0.0.0:{int(port)}"
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        return f"{host}:{int(port)}"
    if addr.version == 6:
        return f"[{addr.compressed}]:{int(port)}"
    return f"{addr}:{int(port)}"


def _is_exact_name(name: str) -> bool:
    """A plain host name (no wildcard, regex or empty name), safe as `serverNames[0]`."""
    return bool(name) and not name.startswith("~") and "*" not in name and name != "_"


def _first_to_front(items: tuple[str, ...], index: int) -> tuple[str, ...]:
    return (items[index], *items[:index], *items[index + 1 :])


def _describe(server: NjetServer) -> str:
    return f"{'/'.join(server.listens)} {' '.join(server.server_names) or '(no name)'}"


def _put_arrays(
    spec: CertificateSpec, server: NjetServer
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """GET's arrays, reordered only when the first entry is not shared with the spec."""
    spec_listens = {canonical_listen(x) for x in spec.listens}
    listens = server.listens
    li = next((i for i, x in enumerate(server.listens) if canonical_listen(x) in spec_listens), 0)
    if li:
        listens = _first_to_front(listens, li)
    wanted = {n.lower() for n in spec.names}
    names = server.server_names
    first = names[0] if names else ""
    if not (first.lower() in wanted and _is_exact_name(first)):
        ni = next((i for i, n in enumerate(names) if n.lower() in wanted and _is_exact_name(n)), 0)
        names = _first_to_front(names, ni) if names else names
    return listens, names


def _names(server: NjetServer) -> set[str]:
    """The server's names, lowercased; a `.x.test` name also as the x.test and *.x.test it
    stands for (the names a desired spec of that block holds)."""
    out = {n.lower() for n in server.server_names}
    out.update(f"{part}{n[1:]}" for n in list(out) if n.startswith(".") and len(n) > 1
               for part in ("", "*."))
    return out


def _on_spec_listens(spec: CertificateSpec, servers: Sequence[NjetServer]) -> list[NjetServer]:
    spec_listens = {canonical_listen(x) for x in spec.listens}
    return [s for s in servers if spec_listens & {canonical_listen(x) for x in s.listens}]


def _found(spec: CertificateSpec, server: NjetServer) -> MatchResult:
    listens, names = _put_arrays(spec, server)
    return MatchResult(MatchStatus.FOUND, server=server, listens=listens, server_names=names)


def match_blocks(spec: CertificateSpec, servers: Sequence[NjetServer]) -> tuple[MatchResult, ...]:
    """Every running block of a spec that unites several njet.conf blocks (desired.py merges
    blocks with the same first name: names and listens united): the servers on the spec's
    listens that have `spec.names[0]`, when together they have every spec name and sit on every
    spec listen. One FOUND result each (arrays as in `match_server`), config order; empty when
    they do not cover the spec (then `match_server`'s reason says why).
    """
    if not spec.names:
        return ()
    first = spec.names[0].lower()
    blocks = [s for s in _on_spec_listens(spec, servers) if first in _names(s)]
    covered_names = set().union(*(_names(s) for s in blocks)) if blocks else set()
    covered_listens = {canonical_listen(x) for s in blocks for x in s.listens}
    if not blocks or not {n.lower() for n in spec.names} <= covered_names:
        return ()
    if not {canonical_listen(x) for x in spec.listens} <= covered_listens:
        return ()
    return tuple(_found(spec, s) for s in blocks)


def match_server(spec: CertificateSpec, servers: Sequence[NjetServer]) -> MatchResult:
    """The running server of `spec`: one that listens on one of `spec.listens` (same address
    and port; wildcard and specific addresses differ) and has every name of `spec.names`
    (case-insensitive; the server may have more, e.g. wildcards the spec leaves out).

    No such server -> WAITING_FOR_RELOAD (the block is in njet.conf, NJet does not run it yet:
    a new block, changed names or a changed listen). Two or more such servers, or a spec that
    unites several running blocks (see `match_blocks`) -> AMBIGUOUS.
    """
    wanted = {n.lower() for n in spec.names}
    on_listen = _on_spec_listens(spec, servers)
    matches = [s for s in on_listen if wanted <= _names(s)]
    if len(matches) == 1:
        return _found(spec, matches[0])
    want = f"{' '.join(spec.names)} on {', '.join(spec.listens) or '(no listen)'}"
    if matches:
        return MatchResult(
            MatchStatus.AMBIGUOUS,
            reason=f"{len(matches)} running NJet servers match {want}: "
            + "; ".join(_describe(s) for s in matches),
            candidates=tuple(matches),
        )
    if not spec.listens:
        return MatchResult(MatchStatus.WAITING_FOR_RELOAD, reason=f"no listen known for {want}")
    united = match_blocks(spec, servers)
    if united:
        blocks = tuple(r.server for r in united if r.server is not None)
        return MatchResult(
            MatchStatus.AMBIGUOUS,
            reason=f"{want} unites {len(blocks)} running NJet server blocks: "
            + "; ".join(_describe(s) for s in blocks),
            candidates=blocks,
        )
    elsewhere = [s for s in servers if s not in on_listen and wanted & _names(s)]
    near = on_listen + elsewhere
    if on_listen:
        detail = "servers there: " + "; ".join(_describe(s) for s in on_listen)
    else:
        detail = "NJet runs nothing on that listen"
    if elsewhere:
        detail += "; these names run on: " + "; ".join(_describe(s) for s in elsewhere)
    return MatchResult(
        MatchStatus.WAITING_FOR_RELOAD,
        reason=f"waiting for reload: NJet has no server {want} ({detail})",
        candidates=tuple(near),
    )


def challenge_server(
    name: str, addr_port: str, servers: Sequence[LocationServer]
) -> LocationServer | None:
    """The server dyn_loc would pick for `name` on `addr_port` (exact listen string, a name of
    the block, case-insensitive name), or None: NJet has no fallback to a default server."""
    lname = name.lower()
    for server in servers:
        if addr_port in server.listens and lname in (n.lower() for n in server.server_names):
            return server
    return None


def has_location(
    server: LocationServer,
    *,
    rule: str = ACME_CHALLENGE_RULE,
    name: str = ACME_CHALLENGE_PATH,
) -> bool:
    """Whether http_log lists the location `"<rule> <name>"` (e.g. the challenge proxy)."""
    wanted = f"{rule} {name}" if rule else name
    return wanted in server.locations
