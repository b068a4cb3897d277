"""Bench 1, the floor: the least time one certificate takes against this Pebble.

Bare certbot `acme` (ClientV2), one account registered up front (not timed), an in-bench
http-01 responder started once on Pebble's http-01 port, a constant 10 ms poll loop, ec256
keys. Timed per run: key + CSR, newOrder, answer the challenge, poll until the order is ready,
finalize, poll until valid, download the chain. Called by bench/__main__.py; its median is the
denominator of the time-to-served ratio. `parallel_issue` (the same loop on several threads) is
the context figure of bench/throughput.py.
"""

from __future__ import annotations

import contextlib
import http.server
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import josepy
from acme import challenges, client, crypto_util, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import BenchError, summary, wait_port_free

POLL = 0.010
ORDER_TIMEOUT = 60.0


class _Responder(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        self.tokens: dict[str, bytes] = {}
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Responder

    def do_GET(self) -> None:
        body = self.server.tokens.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class FloorClient:
    """One ACME account on Pebble and the minimal issuance loop; `twin()` shares the account
    over its own HTTP session (one per thread)."""

    def __init__(self, pebble: Any, *, account_of: FloorClient | None = None) -> None:
        self.key: Any = account_of.key if account_of else josepy.jwk.JWKEC(
            key=ec.generate_private_key(ec.SECP256R1()))
        # requests takes a CA bundle path where acme's annotation says bool
        self.net: Any = client.ClientNetwork(
            self.key, alg=josepy.jwa.ES256, verify_ssl=str(pebble.ca_bundle),  # type: ignore[arg-type]
            user_agent="njcm-bench-floor",
            account=account_of.net.account if account_of else None)
        self.acme: Any
        if account_of is not None:
            self.acme = client.ClientV2(account_of.acme.directory, self.net)
            return
        directory = client.ClientV2.get_directory(pebble.directory_url, self.net)
        self.acme = client.ClientV2(directory, self.net)
        self.acme.new_account(messages.NewRegistration.from_data(
            email="floor@example.test", terms_of_service_agreed=True))

    def _get(self, url: str) -> Any:
        return self.acme._post_as_get(url)  # POST-as-GET, exactly what acme's own polling sends

    def _poll_order(self, uri: str, until: set[str], deadline: float) -> messages.Order:
        while True:
            body: messages.Order = messages.Order.from_json(self._get(uri).json())
            if body.status.name in until:
                return body
            if body.status == messages.STATUS_INVALID:
                raise BenchError(f"floor: Pebble marked the order invalid: {body.error}")
            if time.monotonic() > deadline:
                raise BenchError(f"floor: order still {body.status.name} after {ORDER_TIMEOUT}s")
            time.sleep(POLL)

    def issue(self, name: str, tokens: dict[str, bytes]) -> bytes:
        deadline = time.monotonic() + ORDER_TIMEOUT
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        csr = crypto_util.make_csr(key_pem, [name])
        order = self.acme.new_order(csr)
        for authz in order.authorizations:
            challb = next(c for c in authz.body.challenges
                          if isinstance(c.chall, challenges.HTTP01))
            response, validation = challb.response_and_validation(self.key)
            tokens[challb.chall.path] = validation.encode()
            self.acme.answer_challenge(challb, response)
        self._poll_order(order.uri, {"ready", "valid"}, deadline)
        self.acme.begin_finalization(order)
        body = self._poll_order(order.uri, {"valid"}, deadline)
        if body.certificate is None:
            raise BenchError("floor: the valid order has no certificate URL")
        pem: bytes = self._get(body.certificate).content
        if b"BEGIN CERTIFICATE" not in pem:
            raise BenchError("floor: Pebble returned no certificate")
        return pem


@contextlib.contextmanager
def responder(port: int) -> Iterator[_Responder]:
    wait_port_free(port)
    server = _Responder(port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def parallel_issue(pebble: Any, *, names: int, concurrency: int) -> float:
    """Wall seconds for `names` bare-acme issuances, `concurrency` threads (one account).

    Not a goal: it shows how fast Pebble and one Python process can go on this machine, the
    ceiling for the controller's throughput figure.
    """
    tag = secrets.token_hex(3)
    with responder(pebble.http_port) as server:
        base = FloorClient(pebble)
        local = threading.local()

        def one(i: int) -> None:
            if not hasattr(local, "client"):
                local.client = FloorClient(pebble, account_of=base)
            local.client.issue(f"p{i}-{tag}.floor.test", server.tokens)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(names)))
        return time.perf_counter() - started


def run_floor(pebble: Any, *, runs: int) -> dict[str, Any]:
    """`runs` issuances, each for a new name; the summary of their durations."""
    tag = secrets.token_hex(3)
    times: list[float] = []
    with responder(pebble.http_port) as server:
        floor = FloorClient(pebble)
        floor.issue(f"warm-{tag}.floor.test", server.tokens)  # connections, first nonce
        for i in range(runs):
            started = time.perf_counter()
            floor.issue(f"f{i}-{tag}.floor.test", server.tokens)
            times.append(time.perf_counter() - started)
    return {
        "figures": {"issue_seconds": summary(times)},
        "goals": [],
        "notes": [f"acme ClientV2, {POLL * 1000:.0f} ms poll, ec256, account registered "
                  "beforehand, one warm-up issuance not counted"],
    }
