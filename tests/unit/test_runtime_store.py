"""RuntimeStore: event-sourced specs persisted in <prefix>/.lego/runtime/servers.json."""

from __future__ import annotations

import json
from pathlib import Path

from controller.adapters.store.runtime import RuntimeStore
from controller.events import EventAction, EventDomain, NjetEvent
from controller.model import CertificateSpec, Source
from controller.paths import StorePaths


def gen(*domains: EventDomain) -> NjetEvent:
    return NjetEvent(EventAction.GENERATE, domains)


def delete(*domains: EventDomain) -> NjetEvent:
    return NjetEvent(EventAction.DELETE, domains)


def dom(names: tuple[str, ...], addrs: tuple[str, ...] = ("127.0.0.1:8443",)) -> EventDomain:
    return EventDomain(names, addrs, "acme")


def summary(store: RuntimeStore) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    return [(s.domain, s.names, s.listens) for s in store.load()]


def test_an_absent_file_loads_as_nothing(tmp_path: Path) -> None:
    assert RuntimeStore(StorePaths(tmp_path)).load() == ()


def test_generate_adds_specs_that_survive_a_new_instance(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    assert store.apply(gen(dom(("Dyn.Test", "www.dyn.test")), dom(("n.test",), ("[::1]:8447",))))
    reloaded = RuntimeStore(StorePaths(tmp_path))
    assert summary(reloaded) == [
        ("dyn.test", ("dyn.test", "www.dyn.test"), ("127.0.0.1:8443",)),
        ("n.test", ("n.test",), ("[::1]:8447",)),
    ]
    assert all(s.source is Source.EVENT for s in reloaded.load())
    assert (tmp_path / ".lego" / "runtime" / "servers.json").is_file()


def test_repeating_the_same_generate_changes_nothing_and_writes_nothing(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    event = gen(dom(("a.test", "www.a.test")))
    assert store.apply(event)
    before = store.path.stat().st_mtime_ns
    assert not store.apply(event)
    assert store.path.stat().st_mtime_ns == before


def test_generate_with_new_names_for_the_same_block_updates_the_entry(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    store.apply(gen(dom(("a.test",))))
    assert store.apply(gen(dom(("a.test", "b.a.test"))))
    assert summary(store) == [("a.test", ("a.test", "b.a.test"), ("127.0.0.1:8443",))]


def test_the_same_name_on_two_listens_is_two_entries(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    store.apply(gen(dom(("d.test",), ("127.0.0.1:8443",)), dom(("d.test",), ("127.0.0.1:8447",))))
    assert len(store.load()) == 2
    assert store.apply(delete(dom(("d.test",), ("127.0.0.1:8447",))))
    assert summary(store) == [("d.test", ("d.test",), ("127.0.0.1:8443",))]


def test_delete_removes_only_the_announced_entry_with_those_names(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    store.apply(gen(dom(("dyn.test",)), dom(("keep.test",))))
    assert store.apply(delete(EventDomain(("dyn.test",), ("127.0.0.1:8443",))))
    assert summary(store) == [("keep.test", ("keep.test",), ("127.0.0.1:8443",))]


def test_a_delete_for_a_never_announced_name_with_no_listens_removes_nothing(
    tmp_path: Path,
) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    store.apply(gen(dom(("dyn.test",))))
    assert not store.apply(delete(EventDomain(("bad.test",), ())))
    assert summary(store) == [("dyn.test", ("dyn.test",), ("127.0.0.1:8443",))]


def test_a_delete_with_no_listens_removes_the_name_wherever_it_was_announced(
    tmp_path: Path,
) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    store.apply(gen(dom(("x.test",), ("127.0.0.1:1",)), dom(("x.test",), ("127.0.0.1:2",))))
    assert store.apply(delete(EventDomain(("x.test",), ())))
    assert store.load() == ()


def test_delete_on_another_listen_keeps_the_entry(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    store.apply(gen(dom(("x.test",), ("127.0.0.1:1",))))
    assert not store.apply(delete(dom(("x.test",), ("127.0.0.1:2",))))
    assert len(store.load()) == 1


def test_invalid_names_in_events_are_not_stored(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    assert not store.apply(gen(dom(("_", "../x"))))
    assert store.load() == ()
    assert not store.path.exists()


def test_replace_all_normalises_and_reports_changes(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    store.apply(gen(dom(("old.test",))))
    specs = [
        CertificateSpec("n.test", ("n.test",), ("127.0.0.1:8447",), source=Source.CONF),
        CertificateSpec("d.test", ("d.test",), ("127.0.0.1:8443",), origin="/ins/srv/s_1"),
    ]
    assert store.replace_all(specs)
    assert not store.replace_all(specs)
    loaded = RuntimeStore(StorePaths(tmp_path)).load()
    assert [(s.domain, s.source, s.origin) for s in loaded] == [
        ("n.test", Source.EVENT, "event"),
        ("d.test", Source.EVENT, "/ins/srv/s_1"),
    ]
    assert store.replace_all([])
    assert RuntimeStore(StorePaths(tmp_path)).load() == ()


def test_the_file_is_replaced_atomically_without_leftover_temp_files(tmp_path: Path) -> None:
    store = RuntimeStore(StorePaths(tmp_path))
    for i in range(3):
        store.apply(gen(dom((f"n{i}.test",))))
    files = sorted(p.name for p in store.path.parent.iterdir())
    assert files == ["servers.json"]
    doc = json.loads(store.path.read_text())
    assert doc["version"] == 1 and len(doc["servers"]) == 3


def test_a_corrupt_file_is_kept_aside_and_the_state_starts_empty(tmp_path: Path) -> None:
    paths = StorePaths(tmp_path)
    paths.runtime.mkdir(parents=True)
    (paths.runtime / "servers.json").write_text('{"servers": [{"domain": 1}]')
    store = RuntimeStore(paths)
    assert store.load() == ()
    kept = [p.name for p in paths.runtime.iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1
    assert store.apply(gen(dom(("a.test",))))
    assert summary(RuntimeStore(paths)) == [("a.test", ("a.test",), ("127.0.0.1:8443",))]
