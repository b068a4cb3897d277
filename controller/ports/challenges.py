"""The ports of ACME challenges: the solver that makes one challenge answerable (with its
optional LeftoverCleaner capability) and the DNS provider dns-01 writes TXT records through.

Implemented by adapters/challenges/ and adapters/dns/ (solver.py; the providers: rfc2136.py,
lexicon_provider.py, exec_provider.py); called by adapters/acme/client.py (present, cleanup),
adapters/dns/solver.py (the provider) and app.py (leftovers at start-up). Part of
controller/ports/ (which re-exports every name; the rules of every port are in its docstring).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class ChallengeSolver(Protocol):
    """Makes one challenge answerable, then removes it (adapters/challenges/).

    Contract: `challenge_type` is the ACME type solved ("http-01", "tls-alpn-01" or "dns-01";
    the dns-01 solver, adapters/dns/solver.py, writes TXT records through a DnsProvider and
    gets the identifier's base name: "shop.test" for `*.shop.test` too).
    `present` returns only once the CA can validate (the server is listening); it raises
    TemporaryError (e.g. address in use) or ConfigError (e.g. no permission for the port).
    `cleanup` gets the same arguments, never raises, and is called exactly once per successful
    `present`. `close` stops everything at shutdown. Several orders may be in flight at once,
    also for the same domain.
    """

    challenge_type: str

    async def present(self, domain: str, token: str, key_authorization: str) -> None: ...
    async def cleanup(self, domain: str, token: str, key_authorization: str) -> None: ...
    async def close(self) -> None: ...


class DnsProvider(Protocol):
    """Writes and removes one TXT value. `zone` is the zone apex without trailing dot
    ("shop.test"), `fqdn` the record's absolute name without trailing dot
    ("_acme-challenge.shop.test"), `value` the TXT value (the base64url digest).
    present() adds the value, keeping other TXT values at that name (two values at once for
    `*.x` + `x`); cleanup() removes exactly that value, and a value that is not there is not an
    error. Both raise TemporaryError (unreachable, 5xx, timeout) or ConfigError (bad
    credentials, unknown zone) with a message naming the provider and the name, never a
    credential. Safe to call concurrently for different names."""
    async def present(self, *, zone: str, fqdn: str, value: str) -> None: ...
    async def cleanup(self, *, zone: str, fqdn: str, value: str) -> None: ...
    async def close(self) -> None: ...


@runtime_checkable
class LeftoverCleaner(Protocol):
    """An optional capability of a ChallengeSolver (check with isinstance): it leaves state
    outside the process (NJet keeps dynamic challenge locations across restarts).

    `remove_leftovers` removes what a previous run left and returns one human line per removed
    thing; nothing left is (). Raises ControllerError when it cannot look (NJet unreachable):
    start-up logs that and goes on. Called once at start-up, before any order.
    """

    async def remove_leftovers(self) -> list[str]: ...
