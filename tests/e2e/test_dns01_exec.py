"""dns-01 end to end through `[dns] provider = "exec"`: the real CLI (store-only) against Pebble
that resolves through a real BIND, with a user's script that does the RFC 2136 update itself.
The script is called with present, then cleanup, gets only PATH and NJCM_DNS_ZONE, and its
record is gone afterwards."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from controller.certinfo import key_matches_cert, read_cert_info
from tests.e2e.harness import Prefix
from tests.fixtures.dns import DnsWorld
from tests.support.bind import ACME_KEY, txt
from tests.support.tomlgen import acme_section

pytestmark = pytest.mark.pebble

SCRIPT = '''#!{python}
"""A user's dns-01 hook: RFC 2136 update of the TXT value, one JSON line per call in the log."""
import base64
import json
import os
import sys

import dns.query
import dns.rcode
import dns.tsig
import dns.update

action, fqdn, value = sys.argv[1:]
# the environment exactly as exec'd: os.environ may have LC_CTYPE added by Python itself
# (PEP 538 locale coercion, as the controller passes no locale)
with open("/proc/self/environ", "rb") as environ:
    env = sorted(e.split(b"=", 1)[0].decode() for e in environ.read().split(b"\\0") if e)
with open({log!r}, "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "env": env,
                         "zone": os.environ["NJCM_DNS_ZONE"]}}) + "\\n")
key = dns.tsig.Key({key_name!r} + ".", base64.b64decode({secret!r}), dns.tsig.HMAC_SHA256)
msg = dns.update.UpdateMessage(os.environ["NJCM_DNS_ZONE"] + ".", keyring=key)
if action == "present":
    msg.add(fqdn, 60, "TXT", '"' + value + '"')
elif action == "cleanup":
    msg.delete(fqdn, "TXT", '"' + value + '"')
else:
    sys.exit("unknown action " + action)
reply = dns.query.tcp(msg, {host!r}, port={port}, timeout=5.0)
if reply.rcode() != dns.rcode.NOERROR:
    sys.exit("update refused: " + dns.rcode.to_text(reply.rcode()))
'''


def write_script(world: DnsWorld, directory: Path, log: Path) -> Path:
    host, port = world.primary.address
    script = directory / "dns-hook.py"
    script.write_text(SCRIPT.format(python=sys.executable, log=str(log), key_name=ACME_KEY,
                                    secret=world.primary.keys[ACME_KEY], host=host, port=port))
    script.chmod(0o700)
    return script


def test_the_exec_provider_runs_a_script_that_presents_and_cleans_up_the_record(
    pebble_dns: Any, bind_dns: DnsWorld, tmp_path: Path,
) -> None:
    name = f"exec-{time.monotonic_ns() % 10**8}.wild.test"
    log = tmp_path / "hook.log"
    script = write_script(bind_dns, tmp_path, log)
    prefix = Prefix(tmp_path / "prefix")
    prefix.write_conf(
        "http {\n    server {\n        listen 127.0.0.1:8443 ssl;\n"
        f"        server_name *.{name};\n"
        "        ssl_certificate     certs/boot.crt;\n"
        "        ssl_certificate_key certs/boot.key;\n"
        "        ssl_certificate_management acme;\n    }\n}\n")
    prefix.write_toml({
        "acme": acme_section(pebble_dns, email="dns@example.test", challenge="dns",
                             keyType="ec256"),
        "njet": {"apiAddress": ""},
        "dns": {
            "provider": "exec",
            "command": [str(script)],
            "timeout": "30s",
            "resolvers": [bind_dns.resolver],
            "propagationTimeout": "20s",
        },
        "log": {"v": 2},
    })

    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr

    crt = (prefix.certs / f"_.{name}.crt").read_bytes()
    assert key_matches_cert((prefix.certs / f"_.{name}.key").read_bytes(), crt)
    assert read_cert_info(crt).names == (f"*.{name}",)

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    fqdn = f"_acme-challenge.{name}."
    assert [c["argv"][:2] for c in calls] == [["present", fqdn], ["cleanup", fqdn]]
    assert calls[0]["argv"][2] == calls[1]["argv"][2] != ""
    for call in calls:
        assert call["env"] == ["NJCM_DNS_ZONE", "PATH"]
        assert call["zone"] == "wild.test"

    assert txt(bind_dns.primary.address, fqdn.rstrip(".")) == set()
    assert not (prefix.root / ".lego" / "dns-cleanups.json").exists()
    assert bind_dns.primary.keys[ACME_KEY] not in run.stderr
