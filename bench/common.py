"""Shared pieces of the benchmarks: Pebble, free ports, statistics, goals, tools, TOML, timing.

Used by every bench module and by bench/__main__.py. Nothing here measures anything by itself.
What the tests use too (loading hack/pebble/run.py, program lookup, waiting, TOML rendering,
the `[acme]` section) comes from tests/support/ and is re-exported here; bench/ is run as
`python -m bench` from the repository root, so `tests` is importable.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import procs
from tests.support.hackmods import PebbleHarness, free_tcp_port, pebble_installed
from tests.support.procs import ROOT, beside_python, clean_env, tail
from tests.support.tomlgen import acme_section as _acme_section
from tests.support.tomlgen import render_toml

__all__ = [  # the shared pieces (tests/support/) bench modules import from here
    "ROOT", "beside_python", "clean_env", "render_toml", "tail",
]

RESULTS_DIR = ROOT / "bench" / "results"


class BenchError(RuntimeError):
    """A bench could not run (a peer tool is missing, a process failed, a wait timed out)."""


# -- Pebble ------------------------------------------------------------------------------------


def start_pebble(state_dir: Path) -> Any:
    """One Pebble for the whole run: no nonce rejections, no authorization reuse, no VA sleep."""
    if not pebble_installed():
        raise BenchError("pebble is not installed (Debian package `pebble`; see hack/setup.sh)")
    harness = PebbleHarness(state_dir, nonce_reject_percent=0, authz_reuse_percent=0)
    harness.start()
    return harness


# -- ports and waiting -------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
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
    if not procs.wait_until(lambda: port_is_free(port), timeout=timeout, step=0.02):
        raise BenchError(f"127.0.0.1:{port} (Pebble's http-01 port) is still in use")


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


def controller_program() -> str:
    try:
        return procs.controller_program()
    except procs.MissingProgram as exc:
        raise BenchError(str(exc)) from None


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


# -- controller configuration ------------------------------------------------------------------


def acme_section(pebble: Any) -> dict[str, Any]:
    return _acme_section(pebble, email="bench@example.test", keyType="ec256")


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
