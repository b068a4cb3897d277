"""Inject OSErrors (ENOSPC, EROFS, EACCES) into the store's file operations, call by call.

`Injector(errno, at=N, persistent=...)` wraps one file operation: the N-th call (1-based) fails,
and with `persistent` every later call too (a disk that stays full / read-only). It counts calls
while it is off (`at=0`), which is how a test learns how many calls one operation makes.
The `inject_*` context managers patch the one place that does the operation:
fsutil._write_fd (every byte the store and status files write), fsutil._open (every file they
create), os.replace (every rename: atomic_write's and the journal's), os.mkdir (every folder).
Used by tests/faults/test_disk_full.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.adapters.store import fsutil


class Injector:
    """Fails the `at`-th call (and, if persistent, every later one) with OSError(`err`)."""

    def __init__(self, err: int, *, at: int = 0, persistent: bool = False) -> None:
        self.err = err
        self.at = at
        self.persistent = persistent
        self.calls = 0
        self.failed = 0

    def should_fail(self) -> bool:
        self.calls += 1
        hit = self.at > 0 and (self.calls == self.at or (self.persistent and self.calls > self.at))
        self.failed += hit
        return hit

    def error(self, *names: str | Path | None) -> OSError:
        first = str(names[0]) if names and names[0] is not None else None
        second = str(names[1]) if len(names) > 1 and names[1] is not None else None
        return OSError(self.err, os.strerror(self.err), first, None, second)


def _patched(target: Any, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(target, name, replacement)
        yield


@contextlib.contextmanager
def inject_write(inj: Injector, *, only_under: Path | None = None) -> Iterator[None]:
    """Writes fail (disk full). `only_under`: only writes to files below that folder."""
    real_open, real_write = fsutil._open, fsutil._write_fd
    opened: dict[int, Path] = {}

    def tracking_open(path: Path, flags: int, mode: int) -> int:
        fd = real_open(path, flags, mode)
        opened[fd] = Path(path)
        return fd

    def failing_write(fd: int, data: bytes) -> None:
        path = opened.get(fd)
        eligible = only_under is None or (path is not None and path.is_relative_to(only_under))
        if eligible and inj.should_fail():
            raise inj.error()  # like a real write(2) error: no file name attached
        real_write(fd, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fsutil, "_open", tracking_open)
        mp.setattr(fsutil, "_write_fd", failing_write)
        yield


@contextlib.contextmanager
def inject_open(inj: Injector) -> Iterator[None]:
    """Creating a file fails (read-only filesystem, no permission, no inodes)."""
    real_open = fsutil._open

    def failing_open(path: Path, flags: int, mode: int) -> int:
        if inj.should_fail():
            raise inj.error(path)
        return real_open(path, flags, mode)

    yield from _patched(fsutil, "_open", failing_open)


@contextlib.contextmanager
def inject_rename(inj: Injector) -> Iterator[None]:
    """Renames fail (os.replace: atomic_write's and the journal's)."""
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if inj.should_fail():
            raise inj.error(src, dst)
        real_replace(src, dst, *args, **kwargs)

    yield from _patched(os, "replace", failing_replace)


@contextlib.contextmanager
def inject_mkdir(inj: Injector) -> Iterator[None]:
    """Creating a folder fails."""
    real_mkdir = os.mkdir

    def failing_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if inj.should_fail():
            raise inj.error(path)
        real_mkdir(path, *args, **kwargs)

    yield from _patched(os, "mkdir", failing_mkdir)


INJECTORS: dict[str, Callable[[Injector], contextlib.AbstractContextManager[None]]] = {
    "write": inject_write,
    "open": inject_open,
    "rename": inject_rename,
    "mkdir": inject_mkdir,
}
