"""The dns-01 ChallengeSolver: a TXT record at `_acme-challenge.<name>`, written through the
configured DnsProvider, visible on every server that matters before the CA is told to look.

Built by app.py (build_solvers, when the TOML has a [dns] section) and driven by
adapters/acme/client.py like the other solvers: `present(domain, token, key_authorization)`
for each pending authorization, then `cleanup(...)` with the same arguments. `domain` is the
authorization's identifier: "shop.test" for `shop.test` and for `*.shop.test` alike (ACME
authorizes a wildcard on its base name), so a `.shop.test` certificate puts two values at
`_acme-challenge.shop.test` at once. The value is base64url(sha256(key authorization)).

present: follow a CNAME at `_acme-challenge.<name>` (delegation, the acme-dns pattern: the
record is written where it points) -> the zone ([dns] zone when the name is inside it, else
from the SOA) -> note the record in `.lego/dns-cleanups.json` (pending.py) -> provider.present
-> wait until every checked server shows it (propagation.py, bounded by propagationTimeout).
When anything after the write fails, the value is removed before the error goes up.
cleanup: provider.cleanup of exactly that value, then the note is dropped; a cleanup that fails
is logged and keeps its note. `remove_leftovers` (a LeftoverCleaner, called by App.prepare at
start) removes the values noted by a run that died between present and cleanup.

Calls for one record name run one at a time (a provider may rewrite a whole RRset); the waits
for propagation run concurrently. Nothing here sees a credential.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Sequence

from controller.adapters.dns.lookup import DnsLookup, Server
from controller.adapters.dns.pending import PendingCleanups, PendingRecord
from controller.adapters.dns.propagation import wait_visible
from controller.adapters.store.fsutil import store_error
from controller.faultpoints import fault_point, register
from controller.logs import log_event
from controller.ports import DnsProvider

DNS_01 = "dns-01"
LABEL = "_acme-challenge"
register("dns01.after_present")


def txt_value(key_authorization: str) -> str:
    """The dns-01 TXT value of a key authorization (RFC 8555 §8.4)."""
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def record_name(domain: str) -> str:
    """`_acme-challenge.shop.test` for "shop.test" and "*.shop.test"."""
    base = domain.lower().rstrip(".")
    return f"{LABEL}.{base[2:] if base.startswith('*.') else base}"


class Dns01Solver:
    """See the module docstring."""

    challenge_type: str = DNS_01

    def __init__(
        self,
        provider: DnsProvider,
        *,
        provider_name: str,
        lookup: DnsLookup,
        pending: PendingCleanups,
        zone: str = "",
        propagation_timeout: float = 120.0,
        check_resolvers: bool = True,
    ) -> None:
        self.provider = provider
        self.provider_name = provider_name
        self.lookup = lookup
        self.pending = pending
        self.zone = zone.lower().rstrip(".")
        self.propagation_timeout = propagation_timeout
        self.check_resolvers = check_resolvers
        self._presented: dict[tuple[str, str, str], PendingRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def present(self, domain: str, token: str, key_authorization: str) -> None:
        value = txt_value(key_authorization)
        name = record_name(domain)
        fqdn = await self.lookup.follow_cname(name)
        zone = self._configured_zone(fqdn) or await self.lookup.zone_for(fqdn)
        record = PendingRecord(zone=zone, fqdn=fqdn, value=value, provider=self.provider_name)
        try:
            await asyncio.to_thread(self.pending.add, record)
        except OSError as exc:
            raise store_error("note the dns-01 record in", self.pending.path, exc) from None
        try:
            async with self._lock(fqdn):
                await self.provider.present(zone=zone, fqdn=fqdn, value=value)
        except BaseException:
            await self._remove(record, why="the write failed")
            raise
        fault_point("dns01.after_present")
        log_event("dns-01 record written", level=logging.DEBUG, domain=domain, name=fqdn,
                  zone=zone, provider=self.provider_name,
                  **({"delegated_from": name} if fqdn != name else {}))
        try:
            servers = await self._servers(zone)
            await wait_visible(fqdn, value, servers, recursion=self.check_resolvers,
                               timeout=self.propagation_timeout)
        except BaseException:
            await self._remove(record, why="it did not propagate")
            raise
        self._presented[(domain, token, key_authorization)] = record

    async def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        record = self._presented.pop((domain, token, key_authorization), None)
        if record is not None:
            await self._remove(record, why="the validation is over")

    async def remove_leftovers(self) -> list[str]:
        """Remove the values a previous run wrote and did not remove (one line each)."""
        done: list[str] = []
        for record in await asyncio.to_thread(self.pending.load):
            if await self._remove(record, why="left by an interrupted run"):
                done.append(f"TXT {record.fqdn} value {record.value} (zone {record.zone},"
                            f" {record.provider})")
        return done

    async def close(self) -> None:
        self._presented.clear()
        await self.provider.close()

    # -- helpers -------------------------------------------------------------------------------
    def _configured_zone(self, fqdn: str) -> str | None:
        if self.zone and (fqdn == self.zone or fqdn.endswith("." + self.zone)):
            return self.zone
        return None

    async def _servers(self, zone: str) -> Sequence[Server]:
        if self.check_resolvers:
            return self.lookup.servers
        return await self.lookup.nameservers(zone)

    def _lock(self, fqdn: str) -> asyncio.Lock:
        lock = self._locks.get(fqdn)
        if lock is None:
            lock = self._locks[fqdn] = asyncio.Lock()
        return lock

    async def _remove(self, record: PendingRecord, *, why: str) -> bool:
        """Remove exactly our value; True when it is gone (the note is dropped then)."""
        try:
            async with self._lock(record.fqdn):
                await self.provider.cleanup(zone=record.zone, fqdn=record.fqdn,
                                            value=record.value)
        except Exception as exc:
            log_event("dns-01 record not removed; retried at the next start",
                      level=logging.WARNING, name=record.fqdn, zone=record.zone,
                      provider=record.provider, error=str(exc))
            return False
        try:
            await asyncio.to_thread(self.pending.remove, record)
        except OSError as exc:
            log_event("dns-01 pending cleanups not updated", level=logging.WARNING,
                      path=str(self.pending.path), error=str(exc))
        log_event("dns-01 record removed", level=logging.DEBUG, name=record.fqdn,
                  zone=record.zone, why=why)
        return True
