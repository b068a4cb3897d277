"""The deletion guard's release on disk: `.lego/gc-confirm.json` (ports.GcConfirmations).

When a pass would delete more than `[controller] maxDeleteShare` of the stored certificates
(or all of them), the deletion guard (policies/orphan.py) holds every deletion back. An operator
releases it once with `njet-cert-manager gc confirm` or POST /api/v1/gc/confirm: both save the
names the guard holds at that moment here, written atomically (fsutil.atomic_write, mode 0600):

  {"version": 1, "names": ["a.test", ...], "count": 3, "stored": 3,
   "confirmed_at": "2026-11-27T12:00:00+00:00", "by": "cli"}

The reconciler reads it at the start of every pass (an input of the pure plan()), and the first
executing pass that read it removes it (`consume`), whether it deleted or found the names no
longer pending: a confirmation covers the deletions pending when it was given, once. A later,
bigger mass deletion (a name not in `names`) needs a new confirmation.

A file that cannot be used (a symlink, a FIFO, over 1 MiB, not this JSON) is logged once and
read as no confirmation, so the guard keeps holding; it is never written through. Holds no key
material. Built by app.py; used by reconcile.py, admin_backend.py and cli.py.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from controller.adapters.store import fsutil
from controller.errors import ConfigError
from controller.logs import log_event
from controller.paths import StorePaths, validate_store_key
from controller.plan import Plan
from controller.policy import GcRelease
from controller.ports import GcConfirmations


class ConfirmDoc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    names: list[str] = Field(max_length=1_000_000)
    count: int = Field(ge=0)
    stored: int = Field(default=0, ge=0)
    confirmed_at: AwareDatetime
    by: str = Field(default="", max_length=200)


class GcConfirmFile(fsutil.ReadOnlyGuard):
    """`.lego/gc-confirm.json` (see the module docstring); `read_only` refuses save/consume."""

    def __init__(self, paths: StorePaths, *, read_only: bool = False) -> None:
        self.paths = paths
        self.path = paths.gc_confirm
        self.read_only = read_only
        self._last_problem: str | None = None

    def load(self) -> GcRelease | None:
        """The confirmation on file; None when there is none or it cannot be used (logged)."""
        try:
            data = fsutil.read_regular(self.path)
        except FileNotFoundError:
            self._last_problem = None
            return None
        except OSError as exc:
            self._unusable(str(fsutil.store_error("read", self.path, exc)))
            return None
        try:
            doc = ConfirmDoc.model_validate_json(data)
            names = frozenset(validate_store_key(n) for n in doc.names)  # <name>@<slot> too
        except (ValidationError, ConfigError) as exc:
            count = exc.error_count() if isinstance(exc, ValidationError) else 1
            self._unusable(f"{self.path} is not a gc confirmation ({count} errors)")
            return None
        self._last_problem = None
        return GcRelease(names=names, confirmed_at=doc.confirmed_at, by=doc.by)

    def _unusable(self, problem: str) -> None:
        if problem != self._last_problem:
            log_event("gc confirmation ignored; the deletion guard keeps holding",
                      level=logging.ERROR, file=str(self.path), error=problem)
            self._last_problem = problem

    def save(self, release: GcRelease, *, stored: int = 0) -> None:
        """Replace the confirmation atomically; StoreError naming the file when it cannot."""
        self._writable("save a gc confirmation")
        doc = ConfirmDoc(names=sorted(release.names), count=len(release.names), stored=stored,
                          confirmed_at=release.confirmed_at, by=release.by)
        try:
            fsutil.make_dirs(self.paths.lego, mode=0o700)
            fsutil.atomic_write(self.path, doc.model_dump_json(indent=2).encode() + b"\n",
                                mode=0o600)
        except OSError as exc:
            raise fsutil.store_error("write", self.path, exc) from None

    def consume(self, release: GcRelease) -> bool:
        """Remove the file if it still holds `release` (not a newer confirmation)."""
        self._writable("remove the gc confirmation")
        current = self.load()
        if current is None or current != release:
            return False
        try:
            removed = fsutil.remove_file(self.path)
            if removed:
                fsutil.fsync_dir(self.paths.lego)
        except OSError as exc:
            raise fsutil.store_error("remove", self.path, exc) from None
        return removed


def confirm_held(
    plan: Plan, confirmations: GcConfirmations, *, now: datetime, by: str
) -> tuple[str, ...]:
    """Release, once, what the deletion guard holds in `plan` (computed with the confirmation
    on file): save it and return the names. When a confirmation on file already releases them,
    nothing is saved and they are returned; () when the guard holds nothing."""
    hold = plan.gc_hold
    if hold is None or not hold.pending:
        return plan.gc_released
    release = GcRelease(names=frozenset(hold.pending), confirmed_at=now, by=by)
    confirmations.save(release, stored=hold.stored)
    log_event("deletion guard released", deletions=len(hold.pending), stored=hold.stored, by=by)
    return hold.pending
