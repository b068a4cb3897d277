"""Durable file primitives for the store, the status files and the lock: atomic writes, fsyncs.

`atomic_write` = temp file in the same directory + write + fsync + rename + fsync of the
directory, so a reader (or a crash) only ever sees the old or the new content. Temp files are
named `.<name>.tmp-<random>`; `is_temp_name` recognises them so recovery can remove leftovers.
OSErrors are turned into StoreError by `store_error`, whose message names the action, the path and
the errno (ENOSPC, EROFS, EACCES, ...).

Called by lego.py, statusfile.py and lock.py (all in adapters/store/). `_open` and
`_write_fd` are the only places that open files for writing and write bytes: tests replace them
to inject ENOSPC / EROFS / EACCES.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path

from controller.errors import StoreError

TEMP_INFIX = ".tmp-"


def _open(path: Path, flags: int, mode: int) -> int:
    return os.open(path, flags, mode)


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def store_error(action: str, path: Path, exc: OSError) -> StoreError:
    """A StoreError saying what failed where and why, e.g. 'cannot write /x/a.crt: ... (ENOSPC)'."""
    code = errno.errorcode.get(exc.errno or 0, "")
    reason = exc.strerror or str(exc)
    suffix = f" ({code})" if code else ""
    return StoreError(f"cannot {action} {path}: {reason}{suffix}")


def is_temp_name(name: str) -> bool:
    """True for the names `atomic_write` uses for its temp files."""
    return name.startswith(".") and TEMP_INFIX in name


def fsync_dir(path: Path) -> None:
    """Make renames/creations/unlinks inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, *, mode: int = 0o700) -> None:
    """Create `path` and missing parents with `mode` (existing ones are left as they are)."""
    if path.is_dir():
        return
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue
        os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
        fsync_dir(directory.parent)


def write_new_file(path: Path, data: bytes, *, mode: int) -> None:
    """Create `path` (must not exist), write `data` and fsync it; the directory is not fsynced."""
    fd = _open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        _write_fd(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically and durably; the file ends up with `mode`.

    Raises OSError (the temp file is removed on failure; `path` is untouched).
    """
    temp = path.with_name(f".{path.name}{TEMP_INFIX}{secrets.token_hex(4)}")
    try:
        write_new_file(temp, data, mode=mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            remove_file(temp)
        raise
    fsync_dir(path.parent)


def replace_file(source: Path, target: Path) -> None:
    """Rename `source` over `target` (atomic within one filesystem); no fsync."""
    os.replace(source, target)


def link_or_copy(source: Path, target: Path) -> None:
    """Make `target` another name of `source` (hard link), or a durable copy where links fail."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        write_new_file(target, source.read_bytes(), mode=source.stat().st_mode & 0o777)


def remove_file(path: Path) -> bool:
    """Unlink `path`; False when it did not exist."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def remove_tree(path: Path) -> None:
    """Remove a directory tree; missing is fine."""
    try:
        shutil.rmtree(path, onerror=_ignore_missing)
    except FileNotFoundError:
        return


def _ignore_missing(
    _func: object, _path: str, exc_info: tuple[type[BaseException], BaseException, object]
) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
