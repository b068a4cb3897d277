"""Fault injection, disk full / read-only store: the previous certificate stays intact and served,
and the error says what failed where.

- Store level: LegoStore.put of a new pair over a valid old one, with ENOSPC injected at each
  write in turn, EROFS/EACCES at each file creation, rename and mkdir in turn (once, and from
  that call on): StoreError naming the path and errno; after recover() the old files are
  byte-identical, no temp file or journal entry is left, and the store takes the next put.
- A real full filesystem: a 64 KiB tmpfs (skipped with the reason when mount is not allowed).
- Controller level: controller.app.App in store-only mode renewing a due certificate while the
  store cannot be written: the pass reports the failure, the status keeps it with a backoff,
  the old pair stays; when even the status cannot be written, nothing escapes `converge`.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.adapters.store import fsutil
from controller.adapters.store.lego import LegoStore
from controller.adapters.store.statusfile import StatusFiles
from controller.app import App
from controller.certinfo import read_cert_info
from controller.config import parse_config
from controller.errors import StoreError
from controller.model import CertificateSpec, IssuedCert, KeyType
from controller.paths import StorePaths
from controller.plan import ActionKind
from controller.status import CertStatus
from tests.certbuilder import MadeCert, make_cert
from tests.faults import summary
from tests.faults.oserrors import INJECTORS, Injector, inject_write
from tests.fixtures.programs import unavailable

DOMAIN = "a.test"
NAMES = ("a.test", "www.a.test")
SLOTS = ("crt", "key", "issuer", "json")


@functools.cache
def pair(which: str) -> MadeCert:
    return make_cert(list(NAMES), not_before=datetime.now(UTC) - timedelta(hours=1))


def files_of(paths: StorePaths) -> dict[str, bytes | None]:
    where = {"crt": paths.cert(DOMAIN), "key": paths.key(DOMAIN),
             "issuer": paths.issuer(DOMAIN), "json": paths.resource(DOMAIN)}  # fmt: skip
    return {slot: p.read_bytes() if p.exists() else None for slot, p in where.items()}


def leftovers(paths: StorePaths) -> list[str]:
    """Temp files anywhere under .lego/ and entries left in journal/."""
    out = [os.path.join(d, n) for d, _, names in os.walk(paths.lego) for n in names
           if fsutil.is_temp_name(n)]  # fmt: skip
    if paths.journal.exists():
        out += [str(paths.journal / n) for n in os.listdir(paths.journal)]
    return out


@dataclass
class Trial:
    """One injected failure and what it left behind."""

    label: str
    error: str | None = None  # the StoreError message; None = put did not fail
    intact_at_once: bool | None = None  # old files untouched right after the failure
    after_recover: str = "mixed"  # "old" / "new": every file of that pair, byte for byte
    leftovers: tuple[str, ...] = ()
    usable_after: bool = False  # a put without faults then works

    @property
    def deferred(self) -> bool:
        """The undo failed too; the error said recovery finishes the swap (in the recorded,
        forward direction: the new pair, complete, is then an accepted result)."""
        return self.error is not None and "finishes it at the next start" in self.error

    @property
    def converged(self) -> bool:
        expected = ("old", "new") if self.deferred else ("old",)
        return (self.error is not None and self.after_recover in expected
                and not self.leftovers and self.usable_after
                and self.intact_at_once is not False)  # fmt: skip


def run_trial(root: Path, label: str, inject: Callable[[], object], err: int) -> Trial:
    paths = StorePaths(root)
    store = LegoStore(paths)
    store.put(DOMAIN, pair("new").issued())
    new_files, new_fp = files_of(paths), pair_fingerprint(store)
    store.put(DOMAIN, pair("old").issued())
    old_files, old_fp = files_of(paths), pair_fingerprint(store)
    trial = Trial(label)
    with inject():  # type: ignore[attr-defined]
        try:
            store.put(DOMAIN, pair("new").issued())
        except StoreError as exc:
            trial.error = str(exc)
    if trial.error is None:
        return trial
    if not trial.deferred:
        trial.intact_at_once = files_of(paths) == old_files and pair_fingerprint(store) == old_fp
    store.recover()
    now_files, now_fp = files_of(paths), pair_fingerprint(store)
    if now_files == old_files and now_fp == old_fp:
        trial.after_recover = "old"
    elif now_files == new_files and now_fp == new_fp:
        trial.after_recover = "new"
    trial.leftovers = tuple(leftovers(paths))
    stored = store.put(DOMAIN, pair("other").issued())
    trial.usable_after = stored.info.fingerprint not in (old_fp, new_fp) and not leftovers(paths)
    assert errno.errorcode[err] in trial.error, trial
    assert str(root) in trial.error, f"the error names no path of the store: {trial.error}"
    return trial


def pair_fingerprint(store: LegoStore) -> str | None:
    stored = store.get(DOMAIN)
    return stored.info.fingerprint if stored is not None else None


def count_calls(root: Path, kind: str) -> int:
    """How many calls of `kind` one put over an existing pair makes (no fault injected)."""
    store = LegoStore(StorePaths(root))
    store.put(DOMAIN, pair("old").issued())
    counter = Injector(errno.ENOSPC)
    with INJECTORS[kind](counter):
        store.put(DOMAIN, pair("new").issued())
    return counter.calls


CASES = [("write", errno.ENOSPC), ("open", errno.EROFS), ("open", errno.EACCES),
         ("rename", errno.EROFS), ("rename", errno.EACCES), ("mkdir", errno.EROFS),
         ("mkdir", errno.EACCES)]  # fmt: skip


def test_a_put_failing_at_any_file_operation_keeps_the_old_pair(tmp_path: Path) -> None:
    trials: list[Trial] = []
    for kind, err in CASES:
        calls = count_calls(tmp_path / f"count-{kind}-{err}", kind)
        assert calls >= 1, f"a put makes no {kind} call: the injection point is wrong"
        for at in range(1, calls + 1):
            for persistent in (False, True):
                label = f"{kind} {errno.errorcode[err]} at call {at}/{calls}" + (
                    " and after" if persistent else " only")

                def inject(kind: str = kind, err: int = err, at: int = at,
                           persistent: bool = persistent) -> object:  # fmt: skip
                    return INJECTORS[kind](Injector(err, at=at, persistent=persistent))

                root = tmp_path / f"{kind}-{err}-{at}-{int(persistent)}"
                trials.append(run_trial(root, label, inject, err))
    bad = [t for t in trials if not t.converged]
    summary.record("disk-full", trials=len(trials), converged=len(trials) - len(bad),
                   lost=sum(t.after_recover == "mixed" for t in trials),
                   mismatched=sum(t.after_recover != "mixed" and not t.converged for t in trials))
    print(f"disk-full: {sum(t.after_recover == 'new' for t in trials)} of {len(trials)} trials "
          "could not record the undo and were finished forward by recover()")
    assert not bad, "\n".join(repr(t) for t in bad)
    assert len(trials) >= 30


# --- a real full filesystem ----------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted on tmp_path/fs (needs CAP_SYS_ADMIN; skipped otherwise)."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount_point)],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"cannot run mount for a tiny tmpfs: {exc}")
    if done.returncode != 0:  # the machine's privileges, not a missing install: skipped in CI too
        unavailable(f"cannot mount a tiny tmpfs (not root / no CAP_SYS_ADMIN?): "
                    f"{done.stderr.strip() or done.returncode}", required_in_ci=False)  # fmt: skip
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * 4096
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)
    return filler


def test_a_really_full_filesystem_keeps_the_old_pair_and_says_so(tiny_fs: Path) -> None:
    paths = StorePaths(tiny_fs / "njet")
    store = LegoStore(paths)
    store.put(DOMAIN, pair("old").issued())
    old_files = files_of(paths)
    filler = fill(tiny_fs)
    with pytest.raises(StoreError) as caught:
        store.put(DOMAIN, pair("new").issued())
    message = str(caught.value)
    assert "ENOSPC" in message and str(paths.lego) in message, message
    assert files_of(paths) == old_files
    assert pair_fingerprint(store) == read_fp(pair("old"))
    with pytest.raises(StoreError, match="ENOSPC"):
        StatusFiles(paths).save(CertStatus(domain=DOMAIN, attempts=1, last_failure=message))
    store.recover()  # while still full: recovery only removes
    assert files_of(paths) == old_files and not leftovers(paths)
    filler.unlink()
    assert pair_fingerprint(store) == read_fp(pair("old"))
    assert store.put(DOMAIN, pair("new").issued()).info.fingerprint == read_fp(pair("new"))
    summary.record("disk-full", trials=1, converged=1)


def read_fp(made: MadeCert) -> str:
    return read_cert_info(made.fullchain_pem).fingerprint


# --- controller level ----------------------------------------------------------------------

CONF = """\
http {
    server { listen 127.0.0.1:8443 ssl; server_name a.test www.a.test;
             ssl_certificate_management acme; }
}
"""


class MintingIssuer:
    """controller.ports.Issuer minting from the test CA (this test is about the disk)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.issued: list[str] = []

    async def issue(
        self, spec: CertificateSpec, key_type: KeyType, *, key_pem: bytes | None = None,
        replaces: str | None = None,
    ) -> IssuedCert:
        made = make_cert(list(spec.names), key_type=key_type,
                         not_before=self.clock() - timedelta(hours=1))  # fmt: skip
        self.issued.append(read_fp(made))
        return made.issued()

    async def revoke(self, cert_pem: bytes) -> None:
        raise AssertionError("the disk-full tests never revoke")

    async def close(self) -> None:
        return None


