"""Dual certificates end to end: `keyType = ["rsa2048", "ec256"]` against a real Pebble and the
NJet simulator. Both certificates are issued, stored (`a.test.crt` and `a.test@ecc.crt`),
applied to the one block and proved served by real handshakes: an RSA-only client gets the RSA
leaf, an ECDSA-capable one the ECDSA leaf. Removing a key type leaves its slot served."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from controller.certinfo import fingerprint_pem, key_matches_cert, read_cert_info
from controller.model import KeyType
from tests.e2e.harness import Prefix
from tests.e2e.njet_harness import boot_files, controller_toml, served_fingerprint, sim_conf

pytestmark = pytest.mark.pebble

DUAL = ["rsa2048", "ec256"]
# openssl s_client options of the contract's clients ([07], [28])
RSA_ONLY: tuple[tuple[str, ...], ...] = (
    ("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"),
    ("-sigalgs", "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pkcs1_sha256"))
ECDSA: tuple[tuple[str, ...], ...] = (
    ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ("-sigalgs", "ECDSA+SHA256:ECDSA+SHA384"),
    ())  # openssl's default offer includes ECDSA


def stored(prefix: Prefix, stem: str) -> tuple[str, KeyType | None]:
    crt = (prefix.certs / f"{stem}.crt").read_bytes()
    assert key_matches_cert((prefix.certs / f"{stem}.key").read_bytes(), crt)
    assert (prefix.certs / f"{stem}.key").stat().st_mode & 0o777 == 0o600
    info = read_cert_info(crt)
    assert set(info.names) == {"a.test", "www.a.test"} and "Pebble" in info.issuer
    return fingerprint_pem(crt), info.key_type


def status(prefix: Prefix, stem: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (prefix.root / ".lego" / "status" / f"{stem}.json").read_text())
    return doc


def dual_run(pebble: Any, njetsim_factory: Any, **controller: Any) -> tuple[Any, Prefix]:
    sim = njetsim_factory(sim_conf(), files=boot_files())
    prefix = Prefix(sim.prefix)
    toml = controller_toml(pebble, sim, keyType=DUAL)
    toml["controller"].update(controller)
    prefix.write_toml(toml)
    diff = prefix.cli("diff")
    assert diff.returncode == 2, diff.stderr
    issues = [ln for ln in diff.stdout.splitlines() if ln.startswith("+ issue")]
    assert len(issues) == 2, diff.stdout
    assert any("a.test www.a.test key=rsa2048  [" in ln for ln in issues), issues
    assert any("a.test www.a.test key=ec256 store=a.test@ecc  [" in ln for ln in issues), issues
    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr
    assert "PRIVATE KEY" not in run.stderr + run.stdout
    return sim, prefix


def test_each_client_gets_the_leaf_of_its_key_type_and_a_second_run_does_nothing(
    pebble: Any, njetsim_factory: Any
) -> None:
    sim, prefix = dual_run(pebble, njetsim_factory)
    rsa, rsa_type = stored(prefix, "a.test")
    ecc, ecc_type = stored(prefix, "a.test@ecc")
    assert (rsa_type, ecc_type) == (KeyType.RSA2048, KeyType.EC256)
    assert sorted(p.name for p in prefix.certs.iterdir() if not p.name.startswith(".")) == [
        f"a.test{slot}{ext}" for slot in ("", "@ecc")
        for ext in (".crt", ".issuer.crt", ".json", ".key")]
    assert json.loads((prefix.certs / "a.test@ecc.json").read_text())["domain"] == "a.test"
    for sni in ("a.test", "www.a.test"):
        for offer in RSA_ONLY:
            assert served_fingerprint(sim, *offer, sni=sni) == rsa, (sni, offer)
        for offer in ECDSA:
            assert served_fingerprint(sim, *offer, sni=sni) == ecc, (sni, offer)
    assert status(prefix, "a.test")["applied_fingerprint"] == rsa
    assert status(prefix, "a.test@ecc")["applied_fingerprint"] == ecc

    again = prefix.cli("reconcile")
    assert again.returncode == 0, again.stderr
    assert (stored(prefix, "a.test")[0], stored(prefix, "a.test@ecc")[0]) == (rsa, ecc)
    diff = prefix.cli("diff")
    assert diff.returncode == 0 and "in sync" in diff.stdout, diff.stdout
    listed = prefix.cli("certs", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["domain"]: row for row in json.loads(listed.stdout)["certificates"]}
    assert (rows["a.test"]["key_type"], rows["a.test@ecc"]["key_type"]) == ("rsa2048", "ec256")
    for key, fp in (("a.test", rsa), ("a.test@ecc", ecc)):
        show = prefix.cli("certs", "show", key, "-o", "json")
        assert show.returncode == 0, show.stderr
        doc = json.loads(show.stdout)
        assert doc["certificate"]["fingerprint"] == fp
        assert [s["matches_stored"] for s in doc["served"]] == [True]  # probed by its key type


def test_lego_still_reads_the_first_certificate(pebble: Any, njetsim_factory: Any) -> None:
    lego = shutil.which("lego")
    if lego is None:
        pytest.fail("lego is not installed (hack/setup.sh installs it)")
    _, prefix = dual_run(pebble, njetsim_factory)
    res = subprocess.run([lego, "--path", str(prefix.root / ".lego"), "list"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    first = res.stdout.split(f"Certificate Path: {prefix.certs / 'a.test.crt'}")[0]
    assert "Certificate Name: a.test" in first and "Domains: a.test, www.a.test" in first


def test_a_removed_key_type_keeps_serving_diff_says_so_and_its_pair_goes_to_quarantine(
    pebble: Any, njetsim_factory: Any
) -> None:
    sim, prefix = dual_run(pebble, njetsim_factory, deleteGracePeriod="0s")
    rsa, ecc = stored(prefix, "a.test")[0], stored(prefix, "a.test@ecc")[0]
    toml = controller_toml(pebble, sim, keyType="rsa2048")
    toml["controller"]["deleteGracePeriod"] = "0s"
    prefix.write_toml(toml)

    diff = prefix.cli("diff")
    assert diff.returncode == 0, diff.stdout
    assert "later  a.test@ecc  [OrphanGrace]" in diff.stdout
    note = next(ln for ln in diff.stdout.splitlines() if "keyType no longer" in ln)
    assert note.startswith("warning: a.test@ecc: keyType no longer has an ECDSA key type")
    assert "NJet keeps serving this ECDSA certificate" in note and "until it expires" in note

    for _ in range(2):  # the grace period starts, then (0s) it is over
        run = prefix.cli("reconcile")
        assert run.returncode == 0, run.stderr
    assert not (prefix.certs / "a.test@ecc.crt").exists()
    assert not (prefix.root / ".lego" / "status" / "a.test@ecc.json").exists()
    [entry] = (prefix.root / ".lego" / "quarantine").iterdir()
    assert entry.name.startswith("a.test@ecc.")
    assert stored(prefix, "a.test")[0] == rsa
    # NJet has no call that drops one key type: ECDSA clients keep getting the old leaf, and
    # after a reload too (NJet replays the retained record of each key type)
    assert served_fingerprint(sim, *ECDSA[1]) == ecc
    assert served_fingerprint(sim, *RSA_ONLY[0]) == rsa
    sim.reload()
    sim.wait_replayed()
    assert served_fingerprint(sim, *ECDSA[1]) == ecc
    assert served_fingerprint(sim, *RSA_ONLY[0]) == rsa
    assert prefix.cli("diff").returncode == 0
