"""The NJet simulator (hack/njet-sim) as a child process, and the prefix it runs in.

Used by tests/fixtures/njetsim.py (the pytest fixtures), tests/faults/, tests/e2e/ and bench/
(simenv.py, scale.py). Public pieces:
* `layout(root, conf_text, *, files=None, ...)`: write a prefix: the conf with `{{prefix}}`,
  `{{helpers}}` (ctrl API + broker helper lines) and `{{port:NAME}}` (a FREE port per NAME)
  replaced, conf/njet_ctrl.conf, and `files`; returns (prefix, ports).
* `NjetSim`: one simulator process: start(), api(), state(), reload(), quit(), kill(),
  restart(), set_fault(), reset_faults(), wait_replayed(), served().
* `DEFAULT_CONF`: one managed TLS server (a.test/www.a.test on `{{port:https}}`, bootstrap
  cert certs/boot-a.*) and a plain HTTP server; `boot_files()` makes that bootstrap pair.
* `ec_cert(names)`: a self-signed P-256 certificate and key; `free_port()`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.hackmods import free_tcp_port

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "hack" / "njet-sim" / "njet-sim"
HELPERS = ("helper ctrl modules/njt_helper_ctrl_module.so conf/njet_ctrl.conf;\n"
           "helper broker modules/njt_helper_broker_module.so;\n")
CTRL_CONF = """http {
    server {
        listen 127.0.0.1:{{port:ctrl}};
        location / { return 200 "njet control panel\\n"; }
        location /api { dyn_module_api; }
    }
}
"""


def free_port() -> int:
    """A TCP port free on 0.0.0.0 and on ::1 right now (see hack/pebble/run.py)."""
    return free_tcp_port("0.0.0.0", also=("::1",))


def render(text: str, prefix: Path, ports: dict[str, int]) -> str:
    """Replace `{{prefix}}`, `{{helpers}}` and `{{port:NAME}}` (allocating free ports)."""
    def port(m: re.Match[str]) -> str:
        if m.group(1) not in ports:
            ports[m.group(1)] = free_port()
        return str(ports[m.group(1)])
    text = text.replace("{{helpers}}", HELPERS).replace("{{prefix}}", str(prefix))
    return re.sub(r"\{\{port:([\w.-]+)\}\}", port, text)


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


@dataclass
class ApiAnswer:
    status: int
    content_type: str
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def _request(conn: http.client.HTTPConnection, method: str, path: str,
             body: bytes | None) -> ApiAnswer:
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return ApiAnswer(resp.status, resp.getheader("Content-Type", ""), resp.read())
    finally:
        conn.close()


@dataclass
class NjetSim:
    """One simulator process in its prefix (see module docstring)."""

    prefix: Path
    conf: str = "conf/njet.conf"
    ports: dict[str, int] = field(default_factory=dict)
    replay_delay: float = 0.3
    event_delay: float = 0.6
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    api_url: str = ""

    @property
    def broker_socket(self) -> Path:
        return self.prefix / "data" / "mosquitto.sock"

    @property
    def control_socket(self) -> Path:
        return self.prefix / "data" / "njet-sim.sock"

    @property
    def output(self) -> Path:
        return self.prefix / "logs" / "njet-sim.out"

    def control(self, method: str, path: str, spec: Any = None) -> Any:
        body = None if spec is None else json.dumps(spec).encode()
        answer = _request(_UnixHTTP(self.control_socket, 10), method, path, body)
        if answer.status != 200:
            raise RuntimeError(f"{method} {path}: {answer.status} {answer.raw!r}")
        return answer.json

    def state(self) -> dict[str, Any]:
        return dict(self.control("GET", "/__sim/state"))

    def start(self, timeout: float = 20) -> NjetSim:
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        cmd = [str(LAUNCHER), "-p", str(self.prefix), "-c", self.conf,
               "--replay-delay", str(self.replay_delay), "--event-delay", str(self.event_delay)]
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.cwd or self.prefix, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"njet-sim exited with {self.proc.returncode}:\n"
                                   + self.output.read_text(errors="replace")[-3000:])
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                api = self.state()["api"]
                self.api_url = f"http://{api}" if api else ""
                if not api or self.api("GET", "/api/v1/config").status == 200:
                    return self
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"njet-sim did not come up within {timeout} s")
            time.sleep(0.05)

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 10) -> ApiAnswer:
        """One ctrl API request; `body` may be bytes/str (sent as is) or JSON-able."""
        if body is not None and not isinstance(body, bytes | str):
            body = json.dumps(body)
        raw = body.encode() if isinstance(body, str) else body
        host, _, port = self.api_url.removeprefix("http://").rpartition(":")
        return _request(http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout),
                        method, path, raw)

    def signal(self, name: str) -> None:
        subprocess.run([str(LAUNCHER), "-p", str(self.prefix), "-c", self.conf, "-s", name],
                       check=True, capture_output=True, timeout=20)

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 15,
             what: str = "condition") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, RuntimeError):
                st = self.state()
                if pred(st):
                    return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"njet-sim: {what} not reached within {timeout} s")
            time.sleep(0.02)

    def wait_replayed(self, timeout: float = 15) -> dict[str, Any]:
        return self.wait(lambda s: bool(s["replayed"]), timeout, "replay of retained records")

    def reload(self, *, wait: bool = True) -> int:
        """`njet-sim -s reload`; returns the new generation (waits until it started)."""
        gen = int(self.state()["generation"])
        self.signal("reload")
        if wait:
            self.wait(lambda s: s["generation"] > gen, what="reload")
        return gen + 1

    def quit(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal("quit")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> NjetSim:
        self.quit()
        return self.start()

    def set_fault(self, **spec: Any) -> dict[str, Any]:
        return dict(self.control("POST", "/__sim/fault", spec))

    def reset_faults(self) -> dict[str, Any]:
        return dict(self.control("POST", "/__sim/reset", {}))

    def served(self) -> dict[tuple[str, ...], dict[str, Any]]:
        """Served certificates per block, keyed by server names (from /__sim/state)."""
        return {tuple(b["serverNames"]): b for b in self.state()["blocks"]}


def ec_cert(names: list[str], org: str = "njetsim") -> tuple[bytes, bytes]:
    """A self-signed P-256 certificate (PEM) and its PKCS#8 key (PEM) for `names`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def layout(root: Path, conf_text: str, *, files: Mapping[str, bytes | str] | None = None,
           conf_rel: str = "conf/njet.conf", ports: dict[str, int] | None = None,
           ctrl_conf: str | None = CTRL_CONF) -> tuple[Path, dict[str, int]]:
    """Write a prefix: the rendered conf, conf/njet_ctrl.conf, and `files` (relative paths;
    text is rendered too; keys under certs/ are 0644 as NJet's nobody worker needs)."""
    prefix = root
    ports = {} if ports is None else ports
    for rel, content in {**(files or {}), conf_rel: conf_text,
                         **({"conf/njet_ctrl.conf": ctrl_conf} if ctrl_conf else {})}.items():
        path = prefix / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(render(content, prefix, ports))
        else:
            path.write_bytes(content)
        path.chmod(0o644)
    for sub in ("logs", "data"):
        (prefix / sub).mkdir(exist_ok=True)
    return prefix, ports


DEFAULT_CONF = """pid logs/njet.pid;
error_log logs/error.log info;
{{helpers}}
events { worker_connections 64; }
http {
    server {
        listen 127.0.0.1:{{port:https}} ssl;
        server_name a.test www.a.test;
        ssl_certificate     certs/boot-a.crt;
        ssl_certificate_key certs/boot-a.key;
        ssl_certificate_management acme;
        location / { return 200 "a.test TLS server\\n"; }
    }
    server {
        listen 127.0.0.1:{{port:http}};
        server_name a.test;
        location / { return 200 "a.test plain http\\n"; }
    }
}
"""


def boot_files() -> dict[str, bytes]:
    """A fresh EC bootstrap pair for DEFAULT_CONF's a.test block (conf/certs/boot-a.*)."""
    crt, key = ec_cert(["a.test", "www.a.test"], "boot-a")
    return {"conf/certs/boot-a.crt": crt, "conf/certs/boot-a.key": key}
