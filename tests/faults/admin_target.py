"""The admin API under attack: the real controller backend over a real tmp store, and bad requests.

`AdminTarget.build(tmp_path)` makes `<tmp>/njet/` (conf/njet.conf wanting a.test and b.test,
a store holding a.test, b.test and c.test), a `controller.service.Service` in store-only mode
with a bearer token, and serves its admin app (adapters/admin.build_app over the service's
ControllerBackend) with aiohttp's TestServer on 127.0.0.1:<free port>. Requests are sent
byte-for-byte over a plain socket (`send`), so nothing is normalised or quoted on the way.
`tree()` snapshots every file and folder under tmp, split into the store's own folders and the
rest. Used by tests/faults/test_bad_input.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import string
from dataclasses import dataclass
from pathlib import Path

from aiohttp.test_utils import TestServer
from hypothesis import strategies as st

from controller.adapters.admin.server import build_app
from controller.config import parse_config
from controller.service import Service
from tests.certbuilder import MadeCert, make_cert

TOKEN = "s3cret-token"
STORED = ("a.test", "b.test", "c.test")  # a.test and b.test are desired, c.test only stored
CONF = """\
http {
    server { listen 127.0.0.1:8443 ssl; server_name a.test www.a.test;
             ssl_certificate_management acme; }
    server { listen 8444 ssl; server_name b.test; ssl_certificate_management acme; }
}
"""
# What a valid request may change (delete: certificates/, renew: the status file; any read may
# refresh the store's parse index); everything else, the swap journal included, must be
# byte-identical after every request.
STORE_DIRS = (".lego/certificates", ".lego/status", ".lego/index.json", ".lego/quarantine")
# The event log: every mutating call that reaches a route appends one line (refused ones too);
# it is kept out of tree() and checked on its own (`event_log()`: it only ever grows).
EVENT_LOG = ".lego/events.jsonl"

ANSWER_TIMEOUT = 5.0  # seconds; a request left unanswered fails the test
Tree = dict[str, bytes | None]  # relative path -> file bytes, None for a folder


@dataclass
class AdminTarget:
    root: Path
    prefix: Path
    service: Service
    made: dict[str, MadeCert]
    server: TestServer

    @classmethod
    async def build(cls, root: Path) -> AdminTarget:
        prefix = root / "njet"
        (prefix / "conf").mkdir(parents=True)
        (prefix / "conf" / "njet.conf").write_text(CONF)
        (prefix / "logs").mkdir()
        (prefix / "logs" / "error.log").write_text("kept as is\n")
        (root / "secret.key").write_text("a file above the prefix\n")
        config = parse_config(
            {"njet": {"apiAddress": ""}, "admin": {"token": TOKEN}, "acme": {"keyType": "ec256"}},
            prefix=prefix,
        )
        service = Service(config)
        made = {d: make_cert([d, f"www.{d}"]) for d in STORED}
        for domain, cert in made.items():
            service.app.store.put(domain, cert.issued())
        # the first read writes the store's parse index: do it now, so that a later refused
        # request that reads the store (a 404 for an unknown name) finds nothing to write
        service.app.store.load_all()
        server = TestServer(build_app(service.backend, TOKEN), host="127.0.0.1")
        await server.start_server()
        return cls(root, prefix, service, made, server)

    async def close(self) -> None:
        await self.server.close()
        await self.service.app.close()

    def restore(self) -> None:
        """Put back every stored pair a valid DELETE removed, so later requests find it."""
        store = self.service.app.store
        for domain, cert in self.made.items():
            if store.get(domain) is None:
                store.put(domain, cert.issued())
        store.load_all()  # settle the store's parse index now, not during a later request

    def tree(self) -> tuple[Tree, Tree]:
        """(store folders, everything else) under the tmp root."""
        store: Tree = {}
        rest: Tree = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            base = Path(dirpath)
            for name in dirnames + filenames:
                path = base / name
                rel = str(path.relative_to(self.root))
                if rel == f"njet/{EVENT_LOG}":
                    continue
                in_store = any(
                    rel.startswith(f"njet/{d}/") or rel == f"njet/{d}" for d in STORE_DIRS
                )
                (store if in_store else rest)[rel] = (
                    None if name in dirnames else path.read_bytes()
                )
        return store, rest

    def event_log(self) -> bytes:
        """The event log's content (b"" before the first mutating call)."""
        path = self.prefix / EVENT_LOG
        return path.read_bytes() if path.exists() else b""

    async def send(self, raw: bytes, *, half_close: bool = False) -> tuple[
        int | None, dict[str, str], bytes
    ]:  # fmt: skip
        """Send `raw` as is; (status or None when the server sent nothing, headers, body).

        `half_close` ends the sending side after `raw` (for junk the parser may keep waiting
        on, e.g. blank lines)."""
        port = self.server.port
        assert port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            if half_close:
                writer.write_eof()
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), ANSWER_TIMEOUT)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        if not data:
            return None, {}, b""
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        return int(status_line.split()[1]), headers, body


