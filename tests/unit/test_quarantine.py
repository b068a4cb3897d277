"""adapters/store/quarantine.py and gcconfirm.py on real files: list, restore (byte for byte,
never over an existing pair), expiry after the retention, planted entries left alone; the gc
confirmation file's round trip, its one-shot consumption and planted files."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.store.gcconfirm import GcConfirmFile
from controller.adapters.store.lego import LegoStore
from controller.adapters.store.quarantine import Quarantine, parse_entry
from controller.errors import StoreError
from controller.paths import StorePaths
from controller.policy import GcRelease
from tests.certbuilder import make_cert

T0 = datetime(2026, 11, 27, 4, 5, 6, tzinfo=UTC)
SLOTS = (".crt", ".key", ".issuer.crt", ".json")


@pytest.fixture
def paths(tmp_path: Path) -> StorePaths:
    return StorePaths(tmp_path / "njet")


def quarantined(paths: StorePaths, domain: str, at: datetime = T0) -> dict[str, bytes]:
    """Store a pair for `domain`, quarantine it at `at`; the bytes of its files."""
    store = LegoStore(paths, now=lambda: at)
    store.put(domain, make_cert([domain, f"www.{domain}"]).issued())
    stem = domain.replace("*", "_")
    files = {s: (paths.certificates / f"{stem}{s}").read_bytes() for s in SLOTS}
    assert store.quarantine(domain) is not None
    return files


def test_entries_lists_each_quarantined_pair_with_when_it_goes(paths: StorePaths) -> None:
    quarantined(paths, "a.test")
    quarantined(paths, "*.b.test", at=T0 + timedelta(hours=1))
    (entry_a, entry_b) = Quarantine(paths, retention=timedelta(days=30)).entries()
    assert (entry_a.domain, entry_a.entry) == ("*.b.test", "_.b.test.20261127T050506Z")
    assert (entry_b.domain, entry_b.entry) == ("a.test", "a.test.20261127T040506Z")
    assert entry_b.quarantined_at == T0 and entry_b.expires_at == T0 + timedelta(days=30)
    assert entry_b.names == ("a.test", "www.a.test") and entry_b.problem is None
    assert set(entry_b.files) == {f"a.test{s}" for s in SLOTS}
    assert parse_entry("a.test.20261127T040506Z-2") == ("a.test", T0, 2)
    assert parse_entry("../x.20261127T040506Z") is None and parse_entry("a.test") is None


def test_restore_brings_the_pair_back_byte_for_byte(paths: StorePaths) -> None:
    before = quarantined(paths, "a.test")
    shelf = Quarantine(paths)
    restored = shelf.restore("a.test")
    assert restored.entry == "a.test.20261127T040506Z"
    for suffix, data in before.items():
        assert (paths.certificates / f"a.test{suffix}").read_bytes() == data, suffix
    assert stat.S_IMODE((paths.certificates / "a.test.key").stat().st_mode) == 0o600
    assert shelf.entries() == [] and not (paths.quarantine / restored.entry).exists()
    assert not any(paths.journal.iterdir()), "the swap journal is finished"
    got = LegoStore(paths).get("a.test")
    assert got is not None and got.key_matches


def test_restore_takes_the_newest_entry_or_the_one_named(paths: StorePaths) -> None:
    old = quarantined(paths, "a.test")
    new = quarantined(paths, "a.test", at=T0 + timedelta(days=1))
    shelf = Quarantine(paths)
    assert shelf.restore("a.test").entry == "a.test.20261128T040506Z"
    assert (paths.certificates / "a.test.crt").read_bytes() == new[".crt"]
    LegoStore(paths, now=lambda: T0 + timedelta(days=2)).quarantine("a.test")
    shelf.restore("a.test.20261127T040506Z")
    assert (paths.certificates / "a.test.crt").read_bytes() == old[".crt"]


def test_restore_refuses_to_overwrite_and_names_what_is_in_the_way(paths: StorePaths) -> None:
    quarantined(paths, "a.test")
    LegoStore(paths).put("a.test", make_cert(["a.test"]).issued())  # reissued meanwhile
    current = (paths.certificates / "a.test.crt").read_bytes()
    with pytest.raises(StoreError) as err:
        Quarantine(paths).restore("a.test")
    assert "a.test.crt" in str(err.value) and "a.test.key" in str(err.value)
    assert "nothing was changed" in str(err.value)
    assert (paths.certificates / "a.test.crt").read_bytes() == current
    assert len(Quarantine(paths).entries()) == 1
    # one stray file of the name is in the way too
    LegoStore(paths).delete("a.test")
    (paths.certificates / "a.test.pem").write_bytes(b"lego --pem output")
    with pytest.raises(StoreError, match=r"a\.test\.pem"):
        Quarantine(paths).restore("a.test")


def test_restore_of_a_name_with_nothing_quarantined_names_it(paths: StorePaths) -> None:
    quarantined(paths, "a.test")
    for name in ("b.test", "../a.test", "a.test.20991231T000000Z"):
        with pytest.raises(StoreError, match="nothing is quarantined under"):
            Quarantine(paths).restore(name)


def test_expire_removes_entries_past_the_retention_only(paths: StorePaths) -> None:
    quarantined(paths, "a.test")
    quarantined(paths, "b.test", at=T0 + timedelta(days=10))
    shelf = Quarantine(paths, retention=timedelta(days=30))
    assert shelf.expire(T0 + timedelta(days=30) - timedelta(seconds=1)) == []
    (line,) = shelf.expire(T0 + timedelta(days=30))
    assert "a.test.20261127T040506Z" in line
    assert [q.domain for q in shelf.entries()] == ["b.test"]
    assert len(Quarantine(paths, retention=timedelta(0)).expire(T0 + timedelta(days=10))) == 1


def test_planted_entries_are_never_followed(paths: StorePaths, tmp_path: Path) -> None:
    quarantined(paths, "a.test")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the store's")
    os.symlink(outside, paths.quarantine / "b.test.20200101T000000Z")  # an old "entry"
    shelf = Quarantine(paths, retention=timedelta(days=1))
    assert [q.domain for q in shelf.entries()] == ["a.test"]
    shelf.expire(T0 + timedelta(days=400))
    assert (outside / "keep.txt").read_text() == "not the store's"
    # quarantine/ itself replaced by a link out of the store
    (paths.quarantine / "b.test.20200101T000000Z").unlink()
    os.rmdir(paths.quarantine)
    os.symlink(outside, paths.quarantine)
    with pytest.raises(StoreError, match="outside the store"):
        shelf.expire(T0 + timedelta(days=400))
    assert (outside / "keep.txt").exists()


def test_a_read_only_shelf_lists_but_never_writes(paths: StorePaths) -> None:
    quarantined(paths, "a.test")
    shelf = Quarantine(paths, read_only=True)
    assert len(shelf.entries()) == 1
    for write in (lambda: shelf.restore("a.test"), lambda: shelf.expire(T0 + timedelta(days=99))):
        with pytest.raises(StoreError, match="read-only"):
            write()
    assert len(shelf.entries()) == 1


# -- the gc confirmation file ----------------------------------------------------------------


def test_a_confirmation_round_trips_and_is_consumed_once(paths: StorePaths) -> None:
    file = GcConfirmFile(paths)
    assert file.load() is None
    release = GcRelease(names=frozenset({"a.test", "*.b.test"}), confirmed_at=T0, by="cli")
    file.save(release, stored=3)
    doc = json.loads(paths.gc_confirm.read_text())
    assert doc["names"] == ["*.b.test", "a.test"] and (doc["count"], doc["stored"]) == (2, 3)
    assert stat.S_IMODE(paths.gc_confirm.stat().st_mode) == 0o600
    assert file.load() == release
    newer = GcRelease(names=frozenset({"a.test"}), confirmed_at=T0 + timedelta(seconds=1))
    file.save(newer)
    assert file.consume(release) is False and file.load() == newer  # not the one it read
    assert file.consume(newer) is True and file.load() is None
    assert file.consume(newer) is False


@pytest.mark.parametrize("plant", ["symlink", "fifo", "garbage", "bad name"])
def test_an_unusable_confirmation_file_releases_nothing(
    paths: StorePaths, tmp_path: Path, plant: str
) -> None:
    paths.lego.mkdir(parents=True)
    target = tmp_path / "elsewhere.json"
    good = {"names": ["a.test"], "count": 1, "confirmed_at": T0.isoformat()}
    if plant == "symlink":
        target.write_text(json.dumps(good))
        os.symlink(target, paths.gc_confirm)
    elif plant == "fifo":
        os.mkfifo(paths.gc_confirm)
    elif plant == "garbage":
        paths.gc_confirm.write_bytes(b"\x00not json")
    else:
        paths.gc_confirm.write_text(json.dumps({**good, "names": ["../../etc"]}))
    assert GcConfirmFile(paths).load() is None
    if plant == "symlink":
        GcConfirmFile(paths).save(GcRelease(names=frozenset({"b.test"}), confirmed_at=T0))
        assert json.loads(target.read_text()) == good, "never written through"
