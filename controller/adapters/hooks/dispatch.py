"""Bounded queues and background workers for hooks and webhooks, off the reconcile's path.

`Dispatcher.submit(event)` (called by observer.py on the event loop) never waits: it puts the
event on the hook lane (when a hook is configured for it) and the webhook lane (when a webhook
is), each a bounded queue of QUEUE_SIZE with one worker task started on first use. A full
queue drops the event with a logged warning, counted as result "dropped". One lane's worker
handles its events one at a time, in order, so a hanging webhook never delays a hook, and
neither ever delays a pass. Before handling an event that follows a new pair, the worker reads
its serial and expiry from the store (on a daemon thread).

`close(grace)` (service.py, at shutdown) lets the lanes work for up to `grace` seconds, then
cancels what still runs (a hook's process group is killed, runner.py) and logs what was left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from controller.adapters.hooks.events import CertEvent
from controller.adapters.hooks.runner import HookRunner
from controller.adapters.hooks.webhook import WebhookNotifier
from controller.errors import ControllerError
from controller.logs import log_event
from controller.ports import CertStore
from controller.threads import off_loop

QUEUE_SIZE = 100  # events waiting per lane; more are dropped
SHUTDOWN_GRACE = 3.0  # seconds in-flight hooks and webhooks get at shutdown

Handler = Callable[[CertEvent], Awaitable[object]]


class Lane:
    """One bounded queue and its worker (see the module docstring)."""

    def __init__(self, name: str, handle: Handler, *, size: int = QUEUE_SIZE,
                 on_drop: Callable[[CertEvent], None] | None = None) -> None:
        self.name = name
        self.handle = handle
        self.on_drop = on_drop
        self.queue: asyncio.Queue[CertEvent] = asyncio.Queue(maxsize=size)
        self.closed = False
        self._task: asyncio.Task[None] | None = None

    def submit(self, event: CertEvent) -> bool:
        if self.closed:
            return self._drop(event, "shutting down")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._work(),
                                                                name=f"njcm-{self.name}")
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return self._drop(event, "queue full")
        return True

    def _drop(self, event: CertEvent, why: str) -> bool:
        log_event(f"{self.name} event dropped: {why}", level=logging.WARNING,
                  event=event.kind.value, domain=event.domain, queued=self.queue.qsize())
        if self.on_drop is not None:
            self.on_drop(event)
        return False

    async def _work(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self.handle(event)
            except Exception as exc:  # a bug in one event must not end the lane
                log_event(f"{self.name} worker error", level=logging.ERROR,
                          event=event.kind.value, domain=event.domain,
                          error=f"{type(exc).__name__}: {exc}")
            finally:
                self.queue.task_done()

    async def drained(self) -> None:
        """Return once every submitted event was handled (tests, shutdown)."""
        await self.queue.join()

    async def close(self, grace: float) -> None:
        self.closed = True
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        left = self.queue.qsize()
        if left:
            log_event(f"{self.name} events not handled at shutdown", level=logging.WARNING,
                      count=left)
        while not self.queue.empty():
            event = self.queue.get_nowait()
            if self.on_drop is not None:
                self.on_drop(event)


class Dispatcher:
    """The hook lane and the webhook lane; `store` completes events that follow a new pair."""

    def __init__(self, *, store: CertStore, runner: HookRunner | None = None,
                 notifier: WebhookNotifier | None = None, queue_size: int = QUEUE_SIZE) -> None:
        self.store = store
        self.runner = runner
        self.notifier = notifier
        self.hooks: Lane | None = None
        self.webhook: Lane | None = None
        if runner is not None:
            self.hooks = Lane("hook", self._run_hook, size=queue_size,
                              on_drop=lambda e: runner.count(e.kind.hook, "dropped"))
        if notifier is not None:
            self.webhook = Lane("webhook", self._post, size=queue_size,
                                on_drop=lambda e: notifier.count("dropped"))

    def submit(self, event: CertEvent) -> None:
        if self.hooks is not None and self.runner is not None and self.runner.wants(event):
            self.hooks.submit(event)
        if self.webhook is not None:
            self.webhook.submit(event)

    async def _complete(self, event: CertEvent) -> CertEvent:
        if not event.needs_lookup:
            return event
        try:
            stored = await off_loop(self.store.get, event.domain)
        except ControllerError as exc:
            log_event("stored pair unreadable for a hook event", level=logging.WARNING,
                      domain=event.domain, error=str(exc))
            stored = None
        return event.with_stored(stored)

    async def _run_hook(self, event: CertEvent) -> None:
        assert self.runner is not None
        await self.runner.run(await self._complete(event))

    async def _post(self, event: CertEvent) -> None:
        assert self.notifier is not None
        await self.notifier.send(await self._complete(event))

    def _lanes(self) -> list[Lane]:
        return [lane for lane in (self.hooks, self.webhook) if lane is not None]

    async def drained(self) -> None:
        for lane in self._lanes():
            await lane.drained()

    async def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        await asyncio.gather(*(lane.close(grace) for lane in self._lanes()))
        if self.notifier is not None:
            await self.notifier.close()
