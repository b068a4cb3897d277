"""Helpers for end-to-end tests: lay out an NJet prefix, write the TOML, run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(sections: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, kv in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {toml_value(v)}" for k, v in kv.items())
        out.append("")
    return "\n".join(out)


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
        env = {k: v for k, v in os.environ.items() if not k.startswith("NJCM_")}
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
            env=env,
        )


def store_only_toml(pebble: Any, *, challenge: str = "http", **acme: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "email": "e2e@example.test",
        "challengeType": challenge,
        "acmeCaDir": pebble.directory_url,
        "caBundle": str(pebble.ca_bundle),
        "httpChallengeServerAddress": f"127.0.0.1:{pebble.http_port}",
        "tlsChallengeServerAddress": f"127.0.0.1:{pebble.tls_port}",
        "keyType": "ec256",
    }
    base.update(acme)
    return {"acme": base, "njet": {"apiAddress": ""}, "log": {"v": 1}}
