"""nginx `listen` directives → the listen strings NJet's API uses ("0.0.0.0:8444", "[::1]:8445").

Pure. Used by njetconf.py (server blocks); the NJet simulator has its own reader.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from controller.errors import ConfigError

_PORT_RE = re.compile(r"^[0-9]{1,5}$")


@dataclass(frozen=True)
class ListenSpec:
    raw: str  # as written: "8444", "127.0.0.1:8443", "[::1]:8445", "*:443"
    address: str  # as NJet's GET /api/v1/ssl spells it: "0.0.0.0:8444", "[::1]:8445"
    port: int
    ssl: bool  # the `ssl` parameter is present (or `ssl on;` is in effect)


def _port(text: str, raw: str) -> int:
    if not _PORT_RE.match(text) or not 1 <= int(text) <= 65535:
        raise ConfigError(f'listen "{raw}": invalid port "{text}" (expected 1-65535)')
    return int(text)


def normalize_listen(raw: str) -> str:
    """A listen address as NJet's GET /api/v1/ssl spells it; ConfigError when unusable."""
    s = raw.strip()
    if not s:
        raise ConfigError("listen: empty address")
    if s.startswith("unix:"):
        raise ConfigError(f'listen "{raw}": unix sockets are not supported (no TCP to probe)')
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f'listen "{raw}": "{host}" is not an IPv6 address') from None
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f'listen "{raw}": expected "[address]:port"')
        return f"[{ip6.compressed}]:{_port(rest[1:], raw) if rest else 80}"
    if _PORT_RE.match(s):
        return f"0.0.0.0:{_port(s, raw)}"
    host, sep, port_text = s.rpartition(":")
    if not sep:
        host, port_text = s, "80"
    if ":" in host:
        raise ConfigError(f'listen "{raw}": IPv6 addresses must be written in brackets')
    if host == "*":
        return f"0.0.0.0:{_port(port_text, raw)}"
    if host.lower() == "localhost":
        return f"127.0.0.1:{_port(port_text, raw)}"
    try:
        ip4 = ipaddress.IPv4Address(host)
    except ValueError:
        raise ConfigError(f'listen "{raw}": "{host}" is not an IP address; host names other '
                          "than localhost are not supported (write the address)") from None
    return f"{ip4}:{_port(port_text, raw)}"


def parse_listen(args: Sequence[str], *, ssl_on: bool = False) -> ListenSpec:
    """A ListenSpec from a `listen` directive's arguments."""
    address = normalize_listen(args[0])
    return ListenSpec(args[0], address, int(address.rpartition(":")[2]),
                      ssl_on or "ssl" in args[1:])


DEFAULT_LISTEN = ListenSpec(raw="*:80", address="0.0.0.0:80", port=80, ssl=False)
