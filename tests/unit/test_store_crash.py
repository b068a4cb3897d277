"""Crash safety of the store: SIGKILL at every named fault point, then recover().

Each scenario runs the store operation in a separate process with NJCM_FAULT_POINT set, checks
that the process died by SIGKILL, then recovers in the test process and checks the invariant:
the name holds a complete old pair or a complete new pair (or nothing, for an interrupted
first issuance) — cert and key match, issuer and .json consistent — with no temp or journal
files left and the key at mode 0600.

Forking ~80 fresh interpreters costs ~0.4 s each, so the processes are forked from one
"zygote" interpreter that has already imported the store; each child is still a separate
process that is really SIGKILLed. One test also runs a plain `python -c` child end to end.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller import faultpoints
from controller.adapters.store import fsutil
from controller.adapters.store.journal import POINTS
from controller.adapters.store.lego import LegoStore
from controller.certinfo import fingerprint_pem, key_matches_cert
from controller.paths import StorePaths
from tests.certbuilder import MadeCert, make_cert

DOMAIN = "a.test"

_CHILD_SETUP = r"""
import errno, json, os, sys
from pathlib import Path
from controller.adapters.store import fsutil
from controller.adapters.store.lego import LegoStore
from controller.model import IssuedCert
from controller.paths import StorePaths

def run(job):
    if "point" in job:
        os.environ["NJCM_FAULT_POINT"] = job["point"]
    store = LegoStore(StorePaths(Path(job["prefix"])))
    failing = job.get("fail_rename_of")
    if failing:
        real = fsutil.replace_file
        def replace_file(source, target):
            if str(source) == failing:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(source, target)
        fsutil.replace_file = replace_file
    for op in job["ops"]:
        if op.startswith("put"):
            new = job["pairs"][op.partition(":")[2] or "new"]
            store.put(job["domain"], IssuedCert(new["crt"].encode(), new["issuer"].encode(),
                                                new["key"].encode(), new["url"]))
        elif op == "delete":
            store.delete(job["domain"])
        elif op == "quarantine":
            store.quarantine(job["domain"])
        elif op == "recover":
            store.recover()
"""

_ZYGOTE = (
    _CHILD_SETUP
    + r"""
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run(job)
        except BaseException as exc:
            sys.stderr.write(f"child: {type(exc).__name__}: {exc}\n")
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    killed = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    print(json.dumps({"signal": killed, "exit": code}), flush=True)
"""
)


class Zygote:
    """One interpreter that forks a child per crash scenario and reports how it ended."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != faultpoints.ENV_VAR},
        )

    def run(self, job: dict[str, object]) -> dict[str, int | None]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, "the zygote process died"
        result: dict[str, int | None] = json.loads(answer)
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


@dataclass(frozen=True)
class Pairs:
    old: MadeCert
    new: MadeCert


@pytest.fixture(scope="module")
def pairs() -> Pairs:
    return Pairs(old=make_cert([DOMAIN, "www.a.test"]), new=make_cert([DOMAIN, "new.a.test"]))


def _points(prefix: str, *, rollback: bool) -> list[str]:
    chosen = [p for p in POINTS if p.startswith(prefix + ".")]
    return [p for p in chosen if (".rollback." in p) == rollback]


PUT_POINTS = _points("store.put", rollback=False)
PUT_ROLLBACK_POINTS = _points("store.put", rollback=True)
DELETE_POINTS = _points("store.delete", rollback=False)
DELETE_ROLLBACK_POINTS = _points("store.delete", rollback=True)
QUARANTINE_POINTS = _points("store.quarantine", rollback=False)
QUARANTINE_ROLLBACK_POINTS = _points("store.quarantine", rollback=True)


def _job(
    paths: StorePaths, pairs: Pairs, point: str | None, ops: list[str], **extra: object
) -> dict[str, object]:
    def pem(made: MadeCert, label: str) -> dict[str, str]:
        return {
            "crt": made.fullchain_pem.decode(),
            "issuer": made.chain_pem.decode(),
            "key": made.key_pem.decode(),
            "url": f"https://ca.test/{label}",
        }

    job: dict[str, object] = {
        "prefix": str(paths.prefix),
        "domain": DOMAIN,
        "ops": ops,
        "pairs": {"old": pem(pairs.old, "old"), "new": pem(pairs.new, "new")},
        **extra,
    }
    if point is not None:
        job["point"] = point
    return job


def _seed_old(paths: StorePaths, pairs: Pairs) -> None:
    LegoStore(paths).put(DOMAIN, pairs.old.issued("https://ca.test/old"))


