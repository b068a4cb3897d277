"""The swap journal's record and the checks recovery runs before it acts on one.

`JournalRecord` is what `journal/<name>/JOURNAL` holds (see adapters/store/journal.py for the
protocol). Someone with write access to `.lego/` can plant an entry, so recovery only acts on
an entry that passes `read_checked`:
  - the entry is a real folder (not a symlink) whose name is a store file name
    (paths.is_store_name: one safe path component);
  - its record is a regular file of at most 1 MiB that parses, names exactly that folder, a
    domain that maps to that name, known slots only, and (quarantine) a destination folder
    `<name>.<UTC time>[-N]`;
  - every path the record touches resolves inside the store (fsutil.ensure_inside), so a
    symlinked folder is caught too.
A rejected entry is moved by `set_aside` to `journal-rejected/<entry>-<UTC time>/` (kept for
inspection, never acted on) with an error in the event log.

Used by adapters/store/journal.py (and lego.py for FILE_SLOTS / JournalRecord).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from controller.adapters.store import fsutil
from controller.errors import ConfigError
from controller.logs import log_event
from controller.paths import StorePaths, is_store_name, safe_file_name

# slot -> file suffix; every file lego may write for one name
FILE_SLOTS: Mapping[str, str] = {
    "crt": ".crt",
    "key": ".key",
    "issuer": ".issuer.crt",
    "json": ".json",
    "pem": ".pem",
    "pfx": ".pfx",
}
STAGE_ORDER = ("crt", "key", "issuer", "json")  # order the new files of a put are written in
PAIR_SLOTS = ("key", "crt", "issuer", "json")  # order they are renamed into certificates/
RECORD = "JOURNAL"
DIR_MODE = 0o700
_STAMP_RE = r"\.\d{8}T\d{6}Z(?:-\d{1,6})?"

Op = Literal["put", "delete", "quarantine"]
Direction = Literal["forward", "back"]


class JournalRecord(BaseModel):
    """What one in-flight operation is doing; its presence means 'run me to the end'."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: int = 1
    op: Op
    name: str  # the file name stem in certificates/
    domain: str
    direction: Direction = "forward"
    new: dict[str, str] = {}  # put: slot -> sha256 of the staged new file
    old: list[str] = []  # slots that existed before (backed up by put, moved by delete/quarantine)
    dest: str | None = None  # quarantine: folder name under quarantine/

    @classmethod
    def for_delete(cls, name: str, domain: str, present: list[str]) -> JournalRecord:
        return cls(op="delete", name=name, domain=domain, old=present)

    @classmethod
    def for_quarantine(cls, name: str, domain: str, present: list[str], dest: str) -> JournalRecord:
        return cls(op="quarantine", name=name, domain=domain, old=present, dest=dest)

    def reversed(self) -> JournalRecord:
        return self.model_copy(update={"direction": "back"})

    def point(self, step: str) -> str:
        rollback = ".rollback" if self.direction == "back" else ""
        return f"store.{self.op}{rollback}.{step}"


def target(paths: StorePaths, name: str, slot: str) -> Path:
    """The live file of `slot` in certificates/."""
    return paths.certificates / f"{name}{FILE_SLOTS[slot]}"


def holding(paths: StorePaths, record: JournalRecord, slot: str) -> Path:
    """Where a file taken out of certificates/ by delete/quarantine lives meanwhile."""
    if record.op == "quarantine" and record.dest:
        return paths.quarantine / record.dest / f"{record.name}{FILE_SLOTS[slot]}"
    return paths.journal / record.name / f"old.{slot}"


class Rejected(Exception):
    """A journal entry recovery must not act on; the message says why."""


