"""The peer ACME clients of bench 3, run the way their users script them: one process per cert.

lego (Debian's /usr/bin/lego) and certbot (PyPI, the venv's `bench` extra), both against the
bench's Pebble, ec256 / ECDSA P-256 keys, http-01 on Pebble's http-01 port with their own
built-in server. `run_peer(tool, ...)` times one process per name and fails loudly (BenchError
with the tool's output) when a run does not produce a certificate. Called by
bench/throughput.py.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchError,
    certbot_program,
    check_peer,
    clean_env,
    lego_program,
    wait_port_free,
)

PEERS = ("lego", "certbot")


def peer_versions() -> dict[str, str]:
    """`--version` of every peer; BenchError (naming the tool) if one cannot run."""
    return {
        "lego": check_peer([lego_program(), "--version"]),
        "certbot": check_peer([certbot_program(), "--version"]),
    }


def lego_cmd(pebble: Any, state: Path, name: str) -> tuple[list[str], dict[str, str]]:
    cmd = [lego_program(), "--server", pebble.directory_url, "--email", "x@example.test",
           "--accept-tos", "--key-type", "ec256", "--domains", name, "--http",
           "--http.port", f"127.0.0.1:{pebble.http_port}", "--path", str(state), "run"]
    return cmd, clean_env(LEGO_CA_CERTIFICATES=str(pebble.ca_bundle))


def lego_result(state: Path, name: str) -> Path:
    return state / "certificates" / f"{name}.crt"


def certbot_cmd(pebble: Any, state: Path, name: str) -> tuple[list[str], dict[str, str]]:
    cmd = [certbot_program(), "certonly", "--standalone",
           "--http-01-port", str(pebble.http_port), "--http-01-address", "127.0.0.1",
           "--server", pebble.directory_url, "-d", name, "--agree-tos",
           "-m", "x@example.test", "--no-eff-email", "--non-interactive",
           "--key-type", "ecdsa", "--elliptic-curve", "secp256r1",
           "--config-dir", str(state / "config"), "--work-dir", str(state / "work"),
           "--logs-dir", str(state / "logs")]
    return cmd, clean_env(REQUESTS_CA_BUNDLE=str(pebble.ca_bundle))


def certbot_result(state: Path, name: str) -> Path:
    return state / "config" / "live" / name / "fullchain.pem"


def run_peer(tool: str, pebble: Any, state: Path, names: list[str]) -> list[float]:
    """One `tool` process per name, sequentially, all sharing `state`; seconds per process."""
    build, result = {"lego": (lego_cmd, lego_result),
                     "certbot": (certbot_cmd, certbot_result)}[tool]
    times: list[float] = []
    for name in names:
        wait_port_free(pebble.http_port)
        cmd, env = build(pebble, state, name)
        started = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                             cwd=state.parent)
        took = time.perf_counter() - started
        if res.returncode != 0 or not result(state, name).exists():
            out = (res.stdout + res.stderr)[-2000:]
            raise BenchError(f"peer {tool} failed to issue {name} (exit {res.returncode}):\n{out}")
        times.append(took)
    return times
