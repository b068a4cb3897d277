"""The NJet simulator with the controller running as `run` beside it, for benches 2 and 5.

`SimEnv(workdir, pebble)` lays out a prefix with one managed TLS block (a.test, EC bootstrap
cert: tests/support/njetsim.DEFAULT_CONF, the conf the tests' `njetsim` fixture uses), starts
hack/njet-sim (tests/support/njetsim.NjetSim) and the controller as NJet would
(`njet-cert-manager -p PREFIX -c conf/cert-manager.toml run`, a subprocess), and waits
until a.test is issued, applied and served. It offers what the benches observe from outside:
the admin /healthz, a TLS handshake's leaf fingerprint, and dyn_srv adds. Used by
bench/served.py and bench/events.py.
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench.common import (
    BenchError,
    acme_section,
    clean_env,
    controller_program,
    free_port,
    render_toml,
    tail,
)
from tests.support.njetsim import DEFAULT_CONF, NjetSim, boot_files, layout
from tests.support.procs import stop_process, wait_until

_CLIENT_CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_CLIENT_CTX.check_hostname = False
_CLIENT_CTX.verify_mode = ssl.CERT_NONE


def served_fingerprint(port: int, sni: str, *, timeout: float = 2.0) -> str | None:
    """sha256 (hex) of the leaf a TLS server on 127.0.0.1:port presents for `sni`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
                _CLIENT_CTX.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def pem_fingerprint(pem: bytes) -> str:
    leaf = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()


class SimEnv:
    """See the module docstring. Use as a context manager."""

    def __init__(self, workdir: Path, pebble: Any) -> None:
        files = boot_files()
        self.boot_fp = pem_fingerprint(files["conf/certs/boot-a.crt"])
        prefix, ports = layout(workdir / "sim", DEFAULT_CONF, files=files)
        self.prefix = prefix
        self.boot_crt = prefix / "conf" / "certs" / "boot-a.crt"
        self.boot_key = prefix / "conf" / "certs" / "boot-a.key"
        self.sim = NjetSim(prefix, ports=ports)
        self.pebble = pebble
        self.admin_port = free_port()
        self.log = prefix / "logs" / "controller.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def https_port(self) -> int:
        return int(self.sim.ports["https"])

    def __enter__(self) -> SimEnv:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.sim.start()
        toml = {
            "acme": acme_section(self.pebble),
            "njet": {"apiAddress": self.sim.api_url},
            "controller": {"interval": "1h", "probeTimeout": "3s"},
            "admin": {"address": f"127.0.0.1:{self.admin_port}"},
            "log": {"v": 0},
        }
        (self.prefix / "conf" / "cert-manager.toml").write_text(render_toml(toml))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [controller_program(), "-p", str(self.prefix), "-c", "conf/cert-manager.toml",
                 "run"], stdout=out, stderr=subprocess.STDOUT, env=clean_env(), cwd="/")
        self.wait(lambda: self.health() is not None, 30, "the controller's admin API")
        self.wait(lambda: (self.health() or {}).get("mqtt_connected") is True, 30,
                  "the controller's MQTT connection")
        self.wait(lambda: self.stored_fingerprint("a.test") is not None
                  and self.served("a.test") == self.stored_fingerprint("a.test"), 60,
                  "a.test issued and served")
        self.wait_quiet()

    def stop(self) -> None:
        stop_process(self.proc)
        try:
            self.sim.quit()
        except Exception:
            self.sim.kill()

    # -- observation ---------------------------------------------------------------------

    def wait(self, pred: Any, timeout: float, what: str) -> None:
        def exited() -> bool:
            return self.proc is not None and self.proc.poll() is not None

        if not wait_until(lambda: exited() or pred(), timeout=timeout, step=0.02):
            raise BenchError(f"timed out after {timeout}s waiting for {what}; controller log:\n"
                             + tail(self.log))
        if exited():
            assert self.proc is not None
            raise BenchError(f"the controller exited ({self.proc.returncode}) while waiting for "
                             f"{what}:\n{tail(self.log)}")

    def health(self) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.admin_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return dict(json.loads(r.read()))
        except (OSError, ValueError):
            return None

    def reconciles(self) -> int:
        h = self.health()
        if h is None:
            raise BenchError("the controller's /healthz does not answer")
        return int(h["reconciles"])

    def wait_quiet(self, *, settle: float = 0.3, timeout: float = 60.0) -> int:
        """Until in_sync and `reconciles` unchanged for `settle` seconds; the final count."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            h = self.health() or {}
            count = int(h.get("reconciles", -1))
            if count != last:
                last, since = count, time.monotonic()
            elif h.get("in_sync") is True and time.monotonic() - since >= settle:
                return count
            time.sleep(0.02)
        raise BenchError(f"the controller did not settle within {timeout}s:\n{tail(self.log)}")

    def served(self, sni: str) -> str | None:
        return served_fingerprint(self.https_port, sni)

    def stored_fingerprint(self, name: str) -> str | None:
        path = self.prefix / ".lego" / "certificates" / f"{name}.crt"
        try:
            return pem_fingerprint(path.read_bytes())
        except (OSError, ValueError):
            return None

    # -- actions ---------------------------------------------------------------------------

    def add_managed_server(self, name: str) -> None:
        """POST /api/v1/dyn_srv of a managed server (NJet publishes generateCertificate)."""
        answer = self.sim.api("POST", "/api/v1/dyn_srv", {
            "type": "add", "addr_port": f"127.0.0.1:{self.https_port}", "listen_option": "ssl",
            "server_name": name,
            "server_body": f"ssl_certificate {self.boot_crt}; "
                           f"ssl_certificate_key {self.boot_key}; "
                           "ssl_certificate_management acme; return 200 \"bench\";"})
        if answer.status != 200 or answer.json.get("code") != 0:
            raise BenchError(f"dyn_srv add of {name} failed: {answer.status} {answer.raw!r}")
