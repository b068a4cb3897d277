"""The store's file safety (issue 13 items 5, 6, 7): fsutil.read_regular, writes that never
follow a planted link, and key / certificates/ permissions warned about and repaired."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from controller.adapters.store import fsutil
from controller.adapters.store.lego import LegoStore
from controller.paths import StorePaths
from tests.certbuilder import make_cert
from tests.logcapture import CapturedLogs, capture_logs


@pytest.fixture
def paths(tmp_path: Path) -> StorePaths:
    return StorePaths(tmp_path / "njet")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def warnings_about(logs: CapturedLogs, path: Path) -> list[logging.LogRecord]:
    return [r for r in logs.records if r.levelno == logging.WARNING
            and getattr(r, "fields", {}).get("path") == str(path)]


# -- read_regular -------------------------------------------------------------------------------


def test_read_regular_reads_a_regular_file_and_refuses_everything_else(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x" * 100)
    assert fsutil.read_regular(plain) == b"x" * 100
    link = tmp_path / "link"
    os.symlink(plain, link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in ((link, "symbolic link"), (fifo, "FIFO"), (tmp_path, "directory")):
        with pytest.raises(fsutil.UnsafeFileError, match=kind) as caught:
            fsutil.read_regular(path)
        assert str(path) in str(caught.value)
    with pytest.raises(fsutil.UnsafeFileError, match="over the 64 bytes limit"):
        fsutil.read_regular(plain, limit=64)
    with pytest.raises(FileNotFoundError):
        fsutil.read_regular(tmp_path / "missing")


def test_a_new_file_is_never_created_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    link = tmp_path / "a.crt"
    os.symlink(tmp_path / "created-elsewhere", link)
    with pytest.raises(FileExistsError):
        fsutil.write_new_file(link, b"data", mode=0o600)
    assert not (tmp_path / "created-elsewhere").exists()
    os.unlink(link)
    os.symlink(victim, link)
    fsutil.atomic_write(link, b"new", mode=0o600)  # renamed over the link: replaces it
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert victim.read_text() == "keep\n"


def test_a_symlinked_pair_file_is_backed_up_as_the_link_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "outside.crt"
    target.write_bytes(b"somebody else's file")
    source = tmp_path / "a.crt"
    os.symlink(target, source)
    fsutil.link_or_copy(source, tmp_path / "backup")
    assert (tmp_path / "backup").is_symlink() and target.stat().st_nlink == 1


def test_a_path_resolving_outside_the_store_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "sub").mkdir(parents=True)
    os.symlink(tmp_path, root / "away")
    assert fsutil.ensure_inside(root / "sub" / "a.crt", root) == root / "sub" / "a.crt"
    for path in (root / "sub" / ".." / ".." / "x", root / "away" / "x", Path("/etc/passwd")):
        with pytest.raises(fsutil.UnsafeFileError, match="outside the store"):
            fsutil.ensure_inside(path, root)


def test_a_put_over_a_symlinked_journal_leftover_sets_it_aside(
    paths: StorePaths, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep\n")
    paths.journal.mkdir(parents=True)
    os.symlink(outside, paths.journal / "a.test")
    made = make_cert(["a.test"])
    LegoStore(paths).put("a.test", made.issued())
    assert paths.key("a.test").read_bytes() == made.key_pem
    assert sorted(os.listdir(outside)) == ["keep"]
    assert [p.is_symlink() for p in paths.journal_rejected.iterdir()] == [True]


# -- permissions --------------------------------------------------------------------------------


def _loose_store(paths: StorePaths) -> LegoStore:
    store = LegoStore(paths)
    for name in ("a.test", "b.test"):
        store.put(name, make_cert([name]).issued())
    os.chmod(paths.key("a.test"), 0o644)
    os.chmod(paths.key("b.test"), 0o666)
    os.chmod(paths.certificates, 0o755)
    return store


def test_keys_and_the_certificates_folder_open_to_others_are_warned_about_and_repaired(
    paths: StorePaths
) -> None:
    _loose_store(paths)
    with capture_logs() as logs:
        usable, problems = LegoStore(paths).load_all()
    assert set(usable) == {"a.test", "b.test"} and problems == {}
    assert mode_of(paths.key("a.test")) == mode_of(paths.key("b.test")) == 0o600
    assert mode_of(paths.certificates) == 0o700
    for path, was in ((paths.key("a.test"), "0o644"), (paths.key("b.test"), "0o666"),
                      (paths.certificates, "0o755")):
        (record,) = warnings_about(logs, path)
        assert record.fields["mode"] == was and "repaired_to" in record.fields  # type: ignore[attr-defined]


def test_a_read_only_store_only_warns_about_loose_permissions(
    paths: StorePaths
) -> None:
    _loose_store(paths)
    with capture_logs() as logs:
        LegoStore(paths, read_only=True).load_all()
    assert mode_of(paths.key("a.test")) == 0o644 and mode_of(paths.certificates) == 0o755
    assert warnings_about(logs, paths.key("a.test"))
    assert warnings_about(logs, paths.certificates)


def test_a_key_with_other_hard_links_is_warned_about_but_not_chmodded(
    paths: StorePaths, tmp_path: Path
) -> None:
    store = LegoStore(paths)
    store.put("a.test", make_cert(["a.test"]).issued())
    foreign = tmp_path / "foreign.key"
    os.link(paths.key("a.test"), foreign)  # somebody else's file linked into the store
    os.chmod(foreign, 0o640)
    with capture_logs() as logs:
        LegoStore(paths).load_all()
    assert mode_of(foreign) == 0o640
    (record,) = warnings_about(logs, paths.key("a.test"))
    assert "hard links" in record.fields["repair"]  # type: ignore[attr-defined]


def test_delete_moves_a_symlinked_key_out_as_the_link(paths: StorePaths, tmp_path: Path) -> None:
    store = LegoStore(paths)
    made = make_cert(["a.test"])
    store.put("a.test", made.issued())
    outside = tmp_path / "outside.key"
    outside.write_bytes(made.key_pem)
    paths.key("a.test").unlink()
    os.symlink(outside, paths.key("a.test"))
    assert "symbolic link" in store.load_all()[1]["a.test"]
    assert store.delete("a.test")
    assert not os.path.lexists(paths.key("a.test")) and outside.read_bytes() == made.key_pem
