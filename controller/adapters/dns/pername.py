"""What the exec and lexicon dns-01 providers share: `present` and `cleanup` as one
`_call(action, zone, fqdn, value)`, and one asyncio lock per name (`_lock(name)`), so calls for
the same name run one at a time while different names run at once.

Base class of ExecProvider (exec_provider.py) and LexiconProvider (lexicon_provider.py).
"""

from __future__ import annotations

import asyncio


class PerNameProvider:
    """present/cleanup through `_call`; the subclass takes `_lock(name)` around its work."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    async def present(self, *, zone: str, fqdn: str, value: str) -> None:
        await self._call("present", zone, fqdn, value)

    async def cleanup(self, *, zone: str, fqdn: str, value: str) -> None:
        await self._call("cleanup", zone, fqdn, value)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _call(self, action: str, zone: str, fqdn: str, value: str) -> None:
        raise NotImplementedError
