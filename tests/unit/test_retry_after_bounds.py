"""Bounded backoffs: a Retry-After counts up to 24 h (clamped at parse, logged), a status file
whose backoff_until is further ahead than any backoff is clamped at load, and one status that
cannot be saved never keeps the others from being saved (issue 13, item 3)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from controller.adapters.acme.errors import parse_retry_after
from controller.adapters.store.statusfile import StatusFiles
from controller.errors import StoreError
from controller.paths import StorePaths
from controller.status import (
    BACKOFF_CAP,
    MAX_RETRY_AFTER,
    CertStatus,
    backoff_delay,
    status_to_json,
)
from tests.fakes import MemoryStatus
from tests.logcapture import capture_logs
from tests.unit.test_reconcile_loop import A, B, world

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
DAY = MAX_RETRY_AFTER.total_seconds()


def test_a_huge_retry_after_is_clamped_to_24_hours_at_parse_with_a_warning() -> None:
    with capture_logs() as logs:
        assert parse_retry_after("99999999999999999999", clock=lambda: NOW) == DAY
        assert parse_retry_after("9" * 400, clock=lambda: NOW) == DAY  # float('9'*400) is inf
        far = format_datetime(NOW + timedelta(days=365), usegmt=True)
        assert parse_retry_after(far, clock=lambda: NOW) == DAY
    assert logs.text.count("Retry-After beyond the longest honoured backoff; clamped") == 3
    assert "99999999999999999999" in logs.text


def test_a_retry_after_up_to_24_hours_is_honoured_as_given() -> None:
    with capture_logs() as logs:
        assert parse_retry_after("86400", clock=lambda: NOW) == DAY
        assert parse_retry_after("3600", clock=lambda: NOW) == 3600.0
        soon = format_datetime(NOW + timedelta(hours=2), usegmt=True)
        assert parse_retry_after(soon, clock=lambda: NOW) == 7200.0
        past = format_datetime(NOW - timedelta(hours=2), usegmt=True)
        assert parse_retry_after(past, clock=lambda: NOW) == 0.0
        assert parse_retry_after("soon", clock=lambda: NOW) is None
    assert "clamped" not in logs.text


def test_the_backoff_never_overflows_and_never_exceeds_24_hours() -> None:
    for retry_after in (1e20, math.inf, 10 * DAY):
        assert backoff_delay(1, retry_after=retry_after) == MAX_RETRY_AFTER
    assert backoff_delay(1, retry_after=math.nan) == timedelta(minutes=1)
    assert backoff_delay(30, retry_after=-5) == BACKOFF_CAP
    assert backoff_delay(1, retry_after=7200) == timedelta(hours=2)
    failed = CertStatus(domain="a.test").with_failure(
        "rateLimited", spec_hash="h", at=NOW, retry_after=99999999999999999999.0)
    assert failed.backoff_until == NOW + MAX_RETRY_AFTER


def _write(paths: StorePaths, status: CertStatus) -> Path:
    path = paths.status_file(status.domain)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(status_to_json(status))
    return path


def test_a_hand_edited_one_year_backoff_is_clamped_to_24_hours_at_load(tmp_path: Path) -> None:
    paths = StorePaths(tmp_path / "njet")
    year = CertStatus(domain="a.test", attempts=3, backoff_until=NOW + timedelta(days=365))
    within = CertStatus(domain="b.test", attempts=9,
                        backoff_until=NOW + MAX_RETRY_AFTER + BACKOFF_CAP)
    path = _write(paths, year)
    _write(paths, within)
    files = StatusFiles(paths, clock=lambda: NOW)
    with capture_logs() as logs:
        loaded = files.load_all()
        again = StatusFiles(paths, clock=lambda: NOW).load("a.test")
    assert loaded["a.test"].backoff_until == NOW + MAX_RETRY_AFTER
    assert again is not None and again.backoff_until == NOW + MAX_RETRY_AFTER
    assert loaded["a.test"].attempts == 3  # only the backoff changes
    assert loaded["b.test"] == within  # a backoff any rule could give is kept as written
    assert str(path) in logs.text and "further ahead than any backoff" in logs.text


class FailingFor(MemoryStatus):
    """A MemoryStatus whose saves for `domain` fail (one bad record)."""

    def __init__(self, domain: str) -> None:
        super().__init__()
        self.bad = domain

    def save(self, status: CertStatus) -> None:
        if status.domain == self.bad:
            raise StoreError(f"cannot write memory://status/{status.domain}.json: EIO")
        super().save(status)


async def test_a_status_that_cannot_be_saved_does_not_keep_the_others_from_being_saved() -> None:
    w = world(A, B)
    failing = FailingFor("a.test")  # the first status the pass saves
    w.rec.status_store = failing
    with capture_logs() as logs:
        result = await w.rec.converge(probe=True)
    assert result.plan.in_sync
    assert "b.test" in failing.records and "a.test" not in failing.records
    assert failing.records["b.test"].applied_fingerprint == w.fp("b.test")
    assert w.rec.statuses["a.test"].applied_fingerprint == w.fp("a.test")  # kept in memory
    assert "status not saved" in logs.text and "a.test" in logs.text
