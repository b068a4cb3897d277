"""Daemon threads for blocking CA calls, and the stop flags that end them early.

`in_daemon_thread(fn, ...)` runs one blocking call on a new daemon thread and awaits its result
on the event loop. Used by acme/client.py for every CA conversation (acme is synchronous) instead of
asyncio.to_thread: the default executor's workers are joined when asyncio.run ends and again
at interpreter exit, so a worker stuck in a CA's hanging socket read would keep a stopping
process alive until its read timeout. A daemon thread is never joined. When the awaiting task
is cancelled, `in_daemon_thread` returns at once; the thread ends on its own (the caller's stop
flag makes the network layer refuse further requests) or dies with the process, and its result
is dropped.

`StopFlags` (one per AcmeIssuer) hands each call a threading.Event that its networks check
(acme/network.py); `stop()` sets every flag in flight and every later one at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def in_daemon_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on a new daemon thread (with this task's context variables)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled: nobody wants the result
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = context.run(fn, *args, **kwargs)
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            loop.call_soon_threadsafe(deliver, result, error)

    name = getattr(fn, "__name__", "call")
    threading.Thread(target=work, name=f"acme-{name}", daemon=True).start()
    return await future


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
