"""Adapters that stamp a time take it from the injected clock, not from the system clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from cryptography import x509

from controller.adapters.acme.errors import parse_retry_after
from controller.adapters.challenges.tls_alpn import challenge_certificate
from controller.adapters.store.runtime import RuntimeStore
from controller.clock import utc_now
from controller.paths import StorePaths

FIXED = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)


def test_the_system_clock_is_aware_utc() -> None:
    assert utc_now().tzinfo is UTC


def test_a_retry_after_date_counts_from_the_injected_clock() -> None:
    header = format_datetime(FIXED + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(header, clock=lambda: FIXED) == 90
    assert parse_retry_after(header, clock=lambda: FIXED + timedelta(hours=1)) == 0


def test_a_corrupt_runtime_file_is_set_aside_under_the_clocks_time(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path), clock=lambda: FIXED)
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    assert store.load() == ()
    aside = store.path.with_name("servers.json.corrupt-20310504T030201Z")
    assert aside.read_text() == "{not json"


def test_a_tls_alpn_certificate_is_valid_around_the_given_now() -> None:
    cert_pem, _ = challenge_certificate("a.test", "token.thumbprint", now=FIXED)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.not_valid_before_utc == FIXED - timedelta(hours=1)
    assert cert.not_valid_after_utc == FIXED + timedelta(days=7)
