"""Durable file primitives for the store, the status files and the lock: atomic writes, fsyncs.

`atomic_write` = temp file in the same directory + write + fsync + rename + fsync of the
directory, so a reader (or a crash) only ever sees the old or the new content. Temp files are
named `.<name>.tmp-<random>`; `is_temp_name` recognises them so recovery can remove leftovers.
OSErrors are turned into StoreError by `store_error`, whose message names the action, the path and
the errno (ENOSPC, EROFS, EACCES, ...).

Reading: `read_regular` is the one way the store, the status files, the runtime file, the lock
and the ACME account read a file: it never follows a symlink (O_NOFOLLOW), never blocks on a
FIFO (O_NONBLOCK), refuses anything but a regular file and anything over a size cap
(`MAX_FILE_BYTES` for certificates, keys, metadata, status and account files;
`MAX_LARGE_FILE_BYTES` for index.json and the runtime servers file) with an `UnsafeFileError`
(an OSError) naming the file. Writing never follows a planted link either: new files are
created with O_EXCL|O_NOFOLLOW and renamed over the old name (which replaces a link, never
writes through it). `ensure_inside` checks that a path resolves inside the store.
`ReadOnlyGuard` is the read-only refusal (`diff`) shared by the store's file owners.

Called by lego.py, journal.py, index.py, statusfile.py, runtime.py and lock.py (all in
adapters/store/) and adapters/acme/account.py. `_open` and `_write_fd` are the only places that
open files for writing and write bytes: tests replace them to inject ENOSPC / EROFS / EACCES.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from pathlib import Path

from controller import paths
from controller.errors import StoreError
from controller.paths import StorePaths

TEMP_INFIX = ".tmp-"
MAX_FILE_BYTES = 1 << 20  # a certificate chain, a key, a .json, a status or an account file
MAX_LARGE_FILE_BYTES = 256 << 20  # index.json and runtime/servers.json (100k entries fit)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFileError(OSError):
    """A file the store refuses to read or write: a symlink, a FIFO, a device, a directory,
    a file over its size cap, or a path that resolves outside the store."""

    def __init__(self, path: Path | str, reason: str, code: int | None = None) -> None:
        super().__init__(code, reason, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: "a FIFO", "a symbolic link", ..."""
    return paths.file_kind(mode)


def read_regular(path: Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The content of `path`, which must be a regular file of at most `limit` bytes.

    Never follows a symlink at `path` and never blocks on a FIFO. Raises FileNotFoundError
    when absent, UnsafeFileError for anything but a regular file or over `limit`, other
    OSErrors as the system reports them.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise UnsafeFileError(
                path, "is a symbolic link; the store reads regular files only"
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(
                path, f"is {file_kind(st.st_mode)}; the store reads regular files only"
            )
        if st.st_size > limit:
            raise _too_large(path, limit, st.st_size)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(max(st.st_size + 1 - total, 1 << 16), limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while we read it
                raise _too_large(path, limit, total)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _too_large(path: Path, limit: int, size: int) -> UnsafeFileError:
    cap = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
    return UnsafeFileError(path, f"is {size} bytes or more, over the {cap} limit", errno.EFBIG)


def ensure_inside(path: Path, root: Path) -> Path:
    """`path` with its folder resolved; UnsafeFileError unless that lies inside `root`.

    The last component is not followed (renames and unlinks act on a link, not its target),
    but every folder above it is, so a planted `../` or a symlinked folder is caught.
    """
    name = path.name
    base = os.path.realpath(root)
    folder = os.path.realpath(path.parent)
    if name in ("", ".", "..") or (folder != base and not folder.startswith(base + os.sep)):
        raise UnsafeFileError(path, f"resolves outside the store {root}; refusing to touch it")
    return Path(folder) / name


def repair_mode(path: Path, mode: int) -> bool:
    """chmod a regular file to `mode`, never through a symlink and never a file with other hard
    links (it may be somebody else's file linked in); False when not repaired."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return False
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True


def _open(path: Path, flags: int, mode: int) -> int:
    return os.open(path, flags, mode)


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class ReadOnlyGuard:
    """Base of the store's file owners that `diff` opens read-only (LegoStore, StatusFiles,
    Quarantine, GcConfirmFile): `_writable(what)` raises StoreError when `read_only`."""

    paths: StorePaths
    read_only: bool

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(f"cannot {what}: the store {self.paths.lego} is open read-only")


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
    """Create `path` (must not exist, not even as a symlink), write `data` and fsync it; the
    directory is not fsynced."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = _open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        _write_fd(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically and durably; the file ends up with `mode`.

    The temp file is created fresh (O_EXCL|O_NOFOLLOW) and renamed over `path`, so a symlink
    at `path` is replaced, never written through. Raises OSError (the temp file is removed on
    failure; `path` is untouched).
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
    """Make `target` another name of `source` (hard link), or a durable copy where links fail.

    A symlink at `source` is linked (or copied) as the link itself, never its target.
    """
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
            raise
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
            return
        write_new_file(target, read_regular(source), mode=os.lstat(source).st_mode & 0o777)


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
