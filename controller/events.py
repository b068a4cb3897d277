"""NJet's MQTT payloads turned into typed values (pure: no I/O, no clock).

Two payload kinds (see njet-contract README §5–§7):
- `/automaticcertificatemanagement/event/request`: `{"action": "generateCertificate" |
  "deleteCertificate", "domains": [{"server_name": [...], "server_addr": [...], "ca_type": ...}]}`,
  each preceded by a zero-length retained payload (→ `parse_event` returns None).
- retained `/ins/srv/s_<crc>`: the `POST /api/v1/dyn_srv` body of a dynamic server
  (→ `parse_srv_record`); the `server_body` text says whether the server is managed.

Called by adapters/mqtt/listener.py (events), adapters/store/runtime.py and the controller's resync
(srv records → specs). pydantic validates at this boundary; frozen dataclasses come out.
A runtime server's names follow njet.conf's rule (servernames.usable_names), wildcards included
when the caller says a [dns] section makes dns-01 available (`wildcards=True`).
Error messages never echo the payload (a server_body may carry an inline `data:` key).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, ValidationError

from controller.model import CertificateSpec, NameWarning, Source
from controller.servernames import usable_names

EVENT_TOPIC = "/automaticcertificatemanagement/event/request"
SRV_TOPIC_FILTER = "/ins/srv/#"
EVENT_ORIGIN = "event"


class EventError(ValueError):
    """A payload that is not a well-formed NJet event or /ins/srv record."""


class EventAction(StrEnum):
    GENERATE = "generateCertificate"
    DELETE = "deleteCertificate"


@dataclass(frozen=True)
class EventDomain:
    """One server block of an event, names and listen strings exactly as NJet sent them."""

    server_names: tuple[str, ...]
    server_addrs: tuple[str, ...]
    ca_type: str | None = None


@dataclass(frozen=True)
class NjetEvent:
    action: EventAction
    domains: tuple[EventDomain, ...]


@dataclass(frozen=True)
class RuntimeServer:
    """A dynamic server from a retained `/ins/srv/s_<crc>` record."""

    addr_port: str
    server_name: str
    managed: bool  # server_body holds `ssl_certificate_management acme;`
    listen_ssl: bool  # listen_option contains "ssl"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.server_name.split())


@dataclass(frozen=True)
class EventSpecs:
    """Specs derived from events or srv records, plus the names that had to be skipped."""

    specs: tuple[CertificateSpec, ...]
    warnings: tuple[NameWarning, ...]


# --- pydantic boundary models -------------------------------------------------------------


class _Domain(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    server_name: list[str]
    # A failed dyn_srv add sends `"server_addr": []`; tolerate a missing key the same way.
    server_addr: list[str] = []
    ca_type: str | None = None


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    action: str
    domains: list[_Domain]


class _SrvRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    type: str = "add"
    addr_port: str
    server_name: str
    listen_option: str = ""
    server_body: str = ""


def _describe(exc: ValidationError) -> str:
    """`domains.0.server_name: Field required; …` without echoing input values."""
    parts: list[str] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
        if len(parts) == 5:
            break
    return "; ".join(parts)


def _shown(text: str) -> str:
    """An unexpected value, quoted only when it is a short word (never echo a payload)."""
    return repr(text) if re.fullmatch(r"[A-Za-z_-]{1,40}", text) else f"<{len(text)} characters>"


def parse_event(payload: bytes) -> NjetEvent | None:
    """Parse one event payload; None for the zero-length clearing message NJet sends first.

    Raises EventError for malformed JSON, a wrong shape or an unknown action.
    """
    if len(payload) == 0:
        return None
    try:
        model = _Event.model_validate_json(payload)
    except ValidationError as exc:
        raise EventError(
            f"malformed NJet certificate event ({len(payload)} bytes): {_describe(exc)}"
        ) from None
    try:
        action = EventAction(model.action)
    except ValueError:
        allowed = " or ".join(a.value for a in EventAction)
        raise EventError(
            f"unknown NJet certificate event action {_shown(model.action)} (expected {allowed})"
        ) from None
    domains = tuple(
        EventDomain(
            server_names=tuple(d.server_name),
            server_addrs=tuple(d.server_addr),
            ca_type=d.ca_type,
        )
        for d in model.domains
    )
    return NjetEvent(action=action, domains=domains)


def parse_srv_record(payload: bytes) -> RuntimeServer | None:
    """Parse a `/ins/srv/s_<crc>` payload.

    None for an empty payload (a cleared record) and for a `"type": "del"` message (NJet
    publishes it, non-retained, right after clearing the record). Raises EventError otherwise
    when the payload is not a dyn_srv body.
    """
    if len(payload) == 0:
        return None
    try:
        rec = _SrvRecord.model_validate_json(payload)
    except ValidationError as exc:
        raise EventError(
            f"malformed /ins/srv record ({len(payload)} bytes): {_describe(exc)}"
        ) from None
    if rec.type == "del":
        return None
    if rec.type != "add":
        raise EventError(f"unknown /ins/srv record type {_shown(rec.type)} (expected add or del)")
    return RuntimeServer(
        addr_port=rec.addr_port.strip(),
        server_name=rec.server_name.strip(),
        managed=body_is_managed(rec.server_body),
        listen_ssl="ssl" in rec.listen_option.split(),
    )


# --- server_body scanning -----------------------------------------------------------------


def _statements(body: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (block depth, tokens) per `;`-terminated statement of an nginx-syntax text.

    Quotes ('…' / "…", backslash escapes) and `#` comments are honoured; `{`/`}` change the
    depth. Unbalanced input never raises: whatever was read is yielded.
    """
    depth = 0
    tokens: list[str] = []
    cur: list[str] = []
    has_token = False
    i, n = 0, len(body)

    def flush() -> None:
        nonlocal has_token
        if has_token:
            tokens.append("".join(cur))
            cur.clear()
            has_token = False

    while i < n:
        ch = body[i]
        if ch in "\"'":
            has_token = True
            i += 1
            while i < n and body[i] != ch:
                if body[i] == "\\" and i + 1 < n:
                    i += 1
                cur.append(body[i])
                i += 1
        elif ch == "\\" and i + 1 < n:
            has_token = True
            cur.append(body[i + 1])
            i += 1
        elif ch == "#":
            flush()
            while i < n and body[i] != "\n":
                i += 1
        elif ch.isspace():
            flush()
        elif ch in ";{}":
            flush()
            if ch == ";":
                yield depth, tokens
            tokens = []
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth = max(0, depth - 1)
        else:
            has_token = True
            cur.append(ch)
        i += 1
    flush()
    if tokens:
        yield depth, tokens


