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

import itertools
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

from tests.contract import CONTRACT
from tests.fixtures.njetsim import (
    BrokerWatcher,
    NjetSim,
    Rewriter,
    retained,
    s_client,
)

pytestmark = [pytest.mark.timeout(240)]
RECORDED_PREFIX = Rewriter.RECORDED_PREFIX
MAPPED_PORTS = (8443, 8444, 8445, 8080, 8081, 9443, 10443, 8099, 8447)
REPLAY_DELAY, EVENT_DELAY = 1.0, 1.4
ACM = "/automaticcertificatemanagement/event/request"
SERVED_KEYS = ("subject", "serial", "sha256", "chain_len", "proto_cipher", "peer_sig_type",
               "pubkey_bits")
# How many observed facts (curl, TLS subject, listening socket, retained list) of the
# dyn_loc/dyn_srv exchanges are checked before / after the request.
OBSERVED_BEFORE = {40: 2, 70: 2, 76: 3}
OBSERVED_AFTER = {40: 4, 41: 1, 45: 1, 70: 2, 74: 1, 75: 2, 76: 3, 79: 2, 80: 1}
TOKEN = "TOKEN123.thumbprint-served-by-python-http.server"


def first_diff(got: Any, want: Any, path: str = "") -> str:
    """Where two JSON values differ first, for readable failures (PEMs shortened)."""
    if isinstance(got, dict) and isinstance(want, dict):
        for key in [*want, *[k for k in got if k not in want]]:
            if got.get(key, "<missing>") != want.get(key, "<missing>"):
                return first_diff(got.get(key, "<missing>"), want.get(key, "<missing>"),
                                  f"{path}.{key}")
    if isinstance(got, list) and isinstance(want, list):
        for i, (g, w) in enumerate(zip(got, want, strict=False)):
            if g != w:
                return first_diff(g, w, f"{path}[{i}]")
        if len(got) != len(want):
            return f"{path}: {len(got)} items, recorded {len(want)}"
    short = [str(v)[:70] + "…" if len(str(v)) > 70 else str(v) for v in (got, want)]
    return f"{path}: got {short[0]!r}, recorded {short[1]!r}"


def exchange(n: int) -> dict[str, Any]:
    (path,) = CONTRACT.glob(f"{n:02d}-*.json")
    return dict(json.loads(path.read_text()), file=path.name)


def record_topic(body: dict[str, Any]) -> str:
    """The /ins/* topic of a record payload (README §4, §5, §7)."""
    if "cert_info" in body:
        kind = body["cert_info"].get("cert_type", "rsa")
        key = "".join(body["serverNames"]) + "".join(body["listens"]) + kind
        return f"/ins/ssl/l_{zlib.crc32(key.encode())}"
    if "locations" in body or "location_name" in body:
        loc = body["locations"][0] if "locations" in body else body
        key = body["addr_port"] + body["server_name"] + loc["location_rule"] + loc["location_name"]
        return f"/ins/loc/l_{zlib.crc32(key.encode())}"
    return f"/ins/srv/s_{zlib.crc32((body['addr_port'] + body['server_name']).encode())}"


