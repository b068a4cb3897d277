"""Shared pieces of the process-level fault suites: test_kill9, test_ca_faults and
test_njet_faults_suite.

- `start_sim(root, conf, files)`: an NJet simulator in `root` that lives as long as the caller
  wants (module-scoped fixtures; the njetsim_factory fixture is per test).
- `run_cli(prefix, command, fault_point=...)`: the controller as a real process, exactly as a
  user runs it, optionally with NJCM_FAULT_POINT set; `run_cli_async` is the asyncio twin.
- `store_problems(prefix)`: every way the lego store breaks its promise (a .crt without its
  matching key, temp files in certificates/, an unreadable status file).
- `served_leaf(port, sni)`: the DER leaf a TLS server sends (one in-process handshake).
- `public_key_of_cert` / `public_key_of_key`: SubjectPublicKeyInfo bytes, for "the served leaf
  belongs to the stored key".
- `edit_status(prefix, domain, **fields)`: change a status file the way an operator would.
- `managed_blocks(names)` / `block(name, port)`: njet.conf text with one managed TLS server per
  name (`<name>.test www.<name>.test`, EC bootstrap `certs/boot-<name>.*`); `boot_pairs(names)`.
- `pebble_intermediate(pebble)` / `issued_by(cert_der, intermediate)`: "a cert Pebble issued".
- `clocked_app(prefix, now, apps)`: a fresh App (what a new `reconcile` process builds) on an
  injected clock, remembered in `apps` so the caller can close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from controller.app import App
from controller.certinfo import fingerprint_der, fingerprint_pem, key_matches_cert
from controller.config import load_config
from tests.fixtures.njetsim import NjetSim, ec_cert, layout

CONFIG = "conf/cert-manager.toml"

BLOCK = """
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {name}.test www.{name}.test;
        ssl_certificate     certs/boot-{name}.crt;
        ssl_certificate_key certs/boot-{name}.key;
        ssl_certificate_management acme;
        location / {{ return 200 "{name}\\n"; }}
    }}
"""


def block(name: str, port: int | str = "{{port:https}}") -> str:
    return BLOCK.format(name=name, port=port)


def managed_blocks(names: tuple[str, ...]) -> str:
    """A simulator njet.conf (ctrl API + broker helpers) with one managed block per name."""
    return ("pid logs/njet.pid;\nerror_log logs/error.log info;\n{{helpers}}\n"
            "events { worker_connections 64; }\nhttp {\n"
            + "".join(block(n) for n in names) + "}\n")


def boot_pairs(names: tuple[str, ...]) -> tuple[dict[str, bytes | str], dict[str, str]]:
    """(files for the simulator prefix, bootstrap fingerprint per name)."""
    files: dict[str, bytes | str] = {}
    fps: dict[str, str] = {}
    for name in names:
        crt, key = ec_cert([f"{name}.test", f"www.{name}.test"], f"boot-{name}")
        files[f"conf/certs/boot-{name}.crt"] = crt
        files[f"conf/certs/boot-{name}.key"] = key
        fps[name] = fingerprint_pem(crt)
    return files, fps


def pebble_intermediate(pebble: Any) -> x509.Certificate:
    """The intermediate that signs this Pebble run's leaves (new at every Pebble start)."""
    return x509.load_pem_x509_certificate(pebble.issuing_chain_pem()[1])


def issued_by(cert_der: bytes, issuer: x509.Certificate) -> bool:
    try:
        x509.load_der_x509_certificate(cert_der).verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def start_sim(root: Path, conf: str, files: Mapping[str, bytes | str]) -> NjetSim:
    """Lay out a prefix in `root` and start the simulator (short replay/event delays)."""
    prefix, ports = layout(root, conf, files=files)
    return NjetSim(prefix, ports=ports, replay_delay=0.1, event_delay=0.2).start()


def stop_sim(sim: NjetSim) -> None:
    try:
        sim.quit()
    except Exception:
        sim.kill()


