"""NJet control API replies: parsing GET documents into key-free models, the typed errors, and
the mapping of replies onto them.

GET /api/v1/ssl echoes inline private keys; the pydantic wire models have no field for them, so
the parsed `NjetServer`s never hold one, and validation messages are built without input values.

NJet answers most failures with HTTP 200 and a non-zero `code` (njet-contract §2); the same
code means different things per endpoint (4: server not found, cert load error, location
exists/missing, dyn_loc schema/method error; 11: "repeated" on add, "delete fail" on del), so
the mapping looks at the call and at NJet's message. Used by adapters/njet/api.py; callers
catch the error classes from here.

No message built here contains a request or response body; NJet's own `msg`/`data` strings
are kept with anything shaped like a private key cut out (`redact`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.certinfo import fingerprint_pem
from controller.errors import ControllerError, TemporaryError
from controller.njetmatch import LocationServer, NjetCertEntry, NjetServer

_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
_MAX_TEXT = 500


def redact(text: str) -> str:
    """`text` without PEM private keys (complete or cut off), at most 500 characters."""
    cleaned = _PRIVATE_KEY.sub("<private key removed>", text)
    return cleaned if len(cleaned) <= _MAX_TEXT else cleaned[:_MAX_TEXT] + "…"


class NjetUnavailable(TemporaryError):
    """NJet's API could not be reached or did not answer (refused, timeout, a proxy's 5xx).

    `url` is the endpoint; `maybe_applied` is True when the request may have reached NJet
    (a timeout after sending), so a state-changing call must be verified, not blindly redone.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        maybe_applied: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.url = url
        self.maybe_applied = maybe_applied


class NjetApiError(ControllerError):
    """NJet answered and refused: `code` (None if the body had none), `msg` and `data` as NJet
    sent them (stripped, redacted), `http_status`, and the `url` called."""

    def __init__(
        self,
        what: str,
        *,
        url: str,
        http_status: int,
        code: int | None = None,
        msg: str = "",
        data: tuple[str, ...] = (),
    ) -> None:
        self.url = url
        self.http_status = http_status
        self.code = code
        self.msg = redact(msg.strip())
        self.data = tuple(redact(d.strip()) for d in data)
        answer = f"HTTP {http_status}" + (f" code {code}" if code is not None else "")
        detail = f" {self.msg!r}" if self.msg else ""
        if self.data:
            detail += " (" + "; ".join(self.data) + ")"
        super().__init__(f"{what} failed: NJet answered {answer}{detail} [{url}]")


class NjetBadResponse(NjetApiError):
    """The answer is not what the contract says NJet sends (not JSON, unknown shape)."""


class NjetSchemaError(NjetApiError):
    """The request body was rejected as malformed (code 3 on /ssl, dyn_loc "json parser")."""


class NjetApplyError(NjetApiError):
    """code 4 from /ssl (or another apply failure). `server_not_found` tells a missing
    listen/server_name (data "can`t find server by listen[...]") from a cert/key that NJet
    could not load or whose cert_type does not match the key."""

    @property
    def server_not_found(self) -> bool:
        text = " ".join((self.msg, *self.data)).lower()
        return "find server" in text


class NjetServerExists(NjetApiError):
    """code 5: dyn_srv add of a server that already exists."""


class NjetRepeated(NjetApiError):
    """code 11 on add: the body repeats the block's FIRST dynamic cert. It is refused even
    when another cert is served, so it never means "already applied": probe instead."""


class NjetDeleteFailed(NjetApiError):
    """code 11 on del: NJet deletes only the block's first dynamic cert record."""


class NjetLocationExists(NjetApiError):
    """dyn_loc add: the location is already there (code 4 "... exist!")."""


class NjetLocationMissing(NjetApiError):
    """dyn_loc del: no such location (code 4 "not find  location [...]")."""


class NjetNoServerForLocation(NjetApiError):
    """dyn_loc: no block with exactly that addr_port + server_name ("no find server")."""


class NjetMethodError(NjetApiError):
    """The endpoint does not take this method (500 "server error", 404, dyn_loc "no support
    method"): a client bug or an NJet without that module."""


def _classify(op: str, code: int | None, http_status: int, msg: str) -> type[NjetApiError]:
    text = " ".join(msg.lower().split())
    location_op = "location" in op
    if code in (404, 405, 500) or "no support method" in text:
        return NjetMethodError
    if code == 3 or "json parser" in text:
        return NjetSchemaError
    if code == 5:
        return NjetServerExists
    if code == 11:
        if "repeated" in text:
            return NjetRepeated
        if "delete" in text or op.startswith("del"):
            return NjetDeleteFailed
        return NjetRepeated
    if code == 4:
        if location_op and "exist!" in text:
            return NjetLocationExists
        if "not find location" in text:
            return NjetLocationMissing
        if location_op and "no find server" in text:
            return NjetNoServerForLocation
        return NjetApplyError
    if code is None or http_status == 404:
        return NjetMethodError if http_status in (404, 405) else NjetBadResponse
    return NjetApiError


