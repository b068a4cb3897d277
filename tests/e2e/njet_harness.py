"""Builders for end-to-end tests against Pebble + the NJet simulator."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fixtures.njetsim import ec_cert, s_client

MANAGED_BLOCK = """
    server {{
        listen 127.0.0.1:{{{{port:https}}}} ssl;
        server_name {names};
        ssl_certificate     certs/boot-a.crt;
        ssl_certificate_key certs/boot-a.key;
        ssl_certificate_management acme;
        location / {{ return 200 "a.test TLS server\\n"; }}
    }}
"""


def sim_conf(
    *,
    names: str = "a.test www.a.test",
    http_port: int | str = "{{port:http}}",
    stream: str = "",
    extra_http: str = "",
    helpers: str = "",
) -> str:
    return (
        "pid logs/njet.pid;\nerror_log logs/error.log info;\n{{helpers}}\n"
        + helpers
        + "events { worker_connections 64; }\nhttp {\n"
        + MANAGED_BLOCK.format(names=names)
        + f"""
    server {{
        listen 127.0.0.1:{http_port};
        server_name {names};
        location / {{ return 200 "a.test plain http\\n"; }}
    }}
{extra_http}}}
{stream}"""
    )


def boot_files() -> dict[str, bytes]:
    crt, key = ec_cert(["a.test", "www.a.test"], "boot-a")
    return {"conf/certs/boot-a.crt": crt, "conf/certs/boot-a.key": key}


def controller_toml(pebble: Any, sim: Any, **acme: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "email": "e2e@example.test",
        "challengeType": "http",
        "acmeCaDir": pebble.directory_url,
        "caBundle": str(pebble.ca_bundle),
        "httpChallengeServerAddress": f"127.0.0.1:{pebble.http_port}",
        "tlsChallengeServerAddress": f"127.0.0.1:{pebble.tls_port}",
    }
    base.update(acme)
    return {
        "acme": base,
        "njet": {"apiAddress": sim.api_url},
        "controller": {"probeTimeout": "3s"},
        "log": {"v": 1},
    }


def served(sim: Any, *extra: str, sni: str = "a.test") -> dict[str, Any]:
    return s_client("127.0.0.1", sim.ports["https"], sni, *extra)


def served_fingerprint(sim: Any, *extra: str, sni: str = "a.test") -> str:
    """sha256 of the leaf served, lowercase hex without colons ('' when the handshake failed)."""
    got = served(sim, *extra, sni=sni)
    return str(got.get("sha256", "")).replace(":", "").lower()


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def controller_program() -> str:
    """The console script NJet would launch (found beside the running interpreter)."""
    beside = Path(sys.executable).parent / "njet-cert-manager"
    if beside.exists():
        return str(beside)
    found = shutil.which("njet-cert-manager")
    if found is None:
        raise RuntimeError("njet-cert-manager is not installed (pip install -e .)")
    return found
