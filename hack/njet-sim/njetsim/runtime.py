"""One configuration generation: the server blocks with their API view and their served view.

Built by master.py at start and at every reload; changed by sslapi.py, dynapi.py and replay.py;
read by listeners.py/stream.py for routing. Each Block keeps two views, like NJet's processes:
the agent's (what GET /api/v1/ssl lists: config cert + one entry per successful add) and the
worker's (what a handshake gets: one certificate per key type, `broken` after a key the
`nobody` worker could not read, `in_worker` False for a dyn server the worker failed to add).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from njetsim.certs import CertLoadError, LoadedCert, cert_type_of, load_pair
from njetsim.conf import Listen, LocationConf, ServerConf, SimConf, SimConfError
from njetsim.tlsctx import ContextFactory

ACCESS_LOG_FORMATS = [{
    "name": "combined", "escape": "default",
    "format": '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
              '"$http_referer" "$http_user_agent"',
}]


@dataclass(eq=False)
class Block:
    conf: ServerConf
    dynamic: bool = False
    entries: list[dict[str, str]] = field(default_factory=list)
    n_config: int = 0
    dyn_locations: list[LocationConf] = field(default_factory=list)
    in_worker: bool = True
    broken: bool = False
    served: dict[str, LoadedCert] = field(default_factory=dict)
    ctx: ssl.SSLContext | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.conf.names

    @property
    def listens(self) -> tuple[Listen, ...]:
        return self.conf.listens

    def matches(self, listen_text: str, name: str) -> bool:
        return any(lst.text == listen_text for lst in self.listens) and name in self.names

    def first_dynamic(self) -> dict[str, str] | None:
        return self.entries[self.n_config] if len(self.entries) > self.n_config else None

    def locations(self) -> list[LocationConf]:
        return [*self.conf.locations, *self.dyn_locations]

    def describe(self) -> dict[str, Any]:
        return {
            "listens": [lst.text for lst in self.listens], "serverNames": list(self.names),
            "managed": self.conf.ca_type is not None, "dynamic": self.dynamic,
            "in_worker": self.in_worker, "broken": self.broken,
            "served": {t: c.describe() for t, c in sorted(self.served.items())},
            "locations": [loc.display for loc in self.locations()],
        }


def name_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower(), host.lower()
    if pattern.startswith("~"):
        return re.search(pattern[1:], host) is not None
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    if pattern.endswith(".*"):
        return host.startswith(pattern[:-1])
    return pattern == host


def _family(host: str) -> int:
    return 6 if ":" in host else 4


# nginx's order of server_name kinds: exact names, then wildcards, then regular expressions
_NAME_KINDS = (
    lambda p: not p.startswith(("~", "*", ".")) and not p.endswith(".*"),
    lambda p: p.startswith(("*", ".")) or p.endswith(".*"),
    lambda p: p.startswith("~"),
)


class Runtime:
    """The blocks of one generation, in NJet's order (static, then dynamic servers)."""

    def __init__(self, conf: SimConf, factory: ContextFactory) -> None:
        self.conf = conf
        self.factory = factory
        self.blocks: list[Block] = []
        for srv in conf.servers:
            self.blocks.append(self.new_block(srv, dynamic=False))
        for (host, port), tls in self.wanted_sockets().items():
            default = self.candidates(host, port)[0]
            if tls and not default.conf.certs:  # NJet: `njet -t` fails the same way
                listen = next(lst for lst in default.listens if lst.port == port)
                raise SimConfError(f'[emerg] no "ssl_certificate" is defined for the "listen '
                                   f'{listen.text} ssl" directive in {default.conf.origin}')

    def new_block(self, srv: ServerConf, *, dynamic: bool) -> Block:
        """A block with its configured certificates loaded; SimConfError when one fails."""
        block = Block(srv, dynamic=dynamic)
        for pair in srv.certs:
            try:
                loaded = load_pair(pair.cert, pair.key, expect_type=None)
            except CertLoadError as exc:
                raise SimConfError(f'[emerg] cannot load certificate "{pair.cert}" / key '
                                   f'"{pair.key}" ({srv.origin}): {exc}') from None
            block.served[loaded.key_type] = loaded
            block.entries.append({"cert_type": cert_type_of(pair.cert),
                                  "certificate": pair.cert, "certificateKey": pair.key})
        block.n_config = len(block.entries)
        self.rebuild(block)
        return block

    # --- changes --------------------------------------------------------------------------

    def rebuild(self, block: Block) -> None:
        block.ctx = self.factory.build(block.served) if block.served else None

    def serve(self, block: Block, cert: LoadedCert) -> None:
        block.served[cert.key_type] = cert
        block.broken = False
        self.rebuild(block)

    def find(self, listen_text: str, name: str) -> Block | None:
        return next((b for b in self.blocks if b.matches(listen_text, name)), None)

    def resolve(self, listen_text: str, name: str) -> Block | None:
        """PUT /api/v1/ssl's lookup (njet-contract wildcard-server-names.json): the block on
        that listen string whose server_name is exactly `name` (`*.w.test` and `.d.test`
        included), else the one NJet's virtual-host matching picks for `name` among the
        blocks on that listen (`x.w.test` lands on `*.w.test`, `d.test` on `.d.test`)."""
        exact = self.find(listen_text, name)
        if exact is not None or not name:
            return exact
        on = [b for b in self.blocks if any(lst.text == listen_text for lst in b.listens)]
        for test in _NAME_KINDS[1:]:
            for b in on:
                if any(test(p) and name_matches(p, name) for p in b.names):
                    return b
        return None

    def remove(self, block: Block) -> None:
        """Delete like NJet's server array: the last block takes the freed slot."""
        index = self.blocks.index(block)
        last = self.blocks.pop()
        if last is not block:
            self.blocks[index] = last

    # --- documents ------------------------------------------------------------------------

    def ssl_doc(self) -> dict[str, Any]:
        servers: list[dict[str, Any]] = []
        for b in self.blocks:
            doc: dict[str, Any] = {"listens": [lst.text for lst in b.listens],
                                   "serverNames": list(b.names)}
            if b.entries or any(lst.ssl for lst in b.listens):
                doc["certificates"] = [dict(e) for e in b.entries]
            servers.append(doc)
        return {"servers": servers}

    def http_log_doc(self) -> dict[str, Any]:
        servers = [{"listens": [lst.text for lst in b.listens], "serverNames": list(b.names),
                    "locations": [{"location": loc.display, "accessLogOn": False}
                                  for loc in b.locations()]} for b in self.blocks]
        return {"servers": servers, "accessLogFormats": ACCESS_LOG_FORMATS}

    def managed_domains(self) -> list[dict[str, Any]]:
        """The generateCertificate batch: every managed static block, in config order."""
        return [{"server_name": list(b.names), "server_addr": [lst.text for lst in b.listens],
                 "ca_type": b.conf.ca_type} for b in self.blocks
                if not b.dynamic and b.conf.ca_type is not None]

    # --- routing --------------------------------------------------------------------------

    def wanted_sockets(self) -> dict[tuple[str, int], bool]:
        """(bind host, port) -> TLS?, for the blocks the worker has."""
        by_port: dict[tuple[int, int], list[Listen]] = {}
        for b in self.blocks:
            if b.in_worker:
                for lst in b.listens:
                    by_port.setdefault((lst.port, _family(lst.host)), []).append(lst)
        out: dict[tuple[str, int], bool] = {}
        for (port, _fam), listens in by_port.items():
            wild = [lst for lst in listens if lst.wildcard]
            hosts = {wild[0].host} if wild else {lst.host for lst in listens}
            for host in hosts:
                out[(host, port)] = any(lst.ssl for lst in listens)
        return out

    def candidates(self, host: str, port: int) -> list[Block]:
        """Worker blocks reachable through the socket bound to (host, port), the default first
        (a `default_server` listen, else the first block on that address)."""
        exact: list[Block] = []
        other: list[Block] = []
        for b in self.blocks:
            if not b.in_worker:
                continue
            for lst in b.listens:
                if lst.port != port or _family(lst.host) != _family(host):
                    continue
                if lst.host == host:
                    exact.append(b)
                    break
                if host in ("0.0.0.0", "::"):
                    other.append(b)
                    break
        found = exact + other
        default = next((b for b in found if any(lst.default and lst.port == port
                                                for lst in b.listens)), None)
        if default is not None:
            found.remove(default)
            found.insert(0, default)
        return found

    def pick(self, host: str, port: int, name: str | None) -> Block | None:
        found = self.candidates(host, port)
        if not found:
            return None
        if name:
            name = name.rstrip(".")
            for test in _NAME_KINDS:
                for b in found:
                    if any(test(p) and name_matches(p, name) for p in b.names):
                        return b
        return found[0]

    def select_tls(self, host: str, port: int, sni: str | None) -> ssl.SSLContext | None:
        block = self.pick(host, port, sni)
        if block is None or block.broken:
            return None
        return block.ctx
