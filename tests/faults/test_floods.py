"""Fault suite, floods (issue 13 item 8): the admin API under idle, slow and too many connections.

Over real sockets:
- `run` in store-only mode as a real process, its open-file limit lowered before it starts
  (soft 64, hard 96: it must raise the soft one itself): 116 connections kept open against
  `[admin] maxConnections = 16` are answered 503 beyond the cap, the admitted ones are cut
  after `headerTimeout = "1s"`, the controller still writes its status files meanwhile, a fresh
  client is answered once the flood ends, and the log holds a line or two about it, no
  traceback;
- the same with the cap above the descriptor limit: accept fails with EMFILE, logged once;
- an admin server in this process (start_admin over the real controller backend): a slowloris
  client sending one header byte a second is cut after headerTimeout, an idle keep-alive
  connection after idleTimeout, and a keep-alive client that sends its requests (bodies
  included) in time is never cut between them.
Each test records the family `floods` (tests/faults/summary.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.admin.limits import ConnectionLimits
from controller.adapters.admin.server import AdminServer, start_admin
from controller.config import load_config, parse_config
from controller.errors import ConfigError
from controller.service import Service
from tests.faults import summary
from tests.support.hackmods import free_tcp_port
from tests.support.procs import clean_env, controller_program, stop_process, tail, wait_until
from tests.support.tomlgen import render_toml

FAMILY = "floods"
TOKEN = "flood-token"
CAP = 16
EXTRA = 100
CONF = "http {\n%s}\n"
BLOCK = "    server { listen 8443 ssl; server_name %s; ssl_certificate_management acme; }\n"
# lines the gate writes about a flood (limits.Throttled); asyncio's own accept error says
# "socket.accept() out of system resource"
FLOOD_WORDS = ("admin API: connection refused", "admin API: connection closed",
               "admin API: cannot accept", "socket.accept()")
REQUEST = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n"
           % TOKEN.encode())


# --- `run` as a real process ---------------------------------------------------------------


@dataclass
class Controller:
    prefix: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def status(self, name: str) -> Path:
        return self.prefix / ".lego" / "status" / f"{name}.json"

    def flood_lines(self) -> list[str]:
        return [ln for ln in self.log.read_text(errors="replace").splitlines()
                if any(w in ln for w in FLOOD_WORDS)]  # fmt: skip

    def add_name(self, name: str) -> None:
        conf = self.prefix / "conf" / "njet.conf"
        conf.write_text(CONF % (BLOCK % "a.test" + BLOCK % name))
        self.proc.send_signal(signal.SIGHUP)  # re-read njet.conf and reconcile now


def _start(root: Path, *, max_connections: int, soft: int, hard: int) -> Controller:
    prefix, port = root / "njet", free_tcp_port()
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(CONF % (BLOCK % "a.test"))
    toml: dict[str, dict[str, Any]] = {
        # a CA that refuses connections: every pass fails fast and writes the name's status
        "acme": {"acmeCaDir": f"https://127.0.0.1:{free_tcp_port()}/dir", "keyType": "ec256"},
        "njet": {"apiAddress": ""},
        "admin": {"address": f"127.0.0.1:{port}", "token": TOKEN,
                  "maxConnections": max_connections, "headerTimeout": "1s",
                  "idleTimeout": "30s"},
    }  # fmt: skip
    (prefix / "conf" / "cert-manager.toml").write_text(render_toml(toml))
    log = root / "controller.log"

    def limit() -> None:  # in the child, before exec: what a tight supervisor would set
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [controller_program(), "-p", str(prefix), "-c", "conf/cert-manager.toml", "run"],
            stdout=out, stderr=subprocess.STDOUT, cwd="/", env=clean_env(), preexec_fn=limit,
        )  # fmt: skip
    ctl = Controller(prefix, port, proc, log)
    started = wait_until(lambda: ctl.status("a.test").exists() and _answers(port), 30)
    if not started:
        stop_process(proc)
        pytest.fail(f"the controller did not start:\n{tail(log)}")
    return ctl


def _answers(port: int) -> bool:
    """One authenticated GET /healthz on a fresh connection gets an HTTP answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(REQUEST)
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    ctl = _start(tmp_path_factory.mktemp("capped"), max_connections=CAP, soft=64, hard=96)
    yield ctl
    stop_process(ctl.proc)


