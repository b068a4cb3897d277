"""Step 1 end to end: njet.conf → diff → reconcile → certificates from a real Pebble, store-only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.certinfo import key_matches_cert, read_cert_info
from controller.config import load_config
from tests.e2e.harness import TWO_BLOCKS, Prefix, store_only_toml

pytestmark = pytest.mark.pebble


@pytest.fixture
def prefix(tmp_path: Path) -> Prefix:
    return Prefix(tmp_path / "njet")


def stored_info(prefix: Prefix, name: str) -> Any:
    crt = (prefix.certs / f"{name}.crt").read_bytes()
    key = (prefix.certs / f"{name}.key").read_bytes()
    assert key_matches_cert(key, crt)
    assert (prefix.certs / f"{name}.key").stat().st_mode & 0o777 == 0o600
    return read_cert_info(crt)


@pytest.mark.parametrize("challenge", ["http", "tls"])
def test_issues_both_blocks_then_a_second_run_does_nothing(
    prefix: Prefix, pebble: Any, challenge: str
) -> None:
    prefix.write_conf(TWO_BLOCKS)
    prefix.write_toml(store_only_toml(pebble, challenge=challenge))

    before = prefix.cli("diff")
    assert before.returncode == 2, before.stderr
    issue_lines = [ln for ln in before.stdout.splitlines() if ln.startswith("+ issue")]
    assert len(issue_lines) == 2
    assert any("a.test www.a.test" in ln and "[Missing]" in ln for ln in issue_lines)

    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr + run.stdout
    a = stored_info(prefix, "a.test")
    assert a.common_name == "a.test" and set(a.names) == {"a.test", "www.a.test"}
    assert "Pebble" in a.issuer
    assert set(stored_info(prefix, "b.test").names) == {"b.test"}
    resource = json.loads((prefix.certs / "a.test.json").read_text())
    assert resource["domain"] == "a.test" and resource["certUrl"].startswith("https://")

    after = prefix.cli("diff")
    assert after.returncode == 0, after.stdout
    assert "in sync" in after.stdout

    again = prefix.cli("reconcile")
    assert again.returncode == 0
    assert stored_info(prefix, "a.test").fingerprint == a.fingerprint


def test_diff_json_names_every_name_and_reason(prefix: Prefix, pebble: Any) -> None:
    prefix.write_conf(TWO_BLOCKS)
    prefix.write_toml(store_only_toml(pebble))
    out = prefix.cli("diff", "-o", "json")
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    by_domain = {a["domain"]: a for a in doc["actions"]}
    assert by_domain["a.test"]["kind"] == "issue"
    assert by_domain["a.test"]["names"] == ["a.test", "www.a.test"]
    assert by_domain["a.test"]["reason"] == "Missing"
    assert not (prefix.root / ".lego" / "accounts").exists(), "diff must never register"


def test_a_server_name_change_leads_to_a_new_san(prefix: Prefix, pebble: Any) -> None:
    prefix.write_conf(TWO_BLOCKS)
    prefix.write_toml(store_only_toml(pebble))
    assert prefix.cli("reconcile").returncode == 0
    prefix.write_conf(TWO_BLOCKS.replace("a.test www.a.test", "a.test www.a.test api.a.test"))
    diff = prefix.cli("diff")
    assert diff.returncode == 2 and "[NamesChanged]" in diff.stdout and "+api.a.test" in diff.stdout
    assert prefix.cli("reconcile").returncode == 0
    assert set(stored_info(prefix, "a.test").names) == {"a.test", "www.a.test", "api.a.test"}


def test_unusable_names_are_warned_about_and_do_not_change_the_exit_code(
    prefix: Prefix, pebble: Any
) -> None:
    prefix.write_conf(TWO_BLOCKS.replace("b.test;", "b.test *.b.test ~^re$;"))
    prefix.write_toml(store_only_toml(pebble))
    assert prefix.cli("reconcile").returncode == 0
    diff = prefix.cli("diff")
    assert diff.returncode == 0
    assert "*.b.test" in diff.stdout and "njet.conf:" in diff.stdout


def test_a_certificate_written_by_lego_is_adopted(prefix: Prefix, pebble: Any) -> None:
    lego = shutil.which("lego")
    if lego is None:
        pytest.fail("lego is not installed (hack/setup.sh installs it)")
    prefix.write_conf(TWO_BLOCKS.replace("a.test www.a.test", "a.test"))
    prefix.write_toml(store_only_toml(pebble, keyType="ec256"))
    env = {**os.environ, "LEGO_CA_CERTIFICATES": str(pebble.ca_bundle)}
    for name in ("a.test", "b.test"):
        res = subprocess.run(
            [
                lego,
                "--server",
                pebble.directory_url,
                "--email",
                "lego@example.test",
                "--accept-tos",
                "--key-type",
                "ec256",
                "--domains",
                name,
                "--http",
                "--http.port",
                f"127.0.0.1:{pebble.http_port}",
                "--path",
                str(prefix.root / ".lego"),
                "run",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert res.returncode == 0, res.stderr
    before = stored_info(prefix, "a.test").fingerprint
    diff = prefix.cli("diff")
    assert diff.returncode == 0, diff.stdout
    assert prefix.cli("reconcile").returncode == 0
    assert stored_info(prefix, "a.test").fingerprint == before


def test_a_ca_that_is_down_gives_a_clear_error_backoff_on_disk_and_no_partial_files(
    prefix: Prefix, pebble: Any
) -> None:
    prefix.write_conf(TWO_BLOCKS)
    dead = "https://127.0.0.1:9/dir"
    prefix.write_toml(store_only_toml(pebble, acmeCaDir=dead))
    run = prefix.cli("reconcile")
    assert run.returncode == 1
    assert "127.0.0.1:9" in run.stderr
    status = json.loads((prefix.root / ".lego" / "status" / "a.test.json").read_text())
    assert status["attempts"] == 1 and status["backoff_until"] is not None
    assert "127.0.0.1:9" in status["last_failure"]
    assert not prefix.certs.exists() or list(prefix.certs.iterdir()) == []
    # a second run right away respects the backoff: no new attempt
    again = prefix.cli("reconcile")
    assert again.returncode == 1 and "Backoff" in again.stderr
    status2 = json.loads((prefix.root / ".lego" / "status" / "a.test.json").read_text())
    assert status2["attempts"] == 1


@pytest.mark.parametrize(
    ("validity", "renews_at_left"),
    [
        (timedelta(days=6), timedelta(days=3)),
        (timedelta(days=90), timedelta(days=30)),
        (timedelta(days=200), timedelta(days=30)),
    ],
    ids=["6-day", "90-day", "200-day"],
)
async def test_renewal_is_decided_by_the_clock(
    tmp_path: Path, pebble_factory: Any, validity: timedelta, renews_at_left: timedelta
) -> None:
    from controller.app import App

    ca = pebble_factory(validity_seconds=int(validity.total_seconds()))
    prefix = Prefix(tmp_path / "njet")
    prefix.write_conf(TWO_BLOCKS)
    prefix.write_toml(store_only_toml(ca))
    app = App(load_config(prefix.toml, prefix=prefix.root))
    try:
        first = await app.reconciler.pass_once()
        assert first.plan.actions and all(o.ok for o in first.outcomes)
        info = stored_info(prefix, "a.test")
        assert abs((info.not_after - info.not_before) - validity) < timedelta(minutes=2)

        due = info.not_after - renews_at_left
        app.reconciler.clock = lambda: due - timedelta(minutes=5)
        assert (await app.reconciler.compute()).plan.in_sync

        app.reconciler.clock = lambda: due + timedelta(minutes=5)
        result = await app.reconciler.pass_once()
        renewed = [o for o in result.outcomes if o.action.kind.value == "renew"]
        assert {o.action.domain for o in renewed} == {"a.test", "b.test"}
        assert all(o.ok and o.action.reason.value == "RenewalDue" for o in renewed)
        new = stored_info(prefix, "a.test")
        assert new.fingerprint != info.fingerprint
        assert new.not_before <= datetime.now(UTC) + timedelta(minutes=1)
        # the fresh certificate is not due again right after it was issued: no loop
        app.reconciler.clock = lambda: new.not_before + timedelta(minutes=5)
        assert (await app.reconciler.compute()).plan.in_sync
    finally:
        await app.close()


def test_a_name_that_leaves_njet_conf_is_deleted_and_revoked_after_the_grace_period(
    prefix: Prefix, pebble: Any
) -> None:
    prefix.write_conf(TWO_BLOCKS)
    toml = store_only_toml(pebble)
    toml["controller"] = {"deleteGracePeriod": "0s", "revokeOnDelete": True}
    prefix.write_toml(toml)
    assert prefix.cli("reconcile").returncode == 0
    serial = stored_info(prefix, "b.test").serial
    prefix.write_conf(TWO_BLOCKS.replace("server_name b.test;", "server_name c.test;"))
    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    assert "certificate revoked" in run.stderr
    assert not (prefix.certs / "b.test.crt").exists() and not (prefix.certs / "b.test.key").exists()
    assert not (prefix.root / ".lego" / "status" / "b.test.json").exists()
    assert (prefix.certs / "c.test.crt").exists() and (prefix.certs / "a.test.crt").exists()
    status = json.loads(pebble.get(f"{pebble.management_url}/cert-status-by-serial/{serial}"))
    assert status["Status"] == "Revoked"


def test_a_renamed_block_keeps_the_old_cert_during_the_default_grace_period(
    prefix: Prefix, pebble: Any
) -> None:
    prefix.write_conf(TWO_BLOCKS)
    prefix.write_toml(store_only_toml(pebble))
    assert prefix.cli("reconcile").returncode == 0
    prefix.write_conf(TWO_BLOCKS.replace("server_name b.test;", "server_name c.test;"))
    assert prefix.cli("reconcile").returncode == 0
    assert (prefix.certs / "b.test.crt").exists()
    diff = prefix.cli("diff")
    assert diff.returncode == 0 and "[OrphanGrace]" in diff.stdout