@dataclass
class Env:
    sim: NjetSim
    m: Rewriter
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
        body_got = self.m.back(got.json)
        pos = re.match(r"pos: (\d+), ", str(body_got.get("msg", ""))) \
            if isinstance(body_got, dict) else None
        if pos and raw is not None:  # a position in the rewritten body -> the recorded one
            recorded_pos = len(self.m.back_text(raw[:int(pos.group(1))]))
            body_got["msg"] = f"pos: {recorded_pos}, " + body_got["msg"][pos.end():]
        assert body_got == want["body"], f"{where}: {first_diff(body_got, want['body'])}"

    def retained_list(self, topics: tuple[str, ...]) -> list[tuple[str, int | None]]:
        """(recorded-space topic, recorded-space payload length) of the retained records.
        The length is None for payloads holding paths: the recording measured those before
        its install prefix was renamed to /usr/local/njet (README "Private keys")."""
        out: list[tuple[str, int | None]] = []
        for topic, payload in retained(self.sim.broker_socket, topics):
            body = json.loads(payload)
            assert topic == record_topic(body), f"{topic} does not match its payload"
            back = self.m.back(body)
            text = json.dumps(back)
            out.append((record_topic(back), None if RECORDED_PREFIX in text else len(text)))
        return out

    def same_retained(self, topics: tuple[str, ...], recorded: list[Any], where: str) -> None:
        got = self.retained_list(topics)
        want = [(t, n) for t, n in recorded]
        assert [t for t, _n in got] == [t for t, _n in want], f"{where}: retained topics"
        for (topic, n_got), (_t, n_want) in zip(got, want, strict=True):
            assert n_got is None or n_got == n_want, f"{where}: {topic} length {n_got}"

    def observed(self, ex: dict[str, Any], phase: str) -> int:
        """Check the curl / TLS / socket / retained facts in `observed` of a dyn_loc/dyn_srv
        exchange for one phase ("before" or "after" the request); returns how many."""
        body = ex["request"]["body"]
        checked = 0
        for seg in ex["observed"].split(" | "):
            topics = re.search(r"topics before: (\[.*?\]) ; after: (\[.*?\])", seg)
            if topics:
                listed = re.findall(r"\('([^']+)', (\d+)\)", topics.group(
                    1 if phase == "before" else 2))
                self.same_retained(("/ins/ssl/#", "/ins/srv/#"),
                                   [(t, int(n)) for t, n in listed], ex["file"])
                checked += 1
                continue
            if (phase == "before") != seg.startswith("BEFORE"):
                continue
            for m in re.finditer(r"curl -H 'Host: ([^']+)' http://[\d.]+:(\d+)(\S*) -> "
                                 r"HTTP/1\.1 (\d+) .*?body='(.*?)'(?= ;|$)", seg, re.S):
                status, text = http_get(self.port(int(m.group(2))), m.group(3), m.group(1))
                assert status == int(m.group(4)), f"{ex['file']} {m.group(0)[:80]}: {status}"
                assert text.strip() == m.group(5).replace("\\n", "\n").strip(), ex["file"]
                checked += 1
            for m in re.finditer(r"curl -k https://([\w.]+):(\d+)(/\S*) -> '([^']*)'", seg):
                text = https_get(self.port(int(m.group(2))), m.group(1), m.group(3))
                assert text.strip() == m.group(4), f"{ex['file']}: {text!r}"
                checked += 1
            tls = re.search(r"(O=[^\s,]+,CN=\S+) serial=([0-9A-F]+)", seg)
            if tls and isinstance(body, dict) and "addr_port" in body:
                host, _, port = body["addr_port"].rpartition(":")
                got = s_client(host, self.port(int(port)), body["server_name"])
                assert (got.get("subject"), got.get("serial")) == tls.groups(), ex["file"]
                checked += 1
            listen = re.search(r"ss -ltn \| grep (\d+)(?: afterwards)? -> '([^']*)'", seg)
            if listen:
                assert port_open(self.port(int(listen.group(1)))) == bool(listen.group(2))
                checked += 1
        return checked

    def run(self, n: int) -> dict[str, Any]:
        ex = exchange(n)
        self.trigger(f"api {ex['file']}")
        if "served_before" in ex:
            self.served(ex["served_before"], f"{ex['file']} served_before")
        if n >= 40:
            self.observed(ex, "before")
        if "retained_ins_ssl_topics_before" in ex:
            self.same_retained(("/ins/ssl/#",), ex["retained_ins_ssl_topics_before"], ex["file"])
        self.api(ex)
        if f"api {ex['file']}" in event_triggers():  # published before the reply; let it
            self.wait_event(f"api {ex['file']}")     # arrive before the next trigger
        for key in ("served_after", "served", "served_certs"):
            if key in ex:
                self.served(ex[key], f"{ex['file']} {key}")
        if "retained_ins_ssl_topics_after" in ex:
            self.same_retained(("/ins/ssl/#",), ex["retained_ins_ssl_topics_after"], ex["file"])
        if n >= 40:
            self.observed(ex, "after")
        return ex

    def wait_event(self, trigger: str) -> None:
        start = next(t for name, t in reversed(self.triggers) if name == trigger)
        self.watcher.wait_for(lambda msg: msg.topic == ACM and bool(msg.payload)
                              and msg.at >= start, timeout=EVENT_DELAY + 10)