@dataclass
class Controller:
    app: App
    issuer: MintingIssuer
    now: list[datetime]  # the injected clock's current time (mutable)
    old_files: dict[str, bytes | None]
    old_fp: str


@pytest.fixture
def controller(tmp_path: Path) -> Controller:
    prefix = tmp_path / "njet"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "conf" / "njet.conf").write_text(CONF)
    config = parse_config({"njet": {"apiAddress": ""},
                           "acme": {"keyType": "ec256", "renewBeforeDays": 30}},
                          prefix=prefix)  # fmt: skip
    app = App(config)
    start = datetime.now(UTC)
    old = make_cert(list(NAMES), not_before=start - timedelta(hours=1),
                    lifetime=timedelta(days=90))  # fmt: skip
    app.store.put(DOMAIN, old.issued())
    now = [start + timedelta(days=80)]  # 10 days left: the renewal is due
    app.reconciler.clock = lambda: now[0]
    issuer = MintingIssuer(lambda: now[0])
    app._issuer = issuer
    return Controller(app, issuer, now, files_of(app.paths), read_fp(old))


async def test_a_renewal_into_a_full_store_fails_cleanly_with_a_backoff(
    controller: Controller,
) -> None:
    app, paths = controller.app, controller.app.paths
    with inject_write(Injector(errno.ENOSPC, at=1, persistent=True), only_under=paths.journal):
        result = await app.reconciler.pass_once()
    (action,) = result.plan.actions
    assert action.kind is ActionKind.RENEW and action.domain == DOMAIN
    (outcome,) = result.outcomes
    assert not outcome.ok and outcome.error is not None
    assert "ENOSPC" in outcome.error and str(paths.certificates) in outcome.error, outcome.error
    assert files_of(paths) == controller.old_files and not leftovers(paths)
    assert pair_fingerprint(app.store) == controller.old_fp  # still the one served
    status = StatusFiles(paths, clock=lambda: controller.now[0]).load(DOMAIN)
    assert status is not None and status.attempts == 1
    assert status.last_failure is not None and "ENOSPC" in status.last_failure
    assert status.backoff_until is not None and status.backoff_until > controller.now[0]

    again = await app.reconciler.pass_once()  # disk fine again, but still in backoff
    assert not again.plan.actions and len(controller.issuer.issued) == 1
    controller.now[0] = status.backoff_until + timedelta(seconds=1)
    healed = await app.reconciler.pass_once()
    assert [o.ok for o in healed.outcomes] == [True]
    assert pair_fingerprint(app.store) == controller.issuer.issued[-1] != controller.old_fp
    healed_status = StatusFiles(paths).load(DOMAIN)
    assert healed_status is not None and healed_status.attempts == 0
    summary.record("disk-full", trials=1, converged=1)


async def test_a_full_disk_that_also_refuses_the_status_never_escapes_converge(
    controller: Controller,
) -> None:
    """Store and status writes both fail: converge must not raise, the old pair stays, and the
    failure must still hold back the next attempt (no new ACME order every pass)."""
    app, paths = controller.app, controller.app.paths
    escaped: list[BaseException] = []
    with inject_write(Injector(errno.ENOSPC, at=1, persistent=True)):
        for _ in range(2):
            try:
                await app.reconciler.converge(probe=False)
            except Exception as exc:
                escaped.append(exc)
    intact = files_of(paths) == controller.old_files
    orders = len(controller.issuer.issued)
    summary.record("disk-full", trials=1, converged=int(intact and not escaped and orders == 1),
                   lost=int(not intact), mismatched=int(intact and (bool(escaped) or orders != 1)))
    assert intact and pair_fingerprint(app.store) == controller.old_fp
    assert not escaped, f"converge raised {escaped[0]!r} (controller/reconcile.py _fold)"
    assert orders == 1, f"{orders} certificates ordered for one due renewal while the disk is full"
