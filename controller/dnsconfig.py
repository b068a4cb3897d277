"""The TOML's `[dns]` section: the DNS provider dns-01 writes its TXT records through.

Part of the loading layer; config.py embeds `DnsSection` as `Config.dns` (None when the TOML
has no `[dns]`: no dns-01, wildcards stay warnings). adapters/dns/providers.py builds the
provider from it, adapters/dns/lookup.py the propagation checks.

`provider` is "rfc2136" (dynamic update with TSIG: `nameserver`, `tsigKeyName`,
`tsigAlgorithm`, `tsigSecretFile`), "exec" (a user's program: `command`, `timeout`) or a
dns-lexicon provider name (aliyun, dnspod, cloudflare, route53, qcloud, ...: `credentialsFile`).
Every provider shares `zone` (else found from the SOA), `ttl`, `resolvers` (host:port where
names are looked up and, by default, where propagation is checked), `propagationCheck` and
`propagationTimeout`. Errors name the key, never its value (a secret may sit in the wrong key).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from controller.config_sections import parse_duration
from controller.desired import canonical_name, name_problem

BUILTIN_PROVIDERS = ("rfc2136", "exec")
TsigAlgorithm = Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1",
                       "hmac-md5"]
_PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_HOSTNAME_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
_MAX_COMMAND = 64  # items of [dns] command
MIN_PROPAGATION = timedelta(seconds=1)
MAX_PROPAGATION = timedelta(hours=1)
MIN_EXEC_TIMEOUT = timedelta(seconds=1)


def split_host_port(text: str, default_port: int = 53) -> tuple[str, int]:
    """("127.0.0.1", 5353) from "127.0.0.1:5353"; "[::1]:53", "::1", "ns1.example.com" and a
    bare address (port `default_port`) too. ValueError says what is wrong (not the value)."""
    value = text.strip()
    if not value:
        raise ValueError("is empty: give host:port, e.g. 127.0.0.1:53")
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError("has an unclosed [ in the IPv6 address")
        host, rest = value[1:end], value[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError("must be host:port, [IPv6]:port or an address")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    port = default_port
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError("has a port that is not a number from 1 to 65535")
        port = int(port_text)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if not _HOSTNAME_RE.match(name) or len(name) > 253:
        raise ValueError("must be an IP address or a host name, with an optional :port")
    return name, port


def _host_port(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be a string: host:port")
    host, port = split_host_port(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


HostPort = Annotated[str, BeforeValidator(_host_port)]


def _resolver(value: object) -> object:
    text = _host_port(value)
    assert isinstance(text, str)
    try:
        ipaddress.ip_address(split_host_port(text)[0])
    except ValueError:
        raise ValueError("must be an IP address with an optional :port (a resolver is not"
                         " looked up by name)") from None
    return text


Resolver = Annotated[str, BeforeValidator(_resolver)]


def _zone(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be a string: the zone apex, e.g. shop.example.com")
    if not value.strip():
        return ""
    name = canonical_name(value)
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"not a zone name: {problem}")
    return name


def _command(value: object) -> object:
    if isinstance(value, str):
        raise ValueError('must be a list of strings (no shell), e.g. ["/usr/local/bin/dns-hook"]')
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ValueError("must be a list of strings: the program and its arguments")
    if len(value) > _MAX_COMMAND or any("\x00" in a for a in value):
        raise ValueError(f"must have at most {_MAX_COMMAND} items without NUL characters")
    if value and not value[0].strip():
        raise ValueError("the program (the first item) is empty")
    return tuple(value)


def _bounded(low: timedelta, high: timedelta | None, shown: str) -> AfterValidator:
    def check(value: timedelta) -> timedelta:
        if value < low or (high is not None and value > high):
            raise ValueError(f"must be {shown}")
        return value

    return AfterValidator(check)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class DnsSection(BaseModel):
    """`[dns]`; see the module docstring and README's "dns-01 and wildcards"."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    provider: Annotated[str, BeforeValidator(
        lambda v: v.strip().lower() if isinstance(v, str) else v)] = ""
    zone: Annotated[str, BeforeValidator(_zone)] = ""
    ttl: int = Field(default=60, ge=1, le=86400, strict=True)
    resolvers: tuple[Resolver, ...] = ()
    # "auto": the resolvers when set, else every authoritative server (NS) of the zone;
    # "authoritative": every NS of the zone, found through the resolvers when set
    propagationCheck: Literal["auto", "resolvers", "authoritative"] = "auto"
    propagationTimeout: Annotated[Duration, _bounded(MIN_PROPAGATION, MAX_PROPAGATION,
                                                     'from "1s" to "1h"')] = timedelta(
        seconds=120)
    # rfc2136
    nameserver: Annotated[str, BeforeValidator(
        lambda v: "" if isinstance(v, str) and not v.strip() else _host_port(v))] = ""
    tsigKeyName: str = ""
    tsigAlgorithm: Annotated[TsigAlgorithm, BeforeValidator(
        lambda v: v.strip().lower().rstrip(".") if isinstance(v, str) else v)] = "hmac-sha256"
    tsigSecretFile: str = ""
    # a dns-lexicon provider
    credentialsFile: str = ""
    # exec
    command: Annotated[tuple[str, ...], BeforeValidator(_command)] = ()
    timeout: Annotated[Duration, _bounded(MIN_EXEC_TIMEOUT, None, 'at least "1s"')] = timedelta(
        seconds=60)

    @model_validator(mode="after")
    def _provider_keys(self) -> DnsSection:
        kind = self.provider
        if not kind:
            raise ValueError('provider is missing: "rfc2136", "exec" or a dns-lexicon provider'
                             " name (cloudflare, aliyun, ...)")
        if not _PROVIDER_RE.match(kind):
            raise ValueError("provider: not a provider name (letters, digits, - and _)")
        if kind == "rfc2136":
            if not self.nameserver:
                raise ValueError('provider "rfc2136" needs nameserver (host:port where the'
                                 " updates go)")
            if bool(self.tsigKeyName.strip()) != bool(self.tsigSecretFile.strip()):
                raise ValueError("tsigKeyName and tsigSecretFile go together (TSIG), or"
                                 " neither (a server that allows updates by address)")
        elif kind == "exec":
            if not self.command:
                raise ValueError('provider "exec" needs command (a list: the program and its'
                                 " arguments)")
        elif not self.credentialsFile.strip():
            raise ValueError(f'provider "{kind}" (dns-lexicon) needs credentialsFile (a file'
                             " with the provider's credentials)")
        if self.propagationCheck == "resolvers" and not self.resolvers:
            raise ValueError('propagationCheck "resolvers" needs resolvers')
        return self

    @property
    def checks_resolvers(self) -> bool:
        """Propagation is checked on the resolvers themselves (not on the zone's NS)."""
        if self.propagationCheck == "auto":
            return bool(self.resolvers)
        return self.propagationCheck == "resolvers"
