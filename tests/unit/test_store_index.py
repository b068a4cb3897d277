"""The persisted parse index lets a fresh process skip parsing unchanged pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.adapters.store import lego as store_module
from controller.adapters.store.lego import LegoStore
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
    real = store_module.read_cert_info

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
