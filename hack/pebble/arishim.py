"""An ARI shim in front of the real Pebble (Debian's Pebble 2.4.0 has no ARI, RFC 9773).

The fault proxy (faultproxy.py: TLS with the harness's certificate, every request forwarded with
its Host header, so Pebble's URLs and JWS `url` checks stay consistent; its faults and counts
work here too), plus:

- the directory (`GET /dir`) gains `renewalInfo` = `https://<Host>/renewal-info`, through the
  directory hooks (`shim.directory_hooks`: `hook(doc, request)` edits the parsed directory in
  place; the profiles tests add `meta.profiles` the same way);
- `GET /renewal-info/<certID>` is answered here, never by Pebble: the window the test set for
  that certificate (`shim.set_window(start, end, cert_id=..., retry_after=...,
  explanation_url=...)`; without `cert_id`, for every certificate), else DEFAULT_WINDOW (60..61
  days from now); `shim.fail_renewal_info(status, retry_after=..., count=...)` answers errors
  instead. `shim.polls()` lists (certID, status answered) of every renewalInfo request;
- every newOrder's JWS payload (base64url of the `payload` member) is decoded; the newOrder
  hooks run first (`shim.new_order_hooks`: `hook(payload)` returns None to forward, or
  `(status, problem)` to answer with that problem document instead); then it is recorded with
  its answer (`shim.orders()`: the payload objects, badNonce retries left out;
  `shim.replaces()`: their `replaces`, None when absent; `shim.order_statuses()`: what each
  was answered; `shim.order_log()`: everything);
  `shim.reject_replaces(count=1)` adds one that answers 409 alreadyReplaced to the next
  `count` newOrders that carry `replaces`. Everything else goes to Pebble unchanged;
- ACME profiles (Pebble 2.4 has none): `shim.advertise_profiles({"classic": "...", ...})` puts
  them in the directory's `meta.profiles` ({}: an empty one, None: Pebble's own, i.e. none);
  `shim.profiles()` lists the `profile` each newOrder asked for (None when absent).

Library: `AriShim(upstream_port, cert=..., key=..., upstream_ca=...).start()` (the FaultProxy
constructor). CLI: `python3 hack/pebble/arishim.py --upstream 127.0.0.1:14000 --state-dir DIR`.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

RENEWAL_PATH = "/renewal-info"
DEFAULT_WINDOW = (timedelta(days=60), timedelta(days=61))  # from the time of the request


def _faultproxy() -> ModuleType:
    """faultproxy.py, as hack/pebble/run.py and tests/support/hackmods.py import it."""
    name = "_njet_pebble_faultproxy"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("faultproxy.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_fp = _faultproxy()
FaultProxy: Any = _fp.FaultProxy

Answer = tuple[int, list[tuple[str, str]], bytes]
DirectoryHook = Callable[[dict[str, Any], Any], None]
NewOrderHook = Callable[[dict[str, Any]], "tuple[int, dict[str, Any]] | None"]


@dataclass
class Window:
    start: datetime
    end: datetime
    retry_after: str | None = None
    explanation_url: str | None = None


@dataclass
class _Failure:
    status: int
    retry_after: str | None
    left: int | None


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _retry(value: float | str | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if isinstance(value, int | float) else value


def decode_payload(body: bytes) -> dict[str, Any] | None:
    """The JSON payload of a flattened JWS request body (None: POST-as-GET or not JSON)."""
    try:
        jws = json.loads(body)
        raw = jws.get("payload", "") if isinstance(jws, dict) else ""
        if not raw:
            return None
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        doc = json.loads(data)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def problem(status: int, code: str, detail: str) -> Answer:
    body = json.dumps({"type": f"urn:ietf:params:acme:error:{code}", "detail": detail,
                       "status": status}).encode()
    return status, [("Content-Type", "application/problem+json")], body


class AriShim(FaultProxy):  # type: ignore[misc]
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ari_lock = threading.Lock()
        self._windows: dict[str | None, Window] = {}
        self._failures: list[_Failure] = []
        self._polls: list[tuple[str, int]] = []
        self._orders: list[dict[str, Any]] = []
        self._order_log: list[tuple[dict[str, Any], int]] = []
        self._new_order_path = "/order-plz"
        self.directory_hooks: list[DirectoryHook] = [self._add_renewal_info]
        self.new_order_hooks: list[NewOrderHook] = []
        self._profiles: dict[str, str] | None = None

    # -- what the test controls --------------------------------------------------------------
    def set_window(self, start: datetime, end: datetime, *, cert_id: str | None = None,
                   retry_after: float | str | None = None,
                   explanation_url: str | None = None) -> None:
        """renewalInfo answers this window (for `cert_id`, else for every certificate)."""
        with self._ari_lock:
            self._windows[cert_id] = Window(start, end, _retry(retry_after), explanation_url)

    def fail_renewal_info(self, status: int = 503, *, retry_after: float | str | None = None,
                          count: int | None = None) -> None:
        """The next `count` renewalInfo requests (all while None) are answered with `status`."""
        with self._ari_lock:
            self._failures.append(_Failure(status, _retry(retry_after), count))

    def reject_replaces(self, count: int = 1) -> None:
        """The next `count` newOrders naming `replaces` get 409 alreadyReplaced."""
        left = [count]

        def hook(payload: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
            if not payload.get("replaces") or left[0] <= 0:
                return None
            left[0] -= 1
            return 409, {"type": "urn:ietf:params:acme:error:alreadyReplaced",
                         "detail": f"certificate {payload['replaces']} was already replaced",
                         "status": 409}

        with self._ari_lock:
            self.new_order_hooks.append(hook)

    def advertise_profiles(self, profiles: dict[str, str] | None) -> None:
        """The directory's meta.profiles from now on (name -> description; None: Pebble's)."""
        with self._ari_lock:
            self._profiles = None if profiles is None else dict(profiles)
            if self._add_profiles not in self.directory_hooks:
                self.directory_hooks.append(self._add_profiles)

    def profiles(self) -> list[str | None]:
        """The `profile` of every newOrder so far (None: the order named none)."""
        return [o.get("profile") for o in self.orders()]

    def polls(self) -> list[tuple[str, int]]:
        with self._ari_lock:
            return list(self._polls)

    def orders(self) -> list[dict[str, Any]]:
        with self._ari_lock:
            return [dict(o) for o in self._orders]

    def replaces(self) -> list[str | None]:
        return [o.get("replaces") for o in self.orders()]

    def order_log(self) -> list[tuple[dict[str, Any], int]]:
        """Every newOrder with the status answered, badNonce retries included."""
        with self._ari_lock:
            return [(dict(o), s) for o, s in self._order_log]

    def order_statuses(self) -> list[int]:
        """The status answered to each of `orders()`."""
        with self._ari_lock:
            return [s for o, s in self._order_log if any(o is x for x in self._orders)]

    # -- serving (FaultProxy calls _forward for every request no fault rule answered) -----------
    async def _forward(self, request: Any) -> Answer:
        path = request.path
        if request.method == "GET" and path.startswith(RENEWAL_PATH + "/"):
            return self._renewal_info(path[len(RENEWAL_PATH) + 1:])
        if request.method == "POST" and path == self._new_order_path:
            return await self._new_order(request)
        status, headers, body = await super()._forward(request)
        if request.method == "GET" and path == "/dir" and status == 200:
            body = self._rewrite_directory(body, request)
        return status, headers, body

    async def _new_order(self, request: Any) -> Answer:
        payload = decode_payload(request.body) or {}
        with self._ari_lock:
            hooks = list(self.new_order_hooks)
        for hook in hooks:
            answer = hook(payload)
            if answer is not None:
                status, doc = answer
                self._record_order(payload, status, json.dumps(doc).encode())
                return status, [("Content-Type", "application/problem+json")], \
                    json.dumps(doc).encode()
        status, headers, body = await super()._forward(request)
        self._record_order(payload, status, body)
        return status, headers, body

    def _record_order(self, payload: dict[str, Any], status: int, body: bytes) -> None:
        """Record a newOrder with its answer; a badNonce answer is left out of `orders()` (the
        client sends the same order again: a retry, not another order)."""
        bad_nonce = status == 400 and b"badNonce" in body
        with self._ari_lock:
            self._order_log.append((payload, status))
            if not bad_nonce:
                self._orders.append(payload)

    def _rewrite_directory(self, body: bytes, request: Any) -> bytes:
        try:
            doc = json.loads(body)
        except ValueError:
            return body
        if not isinstance(doc, dict):
            return body
        new_order = doc.get("newOrder")
        if isinstance(new_order, str):
            self._new_order_path = urlsplit(new_order).path
        for hook in list(self.directory_hooks):
            hook(doc, request)
        return json.dumps(doc).encode()

    def _add_renewal_info(self, doc: dict[str, Any], request: Any) -> None:
        host = request.header("host") or f"{self.host}:{self.port}"
        doc["renewalInfo"] = f"https://{host}{RENEWAL_PATH}"

    def _add_profiles(self, doc: dict[str, Any], request: Any) -> None:
        with self._ari_lock:
            offered = self._profiles
        if offered is None:
            return
        meta = doc.get("meta")
        if not isinstance(meta, dict):
            meta = doc["meta"] = {}
        meta["profiles"] = dict(offered)

    def _renewal_info(self, cert_id: str) -> Answer:
        with self._ari_lock:
            failure = next((f for f in self._failures if f.left is None or f.left > 0), None)
            if failure is not None:
                if failure.left is not None:
                    failure.left -= 1
                self._polls.append((cert_id, failure.status))
            window = self._windows.get(cert_id) or self._windows.get(None)
            if failure is None:
                self._polls.append((cert_id, 200))
        if failure is not None:
            status, headers, body = problem(failure.status, "serverInternal"
                                            if failure.status >= 500 else "malformed",
                                            "injected by arishim")
            if failure.retry_after is not None:
                headers.append(("Retry-After", failure.retry_after))
            return status, headers, body
        now = datetime.now(UTC)
        if window is None:
            window = Window(now + DEFAULT_WINDOW[0], now + DEFAULT_WINDOW[1])
        doc: dict[str, Any] = {"suggestedWindow": {"start": _stamp(window.start),
                                                   "end": _stamp(window.end)}}
        if window.explanation_url:
            doc["explanationURL"] = window.explanation_url
        headers = [("Content-Type", "application/json")]
        if window.retry_after is not None:
            headers.append(("Retry-After", window.retry_after))
        return 200, headers, json.dumps(doc).encode()


def main(argv: list[str] | None = None) -> int:
    return int(_fp.serve_cli(AriShim, "ARI shim (HTTPS) in front of Pebble", argv))

if __name__ == "__main__":
    sys.exit(main())
