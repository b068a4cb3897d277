"""Blocking work off the event loop, on daemon threads that a stopping process never waits for.

`off_loop(fn, *args)` runs one blocking call (parsing njet.conf, scanning the store) on a new
daemon thread and awaits its result, so the admin API and signal handlers keep answering
while it runs. Used by reconcile.py (desired state) and observe.py (the store scan).

Why not asyncio.to_thread: the default executor's workers are joined when asyncio.run ends and
again at interpreter exit, so a 25 s parse would hold a SIGTERM'd process for 25 s. A daemon
thread is never joined. When the awaiting task is cancelled, `off_loop` returns at once; the
thread finishes on its own (or dies with the process) and its result is dropped.

Used by reconcile.py and observe.py (desired state, the store scan) and by adapters/acme/client.py
(every CA conversation; the stop flags that end those early are in adapters/acme/threads.py).
A support module: the one below both the steps and the adapters that may use asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def off_loop(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    return await _run(fn, "off-loop", *args, **kwargs)


async def in_daemon_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """The same as off_loop, with threads named for a CA call (`acme-<fn>`)."""
    return await _run(fn, "acme", *args, **kwargs)


async def _run(fn: Callable[P, T], thread_prefix: str, /, *args: P.args,
               **kwargs: P.kwargs) -> T:
    """`fn(*args, **kwargs)` on a new daemon thread (with this task's context variables)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(ok: bool, value: object) -> None:
        if future.done():  # the awaiting task was cancelled: nobody wants the result
            return
        if ok:
            future.set_result(value)  # type: ignore[arg-type]
        else:
            assert isinstance(value, BaseException)
            future.set_exception(value)

    def work() -> None:
        try:
            outcome: tuple[bool, object] = (True, context.run(fn, *args, **kwargs))
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            loop.call_soon_threadsafe(deliver, *outcome)

    name = getattr(fn, "__name__", "call")
    threading.Thread(target=work, name=f"{thread_prefix}-{name}", daemon=True).start()
    return await future
