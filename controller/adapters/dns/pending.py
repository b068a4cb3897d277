"""The dns-01 records written and not yet removed: `.lego/dns-cleanups.json`.

Used by adapters/dns/solver.py (Dns01Solver): a record is added here BEFORE the provider is
asked to write it and removed once the provider removed it, so a controller killed in between
(kill -9, power loss) finds it at the next start (App.prepare -> Dns01Solver.remove_leftovers)
and removes exactly that value, nothing else. Every change rewrites the file atomically
(fsutil.atomic_write: temp file + fsync + rename, mode 0600); it holds names and TXT values,
which are public in DNS anyway, never a credential.

A file that cannot be read or parsed is logged and read as empty (the next change replaces it);
reading never follows a symlink. Thread-safe: changes run on worker threads (asyncio.to_thread).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from controller.adapters.store.fsutil import atomic_write, make_dirs, read_regular, remove_file
from controller.logs import log_event

MAX_BYTES = 4 << 20
VERSION = 1


@dataclass(frozen=True, order=True)
class PendingRecord:
    """One TXT value we wrote: where, and through which provider."""

    zone: str
    fqdn: str
    value: str
    provider: str


class PendingCleanups:
    """See the module docstring."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._read_only = read_only
        self._lock = threading.Lock()
        self._records: set[PendingRecord] | None = None

    def load(self) -> list[PendingRecord]:
        """The records on file, sorted."""
        with self._lock:
            return sorted(self._current())

    def add(self, record: PendingRecord) -> None:
        with self._lock:
            records = self._current()
            if record not in records:
                records.add(record)
                self._write(records)

    def remove(self, record: PendingRecord) -> None:
        with self._lock:
            records = self._current()
            if record in records:
                records.discard(record)
                self._write(records)

    def _current(self) -> set[PendingRecord]:
        if self._records is None:
            self._records = self._read()
        return self._records

    def _read(self) -> set[PendingRecord]:
        try:
            raw = read_regular(self.path, limit=MAX_BYTES)
        except FileNotFoundError:
            return set()
        except OSError as exc:
            log_event("dns-01 pending cleanups unreadable; starting without them",
                      level=logging.WARNING, path=str(self.path), error=str(exc))
            return set()
        try:
            doc: Any = json.loads(raw)
            return {PendingRecord(**{k: str(r[k]) for k in ("zone", "fqdn", "value", "provider")})
                    for r in doc["records"]}
        except (ValueError, KeyError, TypeError) as exc:
            log_event("dns-01 pending cleanups unparsable; starting without them",
                      level=logging.WARNING, path=str(self.path),
                      error=f"{type(exc).__name__}: {exc}"[:200])
            return set()

    def _write(self, records: set[PendingRecord]) -> None:
        if self._read_only:
            return
        if not records:
            remove_file(self.path)
            return
        make_dirs(self.path.parent)
        doc = {"version": VERSION, "records": [asdict(r) for r in sorted(records)]}
        atomic_write(self.path, json.dumps(doc, indent=2).encode() + b"\n", mode=0o600)
