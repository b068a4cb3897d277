"""Async client of NJet's control API: GET/PUT /api/v1/ssl, POST/PUT /api/v1/dyn_loc, GET
/api/v1/config/http_log, with every recorded error code mapped to a typed error.

Called by observe (get_ssl, http_log) and execute (add_cert, del_cert) and by the http-01
challenge code (add_location, del_location). Never built in store-only mode (empty address).

Behaviour follows the recorded contract
(../shared/njet-contract): NJet reports most failures as HTTP 200 with a
non-zero `code` (§2), some dyn_loc 400s say text/plain around a JSON body, and GET echoes
inline private keys - the parsed model drops them (`NjetCertEntry` has no key field) and no
message, exception or log line built here carries request or response bodies (NJet's own
`msg`/`data` strings are included, with anything that looks like a private key cut out).
Reply parsing and the typed errors (NjetApiError subclasses, NjetUnavailable) live in
adapters/njet/wire.py and are re-exported here.
Transient failures (refused, timeout, a proxy's 5xx) are retried a few times inside one call;
a request that changes state is retried only when it cannot have reached NJet.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from yarl import URL

from controller.adapters.njet.wire import (
    NjetApiError,
    NjetApplyError,
    NjetBadResponse,
    NjetDeleteFailed,
    NjetLocationExists,
    NjetLocationMissing,
    NjetMethodError,
    NjetNoServerForLocation,
    NjetRepeated,
    NjetSchemaError,
    NjetServerExists,
    NjetUnavailable,
    error_for_reply,
    parse_http_log,
    parse_ssl_servers,
    redact,
)
from controller.errors import ConfigError
from controller.njetmatch import (
    ACME_CHALLENGE_PATH,
    ACME_CHALLENGE_RULE,
    LocationServer,
    NjetCertEntry,
    NjetServer,
)

__all__ = [
    "LocationServer",
    "NjetApiError",
    "NjetApplyError",
    "NjetBadResponse",
    "NjetCertEntry",
    "NjetClient",
    "NjetDeleteFailed",
    "NjetLocationExists",
    "NjetLocationMissing",
    "NjetMethodError",
    "NjetNoServerForLocation",
    "NjetRepeated",
    "NjetSchemaError",
    "NjetServer",
    "NjetServerExists",
    "NjetUnavailable",
    "parse_http_log",
    "parse_ssl_servers",
]

log = logging.getLogger(__name__)

SSL_PATH = "/api/v1/ssl"
LOC_PATH = "/api/v1/dyn_loc"
HTTP_LOG_PATH = "/api/v1/config/http_log"


class Op(Enum):
    """Which call a reply answers; decides the meaning of ambiguous codes (11, 4)."""

    GET_SSL = "get ssl"
    ADD_CERT = "add cert"
    DEL_CERT = "del cert"
    ADD_LOCATION = "add location"
    DEL_LOCATION = "del location"
    HTTP_LOG = "get http_log"


# --- the client ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    content_type: str
    data: Any  # parsed JSON, or None when the body is not JSON


def _normalise_base_url(base_url: str) -> str:
    text = base_url.strip()
    if not text:
        raise ConfigError(
            "NJet API address is empty: that means store-only mode, where no NJet client "
            "may be built"
        )
    if "://" not in text:
        text = f"http://{text}"
    url = URL(text)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"NJet API address {base_url!r} is not an http(s)://host:port URL")
    return text.rstrip("/")


def _cert_body(
    kind: str,
    *,
    listens: Sequence[str],
    server_names: Sequence[str],
    cert_type: str,
    cert_pem: bytes,
    key_pem: bytes,
) -> dict[str, Any]:
    if not listens or not server_names:
        raise ValueError("listens and server_names must not be empty (NJet uses element 0)")
    return {
        "listens": list(listens),
        "serverNames": list(server_names),
        "type": kind,
        "cert_info": {
            "cert_type": cert_type,
            "certificate": "data:" + cert_pem.decode("ascii"),
            "certificateKey": "data:" + key_pem.decode("ascii"),
        },
    }


class NjetClient:
    """One NJet control API (`base_url` like "http://127.0.0.1:8081"); use as
    `async with NjetClient(url) as njet:` or call `close()`.

    `timeout` bounds each HTTP attempt; `attempts` is the number of tries for transient
    failures. Every method raises NjetUnavailable (TemporaryError) when NJet cannot be
    reached, and a NjetApiError subclass when NJet answers with an error.
    """

    def __init__(self, base_url: str, *, timeout: float = 5.0, attempts: int = 3) -> None:
        self.base_url = _normalise_base_url(base_url)
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> NjetClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"NjetClient({self.base_url!r})"

    # -- endpoints --

    async def get_ssl(self) -> tuple[NjetServer, ...]:
        """Every server block NJet runs, with its certificate entries (keys dropped)."""
        data = await self._call("GET", SSL_PATH, None, op=Op.GET_SSL, what="list servers")
        try:
            return parse_ssl_servers(data)
        except ValueError as exc:
            raise self._bad("GET", SSL_PATH, str(exc)) from None

    async def add_cert(
        self,
        *,
        listens: Sequence[str],
        server_names: Sequence[str],
        cert_type: str,
        cert_pem: bytes,
        key_pem: bytes,
    ) -> None:
        """PUT type=add with inline `data:` PEM (cert may be a full chain). Success (code 0)
        does not prove the cert is served; probe it. NjetRepeated (11) is NOT "applied"."""
        body = _cert_body(
            "add",
            listens=listens,
            server_names=server_names,
            cert_type=cert_type,
            cert_pem=cert_pem,
            key_pem=key_pem,
        )
        what = f"add {cert_type} cert for {listens[0]} {server_names[0]}"
        await self._call("PUT", SSL_PATH, body, op=Op.ADD_CERT, what=what)

    async def del_cert(
        self,
        *,
        listens: Sequence[str],
        server_names: Sequence[str],
        cert_type: str,
        cert_pem: bytes,
        key_pem: bytes,
    ) -> None:
        """PUT type=del: only empties NJet's retained record, never changes what is served."""
        body = _cert_body(
            "del",
            listens=listens,
            server_names=server_names,
            cert_type=cert_type,
            cert_pem=cert_pem,
            key_pem=key_pem,
        )
        what = f"delete {cert_type} cert record of {listens[0]} {server_names[0]}"
        await self._call("PUT", SSL_PATH, body, op=Op.DEL_CERT, what=what)

    async def add_location(
        self,
        *,
        addr_port: str,
        server_name: str,
        proxy_pass: str,
        rule: str = ACME_CHALLENGE_RULE,
        name: str = ACME_CHALLENGE_PATH,
        location_body: str | None = None,
    ) -> None:
        """POST dyn_loc add; NjetLocationExists if present, NjetNoServerForLocation if the
        exact addr_port + server_name block does not exist."""
        location: dict[str, str] = {
            "location_rule": rule,
            "location_name": name,
            "proxy_pass": proxy_pass,
        }
        if location_body is not None:
            location["location_body"] = location_body
        body = {
            "type": "add",
            "addr_port": addr_port,
            "server_name": server_name,
            "locations": [location],
        }
        what = f"add location {rule} {name} on {addr_port} {server_name}"
        await self._call("POST", LOC_PATH, body, op=Op.ADD_LOCATION, what=what)

    async def del_location(
        self,
        *,
        addr_port: str,
        server_name: str,
        rule: str = ACME_CHALLENGE_RULE,
        name: str = ACME_CHALLENGE_PATH,
    ) -> None:
        """PUT dyn_loc del; NjetLocationMissing if it is not there."""
        body = {
            "type": "del",
            "addr_port": addr_port,
            "server_name": server_name,
            "location_rule": rule,
            "location_name": name,
        }
        what = f"delete location {rule} {name} on {addr_port} {server_name}"
        await self._call("PUT", LOC_PATH, body, op=Op.DEL_LOCATION, what=what)

    async def http_log(self) -> tuple[LocationServer, ...]:
        """Every server block with its locations (the presence check of dyn_loc)."""
        data = await self._call("GET", HTTP_LOG_PATH, None, op=Op.HTTP_LOG, what="list locations")
        try:
            return parse_http_log(data)
        except ValueError as exc:
            raise self._bad("GET", HTTP_LOG_PATH, str(exc)) from None

    # -- transport --

    def _bad(self, method: str, path: str, why: str) -> NjetBadResponse:
        return NjetBadResponse(
            f"NJet {method} {path}", url=self.base_url + path, http_status=200, msg=why
        )

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"Accept": "application/json"},
            )
        return self._session

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        op: Op,
        what: str,
    ) -> Any:
        url = self.base_url + path
        payload = orjson.dumps(body) if body is not None else None
        idempotent = method == "GET"

        def transient(exc: BaseException) -> bool:
            # A state-changing request is repeated only if it cannot have reached NJet.
            return isinstance(exc, NjetUnavailable) and (idempotent or not exc.maybe_applied)

        reply: _Reply | None = None
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.1, max=1.0),
            retry=retry_if_exception(transient),
            reraise=True,
        ):
            with attempt:
                reply = await self._send_once(method, url, payload, what=what)
        assert reply is not None
        log.debug("NJet %s %s (%s) -> HTTP %s", method, url, what, reply.status)
        error = error_for_reply(
            op.value,
            what=f"NJet {method} {path} ({what})",
            url=url,
            http_status=reply.status,
            data=reply.data,
            content_type=reply.content_type,
        )
        if error is not None:
            raise error
        return reply.data

    async def _send_once(
        self, method: str, url: str, payload: bytes | None, *, what: str
    ) -> _Reply:
        where = f"NJet control API {method} {url} ({what})"
        headers = {"Content-Type": "application/json"} if payload is not None else None
        try:
            async with self._get_session().request(
                method, url, data=payload, headers=headers
            ) as resp:
                raw = await resp.read()
                status, ctype = resp.status, resp.content_type
        except aiohttp.ClientConnectorError as exc:
            reason = redact(str(exc.os_error) or type(exc).__name__)
            raise NjetUnavailable(
                f"{where}: cannot connect: {reason}", url=url, maybe_applied=False
            ) from None
        except aiohttp.ConnectionTimeoutError:
            raise NjetUnavailable(
                f"{where}: cannot connect within {self._timeout:g} s", url=url, maybe_applied=False
            ) from None
        except TimeoutError:
            raise NjetUnavailable(
                f"{where}: no answer within {self._timeout:g} s", url=url, maybe_applied=True
            ) from None
        except aiohttp.ClientError as exc:
            raise NjetUnavailable(
                f"{where}: connection failed: {type(exc).__name__}", url=url, maybe_applied=True
            ) from None
        try:
            data: Any = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            data = None
        if status >= 500 and not (isinstance(data, dict) and "code" in data):
            # Not NJet's own JSON error: a proxy in front of it, or NJet half up.
            raise NjetUnavailable(
                f"{where}: HTTP {status} without an NJet answer (a proxy or NJet restarting)",
                url=url,
                maybe_applied=status != 503,
            )
        return _Reply(status=status, content_type=ctype, data=data)
