"""Run Debian's Pebble ACME test CA plus the loopback DNS responder, for dev and tests.

Library (used by tests/fixtures/pebble.py):

    h = PebbleHarness(state_dir, validity_seconds=3600)
    h.start()            # free ports, certs, config, dns.py, pebble; waits for the directory
    PebbleHarness(state_dir, dns_server="127.0.0.1:5353")   # Pebble asks that DNS server
                         # (e.g. a real BIND for dns-01) instead of starting dns.py
    h.directory_url, h.ca_bundle, h.http_port, h.tls_port, h.management_url
    h.restart()          # same ports and config; Pebble forgets every account and order
    h.stop()

CLI (processes keep running after the command returns, state kept in --state-dir):

    python3 hack/pebble/run.py start [--state-dir DIR] [--validity SECONDS] [--nonce-reject PCT]
                                     [--http-port P] [--tls-port P] [--eab]
                                     [--dns-server HOST:PORT]
    python3 hack/pebble/run.py stop  [--state-dir DIR]

Pebble facts this relies on: `-strict false` would drop every flag after it, so `-strict` is
never passed; PEBBLE_VA_NOSLEEP=1 removes the random validation delay; its httpPort/tlsPort are
where its VA connects, so they are the ports the controller's challenge servers listen on; its
issuing root is regenerated at each start and served at <management_url>/roots/0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_STATE_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "njet-cert-manager-pebble"
# The EAB keys of Debian's example config (pebble-config-external-account-bindings.json).
EXAMPLE_EAB_KEYS = {
    "kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
    "kid-2": "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH",
}


def _sibling(name: str) -> ModuleType:
    """Import hack/pebble/<name>.py by path (hack/ is not a package)."""
    mod_name = f"_njet_pebble_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


# Test ports come from below Linux's ephemeral range (32768-60999): a port found free there
# cannot be taken by some outgoing connection between this check and the server's own bind,
# which "bind to port 0, close, reuse" suffers from when several test workers run at once.
_PORT_LOW, _PORT_HIGH = 20000, 32700
_ports = random.Random()


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_tcp_port(host: str = "127.0.0.1", *, also: tuple[str, ...] = ()) -> int:
    """A port nobody listens on right now on `host` (and on every address in `also`)."""
    for _ in range(500):
        port = _ports.randrange(_PORT_LOW, _PORT_HIGH)
        if all(_bindable(h, port) for h in (host, *also)):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: any port
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PebbleError(RuntimeError):
    pass


class PebbleHarness:
    """One Pebble + DNS responder pair on loopback ports; see the module docstring."""

    def __init__(
        self,
        state_dir: Path,
        *,
        validity_seconds: int | None = None,
        nonce_reject_percent: int | None = None,
        authz_reuse_percent: int | None = None,
        eab_keys: dict[str, str] | None = None,
        domain_blocklist: list[str] | None = None,
        http_port: int | None = None,
        tls_port: int | None = None,
        env: dict[str, str] | None = None,
        pebble_bin: str | None = None,
        dns_server: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.validity_seconds = validity_seconds
        self.nonce_reject_percent = nonce_reject_percent
        self.authz_reuse_percent = authz_reuse_percent
        self.eab_keys = dict(eab_keys) if eab_keys else None
        self.domain_blocklist = list(domain_blocklist or [])
        self.http_port = http_port or free_tcp_port()
        self.tls_port = tls_port or free_tcp_port()
        self.listen_port = free_tcp_port()
        self.management_port = free_tcp_port()
        self.dns_port = 0
        # a DNS server of the caller's ("host:port"): Pebble's lookups (TXT for dns-01, A for
        # http-01) go there and dns.py is not started
        self.dns_server = dns_server
        self.env = dict(env or {})
        found = pebble_bin or os.environ.get("PEBBLE_BIN") or shutil.which("pebble")
        self.pebble_bin = found or "/usr/bin/pebble"
        self.ca_bundle = self.state_dir / "ca.pem"
        self.config_path = self.state_dir / "pebble-config.json"
        self.log_path = self.state_dir / "pebble.log"
        self._pebble: subprocess.Popen[bytes] | None = None
        self._dns: subprocess.Popen[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.listen_port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://127.0.0.1:{self.management_port}"

    @property
    def dns_address(self) -> str:
        """The DNS server Pebble asks: the caller's, else dns.py's."""
        return self.dns_server or f"127.0.0.1:{self.dns_port}"

    @property
    def running(self) -> bool:
        return self._pebble is not None and self._pebble.poll() is None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, *, detach: bool = False, timeout: float = 20.0) -> None:
        """Start DNS (once) and Pebble, then wait until the directory answers."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        certs = _sibling("mkcerts").make_certs(self.state_dir)
        self.ca_bundle = certs.ca_cert
        if self.dns_server is None and (self._dns is None or self._dns.poll() is not None):
            self._start_dns(detach=detach)
        self._write_config(certs.server_cert, certs.server_key)
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", **self.env}
        if self.nonce_reject_percent is not None:
            env["PEBBLE_WFE_NONCEREJECT"] = str(self.nonce_reject_percent)
        if self.authz_reuse_percent is not None:
            env["PEBBLE_AUTHZREUSE"] = str(self.authz_reuse_percent)
        cmd = [
            self.pebble_bin, "-config", str(self.config_path),
            "-dnsserver", self.dns_address,
        ]
        with open(self.log_path, "ab") as log:
            self._pebble = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                stdin=subprocess.DEVNULL, start_new_session=detach,
            )
        self._wait_ready(timeout)

    def stop(self) -> None:
        """Stop Pebble and the DNS responder (idempotent)."""
        for proc in (self._pebble, self._dns):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self._dns is not None and self._dns.stdout is not None:
            self._dns.stdout.close()
        self._pebble = self._dns = None

    def stop_pebble(self) -> None:
        """Stop only Pebble (the CA is down; DNS keeps running)."""
        if self._pebble is not None and self._pebble.poll() is None:
            self._pebble.terminate()
            try:
                self._pebble.wait(5)
            except subprocess.TimeoutExpired:
                self._pebble.kill()
                self._pebble.wait(5)
        self._pebble = None

    def restart(self) -> None:
        """Restart Pebble on the same ports: accounts, orders and the issuing root are new."""
        self.stop_pebble()
        self.start()

    def __enter__(self) -> PebbleHarness:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def get(self, path_or_url: str, timeout: float = 5.0) -> bytes:
        """GET from the management port (a path) or any Pebble URL, trusting our CA."""
        url = path_or_url if "://" in path_or_url else self.management_url + path_or_url
        with urllib.request.urlopen(url, timeout=timeout, context=self.ssl_context()) as r:
            body: bytes = r.read()
            return body

    def issuing_chain_pem(self) -> tuple[bytes, bytes]:
        """(root PEM, intermediate PEM) of this Pebble run, to verify issued chains against."""
        return self.get("/roots/0"), self.get("/intermediates/0")

    def state(self) -> dict[str, Any]:
        return {
            "directory_url": self.directory_url,
            "ca_bundle": str(self.ca_bundle),
            "http_port": self.http_port,
            "tls_port": self.tls_port,
            "management_url": self.management_url,
            "dns": self.dns_address,
            "pids": {
                "pebble": self._pebble.pid if self._pebble else None,
                "dns": self._dns.pid if self._dns else None,
            },
            "log": str(self.log_path),
        }

    def _start_dns(self, *, detach: bool) -> None:
        self._dns = subprocess.Popen(
            [sys.executable, str(HERE / "dns.py"), "--port", "0"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=detach,
        )
        assert self._dns.stdout is not None
        line = self._dns.stdout.readline().decode().strip()  # "listening 127.0.0.1:PORT"
        if not line.startswith("listening "):
            raise PebbleError(f"dns.py did not start (said {line!r})")
        self.dns_port = int(line.rsplit(":", 1)[1])

    def _write_config(self, cert: Path, key: Path) -> None:
        conf: dict[str, Any] = {
            "listenAddress": f"127.0.0.1:{self.listen_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": bool(self.eab_keys),
        }
        if self.eab_keys:
            conf["externalAccountMACKeys"] = self.eab_keys
        if self.domain_blocklist:
            conf["domainBlocklist"] = self.domain_blocklist  # -> rejectedIdentifier
        if self.validity_seconds is not None:
            conf["certificateValidityPeriod"] = int(self.validity_seconds)
        self.config_path.write_text(json.dumps({"pebble": conf}, indent=2))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ctx = self.ssl_context()
        delay = 0.02
        while True:
            if self._pebble is None or self._pebble.poll() is not None:
                raise PebbleError(f"pebble exited early; see {self.log_path}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(self.directory_url, timeout=2, context=ctx) as r:
                    if b"newAccount" in r.read():
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise PebbleError(f"pebble not ready after {timeout}s:\n{self._log_tail()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


def _stop_from_state(state_dir: Path) -> int:
    state_file = state_dir / "state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        print(f"no running harness recorded in {state_file}")
        return 1
    for name, pid in state.get("pids", {}).items():
        if not pid:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # already gone
        if (b"pebble" if name == "pebble" else b"dns.py") not in cmdline:
            continue  # the pid was reused by something else
        os.kill(pid, signal.SIGTERM)
        print(f"stopped {name} (pid {pid})")
    state_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pebble + loopback DNS for njet-cert-manager")
    sub = parser.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start")
    stop = sub.add_parser("stop")
    for p in (start, stop):
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    start.add_argument("--validity", type=int, help="certificate lifetime in seconds")
    start.add_argument("--nonce-reject", type=int, help="percent of nonces rejected (default 5)")
    start.add_argument("--http-port", type=int, help="http-01 port Pebble validates on")
    start.add_argument("--tls-port", type=int, help="tls-alpn-01 port Pebble validates on")
    start.add_argument("--eab", action="store_true", help="require EAB (Debian example keys)")
    start.add_argument("--dns-server", metavar="HOST:PORT",
                       help="the DNS server Pebble asks (no dns.py), e.g. a BIND for dns-01")
    args = parser.parse_args(argv)
    if args.cmd == "stop":
        return _stop_from_state(args.state_dir)
    if (args.state_dir / "state.json").exists():
        _stop_from_state(args.state_dir)
    harness = PebbleHarness(
        args.state_dir,
        validity_seconds=args.validity,
        nonce_reject_percent=args.nonce_reject,
        eab_keys=EXAMPLE_EAB_KEYS if args.eab else None,
        http_port=args.http_port,
        tls_port=args.tls_port,
        dns_server=args.dns_server,
    )
    harness.start(detach=True)
    state = harness.state()
    (args.state_dir / "state.json").write_text(json.dumps(state, indent=2))
    print(f"directory: {state['directory_url']}")
    print(f"caBundle:  {state['ca_bundle']}")
    print(f"http-01 port: {state['http_port']}   tls-alpn-01 port: {state['tls_port']}")
    print(f"management: {state['management_url']}   dns: {state['dns']}")
    if args.eab:
        print("EAB: eabKid = kid-1, eabHmacKey = " + EXAMPLE_EAB_KEYS["kid-1"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
