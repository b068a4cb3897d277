"""The persisted parse index lets a fresh process skip parsing unchanged pairs; it is a cache,
so an entry that fails its checksum is re-read from the files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.store import pairs as store_module  # parses one pair
from controller.adapters.store.lego import LegoStore
from controller.certinfo import read_cert_info
from controller.paths import StorePaths
from tests.certbuilder import make_cert


def filled(tmp_path: Path, names: list[str]) -> StorePaths:
    paths = StorePaths(tmp_path)
    s = LegoStore(paths)
    for n in names:
        s.put(n, make_cert([n]).issued(f"https://ca.test/cert/{n}"))
    s.load_all()
    return paths


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = read_cert_info

    def counting(pem: bytes):  # type: ignore[no-untyped-def]
        seen.append("parse")
        return real(pem)

    monkeypatch.setattr(store_module, "read_cert_info", counting)
    return seen


def test_a_fresh_store_reads_unchanged_pairs_from_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = filled(tmp_path, ["a.test", "b.test", "c.test"])
    assert paths.index.exists()
    assert b"PRIVATE KEY" not in paths.index.read_bytes()
    before, _ = LegoStore(paths).load_all()
    parses = count_parses(monkeypatch)
    usable, problems = LegoStore(paths).load_all()
    assert parses == [] and problems == {}
    assert usable == before


def test_a_changed_pair_is_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = filled(tmp_path, ["a.test", "b.test"])
    new = make_cert(["a.test"]).issued("https://ca.test/cert/a2")
    LegoStore(paths).put("a.test", new)
    parses = count_parses(monkeypatch)
    usable, _ = LegoStore(paths).load_all()
    assert parses == ["parse"]
    assert usable["a.test"].cert_url == "https://ca.test/cert/a2"


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"version": 99, "entries": {}}',
                                     b'{"version": 2, "entries": {"a.test": [3]}}'])
def test_an_unusable_index_is_ignored(tmp_path: Path, content: bytes) -> None:
    paths = filled(tmp_path, ["a.test"])
    paths.index.write_bytes(content)
    usable, problems = LegoStore(paths).load_all()
    assert set(usable) == {"a.test"} and problems == {}


def test_a_hand_edited_index_entry_is_re_read_from_the_files(tmp_path: Path) -> None:
    """Only notAfter is edited, so the file identity still matches: the checksum catches it."""
    expired = make_cert(["old.test"], not_before=datetime.now(UTC) - timedelta(days=100))
    paths = StorePaths(tmp_path)
    LegoStore(paths).put("old.test", expired.issued())
    LegoStore(paths).put("b.test", make_cert(["b.test"]).issued())
    truth, _ = LegoStore(paths).load_all()
    doc = json.loads(paths.index.read_bytes())
    stored = doc["entries"]["old.test"][3]
    stored[3] = (datetime.now(UTC) + timedelta(days=365)).isoformat()  # not_after
    paths.index.write_bytes(json.dumps(doc).encode())
    usable, problems = LegoStore(paths).load_all()
    assert problems == {}
    assert usable["old.test"].info.not_after == truth["old.test"].info.not_after
    assert usable["old.test"].info.not_after < datetime.now(UTC)
    assert usable["b.test"] == truth["b.test"]
    assert json.loads(paths.index.read_bytes())["entries"]["old.test"][3][3] != stored[3]


def test_only_the_entry_that_fails_its_check_is_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = filled(tmp_path, ["a.test", "b.test", "c.test"])
    doc = json.loads(paths.index.read_bytes())
    doc["entries"]["b.test"][-1] = "0" * 32
    paths.index.write_bytes(json.dumps(doc).encode())
    parses = count_parses(monkeypatch)
    usable, _ = LegoStore(paths).load_all()
    assert parses == ["parse"] and set(usable) == {"a.test", "b.test", "c.test"}
