"""Desired state as the loop sees it: njet.conf (+ includes) merged with runtime-announced
servers, re-parsed only when one of its files changed.

Parsing a 10,000-block njet.conf takes about a second, so an unchanged conf is not parsed again:
the cache key is the (size, mtime, inode) of every file the parse read, of their folders (a new
file matching an include glob changes its folder), and of the runtime store. Passes that probe
(start-up, the periodic resync, NJet's events) ask for `fresh=True` and always re-parse.

`load` may be called from the event loop and from a daemon thread (reconcile.py parses off the
loop); a lock makes one load at a time.

Called by reconcile.py through app.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from controller.desired import load_desired_and_files, merge_desired
from controller.model import Desired, KeyType
from controller.njetconf import DEFAULT_MAX_CONF_BYTES
from controller.ports import RuntimeSpecs

Signature = tuple[tuple[str, int, int, int], ...]


def _signature(paths: Iterable[str]) -> Signature:
    out: list[tuple[str, int, int, int]] = []
    for p in sorted(set(paths)):
        try:
            st = os.stat(p)
        except OSError:
            out.append((p, -1, -1, -1))
            continue
        out.append((p, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


@dataclass
class DesiredSource:
    conf_path: Path
    key_type: KeyType | None
    runtime: RuntimeSpecs
    max_conf_bytes: int = DEFAULT_MAX_CONF_BYTES  # [njet] maxConfBytes
    _files: frozenset[str] = field(default=frozenset())
    _signature: Signature | None = None
    _value: Desired | None = None
    parses: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _watched(self) -> list[str]:
        files = set(self._files) | {str(self.conf_path), str(self.runtime.path)}
        return [*files, *{os.path.dirname(f) for f in files}]

    def load(self, *, fresh: bool = False) -> Desired:
        with self._lock:
            return self._load(fresh=fresh)

    def _load(self, *, fresh: bool) -> Desired:
        if (
            not fresh
            and self._value is not None
            and _signature(self._watched()) == self._signature
        ):
            return self._value
        base, files = load_desired_and_files(self.conf_path, key_type=self.key_type,
                                             max_conf_bytes=self.max_conf_bytes)
        self.parses += 1
        extra = self.runtime.load()
        value = merge_desired(base, extra) if extra else base
        self._files = files
        self._value = value
        self._signature = _signature(self._watched())
        return value
