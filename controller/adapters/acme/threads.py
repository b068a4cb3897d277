"""The stop flags that end blocking CA calls early.

acme/client.py and acme/connection.py run every CA conversation (acme is synchronous) on a
daemon thread (controller.threads.in_daemon_thread, re-exported here) rather than
asyncio.to_thread, whose workers are joined at exit: a worker stuck in a CA's hanging socket
read would keep a stopping process alive. When the awaiting task is cancelled the call returns
at once; the thread ends on its own (its stop flag makes the network layer refuse further
requests) or dies with the process.

`StopFlags` (one per AcmeIssuer) hands each call a threading.Event that its networks check
(acme/network.py); `stop()` sets every flag in flight and every later one at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class StopFlags:
    """The stop flags of the calls in flight; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False
        self._flags: set[threading.Event] = set()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self) -> None:
        """Set every flag in flight, and every later one as soon as it is made."""
        with self._lock:
            self._stopped = True
            for flag in self._flags:
                flag.set()

    @contextlib.contextmanager
    def flag(self) -> Iterator[threading.Event]:
        """A flag for one call (already set when stopped), forgotten when the call ends."""
        flag = threading.Event()
        with self._lock:
            if self._stopped:
                flag.set()
            self._flags.add(flag)
        try:
            yield flag
        finally:
            with self._lock:
                self._flags.discard(flag)