def body_is_managed(server_body: str) -> bool:
    """True when the server level of `server_body` says `ssl_certificate_management acme;`."""
    return any(
        depth == 0
        and len(toks) == 2
        and toks[0] == "ssl_certificate_management"
        and toks[1].lower() == "acme"
        for depth, toks in _statements(server_body)
    )


# --- specs ---------------------------------------------------------------------------------


def _spec_for(
    names: Sequence[str], addrs: Iterable[str], origin: str, wildcards: bool
) -> tuple[CertificateSpec | None, list[NameWarning]]:
    valid, problems = usable_names(names, origin, wildcards=wildcards)
    warnings = list(problems)
    if not valid:
        shown = ", ".join(repr(n) for n in names) or "none"
        warnings.append(NameWarning("", f"no usable server name (got {shown})", origin))
        return None, warnings
    listens = tuple(dict.fromkeys(a.strip() for a in addrs if a.strip()))
    spec = CertificateSpec(
        domain=valid[0],
        names=valid,
        listens=listens,
        source=Source.EVENT,
        origin=origin,
    )
    return spec, warnings


def specs_from_domains(
    domains: Iterable[EventDomain], *, origin: str = EVENT_ORIGIN, wildcards: bool = False
) -> EventSpecs:
    """One spec per event domain: domain = first usable name, names as njet.conf's
    (servernames.usable_names; `wildcards`: a [dns] section exists, so `*.x` is issued as is
    and `.x` as x + *.x, else both are warnings and `.x` gives x).

    Names that cannot be issued are skipped and reported; a domain with no usable name gives
    no spec. Two domains may yield the same `domain` (one name on two listens): merging is
    the caller's choice.
    """
    specs: list[CertificateSpec] = []
    warnings: list[NameWarning] = []
    for d in domains:
        spec, warns = _spec_for(d.server_names, d.server_addrs, origin, wildcards)
        warnings.extend(warns)
        if spec is not None:
            specs.append(spec)
    return EventSpecs(tuple(specs), tuple(warnings))


def specs_from_servers(
    servers: Iterable[RuntimeServer], *, origin: str = EVENT_ORIGIN, wildcards: bool = False
) -> EventSpecs:
    """Specs for the managed TLS dynamic servers (names as specs_from_domains, `wildcards`
    too); a managed server without ssl is reported."""
    specs: list[CertificateSpec] = []
    warnings: list[NameWarning] = []
    for srv in servers:
        if not srv.managed:
            continue
        if not srv.listen_ssl:
            warnings.append(
                NameWarning(
                    srv.server_name,
                    f"dynamic server on {srv.addr_port} is managed but does not listen with ssl",
                    origin,
                )
            )
            continue
        spec, warns = _spec_for(srv.names, (srv.addr_port,), origin, wildcards)
        warnings.extend(warns)
        if spec is not None:
            specs.append(spec)
    return EventSpecs(tuple(specs), tuple(warnings))
