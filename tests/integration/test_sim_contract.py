"""Replays the recorded NJet contract (shared/njet-contract/) against the simulator.

Follows sequence.md step by step (fresh start, exchanges, restart, reloads with a config edit,
dyn_srv, stream) on one simulator in a tmp prefix. `/usr/local/njet` and every recorded port
are rewritten to the tmp prefix and free ports on the way in, and mapped back before comparing
(certificate PEMs are never touched). Compared: status, content type and body of every
exchange; every served_* entry with a real `openssl s_client` handshake as recorded (RSA-only
and ECDSA clients included); the observed curl/TLS/socket facts of the dyn_loc/dyn_srv
exchanges; the retained /ins/* records; the ACM events (order, content, timing); the copilot
launches; tls-alpn-01 routing through the stream block.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.njetsim import (
    REPO,
    BrokerWatcher,
    NjetSim,
    free_port,
    retained,
    s_client,
)

CONTRACT = Path(os.environ.get("NJET_CONTRACT_DIR", REPO.parent / "shared" / "njet-contract"))
pytestmark = [pytest.mark.skipif(not (CONTRACT / "sequence.md").exists(),
                                 reason=f"no recorded contract at {CONTRACT}"),
              pytest.mark.timeout(240)]
RECORDED_PREFIX = "/usr/local/njet"
MAPPED_PORTS = (8443, 8444, 8445, 8080, 8081, 9443, 10443, 8099, 8447)
REPLAY_DELAY, EVENT_DELAY = 1.0, 1.4
ACM = "/automaticcertificatemanagement/event/request"
SERVED_KEYS = ("subject", "serial", "sha256", "chain_len", "proto_cipher", "peer_sig_type",
               "pubkey_bits")
TOKEN = "TOKEN123.thumbprint-served-by-python-http.server"


class Mapper:
    """Recorded <-> replay spelling of paths and ports; PEM strings stay untouched."""

    def __init__(self, prefix: Path, ports: dict[int, int]) -> None:
        self.prefix = str(prefix)
        self.ports = ports
        self._fwd = re.compile(r"(?<![0-9])(%s)(?![0-9])" % "|".join(map(str, ports)))
        self._back = re.compile(r"(?<![0-9])(%s)(?![0-9])" % "|".join(
            str(p) for p in ports.values()))
        self._rev = {v: k for k, v in ports.items()}

    def fwd_text(self, s: str) -> str:
        s = s.replace(RECORDED_PREFIX, self.prefix)
        return self._fwd.sub(lambda m: str(self.ports[int(m.group(1))]), s)

    def back_text(self, s: str) -> str:
        s = s.replace(self.prefix, RECORDED_PREFIX)
        return self._back.sub(lambda m: str(self._rev[int(m.group(1))]), s)

    def _walk(self, obj: Any, fn: Any) -> Any:
        if isinstance(obj, dict):
            return {k: self._walk(v, fn) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self._walk(v, fn) for v in obj]
        if isinstance(obj, str) and not obj.startswith("data:") and "-----BEGIN" not in obj:
            return fn(obj)
        return obj

    def fwd(self, obj: Any) -> Any:
        return self._walk(obj, self.fwd_text)

    def back(self, obj: Any) -> Any:
        return self._walk(obj, self.back_text)


def exchange(n: int) -> dict[str, Any]:
    (path,) = CONTRACT.glob(f"{n:02d}-*.json")
    return dict(json.loads(path.read_text()), file=path.name)


def record_topic(body: dict[str, Any]) -> str:
    """The /ins/* topic of a record payload (README §4, §5, §7)."""
    if "cert_info" in body:
        kind = body["cert_info"].get("cert_type", "rsa")
        return "/ins/ssl/l_%d" % zlib.crc32(
            ("".join(body["serverNames"]) + "".join(body["listens"]) + kind).encode())
    if "locations" in body or "location_name" in body:
        loc = body["locations"][0] if "locations" in body else body
        return "/ins/loc/l_%d" % zlib.crc32((body["addr_port"] + body["server_name"]
                                             + loc["location_rule"] + loc["location_name"])
                                            .encode())
    return "/ins/srv/s_%d" % zlib.crc32((body["addr_port"] + body["server_name"]).encode())


@dataclass
class Env:
    sim: NjetSim
    m: Mapper
    watcher: BrokerWatcher
    www: Path
    responder_log: list[dict[str, Any]]
    triggers: list[tuple[str, float]] = field(default_factory=list)

    def port(self, recorded: int) -> int:
        return self.m.ports.get(recorded, recorded)

    def trigger(self, name: str) -> None:
        self.triggers.append((name, time.time()))

    # --- checks -------------------------------------------------------------------------

    def handshake(self, cmd: str) -> dict[str, Any]:
        words = [w for w in shlex.split(cmd.replace("</dev/null", "")) if w != "-showcerts"]
        args = words[2:]
        host = port = sni = None
        extra: list[str] = []
        while args:
            word = args.pop(0)
            if word == "-connect":
                host, _, port = args.pop(0).rpartition(":")
            elif word == "-servername":
                sni = args.pop(0)
            elif word in ("-sigalgs", "-cipher", "-alpn", "-ciphersuites"):
                extra += [word, args.pop(0)]
            else:
                extra.append(word)
        assert host is not None and port is not None, cmd
        return s_client(host.strip("[]"), self.port(int(port)), sni, *extra)

    def served(self, entries: dict[str, Any], where: str) -> None:
        for label, want in entries.items():
            got = self.handshake(want["cmd"])
            if want.get("handshake") == "failed":
                assert got.get("handshake") == "failed", f"{where} [{label}]: served {got}"
                assert "alert number 40" in got["error"] or "handshake failure" in got["error"]
                continue
            assert "handshake" not in got, f"{where} [{label}]: {got.get('error')}"
            for key in SERVED_KEYS:
                assert str(got[key]) == str(want[key]), \
                    f"{where} [{label}] {key}: got {got[key]!r}, recorded {want[key]!r}"

    def api(self, ex: dict[str, Any]) -> None:
        req, want = ex["request"], ex["response"]
        body = req["body"]
        raw = None if body is None else (
            self.m.fwd_text(body) if isinstance(body, str) else json.dumps(self.m.fwd(body)))
        got = self.sim.api(req["method"], req["path"], raw)
        where = ex["file"]
        assert got.status == want["status"], f"{where}: status {got.status} {got.raw!r}"
        assert got.content_type == want["content_type"], f"{where}: {got.content_type}"
        assert self.m.back(got.json) == want["body"], f"{where}: body {got.raw[:600]!r}"

    def retained_list(self, topics: tuple[str, ...]) -> list[tuple[str, int]]:
        """(recorded-space topic, recorded-space payload length) of the retained records."""
        out = []
        for topic, payload in retained(self.sim.broker_socket, topics):
            body = json.loads(payload)
            assert topic == record_topic(body), f"{topic} does not match its payload"
            back = self.m.back(body)
            out.append((record_topic(back), len(json.dumps(back))))
        return out

    def observed(self, ex: dict[str, Any], phase: str) -> None:
        """The curl / TLS / socket facts in `observed` of a dyn_loc/dyn_srv exchange."""
        body = ex["request"]["body"]
        for seg in ex["observed"].split(" | "):
            is_before = seg.startswith("BEFORE")
            if (phase == "before") != is_before:
                continue
            for m in re.finditer(r"curl -H 'Host: ([^']+)' http://[\d.]+:(\d+)(\S*) -> "
                                 r"HTTP/1\.1 (\d+) .*?body='(.*?)'(?= ;|$)", seg, re.S):
                status, text = http_get(self.port(int(m.group(2))), m.group(3), m.group(1))
                assert status == int(m.group(4)), f"{ex['file']} {m.group(0)[:80]}: {status}"
                assert text.strip() == m.group(5).replace("\\n", "\n").strip(), ex["file"]
            for m in re.finditer(r"curl -k https://([\w.]+):(\d+)(/\S*) -> '([^']*)'", seg):
                text = https_get(self.port(int(m.group(2))), m.group(1), m.group(3))
                assert text.strip() == m.group(4), f"{ex['file']}: {text!r}"
            tls = re.search(r"(O=[^\s,]+,CN=\S+) serial=([0-9A-F]+)", seg)
            if tls and isinstance(body, dict) and "addr_port" in body:
                host, _, port = body["addr_port"].rpartition(":")
                got = s_client(host, self.port(int(port)), body["server_name"])
                assert (got.get("subject"), got.get("serial")) == tls.groups(), ex["file"]
            listen = re.search(r"ss -ltn \| grep (\d+)(?: afterwards)? -> '([^']*)'", seg)
            if listen:
                assert port_open(self.port(int(listen.group(1)))) == bool(listen.group(2))
            topics = re.search(r"topics before: (\[.*?\]) ; after: (\[.*?\])", seg)
            if topics and phase == "after":
                after = [(t, int(n)) for t, n in re.findall(r"\('([^']+)', (\d+)\)",
                                                           topics.group(2))]
                assert self.retained_list(("/ins/ssl/#", "/ins/srv/#")) == after, ex["file"]

    def run(self, n: int) -> dict[str, Any]:
        ex = exchange(n)
        self.trigger(f"api {ex['file']}")
        for key in ("served_before", "served_before_restart"):
            if key in ex:
                self.served(ex[key], f"{ex['file']} {key}")
        if 40 <= n:
            self.observed(ex, "before")
        if "retained_ins_ssl_topics_before" in ex:
            assert self.retained_list(("/ins/ssl/#",)) == [
                tuple(t) for t in ex["retained_ins_ssl_topics_before"]]
        self.api(ex)
        for key in ("served_after", "served", "served_certs"):
            if key in ex:
                self.served(ex[key], f"{ex['file']} {key}")
        if "retained_ins_ssl_topics_after" in ex:
            assert self.retained_list(("/ins/ssl/#",)) == [
                tuple(t) for t in ex["retained_ins_ssl_topics_after"]]
        if 40 <= n:
            self.observed(ex, "after")
        return ex

    def wait_event(self, trigger: str) -> None:
        start = next(t for name, t in reversed(self.triggers) if name == trigger)
        self.watcher.wait_for(lambda msg: msg.topic == ACM and bool(msg.payload)
                              and msg.at >= start, timeout=EVENT_DELAY + 10)


def http_get(port: int, path: str, host: str) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b"".join(iter(partial(s.recv, 65536), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def https_get(port: int, name: str, path: str = "/") -> str:
    ctx = ssl._create_unverified_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=name) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        data = b"".join(iter(partial(s.recv, 65536), b""))
    return data.partition(b"\r\n\r\n")[2].decode(errors="replace")


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


# --- the recorded environment: prefix, file server, tls-alpn responder ----------------------

def layout_contract(root: Path, m: Mapper) -> None:
    conf = root / "conf" / "contract"
    conf.mkdir(parents=True)
    for name in ("njet.conf", "njet_ctrl.conf", "stub_copilot.toml"):
        (conf / name).write_text(m.fwd_text((CONTRACT / name).read_text()))
    stub = root / "copilot" / "contract_stub.py"
    stub.parent.mkdir()
    stub.write_text(m.fwd_text((CONTRACT / "contract_stub.py").read_text()))
    stub.chmod(0o755)
    certs = root / "certs" / "contract"
    certs.mkdir(parents=True)
    for src in (CONTRACT / "certs").iterdir():
        shutil.copyfile(src, certs / src.name)
        (certs / src.name).chmod(0o600 if src.name.endswith("-0600.key") else 0o644)
    for sub in ("logs", "data"):
        (root / sub).mkdir()


def start_file_server(www: Path, port: int) -> ThreadingHTTPServer:
    (www / ".well-known" / "acme-challenge").mkdir(parents=True)
    (www / ".well-known" / "acme-challenge" / "TOKEN123").write_text(TOKEN)
    handler = partial(SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_responder(port: int, log: list[dict[str, Any]]) -> socket.socket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(CONTRACT / "certs" / "alpn-responder.crt",
                        CONTRACT / "certs" / "alpn-responder.key")
    ctx.set_alpn_protocols(["acme-tls/1"])
    seen: dict[int, str | None] = {}
    ctx.sni_callback = lambda obj, name, _c: seen.__setitem__(id(obj), name)  # type: ignore
    lsock = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    log.append({"sni": seen.pop(id(tls), None),
                                "alpn": tls.selected_alpn_protocol()})
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return lsock


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    ports: dict[int, int] = {}
    while len(ports) < len(MAPPED_PORTS):
        p = free_port()
        if p not in MAPPED_PORTS and p not in ports.values():
            ports[MAPPED_PORTS[len(ports)]] = p
    prefix = (tmp_path / "njet").resolve()
    m = Mapper(prefix, ports)
    layout_contract(prefix, m)
    (tmp_path / "cwd").mkdir()
    files = start_file_server(tmp_path / "www", ports[8099])
    responder_log: list[dict[str, Any]] = []
    responder = start_responder(ports[10443], responder_log)
    sim = NjetSim(prefix, conf="conf/contract/njet.conf", replay_delay=REPLAY_DELAY,
                  event_delay=EVENT_DELAY, cwd=tmp_path / "cwd")
    watcher = BrokerWatcher(sim.broker_socket)
    try:
        yield Env(sim, m, watcher, tmp_path / "www", responder_log)
    finally:
        sim.kill()
        watcher.close()
        files.shutdown()
        responder.close()
