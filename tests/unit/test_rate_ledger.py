"""The rate-limit ledger's contract (ports.RateLedger), for the file on disk and the memory fake,
and what only the file does: its path, atomic writes, a restart, planted files, read-only use."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.store.ledger import FileLedger
from controller.errors import StoreError
from controller.paths import StorePaths
from controller.policies.ratelimits import LONGEST_WINDOW, EventKind, LedgerEvent
from controller.ports import RateLedger
from tests.fakes import MemoryLedger
from tests.logcapture import capture_logs

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CA = "https://127.0.0.1:14000/dir"


def event(at: datetime, *names: str, kind: EventKind = EventKind.ORDER, ca: str = CA,
          until: datetime | None = None) -> LedgerEvent:
    names = names or ("a.test",)
    return LedgerEvent(kind, at, ca, "ops@example.test", names, ("a.test",), issued=True,
                       until=until)


@pytest.fixture(params=["file", "memory"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], RateLedger]:
    if request.param == "memory":
        shared = MemoryLedger(CA)
        return lambda: shared
    return lambda: FileLedger(StorePaths(tmp_path), CA)


def test_a_snapshot_holds_what_was_recorded_within_the_longest_window(
        make: Callable[[], RateLedger]) -> None:
    ledger = make()
    old, recent = event(NOW - LONGEST_WINDOW, "old.test"), event(NOW - timedelta(days=1))
    ledger.record(old)
    ledger.record(recent)
    assert ledger.snapshot(NOW - timedelta(days=1)).events == (old, recent)
    snap = make().snapshot(NOW)  # the old one is exactly a window back: out
    assert (snap.ca, snap.at, snap.events) == (CA, NOW, (recent,))


def test_recording_forgets_what_is_older_than_the_longest_window(
        make: Callable[[], RateLedger]) -> None:
    ledger = make()
    ledger.record(event(NOW - LONGEST_WINDOW - timedelta(hours=1), "gone.test"))
    limited = event(NOW - LONGEST_WINDOW - timedelta(hours=1), kind=EventKind.RATE_LIMITED,
                    until=NOW + timedelta(hours=1))  # its Retry-After is not over: kept
    ledger.record(limited)
    ledger.record(event(NOW))
    assert [e.names for e in ledger.snapshot(NOW - LONGEST_WINDOW).events] == [
        ("a.test",), ("a.test",)]
    assert limited in ledger.snapshot(NOW).events


def test_an_event_of_another_ca_is_refused(make: Callable[[], RateLedger]) -> None:
    with pytest.raises(ValueError, match="cannot record an event of"):
        make().record(event(NOW, ca="https://other.test/dir"))


# -- the file ----------------------------------------------------------------------------------


def test_the_file_is_named_by_the_cas_host_and_port_and_written_atomically(
        tmp_path: Path) -> None:
    ledger = FileLedger(StorePaths(tmp_path), CA)
    ledger.record(event(NOW))
    path = tmp_path / ".lego" / "ledger" / "127.0.0.1_14000.json"
    assert ledger.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and doc["events"][0]["names"] == ["a.test"]
    assert doc["events"][0]["at"].startswith("2026-11-27T12:00:00")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    # a restart reads it back
    assert FileLedger(StorePaths(tmp_path), CA).snapshot(NOW).events == (event(NOW),)


def test_two_directories_on_one_host_keep_apart_in_one_file(tmp_path: Path) -> None:
    one = FileLedger(StorePaths(tmp_path), CA)
    other_ca = "https://127.0.0.1:14000/other-dir"
    two = FileLedger(StorePaths(tmp_path), other_ca)
    assert one.path == two.path
    one.record(event(NOW, "one.test"))
    two.record(event(NOW, "two.test", ca=other_ca))
    assert [e.names for e in FileLedger(StorePaths(tmp_path), CA).snapshot(NOW).events] == [
        ("one.test",)]
    assert [e.names for e in two.snapshot(NOW).events] == [("two.test",)]


@pytest.mark.parametrize("plant", ["symlink", "fifo", "garbage", "directory"])
def test_an_unusable_file_reads_as_empty_and_is_replaced_never_written_through(
        tmp_path: Path, plant: str) -> None:
    ledger = FileLedger(StorePaths(tmp_path), CA)
    path = ledger.path
    path.parent.mkdir(parents=True)
    target = tmp_path / "elsewhere.json"
    target.write_text("keep me")
    if plant == "symlink":
        path.symlink_to(target)
    elif plant == "fifo":
        os.mkfifo(path)
    elif plant == "garbage":
        path.write_text('{"version": 1, "events": [{"kind": "nope"}]}')
    else:
        path.mkdir()
    with capture_logs() as logs:
        assert ledger.snapshot(NOW).events == ()
    assert "rate-limit ledger unusable" in logs.text and str(path) in logs.text
    if plant == "directory":
        with pytest.raises(StoreError, match=str(path)):
            ledger.record(event(NOW))
        return
    ledger.record(event(NOW))
    assert target.read_text() == "keep me"
    assert path.is_file() and not path.is_symlink()
    assert FileLedger(StorePaths(tmp_path), CA).snapshot(NOW).events == (event(NOW),)


def test_a_read_only_ledger_rereads_the_file_and_refuses_to_record(tmp_path: Path) -> None:
    writer = FileLedger(StorePaths(tmp_path), CA)
    reader = FileLedger(StorePaths(tmp_path), CA, read_only=True)
    assert reader.snapshot(NOW).events == ()
    writer.record(event(NOW))
    assert reader.snapshot(NOW).events == (event(NOW),)
    with pytest.raises(StoreError, match="read-only"):
        reader.record(event(NOW))


def test_a_write_that_fails_names_the_file_and_keeps_the_event_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.adapters.store import fsutil

    ledger = FileLedger(StorePaths(tmp_path), CA)

    def full(*_args: object, **_kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil, "atomic_write", full)
    with pytest.raises(StoreError, match=r"ledger/127\.0\.0\.1_14000\.json.*ENOSPC"):
        ledger.record(event(NOW))
    assert ledger.snapshot(NOW).events == (event(NOW),)
