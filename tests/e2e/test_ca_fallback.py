"""CA fallback end to end (issue 10 item 4), store-only, with two real Pebbles: each has its own
issuing CA, so which one issued a certificate shows in the certificate itself.

- The primary stopped (its directory refuses connections): `reconcile` issues from the
  `[[acme.fallback]]` Pebble in the same pass; the status file, `certs list -o json|wide` say
  so, and only that CA got an account. The primary back and a forced renewal (`certs renew
  --force`): issued by the primary again.
- A long-running controller whose primary stops after its directory was read: the order's
  refused connection reads the directory afresh, finds the CA unreachable, falls back at once.
- The primary answering newOrder with 503 + Retry-After (hack/pebble/faultproxy.py in front of
  it): the first failure backs off, the second (after the backoff, an injected clock) falls
  back within its pass; the next renewal goes to the primary first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from controller.app import App
from controller.status import CaStreak
from tests.e2e.harness import Prefix, store_only_toml
from tests.faults.helpers import clocked_app, issued_by, pebble_intermediate
from tests.support.hackmods import load_hack_module
from tests.support.tomlgen import toml_value

pytestmark = pytest.mark.pebble

EMAIL = "e2e@example.test"
CONF = """http {
    server {
        listen 127.0.0.1:8443 ssl;
        server_name a.test www.a.test;
        ssl_certificate_management acme;
    }
}
"""


@pytest.fixture
def two_pebbles(pebble_factory: Callable[..., Any]) -> tuple[Any, Any]:
    """The primary and the fallback; the fallback's VA validates on the primary's ports, where
    the controller's one http-01 server listens."""
    primary = pebble_factory(nonce_reject_percent=0)
    fallback = pebble_factory(nonce_reject_percent=0, http_port=primary.http_port,
                              tls_port=primary.tls_port)
    return primary, fallback


def write_prefix(root: Path, primary: Any, fallback: Any, **acme: Any) -> Prefix:
    prefix = Prefix(root)
    prefix.write_conf(CONF)
    prefix.write_toml(store_only_toml(primary, **acme))
    with prefix.toml.open("a") as f:  # [[acme.fallback]]: its own directory and CA bundle
        f.write(f"\n[[acme.fallback]]\nacmeCaDir = {toml_value(fallback.directory_url)}\n"
                f"caBundle = {toml_value(str(fallback.ca_bundle))}\n")
    return prefix


def leaf_der(prefix: Prefix) -> bytes:
    cert = x509.load_pem_x509_certificate((prefix.certs / "a.test.crt").read_bytes())
    return cert.public_bytes(Encoding.DER)


def status_file(prefix: Prefix) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((prefix.root / ".lego/status/a.test.json").read_text())
    return doc


def listed_ca(prefix: Prefix) -> Any:
    out = prefix.cli("certs", "list", "-o", "json")
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)["certificates"]
    return row["ca"]


def account(prefix: Prefix, pebble: Any) -> Path:
    return (prefix.root / ".lego" / "accounts" / f"127.0.0.1_{pebble.listen_port}" / EMAIL
            / "account.json")


def test_a_stopped_primary_falls_back_in_the_same_pass_and_issues_again_once_back(
    tmp_path: Path, two_pebbles: tuple[Any, Any]
) -> None:
    primary, fallback = two_pebbles
    prefix = write_prefix(tmp_path / "njet", primary, fallback)
    primary.stop_pebble()  # its directory now refuses connections

    run = prefix.cli("reconcile")  # exit 0: converged, so the fallback was in the same pass
    assert run.returncode == 0, run.stdout + run.stderr
    assert "ordering from the next CA" in run.stdout + run.stderr
    assert issued_by(leaf_der(prefix), pebble_intermediate(fallback))
    st = status_file(prefix)
    assert st["issuer_ca"] == fallback.directory_url and st["ca_failures"] == []
    assert listed_ca(prefix) == fallback.directory_url
    wide = prefix.cli("certs", "list", "-o", "wide")
    assert wide.returncode == 0 and "CA" in wide.stdout.splitlines()[0]
    assert fallback.directory_url in wide.stdout
    assert account(prefix, fallback).exists()  # an account per CA, lego layout
    assert not account(prefix, primary).exists()

    primary.start()  # back; the next renewal asks it first
    renew = prefix.cli("certs", "renew", "a.test", "--force")
    assert renew.returncode == 0, renew.stdout + renew.stderr
    again = prefix.cli("reconcile")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ordering from the next CA" not in again.stdout + again.stderr
    assert issued_by(leaf_der(prefix), pebble_intermediate(primary))
    assert status_file(prefix)["issuer_ca"] == primary.directory_url
    assert listed_ca(prefix) == primary.directory_url
    assert account(prefix, primary).exists()


