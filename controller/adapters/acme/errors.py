"""What went wrong talking to an ACME CA, and what that means for the controller.

Used by acme/network.py (which raises `CaResponseError` for every non-2xx answer and asks
`is_transient` what to retry in place) and by acme/client.py and acme/connection.py (which turn
whatever is left into the controller's error tree with `to_controller_error`):
  transient (connection errors, timeouts, 5xx, badNonce, short rateLimited) -> retried in place,
      then TemporaryError(retry_after=Retry-After when the CA gave one, at most 24 h);
  the CA refusing the request (rejectedIdentifier, unauthorized, malformed, caa, badCSR,
      failed validations...) -> PermanentError with the CA's detail;
  externalAccountRequired, invalidContact -> ConfigError.
Messages name the CA URL and never contain key material.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
from acme import errors as acme_errors
from acme import messages

from controller.clock import utc_now
from controller.errors import (
    ConfigError,
    ControllerError,
    PermanentError,
    RateLimited,
    TemporaryError,
)
from controller.logs import log_event
from controller.status import clamp_retry_after

# A rateLimited answer with a Retry-After up to this many seconds is waited out in place.
MAX_INLINE_RETRY_AFTER = 3.0

_CONFIG_CODES = frozenset({"externalAccountRequired", "invalidContact", "unsupportedContact"})
_TRANSIENT_CODES = frozenset({"badNonce", "serverInternal"})


@dataclass(frozen=True)
class Subproblem:
    identifier: str | None
    code: str
    detail: str


class CaResponseError(Exception):
    """A non-2xx answer from the CA (an RFC 7807 problem document when it sent one)."""

    def __init__(
        self,
        *,
        url: str,
        http_status: int,
        code: str,
        detail: str,
        retry_after: float | None = None,
        subproblems: tuple[Subproblem, ...] = (),
    ) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.url = url
        self.http_status = http_status
        self.code = code  # the ACME error code without the urn prefix, or "http-<status>"
        self.detail = detail
        self.retry_after = retry_after
        self.subproblems = subproblems

    @classmethod
    def from_response(
        cls, response: requests.Response, *, clock: Callable[[], datetime] = utc_now
    ) -> CaResponseError:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), clock=clock)
        try:
            problem = messages.Error.from_json(response.json())
        except Exception:
            snippet = " ".join(response.text.split())[:200]
            return cls(
                url=response.url, http_status=response.status_code,
                code=f"http-{response.status_code}", detail=snippet, retry_after=retry_after,
            )
        subs = tuple(
            Subproblem(
                identifier=sp.identifier.value if sp.identifier is not None else None,
                code=problem_code(sp), detail=sp.detail or "",
            )
            for sp in (problem.subproblems or ())
        )
        return cls(
            url=response.url, http_status=response.status_code, code=problem_code(problem),
            detail=problem.detail or problem.title or "", retry_after=retry_after,
            subproblems=subs,
        )

    def describe(self) -> str:
        if self.code.startswith("http-"):  # not a problem document
            return f"HTTP {self.http_status}: {self.detail}"
        text = f"{self.code}: {self.detail}" if self.detail else self.code
        for sp in self.subproblems:
            text += f"; {sp.identifier or '?'}: {sp.code}: {sp.detail}"
        return text


def problem_code(problem: messages.Error) -> str:
    """"rejectedIdentifier" for urn:ietf:params:acme:error:rejectedIdentifier (or the raw type)."""
    typ = str(problem.typ or "about:blank")
    return typ.removeprefix(messages.ERROR_PREFIX)


def parse_retry_after(
    value: str | None, *, clock: Callable[[], datetime] = utc_now
) -> float | None:
    """Seconds from `clock()` for a Retry-After header (delta-seconds or HTTP-date), else None.

    Honoured up to status.MAX_RETRY_AFTER (24 h): a longer one (99999999999999999999 seconds, a
    date years ahead) is clamped to it, with a warning naming what the CA sent.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)  # never raises: 400 digits are `inf`, which is clamped below
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - clock()).total_seconds()
    bounded = clamp_retry_after(seconds)
    if bounded < seconds:
        log_event("Retry-After beyond the longest honoured backoff; clamped",
                  level=logging.WARNING, retry_after=value[:64], honoured=f"{bounded:.0f}s")
    return bounded


def is_transient(exc: BaseException) -> bool:
    """Worth an immediate retry inside the same call."""
    if isinstance(exc, requests.exceptions.SSLError):
        return False  # a wrong caBundle does not fix itself
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, CaResponseError):
        if exc.retry_after is not None and exc.retry_after > MAX_INLINE_RETRY_AFTER:
            return False  # not worth blocking the pass: the backoff in status carries it
        if _rate_limited(exc):
            return exc.retry_after is not None
        return exc.code in _TRANSIENT_CODES or exc.http_status >= 500
    return isinstance(exc, acme_errors.NonceError)


def _rate_limited(exc: CaResponseError) -> bool:
    """A rate limit, with or without a problem document (a 429 on HEAD newNonce has none)."""
    return exc.code == "rateLimited" or exc.http_status == 429


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_SSL_RE = re.compile(r"\[SSL: [A-Z_]+\] ([^'\")(]+)")


def describe_network_error(exc: BaseException) -> str:
    """A short reason for a requests failure ("Connection refused", "timed out", ...)."""
    if isinstance(exc, requests.exceptions.SSLError):
        m = _SSL_RE.search(str(exc))
        return f"TLS failed (is caBundle right?): {m.group(1).strip() if m else _short(exc)}"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    m = _ERRNO_RE.search(str(exc))
    return m.group(1).strip() if m else _short(exc)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:240]


def to_controller_error(exc: BaseException, *, context: str, ca_url: str) -> ControllerError:
    """Map any failure of an ACME call to the controller's error tree.

    `context` says what was being done ("ordering a.test, www.a.test"); the CA URL is added.
    """
    if isinstance(exc, ControllerError):
        return exc
    if isinstance(exc, requests.exceptions.RequestException):
        return TemporaryError(
            f"{context}: the CA at {ca_url} is unreachable: {describe_network_error(exc)}"
        )
    if isinstance(exc, CaResponseError):
        where = f"{context}: the CA at {ca_url} answered {exc.describe()}"
        if _rate_limited(exc):
            return RateLimited(where, retry_after=exc.retry_after)
        if exc.code in _TRANSIENT_CODES or exc.http_status >= 500:
            return TemporaryError(where, retry_after=exc.retry_after)
        if exc.code in _CONFIG_CODES:
            return ConfigError(where)
        if exc.code == "accountDoesNotExist":
            return TemporaryError(where)
        return PermanentError(where)
    if isinstance(exc, acme_errors.ConflictError):
        return PermanentError(f"{context}: the CA at {ca_url} reported a conflict")
    if isinstance(exc, acme_errors.Error):
        return TemporaryError(
            f"{context}: unexpected answer from the CA at {ca_url}: {_short(exc)}"
        )
    return TemporaryError(f"{context}: {type(exc).__name__}: {_short(exc)}")
