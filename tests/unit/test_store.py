"""LegoStore: lego layout, adoption of lego/NJet pairs, load_all problems, caching, I/O errors."""

from __future__ import annotations

import errno
import json
import os
import pwd
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.store import fsutil
from controller.adapters.store import lego as store_module
from controller.adapters.store import pairs as pairs_module
from controller.adapters.store.lego import LegoStore
from controller.certinfo import fingerprint_pem, read_cert_info
from controller.errors import StoreError
from controller.model import IssuedCert, KeyType, StoredCert
from controller.paths import StorePaths
from tests.certbuilder import LocalCA, MadeCert, cached_key, make_cert


@pytest.fixture
def paths(tmp_path: Path) -> StorePaths:
    return StorePaths(tmp_path / "njet")


@pytest.fixture
def store(paths: StorePaths) -> LegoStore:
    return LegoStore(paths)


def files_of(paths: StorePaths) -> list[str]:
    """Every file under .lego/, relative, sorted (what a crash or an error may leave)."""
    root = paths.lego
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def write_lego_pair(
    paths: StorePaths, name: str, made: MadeCert, *, extra: dict[str, object]
) -> None:
    """Files as lego / NJet's Go cert-manager write them (all 0600, .json with more fields)."""
    paths.certificates.mkdir(parents=True, exist_ok=True)
    base = paths.certificates / name
    for suffix, data in (
        (".crt", made.fullchain_pem),
        (".issuer.crt", made.chain_pem),
        (".key", made.key_pem),
        (".json", json.dumps({"domain": name, **extra}, indent="\t").encode()),
    ):
        Path(f"{base}{suffix}").write_bytes(data)
        os.chmod(f"{base}{suffix}", 0o600)


# -- layout -------------------------------------------------------------------------------------


def test_put_writes_lego_layout_with_fullchain_issuer_key_and_resource(
    store: LegoStore, paths: StorePaths
) -> None:
    made = make_cert(["a.test", "www.a.test"])
    stored = store.put("a.test", made.issued("https://ca.test/cert/a1"))
    assert paths.cert("a.test").read_bytes() == made.fullchain_pem
    assert paths.issuer("a.test").read_bytes() == made.chain_pem
    assert paths.key("a.test").read_bytes() == made.key_pem
    assert json.loads(paths.resource("a.test").read_bytes()) == {
        "domain": "a.test",
        "certUrl": "https://ca.test/cert/a1",
        "certStableUrl": "https://ca.test/cert/a1",
    }
    assert stat.S_IMODE(paths.key("a.test").stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.certificates.stat().st_mode) == 0o700
    assert stored.domain == "a.test" and stored.key_matches
    assert stored.info.fingerprint == fingerprint_pem(made.cert_pem)
    assert stored.cert_url == "https://ca.test/cert/a1"
    assert files_of(paths) == [
        "certificates/a.test.crt",
        "certificates/a.test.issuer.crt",
        "certificates/a.test.json",
        "certificates/a.test.key",
    ]


def test_wildcard_names_are_stored_with_underscore_and_loaded_with_star(
    store: LegoStore, paths: StorePaths
) -> None:
    store.put("*.b.test", make_cert(["*.b.test", "b.test"]).issued())
    assert (paths.certificates / "_.b.test.crt").is_file()
    usable, problems = store.load_all()
    assert list(usable) == ["*.b.test"] and problems == {}
    assert store.get("*.b.test") is not None


def test_put_replaces_the_previous_pair(store: LegoStore, paths: StorePaths) -> None:
    store.put("a.test", make_cert(["a.test"]).issued("https://ca.test/1"))
    new = make_cert(["a.test"], key_type=KeyType.EC384)
    stored = store.put("a.test", new.issued("https://ca.test/2"))
    assert stored.info.fingerprint == fingerprint_pem(new.cert_pem)
    assert stored.info.key_type is KeyType.EC384
    assert paths.key("a.test").read_bytes() == new.key_pem
    assert store.load_all()[0]["a.test"].cert_url == "https://ca.test/2"
    assert not any(paths.journal.iterdir())


