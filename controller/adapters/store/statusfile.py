"""Per-certificate status files: `<prefix>/.lego/status/<name>.json`, one CertStatus each.

Called by reconcile.py (load_all once, save/delete after each pass) and the CLI. Writes are
atomic (fsutil.atomic_write). A file that cannot be parsed, or is not a regular file of at most
1 MiB (fsutil.read_regular: a symlink, a FIFO, a device), is logged as a warning and treated as
absent (the certificate then simply starts with a fresh status), never a crash or a hang.
Parsed files are cached by (st_size, st_mtime_ns, st_ino), so re-reading an unchanged folder
costs one stat each. A `backoff_until` more than 24 h + the 6 h backoff cap ahead (a hand edit,
or a file written before Retry-After was bounded) is read as now + 24 h, with a warning. Write
failures raise StoreError naming the path; so does any write of
`StatusFiles(paths, read_only=True)` (what `diff` uses).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from controller.adapters.store import fsutil
from controller.clock import utc_now
from controller.errors import ConfigError, StoreError
from controller.paths import StorePaths, safe_file_name
from controller.status import (
    BACKOFF_CAP,
    MAX_RETRY_AFTER,
    CertStatus,
    status_from_json,
    status_to_json,
)

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700

_Ident = tuple[int, int, int]


class StatusFiles(fsutil.ReadOnlyGuard):
    """Load and save CertStatus records (see the module docstring)."""

    def __init__(self, paths: StorePaths, *, read_only: bool = False,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.paths = paths
        self.read_only = read_only
        self._clock = clock
        self._lock = threading.Lock()
        # file name -> (identity, parsed status or None when unusable)
        self._cache: dict[str, tuple[_Ident, CertStatus | None]] = {}

    def load_all(self) -> dict[str, CertStatus]:
        """Every readable status, keyed by its domain."""
        directory = self.paths.status
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise fsutil.store_error("list", directory, exc) from None
        result: dict[str, CertStatus] = {}
        with self._lock:
            cache: dict[str, tuple[_Ident, CertStatus | None]] = {}
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(".json"):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.warning("ignoring status file %s: %s", entry.path, exc)
                    continue
                status = self._cached(entry.name, Path(entry.path), st, cache)
                if status is not None:
                    result[status.domain] = status
            self._cache = cache
        return result

    def load(self, domain: str) -> CertStatus | None:
        """The status of `domain`; None when absent or unreadable (a warning is logged)."""
        path = self.paths.status_file(domain)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("ignoring status file %s: %s", path, exc)
            return None
        with self._lock:
            return self._cached(path.name, path, st, self._cache)

    def _cached(
        self,
        file_name: str,
        path: Path,
        st: os.stat_result,
        cache: dict[str, tuple[_Ident, CertStatus | None]],
    ) -> CertStatus | None:
        ident = (st.st_size, st.st_mtime_ns, st.st_ino)
        hit = self._cache.get(file_name)
        if hit is not None and hit[0] == ident:
            cache[file_name] = hit
            return hit[1]
        status = _parse(path, file_name)
        if status is not None:
            status = _bounded_backoff(status, path, self._clock())
        cache[file_name] = (ident, status)
        return status

    def save(self, status: CertStatus) -> None:
        """Write `status` atomically to status/<name>.json."""
        self._writable(f"save the status of {status.domain}")
        try:
            path = self.paths.status_file(status.domain)
        except ConfigError as exc:
            raise StoreError(f"cannot save the status of {status.domain!r}: {exc}") from None
        try:
            fsutil.ensure_inside(path, self.paths.lego)
            fsutil.make_dirs(self.paths.status, mode=DIR_MODE)
            fsutil.atomic_write(path, status_to_json(status), mode=FILE_MODE)
        except OSError as exc:
            raise fsutil.store_error("write", Path(exc.filename or path), exc) from None

    def delete(self, domain: str) -> None:
        """Remove the status of `domain`; missing is not an error."""
        self._writable(f"remove the status of {domain}")
        path = self.paths.status_file(domain)
        try:
            fsutil.ensure_inside(path, self.paths.lego)
            if fsutil.remove_file(path):
                fsutil.fsync_dir(path.parent)
        except OSError as exc:
            raise fsutil.store_error("remove", path, exc) from None
        with self._lock:
            self._cache.pop(path.name, None)


def _parse(path: Path, file_name: str) -> CertStatus | None:
    try:
        status = status_from_json(fsutil.read_regular(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring status file %s: %s", path, exc)
        return None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        log.warning(
            "ignoring corrupt status file %s (%s: %s); the certificate starts with a fresh status",
            path,
            where,
            first["msg"],
        )
        return None
    try:
        expected = safe_file_name(status.domain) + ".json"
    except ConfigError:
        expected = None
    if expected != file_name:
        log.warning("ignoring status file %s: it is about %r", path, status.domain)
        return None
    return status


def _bounded_backoff(status: CertStatus, path: Path, now: datetime) -> CertStatus:
    """`status` with a backoff_until beyond MAX_RETRY_AFTER + BACKOFF_CAP clamped to now + 24 h."""
    until = status.backoff_until
    if until is None or until - now <= MAX_RETRY_AFTER + BACKOFF_CAP:
        return status
    bounded = now + MAX_RETRY_AFTER
    log.warning("status file %s: backoff_until %s is further ahead than any backoff; "
                "waiting until %s instead", path, until.isoformat(), bounded.isoformat())
    return replace(status, backoff_until=bounded)
