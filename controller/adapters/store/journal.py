"""The swap journal of the certificate store: all-or-nothing put / delete / quarantine.

One operation on a name uses `journal/<name>/`:
  new.<slot>   the staged new files of a put (fsynced before the record exists)
  old.<slot>   hard links to the files being replaced (put), or the files taken out (delete)
  JOURNAL      the record (JournalRecord as JSON, written atomically)
Rule of recovery: a folder without JOURNAL is discarded (certificates/ was not touched yet, or
the operation had already finished); with JOURNAL the operation is run to its end in the
recorded direction: "forward" (install the new files / move the old ones out), or "back"
(restore the backups / move the files back), which a failed rename switches to. Every step
is idempotent, so a crash during recovery is recovered by the next recovery.

Planted entries (someone with write access to `.lego/` only): recovery acts on an entry only
when it is a real folder (not a symlink) named like a store file, its record names exactly that
folder (and a quarantine folder of the same name), and every path the record touches resolves
inside the store (adapters/store/journal_record.py). Anything else is moved aside to
`journal-rejected/<entry>-<UTC time>/` with an error, never acted on. One entry that cannot be
recovered never stops recovery of the others.

Fault points (controller/faultpoints.py) sit between every two file operations; their names
are `store.<op>[.rollback].after_<step>`. Used only by adapters/store/lego.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from controller.adapters.store import fsutil
from controller.adapters.store.journal_record import (
    DIR_MODE,
    FILE_SLOTS,
    PAIR_SLOTS,
    RECORD,
    STAGE_ORDER,
    JournalRecord,
    Rejected,
    check_record,
    holding,
    is_plain_file,
    read_checked,
    set_aside,
    target,
)
from controller.clock import utc_now
from controller.errors import StoreError
from controller.faultpoints import fault_point, register
from controller.logs import log_event
from controller.paths import StorePaths

log = logging.getLogger(__name__)


def _declare_points() -> tuple[str, ...]:
    names = [f"store.put.after_stage_{s}" for s in STAGE_ORDER]
    names += ["store.put.after_backup", "store.put.after_journal"]
    names += [f"store.put.after_rename_{s}" for s in PAIR_SLOTS]
    names += [f"store.put.rollback.after_restore_{s}" for s in PAIR_SLOTS]
    for op in ("delete", "quarantine"):
        names.append(f"store.{op}.after_journal")
        if op == "quarantine":
            names.append("store.quarantine.after_mkdir")
        names += [f"store.{op}.after_move_{s}" for s in FILE_SLOTS]
        names += [f"store.{op}.rollback.after_restore_{s}" for s in FILE_SLOTS]
    for op in ("put", "delete", "quarantine"):
        names.append(f"store.{op}.rollback.after_journal")
        for prefix in (f"store.{op}", f"store.{op}.rollback"):
            names += [f"{prefix}.after_journal_removed", f"{prefix}.after_cleanup"]
    return register(*names)


POINTS = _declare_points()


class Journal:
    """Runs put / delete / quarantine through journal/<name>/ (see the module docstring)."""

    def __init__(self, paths: StorePaths, *, file_mode: Callable[[str], int],
                 now: Callable[[], datetime] = utc_now) -> None:
        self.paths = paths
        self._file_mode = file_mode
        self._now = now

    def _target(self, name: str, slot: str) -> Path:
        return target(self.paths, name, slot)

    def _holding(self, record: JournalRecord, slot: str) -> Path:
        return holding(self.paths, record, slot)

    # -- starting operations ------------------------------------------------------------------

    def _open_entry(self, record: JournalRecord) -> Path:
        """A fresh journal/<name>/ for `record`, after checking every path it will touch."""
        staging = self.paths.journal / record.name
        try:
            fsutil.make_dirs(self.paths.certificates, mode=DIR_MODE)
            fsutil.make_dirs(self.paths.journal, mode=DIR_MODE)
        except OSError as exc:
            raise fsutil.store_error("create", Path(exc.filename or self.paths.lego), exc) from None
        if os.path.lexists(staging):
            for line in self._recover_entry(staging):
                log.warning("store: leftover of an earlier operation: %s", line)
        try:
            fsutil.make_dirs(staging, mode=DIR_MODE)
            check_record(self.paths, record, staging)
        except Rejected as exc:
            raise StoreError(f"cannot {_verb(record)} {record.domain}: {exc}") from None
        except OSError as exc:
            raise fsutil.store_error("create", staging, exc) from None
        return staging

    def put(
        self, name: str, domain: str, files: Mapping[str, bytes], digests: Mapping[str, str]
    ) -> None:
        """Install `files` (slot -> bytes) as the pair of `name`; a slot not given is removed."""
        staging = self._open_entry(
            JournalRecord(op="put", name=name, domain=domain, new=dict(digests))
        )
        doing: tuple[str, Path] = ("write", staging)
        try:
            for slot in STAGE_ORDER:
                if slot in files:
                    doing = ("write", self._target(name, slot))
                    fsutil.write_new_file(
                        staging / f"new.{slot}", files[slot], mode=self._file_mode(slot)
                    )
                fault_point(f"store.put.after_stage_{slot}")
            old = [s for s in PAIR_SLOTS if os.path.lexists(self._target(name, s))]
            for slot in old:
                doing = ("back up", self._target(name, slot))
                fsutil.link_or_copy(self._target(name, slot), staging / f"old.{slot}")
            doing = ("write", staging)
            fsutil.fsync_dir(staging)
            fault_point("store.put.after_backup")
            record = JournalRecord(op="put", name=name, domain=domain, new=dict(digests), old=old)
            doing = ("write", staging / RECORD)
            self._write_record(staging, record)
        except OSError as exc:
            with contextlib.suppress(OSError):
                fsutil.remove_tree(staging)
            raise fsutil.store_error(doing[0], doing[1], exc) from None
        fault_point("store.put.after_journal")
        self._run(record)

    def move_out(self, record: JournalRecord) -> None:
        """Delete or quarantine: move the files of record.old out of certificates/."""
        staging = self._open_entry(record)
        try:
            self._write_record(staging, record)
        except OSError as exc:
            with contextlib.suppress(OSError):
                fsutil.remove_tree(staging)
            raise fsutil.store_error("write", staging / RECORD, exc) from None
        fault_point(record.point("after_journal"))
        self._run(record)

    def _write_record(self, staging: Path, record: JournalRecord) -> None:
        fsutil.atomic_write(staging / RECORD, record.model_dump_json().encode(), mode=0o600)

    def _run(self, record: JournalRecord) -> None:
        """Finish `record`; if a forward step fails, undo it so the old files stay in place."""
        staging = self.paths.journal / record.name
        try:
            self._apply(record)
        except OSError as first:
            where = first.filename2 if record.op == "put" else first.filename
            failed = fsutil.store_error(_verb(record), Path(where or staging), first)
            back = record.reversed()
            try:
                self._write_record(staging, back)
                fault_point(back.point("after_journal"))
                self._apply(back)
                self._finish(back)
            except OSError as second:
                raise StoreError(
                    f"{failed}; undoing it also failed ({second.strerror or second}); "
                    f"the store finishes it at the next start (journal {staging})"
                ) from None
            raise StoreError(f"{failed}; the previous files are unchanged") from None
        try:
            self._finish(record)
        except OSError as exc:
            log.warning("store: %s is done but its journal %s stays: %s", record.op, staging, exc)

    # -- the steps -----------------------------------------------------------------------------

    def _apply(self, record: JournalRecord) -> None:
        if record.op == "put":
            self._apply_put(record)
        else:
            self._apply_move(record)

    def _apply_put(self, record: JournalRecord) -> None:
        staging = self.paths.journal / record.name
        for slot in PAIR_SLOTS:
            target = self._target(record.name, slot)
            if record.direction == "forward":
                new = staging / f"new.{slot}"
                if slot not in record.new:
                    fsutil.remove_file(target)
                elif os.path.lexists(new):
                    _rename(new, target)
                fault_point(record.point(f"after_rename_{slot}"))
            else:
                backup = staging / f"old.{slot}"
                if slot not in record.old:
                    fsutil.remove_file(target)
                elif os.path.lexists(backup):
                    _rename(backup, target)
                fault_point(record.point(f"after_restore_{slot}"))
        fsutil.fsync_dir(self.paths.certificates)

    def _apply_move(self, record: JournalRecord) -> None:
        forward = record.direction == "forward"
        if forward and record.op == "quarantine" and record.dest:
            fsutil.make_dirs(self.paths.quarantine / record.dest, mode=DIR_MODE)
            fault_point(record.point("after_mkdir"))
        for slot in FILE_SLOTS:
            source, holding = self._target(record.name, slot), self._holding(record, slot)
            if slot in record.old:
                src, dst = (source, holding) if forward else (holding, source)
                if os.path.lexists(src):
                    _rename(src, dst)
            fault_point(record.point(f"after_move_{slot}" if forward else f"after_restore_{slot}"))
        fsutil.fsync_dir(self.paths.certificates)
        holding_dir = self._holding(record, "crt").parent
        if holding_dir.exists():
            fsutil.fsync_dir(holding_dir)
        if not forward and record.op == "quarantine" and record.dest:
            with contextlib.suppress(OSError):
                os.rmdir(holding_dir)  # only when empty

    def _finish(self, record: JournalRecord) -> None:
        staging = self.paths.journal / record.name
        fsutil.remove_file(staging / RECORD)
        fsutil.fsync_dir(staging)
        fault_point(record.point("after_journal_removed"))
        fsutil.remove_tree(staging)
        fsutil.fsync_dir(self.paths.journal)
        fault_point(record.point("after_cleanup"))

    # -- recovery ------------------------------------------------------------------------------

    def recover_all(self) -> list[str]:
        """Run every interrupted operation to its end; one human line per journal entry.

        A planted or unreadable entry is set aside (journal-rejected/) and one whose recovery
        fails is left for the next start; both are reported and recovery goes on with the
        other names. Only a journal folder that cannot be listed raises (StoreError).
        """
        journal = self.paths.journal
        try:
            entries = sorted(os.listdir(journal))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise fsutil.store_error("list", journal, exc) from None
        try:
            fsutil.ensure_inside(journal / "x", self.paths.lego)
        except fsutil.UnsafeFileError as exc:
            log_event("store journal not recovered", level=logging.ERROR, error=str(exc))
            return [f"journal {journal} not recovered: {exc.strerror}"]
        lines: list[str] = []
        for entry in entries:
            path = journal / entry
            if fsutil.is_temp_name(entry) or is_plain_file(path):
                continue  # temp files are swept by the store; a stray file is never acted on
            try:
                lines.extend(self._recover_entry(path))
            except StoreError as exc:
                log_event("store recovery failed for one entry", level=logging.ERROR,
                          entry=str(path), error=str(exc))
                lines.append(f"{entry}: recovery failed ({exc}); left in place for the next "
                             "start, the other names are not affected")
        return lines

    def _recover_entry(self, staging: Path) -> list[str]:
        try:
            try:
                record = read_checked(self.paths, staging)
            except Rejected as bad:
                return [set_aside(self.paths, staging, str(bad), now=self._now())]
            return self._recover_checked(staging, record)
        except OSError as exc:
            raise fsutil.store_error("recover", Path(exc.filename or staging), exc) from None

    def _recover_checked(self, staging: Path, record: JournalRecord | None) -> list[str]:
        if record is None:
            staged_new = any(n.startswith("new.") for n in os.listdir(staging))
            fsutil.remove_tree(staging)
            fsutil.fsync_dir(staging.parent)
            if staged_new:
                return [
                    f"{staging.name}: discarded an unfinished certificate write that never "
                    "took effect (the previous files are untouched)"
                ]
            return [f"{staging.name}: removed the leftovers of a finished store operation"]
        if record.op == "put" and record.direction == "forward" and not self._staged_ok(record):
            record = record.reversed()
            self._write_record(staging, record)
        self._apply(record)
        self._finish(record)
        return [_describe(record)]

    def _staged_ok(self, record: JournalRecord) -> bool:
        """Every new file is either staged intact or already installed intact."""
        staging = self.paths.journal / record.name
        for slot, digest in record.new.items():
            new = staging / f"new.{slot}"
            path = new if os.path.lexists(new) else self._target(record.name, slot)
            try:
                actual = hashlib.sha256(fsutil.read_regular(path)).hexdigest()
            except (FileNotFoundError, fsutil.UnsafeFileError):
                return False
            if actual != digest:
                log.error("store: %s does not hold the journaled content; undoing", path)
                return False
        return True


def _verb(record: JournalRecord) -> str:
    return {"put": "install", "delete": "remove", "quarantine": "quarantine"}[record.op]


def _describe(record: JournalRecord) -> str:
    who = record.domain
    if record.direction == "back":
        what = {"put": "certificate replacement", "delete": "delete", "quarantine": "quarantine"}
        kept = "the previous files are in place" if record.old else "no pair, as before"
        return f"{who}: undid an interrupted {what[record.op]}; {kept}"
    if record.op == "put":
        return f"{who}: finished an interrupted certificate replacement; the new pair is in place"
    if record.op == "delete":
        return f"{who}: finished an interrupted delete"
    return f"{who}: finished an interrupted quarantine into quarantine/{record.dest}/"


def _rename(source: Path, target: Path) -> None:
    """fsutil.replace_file, with both paths on the error whatever raised it."""
    try:
        fsutil.replace_file(source, target)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(source), None, str(target)) from exc