def test_put_derives_the_issuer_file_from_the_fullchain_when_not_given(
    store: LegoStore, paths: StorePaths
) -> None:
    made = make_cert(["a.test"])
    store.put("a.test", IssuedCert(made.fullchain_pem, b"", made.key_pem, "https://ca.test/1"))
    assert paths.issuer("a.test").read_bytes() == made.chain_pem


def test_a_leaf_only_certificate_leaves_no_stale_issuer_file(
    store: LegoStore, paths: StorePaths
) -> None:
    store.put("a.test", make_cert(["a.test"]).issued())
    leaf = make_cert(["a.test"], self_signed=True)
    store.put("a.test", IssuedCert(leaf.cert_pem, b"", leaf.key_pem, "https://ca.test/2"))
    assert not paths.issuer("a.test").exists()
    assert store.get("a.test") is not None


def test_put_refuses_a_key_that_does_not_match_and_keeps_the_old_pair(
    store: LegoStore, paths: StorePaths
) -> None:
    old = make_cert(["a.test"])
    store.put("a.test", old.issued())
    other = make_cert(["a.test"])
    bad = IssuedCert(other.fullchain_pem, other.chain_pem, old.key_pem, "https://ca.test/x")
    with pytest.raises(StoreError, match="does not match"):
        store.put("a.test", bad)
    assert paths.cert("a.test").read_bytes() == old.fullchain_pem


def test_put_refuses_an_unparsable_key_without_echoing_it(store: LegoStore) -> None:
    made = make_cert(["a.test"])
    key_body = made.key_pem.splitlines()[1]
    broken = made.key_pem.replace(key_body, key_body[:-6] + b"%%%%%%")
    with pytest.raises(StoreError, match="private key") as caught:
        store.put("a.test", IssuedCert(made.fullchain_pem, made.chain_pem, broken, "u"))
    assert key_body.decode()[:20] not in str(caught.value)


def test_put_refuses_a_name_that_is_not_a_hostname(store: LegoStore) -> None:
    with pytest.raises(StoreError, match="not a valid DNS name"):
        store.put("../evil", make_cert(["a.test"]).issued())


# -- adoption and problems ----------------------------------------------------------------------


def test_pairs_written_by_lego_are_adopted_with_their_cert_url(
    store: LegoStore, paths: StorePaths
) -> None:
    made = make_cert(["lego.test", "www.lego.test"], key_pem=cached_key(KeyType.RSA2048))
    write_lego_pair(
        paths,
        "lego.test",
        made,
        extra={"certUrl": "https://acme/cert/9", "certStableUrl": "https://acme/cert/9", "x": 1},
    )
    usable, problems = store.load_all()
    assert problems == {}
    adopted = usable["lego.test"]
    assert adopted.key_matches and adopted.cert_url == "https://acme/cert/9"
    assert adopted.info.names == ("lego.test", "www.lego.test")
    assert adopted.info.key_type is KeyType.RSA2048
    assert store.key_pem("lego.test") == made.key_pem
    assert store.cert_pem("lego.test") == made.fullchain_pem


def test_a_pair_with_an_unreadable_resource_file_is_still_usable(
    store: LegoStore, paths: StorePaths
) -> None:
    write_lego_pair(paths, "a.test", make_cert(["a.test"]), extra={})
    paths.resource("a.test").write_bytes(b"{not json")
    usable, problems = store.load_all()
    assert usable["a.test"].cert_url is None and problems == {}


def test_the_domain_comes_from_the_file_name_when_the_cert_disagrees(
    store: LegoStore, paths: StorePaths
) -> None:
    write_lego_pair(paths, "x.test", make_cert(["y.test"]), extra={})
    write_lego_pair(paths, "_.w.test", make_cert(["*.W.test"]), extra={})
    usable, _ = store.load_all()
    assert set(usable) == {"x.test", "*.w.test"}
    assert usable["x.test"].info.names == ("y.test",)


