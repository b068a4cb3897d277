"""The simulator process: start, reload (SIGHUP), quit (SIGQUIT/SIGTERM/SIGINT).

Called by __main__.py. One asyncio process plays NJet's master, privileged agent and worker:
it loads the conf, starts the broker (helper broker), opens the data-plane sockets and the ctrl
API, launches copilots, writes the pid file, and after every start/reload replays the retained
records (--replay-delay, NJet ~2 s) and publishes the generateCertificate batch of the managed
static blocks (--event-delay, NJet 3.0–3.14 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from njetsim import conf as confmod
from njetsim import control
from njetsim.api import ApiServer
from njetsim.broker import Broker
from njetsim.conf import SimConf, SimConfError
from njetsim.context import Faults
from njetsim.copilot import Copilots
from njetsim.listeners import Listeners
from njetsim.replay import replay
from njetsim.runtime import Runtime
from njetsim.tlsctx import ContextFactory, send_alerts_on_failed_handshakes

log = logging.getLogger("njetsim")


@dataclass(frozen=True)
class Options:
    prefix: Path
    conf: str
    replay_delay: float = 2.0
    event_delay: float = 3.0
    copilot_restart_delay: float = 0.1


class Sim:
    conf: SimConf
    runtime: Runtime

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.prefix = opts.prefix
        self.faults = Faults()
        self.factory = ContextFactory()
        self.broker = Broker(opts.prefix)
        self.listeners = Listeners(lambda: self.runtime)
        self.copilots = Copilots(opts.prefix)
        self.api = ApiServer(self, partial(control.handle, self),
                             lambda: self.conf.ctrl_locations)
        self.control_socket = opts.prefix / "data" / "njet-sim.sock"
        self.generation = 0
        self.replayed = False
        self.generation_started = 0.0
        self.events_sent = 0
        self._timers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    # --- SimContext -----------------------------------------------------------------------

    async def sync_listeners(self) -> None:
        try:
            await self.listeners.sync()
        except SimConfError as exc:
            log.error("%s", exc)

    def later(self, coro: Coroutine[Any, Any, None], delay: float = 0.003) -> asyncio.Task[None]:
        async def run() -> None:
            await asyncio.sleep(delay)
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- lifecycle ------------------------------------------------------------------------

    def _log_to(self, path: Path | None) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.getLogger().handlers[0].formatter)
        logging.getLogger().addHandler(handler)

    async def run(self) -> int:
        send_alerts_on_failed_handshakes()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGQUIT, signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            self.conf = confmod.load(self.prefix, self.opts.conf)
            self._log_to(self.conf.error_log)
            self.runtime = Runtime(self.conf, self.factory)
            self.conf.pid_path.parent.mkdir(parents=True, exist_ok=True)
            self.conf.pid_path.write_text(f"{os.getpid()}\n")
            if self.conf.broker:
                self.broker.start_process()
                self.broker.connect()
            await self.listeners.sync()
            await self.api.start_tcp(self.conf.ctrl_listen)
            await self.api.start_unix(self.control_socket)
        except (SimConfError, RuntimeError, OSError) as exc:
            log.error("%s", exc)
            await self._shutdown()
            return 1
        await self.copilots.launch(self.conf.copilots)
        self._begin_generation()
        log.info("njet-sim started: pid %d, conf %s", os.getpid(), self.conf.conf_path)
        await self._stop.wait()
        log.info("quit signal received, shutting down")
        await self._shutdown()
        return 0

    def _on_hup(self) -> None:
        if self.generation == 0:
            log.warning("reload signal ignored: still starting")
        else:
            self._spawn(self.reload())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _begin_generation(self) -> None:
        for task in self._timers:
            task.cancel()
        self.generation += 1
        self.replayed = False
        self.generation_started = time.time()
        gen = self.generation
        loop = asyncio.get_running_loop()
        self._timers = [loop.create_task(self._replay_later(gen)),
                        loop.create_task(self._event_later(gen))]

    async def _replay_later(self, gen: int) -> None:
        await asyncio.sleep(self.opts.replay_delay)
        async with self._lock:
            if gen != self.generation:
                return
            count = await replay(self) if self.conf.broker else 0
            self.replayed = True
            log.info("generation %d: %d retained record(s) replayed", gen, count)

    async def _event_later(self, gen: int) -> None:
        await asyncio.sleep(self.opts.event_delay)
        if gen != self.generation or not self.conf.broker:
            return
        domains = self.runtime.managed_domains()
        if domains:
            await self.broker.event({"action": "generateCertificate", "domains": domains})
            self.events_sent += 1

    async def reload(self) -> None:
        async with self._lock:
            log.info("reload signal received, reconfiguring")
            try:
                new_conf = confmod.load(self.prefix, self.opts.conf)
                new_runtime = Runtime(new_conf, self.factory)
            except SimConfError as exc:
                log.error("reload failed, old configuration kept: %s", exc)
                return
            old_listen = self.conf.ctrl_listen
            self.conf, self.runtime = new_conf, new_runtime
            await self.sync_listeners()
            if new_conf.ctrl_listen != old_listen and self.api.tcp is not None:
                try:
                    await self.api.start_tcp(new_conf.ctrl_listen)
                except SimConfError as exc:
                    log.error("%s", exc)
            self.copilots.terminate()
            await asyncio.sleep(self.opts.copilot_restart_delay)
            await self.copilots.launch(new_conf.copilots)
            self._begin_generation()

    async def _shutdown(self) -> None:
        for task in [*self._timers, *self._tasks]:
            task.cancel()
        procs = list(self.copilots.procs.values())
        self.copilots.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 2.0)
        self.listeners.close()
        await self.api.close()
        self.broker.disconnect()
        self.broker.stop_process()
        self.factory.close()
        self.control_socket.unlink(missing_ok=True)
        with contextlib.suppress(AttributeError, OSError):
            if self.conf.pid_path.read_text().strip() == str(os.getpid()):
                self.conf.pid_path.unlink()

    # --- control --------------------------------------------------------------------------

    async def api_down(self, seconds: float | None) -> None:
        self.faults.api_down_until = float("inf") if seconds is None else (
            time.monotonic() + seconds)
        await self.api.set_down(seconds)

    async def api_up(self) -> None:
        self.faults.api_down_until = None
        await self.api.set_up()

    async def broker_down(self) -> None:
        self.faults.broker_down = True
        self.broker.stop_process()

    async def broker_up(self) -> None:
        self.faults.broker_down = False
        if self.conf.broker and not self.broker.running:
            self.broker.start_process()

    def describe(self) -> dict[str, Any]:
        listen = self.conf.ctrl_listen
        return {
            "pid": os.getpid(), "generation": self.generation, "replayed": self.replayed,
            "generation_started": self.generation_started, "conf": str(self.conf.conf_path),
            "api": listen.text if listen else None, "api_up": self.api.tcp is not None,
            "broker_socket": str(self.broker.socket) if self.conf.broker else None,
            "broker_running": self.broker.running, "events_sent": self.events_sent,
            "listening": self.listeners.kinds(), "copilots": self.copilots.pids(),
            "blocks": [b.describe() for b in self.runtime.blocks],
            "faults": self.faults.describe(),
        }