def error_for_reply(
    op: str,
    *,
    what: str,
    url: str,
    http_status: int,
    data: Any,
    content_type: str = "",
) -> NjetApiError | None:
    """The error a reply means for call `op` ("add cert", "del location", "get ssl", ...), or
    None for success: code 0, or a 2xx JSON document without `code` (the GET endpoints)."""
    if isinstance(data, dict):
        code_value = data.get("code")
        msg_value = data.get("msg")
        msg = msg_value if isinstance(msg_value, str) else ""
        raw_data = data.get("data")
        extra = (
            tuple(d for d in raw_data if isinstance(d, str)) if isinstance(raw_data, list) else ()
        )
        if isinstance(code_value, int) and not isinstance(code_value, bool):
            if code_value == 0 and 200 <= http_status < 300:
                return None
            cls = _classify(op, code_value, http_status, " ".join((msg, *extra)))
            return cls(what, url=url, http_status=http_status, code=code_value, msg=msg, data=extra)
        if code_value is None and 200 <= http_status < 300 and op.startswith("get"):
            return None
    if 200 <= http_status < 300 and op.startswith("get") and data is not None:
        return None
    cls = _classify(op, None, http_status, "")
    kind = content_type or "no content type"
    shape = type(data).__name__ if data is not None else "a non-JSON body"
    return cls(
        what,
        url=url,
        http_status=http_status,
        msg=f"unexpected answer: {shape} ({kind})",
    )


# --- wire format (pydantic; certificateKey is deliberately not a field: it is dropped) -----


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _WireCert(_Wire):
    cert_type: str = "rsa"
    certificate: str = ""


class _WireServer(_Wire):
    listens: list[str] = Field(default_factory=list)
    server_names: list[str] = Field(default_factory=list, alias="serverNames")
    certificates: list[_WireCert] = Field(default_factory=list)


class _WireSsl(_Wire):
    servers: list[_WireServer]


class _WireLocation(_Wire):
    location: str


class _WireLogServer(_Wire):
    listens: list[str] = Field(default_factory=list)
    server_names: list[str] = Field(default_factory=list, alias="serverNames")
    locations: list[_WireLocation] = Field(default_factory=list)


class _WireLog(_Wire):
    servers: list[_WireLogServer]


def _validation_text(exc: ValidationError) -> str:
    """pydantic's errors without the input values (they could hold an inline key)."""
    parts = [
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    return "; ".join(parts[:5])


def _leaf_fingerprint(pem_text: str) -> str | None:
    """sha256 of the first certificate's DER (CertInfo.fingerprint), None if unreadable."""
    try:
        return fingerprint_pem(pem_text.encode())
    except ValueError:
        return None


def _cert_entry(wire: _WireCert) -> NjetCertEntry:
    if wire.certificate.startswith("data:"):
        return NjetCertEntry(
            cert_type=wire.cert_type,
            inline=True,
            path=None,
            fingerprint=_leaf_fingerprint(wire.certificate[len("data:") :]),
        )
    return NjetCertEntry(
        cert_type=wire.cert_type, inline=False, path=wire.certificate or None, fingerprint=None
    )


def parse_ssl_servers(body: object) -> tuple[NjetServer, ...]:
    """GET /api/v1/ssl's JSON -> key-free servers. Raises ValueError (no input echoed)."""
    try:
        wire = _WireSsl.model_validate(body)
    except ValidationError as exc:
        raise ValueError(f"unexpected /api/v1/ssl document: {_validation_text(exc)}") from None
    return tuple(
        NjetServer(
            listens=tuple(s.listens),
            server_names=tuple(s.server_names),
            certificates=tuple(_cert_entry(c) for c in s.certificates),
        )
        for s in wire.servers
    )


def parse_http_log(body: object) -> tuple[LocationServer, ...]:
    """GET /api/v1/config/http_log's JSON -> servers with their location strings."""
    try:
        wire = _WireLog.model_validate(body)
    except ValidationError as exc:
        raise ValueError(f"unexpected http_log document: {_validation_text(exc)}") from None
    return tuple(
        LocationServer(
            listens=tuple(s.listens),
            server_names=tuple(s.server_names),
            locations=tuple(loc.location for loc in s.locations),
        )
        for s in wire.servers
    )