def test_unusable_pairs_are_reported_as_problems_and_never_used(
    store: LegoStore, paths: StorePaths
) -> None:
    good = make_cert(["good.test"])
    write_lego_pair(paths, "good.test", good, extra={})
    write_lego_pair(paths, "mismatch.test", make_cert(["mismatch.test"]), extra={})
    paths.key("mismatch.test").write_bytes(make_cert(["mismatch.test"]).key_pem)
    write_lego_pair(paths, "nokey.test", make_cert(["nokey.test"]), extra={})
    paths.key("nokey.test").unlink()
    write_lego_pair(paths, "badcert.test", make_cert(["badcert.test"]), extra={})
    paths.cert("badcert.test").write_bytes(b"-----BEGIN CERTIFICATE-----\nAA==\n")
    write_lego_pair(paths, "badkey.test", make_cert(["badkey.test"]), extra={})
    paths.key("badkey.test").write_bytes(b"junk")
    write_lego_pair(paths, "nocert.test", make_cert(["nocert.test"]), extra={})
    paths.cert("nocert.test").unlink()

    usable, problems = store.load_all()
    assert list(usable) == ["good.test"]
    assert set(problems) == {
        "mismatch.test",
        "nokey.test",
        "badcert.test",
        "badkey.test",
        "nocert.test",
    }
    assert "does not match" in problems["mismatch.test"]
    assert "has no key file" in problems["nokey.test"]
    assert "cannot be read" in problems["badcert.test"]
    assert "badkey.test.key" in problems["badkey.test"]
    assert "has no certificate" in problems["nocert.test"]
    assert "junk" not in problems["badkey.test"]


def test_get_tells_missing_mismatched_and_unparsable_pairs_apart(
    store: LegoStore, paths: StorePaths
) -> None:
    assert store.get("a.test") is None
    assert store.key_pem("a.test") is None and store.cert_pem("a.test") is None
    write_lego_pair(paths, "a.test", make_cert(["a.test"]), extra={})
    paths.key("a.test").write_bytes(make_cert(["a.test"]).key_pem)
    mismatched = store.get("a.test")
    assert mismatched is not None and not mismatched.key_matches
    paths.cert("a.test").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="cannot be read"):
        store.get("a.test")
    paths.key("a.test").unlink()
    assert store.get("a.test") is None


def test_leftover_temp_files_are_ignored_and_removed_by_recover(
    store: LegoStore, paths: StorePaths
) -> None:
    store.put("a.test", make_cert(["a.test"]).issued())
    temp = paths.certificates / f".a.test.crt{fsutil.TEMP_INFIX}0badc0de"
    temp.write_bytes(b"half a cert")
    paths.status.mkdir()
    status_temp = paths.status / f".a.test.json{fsutil.TEMP_INFIX}12345678"
    status_temp.write_bytes(b"{")
    usable, problems = store.load_all()
    assert list(usable) == ["a.test"] and problems == {}
    lines = store.recover()
    assert not temp.exists() and not status_temp.exists()
    assert any(str(temp) in line for line in lines)
    assert store.recover() == []


def test_recover_of_a_clean_or_absent_store_does_nothing(
    store: LegoStore, paths: StorePaths
) -> None:
    assert store.recover() == []
    store.put("a.test", make_cert(["a.test"]).issued())
    assert store.recover() == []


# -- caching ------------------------------------------------------------------------------------


