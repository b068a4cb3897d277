"""ARI end to end, store-only: a real Pebble behind hack/pebble/arishim.py (Debian's Pebble 2.4.0
has no ARI; the shim adds renewalInfo to the directory, answers it with the windows these tests
set, and records every newOrder's `replaces`).

`reconcile` (the real CLI) issues a certificate and fetches its window with the RFC 9773
identifier of Pebble's real certificate; `diff -v` shows the window, the chosen time, where it
came from and the CA's explanation. Then, in process with a clock moved past the next poll
(the CA's Retry-After, no sleeping): the old certificate's window moved into the past gives
exactly one renewal, whose newOrder names the old certificate in `replaces`; and a CA
rejecting `replaces` gets the order once more without it, which succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.acme.ari import cert_id_of_pem
from controller.app import App
from controller.certinfo import fingerprint_pem
from controller.config import load_config
from tests.e2e.harness import Prefix, store_only_toml
from tests.support.hackmods import load_hack_module

pytestmark = pytest.mark.pebble

AriShim: Any = load_hack_module("pebble/arishim.py").AriShim

CONF = """http {
    server {
        listen 127.0.0.1:8443 ssl;
        server_name a.test www.a.test;
        ssl_certificate_management acme;
    }
}
"""
WHY = "https://ca.test/incident-42"


@pytest.fixture
def shim(pebble: Any) -> Iterator[Any]:
    state = pebble.state_dir
    proxy = AriShim(pebble.listen_port, cert=state / "server.pem", key=state / "server.key",
                    upstream_ca=pebble.ca_bundle).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def prefix(tmp_path: Path, pebble: Any, shim: Any) -> Prefix:
    p = Prefix(tmp_path / "njet")
    p.write_conf(CONF)
    p.write_toml(store_only_toml(pebble, acmeCaDir=shim.directory_url))
    return p


def crt(prefix: Prefix) -> bytes:
    return (prefix.certs / "a.test.crt").read_bytes()


def status(prefix: Prefix) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((prefix.root / ".lego" / "status" / "a.test.json").read_text())
    return doc


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def converge_at(prefix: Prefix, now: Callable[[], datetime]) -> None:
    """One `reconcile` in process (what the CLI builds) on the clock `now`."""
    app = App(load_config(prefix.toml, prefix=prefix.root))
    app.reconciler.clock = now
    try:
        result = await app.reconciler.converge()
        assert result.plan.in_sync, result.plan
    finally:
        await app.close()


def issue_with_window(prefix: Prefix, shim: Any) -> tuple[datetime, datetime, str]:
    """`reconcile`: issued, and its window fetched; (start, end, the run's log)."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    shim.set_window(start, start + timedelta(days=1), retry_after=120, explanation_url=WHY)
    run = prefix.cli("reconcile")
    assert run.returncode == 0, run.stderr + run.stdout
    return start, start + timedelta(days=1), run.stderr


def test_an_issued_certificate_gets_its_window_and_diff_shows_it(prefix: Prefix,
                                                                 shim: Any) -> None:
    start, end, log = issue_with_window(prefix, shim)
    ident = cert_id_of_pem(crt(prefix))
    assert ident and "." in ident and "=" not in ident  # Pebble's leaf has an AKI
    assert shim.polls() == [(ident, 200)]
    st = status(prefix)
    ari = st["ari"]
    assert ari["cert_id"] == ident and ari["fingerprint"] == fingerprint_pem(crt(prefix))
    assert (when(ari["window_start"]), when(ari["window_end"])) == (start, end)
    assert ari["explanation_url"] == WHY
    chosen = when(st["renewal_at"])
    assert start <= chosen <= end and st["renewal_source"] == "ari"
    polled = when(ari["polled_at"])
    assert polled + timedelta(seconds=120) <= when(ari["next_poll"]) <= polled + timedelta(
        seconds=132)
    (line,) = [ln for ln in log.splitlines() if "ARI renewal window" in ln]
    assert "domain=a.test" in line and f"explanation_url={WHY}" in line

    quiet = prefix.cli("diff")
    assert quiet.returncode == 0 and "renews a.test" not in quiet.stdout  # 30 days away
    shown = prefix.cli("diff", "-v")
    assert shown.returncode == 0, shown.stderr
    assert (f"  renews a.test at {chosen.isoformat()} from ARI (ARI window "
            f"{start.isoformat()} .. {end.isoformat()}; explanation {WHY})") in shown.stdout
    doc = json.loads(prefix.cli("diff", "-v", "-o", "json").stdout)
    (row,) = doc["renewals"]
    assert (row["source"], row["explanation_url"]) == ("ari", WHY)
    assert shim.replaces() == [None]  # the first order replaces nothing


async def test_a_window_moved_into_the_past_renews_once_with_replaces(prefix: Prefix,
                                                                      shim: Any) -> None:
    issue_with_window(prefix, shim)
    old = crt(prefix)
    old_id = cert_id_of_pem(old)
    now = datetime.now(UTC)
    # the CA revokes: the old certificate's window moves into the past (others keep theirs)
    shim.set_window(now - timedelta(days=2), now - timedelta(days=1), cert_id=old_id,
                    retry_after=120)
    # before the next poll (Retry-After 120 s) nothing changes ...
    await converge_at(prefix, lambda: datetime.now(UTC) + timedelta(seconds=30))
    assert crt(prefix) == old and len(shim.polls()) == 1
    # ... at it, the past window renews at once (the certificate is older than the hour an
    # ARI renewal waits for), naming the old certificate
    await converge_at(prefix, lambda: datetime.now(UTC) + timedelta(hours=2))
    assert crt(prefix) != old
    assert shim.replaces() == [None, old_id]
    new_id = cert_id_of_pem(crt(prefix))
    assert [c for c, _ in shim.polls()] == [old_id, old_id, new_id]
    st = status(prefix)
    assert st["ari"]["fingerprint"] == fingerprint_pem(crt(prefix))
    assert when(st["renewal_at"]) >= datetime.now(UTC) + timedelta(days=29)  # its own window
    assert len(shim.orders()) == 2  # one renewal


async def test_a_rejected_replaces_is_ordered_once_more_without_it(prefix: Prefix,
                                                                   shim: Any) -> None:
    issue_with_window(prefix, shim)
    old = crt(prefix)
    old_id = cert_id_of_pem(old)
    now = datetime.now(UTC)
    shim.set_window(now - timedelta(days=2), now - timedelta(days=1), cert_id=old_id)
    shim.reject_replaces(1)
    await converge_at(prefix, lambda: datetime.now(UTC) + timedelta(hours=2))
    assert crt(prefix) != old
    assert shim.replaces() == [None, old_id, None]  # rejected with it, ordered without it
    assert [o.get("identifiers") for o in shim.orders()][1:] == [
        [{"type": "dns", "value": "a.test"}, {"type": "dns", "value": "www.a.test"}]] * 2
    assert shim.order_statuses() == [201, 409, 201]