async def test_a_primary_stopping_after_its_directory_was_read_falls_back_at_once(
    tmp_path: Path, two_pebbles: tuple[Any, Any]
) -> None:
    primary, fallback = two_pebbles
    prefix = write_prefix(tmp_path / "njet", primary, fallback)
    app = clocked_app(prefix.root, lambda: datetime.now(UTC), [])
    try:
        assert (await app.reconciler.converge()).plan.in_sync
        st = app.reconciler.statuses["a.test"]
        assert st.issuer_ca == primary.directory_url
        primary.stop_pebble()
        app.reconciler.update_status(replace(st, force_renew=True))
        assert (await app.reconciler.converge()).plan.in_sync  # one pass, no backoff
        st = app.reconciler.statuses["a.test"]
        assert st.issuer_ca == fallback.directory_url and st.ca_failures == ()
        assert st.attempts == 0
        assert issued_by(leaf_der(prefix), pebble_intermediate(fallback))
    finally:
        await app.close()


FaultProxy = load_hack_module("pebble/faultproxy.py").FaultProxy


async def test_a_primary_answering_503_falls_back_at_the_second_failure(
    tmp_path: Path, two_pebbles: tuple[Any, Any]
) -> None:
    primary, fallback = two_pebbles
    state = primary.state_dir
    proxy = FaultProxy(primary.listen_port, cert=state / "server.pem", key=state / "server.key",
                       upstream_ca=primary.ca_bundle).start()
    offset = [timedelta(0)]
    apps: list[App] = []

    def now() -> datetime:
        return datetime.now(UTC) + offset[0]

    try:
        prefix = write_prefix(tmp_path / "njet", primary, fallback,
                              acmeCaDir=proxy.directory_url)  # fallbackAfter: the default 2
        proxy.fail(status=503, retry_after=120, path="^/order-plz$")

        first = clocked_app(prefix.root, now, apps)  # a `reconcile` process
        assert not (await first.reconciler.converge()).plan.in_sync
        st = first.reconciler.statuses["a.test"]
        assert st.ca_failures == (CaStreak(proxy.directory_url, 1),)
        assert st.attempts == 1 and st.backoff_until is not None and "503" in (
            st.last_failure or "")
        assert proxy.count("^/order-plz$") == 1
        assert not (prefix.certs / "a.test.crt").exists()
        assert not account(prefix, fallback).exists()  # not asked at the first failure

        offset[0] += st.backoff_until - now() + timedelta(seconds=1)  # the backoff is over
        second = clocked_app(prefix.root, now, apps)
        assert (await second.reconciler.converge()).plan.in_sync
        st = second.reconciler.statuses["a.test"]
        assert proxy.count("^/order-plz$") == 2  # the second failure, then the fallback
        assert st.issuer_ca == fallback.directory_url and st.ca_failures == ()
        assert issued_by(leaf_der(prefix), pebble_intermediate(fallback))

        proxy.clear()  # the next renewal: the primary first
        second.reconciler.update_status(replace(st, force_renew=True))
        assert (await second.reconciler.converge()).plan.in_sync
        st = second.reconciler.statuses["a.test"]
        assert proxy.count("^/order-plz$") == 3
        assert st.issuer_ca == proxy.directory_url
        assert issued_by(leaf_der(prefix), pebble_intermediate(primary))
    finally:
        for app in apps:
            await app.close()
        proxy.stop()
