"""Wait until every server that matters shows a TXT value, before the CA is told to validate.

Called by adapters/dns/solver.py (Dns01Solver.present) after the provider wrote the record.
Which servers: `[dns] resolvers` themselves when they are the check (propagationCheck "auto"
with resolvers set, or "resolvers"; asked recursively, as a split-horizon or test setup
needs), else every authoritative server of the zone (DnsLookup.nameservers: the NS of the zone,
their addresses looked up through the resolvers or the system resolver; asked without
recursion, on port 53). Each server is asked until it shows the value, the pause between
rounds growing from 50 ms to 2 s; servers that already showed it are not asked again.
Bounded by `[dns] propagationTimeout`: then a TemporaryError names each lagging server and
what it last said, so the certificate backs off instead of the CA failing the authorization.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from controller.adapters.dns.lookup import Server, show, txt_values
from controller.errors import TemporaryError
from controller.logs import log_event

FIRST_PAUSE = 0.05
MAX_PAUSE = 2.0
GROWTH = 1.6


async def wait_visible(
    fqdn: str,
    value: str,
    servers: Sequence[Server],
    *,
    recursion: bool,
    timeout: float,  # noqa: ASYNC109 - [dns] propagationTimeout, part of the contract
) -> int:
    """Return once every server in `servers` has `value` at `fqdn` (the number of rounds it
    took); TemporaryError naming the lagging servers after `timeout` seconds."""
    if not servers:
        raise TemporaryError(f"dns-01: no DNS server to check {fqdn} on")
    deadline = time.monotonic() + timeout
    lagging = list(servers)
    said: dict[Server, str] = {}
    pause = FIRST_PAUSE
    rounds = 0
    while True:
        rounds += 1
        seen = await asyncio.gather(*(_shows(fqdn, value, s, recursion, said) for s in lagging))
        lagging = [s for s, ok in zip(lagging, seen, strict=True) if not ok]
        if not lagging:
            if rounds > 1:
                log_event("dns-01 record visible everywhere", level=logging.DEBUG, name=fqdn,
                          rounds=rounds, servers=",".join(map(show, servers)))
            return rounds
        if rounds == 1:
            log_event("waiting for the dns-01 record to propagate", name=fqdn,
                      lagging=",".join(map(show, lagging)), timeout=f"{timeout:g}s")
        if time.monotonic() + pause > deadline:
            detail = "; ".join(f"{show(s)} ({said.get(s, 'no answer')})" for s in lagging)
            raise TemporaryError(
                f"dns-01: the TXT record {fqdn} did not reach every DNS server within"
                f" {timeout:g}s ([dns] propagationTimeout); lagging: {detail}")
        await asyncio.sleep(pause)
        pause = min(pause * GROWTH, MAX_PAUSE)


async def _shows(fqdn: str, value: str, server: Server, recursion: bool,
                 said: dict[Server, str]) -> bool:
    try:
        values = await txt_values(fqdn, server, recursion=recursion)
    except TemporaryError as exc:
        said[server] = str(exc)
        return False
    if value in values:
        return True
    said[server] = f"{len(values)} other TXT value(s)" if values else "no TXT record yet"
    return False