# --- requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # the request target exactly as sent
    authorization: str | None
    authorized: bool  # the Authorization header carries the right bearer token
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def well_formed(self) -> bool:
        """A standard method and a target starting with "/": the HTTP parser hands it to the app.
        Others (method "A", target "*") it may refuse itself with a plain-text 400."""
        return self.method in METHODS and self.target.startswith("/")

    def wire(self) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        if self.authorization is not None:
            lines.append(f"Authorization: {self.authorization}")
        lines += [f"{k}: {v}" for k, v in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


_PCHAR = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%"
_SEGMENTS = [
    "a.test", "b.test", "c.test", "A.TEST", "a.test.", "none.test", "renew", "", ".", "..",
    "%2e%2e", "%2E%2E", "%2F", "..%2F..%2Fsecret.key", "secret.key", "x" * 300, "*.a.test",
    "_.a.test", "a.test%00", "-a.test", "a_b.test", "cert", "plan", "reconcile", "~root",
]  # fmt: skip
_PREFIXES = [
    "/api/v1/cert", "/api/v1//cert", "/api/v1/cert/", "/api/v1", "/api/v1/", "/api",
    "/api/v2/cert", "/healthz", "/metrics", "/", "//api/v1/cert", "/API/v1/cert",
    "/api/v1/plan", "/api/v1/reconcile", "*", "api/v1/cert", "http://127.0.0.1/api/v1/cert",
]  # fmt: skip
_segment = st.one_of(st.sampled_from(_SEGMENTS), st.text(_PCHAR, max_size=12))
_target = st.builds(
    lambda prefix, segments, query: prefix + "".join("/" + s for s in segments) + query,
    st.sampled_from(_PREFIXES),
    st.lists(_segment, max_size=4),
    st.one_of(st.just(""), st.text(_PCHAR + "/?", max_size=10).map(lambda q: "?" + q)),
)
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD", "TRACE"]
_VISIBLE = string.ascii_letters + string.digits + string.punctuation + " "
_auth = st.one_of(
    st.sampled_from([(f"Bearer {TOKEN}", True), (f"bearer {TOKEN}", True),
                     (f"BEARER   {TOKEN}  ", True)]),
    st.sampled_from([
        ("Bearer wrong", False), (f"Bearer {TOKEN}x", False), (f"Basic {TOKEN}", False),
        (f"Bearer{TOKEN}", False), ("Bearer", False), ("", False), (TOKEN, False),
        (f"Bearer {TOKEN[:-1]}", False),
    ]),
    st.just((None, False)),
    st.text(_VISIBLE, max_size=30).map(lambda v: (v, False)),
)
_RESERVED_HEADERS = {"host", "connection", "content-length", "transfer-encoding", "expect",
                     "upgrade", "authorization", "te", "trailer"}  # fmt: skip
_header = st.tuples(
    st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12),
    st.text(_VISIBLE, max_size=30).map(str.strip),
).filter(lambda h: h[0].lower() not in _RESERVED_HEADERS)
_method = st.one_of(st.sampled_from(METHODS), st.text(string.ascii_uppercase, min_size=1,
                                                        max_size=8))  # fmt: skip

request = st.builds(
    lambda method, target, auth, headers, body: Request(
        method, target, auth[0], auth[1], tuple(headers), body
    ),
    _method,
    _target,
    _auth,
    st.lists(_header, max_size=3),
    st.one_of(st.just(b""), st.binary(max_size=64), st.just(b'{"domain": "../../x"}')),
)

_VALID_TARGETS = [
    "/api/v1/cert", "/api/v1/cert/a.test", "/api/v1/cert/B.test", "/api/v1//cert/c.test",
    "/api/v1/cert/a.test/renew", "/api/v1/cert/c.test/renew", "/api/v1/plan", "/api/v1/reconcile",
    "/api/v1/cert/a.test/renew?force=true", "/api/v1/cert/b.test/renew?force=1",
    "/healthz", "/metrics", "/api/v1/cert/none.test", "/api/v1/cert/a.test/",
]  # fmt: skip
# Requests an operator would send, with the right token: the 2xx paths stay exercised.
plausible = st.builds(
    lambda method, target: Request(method, target, f"Bearer {TOKEN}", True, (), b""),
    st.sampled_from(["GET", "POST", "DELETE"]),
    st.sampled_from(_VALID_TARGETS),
)

# Bytes that are not an HTTP request at all (the parser refuses them before the app runs).
junk = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda m, t: m + b" " + t + b" HTTP/1.1", st.binary(max_size=8),
              st.binary(max_size=40)),
).map(lambda raw: raw.replace(b"\r\n\r\n", b"") + b"\r\n\r\n")

# What one trial sends: a request (None for junk) and the bytes on the wire.
exchange = st.one_of(
    plausible.map(lambda r: (r, r.wire())),
    request.map(lambda r: (r, r.wire())),
    request.map(lambda r: (r, r.wire())),
    junk.map(lambda raw: (None, raw)),
)
