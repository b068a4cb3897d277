"""Fault suite, planted paths and special files (issue 13 items 4, 5, 6 and 14).

The attacker here can write anywhere under `<prefix>/.lego/` and nowhere else. Next to the store
lies a sentinel tree (`outside/`: a folder tree, a .key, a .crt, a plain file); each trial
snapshots it before and after and counts every entry created, changed or removed there
(`outside`, must be 0). A good pair (`good.test`) is stored first; `lost` counts trials after
which its files are not byte-identical (or were moved out of certificates/).

- planted-paths: journal records naming `../` or absolute paths, another name than their folder,
  a quarantine folder outside, a symlinked journal entry, a symlinked or FIFO record, a garbage
  record, a symlinked quarantine/ or journal-rejected/ folder. Recovery never acts on them, sets
  them aside (journal-rejected/), still finishes a genuine interrupted delete of another name,
  and does not meet them again at the next start; App.prepare (what `run` does at start) does
  not raise. A symlinked or FIFO `.lego/lock` and a symlinked status/ folder are refused with an
  error naming them, never written through; a symlinked status file is replaced, not followed.
- special-files: a FIFO .crt, .json and index.json (no hang), a .key symlinked to /dev/zero (no
  MemoryError: loaded in a child limited to 1 GiB of address space), a .key symlinked outside,
  an oversized .crt, a folder named .crt, a FIFO status, runtime and account key file: each is
  refused with an error naming the file, the pair counts as a problem, the rest works.

Each trial prints through tests/faults/summary.py (`faults: planted-paths: ... outside=0`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import resource
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.adapters.acme.account import AccountFiles, load_account
from controller.adapters.store.journal_record import JournalRecord
from controller.adapters.store.lego import LegoStore
from controller.adapters.store.lock import StoreLock
from controller.adapters.store.runtime import RuntimeStore
from controller.adapters.store.statusfile import StatusFiles
from controller.app import App
from controller.config import parse_config
from controller.errors import ConfigError, StoreError
from controller.paths import StorePaths
from controller.status import CertStatus
from tests.certbuilder import MadeCert, make_cert
from tests.faults import summary

PLANTED = "planted-paths"
SPECIAL = "special-files"
GOOD = "good.test"
REAL = "real.test"  # a genuine interrupted delete recovery must still finish
SLOTS = (".crt", ".key", ".issuer.crt", ".json")


@functools.cache
def pair(name: str) -> MadeCert:
    return make_cert([name])


Snapshot = dict[str, tuple[object, ...]]


def snapshot(root: Path) -> Snapshot:
    """Every entry under `root` (itself included): kind, content or link target, mode, mtime."""
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for path in [here, *(here / n for n in dirnames + filenames)]:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what: tuple[object, ...] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                what = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                what = ("dir" if stat.S_ISDIR(st.st_mode) else "other",)
            out[str(path.relative_to(root))] = (*what, st.st_mode, st.st_mtime_ns)
    return out


def changes(before: Snapshot, after: Snapshot) -> int:
    return sum(before.get(k) != after.get(k) for k in before.keys() | after.keys())


@dataclass
class Site:
    """A store with good.test in it, and the sentinel tree next to it."""

    root: Path
    paths: StorePaths
    outside: Path
    good_files: dict[str, bytes]
    sentinel: Snapshot

    @property
    def journal(self) -> Path:
        return self.paths.journal

    def good_intact(self) -> bool:
        return self.good_files == good_files(self.paths)

    def outside_changes(self) -> int:
        return changes(self.sentinel, snapshot(self.outside))

    def record(self, family: str, ok: bool) -> None:
        intact, outside = self.good_intact(), self.outside_changes()
        summary.record(family, trials=1, converged=int(ok and intact and not outside),
                       lost=int(not intact), mismatched=int(intact and not ok), outside=outside)


def good_files(paths: StorePaths) -> dict[str, bytes]:
    base = paths.certificates / GOOD
    return {s: Path(f"{base}{s}").read_bytes() for s in SLOTS if Path(f"{base}{s}").is_file()}


def make_site(tmp_path: Path) -> Site:
    paths = StorePaths(tmp_path / "njet")
    LegoStore(paths).put(GOOD, pair(GOOD).issued())
    outside = tmp_path / "outside"
    (outside / "target" / "sub").mkdir(parents=True)
    (outside / "target" / "a.txt").write_text("precious\n")
    (outside / "target" / "sub" / "b.txt").write_text("precious too\n")
    (outside / "x.key").write_bytes(pair("x.test").key_pem)
    (outside / "x.crt").write_bytes(pair("x.test").fullchain_pem)
    (outside / "victim").write_text("not yours\n")
    site = Site(tmp_path, paths, outside, good_files(paths), {})
    site.sentinel = snapshot(outside)
    return site


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


def plant_record(site: Site, entry: str, doc: dict[str, object] | bytes) -> Path:
    folder = site.journal / entry
    folder.mkdir(parents=True, exist_ok=True)
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    (folder / "JOURNAL").write_bytes(data)
    return folder


def plant_real_delete(site: Site) -> None:
    """An interrupted delete of real.test (killed right after its record was written)."""
    LegoStore(site.paths).put(REAL, pair(REAL).issued())
    record = JournalRecord.for_delete(REAL, REAL, ["crt", "key", "issuer", "json"])
    plant_record(site, REAL, record.model_dump(mode="json"))


# -- planted journal entries ------------------------------------------------------------------


def _delete_traversal(site: Site) -> str:
    plant_record(site, "evil", {"op": "delete", "name": "../../../outside/target",
                                "domain": "evil", "old": ["crt", "key"]})
    return "evil"


def _put_traversal(site: Site) -> str:
    plant_record(site, "evil", {"op": "put", "name": "../../../outside/x", "domain": "x",
                                "new": {}, "old": []})
    return "evil"


def _absolute_name(site: Site) -> str:
    plant_record(site, "evil", {"op": "delete", "name": str(site.outside / "target"),
                                "domain": "evil", "old": ["crt"]})
    return "evil"


def _other_name(site: Site) -> str:
    plant_record(site, "evil", {"op": "delete", "name": GOOD, "domain": GOOD,
                                "old": ["crt", "key", "issuer", "json"]})
    return "evil"


def _quarantine_outside(site: Site) -> str:
    plant_record(site, GOOD, {"op": "quarantine", "name": GOOD, "domain": GOOD,
                              "old": ["crt", "key"], "dest": "../../../outside/q"})
    return GOOD


def _quarantine_folder_symlinked(site: Site) -> str:
    os.symlink(site.outside, site.paths.quarantine)
    plant_record(site, GOOD, {"op": "quarantine", "name": GOOD, "domain": GOOD,
                              "old": ["crt", "key"], "dest": f"{GOOD}.20260101T000000Z"})
    return GOOD


def _symlinked_entry(site: Site) -> str:
    site.journal.mkdir(parents=True, exist_ok=True)
    os.symlink(site.outside / "target", site.journal / "link.test")
    return "link.test"


def _symlinked_record(site: Site) -> str:
    (site.outside / "record").write_text(json.dumps(
        {"op": "delete", "name": GOOD, "domain": GOOD, "old": ["crt", "key"]}))
    site.sentinel = snapshot(site.outside)
    folder = site.journal / GOOD
    folder.mkdir(parents=True)
    os.symlink(site.outside / "record", folder / "JOURNAL")
    return GOOD


def _fifo_record(site: Site) -> str:
    folder = site.journal / GOOD
    folder.mkdir(parents=True)
    os.mkfifo(folder / "JOURNAL")
    return GOOD


def _garbage_record(site: Site) -> str:
    plant_record(site, GOOD, b"{not a record")
    return GOOD


PLANTS: dict[str, Callable[[Site], str]] = {
    "delete-traversal": _delete_traversal,
    "put-traversal": _put_traversal,
    "absolute-name": _absolute_name,
    "record-names-another-folder": _other_name,
    "quarantine-dest-outside": _quarantine_outside,
    "quarantine-folder-symlinked": _quarantine_folder_symlinked,
    "symlinked-entry": _symlinked_entry,
    "symlinked-record": _symlinked_record,
    "fifo-record": _fifo_record,
    "garbage-record": _garbage_record,
}


@pytest.mark.timeout(30)  # a FIFO record used to block recovery forever
@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_planted_journal_entry_is_set_aside_and_never_acted_on(site: Site, plant: str) -> None:
    entry = PLANTS[plant](site)
    plant_real_delete(site)
    store = LegoStore(site.paths)
    try:
        lines = store.recover()
    except StoreError as exc:
        site.record(PLANTED, ok=False)
        pytest.fail(f"recover() raised for one planted entry: {exc}")
    again = LegoStore(site.paths).recover()
    rejected = sorted(os.listdir(site.paths.journal_rejected)) if os.path.isdir(
        site.paths.journal_rejected) else []
    real_done = not site.paths.cert(REAL).exists() and not (site.journal / REAL).exists()
    said = [ln for ln in lines if ln.startswith(f"{entry}: journal entry rejected")]
    ok = (bool(said) and not os.path.lexists(site.journal / entry) and again == []
          and [r.startswith(f"{entry}-") for r in rejected] == [True] and real_done)
    site.record(PLANTED, ok)
    assert site.outside_changes() == 0, "recovery touched files outside the store"
    assert site.good_intact(), "recovery removed or moved the files of good.test"
    assert said, lines
    assert "not acted on" in said[0] and str(site.paths.journal_rejected) in said[0]
    assert not os.path.lexists(site.journal / entry) and len(rejected) == 1, rejected
    assert real_done, f"the genuine interrupted delete of {REAL} was not finished: {lines}"
    assert again == [], f"the planted entry came back at the next start: {again}"
    assert store.load_all()[0].keys() == {GOOD}


def test_a_planted_journal_rejected_folder_leaves_the_entry_in_place(site: Site) -> None:
    """journal-rejected/ itself symlinked outside: the bad entry cannot be moved there, so it
    stays where it is, still never acted on."""
    _delete_traversal(site)
    os.symlink(site.outside / "target", site.paths.journal_rejected)
    lines = LegoStore(site.paths).recover()
    said = [ln for ln in lines if ln.startswith("evil: journal entry rejected")]
    ok = bool(said) and "stays in place" in said[0] and (site.journal / "evil").is_dir()
    site.record(PLANTED, ok)
    assert site.outside_changes() == 0 and site.good_intact()
    assert ok, lines


async def test_run_start_up_survives_a_symlinked_journal_entry(site: Site) -> None:
    """App.prepare is what `run` does at start: it must report, not raise (NJet does not restart
    a dead copilot)."""
    _symlinked_entry(site)
    _delete_traversal(site)
    plant_real_delete(site)
    config = parse_config({"njet": {"apiAddress": ""}}, prefix=site.paths.prefix)
    app = App(config)
    try:
        await app.prepare()
        raised = None
    except StoreError as exc:
        raised = exc
    finally:
        await app.close()
    ok = raised is None and not (site.journal / "link.test").exists()
    site.record(PLANTED, ok)
    assert raised is None, f"start-up recovery raised: {raised}"
    assert not site.paths.cert(REAL).exists() and site.good_intact()
    assert sorted(os.listdir(site.journal)) == [] and site.outside_changes() == 0


# -- the lock and other writes ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dangling-symlink"])
def test_a_planted_lock_file_is_refused_and_never_written_through(site: Site, kind: str) -> None:
    lock_path = site.paths.lock
    if kind == "symlink":
        os.symlink(site.outside / "victim", lock_path)
    elif kind == "dangling-symlink":
        os.symlink(site.outside / "created-by-lock", lock_path)
    else:
        os.mkfifo(lock_path)
    lock = StoreLock(site.paths)
    try:
        lock.try_acquire()
        error = None
    except StoreError as exc:
        error = str(exc)
    finally:
        lock.release()
    expected = "symbolic link" if "symlink" in kind else "FIFO"
    ok = error is not None and str(lock_path) in error and expected in error
    site.record(PLANTED, ok)
    assert site.outside_changes() == 0, "the lock wrote through a planted link"
    assert ok, error


def test_a_symlinked_status_folder_is_refused_and_a_symlinked_status_file_replaced(
    site: Site,
) -> None:
    files = StatusFiles(site.paths)
    status = CertStatus(domain=GOOD, attempts=1)
    site.paths.status.mkdir()
    os.symlink(site.outside / "victim", site.paths.status_file(GOOD))
    files.save(status)  # renamed over the link: the link goes, its target stays
    replaced = not site.paths.status_file(GOOD).is_symlink() and files.load(GOOD) == status
    site.paths.status_file(GOOD).unlink()
    site.paths.status.rmdir()
    os.symlink(site.outside / "target", site.paths.status)
    try:
        files.save(status)
        error = None
    except StoreError as exc:
        error = str(exc)
    ok = replaced and error is not None and "outside the store" in error
    site.record(PLANTED, ok)
    assert site.outside_changes() == 0, "a status write landed outside the store"
    assert replaced and error is not None and str(site.paths.status) in error, error


# -- special files ----------------------------------------------------------------------------


def _store_two(site: Site, name: str) -> None:
    LegoStore(site.paths).put(name, pair(name).issued())


@pytest.mark.timeout(30)  # without the fix, reading the FIFO blocks forever
@pytest.mark.parametrize("slot", [".crt", ".key"])
def test_a_fifo_in_a_pair_is_a_problem_not_a_hang(site: Site, slot: str) -> None:
    _store_two(site, "fifo.test")
    path = site.paths.certificates / f"fifo.test{slot}"
    path.unlink()
    os.mkfifo(path)
    store = LegoStore(site.paths)
    usable, problems = store.load_all()
    why = problems.get("fifo.test", "")
    with pytest.raises(StoreError, match="FIFO") as caught:
        store.get("fifo.test")
    pem_refused = False
    try:
        store.cert_pem("fifo.test") if slot == ".crt" else store.key_pem("fifo.test")
    except StoreError as exc:
        pem_refused = str(path) in str(exc)
    ok = "FIFO" in why and str(path) in why and set(usable) == {GOOD} and pem_refused
    site.record(SPECIAL, ok)
    assert ok, (why, set(usable), pem_refused)
    assert str(path) in str(caught.value)


_DEV_ZERO_CHILD = r"""
import json, resource, sys
from pathlib import Path
limit = 1 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from controller.adapters.store.lego import LegoStore
from controller.paths import StorePaths
usable, problems = LegoStore(StorePaths(Path(sys.argv[1]))).load_all()
print(json.dumps({"usable": sorted(usable), "problems": problems}))
"""


def test_a_key_symlinked_to_dev_zero_is_a_problem_not_a_memory_error(site: Site) -> None:
    _store_two(site, "zero.test")
    key = site.paths.key("zero.test")
    key.unlink()
    os.symlink("/dev/zero", key)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft < 1 << 30:
        pytest.skip("the address-space limit is already below 1 GiB")
    child = subprocess.run([sys.executable, "-c", _DEV_ZERO_CHILD, str(site.paths.prefix)],
                           capture_output=True, text=True, timeout=60, check=False)
    doc = json.loads(child.stdout) if child.returncode == 0 else {}
    why = doc.get("problems", {}).get("zero.test", "")
    ok = "symbolic link" in why and str(key) in why and doc.get("usable") == [GOOD]
    site.record(SPECIAL, ok)
    assert child.returncode == 0, child.stderr[-2000:]
    assert ok, doc


def test_a_key_symlinked_outside_is_a_problem(site: Site) -> None:
    _store_two(site, "x.test")
    key = site.paths.key("x.test")
    key.unlink()
    os.symlink(site.outside / "x.key", key)  # the very key of x.test: only the link is wrong
    usable, problems = LegoStore(site.paths).load_all()
    why = problems.get("x.test", "")
    ok = "symbolic link" in why and set(usable) == {GOOD}
    site.record(SPECIAL, ok)
    assert ok, why


def test_an_oversized_certificate_is_a_problem(site: Site) -> None:
    _store_two(site, "big.test")
    crt = site.paths.cert("big.test")
    crt.write_bytes(pair("big.test").fullchain_pem + b"# padding\n" * 150_000)  # 1.5 MB
    usable, problems = LegoStore(site.paths).load_all()
    why = problems.get("big.test", "")
    ok = "1 MiB" in why and str(crt) in why and set(usable) == {GOOD}
    site.record(SPECIAL, ok)
    assert ok, why


def test_a_folder_named_like_a_certificate_is_a_problem(site: Site) -> None:
    _store_two(site, "dir.test")
    crt = site.paths.cert("dir.test")
    crt.unlink()
    crt.mkdir()
    usable, problems = LegoStore(site.paths).load_all()
    why = problems.get("dir.test", "")
    ok = "directory" in why and set(usable) == {GOOD}
    site.record(SPECIAL, ok)
    assert ok, why


@pytest.mark.timeout(30)
def test_fifo_resource_index_status_runtime_and_account_files_never_hang(site: Site) -> None:
    _store_two(site, "meta.test")
    resource_file = site.paths.resource("meta.test")
    resource_file.unlink()
    os.mkfifo(resource_file)
    os.mkfifo(site.paths.index)
    usable, problems = LegoStore(site.paths).load_all()
    # an unreadable .json costs only the certUrl, exactly as an unparsable one does
    meta_ok = usable.get("meta.test") is not None and usable["meta.test"].cert_url is None
    files = StatusFiles(site.paths)
    files.save(CertStatus(domain=GOOD, attempts=2))
    os.mkfifo(site.paths.status_file("meta.test"))
    statuses = files.load_all()
    status_ok = set(statuses) == {GOOD} and files.load("meta.test") is None
    site.paths.runtime.mkdir()
    runtime = RuntimeStore(site.paths)
    os.mkfifo(runtime.path)
    with pytest.raises(StoreError, match="FIFO") as runtime_error:
        runtime.load()
    account = site.paths.accounts / "ca" / "me@example.test"
    (account / "keys").mkdir(parents=True)
    os.mkfifo(account / "keys" / "me@example.test.key")
    with pytest.raises(ConfigError, match="FIFO") as account_error:
        load_account(AccountFiles(account, account / "account.json",
                                  account / "keys" / "me@example.test.key"))
    ok = meta_ok and status_ok and problems == {}
    site.record(SPECIAL, ok)
    assert ok, (usable, problems, statuses)
    assert str(runtime.path) in str(runtime_error.value)
    assert "me@example.test.key" in str(account_error.value)
