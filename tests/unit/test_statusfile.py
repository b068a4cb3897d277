"""StatusFiles: per-certificate status JSON, atomic saves, corrupt files treated as absent."""

from __future__ import annotations

import errno
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.store import fsutil
from controller.adapters.store import statusfile as statusfile_module
from controller.adapters.store.statusfile import StatusFiles
from controller.errors import StoreError
from controller.paths import StorePaths
from controller.status import CertStatus
from tests.logcapture import capture_logs

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


@pytest.fixture
def paths(tmp_path: Path) -> StorePaths:
    return StorePaths(tmp_path / "njet")


@pytest.fixture
def files(paths: StorePaths) -> StatusFiles:
    return StatusFiles(paths)


def a_status(
    domain: str = "a.test",
    *,
    attempts: int = 2,
    last_failure: str | None = "rateLimited: too many orders",
    backoff_until: datetime | None = NOW + timedelta(minutes=2),
) -> CertStatus:
    return CertStatus(
        domain=domain,
        attempts=attempts,
        last_failure=last_failure,
        last_failure_at=NOW,
        backoff_until=backoff_until,
        spec_hash="abc123",
        renewal_at=NOW + timedelta(days=60),
    )


def test_a_saved_status_loads_back_equal(files: StatusFiles, paths: StorePaths) -> None:
    status = a_status()
    files.save(status)
    assert files.load("a.test") == status
    assert StatusFiles(paths).load_all() == {"a.test": status}
    path = paths.status_file("a.test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in paths.status.iterdir()] == ["a.test.json"]  # no temp file left


def test_load_all_keys_every_status_by_domain_including_wildcards(files: StatusFiles) -> None:
    for domain in ("a.test", "*.b.test", "c.test"):
        files.save(a_status(domain))
    loaded = files.load_all()
    assert set(loaded) == {"a.test", "*.b.test", "c.test"}
    assert loaded["*.b.test"].domain == "*.b.test"


def test_saving_again_replaces_the_previous_status(files: StatusFiles) -> None:
    files.save(a_status())
    cleared = a_status(attempts=0, last_failure=None, backoff_until=None)
    files.save(cleared)
    assert files.load("a.test") == cleared
    assert files.load_all() == {"a.test": cleared}


def test_a_missing_store_or_status_is_absent(files: StatusFiles) -> None:
    assert files.load_all() == {}
    assert files.load("a.test") is None


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"domain": "a.test", "attempts": "many"}', b"[1, 2]", b"\xff\xfe"],
    ids=["empty", "truncated", "wrong-type", "not-an-object", "binary"],
)
def test_a_corrupt_status_file_is_a_warning_and_treated_as_absent(
    files: StatusFiles, paths: StorePaths, content: bytes
) -> None:
    files.save(a_status("good.test"))
    paths.status_file("a.test").write_bytes(content)
    with capture_logs() as logs:
        assert files.load_all() == {"good.test": a_status("good.test")}
        assert files.load("a.test") is None
    assert any(str(paths.status_file("a.test")) in r.getMessage() for r in logs.records)
    files.save(a_status())  # and saving over it repairs it
    assert files.load("a.test") == a_status()


def test_a_status_about_another_domain_than_its_file_name_is_ignored(
    files: StatusFiles, paths: StorePaths
) -> None:
    files.save(a_status("b.test"))
    os.rename(paths.status_file("b.test"), paths.status_file("a.test"))
    with capture_logs() as logs:
        assert files.load_all() == {}
        assert files.load("a.test") is None
    assert "'b.test'" in logs.text


def test_temp_files_and_foreign_files_are_not_statuses(
    files: StatusFiles, paths: StorePaths
) -> None:
    files.save(a_status())
    (paths.status / f".a.test.json{fsutil.TEMP_INFIX}deadbeef").write_bytes(b"{")
    (paths.status / "README").write_text("notes")
    assert list(files.load_all()) == ["a.test"]


def test_delete_removes_the_status_and_tolerates_absence(files: StatusFiles) -> None:
    files.save(a_status())
    files.delete("a.test")
    assert files.load("a.test") is None and files.load_all() == {}
    files.delete("a.test")
    files.delete("never.test")


def test_an_unchanged_file_is_not_parsed_again(
    files: StatusFiles, paths: StorePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.save(a_status())
    files.save(a_status("b.test"))
    parsed: list[Path] = []
    real = statusfile_module._parse

    def counting(path: Path, file_name: str) -> CertStatus | None:
        parsed.append(path)
        return real(path, file_name)

    monkeypatch.setattr(statusfile_module, "_parse", counting)
    files.load_all()
    assert len(parsed) == 2
    files.load_all()
    files.load("a.test")
    assert len(parsed) == 2
    files.save(a_status(attempts=5))
    assert files.load_all()["a.test"].attempts == 5
    assert parsed[-1] == paths.status_file("a.test") and len(parsed) == 3


def test_a_failed_save_raises_store_error_and_keeps_the_previous_status(
    files: StatusFiles, paths: StorePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    files.save(a_status())

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fsutil, "_write_fd", disk_full)
    with pytest.raises(StoreError, match="ENOSPC") as caught:
        files.save(a_status(attempts=9))
    assert "a.test.json" in str(caught.value)
    monkeypatch.undo()
    assert files.load("a.test") == a_status()
    assert [p.name for p in paths.status.iterdir()] == ["a.test.json"]


def test_saving_a_status_for_an_invalid_name_is_a_store_error(files: StatusFiles) -> None:
    with pytest.raises(StoreError, match="not a valid DNS name"):
        files.save(a_status("../../etc/passwd"))
