"""Posts certificate events to the `[notify] webhook` (aiohttp client).

Called by dispatch.py's webhook worker (WebhookNotifier.send), never on the reconcile's path.
The body is the `[notify] template`: "json" (events.event_json), or the plain-text message
bodies Slack (`{"text"}`), DingTalk and WeCom (`{"msgtype": "text", "text": {"content"}}`)
accept. With `[notify] secretFile` every post carries `X-NJCM-Signature: sha256=<hex of
HMAC-SHA256(secret, body)>` and `X-NJCM-Timestamp` (unix seconds of the delivery).

A post is retried `retries` times after the first, with exponential backoff (1 s, 2 s, 4 s ...
at most MAX_BACKOFF each), on a network error, a timeout, a 5xx, 408 or 429; never past
MAX_TOTAL seconds in all. Any other answer outside 2xx, and a DingTalk or WeCom answer whose
`errcode` is not 0, fails at once. Redirects are not followed. The URL may hold a token: only
`scheme://host[:port]` is ever logged (`target`), and errors are named by type, not by their
text (which may quote the URL). Counted through `on_result(result)` (njcm_notifications_total).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from controller import __version__
from controller.adapters.hooks.events import CertEvent, event_json, event_text
from controller.clock import utc_now
from controller.logs import log_event

TEMPLATES = ("json", "slack", "dingtalk", "wecom")
MAX_BACKOFF = 30.0  # seconds between two attempts, at most
MAX_TOTAL = 300.0  # seconds one delivery may take in all, retries included
_RETRY_STATUS = frozenset({408, 429})
_ANSWER_LIMIT = 4096  # bytes of an answer read (for a DingTalk / WeCom errcode)


def render_body(template: str, event: CertEvent) -> bytes:
    """The JSON body `template` gives for `event`."""
    if template == "json":
        doc: dict[str, Any] = event_json(event)
    elif template == "slack":
        doc = {"text": event_text(event)}
    elif template in ("dingtalk", "wecom"):
        doc = {"msgtype": "text", "text": {"content": event_text(event)}}
    else:
        raise ValueError(f"unknown webhook template {template!r}")
    return orjson.dumps(doc)


def signature(secret: bytes, body: bytes) -> str:
    """The X-NJCM-Signature value: `sha256=` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def target_of(url: str) -> str:
    """`scheme://host[:port]` of a webhook URL: what the logs may show of it."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


class WebhookNotifier:
    def __init__(self, url: str, *, template: str = "json", retries: int = 3,
                 timeout: float = 10.0,
                 secret: bytes | None = None,
                 on_result: Callable[[str], None] | None = None, backoff: float = 1.0,
                 max_total: float = MAX_TOTAL,
                 clock: Callable[[], datetime] = utc_now) -> None:
        if template not in TEMPLATES:
            raise ValueError(f"unknown webhook template {template!r}")
        self.url = url
        self.target = target_of(url)
        self.template = template
        self.retries = retries
        self.timeout = timeout
        self.secret = secret
        self.on_result = on_result
        self.backoff = backoff
        self.max_total = max_total
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def count(self, result: str) -> None:
        if self.on_result is not None:
            self.on_result(result)

    def headers(self, body: bytes) -> dict[str, str]:
        out = {"Content-Type": "application/json; charset=utf-8",
               "User-Agent": f"njet-cert-manager/{__version__}"}
        if self.secret is not None:
            out["X-NJCM-Timestamp"] = str(int(self._clock().timestamp()))
            out["X-NJCM-Signature"] = signature(self.secret, body)
        return out

    async def send(self, event: CertEvent) -> bool:
        """Deliver one event (retrying as the module docstring says); True when delivered."""
        body = render_body(self.template, event)
        headers = self.headers(body)
        started = time.monotonic()
        delay = self.backoff
        attempts = 1 + self.retries
        fields: dict[str, Any] = {"target": self.target, "event": event.kind.value,
                                  "domain": event.domain}
        detail = ""
        for attempt in range(1, attempts + 1):
            remaining = self.max_total - (time.monotonic() - started)
            ok, retry, detail = await self._attempt(body, headers, min(self.timeout,
                                                                       max(remaining, 0.1)))
            if ok:
                log_event("webhook delivered", attempts=attempt, **fields)
                self.count("success")
                return True
            left = self.max_total - (time.monotonic() - started)
            if not retry or attempt == attempts or left <= delay:
                break
            log_event("webhook attempt failed, retrying", level=logging.WARNING,
                      attempt=attempt, error=detail, retry_in=delay, **fields)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        log_event("webhook failed", level=logging.ERROR, attempts=attempt, error=detail,
                  **fields)
        self.count("failure")
        return False

    async def _attempt(self, body: bytes, headers: dict[str, str],
                       timeout: float) -> tuple[bool, bool, str]:  # noqa: ASYNC109
        """(delivered, worth retrying, what went wrong)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        try:
            async with self._session.post(self.url, data=body, headers=headers,
                                          allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                status = resp.status
                answer = await resp.content.read(_ANSWER_LIMIT)
        except TimeoutError:
            return False, True, "timed out"
        except (aiohttp.ClientError, OSError) as exc:
            return False, True, _describe(exc)
        if 200 <= status < 300:
            errcode = self._errcode(answer)
            if errcode is not None:
                return False, False, f"HTTP {status} with errcode {errcode}"
            return True, False, ""
        return False, status >= 500 or status in _RETRY_STATUS, f"HTTP {status}"

    def _errcode(self, answer: bytes) -> object:
        """DingTalk and WeCom answer 200 with a non-zero `errcode` when they refuse."""
        if self.template not in ("dingtalk", "wecom"):
            return None
        try:
            doc = orjson.loads(answer)
        except orjson.JSONDecodeError:
            return None
        code = doc.get("errcode") if isinstance(doc, dict) else None
        return None if code in (None, 0) else code

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(exc: BaseException) -> str:
    """An aiohttp error by its type (and the OS reason of a failed connect), never its text,
    which may quote the URL."""
    name = type(exc).__name__
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return f"{name}: {os_error.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{name}: {exc.strerror}"
    return name
