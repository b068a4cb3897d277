"""File-level reading of the certificate store for adapters/store/lego.py: identities, safe
reads, permission checks, the lego resource file and the temp-file sweep of recovery.

- Identities are `(st_size, st_mtime_ns, st_ino)` of the file itself (lstat: a symlink is not
  followed; the pair is then refused when read, see fsutil.read_regular).
- `check_dir_mode` / `check_key_mode`: certificates/ must be 0700 and keys 0600 (the README
  promises it). Anything looser is a warning in the event log naming the path, and is repaired
  unless the store is read-only (`diff`); each (file, mode) is reported once per process.
- `sweep_temp_files`: removes the leftovers of interrupted atomic writes in one folder, but only
  in a folder that resolves inside the store; a file that cannot be removed is reported and the
  sweep goes on.

Called by adapters/store/lego.py only (and pairs.py, which reads the resource file's URL).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import orjson

from controller.adapters.store import fsutil
from controller.logs import log_event

log = logging.getLogger(__name__)

Ident = tuple[int, int, int]
KEY_MODE = 0o600
DIR_MODE = 0o700


def ident_of(st: os.stat_result) -> Ident:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def lstat_ident(path: Path) -> Ident | None:
    """The identity of `path` itself; None when absent; StoreError when it cannot be stat'ed."""
    try:
        return ident_of(os.lstat(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise fsutil.store_error("stat", path, exc) from None


def entry_stat(entry: os.DirEntry[str] | None) -> os.stat_result | None:
    """lstat of a listed entry; None when absent or gone since the listing."""
    if entry is None:
        return None
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None


class ModeGuard:
    """Warns about (and, unless read-only, repairs) too open key files and certificates/."""

    def __init__(self, lego: Path, *, repair: bool) -> None:
        self._lego = lego
        self._repair = repair
        self._reported: set[tuple[str, int, int]] = set()

    def check_dir(self, directory: Path, st: os.stat_result) -> bool:
        """certificates/ must not be open to group/others; True when it was repaired."""
        if not st.st_mode & 0o077:
            return False
        repaired = False
        error = None
        if self._repair:
            try:
                fsutil.ensure_inside(directory / "x", self._lego)
                os.chmod(directory, DIR_MODE)
                repaired = True
            except OSError as exc:
                error = str(exc)
        self._report("certificate folder is open to other users", directory, st, DIR_MODE,
                     repaired, error)
        return repaired

    def check_key(self, path: Path, st: os.stat_result | None) -> None:
        """A private key file must be 0600 (only regular files are checked)."""
        if st is None or not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o077:
            return
        repaired = False
        error = None
        if self._repair:
            try:
                repaired = fsutil.repair_mode(path, KEY_MODE)
            except OSError as exc:
                error = str(exc)
        self._report("private key file is readable by other users", path, st, KEY_MODE,
                     repaired, error)

    def _report(self, what: str, path: Path, st: os.stat_result, wanted: int, repaired: bool,
                error: str | None) -> None:
        seen = (str(path), st.st_ino, st.st_mode)
        if seen in self._reported and not repaired:
            return
        self._reported.add(seen)
        fields: dict[str, object] = {"path": str(path), "mode": oct(stat.S_IMODE(st.st_mode))}
        if repaired:
            fields["repaired_to"] = oct(wanted)
        elif error is not None:
            fields["repair_failed"] = error
        elif self._repair:
            fields["repair"] = f"not repaired (other hard links); check it, chmod {wanted:o}"
        else:
            fields["repair"] = f"not repaired (read-only); chmod {wanted:o} {path}"
        log_event(what, level=logging.WARNING, **fields)


def cert_url(path: Path) -> str | None:
    """certUrl of a lego resource file; None when absent or unreadable (not fatal)."""
    try:
        doc = orjson.loads(fsutil.read_regular(path))
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("ignoring unreadable resource file %s: %s", path, exc)
        return None
    url = doc.get("certUrl") if isinstance(doc, dict) else None
    return url if isinstance(url, str) and url else None


def read_optional(path: Path) -> bytes | None:
    """A store file's bytes (regular file, size-capped); None when absent; else StoreError."""
    try:
        return fsutil.read_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise fsutil.store_error("read", path, exc) from None


def sweep_temp_files(directory: Path, lego: Path) -> list[str]:
    """Remove leftover temp files of `directory`; one human line per file removed or kept."""
    try:
        names = [n for n in os.listdir(directory) if fsutil.is_temp_name(n)]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise fsutil.store_error("list", directory, exc) from None
    if not names:
        return []
    try:
        fsutil.ensure_inside(directory / names[0], lego)
    except fsutil.UnsafeFileError as exc:
        return [f"temp files in {directory} left alone: {exc.strerror}"]
    lines: list[str] = []
    for name in names:
        path = directory / name
        try:
            if fsutil.remove_file(path):
                lines.append(f"removed leftover temp file {path}")
        except OSError as exc:
            error = fsutil.store_error("remove", path, exc)
            log_event("leftover temp file not removed", level=logging.WARNING, error=str(error))
            lines.append(f"leftover temp file {path} not removed: {error}")
    return lines