def _kill_and_recover(zygote: Zygote, job: dict[str, object], paths: StorePaths) -> list[str]:
    result = zygote.run(job)
    assert result["signal"] == signal.SIGKILL, f"{job['point']} was not reached: {result}"
    return LegoStore(paths).recover()


def _holding(paths: StorePaths, pairs: Pairs) -> str | None:
    """Which pair the name holds after recovery: 'old', 'new' or None; asserts it is whole."""
    store = LegoStore(paths)
    leftovers = [
        p
        for p in paths.lego.rglob("*")
        if fsutil.is_temp_name(p.name) or paths.journal in p.parents
    ]
    assert leftovers == []
    names = (
        sorted(p.name for p in paths.certificates.iterdir()) if paths.certificates.exists() else []
    )
    if not names:
        assert store.load_all() == ({}, {})
        return None
    assert names == [f"{DOMAIN}{s}" for s in (".crt", ".issuer.crt", ".json", ".key")]
    crt, key = paths.cert(DOMAIN).read_bytes(), paths.key(DOMAIN).read_bytes()
    assert key_matches_cert(key, crt)
    assert stat.S_IMODE(paths.key(DOMAIN).stat().st_mode) == 0o600
    resource = json.loads(paths.resource(DOMAIN).read_bytes())
    usable, problems = store.load_all()
    assert problems == {} and list(usable) == [DOMAIN]
    for label, made in (("old", pairs.old), ("new", pairs.new)):
        if crt == made.fullchain_pem:
            assert key == made.key_pem
            assert paths.issuer(DOMAIN).read_bytes() == made.chain_pem
            assert resource["certUrl"] == f"https://ca.test/{label}"
            assert usable[DOMAIN].info.fingerprint == fingerprint_pem(made.cert_pem)
            return label
    raise AssertionError("the stored pair is neither the old nor the new one")


@pytest.fixture
def paths(tmp_path: Path) -> StorePaths:
    return StorePaths(tmp_path / "njet")


# -- put ----------------------------------------------------------------------------------------


def _expected_after(point: str, before: str | None) -> str | None:
    """Before the journal record exists the old state stays; from then on the new one wins."""
    order = list(PUT_POINTS)
    return before if order.index(point) < order.index("store.put.after_journal") else "new"


@pytest.mark.parametrize("point", PUT_POINTS)
def test_put_replacing_a_pair_survives_a_kill_at(
    point: str, zygote: Zygote, paths: StorePaths, pairs: Pairs
) -> None:
    _seed_old(paths, pairs)
    lines = _kill_and_recover(zygote, _job(paths, pairs, point, ["put"]), paths)
    assert _holding(paths, pairs) == _expected_after(point, "old")
    if _expected_after(point, "old") == "new" and "journal_removed" not in point:
        assert any("finished" in line for line in lines) or "cleanup" in point


@pytest.mark.parametrize("point", PUT_POINTS)
def test_first_issuance_survives_a_kill_at(
    point: str, zygote: Zygote, paths: StorePaths, pairs: Pairs
) -> None:
    _kill_and_recover(zygote, _job(paths, pairs, point, ["put"]), paths)
    assert _holding(paths, pairs) == _expected_after(point, None)


@pytest.mark.parametrize("first", [False, True], ids=["replace", "first"])
@pytest.mark.parametrize("point", PUT_ROLLBACK_POINTS)
def test_undoing_a_failed_put_survives_a_kill_at(
    point: str, first: bool, zygote: Zygote, paths: StorePaths, pairs: Pairs
) -> None:
    if not first:
        _seed_old(paths, pairs)
    # the second rename (the new .crt) fails, after the new key is already in place
    fail = str(paths.journal / DOMAIN / "new.crt")
    _kill_and_recover(zygote, _job(paths, pairs, point, ["put"], fail_rename_of=fail), paths)
    assert _holding(paths, pairs) == (None if first else "old")


def test_a_kill_during_recovery_is_recovered_by_the_next_recovery(
    zygote: Zygote, paths: StorePaths, pairs: Pairs
) -> None:
    _seed_old(paths, pairs)
    assert zygote.run(_job(paths, pairs, "store.put.after_rename_key", ["put"]))["signal"] == 9
    # the recovery rolls forward and passes the same points again: kill it in the middle
    again = zygote.run(_job(paths, pairs, "store.put.after_rename_crt", ["recover"]))
    assert again["signal"] == signal.SIGKILL
    lines = LegoStore(paths).recover()
    assert _holding(paths, pairs) == "new"
    assert lines == [
        f"{DOMAIN}: finished an interrupted certificate replacement; the new pair is in place"
    ]


# -- delete and quarantine ----------------------------------------------------------------------


