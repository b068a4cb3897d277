"""Store-only mode over real files and a real Pebble (issue 13 items 2, 15 and 16): a truncated
.crt and a .key of another pair are quarantined and reissued with one order each; a first
server_name over 64 characters is issued once (with another CN) and then stays in sync; a pair
whose notBefore is ahead is not in sync but waits for it."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.certinfo import key_matches_cert, read_cert_info
from tests.certbuilder import LocalCA, make_cert
from tests.e2e.harness import TWO_BLOCKS, Prefix, store_only_toml

pytestmark = pytest.mark.pebble

LONG = "a" * 60 + ".long.test"  # 70 characters: more than a CN may hold


@pytest.fixture
def prefix(tmp_path: Path) -> Prefix:
    return Prefix(tmp_path / "njet")


def issued_count(run: subprocess.CompletedProcess[str]) -> int:
    return (run.stdout + run.stderr).count("certificate issued")


def usable(prefix: Prefix, name: str) -> Any:
    crt = (prefix.certs / f"{name}.crt").read_bytes()
    key = (prefix.certs / f"{name}.key").read_bytes()
    assert key_matches_cert(key, crt)
    return read_cert_info(crt)


def test_a_truncated_crt_and_a_foreign_key_are_quarantined_and_reissued_with_one_order_each(
    prefix: Prefix, pebble: Any
) -> None:
    prefix.write_conf(TWO_BLOCKS)
    prefix.write_toml(store_only_toml(pebble))
    assert prefix.cli("reconcile").returncode == 0
    old_a, old_b = usable(prefix, "a.test"), usable(prefix, "b.test")
    crt = prefix.certs / "a.test.crt"
    truncated = crt.read_bytes()[:200]
    crt.write_bytes(truncated)
    foreign_key = make_cert(["b.test"]).key_pem
    (prefix.certs / "b.test.key").write_bytes(foreign_key)

    diff = prefix.cli("diff")
    assert diff.returncode == 2
    assert sum("[StoredUnusable]" in ln for ln in diff.stdout.splitlines()) == 2
    listed = prefix.cli("certs", "list")
    rows = [ln.split() for ln in listed.stdout.splitlines()]
    assert [r[:3] for r in rows[1:3]] == [["a.test", "-", "UNUSABLE"], ["b.test", "-", "UNUSABLE"]]
    assert "problem: b.test: key" in listed.stdout and "does not match" in listed.stdout

    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    assert issued_count(run) == 2, run.stderr  # one order each, no loop, no backoff
    new_a, new_b = usable(prefix, "a.test"), usable(prefix, "b.test")
    assert new_a.fingerprint != old_a.fingerprint and new_b.fingerprint != old_b.fingerprint
    kept = [p.read_bytes() for p in (prefix.root / ".lego" / "quarantine").rglob("*")
            if p.is_file()]
    assert truncated in kept and foreign_key in kept  # set aside, not deleted

    after = prefix.cli("diff")
    assert after.returncode == 0 and "in sync" in after.stdout, after.stdout
    again = prefix.cli("reconcile")
    assert again.returncode == 0 and issued_count(again) == 0
    assert "UNUSABLE" not in prefix.cli("certs", "list").stdout


def test_a_first_name_too_long_for_a_cn_is_issued_once_and_then_in_sync(
    prefix: Prefix, pebble: Any
) -> None:
    prefix.write_conf(TWO_BLOCKS.replace("a.test www.a.test", f"{LONG} www.a.test"))
    prefix.write_toml(store_only_toml(pebble))
    diff = prefix.cli("diff")
    (line,) = [ln for ln in diff.stdout.splitlines() if LONG in ln]
    assert line.startswith("+ issue") and " cn=www.a.test " in line

    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    assert issued_count(run) == 2  # the long one and b.test, once each
    info = usable(prefix, LONG)
    assert set(info.names) == {LONG, "www.a.test"}
    assert info.common_name in (None, "www.a.test", LONG)

    after = prefix.cli("diff")
    assert after.returncode == 0 and "in sync" in after.stdout, after.stdout
    again = prefix.cli("reconcile")
    assert again.returncode == 0 and issued_count(again) == 0


def test_a_pair_not_valid_yet_waits_for_its_not_before(prefix: Prefix, pebble: Any) -> None:
    prefix.write_conf(TWO_BLOCKS.replace("a.test www.a.test", "a.test"))
    prefix.write_toml(store_only_toml(pebble))
    starts = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    ca = LocalCA.create("hand-made ca")
    for name, nb in (("a.test", starts), ("b.test", starts - timedelta(days=2))):
        made = make_cert([name], issuer=ca, not_before=nb)
        prefix.certs.mkdir(parents=True, exist_ok=True)
        (prefix.certs / f"{name}.crt").write_bytes(made.fullchain_pem)
        (prefix.certs / f"{name}.key").write_bytes(made.key_pem)
        (prefix.certs / f"{name}.key").chmod(0o600)

    diff = prefix.cli("diff")
    assert diff.returncode == 2, diff.stdout
    assert diff.stdout.splitlines() == [
        f"! wait   a.test  [NotYetValid] not valid yet (clients would reject it) until "
        f"{starts.isoformat()}"]
