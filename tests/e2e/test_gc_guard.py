"""Issue 13 item 1 end to end, store-only with a real Pebble: `include conf.d/*.conf;` whose
folder vanishes must not delete every certificate.

Three certificates are issued from conf.d/, then conf.d disappears (an unmounted volume). The
grace period passes (it is made "0s" once the names are orphaned), and nothing is deleted:
`diff` shows a DeletionGuard wait line and exits 2. `gc confirm` releases it once, the next
`reconcile` moves the pairs to quarantine/, `certs quarantine list` shows them and
`certs quarantine restore` brings one back byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Prefix, store_only_toml

pytestmark = pytest.mark.pebble

NAMES = ("a.test", "b.test", "c.test")
CONF = "http {\n    include conf.d/*.conf;\n}\n"
SLOTS = (".crt", ".key", ".issuer.crt", ".json")


def block(name: str, port: int) -> str:
    return (f"server {{\n    listen 127.0.0.1:{port} ssl;\n    server_name {name};\n"
            "    ssl_certificate_management acme;\n}\n")


def pairs(prefix: Prefix) -> list[str]:
    if not prefix.certs.exists():
        return []
    return sorted(p.name for p in prefix.certs.iterdir() if p.suffix in (".crt", ".key")
                  and not p.name.endswith(".issuer.crt"))


def test_a_vanished_include_folder_deletes_nothing_until_confirmed_then_quarantines(
    tmp_path: Path, pebble: Any
) -> None:
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(CONF)
    confd = prefix.conf.parent / "conf.d"
    confd.mkdir()
    for i, name in enumerate(NAMES):
        (confd / f"{name}.conf").write_text(block(name, 8443 + i))
    toml = store_only_toml(pebble)
    prefix.write_toml(toml)
    first = prefix.cli("reconcile")
    assert first.returncode == 0, first.stderr + first.stdout
    issued = {name: {s: (prefix.certs / f"{name}{s}").read_bytes() for s in SLOTS}
              for name in NAMES}

    shutil.rmtree(confd)  # the volume is gone; the include now matches nothing
    grace = prefix.cli("reconcile")  # the default 24 h grace period starts
    assert grace.returncode == 0, grace.stderr
    during = prefix.cli("diff")
    assert "[OrphanGrace]" in during.stdout
    assert "3 of 3 stored certificates are no longer desired" in during.stdout

    toml["controller"] = {"deleteGracePeriod": "0s"}  # ... and is over
    prefix.write_toml(toml)
    held = prefix.cli("reconcile")
    assert held.returncode == 1, held.stdout  # not converged: the guard holds
    assert "[DeletionGuard]" in held.stderr
    assert pairs(prefix) == sorted(f"{n}{s}" for n in NAMES for s in (".crt", ".key"))
    diff = prefix.cli("diff")
    assert diff.returncode == 2, diff.stdout + diff.stderr
    waits = [ln for ln in diff.stdout.splitlines() if ln.startswith("! wait")]
    assert len(waits) == 3 and all("[DeletionGuard]" in ln for ln in waits)
    assert "would delete 3 of 3 stored certificates" in waits[0]
    assert "njet-cert-manager gc confirm" in waits[0]
    assert "in sync" not in diff.stdout
    again = prefix.cli("reconcile")  # a pass later still deletes nothing
    assert again.returncode == 1 and len(pairs(prefix)) == 6

    confirm = prefix.cli("gc", "confirm")
    assert confirm.returncode == 0, confirm.stderr
    assert "released 3 deletions" in confirm.stdout and "a.test" in confirm.stdout
    gone = prefix.cli("reconcile")
    assert gone.returncode == 0, gone.stderr + gone.stdout
    assert pairs(prefix) == []
    assert not (prefix.root / ".lego" / "gc-confirm.json").exists()

    listed = prefix.cli("certs", "quarantine", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["quarantine"]
    assert sorted(e["domain"] for e in entries) == list(NAMES)
    table = prefix.cli("certs", "quarantine", "list")
    assert all(name in table.stdout for name in NAMES)

    restore = prefix.cli("certs", "quarantine", "restore", "b.test")
    assert restore.returncode == 0, restore.stderr
    for suffix, data in issued["b.test"].items():
        assert (prefix.certs / f"b.test{suffix}").read_bytes() == data, suffix
    assert (prefix.certs / "b.test.key").stat().st_mode & 0o777 == 0o600
    twice = prefix.cli("certs", "quarantine", "restore", "b.test")
    assert twice.returncode == 1 and "nothing is quarantined under 'b.test'" in twice.stderr
    left = json.loads(prefix.cli("certs", "quarantine", "list", "-o", "json").stdout)
    assert sorted(e["domain"] for e in left["quarantine"]) == ["a.test", "c.test"]
    # the restored pair has no status: nobody manages it, nothing deletes it again
    after = prefix.cli("reconcile")
    assert after.returncode == 0 and pairs(prefix) == ["b.test.crt", "b.test.key"]
