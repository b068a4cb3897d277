"""The data-plane HTTP handler of plain and TLS listens: `return` and `proxy_pass` locations.

Called by listeners.py for every accepted connection. The server block is chosen by the Host
header among the worker's blocks on that socket (default server otherwise), the location like
nginx (`=` exact, longest prefix, `^~` stops the search, then regexes in order). proxy_pass
sends the full URI (or replaces the matched prefix when proxy_pass has a URI part) over
HTTP/1.0 with `Host: <upstream address>` unless the location sets `proxy_set_header Host
$host`, like nginx.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import urlsplit

from njetsim import VERSION
from njetsim.conf import LocationConf
from njetsim.runtime import Block

IDLE_TIMEOUT = 30.0
_HOP = {"host", "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding",
        "upgrade", "content-length"}


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def host(self) -> str | None:
        value = self.header("host")
        if value is None:
            return None
        return value[1:].partition("]")[0] if value.startswith("[") else value.partition(":")[0]

    @property
    def path(self) -> str:
        target = self.target
        if "://" in target:
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        return target.partition("?")[0]

    @property
    def keep_alive(self) -> bool:
        conn = (self.header("connection") or "").lower()
        return conn == "keep-alive" if self.version == "HTTP/1.0" else conn != "close"


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
    except (asyncio.IncompleteReadError, TimeoutError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("bad request line")
    headers = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)]
    req = Request(parts[0], parts[1], parts[2], headers, b"")
    if (req.header("transfer-encoding") or "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    else:
        body = await reader.readexactly(int(req.header("content-length") or 0))
    return Request(req.method, req.target, req.version, headers, body)


def match_location(locations: list[LocationConf], path: str) -> LocationConf | None:
    for loc in locations:
        if loc.modifier == "=" and loc.path == path:
            return loc
    best: LocationConf | None = None
    for loc in locations:
        if loc.modifier in ("", "^~") and path.startswith(loc.path) and (
                best is None or len(loc.path) > len(best.path)):
            best = loc
    if best is not None and best.modifier == "^~":
        return best
    for loc in locations:
        if loc.modifier in ("~", "~*"):
            flags = re.IGNORECASE if loc.modifier == "~*" else 0
            if re.search(loc.path, path, flags):
                return loc
    return best


def _response(code: int, body: bytes, *, head: bool, keep: bool,
              extra: tuple[tuple[str, str], ...] = (), ctype: str = "text/plain") -> bytes:
    try:
        reason = HTTPStatus(code).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {code} {reason}", f"Server: {VERSION}",
             f"Date: {formatdate(usegmt=True)}", f"Content-Type: {ctype}",
             f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep else 'close'}",
             *(f"{k}: {v}" for k, v in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


def _html(code: int) -> bytes:
    title = f"{code} {HTTPStatus(code).phrase}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}"
            f"</h1></center>\r\n<hr><center>njet</center>\r\n</body>\r\n</html>\r\n").encode()


async def _proxy(req: Request, loc: LocationConf, writer: asyncio.StreamWriter) -> None:
    assert loc.proxy_pass is not None
    up = urlsplit(loc.proxy_pass)
    port = up.port or (443 if up.scheme == "https" else 80)
    uri = req.target if "://" not in req.target else req.path
    if up.path:
        uri = up.path + req.target[len(loc.path):] if req.target.startswith(loc.path) else uri
    host_header = (req.header("host") or up.netloc) if loc.set_host else up.netloc
    lines = [f"{req.method} {uri} HTTP/1.0", f"Host: {host_header}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in req.headers if k.lower() not in _HOP]
    if req.body or req.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(req.body)}")
    try:
        ctx = ssl._create_unverified_context() if up.scheme == "https" else None
        up_r, up_w = await asyncio.wait_for(
            asyncio.open_connection(up.hostname, port, ssl=ctx), 10)
    except (OSError, TimeoutError):
        writer.write(_response(502, _html(502), head=req.method == "HEAD", keep=False,
                               ctype="text/html"))
        return
    try:
        up_w.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body)
        await up_w.drain()
        while chunk := await up_r.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        up_w.close()


async def respond(block: Block | None, req: Request, writer: asyncio.StreamWriter) -> bool:
    """Answer one request; True when the connection may be kept open."""
    head = req.method == "HEAD"
    loc = match_location(block.locations(), req.path) if block is not None else None
    if loc is not None and loc.proxy_pass:
        await _proxy(req, loc, writer)
        return False
    ret = (loc.return_code, loc.return_text) if loc is not None and loc.return_code else None
    if ret is None and block is not None:
        ret = block.conf.server_return
    keep = req.keep_alive
    if ret is None:
        writer.write(_response(404, _html(404), head=head, keep=keep, ctype="text/html"))
    elif ret[0] == 444:
        return False
    elif ret[0] in (301, 302, 303, 307, 308):
        writer.write(_response(ret[0], _html(ret[0]), head=head, keep=keep, ctype="text/html",
                               extra=(("Location", ret[1] or ""),)))
    else:
        writer.write(_response(ret[0], (ret[1] or "").encode(), head=head, keep=keep))
    await writer.drain()
    return keep


async def serve_connection(pick: Callable[[str | None], Block | None],
                           reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The request loop of one client connection; `pick(host)` chooses the server block."""
    try:
        while True:
            try:
                req = await read_request(reader)
            except (ValueError, asyncio.LimitOverrunError):
                writer.write(_response(400, _html(400), head=False, keep=False,
                                       ctype="text/html"))
                break
            if req is None or not await respond(pick(req.host), req, writer):
                break
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await writer.drain()
        writer.close()
