"""The HTTP layer under acme's ClientV2: CA-bundle trust, problem documents, fast in-place retries.

Used only by acme/connection.py (AcmeIssuer's base), always from a worker thread (acme is
synchronous). Differences to acme.client.ClientNetwork:
- `verify` may be a CA bundle path (handed to requests' `verify=`);
- every non-2xx answer raises acme_errors.CaResponseError carrying the HTTP status, the ACME error
  code and Retry-After (acme's own messages.Error loses the headers);
- a nonce that comes with an error answer is kept, so a badNonce retry costs one request;
- transient failures (connection errors, 5xx, badNonce, a rateLimited with a short Retry-After)
  are retried with tenacity: badNonce up to 8 attempts at once (Pebble rejects 5% of nonces),
  others 3 attempts with short waits;
- every request has a connect and a read timeout (5 s and 15 s by default), so a CA that hangs
  costs at most that per attempt;
- `stop` (a threading.Event the issuer sets when the process stops or the order is cancelled)
  is checked before every request: once it is set nothing more is sent (TemporaryError
  "stopping"), and a retry wait ends at once.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import requests
from acme import client as acme_client
from josepy.interfaces import JSONDeSerializable
from josepy.jwa import JWASignature
from josepy.jwk import JWK
from tenacity import RetryCallState, Retrying, retry_if_exception

from controller.adapters.acme.errors import CaResponseError, is_transient
from controller.errors import TemporaryError
from controller.logs import log_event

_BAD_NONCE_ATTEMPTS = 8
_OTHER_ATTEMPTS = 3
_FIRST_WAIT = 0.1
_MAX_WAIT = 1.0
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0


def _stop(state: RetryCallState) -> bool:
    exc = state.outcome.exception() if state.outcome else None
    limit = (
        _BAD_NONCE_ATTEMPTS
        if isinstance(exc, CaResponseError) and exc.code == "badNonce"
        else _OTHER_ATTEMPTS
    )
    return state.attempt_number >= limit


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, CaResponseError):
        if exc.code == "badNonce":
            return 0.0
        if exc.retry_after is not None:
            return exc.retry_after
    return min(_MAX_WAIT, _FIRST_WAIT * 3.0 ** (state.attempt_number - 1))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log_event(
        "retrying an ACME request", level=logging.DEBUG, attempt=state.attempt_number,
        error=str(exc),
    )


def retrying(stop: threading.Event) -> Retrying:
    """The in-place retry policy for one ACME request; a wait ends early when `stop` is set
    (the next attempt then refuses to send)."""

    def sleep(seconds: float) -> None:
        stop.wait(seconds)

    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=_stop,
        wait=_wait,
        sleep=sleep,
        before_sleep=_log_retry,
        reraise=True,
    )


class AcmeNetwork(acme_client.ClientNetwork):
    """acme's ClientNetwork with the differences listed in the module docstring."""

    def __init__(
        self,
        key: JWK | None = None,
        *,
        alg: JWASignature,
        verify: Path | None,
        stop: threading.Event,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
        user_agent: str = "njet-cert-manager",
    ) -> None:
        # requests takes (connect, read) as `timeout`; acme annotates it as int
        super().__init__(key=key, alg=alg, user_agent=user_agent,
                         timeout=timeout)  # type: ignore[arg-type]
        # requests takes a CA bundle path as `verify`; acme annotates the attribute as bool.
        self.verify_ssl = str(verify) if verify is not None else True  # type: ignore[assignment]
        self.stop = stop

    def close(self) -> None:
        self.session.close()

    @classmethod
    def _check_response(
        cls, response: requests.Response, content_type: str | None = None
    ) -> requests.Response:
        if response.status_code >= 400:
            raise CaResponseError.from_response(response)
        return super()._check_response(response, content_type=content_type)

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if self.stop.is_set():
            raise TemporaryError(f"stopping: {method} {url} not sent to the CA")
        response = super()._send_request(method, url, *args, **kwargs)
        if response.status_code >= 400 and self.REPLAY_NONCE_HEADER in response.headers:
            try:
                self._add_nonce(response)
            except Exception:  # a malformed nonce on an error answer: just fetch a new one
                log_event("ignoring a bad nonce on an error answer", level=logging.DEBUG, url=url)
        return response

    def get(
        self, url: str, content_type: str = acme_client.ClientNetwork.JSON_CONTENT_TYPE,
        **kwargs: Any,
    ) -> requests.Response:
        for attempt in retrying(self.stop):
            with attempt:
                return super().get(url, content_type=content_type, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in retrying(self.stop):
            with attempt:
                return self._post_once(*args, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def post_as_get(self, url: str, new_nonce_url: str, **kwargs: Any) -> requests.Response:
        """POST-as-GET (RFC 8555 §6.3) with retries."""
        empty: JSONDeSerializable | None = None
        return self.post(url, empty, new_nonce_url=new_nonce_url, **kwargs)
