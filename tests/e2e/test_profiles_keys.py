"""ACME profiles and key reuse end to end: the real CLI in store-only mode against a real Pebble
behind hack/pebble/arishim.py, which advertises `meta.profiles` (Pebble 2.4 has none) and
records the `profile` of every newOrder.

A preferred profile the CA does not offer is a warning and an order without one; a required one
is an error naming the key; a profile change in the TOML renews once with the new profile; a
renewal keeps the key only with reuseKey, and never across a key type change."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.certinfo import key_matches_cert
from tests.e2e.harness import Prefix, render_toml, store_only_toml
from tests.support.hackmods import load_hack_module

pytestmark = pytest.mark.pebble

AriShim = load_hack_module("pebble/arishim.py").AriShim
OFFERED = {"classic": "90-day certificates", "shortlived": "6-day certificates"}


@pytest.fixture
def shim(pebble: Any) -> Iterator[Any]:
    state = pebble.state_dir
    s = AriShim(pebble.listen_port, cert=state / "server.pem", key=state / "server.key",
                upstream_ca=pebble.ca_bundle).start()
    yield s
    s.stop()


class Case:
    """One store-only prefix managing one certificate, `name`, through the shim."""

    def __init__(self, root: Path, pebble: Any, shim: Any) -> None:
        self.name = f"p{time.monotonic_ns() % 10**10}.test"
        self.prefix = Prefix(root / "njet")
        self.pebble, self.shim = pebble, shim
        self.prefix.write_conf(f"http {{ server {{ listen 127.0.0.1:8443 ssl; server_name "
                               f"{self.name}; ssl_certificate_management acme; }} }}\n")

    def configure(self, table: str = "", **acme: Any) -> None:
        """The TOML: [acme] with `acme` on top of the Pebble defaults, then `table` verbatim."""
        sections = store_only_toml(self.pebble, acmeCaDir=self.shim.directory_url, **acme)
        self.prefix.toml.parent.mkdir(parents=True, exist_ok=True)
        self.prefix.toml.write_text(render_toml(sections) + table)

    def run(self, *args: str) -> Any:
        return self.prefix.cli(*args)

    def reconcile(self) -> Any:
        out = self.run("reconcile")
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.prefix.root / ".lego" / "status" / f"{self.name}.json").read_text())
        return data

    def pair(self) -> tuple[bytes, bytes]:
        crt = (self.prefix.certs / f"{self.name}.crt").read_bytes()
        key = (self.prefix.certs / f"{self.name}.key").read_bytes()
        assert key_matches_cert(key, crt)
        return crt, key

    def spki(self) -> bytes:
        leaf = x509.load_pem_x509_certificate(self.pair()[0])
        return leaf.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)

    def orders_made(self) -> int:
        """newOrders the CA accepted (a rejected nonce makes the client send one again)."""
        return sum(1 for method, path, status in self.shim.log()
                   if method == "POST" and path == "/order-plz" and status == 201)


@pytest.fixture
def case(tmp_path: Path, pebble: Any, shim: Any) -> Case:
    return Case(tmp_path, pebble, shim)


def test_a_preferred_profile_the_ca_does_not_offer_is_a_warning_and_an_order_without_one(
    case: Case,
) -> None:
    case.shim.advertise_profiles({"classic": OFFERED["classic"]})
    case.configure(profile="shortlived")
    run = case.reconcile()
    warned = [ln for ln in run.stderr.splitlines() if "does not offer the profile" in ln]
    assert len(warned) == 1 and "shortlived" in warned[0] and "[acme] profile" in warned[0]
    assert set(case.shim.profiles()) == {None}  # the CA's default profile: none asked for
    assert case.orders_made() == 1
    st = case.status()
    assert (st["profile"], st["profile_ordered"], st["profile_ca"]) == ("shortlived", "", None)

    diff = case.run("diff")  # in sync (no renewal loop), with a warning line
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "in sync" in diff.stdout
    assert (f"warning: {case.name}: the CA did not offer the profile 'shortlived'"
            in diff.stdout)
    assert case.orders_made() == 1


def test_a_required_profile_the_ca_does_not_offer_is_an_error_naming_the_key(
    case: Case,
) -> None:
    case.shim.advertise_profiles({"classic": OFFERED["classic"]})
    case.configure(profile="shortlived", profileRequired=True)
    run = case.run("reconcile")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "[acme] profile 'shortlived' is not offered by the CA at" in run.stderr
    assert "it offers: classic" in run.stderr
    assert case.shim.profiles() == [] and not (case.prefix.certs / f"{case.name}.crt").exists()

    # the certificate's own table: its key is named, and its profileRequired decides
    case.configure(f'[certificates."{case.name}"]\nprofile = "tlsserver"\n'
                   "profileRequired = true\n", profile="classic")
    run = case.run("reconcile")
    assert run.returncode == 1, run.stdout + run.stderr
    assert f'[certificates."{case.name}"] profile \'tlsserver\' is not offered' in run.stderr
    assert case.shim.profiles() == []


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh key", "reuseKey"])
def test_a_profile_change_renews_once_with_the_new_profile_and_the_key_as_configured(
    case: Case, reuse: bool,
) -> None:
    case.shim.advertise_profiles(OFFERED)
    case.configure(profile="classic", reuseKey=reuse)
    case.reconcile()
    assert case.shim.profiles() and set(case.shim.profiles()) == {"classic"}
    assert case.orders_made() == 1
    first_key = case.spki()
    assert case.status()["profile"] == "classic"

    case.configure(profile="shortlived", reuseKey=reuse)
    diff = case.run("diff")
    assert diff.returncode == 2, diff.stdout + diff.stderr
    [line] = [ln for ln in diff.stdout.splitlines() if ln.startswith("~ renew")]
    assert f"{case.name} key=ec256" in line and "[ProfileChanged] profile classic -> shortlived" \
        in line
    assert ("reuse-key" in line) is reuse
    before = len(case.shim.profiles())
    case.reconcile()
    assert case.orders_made() == 2  # exactly one renewal
    assert set(case.shim.profiles()[before:]) == {"shortlived"}
    st = case.status()
    assert (st["profile"], st["profile_ordered"]) == ("shortlived", "shortlived")
    assert (case.spki() == first_key) is reuse

    after = case.run("diff")
    assert after.returncode == 0 and "in sync" in after.stdout, after.stdout + after.stderr
    case.reconcile()
    assert case.orders_made() == 2


def test_a_key_type_change_makes_a_new_key_even_with_reuse_key(case: Case) -> None:
    case.configure(reuseKey=True)
    case.reconcile()
    first_key, first_pem = case.spki(), case.pair()[1]
    case.configure(reuseKey=True, keyType="ec384")
    diff = case.run("diff")
    assert diff.returncode == 2 and "[KeyTypeChanged] key type ec256 -> ec384" in diff.stdout
    assert "reuse-key" not in diff.stdout
    case.reconcile()
    assert case.orders_made() == 2
    assert case.spki() != first_key and case.pair()[1] != first_pem
    leaf = x509.load_pem_x509_certificate(case.pair()[0])
    assert leaf.public_key().key_size == 384  # type: ignore[union-attr]