def is_plain_file(path: Path) -> bool:
    """A regular file directly in journal/ (not an entry: never acted on, left alone)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def read_checked(paths: StorePaths, staging: Path) -> JournalRecord | None:
    """The record of the entry `staging`, checked; None when it has none (nothing to finish).

    Raises Rejected for a planted or unreadable entry, OSError when it cannot be read.
    """
    _check_folder(staging)
    try:
        data = fsutil.read_regular(staging / RECORD)
    except FileNotFoundError:
        return None
    except fsutil.UnsafeFileError as exc:
        raise Rejected(f"journal record {exc}") from None
    try:
        record = JournalRecord.model_validate_json(data)
    except ValidationError as exc:
        raise Rejected(
            f"journal record {staging / RECORD} is unreadable ({exc.error_count()} errors)"
        ) from None
    check_record(paths, record, staging)
    return record


def _check_folder(staging: Path) -> None:
    mode = os.lstat(staging).st_mode
    if not stat.S_ISDIR(mode):
        raise Rejected(f"{staging} is {fsutil.file_kind(mode)}, not a journal folder")
    if not is_store_name(staging.name):
        raise Rejected(f"{staging} is not named like a stored certificate")


def check_record(paths: StorePaths, record: JournalRecord, staging: Path) -> None:
    """Rejected unless `record` may act from the entry `staging` (see the module docstring)."""
    _check_folder(staging)
    where = staging / RECORD
    if record.name != staging.name:
        raise Rejected(f"journal record {where} names {record.name!r}, not its own folder")
    try:
        domain_ok = safe_file_name(record.domain) == record.name
    except ConfigError:
        domain_ok = False
    if not domain_ok:
        raise Rejected(f"journal record {where}: domain {record.domain!r} is not {record.name}")
    unknown = (set(record.new) - set(STAGE_ORDER)) | (set(record.old) - set(FILE_SLOTS))
    if unknown:
        raise Rejected(f"journal record {where} names unknown files {sorted(unknown)}")
    if (record.op == "quarantine") != (record.dest is not None) or (
        record.dest is not None
        and not re.fullmatch(re.escape(record.name) + _STAMP_RE, record.dest)
    ):
        raise Rejected(f"journal record {where}: bad quarantine folder {record.dest!r}")
    for path in _touched(paths, record, staging):
        try:
            fsutil.ensure_inside(path, paths.lego)
        except fsutil.UnsafeFileError as exc:
            raise Rejected(f"journal record {where}: {exc}") from None


def _touched(paths: StorePaths, record: JournalRecord, staging: Path) -> Iterator[Path]:
    yield staging
    for slot in FILE_SLOTS:
        yield target(paths, record.name, slot)
        yield holding(paths, record, slot)
        yield staging / f"new.{slot}"
        yield staging / f"old.{slot}"


def set_aside(paths: StorePaths, staging: Path, reason: str, *, now: datetime) -> str:
    """Move a rejected entry to journal-rejected/ (never acted on); the human line for it."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    base = f"{staging.name[:200]}-{stamp}"
    dest = paths.journal_rejected / base
    try:
        fsutil.ensure_inside(dest, paths.lego)  # journal-rejected/ may be planted too
        fsutil.make_dirs(paths.journal_rejected, mode=DIR_MODE)
        fsutil.ensure_inside(dest, paths.lego)
        counter = 1
        while os.path.lexists(dest):
            counter += 1
            dest = paths.journal_rejected / f"{base}-{counter}"
        os.rename(staging, dest)
        fsutil.fsync_dir(staging.parent)
        fsutil.fsync_dir(paths.journal_rejected)
    except OSError as exc:
        log_event("store journal entry rejected and left in place", level=logging.ERROR,
                  entry=str(staging), reason=reason, error=str(exc))
        return (f"{staging.name}: journal entry rejected, not acted on: {reason}; it could not "
                f"be moved aside ({exc}), so it stays in place")
    log_event("store journal entry rejected", level=logging.ERROR, entry=str(staging),
              reason=reason, moved_to=str(dest))
    return f"{staging.name}: journal entry rejected, not acted on: {reason}; moved to {dest}"
