"""One reconcile pass, the converge loop, and the long-running loop with coalesced wake-ups.

Data flow of a pass: desired (njet.conf + runtime-announced servers; in fleet mode merged
with the other live nodes' by `fleet_sync`, fleet.py) + observe() + status →
(executing passes: the ARI step records the CA's renewal windows that are due, ari.py) →
plan() (with the rate-limit ledger's snapshot, when a budget applies) → execute() (which
records each order in the ledger) → fold() → status saved. Entry points (cli, admin API, MQTT
listener) only call `wake()` or `converge()`; events never carry "what to do".

Parsing njet.conf and scanning the store run off the event loop (threads.off_loop: daemon
threads, never joined), so the admin API and the signal handlers answer during a long parse,
and `Loop.stop()` cancels a pass in progress instead of waiting for it.

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
from typing import Any

from controller.ari import AriStep
from controller.clock import utc_now
from controller.errors import ConfigError, ControllerError
from controller.execute import Executor, store_write
from controller.faultpoints import fault_point, register
from controller.fold import Outcome, fold
from controller.logs import log_event
from controller.model import Desired, Observed
from controller.observe import Gatherer
from controller.plan import Plan, next_renewal, plan
from controller.policies.ratelimits import BudgetInput, BudgetScope, host_of
from controller.policy import GcRelease, PolicySettings
from controller.ports import (
    Clock,
    DesiredLoader,
    GcConfirmations,
    PassObserver,
    QuarantineExpiry,
    RateLedger,
    RegisteredDomain,
    StatusPersistence,
)
from controller.status import CertStatus
from controller.threads import off_loop

register("reconcile.before_status_write", "reconcile.after_status_write")

FleetSync = Callable[[Desired], Awaitable[tuple[Desired, "dict[str, CertStatus] | None"]]]


@dataclass
class PassResult:
    desired: Desired
    observed: Observed
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)
    release: GcRelease | None = None  # the gc confirmation the plan was given, if any


@dataclass
class Reconciler:
    settings: PolicySettings
    load_desired: DesiredLoader
    gatherer: Gatherer
    executor: Executor
    status_store: StatusPersistence
    clock: Clock = utc_now
    observer: PassObserver | None = None
    # more observers, told after `observer` (service.py: hooks and notifications, event log)
    observers: list[PassObserver] = field(default_factory=list)
    max_passes: int = 10
    # the deletion guard's release (read every pass, consumed by the next executing pass) and
    # the quarantine's expiry (run at the start of every executing pass); None: not used
    gc_confirmations: GcConfirmations | None = None
    quarantine: QuarantineExpiry | None = None
    # the ARI step (ari.py): polls the CA's renewal windows before an executing pass plans
    # (None: [acme] ari = false, or read-only commands)
    ari: AriStep | None = None
    # the rate-limit ledger read at the start of every pass for plan()'s budget, with the CA,
    # account and limits it counts for and the public suffix lookup (None: no budget)
    ledger: RateLedger | None = None
    budget_scope: BudgetScope | None = None
    # the [[acme.fallback]] CAs' ledgers with their scopes, each its own budget
    fallback_budgets: tuple[tuple[BudgetScope, RateLedger], ...] = ()
    registered_domain: RegisteredDomain | None = None
    # fleet mode (fleet.py): at the start of every pass, with this node's desired state: the
    # fleet's merged desired state and the shared statuses (None: keep the ones in memory),
    # after the node's heartbeat, its desired state published and its mirror pulled
    fleet_sync: FleetSync | None = None
    _domains: dict[str, str] = field(default_factory=dict)  # host -> registered domain
    _statuses: dict[str, CertStatus] | None = None
    _last_desired: Desired | None = None
    _loads_in_flight: int = 0  # desired-state loads running on a daemon thread
    passes_run: int = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def statuses(self) -> dict[str, CertStatus]:
        if self._statuses is None:
            try:
                self._statuses = self.status_store.load_all()
            except ControllerError as exc:
                if self.fleet_sync is None:
                    raise
                # fleet mode with the database away: none known yet; each pass's fleet_sync
                # loads them once it answers
                log_event("fleet statuses not loaded", level=logging.WARNING, error=str(exc))
                self._statuses = {}
        return self._statuses

    def update_status(self, status: CertStatus) -> None:
        """Persist an operator change (admin API) before the next pass sees it."""
        self.statuses[status.domain] = status
        self.status_store.save(status)

    def desired(self, *, keep_last_good: bool = False, fresh: bool = False) -> Desired:
        """Load desired state on the calling thread, for callers that cannot await (MQTT
        events, admin views); with keep_last_good a broken njet.conf keeps the previous one.

        Re-parsed only when one of its files changed, unless `fresh` (probing passes). While
        a load runs off the loop (`desired_async`), the last loaded state instead of a second
        parse on the event loop.
        """
        if self._loads_in_flight and self._last_desired is not None:
            return self._last_desired
        try:
            d = self.load_desired(fresh=fresh)
        except ConfigError as exc:
            return self._keep_last_good(exc, keep_last_good)
        self._last_desired = d
        return d

    async def desired_async(self, *, keep_last_good: bool = False,
                            fresh: bool = False) -> Desired:
        """`desired()` parsed on a daemon thread: the event loop stays free meanwhile."""
        loop = asyncio.get_running_loop()

        def load() -> Desired:
            try:
                return self.load_desired(fresh=fresh)
            finally:  # counted down when the thread ends, also after a cancelled await
                with contextlib.suppress(RuntimeError):  # the loop is closed: exiting
                    loop.call_soon_threadsafe(self._load_done)

        self._loads_in_flight += 1
        try:
            d = await off_loop(load)
        except ConfigError as exc:
            return self._keep_last_good(exc, keep_last_good)
        self._last_desired = d
        return d

    def _load_done(self) -> None:
        self._loads_in_flight -= 1

    def _keep_last_good(self, exc: ConfigError, keep_last_good: bool) -> Desired:
        if keep_last_good and self._last_desired is not None:
            log_event("njet.conf unusable, keeping the last good desired state",
                      level=logging.ERROR, error=str(exc))
            return self._last_desired
        raise exc

    # -- steps ---------------------------------------------------------------------------

    async def compute(self, *, probe: bool = False, keep_last_good: bool = False,
                      poll: bool = False) -> PassResult:
        """Desired + observe + status -> plan; with `poll` (executing passes) the ARI step
        first records the renewal windows that are due."""
        desired = await self.desired_async(keep_last_good=keep_last_good, fresh=probe)
        if self.fleet_sync is not None:  # the shared statuses come with the fleet's view
            desired, shared = await self.fleet_sync(desired)
            if shared is not None:
                self._statuses = shared
            elif self._statuses is None:  # the database is away and none were loaded yet
                self._statuses = {}
        elif self._statuses is None:  # the first scan of status/ runs off the loop too
            loaded = await off_loop(self.status_store.load_all)
            if self._statuses is None:  # not loaded meanwhile (an admin call)
                self._statuses = loaded
        observed = await self.gatherer.observe(desired, probe=probe)
        if poll and self.ari is not None:
            await self._poll_ari(desired, observed)
        release = (await off_loop(self.gc_confirmations.load)
                   if self.gc_confirmations is not None else None)
        now = self.clock()
        p = plan(desired, observed, self.statuses, now, self.settings, release=release,
                 budget=self._budget(desired, now))
        return PassResult(desired, observed, p, release=release)

    def _budget(self, desired: Desired, now: datetime) -> tuple[BudgetInput, ...]:
        """Per CA with a limit ([acme]'s first, then the fallbacks): its rate-limit ledger as
        this pass begins, the limits in force and the registered domain of every desired name
        (looked up once per name); empty: no limit applies."""
        primary = ((self.budget_scope, self.ledger)
                   if self.budget_scope is not None and self.ledger is not None else None)
        cas = [(scope, ledger) for scope, ledger in
               ([primary] if primary else []) + list(self.fallback_budgets) if scope.limits.any]
        if not cas:
            return ()
        domain_of = self.registered_domain or (lambda name: name)
        hosts = {host_of(n) for spec in desired.specs.values() for n in spec.names}
        known = self._domains
        self._domains = {h: known[h] if h in known else domain_of(h) for h in hosts}
        return tuple(BudgetInput(scope, ledger.snapshot(now), self._domains)
                     for scope, ledger in cas)

    async def pass_once(self, *, probe: bool = False, keep_last_good: bool = False) -> PassResult:
        started = time.monotonic()
        await self._expire_quarantine()
        result = await self.compute(probe=probe, keep_last_good=keep_last_good, poll=True)
        for a in result.plan.actions:
            log_event("decision", action=a.kind.value, domain=a.domain, reason=a.reason.value,
                      detail=a.message)
        outcomes = await self.executor.execute(result.plan.actions) if result.plan.actions else []
        result.outcomes = outcomes
        await self._consume_release(result)
        await self._fold(result)
        self.passes_run += 1
        seconds = time.monotonic() - started
        for observer in ([self.observer] if self.observer is not None else []) + self.observers:
            observer.on_pass(plan=result.plan, outcomes=outcomes, seconds=seconds,
                             observed=result.observed, statuses=self.statuses)
        return result

    async def _poll_ari(self, desired: Desired, observed: Observed) -> None:
        """The ARI step's changed statuses, kept and saved before the plan reads them."""
        assert self.ari is not None
        for domain, st in (await self.ari.refresh(desired, observed, self.statuses)).items():
            self.statuses[domain] = st
            self._persist(domain, self.status_store.save, st)

    async def _expire_quarantine(self) -> None:
        """Start-of-pass chore: remove quarantined pairs older than quarantineRetention."""
        if self.quarantine is None:
            return
        try:
            for line in await store_write(self.quarantine.expire, self.clock()):
                log_event("quarantine expired", detail=line)
        except ControllerError as exc:
            log_event("quarantine not expired", level=logging.WARNING, error=str(exc))

    async def _consume_release(self, result: PassResult) -> None:
        """A gc confirmation releases once: the first executing pass that read it removes it,
        whether its deletions ran or were no longer pending (a later one needs a new one)."""
        if result.release is None or self.gc_confirmations is None:
            return
        if result.plan.gc_released:
            log_event("deletion guard released by a confirmation",
                      deletions=len(result.plan.gc_released), by=result.release.by,
                      confirmed_at=result.release.confirmed_at.isoformat())
        try:
            await store_write(self.gc_confirmations.consume, result.release)
        except ControllerError as exc:
            log_event("gc confirmation not removed", level=logging.ERROR, error=str(exc))

    async def _fold(self, result: PassResult) -> None:
        before = self.statuses
        after, removed = fold(before, desired=result.desired, plan=result.plan,
                              outcomes=result.outcomes, now=self.clock(),
                              observed=result.observed)
        fault_point("reconcile.before_status_write")
        self._statuses = after  # kept in memory even when it cannot be saved (disk full)
        changed = [st for domain, st in after.items() if before.get(domain) != st]
        if changed or removed:  # in a worker thread: a slow disk or database never stalls
            await store_write(self._write_statuses, changed, sorted(removed))
        fault_point("reconcile.after_status_write")

    def _write_statuses(self, changed: list[CertStatus], removed: list[str]) -> None:
        # one status that cannot be written never keeps the others from being written
        for st in changed:
            self._persist(st.domain, self.status_store.save, st)
        for domain in removed:
            self._persist(domain, self.status_store.delete, domain)

    def _persist(self, domain: str, write: Callable[[Any], None], arg: object) -> None:
        try:
            write(arg)
        except ControllerError as exc:
            log_event("status not saved", level=logging.ERROR, domain=domain, error=str(exc))
        except Exception as exc:  # a bug in one record must not cost the others theirs
            log_event("status not saved", level=logging.ERROR, domain=domain,
                      error=f"{type(exc).__name__}: {exc}")

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
        wake = self.ari.next_wake() if self.ari is not None else None
        if wake is not None:
            candidates.append(max(wake, now + timedelta(seconds=1)))
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
    _resync: bool = False
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

    def resync(self) -> None:
        """Run the resync hook (and a probing pass) at the next wake-up instead of waiting for
        the interval: e.g. the MQTT link came back, and events sent meanwhile are lost."""
        self._resync = True
        self.wake(probe=True)

    @property
    def stopping(self) -> bool:
        """`stop()` was called (service.py: a stop signal); /healthz reports it."""
        return self._stopped.is_set()

    def stop(self) -> None:
        """End `run`: at once, cancelling a reconcile in progress (a long njet.conf parse
        runs on in its daemon thread, unwaited)."""
        self._stopped.set()
        self._wake.set()

    async def _reconcile(self, probe: bool) -> None:
        # act on what changed first (a new server gets its cert without waiting for every
        # block to be probed), then look at what NJet really serves
        self.last = await self.reconciler.converge(probe=False, keep_last_good=True)
        if probe:
            self.last = await self.reconciler.converge(probe=True, keep_last_good=True)

    async def _until_stopped(self, work: Awaitable[None]) -> bool:
        """Await `work`; True when it finished, False when `stop()` came first (then it is
        cancelled). Its exception, if any, is raised."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this loop itself is cancelled: so is its reconcile
            task.cancel()
            raise
        finally:
            stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        task.result()
        return True

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
            if now >= next_resync or self._resync:
                self._resync = False
                next_resync = now + self.interval
                if self.on_resync is not None:
                    try:
                        await self.on_resync()
                    except Exception as exc:
                        log_event("resync hook failed", level=logging.ERROR, error=repr(exc))
            self._probe = False
            try:
                if not await self._until_stopped(self._reconcile(probe)):
                    break  # stopped during the reconcile: it was cancelled
                self.last_error = None
            except Exception as exc:  # the loop never dies: NJet does not restart a copilot
                self._probe = self._probe or probe  # the probe it was to make is still due
                self.last_error = f"{type(exc).__name__}: {exc}"
                log_event("reconcile failed", level=logging.ERROR, error=self.last_error)
                await asyncio.sleep(self.error_pause)
            self.reconciles += 1