def event_triggers() -> set[str]:
    return {json.loads(line)["trigger"]
            for line in (CONTRACT / "mqtt-events.jsonl").read_text().splitlines()}


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

def layout_contract(root: Path, m: Rewriter) -> None:
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
    ctx.sni_callback = lambda obj, name, _c: seen.__setitem__(id(obj), name)
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
    prefix = (tmp_path / "njet").resolve()
    m = Rewriter.with_free_ports(prefix, MAPPED_PORTS)
    ports = m.ports
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


# --- the replay --------------------------------------------------------------------------------

def recorded_trigger(start: str) -> str:
    for line in (CONTRACT / "mqtt-events.jsonl").read_text().splitlines():
        trigger = json.loads(line)["trigger"]
        if trigger.startswith(start):
            return str(trigger)
    raise LookupError(start)


def subject_of(openssl_line: str) -> str:
    """"subject=CN = a.test, O = x" -> "O=x,CN=a.test" (RFC 4514 order, like s_client())."""
    parts = [p.strip().replace(" = ", "=") for p in openssl_line.split("=", 1)[1].split(",")]
    return ",".join(reversed(parts))


def check_stream(env: Env) -> None:
    """tls-alpn-stream.md: every recorded command, its subject and ALPN; SNI passed through."""
    text = (CONTRACT / "tls-alpn-stream.md").read_text()
    block = text.split("## Commands and what they printed", 1)[1].split("```")[1]
    expected_sni: list[str] = []
    for cmd in re.split(r"\n(?=\$ )", block.strip()):
        first, *rest = cmd.splitlines()
        line = first.removeprefix("$ ").split("#")[0].strip()
        if line.startswith("curl"):
            host, port = re.search(r"https://([\w.]+):(\d+)/", line).groups()  # type: ignore
            assert https_get(env.port(int(port)), host) == rest[0] + "\n", line
            continue
        got = env.handshake(line)
        subject = next(r for r in rest if r.startswith("subject="))
        assert got.get("subject") == subject_of(subject), f"{line}: {got}"
        alpn = next(r for r in rest if "ALPN" in r)
        assert got["alpn"] == (None if alpn.startswith("No ALPN") else alpn.split(": ")[1])
        if "tls-alpn-responder" in subject and ":9443" in line:
            expected_sni.append(re.search(r"-servername (\S+)", line).group(1))  # type: ignore
    routed = [e["sni"] for e in env.responder_log][:len(expected_sni)]
    assert routed == expected_sni, "the stream proxy must pass the client's SNI through"


def check_retained_file(env: Env, name: str) -> None:
    recorded = json.loads((CONTRACT / name).read_text())
    want = recorded.get("messages") or recorded.get("ins_ssl_and_loc")
    got = retained(env.sim.broker_socket, ("/ins/ssl/#", "/ins/loc/#"))
    assert [record_topic(json.loads(p)) == t for t, p in got] == [True] * len(got)
    assert [(record_topic(env.m.back(json.loads(p))), env.m.back(json.loads(p)))
            for _t, p in got] == [(w["topic"], w["payload"]) for w in want], name
    for w in want:
        assert record_topic(w["payload"]) == w["topic"], "topic formula vs recording"
    if "ins_srv_retained" in recorded:
        assert retained(env.sim.broker_socket, ("/ins/srv/#",)) == recorded["ins_srv_retained"]
        assert retained(env.sim.broker_socket, ("/automaticcertificatemanagement/#",)) == \
            recorded["automaticcertificatemanagement_retained"]


def check_events(env: Env) -> None:
    recorded = [json.loads(line) for line in
                (CONTRACT / "mqtt-events.jsonl").read_text().splitlines()]
    ours = []
    for msg in env.watcher.messages:
        if msg.topic != ACM:
            continue
        name, start = max(((n, t) for n, t in env.triggers if t <= msg.at), key=lambda x: x[1])
        payload = json.loads(msg.payload) if msg.payload else ""
        ours.append((name, env.m.back(payload), int(msg.retain), msg.qos, msg.at - start))
    assert [o[:4] for o in ours] == [(r["trigger"], r["payload"], r["retain"], r["qos"])
                                     for r in recorded]
    for name, _p, _r, _q, seconds in ours:
        low, high = (0.0, 1.0) if name.startswith("api") else (EVENT_DELAY, EVENT_DELAY + 3)
        assert low <= seconds <= high, f"{name}: event after {seconds:.3f} s"


