"""`run`: the long-running controller (also how NJet launches us as a copilot).

Order at start-up: raise the open-file limit to its hard limit, wait for the store lock
(naming its holder's pid; NJet starts the next instance ~0.1 s after sending SIGTERM to the
old one), recover an interrupted store swap, remove challenge locations a
previous run left in NJet, rebuild runtime-announced servers from NJet's retained records,
then run the loop with the admin API and the MQTT listener as wake-up sources. In fleet mode
([store] backend = "postgres", fleet.py) the fleet database's notifications wake the loop
too, a heartbeat says the node is live, and the challenge relay answers the other nodes'
challenges.
Nothing here may end the process on an error: NJet does not restart a crashed copilot.

SIGTERM (also SIGINT, SIGQUIT) stops at once, even while a CA call hangs: no new request goes to
the CA (AcmeIssuer.stop), /healthz says "stopping", and Loop.stop cancels the reconcile in
flight rather than waiting for it. A store write it started finishes before the cancellation
goes on (execute.store_write), so the lock is released only after it; ACME calls run on daemon
threads, which nothing joins at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from controller.adapters.admin.limits import ConnectionLimits
from controller.adapters.admin.server import AdminServer, start_admin
from controller.adapters.hooks.build import build_notifications
from controller.adapters.mqtt.listener import MqttListener, read_retained
from controller.adapters.store.events import EventLog, PassEvents
from controller.adapters.store.lock import StoreLock
from controller.admin_backend import ControllerBackend, renew_limits
from controller.app import App
from controller.config import Config
from controller.errors import ControllerError
from controller.events import (
    EventAction,
    NjetEvent,
    RuntimeServer,
    parse_srv_record,
    specs_from_servers,
)
from controller.logs import log_event
from controller.metrics import ControllerMetrics
from controller.model import Source
from controller.reconcile import Loop
from controller.servernames import usable_names

if TYPE_CHECKING:
    from controller.adapters.pg.events import PgEventLog

SRV_TOPICS = "/ins/srv/#"
START_RETRY = 30.0  # seconds between start-up attempts after a store error

# (broker address, topic filter) -> retained topic -> payload: listener.read_retained
RecordReader = Callable[[str, str], Awaitable[Mapping[str, bytes]]]


class Service:
    def __init__(self, config: Config, *, read_records: RecordReader = read_retained) -> None:
        self.config = config
        self._read_records = read_records  # tests hand in a reader they hold mid-read
        self.app = App(config)
        self.metrics = ControllerMetrics()
        self.loop = Loop(self.app.reconciler, config.controller.interval,
                         on_resync=self.refresh_runtime)
        self.mqtt_state: dict[str, object] = {"connected": False}
        self._connected_before = False  # the MQTT link was up once: a reconnect resyncs
        events = EventLog(self.app.paths)
        self.backend = ControllerBackend(self.app.reconciler, self.loop, self.metrics,
                                         self.mqtt_state, events=events,
                                         renew_limits=renew_limits(config))
        self.app.reconciler.observer = self.backend
        # [hooks] and [notify]: told after every pass, run in background tasks (adapters/hooks/)
        self.notifications = build_notifications(config, store=self.app.store,
                                                 paths=self.app.paths, metrics=self.metrics,
                                                 clock=self.app.reconciler.clock)
        if self.notifications is not None:
            self.app.reconciler.observers.append(self.notifications.observer)
        # every finished action into the event log (`certs show`, GET /api/v1/events)
        self.app.reconciler.observers.append(PassEvents(events))
        self.fleet_events: PgEventLog | None = None
        if self.app.fleet is not None:  # and the fleet's append-only log of every node's
            from controller.adapters.pg.events import PgEventLog

            self.fleet_events = PgEventLog(self.app.fleet.db, self.app.fleet.node)
            self.app.reconciler.observers.append(self.fleet_events)
        self.app.reconciler.executor.on_acme = self.metrics.observe_acme_request
        if self.app.reconciler.ari is not None:  # renewalInfo requests by result
            self.app.reconciler.ari.on_request = self.metrics.observe_ari_request
        self.mqtt: MqttListener | None = None
        self.admin: AdminServer | None = None
        self._stop_requested = False
        self._fleet_task: asyncio.Future[None] | None = None
        self.backend.fleet = self.app.fleet
        if self.app.fleet is not None:  # a refused DSN is an outage to wait out, not an exit
            self.app.fleet.patient = True

    # -- events ------------------------------------------------------------------------

    def on_event(self, event: NjetEvent) -> None:
        """Update the event-sourced part of desired state, then wake the loop."""
        try:
            static = self.app.reconciler.desired(keep_last_good=True).specs
        except ControllerError:
            static = {}
        static_names = {frozenset(s.names) for s in static.values() if s.source is Source.CONF}
        wild = self.config.dns_configured  # the names a block stands for, as njet.conf's
        runtime_domains = tuple(
            d for d in event.domains
            if event.action is EventAction.DELETE
            or frozenset(usable_names(d.server_names, "", wildcards=wild)[0]) not in static_names
        )
        changed = False
        if runtime_domains:
            changed = self.app.runtime.apply(NjetEvent(event.action, runtime_domains))
        log_event("njet event", action=event.action.value, domains=len(event.domains),
                  runtime_changed=changed)
        self.loop.wake(probe=event.action is EventAction.GENERATE)

    def on_connection(self, connected: bool) -> None:
        self.mqtt_state["connected"] = connected
        self.metrics.set_mqtt_connected(connected)
        if connected:
            # events sent while we were away are lost: rebuild the runtime servers from the
            # retained records and look again (the first connect needs no second rebuild)
            if self._connected_before:
                self.loop.resync()
            else:
                self.loop.wake(probe=True)
            self._connected_before = True

    async def refresh_runtime(self) -> None:
        """Rebuild runtime-managed servers from NJet's retained /ins/srv records (the Loop's
        `on_resync`: at start-up and every interval).

        Events keep arriving (`on_event`) while the records are read; the rebuild is opened
        before the read (RuntimeStore.rebuilding) and `replace_all` re-applies every event
        applied since, so an add or delete that came mid-read is not undone by the snapshot.
        """
        if self.config.store_only:
            return
        runtime = self.app.runtime
        with runtime.rebuilding() as since:
            try:
                records = await self._read_records(self.config.mqtt_address, SRV_TOPICS)
            except ControllerError as exc:
                log_event("retained server records unreadable; keeping the known set",
                          level=logging.WARNING, error=str(exc))
                return
            servers = [s for s in (_parse(p) for p in records.values()) if s is not None]
            specs = specs_from_servers(servers, wildcards=self.config.dns_configured).specs
            if runtime.replace_all(specs, since=since):
                log_event("runtime servers rebuilt from retained records",
                          count=len(runtime.load()), replayed_events=runtime.sequence - since)

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> int:
        raise_fd_limit()
        lock = StoreLock(self.app.paths)
        await self._start_up(lock)
        try:
            self.admin = await start_admin(self.backend, self.config.admin.address,
                                           self.config.admin.token, limits=self._limits())
            if not self.config.store_only:
                self.mqtt = MqttListener(self.config.mqtt_address, on_event=self.on_event,
                                         on_connection_change=self.on_connection)
                await self.mqtt.start()
            if self.app.fleet is not None:  # LISTEN, heartbeats, the challenge relay
                self.app.start_relay()
                self._fleet_task = asyncio.ensure_future(
                    self.app.fleet.background(lambda: self.loop.wake()))
            self._install_signals()
            log_event("controller started", prefix=str(self.config.prefix),
                      store_only=self.config.store_only, admin=self.config.admin.address)
            await self.loop.run()
        finally:
            await self._shutdown()
            lock.release()
        log_event("controller stopped")
        return 0

    async def _start_up(self, lock: StoreLock) -> None:
        """Take the store lock and run the start-up chores. A store error here (a planted
        `.lock` symlink, a `.lego/` that cannot be listed) is reported and retried every
        START_RETRY seconds instead of ending the process: NJet does not restart a copilot
        that exits, and an operator can fix the store while it waits."""
        while True:
            try:
                while not lock.try_acquire():  # said at once, then every 5 s, naming the holder
                    log_event(f"waiting for {lock.holder()} to release the store lock",
                              level=logging.WARNING, lock=str(lock.path))
                    if await lock.acquire_async(timeout=5.0):
                        break
                await self.app.prepare()
                return
            except ControllerError as exc:
                lock.release()
                log_event("cannot start: fix the store, retrying", level=logging.ERROR,
                          error=str(exc), retry_in=START_RETRY)
                await asyncio.sleep(START_RETRY)

    def _limits(self) -> ConnectionLimits:
        admin = self.config.admin
        return ConnectionLimits(max_connections=admin.maxConnections,
                                header_timeout=admin.headerTimeout.total_seconds(),
                                idle_timeout=admin.idleTimeout.total_seconds())

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, self.stop, sig)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.loop.wake(probe=True))

    def stop(self, sig: signal.Signals | None = None) -> None:
        """Stop now: no new CA request, /healthz "stopping", the reconcile in flight cancelled
        (Loop.stop). Once only: a later signal changes nothing."""
        if self._stop_requested:
            return
        self._stop_requested = True
        log_event("stopping", signal=sig.name if sig is not None else None)
        self.app.stop()
        self.loop.stop()

    async def _shutdown(self) -> None:
        if self.fleet_events is not None:
            await asyncio.to_thread(self.fleet_events.close)
        if self._fleet_task is not None:
            self._fleet_task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._fleet_task, timeout=5.0)
        for closer in (self.mqtt.stop if self.mqtt else None,
                       self.admin.stop if self.admin else None,
                       self.app.close,
                       self.notifications.close if self.notifications else None):
            if closer is None:
                continue
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closer(), timeout=5.0)


def raise_fd_limit() -> None:
    """Raise this process's open-file limit (RLIMIT_NOFILE) to its hard limit; never fatal."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:  # e.g. an unlimited hard limit above the kernel's max
        log_event("open-file limit left as is", level=logging.WARNING, soft=soft, hard=hard,
                  error=str(exc))


def _parse(payload: bytes) -> RuntimeServer | None:
    try:
        return parse_srv_record(payload)
    except ValueError:
        return None


async def run_service(config: Config) -> int:
    return await Service(config).run()
