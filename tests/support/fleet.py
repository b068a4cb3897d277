"""A fleet on one machine: N NJet simulators, each with its own controller (`run`, fleet mode over
one real PostgreSQL database), and a real haproxy in front of Pebble's validation ports.

Used by tests/e2e/test_fleet.py, tests/faults/test_fleet_faults.py and bench/fleet.py.

    rig = FleetRig(workdir, pebble, dsn, names=[...], nodes=3)
    rig.start()                 # sims, haproxy (round robin over every node's own http-01
                                # and tls-alpn-01 servers), then the controllers
    rig.wait_all_served(names)  # every node's NJet serves the certificate stored in the db
    rig.orders_issued()         # certificates Pebble issued (its own log: an independent count)
    rig.stop()

Each node's prefix, njet.conf (one managed TLS block per name on the node's https port) and
cert-manager.toml are its own; the controllers share the database and the encryption key.
`nodes[i].kill()` / `.pause()` / `.resume()` / `.restart()` act on the controller process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.support.hackmods import free_tcp_port
from tests.support.haproxy import Haproxy
from tests.support.njetsim import NjetSim, boot_files, layout
from tests.support.procs import clean_env, controller_program, stop_process, tail, wait_until
from tests.support.tomlgen import acme_section, render_toml

_ISSUED = re.compile(r"Issued certificate serial ([0-9a-f]+)", re.I)


def fleet_conf(names: Sequence[str]) -> str:
    blocks = "".join(
        "    server {\n        listen 127.0.0.1:{{port:https}} ssl;\n"
        f"        server_name {n};\n"
        "        ssl_certificate     certs/boot-a.crt;\n"
        "        ssl_certificate_key certs/boot-a.key;\n"
        "        ssl_certificate_management acme;\n    }\n"
        for n in names)
    return ("pid logs/njet.pid;\nerror_log logs/error.log info;\n{{helpers}}\n"
            "events { worker_connections 256; }\nhttp {\n" + blocks + "}\n")


def served_fingerprint(port: int, sni: str, *, timeout: float = 2.0) -> str | None:
    import hashlib
    import socket
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return hashlib.sha256(der).hexdigest() if der else None


@dataclass
class FleetNode:
    index: int
    root: Path
    names: list[str]
    toml: dict[str, Any]
    sim: NjetSim
    admin_port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. NJCM_FAULT_POINT for this node

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def https_port(self) -> int:
        return int(self.sim.ports["https"])

    @property
    def log(self) -> Path:
        return self.root / "logs" / "controller.log"

    def write_conf(self, names: Sequence[str]) -> None:
        self.names = list(names)
        text = fleet_conf(self.names)
        from tests.support.njetsim import render

        (self.root / "conf" / "njet.conf").write_text(render(text, self.root, self.sim.ports))

    def write_toml(self) -> None:
        (self.root / "conf" / "cert-manager.toml").write_text(render_toml(self.toml))

    def start(self) -> None:
        self.write_toml()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [controller_program(), "-p", str(self.root), "-c", "conf/cert-manager.toml",
                 "run"], stdout=out, stderr=subprocess.STDOUT, env=clean_env(**self.env),
                cwd="/")

    def wait_up(self, timeout: float = 30) -> None:
        if not wait_until(lambda: self.health() is not None or self.exited(), timeout):
            raise AssertionError(f"{self.name}: no /healthz after {timeout}s\n{tail(self.log)}")
        if self.exited():
            raise AssertionError(f"{self.name} exited\n{tail(self.log)}")

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def health(self) -> dict[str, Any] | None:
        """/healthz's document, also when it answers 503 (degraded); None: no answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/healthz",
                                        timeout=2) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as err:
            try:
                return dict(json.loads(err.read()))
            except ValueError:
                return None
        except (OSError, ValueError):
            return None

    def served(self, name: str) -> str | None:
        return served_fingerprint(self.https_port, name)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class FleetRig:
    workdir: Path
    pebble: Any
    dsn: str
    names: list[str]
    nodes_count: int = 3
    lease: str = "6s"
    node_timeout: str = "20s"
    extra_env: dict[str, str] = field(default_factory=dict)
    nodes: list[FleetNode] = field(default_factory=list)
    haproxy: Haproxy | None = None
    key_file: Path | None = None

    def start(self, *, controllers: bool = True) -> FleetRig:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key_file = self.workdir / "fleet.key"
        self.key_file.write_bytes(os.urandom(32))
        self.key_file.chmod(0o600)
        files = boot_files()
        http_backends, tls_backends = [], []
        for i in range(self.nodes_count):
            root, ports = layout(self.workdir / f"node-{i}", fleet_conf(self.names), files=files)
            sim = NjetSim(root, ports=ports)
            sim.start()
            own_http, own_tls, admin = free_tcp_port(), free_tcp_port(), free_tcp_port()
            http_backends.append(("127.0.0.1", own_http))
            tls_backends.append(("127.0.0.1", own_tls))
            acme = acme_section(self.pebble, email="fleet@example.test", keyType="ec256",
                                httpChallengeServerAddress=f"127.0.0.1:{own_http}",
                                tlsChallengeServerAddress=f"127.0.0.1:{own_tls}")
            toml = {
                "acme": acme,
                "njet": {"apiAddress": sim.api_url},
                "controller": {"interval": "1h", "probeTimeout": "3s", "concurrency": 8},
                "admin": {"address": f"127.0.0.1:{admin}"},
                "log": {"v": 1},
                "store": {"backend": "postgres", "dsn": self.dsn, "nodeName": f"node-{i}",
                          "encryptionKeyFile": str(self.key_file),
                          "leaseDuration": self.lease, "nodeTimeout": self.node_timeout},
            }
            self.nodes.append(FleetNode(i, root, list(self.names), toml, sim, admin))
        (self.workdir / "haproxy").mkdir(exist_ok=True)
        self.haproxy = Haproxy(self.workdir / "haproxy", {
            "http01": (self.pebble.http_port, http_backends),
            "tlsalpn01": (self.pebble.tls_port, tls_backends),
        }, health_checks=False)
        self.haproxy.start()
        if controllers:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_up()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib_suppress():
                    node.resume()
            node.stop()
        for node in self.nodes:
            try:
                node.sim.quit()
            except Exception:
                node.sim.kill()
        if self.haproxy is not None:
            self.haproxy.stop()

    # -- observation ---------------------------------------------------------------------------

    def db_fingerprints(self) -> dict[str, str]:
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute("SELECT key, fingerprint FROM certs").fetchall()
        return {str(k): str(f) for k, f in rows}

    def all_served(self, names: Sequence[str] | None = None) -> bool:
        want = self.db_fingerprints()
        names = list(self.names if names is None else names)
        return all(name in want for name in names) and all(
            node.served(name) == want[name] for node in self.nodes for name in names
            if name in node.names)

    def wait_all_served(self, names: Sequence[str] | None = None, timeout: float = 120) -> float:
        started = time.monotonic()
        if not wait_until(lambda: self.all_served(names), timeout, step=0.1):
            raise AssertionError(self.explain(names))
        return time.monotonic() - started

    def explain(self, names: Sequence[str] | None = None) -> str:
        want = self.db_fingerprints()
        lines = [f"db holds {len(want)} certificates"]
        for node in self.nodes:
            bad = [n for n in (names or node.names) if node.served(n) != want.get(n)]
            lines.append(f"{node.name}: {len(bad)} not served: {bad[:5]}\n"
                         + tail(node.log, 3000))
        return "\n".join(lines)

    def orders_issued(self) -> int:
        """Certificates Pebble issued so far, from Pebble's own log."""
        text = Path(self.pebble.log_path).read_text(errors="replace")
        return len(set(_ISSUED.findall(text)))

    def mismatched_pairs(self) -> list[str]:
        """Every node's mirror: any .crt whose .key does not match (must stay empty)."""
        from controller.certinfo import key_matches_cert

        bad = []
        for node in self.nodes:
            certs = node.root / ".lego" / "certificates"
            for crt in certs.glob("*.crt") if certs.is_dir() else ():
                if crt.name.endswith(".issuer.crt"):
                    continue
                key = crt.with_suffix(".key")
                if not key.exists() or not key_matches_cert(key.read_bytes(), crt.read_bytes()):
                    bad.append(f"{node.name}:{crt.name}")
        return bad


def contextlib_suppress() -> Any:
    import contextlib

    return contextlib.suppress(OSError, ProcessLookupError)
