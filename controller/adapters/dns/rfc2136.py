"""The RFC 2136 DnsProvider: dynamic DNS updates signed with TSIG (dnspython), the
vendor-neutral way to write a TXT record into BIND, Knot, PowerDNS and most others.

Built by adapters/dns/providers.py from `[dns] provider = "rfc2136"` (`nameserver`,
`tsigKeyName`, `tsigAlgorithm`, `tsigSecretFile`, `ttl`); called by adapters/dns/solver.py.
`present` sends one update to the zone adding the TXT value (an RRset keeps its other values,
so `*.x` and `x` can sit side by side); `cleanup` deletes exactly that value (RFC 2136: deleting
a value that is not there succeeds), so a record we did not write is never touched. Updates go
over TCP to `nameserver` (a host name is resolved by the system at each call).

`load_tsig_secret(path)` reads the secret: a regular file (never through a symlink, at most
64 KiB) holding the base64 secret, or BIND's `key "name" { ... secret "..."; };` as
tsig-keygen writes it. The secret is never logged nor put in a message.

Replies: NOERROR is done; NOTAUTH or a TSIG error (wrong key name, secret or algorithm), REFUSED
(updates not allowed for this key or zone) and NOTZONE are ConfigErrors naming the server, the
name and the keys to check; SERVFAIL, a timeout, a refused connection and a reply that is not
DNS are TemporaryErrors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from controller.adapters.dns.lookup import Server, describe_error, show
from controller.adapters.store.fsutil import UnsafeFileError, read_regular
from controller.errors import ConfigError, TemporaryError

SECRET_MAX_BYTES = 64 << 10
UPDATE_TIMEOUT = 10.0
ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}
_BIND_SECRET = re.compile(rb'secret\s+"([^"]*)"')
_VALUE = re.compile(r"^[A-Za-z0-9_\-+/=]{1,255}$")
_CHECK_KEYS = "check [dns] tsigKeyName, tsigAlgorithm and tsigSecretFile"


def load_tsig_secret(path: Path) -> bytes:
    """The TSIG secret in `path` (see the module docstring); ConfigError naming the key and
    the file, never the content."""
    where = f"[dns] tsigSecretFile {path}"
    try:
        raw = read_regular(path, limit=SECRET_MAX_BYTES)
    except UnsafeFileError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or type(exc).__name__})"
                          ) from None
    found = _BIND_SECRET.search(raw)
    text = (found.group(1) if found else raw).strip()
    try:
        secret = base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: not a base64 secret (nor a BIND key file)") from None
    if not secret:
        raise ConfigError(f"{where}: the secret is empty")
    return secret


class Rfc2136Provider:
    """See the module docstring. Safe for concurrent calls (one TCP connection each)."""

    def __init__(
        self,
        nameserver: Server,
        *,
        key_name: str = "",
        secret: bytes = b"",
        algorithm: str = "hmac-sha256",
        ttl: int = 60,
        timeout: float = UPDATE_TIMEOUT,
    ) -> None:
        self._server = nameserver
        self._ttl = ttl
        self._timeout = timeout
        self._key: dns.tsig.Key | None = None
        if key_name:
            if algorithm not in ALGORITHMS:
                raise ConfigError(f"[dns] tsigAlgorithm: not one of {', '.join(ALGORITHMS)}")
            try:
                self._key = dns.tsig.Key(key_name.rstrip(".") + ".", secret,
                                         ALGORITHMS[algorithm])
            except dns.exception.DNSException:
                raise ConfigError("[dns] tsigKeyName: not a valid DNS name") from None
        self._key_name = key_name

    @property
    def where(self) -> str:
        return f"rfc2136 server {show(self._server)}"

    async def present(self, *, zone: str, fqdn: str, value: str) -> None:
        update = self._update(zone)
        update.add(self._name(fqdn), self._ttl, self._rdata(value))
        await self._send(update, f"adding the TXT value at {fqdn}", zone)

    async def cleanup(self, *, zone: str, fqdn: str, value: str) -> None:
        update = self._update(zone)
        update.delete(self._name(fqdn), self._rdata(value))
        await self._send(update, f"removing the TXT value at {fqdn}", zone)

    async def close(self) -> None:
        return None

    # -- helpers -------------------------------------------------------------------------------
    def _update(self, zone: str) -> dns.update.UpdateMessage:
        origin = dns.name.from_text(zone.rstrip(".") + ".")
        if self._key is None:
            return dns.update.UpdateMessage(origin)
        return dns.update.UpdateMessage(origin, keyring=self._key)

    @staticmethod
    def _name(fqdn: str) -> dns.name.Name:
        return dns.name.from_text(fqdn.rstrip(".") + ".")

    @staticmethod
    def _rdata(value: str) -> dns.rdata.Rdata:
        if not _VALUE.match(value):
            raise ConfigError("dns-01: a TXT value must be 1 to 255 base64 characters")
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, f'"{value}"')

    async def _address(self) -> str:
        host, port = self._server
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TemporaryError(f"{self.where}: cannot resolve {host}: {exc.strerror or exc}"
                                 ) from None
        return str(infos[0][4][0])

    async def _send(self, update: dns.update.UpdateMessage, what: str, zone: str) -> None:
        where = f"{self.where}: {what} (zone {zone})"
        try:
            reply = await dns.asyncquery.tcp(update, await self._address(),
                                             timeout=self._timeout, port=self._server[1])
        except dns.tsig.PeerError as exc:
            raise ConfigError(f"{where}: the server refused our TSIG signature"
                              f" ({type(exc).__name__}); {_CHECK_KEYS}") from None
        except dns.tsig.BadSignature:
            raise ConfigError(f"{where}: the reply's TSIG signature does not verify;"
                              f" {_CHECK_KEYS}") from None
        except (dns.exception.DNSException, OSError, EOFError) as exc:
            raise TemporaryError(f"{where}: {describe_error(exc)}") from None
        rcode = reply.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.NOTAUTH:
            raise ConfigError(f"{where}: NOTAUTH (the TSIG key is not accepted, or the server"
                              f" is not authoritative for the zone); {_CHECK_KEYS}")
        if rcode == dns.rcode.REFUSED:
            who = f"updates signed with {self._key_name}" if self._key_name else "unsigned updates"
            raise ConfigError(f"{where}: REFUSED (the server does not allow {who} of this zone:"
                              " check its update-policy / allow-update)")
        if rcode == dns.rcode.NOTZONE:
            raise ConfigError(f"{where}: NOTZONE (the name is not in the zone; set [dns] zone"
                              " or check the delegation)")
        raise TemporaryError(f"{where}: the server answered {text}")
