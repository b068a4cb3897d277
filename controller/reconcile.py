"""One reconcile pass, the converge loop, and the long-running loop with coalesced wake-ups.

Data flow of a pass: desired (njet.conf + runtime-announced servers) + observe() + status →
plan() → execute() → fold() → status saved. Entry points (cli, admin API, MQTT listener) only
call `wake()` or `converge()`; events never carry "what to do".

Called by cli.py (`reconcile`, `diff`, `run`) and app.py (admin backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.clock import utc_now
from controller.errors import ConfigError, ControllerError
from controller.execute import Executor
from controller.faultpoints import fault_point, register
from controller.fold import Outcome, fold
from controller.logs import log_event
from controller.model import Desired, Observed
from controller.observe import Gatherer
from controller.plan import Plan, next_renewal, plan
from controller.policy import PolicySettings
from controller.ports import Clock, DesiredLoader, PassObserver, StatusPersistence
from controller.status import CertStatus

register("reconcile.before_status_write", "reconcile.after_status_write")


@dataclass
class PassResult:
    desired: Desired
    observed: Observed
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass
class Reconciler:
    settings: PolicySettings
    load_desired: DesiredLoader
    gatherer: Gatherer
    executor: Executor
    status_store: StatusPersistence
    clock: Clock = utc_now
    observer: PassObserver | None = None
    max_passes: int = 10
    _statuses: dict[str, CertStatus] | None = None
    _last_desired: Desired | None = None
    passes_run: int = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def statuses(self) -> dict[str, CertStatus]:
        if self._statuses is None:
            self._statuses = self.status_store.load_all()
        return self._statuses

    def update_status(self, status: CertStatus) -> None:
        """Persist an operator change (admin API) before the next pass sees it."""
        self.statuses[status.domain] = status
        self.status_store.save(status)

    def desired(self, *, keep_last_good: bool = False, fresh: bool = False) -> Desired:
        """Load desired state; with keep_last_good a broken njet.conf keeps the previous one.

        Re-parsed only when one of its files changed, unless `fresh` (probing passes).
        """
        try:
            d = self.load_desired(fresh=fresh)
        except ConfigError as exc:
            if keep_last_good and self._last_desired is not None:
                log_event("njet.conf unusable, keeping the last good desired state",
                          level=logging.ERROR, error=str(exc))
                return self._last_desired
            raise
        self._last_desired = d
        return d

    # -- steps ---------------------------------------------------------------------------

    async def compute(self, *, probe: bool = False, keep_last_good: bool = False) -> PassResult:
        desired = self.desired(keep_last_good=keep_last_good, fresh=probe)
        observed = await self.gatherer.observe(desired, probe=probe)
        p = plan(desired, observed, self.statuses, self.clock(), self.settings)
        return PassResult(desired, observed, p)

    async def pass_once(self, *, probe: bool = False, keep_last_good: bool = False) -> PassResult:
        started = time.monotonic()
        result = await self.compute(probe=probe, keep_last_good=keep_last_good)
        for a in result.plan.actions:
            log_event("decision", action=a.kind.value, domain=a.domain, reason=a.reason.value,
                      detail=a.message)
        outcomes = await self.executor.execute(result.plan.actions) if result.plan.actions else []
        result.outcomes = outcomes
        self._fold(result)
        self.passes_run += 1
        if self.observer is not None:
            self.observer.on_pass(plan=result.plan, outcomes=outcomes,
                                  seconds=time.monotonic() - started,
                                  observed=result.observed, statuses=self.statuses)
        return result

    def _fold(self, result: PassResult) -> None:
        before = self.statuses
        after, removed = fold(before, desired=result.desired, plan=result.plan,
                              outcomes=result.outcomes, now=self.clock(),
                              observed=result.observed)
        fault_point("reconcile.before_status_write")
        self._statuses = after  # kept in memory even when it cannot be saved (disk full)
        try:
            for domain, st in after.items():
                if before.get(domain) != st:
                    self.status_store.save(st)
            for domain in removed:
                self.status_store.delete(domain)
        except ControllerError as exc:
            log_event("status not saved", level=logging.ERROR, error=str(exc))
        fault_point("reconcile.after_status_write")

    async def converge(self, *, probe: bool = True, keep_last_good: bool = False) -> PassResult:
        """Passes until the plan has no actions (or only ones that made no progress).

        The first pass probes (if asked); later passes trust what execute verified.
        """
        result = await self.pass_once(probe=probe, keep_last_good=keep_last_good)
        for _ in range(self.max_passes - 1):
            now = self.clock()
            due = [s for s in result.plan.scheduled if s.at is not None and s.at <= now]
            if not result.plan.actions and not due:
                break
            result = await self.pass_once(probe=False, keep_last_good=keep_last_good)
        return result

    # -- the long-running loop -------------------------------------------------------------

    def next_deadline(self, result: PassResult | None, interval: timedelta) -> datetime:
        now = self.clock()
        deadline = now + interval
        if result is None:
            return deadline
        candidates = [w.until for w in result.plan.waiting if w.until is not None]
        candidates += list(next_renewal(result.observed, self.statuses, self.settings).values())
        future = [c for c in candidates if c > now]
        # a scheduled step that is already due (e.g. a deletion with no grace period) runs
        # in a moment; it leaves `scheduled` once done, so this cannot spin
        due_soon = [max(s.at, now + timedelta(seconds=1))
                    for s in result.plan.scheduled if s.at is not None]
        return min([deadline, *future, *due_soon])


@dataclass
class Loop:
    """Runs `converge` whenever woken, at least every `interval`, and at the next deadline.

    Wake-ups coalesce: a burst of events starts one reconcile; an event arriving during a
    reconcile schedules exactly one more.
    """

    reconciler: Reconciler
    interval: timedelta
    # awaited before a resync pass (start-up and every `interval`)
    on_resync: Callable[[], Awaitable[None]] | None = None
    # pause after a failed reconcile before looking at wake-ups again (seconds)
    error_pause: float = 1.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _probe: bool = True
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    reconciles: int = 0
    last: PassResult | None = None
    last_error: str | None = None

    @property
    def pending(self) -> bool:
        """A wake-up arrived that no reconcile has started on yet."""
        return self._wake.is_set()

    def wake(self, *, probe: bool = False) -> None:
        self._probe = self._probe or probe
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """`stop()` was called (service.py: a stop signal); /healthz reports it."""
        return self._stopped.is_set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    async def run(self) -> None:
        next_resync = self.reconciler.clock()
        self._wake.set()
        while not self._stopped.is_set():
            deadline = self.reconciler.next_deadline(self.last, self.interval)
            timeout = max(0.0, (deadline - self.reconciler.clock()).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(timeout, 3600.0))
            if self._stopped.is_set():
                break
            self._wake.clear()
            now = self.reconciler.clock()
            probe = self._probe or now >= next_resync
            if now >= next_resync:
                next_resync = now + self.interval
                if self.on_resync is not None:
                    try:
                        await self.on_resync()
                    except Exception as exc:
                        log_event("resync hook failed", level=logging.ERROR, error=repr(exc))
            self._probe = False
            try:
                # act on what changed first (a new server gets its cert without waiting for
                # every block to be probed), then look at what NJet really serves
                self.last = await self.reconciler.converge(probe=False, keep_last_good=True)
                if probe:
                    self.last = await self.reconciler.converge(probe=True, keep_last_good=True)
                self.last_error = None
            except Exception as exc:  # the loop never dies: NJet does not restart a copilot
                self.last_error = f"{type(exc).__name__}: {exc}"
                log_event("reconcile failed", level=logging.ERROR, error=self.last_error)
                await asyncio.sleep(self.error_pause)
            self.reconciles += 1