def test_unchanged_files_are_not_parsed_again(
    store: LegoStore, paths: StorePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a.test", "b.test"):
        write_lego_pair(paths, name, make_cert([name]), extra={})
    calls: list[bytes] = []

    def counting(pem: bytes) -> object:
        calls.append(pem)
        return read_cert_info(pem)

    monkeypatch.setattr(pairs_module, "read_cert_info", counting)  # where a pair is parsed
    first = store.load_all()
    assert len(calls) == 2
    lazy = LegoStore(paths, verify_interval=0)  # forces a full stat pass every time
    lazy.load_all()
    calls.clear()
    assert lazy.load_all() == lazy.load_all()
    assert calls == []
    assert store.load_all() == first


def test_a_file_replaced_or_rewritten_in_place_is_parsed_again(paths: StorePaths) -> None:
    store = LegoStore(paths, verify_interval=0)
    write_lego_pair(paths, "a.test", make_cert(["a.test"]), extra={})
    before = store.load_all()[0]["a.test"].info.fingerprint
    newer = make_cert(["a.test"])
    paths.cert("a.test").write_bytes(newer.fullchain_pem)  # in place, as lego writes
    paths.key("a.test").write_bytes(newer.key_pem)
    after = store.load_all()[0]["a.test"].info.fingerprint
    assert before != after == fingerprint_pem(newer.cert_pem)


def test_a_settled_folder_is_answered_from_the_last_scan_until_it_changes(
    paths: StorePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)
    store = LegoStore(paths)
    write_lego_pair(paths, "a.test", make_cert(["a.test"]), extra={})
    _wait_for_clock_past(paths.certificates)
    assert list(store.load_all()[0]) == ["a.test"]
    scans: list[Path] = []
    real_scan = store._scan

    def counting_scan(directory: Path) -> tuple[dict[str, StoredCert], dict[str, str]]:
        scans.append(directory)
        return real_scan(directory)

    monkeypatch.setattr(store, "_scan", counting_scan)
    assert list(store.load_all()[0]) == ["a.test"]
    assert scans == []  # one stat of the folder, nothing else
    _wait_for_clock_past(paths.certificates)
    write_lego_pair(paths, "b.test", make_cert(["b.test"]), extra={})
    assert sorted(store.load_all()[0]) == ["a.test", "b.test"]
    assert scans == [paths.certificates]


def _wait_for_clock_past(directory: Path) -> None:
    """Poll until the wall clock has moved past the folder's ctime (timestamps are coarse)."""
    ctime = directory.stat().st_ctime_ns
    deadline = time.monotonic() + 5
    while time.time_ns() <= ctime + 20_000_000 and time.monotonic() < deadline:
        time.sleep(0.005)


def test_a_no_op_load_all_over_10000_certificates_opens_no_file_and_stats_only_the_folder(
    paths: StorePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How long it takes is a bench figure (bench/scale.py: the no-op pass over 10,000 blocks
    and certificates, goal < 100 ms); here, that its work does not grow with the store."""
    monkeypatch.setattr(store_module, "SETTLE_NS", 0)
    store = LegoStore(paths)
    made = make_cert(["seed.test"])
    store.put("seed.test", made.issued())
    for i in range(10_000):  # hard links: realistic directory size, quick to set up
        for suffix in (".crt", ".key", ".issuer.crt", ".json"):
            os.link(
                paths.certificates / f"seed.test{suffix}", paths.certificates / f"h{i}.test{suffix}"
            )
    _wait_for_clock_past(paths.certificates)
    usable, problems = store.load_all()  # the one full parse
    assert len(usable) == 10_001 and problems == {}
    stats: list[Any] = []
    listed: list[Any] = []
    opened: list[Any] = []
    scans: list[Any] = []
    real_stat, real_lstat, real_scandir, real_scan = os.stat, os.lstat, os.scandir, store._scan
    real_open = os.open

    def counting(real: Callable[..., Any], seen: list[Any]) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(path)
            return real(path, *args, **kwargs)
        return call

    with monkeypatch.context() as m:
        m.setattr(store, "_scan", counting(real_scan, scans))
        m.setattr(os, "stat", counting(real_stat, stats))
        m.setattr(os, "lstat", counting(real_lstat, stats))
        m.setattr(os, "scandir", counting(real_scandir, listed))
        m.setattr(os, "open", counting(real_open, opened))
        again, _ = store.load_all()
    assert len(again) == 10_001
    assert scans == [] and listed == [], "the no-op listed the folder again"
    assert opened == [], f"the no-op opened {len(opened)} files"
    inside = [p for p in stats
              if isinstance(p, str | os.PathLike) and Path(p).parent == paths.certificates]
    assert inside == [], f"the no-op stat'ed {len(inside)} files of the folder"
    assert len(stats) <= 3, stats  # the folder itself: constant, not one per certificate


# -- delete and quarantine ----------------------------------------------------------------------


def test_delete_removes_every_file_of_the_name_and_reports_absence(
    store: LegoStore, paths: StorePaths
) -> None:
    store.put("a.test", make_cert(["a.test"]).issued())
    store.put("b.test", make_cert(["b.test"]).issued())
    (paths.certificates / "a.test.pem").write_bytes(b"lego --pem output")
    assert store.delete("a.test") is True
    assert files_of(paths) == [
        f"certificates/b.test{s}" for s in (".crt", ".issuer.crt", ".json", ".key")
    ]
    assert store.delete("a.test") is False
    assert list(store.load_all()[0]) == ["b.test"]


def test_quarantine_moves_the_pair_into_a_timestamped_folder(
    paths: StorePaths,
) -> None:
    instant = datetime(2026, 11, 27, 4, 5, 6, tzinfo=UTC)
    store = LegoStore(paths, now=lambda: instant)
    made = make_cert(["a.test"])
    store.put("a.test", made.issued())
    where = store.quarantine("a.test")
    assert where == str(paths.quarantine / "a.test.20261127T040506Z")
    moved = Path(where)
    assert (moved / "a.test.crt").read_bytes() == made.fullchain_pem
    assert (moved / "a.test.key").read_bytes() == made.key_pem
    assert stat.S_IMODE((moved / "a.test.key").stat().st_mode) == 0o600
    assert store.get("a.test") is None and store.load_all() == ({}, {})
    store.put("a.test", make_cert(["a.test"]).issued())
    second = store.quarantine("a.test")
    assert second is not None and second != where and Path(second).is_dir()
    assert store.quarantine("a.test") is None


# -- I/O errors ---------------------------------------------------------------------------------


def _fail_nth(n: int, err: int, real: object) -> object:
    count = {"calls": 0}

    def failing(*args: object) -> object:
        count["calls"] += 1
        if count["calls"] == n:
            raise OSError(err, os.strerror(err))
        assert callable(real)
        return real(*args)

    return failing


@pytest.mark.parametrize("nth_write", [1, 2, 3, 4, 5], ids=lambda n: f"write{n}")
def test_disk_full_while_writing_leaves_the_old_pair_intact(
    store: LegoStore, paths: StorePaths, monkeypatch: pytest.MonkeyPatch, nth_write: int
) -> None:
    old = make_cert(["a.test"])
    store.put("a.test", old.issued())
    before = files_of(paths)
    monkeypatch.setattr(fsutil, "_write_fd", _fail_nth(nth_write, errno.ENOSPC, fsutil._write_fd))
    with pytest.raises(StoreError, match=r"ENOSPC") as caught:
        store.put("a.test", make_cert(["a.test"]).issued())
    assert str(paths.lego) in str(caught.value)
    monkeypatch.undo()
    assert files_of(paths) == before
    assert store.get("a.test") is not None
    assert paths.cert("a.test").read_bytes() == old.fullchain_pem
    assert paths.key("a.test").read_bytes() == old.key_pem


@pytest.mark.parametrize("nth_rename", [1, 2, 3, 4], ids=lambda n: f"rename{n}")
@pytest.mark.parametrize("first_issuance", [False, True], ids=["replace", "first"])
def test_a_failed_rename_mid_swap_is_undone(
    store: LegoStore,
    paths: StorePaths,
    monkeypatch: pytest.MonkeyPatch,
    nth_rename: int,
    first_issuance: bool,
) -> None:
    old = make_cert(["a.test"])
    if not first_issuance:
        store.put("a.test", old.issued())
    before = files_of(paths)
    monkeypatch.setattr(
        fsutil, "replace_file", _fail_nth(nth_rename, errno.EIO, fsutil.replace_file)
    )
    with pytest.raises(StoreError, match="previous files are unchanged") as caught:
        store.put("a.test", make_cert(["a.test"]).issued())
    assert "certificates/a.test" in str(caught.value) and "EIO" in str(caught.value)
    monkeypatch.undo()
    assert files_of(paths) == before
    if first_issuance:
        assert store.load_all() == ({}, {})
    else:
        assert paths.key("a.test").read_bytes() == old.key_pem
        assert paths.cert("a.test").read_bytes() == old.fullchain_pem
    assert store.recover() == []


@pytest.mark.parametrize("err", [errno.EROFS, errno.EACCES], ids=["EROFS", "EACCES"])
def test_a_read_only_or_forbidden_store_raises_store_error_naming_the_path(
    store: LegoStore, paths: StorePaths, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    old = make_cert(["a.test"])
    store.put("a.test", old.issued())
    before = files_of(paths)

    def refused(path: Path, flags: int, mode: int) -> int:
        raise OSError(err, os.strerror(err), str(path))

    monkeypatch.setattr(fsutil, "_open", refused)  # as root, chmod would not stop us
    with pytest.raises(StoreError, match=errno.errorcode[err]) as caught:
        store.put("a.test", make_cert(["a.test"]).issued())
    assert "certificates/a.test" in str(caught.value)
    monkeypatch.undo()
    assert files_of(paths) == before


def _run_unprivileged(body: Callable[[], str], *, owner_of: Path) -> str:
    """Run `body` in a forked child as `nobody` when we are root (root ignores chmod)."""
    if os.geteuid() != 0:
        return body()
    nobody = pwd.getpwnam("nobody")
    os.chown(owner_of, nobody.pw_uid, nobody.pw_gid)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            out = body()
        except BaseException as exc:
            out = f"child failed: {type(exc).__name__}: {exc}"
        os.write(write_end, out.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        result = pipe.read().decode()
    os.waitpid(pid, 0)
    return result


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's tmp_path parents are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="njcm-ro-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("folder", ["certificates", "journal"])
def test_a_really_read_only_folder_raises_store_error_and_keeps_the_pair(
    tmp_path: Path, reachable_dir: Path, folder: str
) -> None:
    owned = reachable_dir
    paths = StorePaths(owned / "njet")
    old, new = make_cert(["a.test"]), make_cert(["a.test"])
    LegoStore(StorePaths(tmp_path / "warm")).put("a.test", old.issued())  # imports done

    def body() -> str:
        store = LegoStore(paths)
        store.put("a.test", old.issued())
        read_only = getattr(paths, folder)
        os.chmod(read_only, 0o500)
        try:
            store.put("a.test", new.issued())
        except StoreError as exc:
            outcome = str(exc)
        else:
            outcome = "no error"
        finally:
            os.chmod(read_only, 0o700)
        kept = paths.key("a.test").read_bytes() == old.key_pem
        return f"{outcome} | kept={kept} | recover={store.recover()}"

    outcome = _run_unprivileged(body, owner_of=owned)
    assert "EACCES" in outcome and str(paths.lego) in outcome
    assert outcome.endswith("| kept=True | recover=[]")


def test_a_failed_delete_is_undone(
    store: LegoStore, paths: StorePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("a.test", make_cert(["a.test"]).issued())
    before = files_of(paths)
    monkeypatch.setattr(fsutil, "replace_file", _fail_nth(2, errno.EIO, fsutil.replace_file))
    with pytest.raises(StoreError, match="cannot remove"):
        store.delete("a.test")
    monkeypatch.undo()
    assert files_of(paths) == before


def test_chains_with_intermediates_round_trip(store: LegoStore, paths: StorePaths) -> None:
    sub = LocalCA.create("rt root").intermediate("rt sub")
    made = make_cert(["a.test"], issuer=sub)
    store.put("a.test", made.issued())
    assert paths.issuer("a.test").read_bytes() == made.chain_pem
    assert store.get("a.test") is not None
    assert read_cert_info(paths.cert("a.test").read_bytes()).issuer == "CN=rt sub"
