"""The `stream {}` proxy with `ssl_preread`: route a TLS connection without terminating it.

Called by listeners.py for every connection on a stream listen. The ClientHello is read from
the first bytes (SNI and ALPN), `$ssl_preread_alpn_protocols` is the offered ALPN list joined
with "," (e.g. "h2,http/1.1"), the `map` picks the upstream, and the bytes read so far plus
everything after are spliced both ways, unchanged (tls-alpn-stream.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable

from njetsim.conf import StreamMap, StreamServer

PREREAD_TIMEOUT = 10.0
MAX_HELLO = 1 << 16
log = logging.getLogger("njetsim.stream")


def parse_client_hello(handshake: bytes) -> tuple[str, list[str]]:
    """(SNI, ALPN list) of a ClientHello handshake message; ValueError when malformed."""
    if len(handshake) < 4 or handshake[0] != 1:
        raise ValueError("not a ClientHello")
    body = handshake[4:]
    pos = 2 + 32  # client_version, random
    pos += 1 + body[pos]  # session_id
    pos += 2 + struct.unpack_from("!H", body, pos)[0]  # cipher_suites
    pos += 1 + body[pos]  # compression_methods
    if pos + 2 > len(body):
        return "", []
    end = pos + 2 + struct.unpack_from("!H", body, pos)[0]
    pos += 2
    sni, alpn = "", []
    while pos + 4 <= end:
        ext_type, ext_len = struct.unpack_from("!HH", body, pos)
        data = body[pos + 4:pos + 4 + ext_len]
        pos += 4 + ext_len
        if ext_type == 0 and len(data) >= 5 and data[2] == 0:  # server_name, host_name
            name_len = struct.unpack_from("!H", data, 3)[0]
            sni = data[5:5 + name_len].decode("ascii", errors="replace")
        elif ext_type == 16 and len(data) >= 2:  # application_layer_protocol_negotiation
            i, stop = 2, 2 + struct.unpack_from("!H", data, 0)[0]
            while i < stop and i < len(data):
                n = data[i]
                alpn.append(data[i + 1:i + 1 + n].decode("ascii", errors="replace"))
                i += 1 + n
    return sni, alpn


async def read_client_hello(reader: asyncio.StreamReader) -> tuple[bytes, str, list[str]]:
    """(bytes read, SNI, ALPN); SNI "" and ALPN [] when the stream is not TLS."""
    raw = b""
    handshake = b""
    while len(raw) < MAX_HELLO:
        header = await reader.readexactly(5)
        raw += header
        if header[0] != 22:  # not a handshake record
            return raw, "", []
        fragment = await reader.readexactly(struct.unpack_from("!H", header, 3)[0])
        raw += fragment
        handshake += fragment
        if len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
            try:
                sni, alpn = parse_client_hello(handshake)
            except (ValueError, IndexError, struct.error):
                return raw, "", []
            return raw, sni, alpn
    return raw, "", []


def resolve_target(server: StreamServer, maps: tuple[StreamMap, ...], sni: str,
                   alpn: list[str]) -> str:
    variables = {"$ssl_preread_alpn_protocols": ",".join(alpn),
                 "$ssl_preread_server_name": sni}
    target = server.proxy_pass
    for m in maps:
        if m.target == target:
            return m.evaluate(variables.get(m.source, ""))
    return variables.get(target, target)


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()


async def serve_stream(lookup: Callable[[], tuple[StreamServer, tuple[StreamMap, ...]] | None],
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    up_w: asyncio.StreamWriter | None = None
    try:
        found = lookup()
        if found is None:
            return
        server, maps = found
        data, sni, alpn = b"", "", list[str]()
        if server.preread:
            data, sni, alpn = await asyncio.wait_for(read_client_hello(reader), PREREAD_TIMEOUT)
        target = resolve_target(server, maps, sni, alpn)
        host, _, port = target.rpartition(":")
        up_r, upstream = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), 10)
        up_w = upstream
        upstream.write(data)
        await asyncio.gather(_pump(reader, upstream), _pump(up_r, writer))
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        log.info("stream connection failed: %s", exc)
    finally:
        if up_w is not None:
            up_w.close()
        writer.close()
