"""The PassObserver that turns a pass's outcomes into certificate events for the dispatcher.

Composed by service.py (through build.py) as one of `Reconciler.observers`. Called on the event
loop after each pass: it only builds events (events.events_from_pass, no I/O) and submits them
(dispatch.Dispatcher.submit, which never waits), so a pass never waits for a hook or webhook.
"""

from __future__ import annotations

import logging

from controller.adapters.hooks.dispatch import Dispatcher
from controller.adapters.hooks.events import events_from_pass
from controller.clock import utc_now
from controller.fold import Outcome
from controller.logs import log_event
from controller.model import Observed
from controller.paths import StorePaths
from controller.plan import Plan
from controller.ports import Clock
from controller.status import CertStatus


class HookObserver:
    def __init__(self, dispatcher: Dispatcher, paths: StorePaths, *,
                 clock: Clock = utc_now) -> None:
        self.dispatcher = dispatcher
        self.paths = paths
        self.clock = clock

    def on_pass(self, *, plan: Plan, outcomes: list[Outcome], seconds: float,
                observed: Observed, statuses: dict[str, CertStatus]) -> None:
        try:
            for event in events_from_pass(outcomes, observed, now=self.clock(),
                                          paths=self.paths):
                self.dispatcher.submit(event)
        except Exception as exc:  # a PassObserver must not raise: the pass is done
            log_event("hook events not submitted", level=logging.ERROR,
                      error=f"{type(exc).__name__}: {exc}")
