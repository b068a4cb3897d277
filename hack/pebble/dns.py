"""A tiny UDP DNS responder for Pebble's validation authority (`pebble -dnsserver`).

Every A query is answered with one address (127.0.0.1 by default); every other type (AAAA, CAA,
TXT, ...) gets NOERROR with no answers, so Pebble connects to the controller's loopback
challenge servers over IPv4 whatever name is validated. Started as a subprocess by
hack/pebble/run.py:

    python3 hack/pebble/dns.py [--host 127.0.0.1] [--port 0] [--answer 127.0.0.1]

It prints `listening HOST:PORT` on stdout once bound (port 0 = a free one) and runs until
SIGTERM/SIGINT. `serve()` is the same as a coroutine for use inside a running event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import struct
import sys
from typing import cast

TYPE_A = 1
_HEADER = struct.Struct("!HHHHHH")
_FLAG_QR = 0x8000
_FLAG_AA = 0x0400
_FLAG_RD = 0x0100
_FLAG_RA = 0x0080
_RCODE_FORMERR = 1
_RCODE_NOTIMP = 4


def _question_end(packet: bytes, start: int) -> int:
    """Offset just past QNAME/QTYPE/QCLASS of the question at `start`; ValueError if malformed."""
    pos = start
    while True:
        if pos >= len(packet):
            raise ValueError("truncated name")
        length = packet[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0:
            raise ValueError("compressed name in question")
        pos += 1 + length
    if pos + 4 > len(packet):
        raise ValueError("truncated question")
    return pos + 4


def answer(packet: bytes, address: bytes) -> bytes | None:
    """The response to one query packet, or None when it is not worth answering."""
    if len(packet) < _HEADER.size:
        return None
    ident, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(packet)
    if flags & _FLAG_QR:
        return None  # a response, not a query
    opcode = (flags >> 11) & 0xF
    base_flags = _FLAG_QR | _FLAG_AA | _FLAG_RA | (flags & _FLAG_RD) | (opcode << 11)
    if opcode != 0 or qdcount != 1:
        rcode = _RCODE_NOTIMP if opcode != 0 else _RCODE_FORMERR
        return _HEADER.pack(ident, base_flags | rcode, 0, 0, 0, 0)
    try:
        end = _question_end(packet, _HEADER.size)
    except ValueError:
        return _HEADER.pack(ident, base_flags | _RCODE_FORMERR, 0, 0, 0, 0)
    question = packet[_HEADER.size : end]
    qtype = struct.unpack_from("!H", question, len(question) - 4)[0]
    answers = b""
    if qtype == TYPE_A:
        # name = pointer to the question's name (offset 12), type A, class IN, TTL 0
        answers = struct.pack("!HHHIH", 0xC00C, TYPE_A, 1, 0, len(address)) + address
    return _HEADER.pack(ident, base_flags, 1, 1 if answers else 0, 0, 0) + question + answers


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, address: bytes) -> None:
        self._address = address
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = answer(data, self._address)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


async def serve(
    host: str = "127.0.0.1", port: int = 0, answer_ip: str = "127.0.0.1"
) -> tuple[asyncio.DatagramTransport, int]:
    """Start answering on host:port; returns the transport (close it to stop) and the port."""
    address = ipaddress.IPv4Address(answer_ip).packed
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Responder(address), local_addr=(host, port)
    )
    bound_port = int(transport.get_extra_info("sockname")[1])
    return transport, bound_port


async def _main(args: argparse.Namespace) -> None:
    transport, port = await serve(args.host, args.port, args.answer)
    print(f"listening {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        transport.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--answer", default="127.0.0.1", help="the IPv4 address of every A")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))
    sys.exit(0)
