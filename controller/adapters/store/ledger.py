"""The rate-limit ledger on disk: `.lego/ledger/<ca host_port>.json` (ports.RateLedger).

One file per CA host (named like lego's account folder: `acme-v02.api.letsencrypt.org.json`,
`localhost_14000.json`), each event keyed inside by the CA's directory URL, so two directories
on one host keep apart. What the CA counts (policies/ratelimits.py): the orders placed (by
account, with the name set and its registered domains, and whether a certificate came of it),
the failed validations (by host) and the `rateLimited` answers (until their Retry-After):

  {"version": 1, "events": [{"kind": "order", "at": "2026-12-01T10:00:00Z",
    "ca": "https://acme-v02.api.letsencrypt.org/directory", "account": "ops@example.com",
    "names": ["a.example.com", "www.a.example.com"], "domains": ["example.com"],
    "issued": true, "until": null}, ...]}

Every `record` rewrites the file atomically (fsutil.atomic_write, mode 0600) after forgetting
the events older than the longest window (7 days; a rateLimited answer lives until its
Retry-After) and keeping at most MAX_EVENTS. Reads are regular files only (fsutil.read_regular:
no symlink, no FIFO, at most MAX_LEDGER_BYTES). A file that cannot be used is logged once and
read as empty (the budget then counts from what this process records; the next record replaces
the file, never writing through a planted link). Holds no key material.

The events are loaded once and kept in memory (one process writes the store: the store lock);
a `read_only` ledger (`diff`) reads the file at every snapshot and refuses to record. Built by
app.py; the executor records, the reconciler snapshots at the start of each pass. In fleet mode
the ledger moves to the shared store behind the same Protocol. Thread-safe (one lock).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.adapters.store import fsutil
from controller.errors import StoreError
from controller.logs import log_event
from controller.paths import StorePaths
from controller.policies.ratelimits import LONGEST_WINDOW, LedgerEvent, LedgerSnapshot

MAX_EVENTS = 200_000  # more than a week of Let's Encrypt's busiest budgets allows
MAX_LEDGER_BYTES = 64 << 20


class _LedgerDoc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    events: list[LedgerEvent] = Field(default_factory=list, max_length=MAX_EVENTS)


def _alive(event: LedgerEvent, now: datetime) -> bool:
    """Still counted at `now`: within the longest window, or a Retry-After not over yet."""
    return event.at > now - LONGEST_WINDOW or (event.until is not None and event.until > now)


class FileLedger:
    """The ledger of the CA at `ca` (its directory URL); see the module docstring."""

    def __init__(self, paths: StorePaths, ca: str, *, read_only: bool = False) -> None:
        self.paths = paths
        self.ca = ca
        self.path = paths.ledger_file(ca)
        self.read_only = read_only
        self._events: list[LedgerEvent] | None = None  # every CA's of this file, oldest first
        self._lock = threading.Lock()
        self._last_problem: str | None = None

    def snapshot(self, now: datetime) -> LedgerSnapshot:
        with self._lock:
            if self.read_only or self._events is None:
                self._events = self._load()
            mine = tuple(e for e in self._events if e.ca == self.ca and _alive(e, now))
        return LedgerSnapshot(self.ca, now, mine)

    def record(self, event: LedgerEvent) -> None:
        if event.ca != self.ca:
            raise ValueError(f"the ledger of {self.ca} cannot record an event of {event.ca}")
        if self.read_only:
            raise StoreError(f"cannot record in {self.path}: the store is open read-only")
        with self._lock:
            if self._events is None:
                self._events = self._load()
            kept = [e for e in self._events if _alive(e, event.at)]
            kept.append(event)
            kept.sort(key=lambda e: e.at)
            self._events = kept[-MAX_EVENTS:]
            data = _LedgerDoc(events=self._events).model_dump_json().encode() + b"\n"
            try:
                fsutil.make_dirs(self.paths.ledger, mode=0o700)
                fsutil.atomic_write(self.path, data, mode=0o600)
            except OSError as exc:
                raise fsutil.store_error("write", self.path, exc) from None

    def _load(self) -> list[LedgerEvent]:
        try:
            data = fsutil.read_regular(self.path, limit=MAX_LEDGER_BYTES)
        except FileNotFoundError:
            self._last_problem = None
            return []
        except OSError as exc:
            self._unusable(str(fsutil.store_error("read", self.path, exc)))
            return []
        try:
            doc = _LedgerDoc.model_validate_json(data)
        except ValidationError as exc:
            self._unusable(f"{self.path} is not a rate-limit ledger ({exc.error_count()} errors)")
            return []
        self._last_problem = None
        return sorted(doc.events, key=lambda e: e.at)

    def _unusable(self, problem: str) -> None:
        if problem != self._last_problem:
            log_event("rate-limit ledger unusable; counting from what this process records",
                      level=logging.ERROR, file=str(self.path), error=problem)
            self._last_problem = problem
