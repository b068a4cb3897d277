"""Registered domains by the public suffix list, read from the copy the `publicsuffixlist`
package ships (ports.RegisteredDomain). Nothing is ever downloaded.

The rate-limit ledger (ledger.py, through the executor) and the reconciler (for plan()'s
budget) group names by registered domain the way Let's Encrypt counts certificates: the public
suffix plus one label ("a.example.co.uk" and "b.example.co.uk" -> "example.co.uk"), with the
list's private section too ("x.github.io" is its own). A name that is itself a public suffix,
or has no known suffix ("localhost"), is its own registered domain; an IP address too.

The list is the package's bundled `public_suffix_list.dat`, read once per process on first use
(fsutil.read_regular: a regular file, at most 16 MiB) and parsed from those bytes, so the
package never opens anything itself; its updater (`publicsuffixlist.update`, which fetches a
newer list over the network) is never imported. A newer list comes with a newer package.
Built by app.py; thread-safe.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from controller.adapters.store import fsutil
from controller.errors import ConfigError

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

MAX_LIST_BYTES = 16 << 20
_lock = threading.Lock()


@functools.cache
def _lookup() -> PublicSuffixList:
    import publicsuffixlist  # the package, not its `update` module

    path = Path(publicsuffixlist.PSLFILE)
    try:
        data = fsutil.read_regular(path, limit=MAX_LIST_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read the public suffix list {path}: {exc}") from None
    return publicsuffixlist.PublicSuffixList(data, accept_unknown=True)


def list_path() -> Path:
    """The packaged list this module reads."""
    import publicsuffixlist

    return Path(publicsuffixlist.PSLFILE)


@functools.lru_cache(maxsize=65536)
def registered_domain(name: str) -> str:
    """The registered domain of `name` (lowercased, without a trailing dot or a `*.`)."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("*."):
        name = name[2:]
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    with _lock:  # one parse, whichever thread asks first
        psl = _lookup()
    found = psl.privatesuffix(name)
    return found if isinstance(found, str) else name
