"""DNS lookups for dns-01 (dnspython, asyncio): the zone of a name, a CNAME delegation, the
zone's authoritative servers, and the TXT values one server returns.

Used by adapters/dns/solver.py (Dns01Solver) and adapters/dns/propagation.py. Every query goes
to `servers`: `[dns] resolvers` when set, else the system resolver's nameservers (read from
/etc/resolv.conf when first needed, never before: tests always set resolvers). A server that
does not answer, answers SERVFAIL/REFUSED or sends something that is not a DNS reply is
skipped for the next one; when none answers the error names each server and why.

- `zone_for(name)`: the apex of the zone holding `name`, from the SOA in the answer (the name
  is the apex) or in the authority section (NXDOMAIN/NODATA answers carry the zone's SOA),
  walking up one label at a time otherwise.
- `follow_cname(name)`: where `_acme-challenge.<name>` points when it is a CNAME (the acme-dns
  pattern), following up to MAX_CNAME_HOPS; loops are an error.
- `nameservers(zone)`: the (address, 53) of every NS of the zone (glue from the answer's
  additional section, else A/AAAA lookups).
- `txt_values(name, server, recursion=...)`: the TXT strings one server has at `name`
  (empty for NXDOMAIN/NODATA); raises TemporaryError when it cannot tell.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from controller.errors import ConfigError, TemporaryError

Server = tuple[str, int]  # (IP address, port)
MAX_CNAME_HOPS = 8
QUERY_TIMEOUT = 3.0


def show(server: Server) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_error(exc: BaseException) -> str:
    """A DNS or network failure in a few words (never a secret: none is involved)."""
    if isinstance(exc, dns.exception.Timeout | TimeoutError):
        return "no answer (timeout)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}"
    if isinstance(exc, dns.exception.DNSException):
        text = " ".join(str(exc).split())[:120] or type(exc).__name__
        return f"not a usable DNS reply ({text})"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"


def _fqdn(name: str) -> dns.name.Name:
    return dns.name.from_text(name.rstrip(".") + ".")


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


async def query(
    name: str, rdtype: dns.rdatatype.RdataType, server: Server, *, recursion: bool = True,
    timeout: float = QUERY_TIMEOUT,  # noqa: ASYNC109 - one query's budget
) -> dns.message.Message:
    """One query to one server over UDP (TCP when the reply is truncated); the reply, whatever
    its rcode. Raises dns.exception.DNSException or OSError."""
    q = dns.message.make_query(_fqdn(name), rdtype)
    if not recursion:
        q.flags &= ~dns.flags.RD
    reply, _ = await dns.asyncquery.udp_with_fallback(q, server[0], timeout=timeout,
                                                      port=server[1])
    return reply


class DnsLookup:
    """Lookups through `servers` (empty: the system resolver's); see the module docstring."""

    def __init__(self, servers: Sequence[Server] = (), *, timeout: float = QUERY_TIMEOUT) -> None:
        self._servers = tuple(servers)
        self._timeout = timeout

    @property
    def servers(self) -> tuple[Server, ...]:
        if not self._servers:
            try:
                found = dns.resolver.Resolver().nameservers
            except dns.exception.DNSException as exc:
                raise ConfigError("[dns] resolvers is not set and the system resolver cannot be"
                                  f" read: {describe_error(exc)}") from None
            self._servers = tuple((str(ns), 53) for ns in found)
        return self._servers

    async def ask(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        """The first NOERROR/NXDOMAIN reply of the servers, in order."""
        problems: list[str] = []
        for server in self.servers:
            try:
                reply = await query(name, rdtype, server, timeout=self._timeout)
            except (dns.exception.DNSException, OSError) as exc:
                problems.append(f"{show(server)}: {describe_error(exc)}")
                continue
            rcode = reply.rcode()
            if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return reply
            problems.append(f"{show(server)}: {dns.rcode.to_text(rcode)}")
        raise TemporaryError(f"dns-01: cannot look up {rdtype.name} {name}: "
                             + ("; ".join(problems) or "no DNS server to ask"))

    async def zone_for(self, name: str) -> str:
        """The apex of the zone `name` is in (see the module docstring)."""
        candidate = _fqdn(name)
        while True:
            reply = await self.ask(_text(candidate), dns.rdatatype.SOA)
            for rrset in reply.answer:
                if rrset.rdtype == dns.rdatatype.SOA and rrset.name == candidate:
                    return _text(candidate)
            for rrset in reply.authority:
                if rrset.rdtype == dns.rdatatype.SOA and candidate.is_subdomain(rrset.name):
                    return _text(rrset.name)
            if candidate == dns.name.root or len(candidate.labels) <= 2:
                raise TemporaryError(f"dns-01: no zone found for {name}: no SOA on the way up"
                                     f" (asked {', '.join(map(show, self.servers))}); set"
                                     " [dns] zone")
            candidate = candidate.parent()

    async def follow_cname(self, name: str) -> str:
        """`name`, or the end of the CNAME chain starting there."""
        current = name.lower().rstrip(".")
        seen = [current]
        for _ in range(MAX_CNAME_HOPS):
            reply = await self.ask(current, dns.rdatatype.CNAME)
            target = next((rr for rrset in reply.answer if rrset.rdtype == dns.rdatatype.CNAME
                           and _text(rrset.name) == current for rr in rrset), None)
            if target is None:
                return current
            current = _text(target.target)
            if current in seen:
                raise TemporaryError(f"dns-01: the CNAME chain at {name} loops: "
                                     + " -> ".join([*seen, current]))
            seen.append(current)
        raise TemporaryError(f"dns-01: the CNAME chain at {name} is longer than"
                             f" {MAX_CNAME_HOPS}: " + " -> ".join(seen))

    async def nameservers(self, zone: str) -> tuple[Server, ...]:
        """(address, 53) of every authoritative server of `zone`, sorted."""
        reply = await self.ask(zone, dns.rdatatype.NS)
        names = sorted({_text(rr.target) for rrset in reply.answer
                        if rrset.rdtype == dns.rdatatype.NS for rr in rrset})
        if not names:
            raise TemporaryError(f"dns-01: the zone {zone} lists no NS record (asked"
                                 f" {', '.join(map(show, self.servers))})")
        glue: dict[str, set[str]] = {}
        for rrset in reply.additional:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                glue.setdefault(_text(rrset.name), set()).update(rr.address for rr in rrset)
        found = await asyncio.gather(*(self._addresses(n, glue.get(n)) for n in names))
        out = sorted({(addr, 53) for addrs in found for addr in addrs},
                     key=lambda s: (ipaddress.ip_address(s[0]).version, s[0]))
        if not out:
            raise TemporaryError(f"dns-01: no address found for the NS of {zone}: "
                                 + ", ".join(names))
        return tuple(out)

    async def _addresses(self, host: str, glue: set[str] | None) -> set[str]:
        if glue:
            return glue
        out: set[str] = set()
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            reply = await self.ask(host, rdtype)
            out.update(rr.address for rrset in reply.answer if rrset.rdtype == rdtype
                       for rr in rrset)
        return out


async def txt_values(
    name: str, server: Server, *, recursion: bool,
    timeout: float = QUERY_TIMEOUT,  # noqa: ASYNC109 - one query's budget
) -> frozenset[str]:
    """The TXT strings `server` has at `name` (each record's strings joined, as a CA reads
    them); empty for NXDOMAIN/NODATA. TemporaryError when the server cannot tell."""
    try:
        reply = await query(name, dns.rdatatype.TXT, server, recursion=recursion,
                            timeout=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        raise TemporaryError(describe_error(exc)) from None
    rcode = reply.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return frozenset()
    if rcode != dns.rcode.NOERROR:
        raise TemporaryError(f"answered {dns.rcode.to_text(rcode)}")
    wanted = _fqdn(name)
    return frozenset(
        b"".join(rr.strings).decode("ascii", errors="replace")
        for rrset in reply.answer if rrset.rdtype == dns.rdatatype.TXT and rrset.name == wanted
        for rr in rrset
    )