@dataclass
class Flood:
    """`count` idle connections, each reopened as soon as the server closes it, in a thread."""

    port: int
    count: int
    refused: int = 0  # answered 503 by the gate
    cut: int = 0  # closed without an answer (header timeout)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Flood:
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _open(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            return None

    def _run(self) -> None:
        socks = [s for s in (self._open() for _ in range(self.count)) if s is not None]
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(socks, [], [], 0.05)
                for s in ready:
                    try:
                        data = s.recv(256)
                    except OSError:
                        data = b""
                    if data.startswith(b"HTTP/1.1 503"):
                        self.refused += 1
                    else:
                        self.cut += 1
                    s.close()
                    socks.remove(s)
                while len(socks) < self.count and not self._stop.is_set():
                    if (fresh := self._open()) is None:
                        break
                    socks.append(fresh)
                time.sleep(0.05)
        finally:
            for s in socks:
                s.close()


def test_run_raises_its_open_file_limit_to_the_hard_limit(capped: Controller) -> None:
    limits = Path(f"/proc/{capped.proc.pid}/limits").read_text()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
    assert line.split()[3:5] == ["96", "96"], line  # started with soft 64, hard 96
    summary.record(FAMILY, trials=1, converged=1)


def test_connections_over_the_cap_are_refused_and_the_controller_keeps_working(
    capped: Controller,
) -> None:
    before = len(capped.flood_lines())
    with Flood(capped.port, CAP + EXTRA) as flood:
        # without the cap the flood holds every descriptor the controller has (96)
        assert wait_until(lambda: flood.refused >= EXTRA, 20), vars(flood)
        assert wait_until(lambda: flood.cut >= CAP, 20), "admitted idle connections stay open"
        capped.add_name("c.test")  # a pass during the flood: njet.conf read, a status written
        written = wait_until(lambda: capped.status("c.test").exists(), 20)
        assert written, f"no status written during the flood:\n{tail(capped.log)}"
    # a fresh client is answered once the flood's admitted connections have timed out
    assert wait_until(lambda: _answers(capped.port), 10), tail(capped.log)
    lines = capped.flood_lines()[before:]
    assert 1 <= len(lines) <= 4, lines  # once per minute, not once per connection
    text = capped.log.read_text(errors="replace")
    assert "Traceback" not in text and "Too many open files" not in text, tail(capped.log)
    assert capped.proc.poll() is None
    summary.record(FAMILY, trials=1, converged=1)


def test_accept_errors_are_logged_once_and_accepting_resumes(tmp_path: Path) -> None:
    # the cap above the descriptor limit: accept itself fails with EMFILE
    ctl = _start(tmp_path, max_connections=1000, soft=64, hard=64)
    try:
        socks: list[socket.socket] = []
        try:
            for _ in range(100):
                socks.append(socket.create_connection(("127.0.0.1", ctl.port), timeout=2))
            assert wait_until(lambda: any("cannot accept" in ln for ln in ctl.flood_lines()),
                              20), tail(ctl.log)  # fmt: skip
            time.sleep(2)  # several more accept attempts fail meanwhile (one every 0.5 s)
        finally:
            for s in socks:
                s.close()
        assert wait_until(lambda: _answers(ctl.port), 15), tail(ctl.log)
        lines = [ln for ln in ctl.flood_lines() if "accept" in ln]  # both spellings
        assert len(lines) == 1, lines
        assert "Too many open files" in lines[0]
        assert "Traceback" not in ctl.log.read_text(errors="replace"), tail(ctl.log)
    finally:
        stop_process(ctl.proc)
    summary.record(FAMILY, trials=1, converged=1)


# --- an admin server in this process --------------------------------------------------------


@contextlib.asynccontextmanager
async def _admin(tmp_path: Path, limits: ConnectionLimits) -> AsyncIterator[AdminServer]:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "njet.conf").write_text(CONF % (BLOCK % "a.test"))
    service = Service(parse_config({"njet": {"apiAddress": ""}}, prefix=tmp_path))
    srv = await start_admin(service.backend, "127.0.0.1:0", TOKEN, limits=limits)
    try:
        await asyncio.wait_for(srv.wait_bound(), 5)
        yield srv
    finally:
        await srv.stop()
        await service.app.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """What the server sent before closing, or None when it is still open after `seconds`."""
    got = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(4096), left)
        except TimeoutError:
            return None
        except ConnectionError:
            return got
        if not chunk:
            return got
        got += chunk
    return None


