"""Shared pieces of the benchmarks: Pebble, free ports, statistics, goals, tools, TOML, timing.

Used by every bench module and by bench/__main__.py. Nothing here measures anything by itself.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEBBLE_RUN = ROOT / "hack" / "pebble" / "run.py"
RESULTS_DIR = ROOT / "bench" / "results"


class BenchError(RuntimeError):
    """A bench could not run (a peer tool is missing, a process failed, a wait timed out)."""


# -- Pebble ------------------------------------------------------------------------------------


def pebble_module() -> ModuleType:
    """hack/pebble/run.py imported by path (hack/ is not a package)."""
    name = "_njet_pebble_run"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PEBBLE_RUN)
    if spec is None or spec.loader is None:
        raise BenchError(f"cannot import {PEBBLE_RUN}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def start_pebble(state_dir: Path) -> Any:
    """One Pebble for the whole run: no nonce rejections, no authorization reuse, no VA sleep."""
    if not (shutil.which("pebble") or Path("/usr/bin/pebble").exists()):
        raise BenchError("pebble is not installed (Debian package `pebble`; see hack/setup.sh)")
    harness = pebble_module().PebbleHarness(
        state_dir, nonce_reject_percent=0, authz_reuse_percent=0
    )
    harness.start()
    return harness


# -- ports and waiting -------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    from tests.fixtures.pebble import free_tcp_port

    return free_tcp_port(host)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_port_free(port: int, timeout: float = 10.0) -> None:
    """Peers bind the Pebble http-01 port themselves: it must not be held by anyone else."""
    if not wait_for(lambda: port_is_free(port), timeout=timeout, step=0.02):
        raise BenchError(f"127.0.0.1:{port} (Pebble's http-01 port) is still in use")


def wait_for(pred: Callable[[], bool], *, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


# -- statistics and goals ----------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """median/min/max/mean of timings in seconds (rounded to 0.1 ms), and n."""
    if not values:
        raise BenchError("no measurements to summarise")
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "mean": round(statistics.fmean(values), 4),
        "n": len(values),
        "runs": [round(v, 4) for v in values],
    }


@dataclass(frozen=True)
class Goal:
    figure: str
    op: str  # "<=", "<", ">="
    target: float
    value: float
    unit: str = ""

    @property
    def met(self) -> bool:
        if self.op == "<=":
            return self.value <= self.target
        if self.op == "<":
            return self.value < self.target
        return self.value >= self.target

    def as_dict(self) -> dict[str, Any]:
        return {"figure": self.figure, "op": self.op, "target": self.target,
                "value": round(self.value, 4), "unit": self.unit, "met": self.met}


def ratio(a: float, b: float) -> float:
    if b <= 0:
        raise BenchError(f"cannot form a ratio with a non-positive denominator ({b})")
    return round(a / b, 3)


# -- tools -------------------------------------------------------------------------------------


def beside_python(name: str) -> Path | None:
    """A console script installed with the running interpreter, else the repo's .venv one."""
    for candidate in (Path(sys.executable).parent / name, ROOT / ".venv" / "bin" / name):
        if candidate.exists() and os.access(candidate, os.X_OK):
            return candidate
    return None


def controller_program() -> str:
    found = beside_python("njet-cert-manager") or shutil.which("njet-cert-manager")
    if found is None:
        raise BenchError("njet-cert-manager is not installed (pip install -e .)")
    return str(found)


def lego_program() -> str:
    found = Path("/usr/bin/lego") if Path("/usr/bin/lego").exists() else shutil.which("lego")
    if found is None:
        raise BenchError("peer tool lego is missing: install Debian's `lego` (hack/setup.sh)")
    return str(found)


def certbot_program() -> str:
    found = beside_python("certbot")
    if found is None:
        raise BenchError(
            "peer tool certbot is missing: install the `bench` extra into the venv "
            "(.venv/bin/python -m pip install -e '.[bench]', done by hack/setup.sh)"
        )
    return str(found)


def check_peer(cmd: list[str]) -> str:
    """Run `<peer> --version`; its first line, or a BenchError saying why it cannot run."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"peer tool {cmd[0]} cannot run: {exc}") from None
    out = (res.stdout + res.stderr).strip()
    if res.returncode != 0:
        raise BenchError(f"peer tool {cmd[0]} cannot run (exit {res.returncode}): {out[-500:]}")
    return out.splitlines()[-1] if out else ""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NJCM_")}
    env.update(extra)
    return env


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# -- controller configuration ------------------------------------------------------------------


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(sections: dict[str, dict[str, Any]]) -> str:
    out: list[str] = []
    for name, kv in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {toml_value(v)}" for k, v in kv.items())
        out.append("")
    return "\n".join(out)


def acme_section(pebble: Any) -> dict[str, Any]:
    return {
        "email": "bench@example.test",
        "challengeType": "http",
        "acmeCaDir": pebble.directory_url,
        "caBundle": str(pebble.ca_bundle),
        "httpChallengeServerAddress": f"127.0.0.1:{pebble.http_port}",
        "tlsChallengeServerAddress": f"127.0.0.1:{pebble.tls_port}",
        "keyType": "ec256",
    }


def store_only_toml(pebble: Any, *, concurrency: int = 16) -> dict[str, dict[str, Any]]:
    return {
        "acme": acme_section(pebble),
        "njet": {"apiAddress": ""},
        "controller": {"concurrency": concurrency},
        "admin": {"address": f"127.0.0.1:{free_port()}"},
        "log": {"v": 0},
    }


def write_prefix(root: Path, *, conf: str, toml: dict[str, dict[str, Any]]) -> Path:
    """A minimal NJet prefix for the controller: conf/njet.conf and conf/cert-manager.toml."""
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    (root / "conf" / "njet.conf").write_text(conf)
    (root / "conf" / "cert-manager.toml").write_text(render_toml(toml))
    return root


def managed_blocks(names: Sequence[str], *, listen: str = "127.0.0.1:8443") -> str:
    """An njet.conf `http {}` with one managed TLS server block per name."""
    blocks = "".join(
        f"    server {{\n        listen {listen} ssl;\n        server_name {n};\n"
        "        ssl_certificate_management acme;\n    }\n"
        for n in names
    )
    return "http {\n" + blocks + "}\n"


def controller_cli(prefix: Path, *args: str, timeout: float = 600) -> tuple[float, int, str]:
    """Run `njet-cert-manager -p PREFIX -c conf/cert-manager.toml ARGS`: (seconds, rc, output)."""
    cmd = [controller_program(), "-p", str(prefix), "-c", "conf/cert-manager.toml", *args]
    started = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/",
                         env=clean_env())
    took = time.perf_counter() - started
    return took, res.returncode, (res.stdout + res.stderr)
