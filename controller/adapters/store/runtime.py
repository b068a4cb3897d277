"""Event-sourced desired state: the servers NJet announced at runtime, persisted across restarts.

File: `<prefix>/.lego/runtime/servers.json` (`{"version": 1, "servers": [...]}`), written
atomically with adapters/fsutil.atomic_write (temp + fsync + rename + directory fsync).
Called by the controller (service.py): `apply()` for every MQTT event, `replace_all()` at
start-up and at every periodic resync (specs rebuilt from the retained `/ins/srv/#` records),
`load()` when computing desired state (also from the desired-state loader's worker thread:
every method holds one lock).

A rebuild and events race: reading the retained records takes a while (the broker is given
time to go quiet), and an event applied during the read is absent from the snapshot. So a
rebuild runs inside `rebuilding()`, which yields the sequence number of the last event applied
(the mark); while a rebuild is open every applied event is also kept in memory with its number,
and `replace_all(specs, since=mark)` re-applies, in order, every event numbered after the mark
on top of the snapshot before writing. An add or a delete that arrived mid-read therefore
survives the rebuild, and applying one that the snapshot already reflects changes nothing
(a generate replaces the entry of its key, a delete of an absent name removes nothing). The
snapshot is trusted for every event applied before the mark (NJet has updated its retained
record by the time the read starts). Only the file is persisted, always whole and atomically:
each event's result is written when it is applied and the rebuilt state (snapshot + replayed
events) in one write, so a crash at any point leaves either the state before the rebuild with
every event applied so far, or the rebuilt one; the in-memory numbers need not survive, as the
next start rebuilds again.

Entries are keyed by (domain = first usable name, listens). Matching rule of
`deleteCertificate`: by name — an entry is removed when its domain equals the event domain's
first usable name and, if the event names listens, at least one listen is shared. An event
with `server_addr: []` (NJet's answer to a failed dyn_srv add) therefore removes only entries
announced under that name; a name never announced removes nothing.

Note: NJet also sends `generateCertificate` for every managed static block at start and
reload; those land here too. Merging with njet.conf specs (and dropping names njet.conf
already covers) is the caller's job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from controller.adapters.store.fsutil import (
    MAX_LARGE_FILE_BYTES,
    atomic_write,
    ensure_inside,
    make_dirs,
    read_regular,
)
from controller.clock import utc_now
from controller.errors import StoreError
from controller.events import EventAction, NjetEvent, specs_from_domains
from controller.model import CertificateSpec, NameWarning, Source
from controller.paths import StorePaths

log = logging.getLogger(__name__)

_VERSION = 1


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    domain: str
    names: list[str]
    listens: list[str] = []
    origin: str = "event"


class _File(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = _VERSION
    servers: list[_Entry] = []


def _key(spec: CertificateSpec) -> tuple[str, frozenset[str]]:
    return spec.domain, frozenset(spec.listens)


def _fold(
    state: tuple[CertificateSpec, ...], event: NjetEvent, *, wildcards: bool
) -> tuple[tuple[CertificateSpec, ...], tuple[NameWarning, ...]]:
    """`state` with one event applied (pure), and the names the event had to skip."""
    derived = specs_from_domains(event.domains, wildcards=wildcards)
    current = list(state)
    if event.action is EventAction.GENERATE:
        for spec in derived.specs:
            idx = next((i for i, s in enumerate(current) if _key(s) == _key(spec)), None)
            if idx is None:
                current.append(spec)
            else:
                current[idx] = spec
    else:
        for spec in derived.specs:
            addrs = set(spec.listens)
            current = [
                s
                for s in current
                if not (s.domain == spec.domain and (not addrs or addrs & set(s.listens)))
            ]
    return tuple(current), derived.warnings


def _normalised(specs: Iterable[CertificateSpec]) -> tuple[CertificateSpec, ...]:
    by_key: dict[tuple[str, frozenset[str]], CertificateSpec] = {}
    for s in specs:
        norm = CertificateSpec(
            domain=s.domain,
            names=tuple(s.names),
            listens=tuple(s.listens),
            source=Source.EVENT,
            origin=s.origin or "event",
        )
        by_key[_key(norm)] = norm
    return tuple(by_key.values())


class RuntimeStore:
    """The persisted list of event-sourced CertificateSpecs (source=Source.EVENT)."""

    def __init__(
        self,
        paths: StorePaths,
        *,
        clock: Callable[[], datetime] = utc_now,
        read_only: bool = False,
        wildcards: bool = False,
    ) -> None:
        self._path = paths.runtime / "servers.json"
        self._lego = paths.lego
        self.read_only = read_only  # `diff`: never set a corrupt file aside, never save
        self._clock = clock  # names a corrupt file set aside
        self._cache: tuple[CertificateSpec, ...] | None = None
        # a [dns] section exists: events' wildcard names are kept (events.specs_from_domains)
        self.wildcards = wildcards
        self._lock = threading.RLock()
        self._seq = 0  # events applied by this instance
        self._open: list[int] = []  # the marks of the rebuilds under way (`rebuilding`)
        # (number, event) of every event applied after the oldest open mark
        self._journal: list[tuple[int, NjetEvent]] = []

    @property
    def sequence(self) -> int:
        """The number of the last event applied by this instance (0 before the first)."""
        return self._seq

    @contextlib.contextmanager
    def rebuilding(self) -> Iterator[int]:
        """Open a rebuild: yields the mark to hand to `replace_all(since=...)`.

        Enter it before the snapshot is read; until it is left, applied events are kept in
        memory for `replace_all` to re-apply. Leaving it (also by an exception or a
        cancellation, e.g. the read failed) forgets the events no other open rebuild needs.
        """
        with self._lock:
            mark = self._seq
            self._open.append(mark)
        try:
            yield mark
        finally:
            with self._lock:
                self._open.remove(mark)
                floor = min(self._open, default=self._seq)
                self._journal = [(n, e) for n, e in self._journal if n > floor]

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> tuple[CertificateSpec, ...]:
        """The stored specs; () when the file is absent.

        A corrupt file is renamed to `servers.json.corrupt-<UTC time>` (kept for inspection,
        never deleted; left in place when read-only) and treated as empty: the next resync
        rebuilds the state. A file that is not a regular file of at most 256 MiB (a symlink,
        a FIFO, ...: fsutil.read_regular) raises StoreError naming it.
        """
        with self._lock:
            return self._load()

    def _load(self) -> tuple[CertificateSpec, ...]:
        if self._cache is not None:
            return self._cache
        try:
            raw = read_regular(self._path, limit=MAX_LARGE_FILE_BYTES)
        except FileNotFoundError:
            self._cache = ()
            return self._cache
        except OSError as exc:
            raise StoreError(f"cannot read runtime servers file {self._path}: {exc}") from exc
        try:
            parsed = _File.model_validate_json(raw)
        except ValidationError as exc:
            stamp = self._clock().strftime("%Y%m%dT%H%M%SZ")
            aside = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
            log.warning(
                "runtime servers file %s is unreadable (%s errors); %s, starting empty",
                self._path,
                exc.error_count(),
                "left in place (read-only)" if self.read_only else f"moved to {aside}",
            )
            if not self.read_only:
                with contextlib.suppress(OSError):
                    os.replace(self._path, aside)
            self._cache = ()
            return self._cache
        self._cache = tuple(
            CertificateSpec(
                domain=e.domain,
                names=tuple(e.names),
                listens=tuple(e.listens),
                source=Source.EVENT,
                origin=e.origin,
            )
            for e in parsed.servers
        )
        return self._cache

    def _save(self, specs: tuple[CertificateSpec, ...]) -> None:
        doc = {
            "version": _VERSION,
            "servers": [
                {
                    "domain": s.domain,
                    "names": list(s.names),
                    "listens": list(s.listens),
                    "origin": s.origin,
                }
                for s in specs
            ],
        }
        if self.read_only:
            raise StoreError(f"cannot write runtime servers file {self._path}: opened read-only")
        try:
            ensure_inside(self._path, self._lego)
            make_dirs(self._path.parent)
            atomic_write(self._path, orjson.dumps(doc, option=orjson.OPT_INDENT_2), mode=0o600)
        except OSError as exc:
            raise StoreError(f"cannot write runtime servers file {self._path}: {exc}") from exc
        self._cache = specs

    def apply(self, event: NjetEvent) -> bool:
        """Fold one event into the stored state; True when something changed (and was saved).

        Names that cannot be issued are skipped (see controller.events.specs_from_domains, with
        this store's `wildcards`; the warnings are logged here). The event is numbered, and
        kept for re-applying while a rebuild is open (`rebuilding`) even when it changed
        nothing here or its write failed: the snapshot of the rebuild may still need it.
        """
        with self._lock:
            self._seq += 1
            if self._open:
                self._journal.append((self._seq, event))
            current = self._load()
            new, warnings = _fold(current, event, wildcards=self.wildcards)
            for w in warnings:
                log.warning("event %s: skipped name %r: %s", event.action, w.name, w.reason)
            if new == current:
                return False
            self._save(new)
            return True

    def replace_all(
        self,
        specs: Iterable[CertificateSpec],
        *,
        since: int | None = None,
    ) -> bool:
        """Replace the whole state (resync); True when it differs from what was stored.

        Only domain, names, listens and origin are kept (source becomes Source.EVENT);
        a repeated (domain, listens) key keeps the last spec. With `since` (the mark yielded
        by an open `rebuilding()`, taken before `specs` were read), every event applied after
        the mark is re-applied in order on top of `specs` first, so none is lost to a snapshot
        read before it arrived; the result is written in one atomic write. Without it `specs`
        are taken as newer than every event. Raises ValueError for a `since` that is not the
        mark of an open rebuild (the events after it may already be forgotten).
        """
        with self._lock:
            new = _normalised(specs)
            if since is not None:
                if since not in self._open:
                    raise ValueError(
                        f"replace_all(since={since}) of {self._path}: no rebuild opened at "
                        f"event {since} is under way (use RuntimeStore.rebuilding())"
                    )
                for n, event in self._journal:
                    if n > since:
                        new, _ = _fold(new, event, wildcards=self.wildcards)
            if new == self._load():
                return False
            self._save(new)
            return True