async def _response(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n")
                  if ln.lower().startswith(b"content-length:"))  # fmt: skip
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def test_a_slowloris_client_is_cut_after_the_header_timeout(tmp_path: Path) -> None:
    limits = ConnectionLimits(max_connections=8, header_timeout=1.0, idle_timeout=60.0)
    async with _admin(tmp_path, limits) as srv:
        assert srv.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        sent, answer = 0, None
        try:
            for byte in REQUEST:  # one byte a second: the header would take len(REQUEST) s
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                if (answer := await _closed_within(reader, 1.0)) is not None:
                    break
        except ConnectionError:
            answer = b""
        finally:
            writer.close()
    assert answer is not None, "the slow header was read to its end"
    assert answer == b"" and sent < len(REQUEST), (sent, answer)
    summary.record(FAMILY, trials=1, converged=1)


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    tmp_path: Path,
) -> None:
    limits = ConnectionLimits(max_connections=8, header_timeout=10.0, idle_timeout=1.0)
    async with _admin(tmp_path, limits) as srv:
        assert srv.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        try:
            writer.write(REQUEST)
            assert (await _response(reader)).startswith(b"HTTP/1.1 200")
            closed = await _closed_within(reader, 15.0)
        finally:
            writer.close()
    assert closed == b"", "the idle keep-alive connection stayed open"
    summary.record(FAMILY, trials=1, converged=1)


async def test_keep_alive_requests_sent_in_time_are_never_cut_between_them(
    tmp_path: Path,
) -> None:
    limits = ConnectionLimits(max_connections=8, header_timeout=1.0, idle_timeout=30.0)
    body = b"x\r\n\r\nGET / HTTP/1.1\r\n"  # a blank line inside a body is not a header's end
    post = (b"POST /api/v1/reconcile HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
    async with _admin(tmp_path, limits) as srv:
        assert srv.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        answers: list[bytes] = []
        try:
            for request in (REQUEST, post, REQUEST):
                writer.write(request)
                answers.append(await _response(reader))
                # idle between requests for longer than the header timeout
                assert await _closed_within(reader, 1.5) is None, "cut between requests"
        finally:
            writer.close()
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 202 Accepted", b"HTTP/1.1 200 OK"]
    summary.record(FAMILY, trials=1, converged=1)


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("headerTimeout", '"0s"', "at least 1s"), ("idleTimeout", '"500ms"', "at least 1s"),
    ("maxConnections", "0", "greater than or equal to 1"),
])  # fmt: skip
def test_admin_limits_below_their_minimum_are_refused_naming_the_key(
    tmp_path: Path, key: str, value: str, shown: str
) -> None:
    path = tmp_path / "cm.toml"
    path.write_text(f"[admin]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=rf"admin\.{key}: .*{shown}"):
        load_config(path, prefix=tmp_path)
    defaults = load_config(_empty(tmp_path), prefix=tmp_path)
    assert (defaults.admin.maxConnections, defaults.admin.headerTimeout.total_seconds(),
            defaults.admin.idleTimeout.total_seconds()) == (256, 10, 60)  # fmt: skip


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.toml"
    path.write_text("")
    return path
