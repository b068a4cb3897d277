"""The single-writer lock: an exclusive flock on `<prefix>/.lego/lock`, held for the process life.

Called by cli.py/app.py before `recover()` and released at exit (the kernel drops it when the
process dies, so a SIGKILLed holder never leaves a stale lock). NJet starts a new copilot about
0.1 s after sending SIGTERM to the old one, so `acquire` polls until the old process has exited
or the timeout passes. The holder's pid is written into the file for diagnostics
(`holder_pid()`); the lock itself is the flock, never the file's content. The file is opened
with O_NOFOLLOW|O_NONBLOCK and must be a regular file: a symlink, FIFO or device planted at
`.lego/lock` is refused with a StoreError naming it (never written through).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import stat
import time
from types import TracebackType

from controller.adapters.store import fsutil
from controller.errors import StoreError
from controller.paths import StorePaths

POLL_INTERVAL = 0.02


class StoreLock:
    """Exclusive lock of one store; `with StoreLock(paths) as lock:` blocks until acquired."""

    def __init__(self, paths: StorePaths, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.path = paths.lock
        self._lego = paths.lego
        self._poll = poll_interval
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fsutil.make_dirs(self._lego, mode=0o700)
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP and os.path.islink(self.path):
                raise StoreError(
                    f"lock file {self.path} is a symbolic link; refusing to write through it "
                    "(remove it; the controller creates a regular file)"
                ) from None
            raise fsutil.store_error("open the lock file", self.path, exc) from None
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            os.close(fd)
            raise fsutil.store_error("open the lock file", self.path, exc) from None
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise StoreError(
                f"lock file {self.path} is {fsutil.file_kind(mode)}, not a regular file; refusing "
                "to use it (remove it; the controller creates a regular file)"
            )
        return fd

    def try_acquire(self) -> bool:
        """One non-blocking attempt; True when this object now holds the lock."""
        if self._fd is not None:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise fsutil.store_error("lock", self.path, exc) from None
        self._fd = fd
        with contextlib.suppress(OSError):  # the pid is only informative
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: forever) for the lock; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.try_acquire():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            remaining = self._poll if deadline is None else deadline - time.monotonic()
            time.sleep(max(0.0, min(self._poll, remaining)))
        return True

    # Returning False on timeout (like `acquire`) is the contract here, hence no asyncio.timeout.
    async def acquire_async(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """`acquire` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.try_acquire():
            if deadline is not None and loop.time() >= deadline:
                return False
            remaining = self._poll if deadline is None else deadline - loop.time()
            await asyncio.sleep(max(0.0, min(self._poll, remaining)))
        return True

    def release(self) -> None:
        """Give the lock up (idempotent). The pid stays in the file until the next holder."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holder_pid(self) -> int | None:
        """The pid the current (or last) holder wrote, for messages; None when unknown."""
        try:
            text = fsutil.read_regular(self.path, limit=64).decode("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def holder(self) -> str:
        """Who holds the lock, for messages: "pid N", or "another process" when unknown."""
        pid = self.holder_pid()
        return f"pid {pid}" if pid is not None else "another process (its pid is not recorded)"

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