def check_copilot(env: Env, cwd: Path) -> None:
    recorded = json.loads((CONTRACT / "copilot-launch.json").read_text())
    events = [json.loads(line) for line in
              (env.sim.prefix / "logs" / "contract_stub.events").read_text().splitlines()]
    assert [e["event"] for e in events] == [e["event"] for e in recorded["timeline"]]
    for e in events:
        if e["event"] == "start":
            assert e["argv"] == env.m.fwd(recorded["observed"]["argv"])
            assert set(e["env"]) <= set(recorded["observed"]["environment_seen_by_python"])
            assert e["cwd"] == str(cwd)
            assert e["uid"] == os.getuid()
        else:
            assert e["sig"] == 15
    pairs = zip(itertools.pairwise(events), itertools.pairwise(recorded["timeline"]), strict=True)
    for (before, after), (_rec_before, rec_after) in pairs:
        if (before["event"], after["event"]) == ("signal", "start") and \
                rec_after["preceding_action"].startswith("reload"):
            assert after["t"] - before["t"] < 1.5, "reload: new copilot ~0.1 s after SIGTERM"
    out = (env.sim.prefix / "logs" / "contract_stub.stdout").read_text()
    assert out == "stdout line from contract stub\nstderr line from contract stub\n"
    assert "exited on signal 9" in (env.sim.prefix / "logs" / "contract-error.log").read_text()


def reload_and_wait(env: Env, trigger: str, *, edit: tuple[str, str] | None = None) -> None:
    if edit is not None:
        conf = env.sim.prefix / env.sim.conf
        text = conf.read_text()
        assert edit[0] in text
        conf.write_text(text.replace(edit[0], edit[1]))
    name = recorded_trigger(trigger)
    env.trigger(name)
    env.sim.reload()
    env.sim.wait_replayed()
    env.wait_event(name)


def test_simulator_replays_the_recorded_contract(env: Env, tmp_path: Path) -> None:
    sim = env.sim
    env.trigger(recorded_trigger("fresh start"))
    sim.start()
    # the recording started with exchange 01 after the start event (3 s): replay done, too
    env.wait_event(recorded_trigger("fresh start"))
    assert sim.state()["replayed"]
    for n in range(1, 39):
        env.run(n)
    for n in range(40, 49):
        env.run(n)
    check_retained_file(env, "mqtt-retained-ins-before-restart.json")

    # restart, broker data kept: configured certs until the replay, then the records
    ex50 = exchange(50)
    env.served(ex50["served_before_restart"], "50 before restart")
    sim.quit()
    env.trigger(recorded_trigger("restart"))
    sim.start()
    after = ex50["served_after_restart"]
    boot = {k: v for k, v in after.items() if v["subject"].startswith("O=boot-")}
    env.served(boot, "50 right after the restart")
    assert not sim.state()["replayed"], "the pre-replay handshakes came too late; slow host?"
    sim.wait_replayed()
    env.served({k: v for k, v in after.items() if k not in boot}, "50 after the replay")
    env.served(ex50["served_later_after_restart"], "50 later")
    env.wait_event(recorded_trigger("restart"))
    env.api(ex50)
    for n in range(51, 55):
        env.run(n)

    reload_and_wait(env, "reload #1")
    pid = sim.state()["copilots"]["stubcopilot"]
    os.kill(pid, 9)
    sim.wait(lambda s: not s["copilots"], what="copilot exit noticed")
    reload_and_wait(env, "reload #2", edit=("server_name a.test www.a.test;",
                                            "server_name a2.test www.a.test;"))
    env.run(60)
    for n in range(70, 83):
        env.run(n)
    reload_and_wait(env, "reload #3", edit=("server_name a2.test www.a.test;",
                                            "server_name a.test www.a.test;"))
    env.run(61)
    check_stream(env)
    reload_and_wait(env, "reload #4")
    check_retained_file(env, "mqtt-retained-ins-end.json")
    env.trigger("final stop")
    sim.quit()
    check_events(env)
    check_copilot(env, tmp_path / "cwd")