@pytest.mark.parametrize("point", DELETE_POINTS)
def test_delete_survives_a_kill_at(
    point: str, zygote: Zygote, paths: StorePaths, pairs: Pairs
) -> None:
    _seed_old(paths, pairs)
    _kill_and_recover(zygote, _job(paths, pairs, point, ["delete"]), paths)
    assert _holding(paths, pairs) is None


@pytest.mark.parametrize("point", DELETE_ROLLBACK_POINTS)
def test_undoing_a_failed_delete_survives_a_kill_at(
    point: str, zygote: Zygote, paths: StorePaths, pairs: Pairs
) -> None:
    _seed_old(paths, pairs)
    fail = str(paths.key(DOMAIN))
    _kill_and_recover(zygote, _job(paths, pairs, point, ["delete"], fail_rename_of=fail), paths)
    assert _holding(paths, pairs) == "old"


def _quarantined(paths: StorePaths, pairs: Pairs) -> None:
    folders = list(paths.quarantine.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith(f"{DOMAIN}.")
    moved = sorted(p.name for p in folders[0].iterdir())
    assert moved == [f"{DOMAIN}{s}" for s in (".crt", ".issuer.crt", ".json", ".key")]
    assert (folders[0] / f"{DOMAIN}.crt").read_bytes() == pairs.old.fullchain_pem
    assert (folders[0] / f"{DOMAIN}.key").read_bytes() == pairs.old.key_pem
    assert stat.S_IMODE((folders[0] / f"{DOMAIN}.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("point", QUARANTINE_POINTS)
def test_quarantine_survives_a_kill_at(
    point: str, zygote: Zygote, paths: StorePaths, pairs: Pairs
) -> None:
    _seed_old(paths, pairs)
    _kill_and_recover(zygote, _job(paths, pairs, point, ["quarantine"]), paths)
    assert _holding(paths, pairs) is None
    _quarantined(paths, pairs)


@pytest.mark.parametrize("point", QUARANTINE_ROLLBACK_POINTS)
def test_undoing_a_failed_quarantine_survives_a_kill_at(
    point: str, zygote: Zygote, paths: StorePaths, pairs: Pairs
) -> None:
    _seed_old(paths, pairs)
    fail = str(paths.key(DOMAIN))
    _kill_and_recover(zygote, _job(paths, pairs, point, ["quarantine"], fail_rename_of=fail), paths)
    assert _holding(paths, pairs) == "old"
    assert not paths.quarantine.exists() or not any(paths.quarantine.iterdir())


# -- the fault point mechanism itself -----------------------------------------------------------


def test_every_store_point_is_covered_by_a_scenario() -> None:
    covered = {
        *PUT_POINTS,
        *PUT_ROLLBACK_POINTS,
        *DELETE_POINTS,
        *DELETE_ROLLBACK_POINTS,
        *QUARANTINE_POINTS,
        *QUARANTINE_ROLLBACK_POINTS,
    }
    assert covered == {p for p in faultpoints.KNOWN_POINTS if p.startswith("store.")}


def test_an_uninterrupted_put_passes_every_put_point_in_order(
    paths: StorePaths, pairs: Pairs
) -> None:
    store = LegoStore(paths)
    with faultpoints.recording() as reached:
        store.put(DOMAIN, pairs.new.issued())
    assert reached == PUT_POINTS


def test_a_fresh_interpreter_dies_at_the_nth_passage_of_a_point(
    paths: StorePaths, pairs: Pairs
) -> None:
    # "after_journal@2" lets the first put (old) finish and kills the second one (new)
    job = _job(paths, pairs, None, ["put:old", "put:new"])
    script = _CHILD_SETUP + "\nrun(json.loads(sys.argv[1]))\n"
    env = {**os.environ, faultpoints.ENV_VAR: "store.put.after_journal@2"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(job)], env=env, timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert LegoStore(paths).recover() != []
    assert _holding(paths, pairs) == "new"


def test_fault_points_are_no_ops_unless_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "store.put.after_journal"
    monkeypatch.delenv(faultpoints.ENV_VAR, raising=False)
    faultpoints.fault_point(name)
    monkeypatch.setenv(faultpoints.ENV_VAR, "store.put.after_backup")
    faultpoints.fault_point(name)
    monkeypatch.setenv(faultpoints.ENV_VAR, f"{name}@1000")
    faultpoints.fault_point(name)  # counted, far from the 1000th passage
    with pytest.raises(RuntimeError, match="never registered"):
        faultpoints.fault_point("store.no.such.point")
    with pytest.raises(ValueError, match="invalid fault point"):
        faultpoints.register("bad@name")
