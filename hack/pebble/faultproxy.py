"""A thin HTTPS reverse proxy in front of the real Pebble: injects CA faults, counts requests.

Used by tests/faults/test_ca_faults.py (and usable by hand). It terminates TLS with the Pebble
harness's own certificate (hack/pebble/mkcerts.py: 127.0.0.1/localhost, signed by the CA the
controller already trusts as `caBundle`), so a controller pointed at `proxy.directory_url` needs
no other change. Each request is forwarded to Pebble with its Host header unchanged: Pebble
builds every URL it returns (directory, Location, order and challenge URLs) from that header,
so the whole ACME conversation keeps going through the proxy and JWS `url` checks still match.

Faults (first matching rule wins; rules match a regex against the request path):
    proxy.fail(count=2, status=429, retry_after=120, path="^/order-plz$")   # next 2 newOrders
    proxy.fail(status=503, path="/finalize-order/")                          # until cleared
    proxy.on_request("^/chalZ/", callback)   # run callback() (in a thread) once, then forward
    proxy.stall(path="/finalize-order/")     # read the request, never forward or answer it
    proxy.clear()
A fault answer is an RFC 7807 problem document (rateLimited for 429, serverInternal for 5xx,
otherwise malformed) with the given Retry-After; it carries no Replay-Nonce. When Pebble is
unreachable the proxy answers 502 with a plain-text body, as a load balancer would. A stalled
request is held (the connection stays open, nothing is sent back) until `stop()`; `stalled()`
says how many are held.

Counting: `proxy.counts()` is {path: requests seen} (query stripped, faulted ones included),
`proxy.count(pattern)` the total over matching paths.

Library use: `FaultProxy(upstream_port, cert=..., key=..., upstream_ca=...).start()` runs an
asyncio server on a free loopback port in a daemon thread; `stop()` ends it. CLI:
    python3 hack/pebble/faultproxy.py --upstream 127.0.0.1:14000 --state-dir DIR [--port P]
(DIR holds the harness's server.pem / server.key / ca.pem); it runs until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import ssl
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
    "trailer", "content-length",
})
MAX_HEADER = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
UPSTREAM_TIMEOUT = 30.0


@dataclass
class Rule:
    """Answer matching requests with `status` (a fault) or run `callback` before forwarding."""

    path: re.Pattern[str] | None
    status: int = 0
    retry_after: str | None = None
    detail: str = ""
    left: int | None = None  # None: until cleared
    callback: Callable[[], object] | None = None
    stall: bool = False  # hold the request: never forward it, never answer

    def matches(self, path: str) -> bool:
        return (self.left is None or self.left > 0) and (
            self.path is None or self.path.search(path) is not None)


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


class ProxyError(RuntimeError):
    pass


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ProxyError("connection closed inside a message head") from None
        return None
    except asyncio.LimitOverrunError:
        raise ProxyError("message head too large") from None
    return head


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    headers = []
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProxyError(f"malformed header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    return headers


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]], *,
                     until_eof: bool) -> bytes:
    values = {k.lower(): v for k, v in headers}
    if "chunked" in values.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(out) > MAX_BODY:
                raise ProxyError("body too large")
    if "content-length" in values:
        length = int(values["content-length"])
        if length > MAX_BODY:
            raise ProxyError("body too large")
        return await reader.readexactly(length)
    return await reader.read(MAX_BODY) if until_eof else b""


def _problem(status: int, detail: str) -> bytes:
    kind = "rateLimited" if status == 429 else (
        "serverInternal" if status >= 500 else "malformed")
    return json.dumps({
        "type": f"urn:ietf:params:acme:error:{kind}",
        "detail": detail or f"injected by faultproxy: HTTP {status}",
        "status": status,
    }).encode()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class FaultProxy:
    """See the module docstring."""

    def __init__(self, upstream_port: int, *, cert: Path, key: Path, upstream_ca: Path,
                 upstream_host: str = "127.0.0.1", host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self._server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_ctx.load_cert_chain(str(cert), str(key))
        self._client_ctx = ssl.create_default_context(cafile=str(upstream_ca))
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._counts: Counter[str] = Counter()
        self._stalled = 0
        self._log: list[tuple[str, str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- addresses ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def directory_url(self) -> str:
        return f"{self.url}/dir"

    # -- faults and counts ---------------------------------------------------------------------
    def fail(self, count: int | None = None, *, status: int = 429,
             retry_after: float | str | None = None, path: str | None = None,
             detail: str = "") -> None:
        """The next `count` matching requests (every one while `count` is None) get `status`."""
        if status < 400:
            raise ValueError("a fault answer needs an error status (>= 400)")
        ra = None if retry_after is None else (
            str(int(retry_after)) if isinstance(retry_after, int | float) else retry_after)
        rule = Rule(re.compile(path) if path else None, status, ra, detail, count)
        with self._lock:
            self._rules.append(rule)

    def on_request(self, path: str, callback: Callable[[], object], *,
                   count: int | None = 1) -> None:
        """Before forwarding a matching request, run `callback()` in a worker thread."""
        with self._lock:
            self._rules.append(Rule(re.compile(path), left=count, callback=callback))

    def stall(self, count: int | None = None, *, path: str | None = None) -> None:
        """The next `count` matching requests (every one while None) are held unanswered."""
        rule = Rule(re.compile(path) if path else None, left=count, stall=True)
        with self._lock:
            self._rules.append(rule)

    def stalled(self) -> int:
        """How many requests a stall rule has held so far."""
        with self._lock:
            return self._stalled

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def count(self, pattern: str | None = None) -> int:
        rx = re.compile(pattern) if pattern else None
        with self._lock:
            return sum(n for p, n in self._counts.items() if rx is None or rx.search(p))

    def log(self) -> list[tuple[str, str, int]]:
        """(method, path, status answered) of every request, in order."""
        with self._lock:
            return list(self._log)

    def _take_rule(self, path: str) -> Rule | None:
        with self._lock:
            self._counts[path] += 1
            for rule in self._rules:
                if rule.matches(path):
                    if rule.left is not None:
                        rule.left -= 1
                    return rule
        return None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> FaultProxy:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(
                    self._serve, self.host, self.port, ssl=self._server_ctx,
                    limit=MAX_HEADER))
                self.port = int(self._server.sockets[0].getsockname()[1])
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise ProxyError(f"fault proxy did not start within {timeout}s")
        if failure:
            raise ProxyError(f"fault proxy could not listen on {self.host}:{self.port}: "
                             f"{failure[0]}")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            return

        async def shutdown() -> None:
            server.close()
            for writer in list(self._writers):
                writer.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        self._thread.join(5)
        self._loop = self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving -------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                keep = await self._answer(request, writer)
                if not keep:
                    break
        except (ProxyError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError,
                ValueError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio's stream callback chokes on a cancelled task)
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        head = await _read_head(reader)
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise ProxyError(f"malformed request line {lines[0][:80]!r}")
        headers = _parse_headers(lines[1:])
        body = await _read_body(reader, headers, until_eof=False)
        return Request(parts[0], parts[1], parts[2], headers, body)

    async def _answer(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        keep = (request.header("connection") or "").lower() != "close"
        rule = self._take_rule(request.path)
        if rule is not None and rule.callback is not None:
            await asyncio.get_running_loop().run_in_executor(None, rule.callback)
            rule = None
        if rule is not None and rule.stall:
            with self._lock:
                self._stalled += 1
            await asyncio.Event().wait()  # until stop() cancels this connection's task
        if rule is not None:
            extra = [("Content-Type", "application/problem+json")]
            if rule.retry_after is not None:
                extra.append(("Retry-After", rule.retry_after))
            body = _problem(rule.status, rule.detail)
            await self._send(writer, rule.status, extra, body, request, keep)
            return keep
        try:
            status, headers, body = await asyncio.wait_for(
                self._forward(request), UPSTREAM_TIMEOUT)
        except (OSError, TimeoutError, ProxyError, asyncio.IncompleteReadError) as exc:
            text = f"faultproxy: upstream {self.upstream[0]}:{self.upstream[1]} " \
                   f"unreachable: {type(exc).__name__}: {exc}\n"
            await self._send(writer, 502, [("Content-Type", "text/plain")], text.encode(),
                             request, keep)
            return keep
        await self._send(writer, status, headers, body, request, keep)
        return keep

    async def _forward(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.upstream
        reader, writer = await asyncio.open_connection(
            host, port, ssl=self._client_ctx, server_hostname=host, limit=MAX_HEADER)
        try:
            lines = [f"{request.method} {request.target} HTTP/1.1"]
            lines += [f"{k}: {v}" for k, v in request.headers if k.lower() not in HOP_BY_HOP]
            if request.body or request.method in ("POST", "PUT"):
                lines.append(f"Content-Length: {len(request.body)}")
            lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body)
            await writer.drain()
            head = await _read_head(reader)
            if head is None:
                raise ProxyError("upstream closed the connection without an answer")
            head_lines = head.decode("latin-1").split("\r\n")
            status = int(head_lines[0].split(" ", 2)[1])
            headers = _parse_headers(head_lines[1:])
            no_body = request.method == "HEAD" or status in (204, 304) or status < 200
            body = b"" if no_body else await _read_body(reader, headers, until_eof=True)
            return status, headers, body
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, status: int,
                    headers: list[tuple[str, str]], body: bytes, request: Request,
                    keep: bool) -> None:
        with self._lock:
            self._log.append((request.method, request.path, status))
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in HOP_BY_HOP]
        if request.method != "HEAD":
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: keep-alive" if keep else "Connection: close")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if request.method != "HEAD":
            payload += body
        writer.write(payload)
        await writer.drain()


def serve_cli(proxy_class: Callable[..., FaultProxy], description: str,
              argv: list[str] | None = None) -> int:
    """The command line of faultproxy.py and arishim.py: run `proxy_class` until interrupted."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--upstream", required=True, help="Pebble's host:port")
    parser.add_argument("--state-dir", type=Path, required=True,
                        help="the harness state dir (server.pem, server.key, ca.pem)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    proxy = proxy_class(int(port), upstream_host=host or "127.0.0.1",
                        cert=args.state_dir / "server.pem", key=args.state_dir / "server.key",
                        upstream_ca=args.state_dir / "ca.pem", port=args.port).start()
    print(f"directory: {proxy.directory_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve_cli(FaultProxy, "HTTPS fault proxy in front of Pebble", argv)

if __name__ == "__main__":
    sys.exit(main())
