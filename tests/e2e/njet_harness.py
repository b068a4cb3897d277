"""Builders for end-to-end tests against Pebble + the NJet simulator.

`boot_files`, `controller_program` and `wait_until` come from tests/support/ (shared with
bench/) and are re-exported here for the tests that import them from this module.
"""

from __future__ import annotations

from typing import Any

from tests.fixtures.njetsim import s_client
from tests.support.njetsim import boot_files
from tests.support.procs import controller_program, wait_until
from tests.support.tomlgen import acme_section

__all__ = ["boot_files", "controller_program", "controller_toml", "served",
           "served_fingerprint", "sim_conf", "wait_until"]

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


def controller_toml(pebble: Any, sim: Any, **acme: Any) -> dict[str, Any]:
    return {
        "acme": acme_section(pebble, email="e2e@example.test", **acme),
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
