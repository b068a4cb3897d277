"""Helpers for end-to-end tests: lay out an NJet prefix, write the TOML, run the real CLI.

The TOML rendering and the Pebble `[acme]` section come from tests/support/tomlgen.py (shared
with bench/); `render_toml` is re-exported here for the tests that import it from this module.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.procs import clean_env
from tests.support.tomlgen import acme_section, render_toml

__all__ = ["TWO_BLOCKS", "Prefix", "render_toml", "store_only_toml"]

ROOT = Path(__file__).resolve().parents[2]

TWO_BLOCKS = """
http {
    server {
        listen 127.0.0.1:8443 ssl;
        server_name a.test www.a.test;
        ssl_certificate_management acme;
    }
    server {
        listen 8444 ssl;
        server_name b.test;
        ssl_certificate_management acme;
    }
}
"""


@dataclass
class Prefix:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "conf" / "njet.conf"

    @property
    def toml(self) -> Path:
        return self.root / "conf" / "cert-manager.toml"

    @property
    def certs(self) -> Path:
        return self.root / ".lego" / "certificates"

    def write_conf(self, text: str) -> None:
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(text)

    def write_toml(self, sections: dict[str, dict[str, Any]]) -> None:
        self.toml.parent.mkdir(parents=True, exist_ok=True)
        self.toml.write_text(render_toml(sections))

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "controller.cli",
                "-p",
                str(self.root),
                "-c",
                "conf/cert-manager.toml",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            env=clean_env(),
        )


def store_only_toml(pebble: Any, *, challenge: str = "http", **acme: Any) -> dict[str, Any]:
    base = acme_section(pebble, email="e2e@example.test", challenge=challenge,
                        **{"keyType": "ec256", **acme})
    return {"acme": base, "njet": {"apiAddress": ""}, "log": {"v": 1}}
