"""The controller's TOML config from dicts, for the tests and bench/.

`render_toml({"acme": {...}, "njet": {...}})` writes one `[section]` per key (flat values
only: bool, int, float, str, and lists of them); `acme_section(pebble, email=...)` is the
`[acme]` table that points the controller at a PebbleHarness (http-01/tls-alpn-01 solvers on
Pebble's VA ports).
Used by tests/e2e/, tests/faults/ and bench/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    out: list[str] = []
    for name, kv in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {toml_value(v)}" for k, v in kv.items())
        out.append("")
    return "\n".join(out)


def acme_section(pebble: Any, *, email: str, challenge: str = "http",
                 **extra: Any) -> dict[str, Any]:
    """`[acme]` for `pebble`; `extra` adds or overrides keys (e.g. keyType="ec256")."""
    section: dict[str, Any] = {
        "email": email,
        "challengeType": challenge,
        "acmeCaDir": pebble.directory_url,
        "caBundle": str(pebble.ca_bundle),
        "httpChallengeServerAddress": f"127.0.0.1:{pebble.http_port}",
        "tlsChallengeServerAddress": f"127.0.0.1:{pebble.tls_port}",
    }
    section.update(extra)
    return section