def _env(fault_point: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NJCM_")}
    if fault_point:
        env["NJCM_FAULT_POINT"] = fault_point
    return env


def _argv(prefix: Path, command: str) -> list[str]:
    return [sys.executable, "-m", "controller.cli", "-p", str(prefix), "-c", CONFIG, command]


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(prefix: Path, command: str = "reconcile", *, fault_point: str | None = None,
            timeout: float = 60) -> Run:
    res = subprocess.run(_argv(prefix, command), capture_output=True, text=True,
                         timeout=timeout, cwd="/", env=_env(fault_point))
    return Run(res.returncode, res.stdout, res.stderr)


async def run_cli_async(prefix: Path, command: str = "reconcile", *,
                        fault_point: str | None = None, limit: float = 60) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *_argv(prefix, command), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd="/", env=_env(fault_point))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def store_problems(prefix: Path, *, allow_pending_journal: bool = False) -> list[str]:
    """What is wrong with the store of `prefix` right now ([] = sound).

    With `allow_pending_journal`, a name whose swap has a journal record (recovery will finish
    or undo it at the next start) may be torn in certificates/; without, any journal left over
    is itself a problem.
    """
    lego = prefix / ".lego"
    certs = lego / "certificates"
    journal = lego / "journal"
    pending = set()
    if journal.exists():
        for entry in journal.iterdir():
            if (entry / "JOURNAL").exists() and allow_pending_journal:
                pending.add(entry.name)
            elif not allow_pending_journal:
                problems_left = sorted(p.name for p in entry.iterdir()) if entry.is_dir() else []
                return [f"journal entry {entry} left behind: {problems_left}"]
    problems: list[str] = []
    if certs.exists():
        for path in sorted(certs.iterdir()):
            if path.name.startswith(".") or ".tmp" in path.name:
                problems.append(f"temp file left in certificates/: {path.name}")
            if not path.name.endswith(".crt") or path.name.endswith(".issuer.crt"):
                continue
            stem = path.name[:-4]
            if stem in pending:
                continue
            key = certs / f"{stem}.key"
            if not key.exists():
                problems.append(f"{path.name} has no key file")
            elif not key_matches_cert(key.read_bytes(), path.read_bytes()):
                problems.append(f"{path.name} does not match {key.name}")
            elif key.stat().st_mode & 0o077:
                problems.append(f"{key.name} is readable by others")
    status = lego / "status"
    if status.exists():
        for path in sorted(status.iterdir()):
            if path.name.startswith("."):
                problems.append(f"temp file left in status/: {path.name}")
                continue
            try:
                json.loads(path.read_bytes())
            except ValueError as exc:
                problems.append(f"status file {path.name} is not valid JSON: {exc}")
    return problems


def served_leaf(port: int, sni: str, *, host: str = "127.0.0.1",
                timeout: float = 5.0) -> bytes | None:
    """The DER leaf served for `sni` (None when the handshake fails). Chain not verified."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=sni) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def served_fp(port: int, sni: str) -> str | None:
    der = served_leaf(port, sni)
    return fingerprint_der(der) if der else None


def public_key_of_cert(cert: bytes) -> bytes:
    """SPKI of a PEM or DER certificate."""
    if cert.lstrip().startswith(b"-----"):
        loaded = x509.load_pem_x509_certificate(cert)
    else:
        loaded = x509.load_der_x509_certificate(cert)
    return loaded.public_key().public_bytes(*_SPKI)


def public_key_of_key(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.public_key().public_bytes(*_SPKI)


def status_of(prefix: Path, domain: str) -> dict[str, Any] | None:
    path = prefix / ".lego" / "status" / f"{domain.replace('*', '_')}.json"
    try:
        return dict(json.loads(path.read_bytes()))
    except FileNotFoundError:
        return None


def edit_status(prefix: Path, domain: str, **fields: Any) -> None:
    """Set fields of a status file (atomic replace), e.g. force_renew=True, backoff_until=None."""
    path = prefix / ".lego" / "status" / f"{domain.replace('*', '_')}.json"
    doc = json.loads(path.read_bytes())
    doc.update(fields)
    tmp = path.with_name(f".{path.name}.edit")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def leaked_private_key(text: str) -> bool:
    """Key material in output, or a log line the controller's own filter had to suppress."""
    return ("PRIVATE KEY" in text or "certificateKey" in text
            or "suppressed: it contained private key" in text)


def clocked_app(prefix: Path, now: Callable[[], datetime], apps: list[App]) -> App:
    """A fresh App on the prefix's config with `now` as its clock, appended to `apps`."""
    app = App(load_config(prefix / CONFIG, prefix=prefix))
    app.reconciler.clock = now
    apps.append(app)
    return app
